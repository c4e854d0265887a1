"""The inference runtime (ppdet/engine/runtime.py): model.predict through Paddle Inference or
onnxruntime gives the eager model's detections, and its cache of exported programs is rebuilt
when what it was built from changes."""
import copy
import os

import numpy as np
import paddle
import pytest

from conftest import PARITY, ROOT, import_deploy_predictor
from fixtures.detections import assert_same_detections
from fixtures.parity import seeded_model, unpack
from fixtures.seeded_quickstart import build_quickstart, save_weights, synthetic_images

from ppdet.core.config import load_config, merge_overrides
from ppdet.core.errors import ConfigError, ExportError
from ppdet.engine import runtime as rt
from ppdet.engine.predictor import EagerDetector
from ppdet.modeling.ops import masks_to_boxes

EXPORTED = ['paddle', pytest.param('onnx', marks=pytest.mark.skipif(
    not rt._installed('onnx'), reason='needs paddle2onnx and onnxruntime'))]


@pytest.fixture(scope='module')
def quickstart():
    """(config, model, (inputs of a batch of two images, their sizes))."""
    cfg, model = build_quickstart()
    return cfg, model, quickstart_inputs(model, cfg)


def quickstart_inputs(model, cfg, images=None):
    from ppdet.engine.export import infer_config
    import_deploy_predictor()          # puts deploy/python, with preprocess, on the path
    from preprocess import Preprocessor, collate
    preprocess = Preprocessor(infer_config(model, cfg)['Preprocess'])
    samples = [preprocess(image) for image in images or synthetic_images()]
    feeds = collate(samples)
    return [paddle.to_tensor(feeds[k]) for k in ('image', 'im_shape', 'scale_factor')], \
        [info['orig_hw'] for _, info in samples]


def arrays(outputs):
    return {k: v.numpy() if isinstance(v, paddle.Tensor) else v for k, v in outputs.items()}


def per_image(outputs, sizes):
    return import_deploy_predictor().split_batch(arrays(outputs), sizes)


@pytest.mark.parametrize('engine', EXPORTED)
def test_runtime_gives_the_eager_outputs_on_a_batch(quickstart, engine, tmp_path):
    cfg, model, (inputs, sizes) = quickstart
    with paddle.no_grad():
        eager = model.predict(*inputs)
    runtime = rt.build_runtime(model, cfg, weights=save_weights(model, str(tmp_path / 'w')),
                               engine=engine, threads=2)
    assert runtime.engine == engine
    outputs, eager = arrays(runtime(*inputs)), arrays(eager)
    assert sorted(outputs) == sorted(eager)
    for key, value in eager.items():
        assert outputs[key].dtype == value.dtype, key
        assert outputs[key].shape[1:] == value.shape[1:], key
    for key in ('bbox_num', 'num_above_score', 'num_candidates'):
        np.testing.assert_array_equal(outputs[key], eager[key])
    assert_same_detections(per_image(outputs, sizes), per_image(eager, sizes))

    # masks with fewer rows than the paste has blocks (a 5x7 image)
    tiny = synthetic_images()[0][100:105, 200:207]
    (inputs, _) = quickstart_inputs(model, cfg, [tiny])
    with paddle.no_grad():
        eager = arrays(model.predict(*inputs))
    outputs = arrays(runtime(*inputs))
    assert outputs['segm'].shape[1:] == (5, 7) and 0 < eager['bbox_num'][0] < 100
    np.testing.assert_array_equal(outputs['cate_label'], eager['cate_label'])
    np.testing.assert_allclose(outputs['cate_score'], eager['cate_score'], atol=1e-4)
    assert (outputs['segm'] != eager['segm']).mean() < 1e-3
    np.testing.assert_array_equal(outputs['bbox'][:, 2:], masks_to_boxes(
        paddle.to_tensor(outputs['segm'].astype(bool))).numpy())


