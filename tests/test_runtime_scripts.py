"""eval.py and infer.py through the inference runtime: the eager model's results from the
exported program, the weights read only when a program is built (and released after), batches
of one image size giving the detections of one image at a time, and caches that go with their
snapshots."""
import json
import os
import shutil

import cv2
import numpy as np
import paddle
import pytest
from pycocotools import mask as mask_util

import eval as eval_script
import infer as infer_script
from conftest import ROOT
from fixtures.seeded_quickstart import build_quickstart, save_weights
from fixtures.tiny_training import make_cfg, train_tiny

from ppdet.core.config import load_config
from ppdet.core.errors import ConfigError, ExportError, WeightsError
from ppdet.engine import Trainer
from ppdet.engine import runtime as rt
from ppdet.engine import trainer as trainer_module
from ppdet.engine.predictor import EagerDetector, same_size_batches
from ppdet.utils import checkpoint
from ppdet.utils.cli import run_main

pytestmark = pytest.mark.usefixtures('fresh_logger')

EXPORTED = 'onnx' if rt._installed('onnx') else 'paddle'     # what auto runs here


@pytest.fixture(scope='module')
def seeded(quickstart_data, tmp_path_factory):
    """(config file, weights prefix) of the seeded quick-start model, which finds some 20-60
    instances per image; evaluation on the session's 4 val images."""
    folder = tmp_path_factory.mktemp('seeded')
    config = folder / 'seeded.yml'
    config.write_text(f"_BASE_: ['{ROOT}/configs/quickstart.yml']\n"
                      f"worker_num: 0\nsave_dir: {folder / 'out'}\n"
                      f"TrainDataset: {{dataset_dir: {quickstart_data}}}\n"
                      f"EvalDataset: {{dataset_dir: {quickstart_data}}}\n"
                      f"TestDataset: {{dataset_dir: {quickstart_data}}}\n")
    _, model = build_quickstart()
    return str(config), save_weights(model, str(folder / 'weights' / 'seeded'))


def messages(records):
    return [r.getMessage() for r in records]


def engine_lines(records):
    return [m for m in messages(records) if m.startswith('inference engine')]


def assert_same_records(mine, ref):
    """COCO result records of the same detections: per image the same categories, scores
    within float32 round-off, masks of IoU >= 0.99 (boxes within a pixel)."""
    assert len(mine) == len(ref) > 20
    order = (lambda r: (r['image_id'], r['category_id'], -r['score']))
    mine, ref = sorted(mine, key=order), sorted(ref, key=order)
    assert [(r['image_id'], r['category_id']) for r in mine] == \
        [(r['image_id'], r['category_id']) for r in ref]
    np.testing.assert_allclose([r['score'] for r in mine], [r['score'] for r in ref], atol=1e-4)
    for a, b in zip(mine, ref):
        if 'bbox' in a and 'segmentation' not in a:
            np.testing.assert_allclose(a['bbox'], b['bbox'], atol=1.0)
            continue
        rle = [dict(s, counts=s['counts'].encode()) if isinstance(s['counts'], str) else s
               for s in (a['segmentation'], b['segmentation'])]
        assert mask_util.iou([rle[0]], [rle[1]], [0])[0, 0] >= 0.99


# --------------------------------------------------------------------------- eval.py

def test_eval_gives_the_eager_results_through_the_exported_program(seeded, tmp_path,
                                                                   ppdet_log):
    config, weights = seeded
    results = {}
    for engine in ('eager', 'auto'):
        ppdet_log.clear()
        results[engine] = run_main(eval_script.main, [
            '-c', config, '-w', weights, '--engine', engine, '--output_eval',
            str(tmp_path / engine)])
        results[engine]['lines'] = engine_lines(ppdet_log)
    assert results['eager']['lines'] == ['inference engine: eager']
    line, = results['auto']['lines']
    assert line.startswith(f'inference engine: {EXPORTED} on ')
    assert f'program built in {weights}.inference/{EXPORTED}' in line
    for iou_type in ('segm', 'bbox'):
        assert_same_records(*(json.loads((tmp_path / e / f'{iou_type}.json').read_text())
                              for e in ('auto', 'eager')))
    for key in ('segm_AP', 'segm_AP50', 'bbox_AP'):
        assert results['auto'][key] == pytest.approx(results['eager'][key], abs=2e-3), key


