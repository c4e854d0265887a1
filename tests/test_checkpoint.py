"""Strict and partial weight loading, the mismatch report, alias keys, bad files."""
import numpy as np
import paddle
import pytest

from ppdet.core.errors import CheckpointError, WeightsError
from ppdet.utils.checkpoint import (alias_groups, load_checkpoint, load_weights, match_partial,
                                    save_checkpoint, weights_path)
from ppdet.utils.fileio import save_file


class Backbone(paddle.nn.Layer):
    def __init__(self, width=4):
        super().__init__()
        self.conv1 = paddle.nn.Conv2D(3, width, 3)
        self.res5 = paddle.nn.Conv2D(width, width, 1)


class Detector(paddle.nn.Layer):
    def __init__(self, width=4):
        super().__init__()
        self.backbone = Backbone(width)
        self.head = paddle.nn.Conv2D(width, 2, 1)
        self.head_alias = self.head       # one tensor, two state_dict keys


def numpy_state(model):
    return {k: v.numpy() for k, v in model.state_dict().items()}


def test_alias_groups_are_keys_sharing_one_tensor():
    assert alias_groups(Detector()) == [['head.weight', 'head_alias.weight'],
                                        ['head.bias', 'head_alias.bias']]


def test_strict_round_trip_with_and_without_extension_and_aliases(tmp_path):
    source, target = Detector(), Detector()
    save_checkpoint(str(tmp_path / 'w'), source.state_dict())
    state = numpy_state(source)
    assert 'head_alias.weight' in state              # aliases are written
    without_alias = {k: v for k, v in state.items() if not k.startswith('head_alias')}
    save_file(without_alias, str(tmp_path / 'slim.pdparams'))
    for path in (tmp_path / 'w', tmp_path / 'w.pdparams', tmp_path / 'slim'):
        target = Detector()
        report = load_weights(target, str(path))
        for key, value in state.items():
            np.testing.assert_array_equal(target.state_dict()[key].numpy(), value)
        assert not report.missing and not report.mismatched


def test_strict_refuses_missing_and_wrong_shapes_naming_the_file(tmp_path):
    state = numpy_state(Detector())
    del state['backbone.conv1.weight']
    save_file(state, str(tmp_path / 'missing.pdparams'))
    with pytest.raises(WeightsError, match=r'missing\.pdparams: .*backbone\.conv1\.weight'):
        load_weights(Detector(), str(tmp_path / 'missing'))
    save_file(numpy_state(Detector(width=8)), str(tmp_path / 'wide.pdparams'))
    with pytest.raises(WeightsError, match=r'wide\.pdparams: does not fit the model: shape'):
        load_weights(Detector(), str(tmp_path / 'wide'))


def test_partial_load_matches_suffixes_and_reports_once(tmp_path):
    source = Backbone()
    file_state = {k: v.numpy() for k, v in source.state_dict().items()}  # no backbone. prefix
    file_state['fc.weight'] = np.zeros((10, 4), 'float32')
    file_state['res5.bias'] = np.zeros((7,), 'float32')                  # wrong shape
    save_file(file_state, str(tmp_path / 'imagenet.pdparams'))
    model = Detector()
    head_before = model.head.weight.numpy().copy()
    report = load_weights(model, str(tmp_path / 'imagenet'), strict=False)
    np.testing.assert_array_equal(model.backbone.conv1.weight.numpy(), file_state['conv1.weight'])
    np.testing.assert_array_equal(model.head.weight.numpy(), head_before)
    assert report.loaded == 3
    assert report.unexpected == ['fc.weight']
    assert [m[0] for m in report.mismatched] == ['backbone.res5.bias']
    assert 'head.weight' in report.missing
    text = str(report)
    assert text.startswith(str(tmp_path / 'imagenet.pdparams'))
    assert 'unused (1): fc.weight' in text and 'shape mismatch' in text


def test_suffix_rule_prefers_the_longest_key_and_strips_backbone_res5():
    matches = match_partial(['backbone.res5.conv.weight', 'neck.conv.weight'],
                            ['conv.weight', 'backbone.res5.conv.weight', 'res5.conv.weight'])
    assert matches['backbone.res5.conv.weight'] == 'backbone.res5.conv.weight'
    assert matches['neck.conv.weight'] == 'conv.weight'


def test_missing_and_corrupt_files_are_one_line_errors(tmp_path):
    with pytest.raises(WeightsError, match='pretrain_weights= to train from scratch'):
        load_weights(Detector(), str(tmp_path / 'nope.pdparams'), strict=False,
                     what='pretrain_weights')
    (tmp_path / 'junk.pdparams').write_bytes(b'not a pickle')
    with pytest.raises(WeightsError, match='junk.pdparams'):
        load_weights(Detector(), str(tmp_path / 'junk'))
    with pytest.raises(CheckpointError, match='checkpoint not found'):
        load_checkpoint(str(tmp_path / 'nope'))


def test_checkpoint_holds_optimizer_state_and_extras(tmp_path):
    model = Detector()
    save_checkpoint(str(tmp_path / '3'), model.state_dict(), {'m_velocity_0': np.ones(2)},
                    {'last_epoch': 4, 'step': 40}, ema_raw_state=model.state_dict())
    params, opt, raw = load_checkpoint(str(tmp_path / '3.pdopt'))
    assert set(params) == set(model.state_dict()) == set(raw)
    assert opt['last_epoch'] == 4 and opt['step'] == 40
    assert weights_path('a/b.pdema') == 'a/b'
