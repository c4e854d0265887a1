"""The exported quick-start SOLOv2 gives the eager model's results in Paddle Inference (oneDNN
on) and in onnxruntime, for a batch of two images of different sizes."""
import os

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
import yaml

from conftest import ROOT, import_deploy_predictor
from fixtures.detections import assert_same_detections
from fixtures.seeded_quickstart import build_quickstart, synthetic_images

from ppdet.core.config import load_config
from ppdet.core.errors import ExportError
from ppdet.core.workspace import create
from ppdet.engine.export import OUTPUT_NAMES, export_model, export_onnx, \
    export_safe_interpolate, infer_config, safe_interpolate

_predictor = import_deploy_predictor()
Detector = _predictor.Detector
from preprocess import collate  # noqa: E402

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