def test_an_unknown_engine_is_one_line(seeded, capsys):
    config, weights = seeded
    with pytest.raises(SystemExit):
        run_main(eval_script.main, ['-c', config, '-w', weights, '--engine', 'onxx'])
    assert "inference_engine must be one of auto, eager, paddle, onnx, got 'onxx'" in \
        capsys.readouterr().err


def test_the_weights_are_read_only_to_build_a_program_and_released_after(
        seeded, tmp_path, monkeypatch):
    config, weights = seeded
    cfg = load_config(config)
    cfg['inference_engine'] = 'paddle'
    copy = save_weights(build_quickstart()[1], str(tmp_path / 'model_final'))
    reads = []
    read_state = checkpoint._read_state
    monkeypatch.setattr(checkpoint, '_read_state', lambda f: reads.append(f) or read_state(f))

    first = Trainer(cfg, mode='eval')
    assert not any(p._is_initialized() for p in first.model.parameters())    # built lazily
    assert first.load_for_inference(copy).engine == 'paddle'
    assert reads == [copy + '.pdparams']
    assert os.path.isfile(os.path.join(copy + '.inference', 'paddle', rt.BUILD_FILE))
    assert not any(p._is_initialized() for p in first.model.parameters())    # released

    second = Trainer(cfg, mode='eval')
    assert second.load_for_inference(copy).engine == 'paddle'
    assert reads == [copy + '.pdparams']                # the cached program needs no weights
    assert not any(p._is_initialized() for p in second.model.parameters())


def test_a_failed_export_runs_eager_with_the_weights_read_once(seeded, tmp_path, monkeypatch,
                                                               ppdet_log):
    config, weights = seeded
    reads = []
    read_state = checkpoint._read_state
    monkeypatch.setattr(checkpoint, '_read_state', lambda f: reads.append(f) or read_state(f))

    def fail(*args, **kwargs):
        raise ExportError('model.json: paddle2onnx failed (exit code 1): unsupported op')

    monkeypatch.setattr(rt, 'export_model', fail)
    trainer = Trainer(load_config(config), mode='eval')
    fresh = str(tmp_path / 'fresh')             # no program cached beside it
    shutil.copy(weights + '.pdparams', fresh + '.pdparams')
    detector = trainer.load_for_inference(fresh)
    assert isinstance(detector, EagerDetector) and detector.model is trainer.model
    assert reads == [fresh + '.pdparams']
    unavailable = [m for m in messages(ppdet_log) if 'unavailable (model.json' in m]
    assert len(unavailable) == len(rt.resolve_engine('auto')) - 1      # one per engine tried
    assert engine_lines(ppdet_log)[-1] == 'inference engine: eager'
    assert all(p._is_initialized() for p in trainer.model.parameters())


def test_weights_that_do_not_fit_stop_with_one_error(seeded, tmp_path):
    config, _ = seeded
    cfg = load_config(config)
    other = paddle.nn.Linear(2, 2)
    bad = str(tmp_path / 'other')
    paddle.save(other.state_dict(), bad + '.pdparams')
    with pytest.raises(WeightsError, match='does not fit the model'):
        Trainer(cfg, mode='eval').load_for_inference(bad)
    assert not os.path.exists(bad + '.inference')


def test_auto_is_eager_on_a_gpu_and_training_evaluates_eagerly(seeded):
    assert rt.resolve_engine('auto', 'gpu') == ['eager']
    assert rt.resolve_engine('paddle', 'gpu') == ['paddle']     # asked for: runs on the CPU
    cfg = load_config(seeded[0])
    cfg['inference_engine'] = EXPORTED
    assert isinstance(Trainer(cfg, mode='train').detector, EagerDetector)


