"""tools/model_stats.py: parameter counts against the reference's, FLOPs against hand counts."""
import os
import sys

import paddle.nn as nn
import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, 'tools'))
import model_stats  # noqa: E402

from ppdet.core.config import load_config  # noqa: E402
from ppdet.core.errors import ConfigError  # noqa: E402
from ppdet.core.workspace import create  # noqa: E402

R50 = os.path.join(ROOT, 'configs', 'solov2', 'solov2_r50_fpn_1x_coco.yml')
# SOLOV2_SPEC.md section 18: learnable elements per module of solov2_r50_fpn_1x_coco.
R50_LEARNABLE = {'backbone': 23_508_032, 'neck': 3_344_384, 'solov2_head': 18_081_104,
                 'mask_head': 1_659_392}
R50_TOTAL, R50_TRAINABLE, R50_BN_STATS = 46_592_912, 46_317_392, 53_120


@pytest.fixture(scope='module')
def r50():
    return create('SOLOv2', load_config(R50))


def test_r50_parameters_match_the_reference(r50):
    counts = model_stats.count_parameters(r50)
    assert {k: c.learnable for k, c in counts.items() if k != 'total'} == R50_LEARNABLE
    total = counts['total']
    assert (total.learnable, total.trainable, total.running_stats) == \
        (R50_TOTAL, R50_TRAINABLE, R50_BN_STATS)
    # The state_dict's alias keys name the same tensors a second time: counting its entries
    # would overshoot, so the match above really checks they are counted once.
    state_total = sum(int(v.size) for v in r50.state_dict().values())
    assert state_total > R50_TOTAL + R50_BN_STATS


def test_r50_flops_per_module(r50):
    flops = model_stats.count_flops(r50, (224, 224))
    # ResNet-50 without its classifier: 4.09 G multiply-adds at 224 x 224 (convolutions and
    # batch norms, the usual figure for torchvision / paddle.vision resnet50 less the fc).
    assert flops.per_module['backbone'] == pytest.approx(4.09e9, rel=0.01)
    # The head works on the S x S grids, whatever the image size; the FPN scales with it.
    wider = model_stats.count_flops(r50, (224, 320))
    assert wider.per_module['solov2_head'] == flops.per_module['solov2_head']
    assert wider.per_module['neck'] == pytest.approx(320 / 224 * flops.per_module['neck'],
                                                     rel=1e-3)
    assert flops.uncounted == {'Upsample': 6}


class _OneConv(nn.Layer):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2D(3, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.ReLU(),
                                  nn.Upsample(scale_factor=2))

    def extract(self, image):
        return self.body(image)


def test_flops_hooks_count_each_layer_once():
    layer = _OneConv()
    flops = model_stats.count_flops(layer, (32, 64))
    out = 8 * 32 * 64
    assert flops.per_module == {'body': out * (3 * 3 * 3 + 1) + 2 * out}
    assert flops.uncounted == {'Upsample': 1}
    assert not any(hasattr(sub, 'total_ops') for sub in layer.sublayers())
    assert layer.training


def test_cli_prints_table_flops_and_what_is_left_out(capsys):
    model_stats.main(['-c', os.path.join(ROOT, 'configs', 'quickstart.yml'),
                      '--input_size', '200', '300'])
    out = capsys.readouterr().out
    assert 'network input padded to 224x320' in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    assert set(rows) >= {'backbone', 'neck', 'solov2_head', 'mask_head', 'total'}
    assert 'Not counted:' in out and 'post-processing' in out
    with pytest.raises(ConfigError, match='--input_size 0 300'):
        model_stats.main(['-c', R50, '--input_size', '0', '300'])
