"""The deploy predictor (deploy/python/infer.py) as a user runs it on an exported model."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import PARITY, ROOT, import_deploy_predictor, needs_shared
from fixtures.detections import assert_same_detections, confident_ious
from fixtures.seeded_quickstart import synthetic_images

DEPLOY = os.path.join(ROOT, 'deploy', 'python')
infer = import_deploy_predictor()
from preprocess import Preprocessor, collate, decode_image  # noqa: E402
from visualize import mask_to_rle  # noqa: E402


@pytest.fixture(scope='module')
def image_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp('images')
    for i, image in enumerate(synthetic_images()):
        cv2.imwrite(str(folder / f'im{i}.png'), image[:, :, ::-1])
    return folder


@needs_shared
def test_preprocessing_reproduces_the_reference_eval_input():
    ref = np.load(os.path.join(PARITY, 'eval_solov2_r50_fpn_1x_coco.npz'))
    ops = [{'type': 'NormalizeImage', 'is_scale': True, 'mean': [0.485, 0.456, 0.406],
            'std': [0.229, 0.224, 0.225]},
           {'type': 'Resize', 'interp': 1, 'keep_ratio': True, 'target_size': [320, 533]},
           {'type': 'Permute'}, {'type': 'PadStride', 'stride': 32}]
    image = decode_image(os.path.join(PARITY, '000000014439.jpg'))
    feeds = collate([Preprocessor(ops)(image)])
    assert feeds['image'].shape == ref['image'].shape
    np.testing.assert_allclose(feeds['image'], ref['image'], atol=1e-5)
    np.testing.assert_array_equal(feeds['im_shape'], ref['im_shape'])
    np.testing.assert_array_equal(feeds['scale_factor'], ref['scale_factor'])


@pytest.mark.parametrize('backend', ['paddle', 'onnx'])
def test_batch_of_two_images_gives_drawings_and_results(exported, image_dir, tmp_path,
                                                        backend, capsys):
    out = tmp_path / 'out'
    infer.main(['--model_dir', exported[0], '--image_dir', str(image_dir), '--batch_size', '2',
                '--backend', backend, '--output_dir', str(out), '--save_results',
                '--threshold', '0.1'])
    assert sorted(os.listdir(out)) == ['im0.png', 'im1.png', 'results.json']
    for i, image in enumerate(synthetic_images()):
        drawn = cv2.imread(str(out / f'im{i}.png'))
        assert drawn.shape == image.shape and not np.array_equal(drawn, image[:, :, ::-1])
    with open(out / 'results.json') as f:
        records = json.load(f)
    assert {r['image'] for r in records} == {'im0.png', 'im1.png'}
    assert set(records[0]) == {'image', 'category_id', 'category', 'score', 'bbox',
                               'segmentation'}
    assert all(r['score'] >= 0.1 and 0 <= r['category_id'] < 4 for r in records)
    sizes = {'im0.png': [300, 420], 'im1.png': [360, 240]}
    assert all(r['segmentation']['size'] == sizes[r['image']] for r in records)
    assert capsys.readouterr().out.count('detections (score >= 0.1)') == 2


def test_predictor_uses_every_usable_core_by_default(exported, monkeypatch):
    monkeypatch.setattr(infer, 'usable_cores', lambda: 3)
    session = infer.Detector(exported[0], 'onnx').runtime.session
    assert session.get_session_options().intra_op_num_threads == 3


def test_uncompressed_rle_decodes_to_the_mask_with_pycocotools():
    mask_util = pytest.importorskip('pycocotools.mask')
    rng = np.random.RandomState(0)
    for mask in (rng.rand(7, 5) > 0.5, np.ones((4, 3), bool), np.zeros((3, 6), bool)):
        rle = mask_to_rle(mask.astype(np.uint8))
        decoded = mask_util.decode(mask_util.frPyObjects(rle, *rle['size']))
        np.testing.assert_array_equal(decoded, mask)


def test_run_benchmark_prints_the_three_stages(exported, tmp_path, capsys):
    image_dir = tmp_path / 'images'
    image_dir.mkdir()
    for i, image in enumerate(same_size_images(2)):
        cv2.imwrite(str(image_dir / f'im{i}.png'), image[:, :, ::-1])
    infer.main(['--model_dir', exported[0], '--image_dir', str(image_dir), '--batch_size', '2',
                '--output_dir', str(tmp_path), '--run_benchmark', '--warmup', '1',
                '--repeats', '2', '--cpu_threads', '2'])
    line = next(ln for ln in capsys.readouterr().out.splitlines() if 'ms per image' in ln)
    assert 'batch of 2, 1 warm-up + 2 timed runs' in line
    times = dict(part.strip().rsplit(' ', 1) for part in line.split(':', 1)[1].split(','))
    assert set(times) == {'preprocess', 'inference', 'postprocess', 'total'}
    assert all(float(v) > 0 for v in times.values())


def test_video_is_written_with_every_frame_annotated(exported, tmp_path):
    video = str(tmp_path / 'clip.avi')
    frames = [synthetic_images()[0][:, :, ::-1]] * 5
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*'MJPG'), 5, (420, 300))
    for frame in frames:
        writer.write(frame)
    writer.release()
    infer.main(['--model_dir', exported[0], '--video_file', video, '--batch_size', '2',
                '--output_dir', str(tmp_path / 'out'), '--threshold', '0.1'])
    capture = cv2.VideoCapture(str(tmp_path / 'out' / 'clip.mp4'))
    written = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        written.append(frame)
    assert len(written) == 5 and written[0].shape == (300, 420, 3)
    assert np.abs(written[4].astype(int) - frames[4]).mean() > 5     # masks were drawn


def test_predictor_runs_without_the_training_code(exported, image_dir, tmp_path):
    """A fresh interpreter that runs the predictor has imported nothing from ppdet."""
    code = ('import runpy, sys; sys.argv = sys.argv[1:]; '
            'runpy.run_path(sys.argv[0], run_name="__main__"); '
            'assert not [m for m in sys.modules if m.split(".")[0] == "ppdet"]')
    proc = subprocess.run(
        [sys.executable, '-c', code, os.path.join(DEPLOY, 'infer.py'), '--model_dir',
         exported[0], '--image_file', str(image_dir / 'im0.png'), '--output_dir',
         str(tmp_path)], cwd=str(tmp_path), capture_output=True, text=True,
        env={**os.environ, 'PYTHONPATH': ''})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'im0.png:' in proc.stdout


def test_missing_export_folder_is_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        infer.main(['--model_dir', str(tmp_path), '--image_file', 'x.jpg'])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count('\n') == 0 and 'infer_cfg.yml: not found' in err


def test_smoke_train_export_and_run_the_predictor_on_a_batch(trained_quickstart,
                                                            exported_quickstart, tmp_path,
                                                            capsys):
    """What a new user does: train the quick-start model a little (the session's run), export
    it (tools/export_model.py), run the deploy predictor on two images as one batch."""
    model_dir = exported_quickstart
    assert sorted(os.listdir(model_dir)) == ['infer_cfg.yml', 'model.json', 'model.pdiparams']

    images = trained_quickstart.val_images()[:2]
    folder = tmp_path / 'images'
    folder.mkdir()
    for path in images:
        os.symlink(path, folder / os.path.basename(path))
    infer.main(['--model_dir', str(model_dir), '--image_dir', str(folder), '--batch_size', '2',
                '--output_dir', str(tmp_path / 'vis'), '--save_results', '--threshold', '0'])
    assert capsys.readouterr().out.count('detections (score >= 0.0)') == 2

    results = infer.Detector(str(model_dir)).predict([decode_image(p) for p in images])
    assert len(results) == 2
    for det, path in zip(results, images):
        h, w = cv2.imread(path).shape[:2]
        n = len(det['cate_score'])
        assert set(det) == {'segm', 'cate_label', 'cate_score', 'bbox'}
        assert det['segm'].shape == (n, h, w) and det['segm'].dtype == np.uint8
        assert det['cate_label'].shape == (n,) and det['cate_label'].dtype == np.int64
        assert det['bbox'].shape == (n, 6) and det['cate_score'].dtype == np.float32


@pytest.mark.parametrize('flags', [['--backend', 'onnx'], ['--enable_mkldnn', 'False'],
                                   ['--device', 'gpu']])
def test_bfloat16_needs_paddle_on_cpu_with_onednn(exported, flags, capsys):
    with pytest.raises(SystemExit) as exit_info:
        infer.main(['--model_dir', exported[0], '--image_file', 'x.jpg',
                    '--enable_mkldnn_bfloat16', 'True', *flags])
    assert exit_info.value.code == 2
    assert '--enable_mkldnn_bfloat16 needs' in capsys.readouterr().err


def test_bfloat16_on_a_cpu_without_support_runs_float32_with_one_line(exported, monkeypatch,
                                                                      capfd):
    import paddle
    monkeypatch.setattr(paddle.base.core, 'supports_bfloat16', lambda: False)
    out, _, images, _ = exported
    fallback = infer.Detector(out, 'paddle', enable_mkldnn_bfloat16=True).predict(images)
    lines = capfd.readouterr().err.strip().splitlines()
    assert lines == ['--enable_mkldnn_bfloat16: this CPU has no bfloat16 support (needs '
                     'AVX-512 BF16 or AMX); running float32']
    fp32 = infer.Detector(out, 'paddle').predict(images)
    for got, want in zip(fallback, fp32):       # float32 exactly: the same kernels
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])


def same_size_images(count=4, seed=11):
    rng = np.random.RandomState(seed)
    images = []
    for _ in range(count):
        image = (rng.rand(240, 320, 3) * 60 + 90).astype(np.uint8)
        for _ in range(6):
            x, y = rng.randint(0, 260), rng.randint(0, 180)
            colour = tuple(int(c) for c in rng.randint(0, 255, 3))
            cv2.rectangle(image, (x, y), (x + rng.randint(20, 60), y + rng.randint(20, 60)),
                          colour, -1)
        images.append(image)
    return images


@pytest.mark.parametrize('backend', ['paddle', 'onnx'])
def test_batch_of_four_gives_the_detections_of_one_at_a_time(exported, backend):
    images = same_size_images()
    detector = infer.Detector(exported[0], backend, cpu_threads=2)
    alone = [detector.predict([image])[0] for image in images]
    assert_same_detections(detector.predict(images), alone)


def test_batch_size_option_batches_equal_sizes_and_reports_images_per_second(
        exported, tmp_path, capsys):
    """A folder of four 240x320 images and two others: --batch_size 4 writes the results of
    --batch_size 1, in the same order."""
    folder = tmp_path / 'images'
    folder.mkdir()
    for i, image in enumerate(same_size_images() + synthetic_images()):
        cv2.imwrite(str(folder / f'im{i}.png'), image[:, :, ::-1])
    results = {}
    for size in (1, 4):
        out = tmp_path / f'out{size}'
        infer.main(['--model_dir', exported[0], '--image_dir', str(folder), '--batch_size',
                    str(size), '--output_dir', str(out), '--save_results', '--threshold', '0.1'])
        line = next(ln for ln in capsys.readouterr().out.splitlines() if 'images/s' in ln)
        assert line.startswith(f'6 images, batch size {size}: ')
        assert float(line.split(': ')[1].split()[0]) > 0
        with open(out / 'results.json') as f:
            results[size] = json.load(f)
    one, four = results[1], results[4]
    assert [(r['image'], r['category_id']) for r in four] == \
        [(r['image'], r['category_id']) for r in one]
    assert len({r['image'] for r in one}) == 6
    np.testing.assert_allclose([r['score'] for r in four], [r['score'] for r in one],
                               atol=1e-4)
    mask_util = pytest.importorskip('pycocotools.mask')
    for a, b in zip(one, four):
        masks = [mask_util.decode(mask_util.frPyObjects(r['segmentation'],
                                                        *r['segmentation']['size']))
                 for r in (a, b)]
        union = (masks[0] | masks[1]).sum()
        assert union == 0 or (masks[0] & masks[1]).sum() / union >= 0.99


def bfloat16_supported():
    import paddle
    return paddle.base.core.supports_bfloat16()


@pytest.mark.skipif(not bfloat16_supported(), reason='this CPU has no bfloat16 support')
def test_bfloat16_convolutions_find_the_float32_detections(exported):
    """bfloat16 rounds the convolutions, so scores move a little; the detections that
    matter (the confident ones) keep their labels and masks."""
    images = exported[2]
    fp32 = infer.Detector(exported[0], 'paddle').predict(images)
    bf16 = infer.Detector(exported[0], 'paddle', enable_mkldnn_bfloat16=True).predict(images)
    assert fp32[0]['segm'].shape[1:] == bf16[0]['segm'].shape[1:]
    # the convolutions did run in bfloat16: scores are not bit-identical
    assert not all(np.array_equal(a['cate_score'], b['cate_score']) for a, b in zip(fp32, bf16))
    confident = 0
    for want, got in zip(fp32, bf16):
        assert abs(len(got['cate_score']) - len(want['cate_score'])) <= \
            max(2, len(want['cate_score']) // 5)
        ious = confident_ious(want, got)
        confident += len(ious)
        assert min(ious, default=1.) >= 0.9
    assert confident >= 2