@pytest.mark.skipif(not os.path.isdir(PARITY), reason='../shared is not present')
@pytest.mark.parametrize('engine', EXPORTED)
def test_runtime_matches_the_reference_fixture(engine, tmp_path):
    """The parity fixture's final outputs (tolerances of its README) through the engine."""
    ref = np.load(os.path.join(PARITY, 'eval_solov2_r50_fpn_1x_coco.npz'))
    cfg = load_config(os.path.join(ROOT, 'configs', 'solov2', 'solov2_r50_fpn_1x_coco.yml'))
    model = seeded_model('solov2_r50_fpn_1x_coco')
    runtime = rt.build_runtime(model, cfg, engine=engine, cache_dir=str(tmp_path))
    out = arrays(runtime(*(ref[k] for k in ('image', 'im_shape', 'scale_factor'))))
    real = ref['cate_score'] >= 0.05            # the reference's zero-score dummy excluded
    assert out['bbox_num'].tolist() == [45] == [int(real.sum())]
    np.testing.assert_array_equal(out['cate_label'], ref['cate_label'][real])
    np.testing.assert_allclose(out['cate_score'], ref['cate_score'][real], atol=1e-4)
    mine = out['segm'].astype(bool)
    theirs = unpack(ref['segm_bits'], ref['segm_shape'])[real].astype(bool)
    assert mine.shape == theirs.shape
    inter, union = (mine & theirs).sum((1, 2)), (mine | theirs).sum((1, 2))
    assert np.where(union > 0, inter / np.maximum(union, 1), 1.0).min() >= 0.99


def test_cache_is_reused_then_rebuilt_when_the_weights_change(quickstart, tmp_path, ppdet_log):
    cfg, model, (inputs, _) = quickstart
    weights = save_weights(model, str(tmp_path / 'run' / 'model_final'))
    folder = str(tmp_path / 'run' / 'model_final.inference' / 'paddle')

    def build():
        ppdet_log.clear()
        runtime = rt.build_runtime(model, cfg, weights=weights, engine='paddle', threads=1)
        assert runtime.engine == 'paddle'
        return runtime, ' '.join(r.getMessage() for r in ppdet_log)

    first, log = build()
    assert f'program built in {folder}' in log
    assert first(*inputs)['bbox_num'].min() > 0
    assert f'program reused from {folder}' in build()[1]
    # other weights in the same file: rebuilt, and the outputs follow them
    head = model.solov2_head.solo_cate
    saved = head.bias.numpy()
    head.bias.set_value(paddle.full(head.bias.shape, -30.0))
    try:
        save_weights(model, weights)
        runtime, log = build()
    finally:
        head.bias.set_value(paddle.to_tensor(saved))
    assert f'program built in {folder}' in log
    assert runtime(*inputs)['bbox_num'].tolist() == [0, 0]


def test_cache_is_stale_when_config_code_or_versions_change(quickstart, tmp_path, monkeypatch):
    cfg = quickstart[0]
    weights = tmp_path / 'model.pdparams'
    weights.write_bytes(b'weights')
    cache = rt.ProgramCache(str(tmp_path / 'cache'))
    stored = cache.store('onnx', rt.fingerprint(cfg, str(weights), 'onnx'), lambda folder: None)

    def found(config=cfg):
        return cache.lookup('onnx', rt.fingerprint(config, str(weights), 'onnx'))

    assert found() == stored
    assert found(merge_overrides(copy.deepcopy(cfg), ['MaskMatrixNMS.post_nms_top_n=5'])) is None
    assert found(merge_overrides(copy.deepcopy(cfg), ['TestReader.batch_size=4'])) == stored
    for package in ('paddlepaddle', 'onnxruntime', 'paddle2onnx'):
        with monkeypatch.context() as patch:
            versions = rt._versions
            patch.setattr(rt, '_versions', lambda e, p=package: {**versions(e), p: '0.0'})
            assert found() is None, package
    with monkeypatch.context() as patch:
        patch.setattr(rt, 'MODEL_CODE', ('modeling/heads/*.py',))
        assert found() is None
    with monkeypatch.context() as patch:       # another CPU: onnxruntime's layouts differ
        patch.setattr(rt, 'cpu_flags', lambda: {'avx2', 'fma'})
        assert found() is None
    weights.write_bytes(b'other weights')
    assert found() is None
    # a folder without its build record (an interrupted build) is never used
    os.remove(os.path.join(stored, rt.BUILD_FILE))
    weights.write_bytes(b'weights')
    assert found() is None


