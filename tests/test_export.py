"""The exported quick-start SOLOv2 gives the eager model's results in Paddle Inference (oneDNN
on) and in onnxruntime, for a batch of two images of different sizes."""
import os
import sys

import cv2
import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
import yaml

from conftest import PARITY, ROOT, import_deploy_predictor

from ppdet.core.config import load_config
from ppdet.core.errors import ExportError
from ppdet.core.workspace import create
from ppdet.engine.export import OUTPUT_NAMES, export_model, export_onnx, \
    export_safe_interpolate, infer_config, safe_interpolate

_predictor = import_deploy_predictor()
Detector, split_batch = _predictor.Detector, _predictor.split_batch
from preprocess import Preprocessor, collate  # noqa: E402

CATEGORY_BIAS = -3.8   # with the seeded weights: some 20-60 detections per image


def seed_weights(model):
    """Deterministic weights that produce detections (the parity fixtures' seeding where
    ``../shared`` exists, paddle's initialisers under a fixed seed otherwise)."""
    if os.path.isdir(PARITY):
        sys.path.insert(0, PARITY)
        import seeded_weights
        seeded_weights.apply_to_layer(model)
    head = model.solov2_head.solo_cate
    head.bias.set_value(paddle.full(head.bias.shape, CATEGORY_BIAS))


def build_quickstart():
    import ppdet.modeling  # noqa: F401
    paddle.seed(0)
    cfg = load_config(os.path.join(ROOT, 'configs', 'quickstart.yml'))
    model = create(cfg.architecture, cfg)
    seed_weights(model)
    model.eval()
    return cfg, model


def synthetic_images():
    """Two RGB images of different sizes and aspect ratios with a few solid shapes."""
    rng = np.random.RandomState(7)
    images = []
    for h, w in ((300, 420), (360, 240)):
        image = (rng.rand(h, w, 3) * 60 + 90).astype(np.uint8)
        for _ in range(5):
            x, y = rng.randint(0, w - 60), rng.randint(0, h - 60)
            colour = tuple(int(c) for c in rng.randint(0, 255, 3))
            cv2.rectangle(image, (x, y), (x + rng.randint(20, 60), y + rng.randint(20, 60)),
                          colour, -1)
            cv2.circle(image, (rng.randint(30, w - 30), rng.randint(30, h - 30)), 25, colour, -1)
        images.append(image)
    return images


@pytest.fixture(scope='session')
def exported(tmp_path_factory):
    """(export folder, eager results per image, the images, packages installed or changed
    while exporting): ONNX included."""
    pytest.importorskip('paddle2onnx')
    cfg, model = build_quickstart()
    out = str(tmp_path_factory.mktemp('export') / 'quickstart')
    before = installed_packages()
    export_model(model, cfg, out, onnx=True)
    installed_during_export = set(installed_packages().items()) - set(before.items())
    with open(os.path.join(out, 'infer_cfg.yml')) as f:
        preprocess = Preprocessor(yaml.safe_load(f)['Preprocess'])
    images = synthetic_images()
    samples = [preprocess(image) for image in images]
    feeds = collate(samples)
    with paddle.no_grad():
        eager = model.predict(*(paddle.to_tensor(feeds[k])
                                for k in ('image', 'im_shape', 'scale_factor')))
    eager = split_batch({k: v.numpy() for k, v in eager.items()},
                        [info['orig_hw'] for _, info in samples])
    return out, eager, images, installed_during_export


def installed_packages():
    from importlib import metadata
    return {d.metadata['Name']: d.version for d in metadata.distributions()}


def by_label_then_score(det):
    """``det`` reordered by label, then score: detections whose scores tie within round-off
    (different classes) may come out in either order."""
    order = np.lexsort((-det['cate_score'], det['cate_label']))
    return {k: v[order] for k, v in det.items()}


def assert_same_detections(mine, ref):
    assert len(mine) == len(ref)
    for got, want in zip(mine, ref):
        assert 10 <= len(want['cate_score']) < 100          # real work, below the cap
        got, want = by_label_then_score(got), by_label_then_score(want)
        np.testing.assert_array_equal(got['cate_label'], want['cate_label'])
        np.testing.assert_allclose(got['cate_score'], want['cate_score'], atol=1e-4)
        assert got['segm'].shape == want['segm'].shape
        a, b = got['segm'].astype(bool), want['segm'].astype(bool)
        inter, union = (a & b).sum((1, 2)), (a | b).sum((1, 2))
        iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
        assert iou.min() >= 0.99
        np.testing.assert_allclose(got['bbox'][:, 2:], want['bbox'][:, 2:], atol=1.0)


@pytest.mark.parametrize('backend', ['paddle', 'onnx'])
def test_exported_batch_matches_eager(exported, backend):
    out, eager, images, _ = exported
    detector = Detector(out, backend, cpu_threads=1)           # paddle: oneDNN on
    results = detector.predict(images)
    assert [r['segm'].shape[1:] for r in results] == [im.shape[:2] for im in images]
    assert_same_detections(results, eager)


