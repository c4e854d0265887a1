"""Each COCO seed config builds what it describes and trains: on the quick-start data (through
``-o`` overrides), its model (ResNet50/101, DCN, EMA...) loads the config's pretrained backbone
from PaddleDetection's cache, takes one step with the config's optimizer, schedule and target
generator at 64 px, and is evaluated. (The r50 3x model is the 1x model with another schedule,
so the 1x config stands for both.)

The head resamples its features to its grids whatever the image size: at the r101 config's
grids (40 to 12 cells a side), its 512-channel deformable convolutions cost some 25 s a step on
a CPU, so that run uses smaller grids, in the head and in the target generator alike.
"""
import math
import os

import numpy as np
import paddle
import pytest

from ppdet.core.config import load_config, merge_overrides
from ppdet.engine import Trainer, TrainStep
from ppdet.utils import download

from conftest import ROOT

pytestmark = pytest.mark.usefixtures('fresh_logger')

SMALL = '{interp: 1, target_size: [64, 64], keep_ratio: true}'
NORMALIZE = '{is_scale: true, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}'
TRAIN_OPS = (f'[{{Decode: {{}}}}, {{Poly2Mask: {{}}}}, {{Resize: {SMALL}}}, {{RandomFlip: {{}}}}, '
             f'{{NormalizeImage: {NORMALIZE}}}, {{Permute: {{}}}}]')
EVAL_OPS = (f'[{{Decode: {{}}}}, {{NormalizeImage: {NORMALIZE}}}, {{Resize: {SMALL}}}, '
            f'{{Permute: {{}}}}]')
SMALL_GRIDS = ['SOLOv2Head.num_grids=[12, 10, 8, 6, 4]',
               'TrainReader.batch_transforms=[{PadBatch: {pad_to_stride: 32}}, '
               '{Gt2Solov2Target: {}}]']


def quickstart_overrides(data, save_dir):
    return [f'save_dir={save_dir}', 'worker_num=0', 'num_classes=4',
            'SOLOv2Head.score_threshold=0.0', 'MaskMatrixNMS.update_threshold=0.0',
            f'TrainDataset.dataset_dir={data}', 'TrainDataset.image_dir=train',
            'TrainDataset.anno_path=annotations/instances_train.json', 'TrainDataset.sample_num=2',
            f'EvalDataset.dataset_dir={data}', 'EvalDataset.image_dir=val',
            'EvalDataset.anno_path=annotations/instances_val.json', 'EvalDataset.sample_num=1',
            f'TrainReader.sample_transforms={TRAIN_OPS}', 'TrainReader.batch_size=1',
            f'EvalReader.sample_transforms={EVAL_OPS}']


def cache_backbone(backbone, url, cache):
    """Put a pretrained-backbone file for ``url`` where PaddleDetection's cache keeps it: the
    backbone's stem (a few tensors keep it small), its first tensor changed. Returns the path,
    the tensors it holds and that tensor's name."""
    state = dict(list((k, v.numpy()) for k, v in backbone.state_dict().items())[:4])
    first = next(iter(state))
    state[first] = state[first] + 1
    path = cache / os.path.basename(url)
    cache.mkdir()
    paddle.save(state, str(path))
    return path, state, first


def no_download(url, *args):
    raise AssertionError(f'{url}: the cached file was not used')


@pytest.mark.parametrize('config, amp, ema, extra', [
    ('solov2/solov2_r50_fpn_1x_coco.yml', False, False, []),
    ('solov2/solov2_r101_vd_fpn_3x_coco.yml', False, True, SMALL_GRIDS),
    ('solov2_r50_enhance_coco.yml', True, True, []),
], ids=['r50_1x', 'r101_vd_3x', 'r50_enhance'])
def test_seed_config_trains_a_step_and_evaluates(config, amp, ema, extra, quickstart_data,
                                                 tmp_path, monkeypatch, ppdet_log):
    cfg = load_config(os.path.join(ROOT, 'configs', config))
    merge_overrides(cfg, quickstart_overrides(quickstart_data, tmp_path) + [f'amp={amp}', *extra])
    trainer = Trainer(cfg)
    warned = [r.getMessage() for r in ppdet_log if r.levelname == 'WARNING']
    assert any('--amp has no effect on the CPU' in m for m in warned) == amp
    assert (trainer.ema is not None) == ema

    # as train.py loads pretrain_weights: the config's address, found in the cache
    monkeypatch.setenv(download.CACHE_ENV, str(tmp_path / 'cache'))
    monkeypatch.setattr(download, '_download', no_download)
    backbone = trainer.model.backbone
    path, state, first = cache_backbone(backbone, cfg['pretrain_weights'], tmp_path / 'cache')
    trainer.load_weights(cfg['pretrain_weights'], strict=False, what='pretrain_weights')
    assert any(r.getMessage().startswith(f'{path}: loaded {len(state)} tensors')
               for r in ppdet_log)
    np.testing.assert_array_equal(backbone.state_dict()[first].numpy(), state[first])

    step = TrainStep(trainer.model, trainer.optimizer, trainer.schedule, trainer.ema, trainer.amp)
    trainer.model.train()
    losses = step(next(iter(trainer.loader)))
    assert all(math.isfinite(v) for v in losses.values()), losses
    assert losses['loss_ins'] > 0                           # the image's instances were targets
    head = trainer.model.solov2_head.solo_cate.weight        # the warm-up's first lr is 0:
    velocity = trainer.optimizer.state_dict()[f'{head.name}_velocity_0']    # its gradient
    assert np.abs(velocity.numpy()).max() > 0                              # reached Momentum
    assert trainer.schedule.last_epoch == 1

    results = trainer.evaluate()
    assert 0 <= results['segm_AP'] <= 1