def test_unwritable_cache_builds_in_a_temporary_folder(quickstart, tmp_path, ppdet_log):
    cfg, model, (inputs, sizes) = quickstart
    blocker = tmp_path / 'not_a_folder'
    blocker.write_text('')
    runtime = rt.build_runtime(model, cfg, engine='paddle', threads=1,
                               cache_dir=str(blocker / 'cache'))
    assert runtime.engine == 'paddle'
    warnings = [r.getMessage() for r in ppdet_log
                if 'cannot write the inference cache' in r.getMessage()]
    assert len(warnings) == 1 and str(blocker / 'cache') in warnings[0]
    with paddle.no_grad():
        eager = model.predict(*inputs)
    assert_same_detections(per_image(runtime(*inputs), sizes), per_image(eager, sizes))


def test_failed_build_runs_eager_with_one_line(quickstart, tmp_path, ppdet_log, monkeypatch):
    cfg, model, (inputs, _) = quickstart

    def fail(*args, **kwargs):
        raise ExportError('model.json: paddle2onnx failed (exit code 1): unsupported op')

    monkeypatch.setattr(rt, 'export_model', fail)
    runtime = rt.build_runtime(model, cfg, engine='onnx' if rt._installed('onnx') else 'paddle',
                               cache_dir=str(tmp_path))
    assert isinstance(runtime, EagerDetector)
    assert sum('unavailable (model.json: paddle2onnx failed' in r.getMessage()
               for r in ppdet_log) == 1
    assert int(runtime(*inputs)['bbox_num'].sum()) > 0


def test_auto_takes_the_fastest_installed_engine(monkeypatch):
    installed = {'eager', 'paddle', 'onnx'}
    monkeypatch.setattr(rt, '_installed', lambda engine: engine in installed)
    assert rt.resolve_engine('auto') == ['onnx', 'paddle', 'eager']
    installed.remove('onnx')
    assert rt.resolve_engine('auto') == ['paddle', 'eager']
    with pytest.raises(ConfigError, match='inference_engine onnx needs paddle2onnx'):
        rt.resolve_engine('onnx')
    installed.remove('paddle')
    with pytest.raises(ConfigError, match='inference_engine paddle needs a paddlepaddle build '
                                          'with paddle.inference'):
        rt.resolve_engine('paddle')
    assert rt.resolve_engine('eager') == ['eager']


def test_engine_typo_fails_when_the_config_loads(tmp_path):
    path = tmp_path / 'typo.yml'
    path.write_text(f"_BASE_: ['{os.path.join(ROOT, 'configs', 'quickstart.yml')}']\n"
                    "inference_engine: onxx\n")
    with pytest.raises(ConfigError, match=r'typo.yml: inference_engine must be one of auto, '
                                          r'eager, paddle, onnx, got .onxx.'):
        load_config(str(path))


def test_model_sections_follow_the_components_the_architecture_names(quickstart):
    cfg = quickstart[0]
    sections = rt.model_sections(cfg)
    assert {'SOLOv2', 'ResNet', 'FPN', 'SOLOv2Head', 'SOLOv2MaskHead', 'MaskMatrixNMS',
            'num_classes'} <= set(sections)
    assert not {'TrainReader', 'LearningRate', 'weights', 'epoch'} & set(sections)


@pytest.mark.skipif(not rt._installed('onnx'), reason='needs paddle2onnx and onnxruntime')
def test_runtime_uses_every_usable_core_by_default(quickstart, tmp_path, monkeypatch):
    import ppdet
    cfg, model, _ = quickstart
    monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: {0, 1, 2}, raising=False)
    monkeypatch.setattr(ppdet, 'USER_OMP_NUM_THREADS', None)
    runtime = rt.build_runtime(model, cfg, engine='onnx', cache_dir=str(tmp_path))
    assert runtime.session.get_session_options().intra_op_num_threads == 3