def test_exported_outputs_end_with_one_spare_row(exported):
    out, eager, images, _ = exported
    detector = Detector(out, 'paddle')
    feeds = collate([detector.preprocess(image) for image in images])
    outputs = dict(zip(OUTPUT_NAMES, detector.runtime(feeds)))
    count = int(outputs['bbox_num'].sum())
    assert count == sum(len(e['cate_score']) for e in eager)
    rows = [len(outputs[k]) for k in ('segm', 'cate_label', 'cate_score', 'bbox')]
    assert rows == [count + 1] * 4


def test_batch_without_detections_runs_with_onednn(tmp_path):
    cfg, model = build_quickstart()
    head = model.solov2_head.solo_cate
    head.bias.set_value(paddle.full(head.bias.shape, -30.0))
    export_model(model, cfg, str(tmp_path))
    results = Detector(str(tmp_path), 'paddle').predict(synthetic_images())
    assert [r['segm'].shape for r in results] == [(0, 300, 420), (0, 360, 240)]
    assert all(len(r['bbox']) == len(r['cate_label']) == 0 for r in results)


def test_paddle_inference_without_onednn_matches_eager(exported):
    out, eager, images, _ = exported
    assert_same_detections(Detector(out, 'paddle', enable_mkldnn=False).predict(images), eager)


def test_infer_cfg_records_preprocessing_outputs_and_thresholds(exported):
    out, _, _, _ = exported
    with open(os.path.join(out, 'infer_cfg.yml')) as f:
        cfg = yaml.safe_load(f)
    assert [op['type'] for op in cfg['Preprocess']] == [
        'NormalizeImage', 'Resize', 'Permute', 'PadStride']
    assert cfg['Preprocess'][1]['target_size'] == [128, 128]
    assert cfg['Preprocess'][3]['stride'] == 32
    assert cfg['outputs'] == list(OUTPUT_NAMES)
    assert cfg['inputs'] == ['image', 'im_shape', 'scale_factor']
    assert len(cfg['label_list']) == 4
    assert (cfg['arch'], cfg['mask'], cfg['score_threshold']) == ('SOLOv2', True, 0.1)
    assert sorted(os.listdir(out)) == ['infer_cfg.yml', 'model.json', 'model.onnx',
                                       'model.pdiparams']


def test_infer_cfg_takes_names_and_thresholds_from_the_built_model():
    import ppdet.modeling  # noqa: F401
    cfg = load_config(os.path.join(ROOT, 'configs', 'quickstart.yml'))
    model = create(cfg.architecture, cfg)
    model.solov2_head.score_threshold, model.solov2_head.mask_threshold = 0.35, 0.6
    written = infer_config(model, cfg)
    assert (written['arch'], written['score_threshold'], written['mask_threshold']) == \
        ('SOLOv2', 0.35, 0.6)
    assert len(written['label_list']) == 4


def test_exported_program_has_no_interp_operator(exported):
    """Paddle 3.3.1 cannot run interp operators under oneDNN: none may be exported."""
    with open(os.path.join(exported[0], 'model.json')) as f:
        program = f.read()
    assert 'bilinear_interp' not in program and 'nearest_interp' not in program
    assert '"1.conv2d"' in program


@pytest.mark.parametrize('kwargs', [
    dict(size=[50, 34], mode='bilinear'), dict(size=[7, 9], mode='bilinear'),
    dict(scale_factor=0.5, mode='bilinear', align_mode=0), dict(scale_factor=2, mode='bilinear'),
    dict(scale_factor=4, mode='bilinear'), dict(size=[31, 23], mode='bilinear',
                                                align_corners=True),
    dict(scale_factor=2., mode='nearest'), dict(size=[9, 40], mode='nearest')])
def test_safe_interpolate_equals_paddle_interpolate(kwargs):
    x = paddle.to_tensor(np.random.RandomState(0).rand(2, 3, 25, 17).astype('float32'))
    np.testing.assert_allclose(safe_interpolate(x, **kwargs).numpy(),
                               F.interpolate(x, **kwargs).numpy(), atol=3e-6)


def test_interpolate_is_restored_after_export():
    with export_safe_interpolate():
        assert F.interpolate is safe_interpolate
    assert F.interpolate is not safe_interpolate
    assert paddle.nn.functional.common.interpolate is not safe_interpolate


def test_failed_onnx_conversion_is_one_clear_error(tmp_path):
    """A program the converter cannot read: one error naming it, and this process lives on."""
    pytest.importorskip('paddle2onnx')
    (tmp_path / 'model.json').write_text('{"not": "a program"}')
    (tmp_path / 'model.pdiparams').write_bytes(b'')
    (tmp_path / 'model.onnx').write_bytes(b'stale')
    with pytest.raises(ExportError, match='model.json: paddle2onnx failed') as info:
        export_onnx(str(tmp_path))
    assert '\n' not in str(info.value)
    assert not (tmp_path / 'model.onnx').exists()


def test_export_installs_nothing(exported):
    """The first ONNX conversion of the session left every installed package as it was (the
    converter's default constant folding pip-installs what it wants)."""
    assert exported[3] == set()