# --------------------------------------------------------------------------- infer.py

def mixed_size_folder(folder, source):
    """Six of the ``source`` images at three sizes, the sizes interleaved in file order:
    128x128 (three), 160x240 and 100x70 (resized to 85x128 and 128x90, padded to 96x128 and
    128x96: three padded sizes in all)."""
    folder.mkdir()
    names = sorted(os.listdir(source))[:6]
    sizes = [None, (240, 160), None, (70, 100), None, (240, 160)]
    for name, size in zip(names, sizes):
        image = cv2.imread(os.path.join(source, name))
        cv2.imwrite(str(folder / name), image if size is None else
                    cv2.resize(image, size, interpolation=cv2.INTER_AREA))
    return folder


def test_infer_batches_give_the_detections_of_one_image_at_a_time(
        seeded, quickstart_data, tmp_path, monkeypatch, ppdet_log):
    config, weights = seeded
    folder = mixed_size_folder(tmp_path / 'images', quickstart_data / 'train')
    batches = []
    build = trainer_module.build_runtime

    def counting(*args, **kwargs):
        runtime = build(*args, **kwargs)

        def run_batch(image, im_shape, scale_factor):
            batches.append(tuple(image.shape))
            return runtime(image, im_shape, scale_factor)
        run_batch.engine = runtime.engine
        return run_batch

    monkeypatch.setattr(trainer_module, 'build_runtime', counting)
    records = {}
    for size in (1, 3):
        batches.clear()
        ppdet_log.clear()
        out = tmp_path / f'batch{size}'
        run_main(infer_script.main, ['-c', config, '-w', weights, '--infer_dir', str(folder),
                                     '--batch_size', str(size), '--output_dir', str(out),
                                     '--save_results', '--draw_threshold', '0.3'])
        records[size] = {t: json.loads((out / f'{t}.json').read_text()) for t in ('segm', 'bbox')}
        assert any(m.startswith(f'6 images in ') and f'batch size {size}: ' in m
                   and m.endswith('images/s (reading, network, drawing and results)')
                   for m in messages(ppdet_log))
        assert sorted(p.name for p in out.glob('*.png')) == sorted(os.listdir(folder))
        if size == 3:
            assert sorted(batches) == [(1, 3, 128, 96), (2, 3, 96, 128), (3, 3, 128, 128)]
    for iou_type in ('segm', 'bbox'):
        assert_same_records(records[3][iou_type], records[1][iou_type])
        assert [r['image_id'] for r in records[3][iou_type]] == \
            sorted(r['image_id'] for r in records[3][iou_type])


def batch(h, w, image_id, count=1):
    return {'image': paddle.zeros([count, 3, h, w]), 'im_shape': paddle.ones([count, 2]),
            'im_id': paddle.full([count, 1], image_id, 'int64')}


def test_same_size_batches_group_by_padded_size_with_a_bounded_wait():
    def ids(batches):
        return [b['im_id'].numpy().ravel().tolist() for b in batches]

    loader = [batch(32, 32, 0), batch(64, 32, 1), batch(32, 32, 2), batch(64, 32, 3),
              batch(32, 32, 4)]
    assert ids(same_size_batches(loader, 2)) == [[0, 2], [1, 3], [4]]
    assert ids(same_size_batches(loader, 1)) == [[0], [1], [2], [3], [4]]
    # at most 2 * size images wait: the size waiting longest goes first, part-full
    many = [batch(32 * (i + 1), 32, i) for i in range(6)]
    assert ids(same_size_batches(many, 2)) == [[i] for i in range(6)]
    grouped = ids(same_size_batches([batch(32, 32, 0, count=2), batch(32, 32, 2)], 3))
    assert grouped == [[0, 0, 2]]
    with pytest.raises(ConfigError, match='TestReader.batch_size must be a positive integer'):
        next(same_size_batches(loader, 0))


