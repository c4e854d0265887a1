"""The model's state_dict is the reference's, entry for entry, for the four seed configs."""
import os

import numpy as np
import paddle
import pytest

from ppdet.core.workspace import create, load_config

from conftest import ROOT

PARAMS = os.path.join(ROOT, 'tests', 'fixtures', 'params')
CONFIGS = ['solov2_r50_fpn_1x_coco', 'solov2_r50_fpn_3x_coco', 'solov2_r101_vd_fpn_3x_coco',
           'solov2_r50_enhance_coco']
ALIASES = {'solov2_head.solo_kernel.': 'solov2_head.bbox_head.solo_kernel.',
           'solov2_head.solo_cate.': 'solov2_head.bbox_head.solo_cate.',
           'mask_head.conv_pred.': 'mask_head.mask_feat_head.conv_pred.0.'}


def read_table(name):
    """Rows of ``params/<config>.tsv``: name, shape, dtype, kind, numel, note."""
    rows = []
    with open(os.path.join(PARAMS, name + '.tsv')) as f:
        for line in f:
            if line.startswith('#') or not line.strip():
                continue
            cells = line.rstrip('\n').split('\t')
            shape = tuple(int(d) for d in cells[1].split('x'))
            rows.append((cells[0], shape, cells[2], cells[3], cells[5]))
    return rows


def build(name):
    cfg = load_config(os.path.join(ROOT, 'configs', 'solov2', name + '.yml'))
    return create(cfg.architecture, cfg)


@pytest.mark.parametrize('name', CONFIGS)
def test_state_dict_equals_reference_table_then_loads_strictly_and_runs(name):
    model = build(name)
    table = read_table(name)
    state = model.state_dict()
    mine = [(k, tuple(v.shape), str(v.dtype).replace('paddle.', '')) for k, v in state.items()]
    assert mine == [row[:3] for row in table]          # names, shapes, dtypes and order
    for key, _, _, kind, note in table:
        if kind != 'alias':
            assert state[key].stop_gradient == (note == 'stop_gradient'), key

    # A file written with the reference names (aliases included) loads with nothing left over.
    rng = np.random.RandomState(0)
    weights = {}
    for key, shape, dtype, kind, _ in table:
        primary = next((p + key[len(a):] for a, p in ALIASES.items() if key.startswith(a)), key)
        weights[key] = weights[primary] if kind == 'alias' else \
            (rng.standard_normal(shape) * 0.01).astype(dtype)
    missing, unexpected = model.set_state_dict(weights)
    assert not missing and not unexpected
    state = model.state_dict()
    for key in (table[0][0], 'solov2_head.solo_kernel.weight', 'mask_head.conv_pred.norm.bias'):
        np.testing.assert_array_equal(state[key].numpy(), weights[key])

    model.eval()
    with paddle.no_grad():
        out = model({'image': paddle.to_tensor(rng.standard_normal((1, 3, 96, 128)), 'float32'),
                     'im_shape': paddle.to_tensor([[96., 120.]]),
                     'scale_factor': paddle.to_tensor([[0.5, 0.5]])})
    assert out['segm'].shape[1:] == [192, 240] and out['segm'].dtype == paddle.uint8
    assert int(out['bbox_num'].sum()) == out['cate_score'].shape[0] == out['bbox'].shape[0]


def test_alias_keys_share_storage_with_their_primary_keys():
    model = build('solov2_r50_fpn_1x_coco')
    head = model.solov2_head
    assert head.solo_kernel is head._sub_layers['bbox_head.solo_kernel']
    assert model.mask_head.conv_pred is model.mask_head._sub_layers['mask_feat_head.conv_pred.0']
    aliases = [row for row in read_table('solov2_r50_fpn_1x_coco') if row[3] == 'alias']
    assert len(aliases) == 7
    # each tensor is one parameter (trained and decayed once), whatever its number of names
    assert len(model.parameters()) == len(model.state_dict()) - len(aliases)