# --------------------------------------------------------------------------- caches, boxes

def test_snapshot_caches_go_with_their_snapshots(tmp_path):
    """keep_checkpoint_max 1 over three epochs: snapshot 0 goes, and with it its program; a
    snapshot written again (1, model_final) drops the program of its earlier weights."""
    cfg = make_cfg(tmp_path, keep_checkpoint_max=1)
    out = tmp_path / 'tiny'
    for name in ('0', '1', 'model_final'):
        (out / f'{name}.inference' / 'onnx').mkdir(parents=True)
        (out / f'{name}.inference' / 'onnx' / rt.BUILD_FILE).write_text('{}')
    train_tiny(cfg)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ['1.pdparams', '1.pdopt', 'model_final.pdparams', 'model_final.pdopt', 'metrics.jsonl'])


def test_pasted_masks_and_their_boxes_in_blocks_of_rows():
    """The masks at the original size, made in blocks of rows, are one product with the
    composed resize matrices; the boxes are their tight boxes. Images of a batch, a size
    below the number of blocks and no detection at all."""
    from ppdet.modeling.heads.solov2_head import PASTE_BLOCKS
    _, model = build_quickstart()
    head = model.solov2_head
    rng = np.random.RandomState(0)
    cases = [(((60, 80), (64, 48)), 7), (((5, 3),), 3), (((40, 40),), 0)]
    for sizes, count in cases:
        feat_hw = paddle.to_tensor([16, 20], 'int64')
        soft = paddle.to_tensor(rng.rand(count, 16 * 20).astype('float32') ** 3)
        image_of = paddle.to_tensor(rng.randint(0, len(sizes), count), 'int64')
        im_shape = paddle.to_tensor([[40., 52.]] * len(sizes))
        scale_factor = im_shape / paddle.to_tensor(sizes, 'float32')
        with paddle.no_grad():
            segm, rows, cols = head._paste(soft, image_of, feat_hw, im_shape, scale_factor)
        assert segm.dtype == paddle.uint8
        segm = segm.numpy()
        assert segm.shape == (count, *np.max(sizes, axis=0))
        np.testing.assert_array_equal(rows.numpy(), segm.any(axis=2))
        np.testing.assert_array_equal(cols.numpy(), segm.any(axis=1))
        whole = unblocked_paste(soft, image_of, feat_hw, im_shape, scale_factor)
        differ = segm != (whole > head.mask_threshold)
        assert np.all(np.abs(whole[differ] - head.mask_threshold) < 1e-5)   # round-off only
        assert count == 0 or 0.05 < segm.mean() < 0.5
    assert min(min(min(s) for s in sizes) for sizes, _ in cases) < PASTE_BLOCKS


def unblocked_paste(soft, image_of, feat_hw, im_shape, scale_factor):
    """The mask scores as one product per axis with ``bilinear_matrix`` (the blocks' result
    without blocks), numpy."""
    from ppdet.modeling.ops import bilinear_matrix
    padded = (feat_hw * 4).numpy()
    crop, orig = np.floor(im_shape.numpy()), np.floor(im_shape.numpy() / scale_factor.numpy()
                                                       + 0.5)
    out = orig.max(axis=0).astype(int)
    mats = []
    for axis in (0, 1):
        up = bilinear_matrix(float(feat_hw[axis]), float(padded[axis])).numpy()[0]
        down = bilinear_matrix(paddle.to_tensor(crop[:, axis]), paddle.to_tensor(orig[:, axis]),
                               int(padded[axis]), int(out[axis])).numpy()
        mats.append((down @ up)[image_of.numpy()])
    masks = soft.numpy().reshape(-1, *feat_hw.numpy())
    return mats[0] @ masks @ mats[1].transpose(0, 2, 1)
