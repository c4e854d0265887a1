"""Weight files: every format paddle.save writes loads like paddle.load; writes are atomic."""
import collections
import os
import pickle
import stat
import sys

import numpy as np
import paddle
import pytest

from ppdet.core.errors import CheckpointError, WeightsError
from ppdet.utils.fileio import TEMP_SUFFIX, load_file, save_file, save_files

from conftest import PARITY, needs_shared
from fixtures.weight_files import PY2_PICKLE, assert_same, tiny_model, tiny_training_state


def training_objects():
    model, optimizer = tiny_training_state()
    dense = model.state_dict()['0.weight'].value().get_tensor()
    return {
        'model state_dict': model.state_dict(),
        'optimizer state_dict': optimizer.state_dict(),
        'optimizer + last_epoch': dict(optimizer.state_dict(), last_epoch=3),
        'nested checkpoint': {'model': model.state_dict(), 'epoch': 2, 'best': 0.25,
                              'history': [paddle.ones([2]), (1, 'a'), None, True]},
        'numpy state': {k: v.numpy() for k, v in model.state_dict().items()},
        'numpy scalars': {'a': np.float32(1.5), 'b': np.arange(3, dtype=np.int64), 'd': 'text',
                          'e': np.array([1 + 2j]), 'f': np.array([True])},
        'bare tensor': paddle.arange(6, dtype='float32').reshape([2, 3]),
        'bare DenseTensor': dense,
        'DenseTensor inside': {'x': [dense, 1.0]},
    }


@pytest.mark.parametrize('protocol', [2, 3, 4])
def test_every_paddle_save_format_loads_as_paddle_load_returns_it(tmp_path, protocol):
    for name, obj in training_objects().items():
        path = str(tmp_path / f'{name}.pdparams')
        paddle.save(obj, path, protocol=protocol)
        assert_same(load_file(path), paddle.load(path, return_numpy=True))


def test_optimizer_state_keeps_the_lr_scheduler_and_last_epoch(tmp_path):
    _, optimizer = tiny_training_state()
    path = str(tmp_path / '0.pdopt')
    save_file(dict(optimizer.state_dict(), last_epoch=1), path)
    state = load_file(path)
    assert state['last_epoch'] == 1
    scheduler = state['LR_Scheduler']
    assert scheduler['last_epoch'] == 1 and isinstance(scheduler['last_lr'], float)
    velocities = [k for k in state if k.endswith('_velocity_0')]
    assert len(velocities) == 6 and all(isinstance(state[k], np.ndarray) for k in velocities)


def test_own_checkpoint_round_trip_gives_numpy_arrays_with_the_same_values(tmp_path):
    model, _ = tiny_training_state()
    path = str(tmp_path / 'model_final.pdparams')
    save_file(model.state_dict(), path)
    loaded = load_file(path)
    assert list(loaded) == list(model.state_dict())
    for key, value in model.state_dict().items():
        assert isinstance(loaded[key], np.ndarray)
        np.testing.assert_array_equal(loaded[key], value.numpy())
    fresh = tiny_model(seed=4)
    fresh.set_state_dict(loaded)
    x = paddle.randn([1, 3, 6, 6])
    model.eval(), fresh.eval()
    assert not np.array_equal(tiny_model(seed=4)(x).numpy(), model(x).numpy())
    np.testing.assert_array_equal(fresh(x).numpy(), model(x).numpy())


@needs_shared
def test_official_format_written_by_the_reference_tool_loads(tmp_path):
    sys.path.insert(0, PARITY)
    try:
        from seeded_weights import generate_all, save_pdparams
    finally:
        sys.path.remove(PARITY)
    weights = generate_all([('backbone.conv1.conv.weight', (8, 3, 3, 3), 'float32'),
                            ('backbone.conv1.norm._mean', (8,), 'float32'),
                            ('solov2_head.cate_pred.bias', (4,), 'float32')])
    path = str(tmp_path / 'solov2_r50_fpn_1x_coco.pdparams')
    save_pdparams(weights, path)
    loaded = load_file(path)
    assert_same(loaded, paddle.load(path, return_numpy=True))
    assert list(loaded) == list(weights)
    for key in weights:
        np.testing.assert_array_equal(loaded[key], weights[key])


def test_arrays_that_paddle_split_into_parts_are_joined(tmp_path):
    # paddle.save with protocol 2/3 splits arrays over 1 GB into parts listed in this table.
    whole = np.arange(12, dtype=np.float32).reshape(3, 4)
    flat = whole.reshape(-1)
    saved = {'b': np.ones(2, np.float32), 'w@@.0': flat[:5], 'w@@.1': flat[5:],
             'UnpackBigParamInfor@@': {'w': {'OriginShape': (3, 4), 'slices': ['w@@.0', 'w@@.1']}},
             'StructuredToParameterName@@': {'w': 'linear_0.w_0', 'b': 'linear_0.b_0'}}
    path = tmp_path / 'big.pdparams'
    path.write_bytes(pickle.dumps(saved, protocol=2))
    loaded = load_file(str(path))
    assert_same(loaded, paddle.load(str(path), return_numpy=True))
    assert sorted(loaded) == ['b', 'w']
    np.testing.assert_array_equal(loaded['w'], whole)


def test_python2_era_files_load(tmp_path):
    path = tmp_path / 'old.pdparams'
    path.write_bytes(PY2_PICKLE)
    loaded = load_file(str(path))
    assert_same(loaded, paddle.load(str(path), return_numpy=True))
    assert_same(loaded, {'w': np.array([1, 2], np.float32)})


@pytest.mark.parametrize('protocol', [2, 3, 4])
def test_bytes_values(tmp_path, protocol):
    # Protocol 2 spells bytes as _codecs.encode(text, 'latin1') and b'' as bytes().
    obj = {'empty': b'', 'raw': bytes(range(256)), 'array': np.zeros(0, np.float32)}
    path = tmp_path / 'bytes.pdparams'
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    assert_same(load_file(str(path)), obj)


def test_shared_and_self_referencing_containers(tmp_path):
    shared = [np.zeros(2, np.float32)]
    loop = []
    loop.append(loop)
    obj = {'a': shared, 'b': shared, 'loop': loop, 't': ('name', np.ones(1, np.float32))}
    path = tmp_path / 'refs.pdparams'
    path.write_bytes(pickle.dumps(obj, protocol=4))
    loaded = load_file(str(path))
    assert loaded['a'] is loaded['b']
    assert loaded['loop'][0] is loaded['loop']
    np.testing.assert_array_equal(loaded['t'], np.ones(1, np.float32))  # a saved tensor


# --- errors: one WeightsError with one line naming the file -------------------------------

def weights_error(path):
    with pytest.raises(WeightsError) as info:
        load_file(str(path))
    message = str(info.value)
    assert str(path) in message and '\n' not in message
    return message


def test_missing_file_and_folder(tmp_path):
    assert 'not found' in weights_error(tmp_path / 'nothing.pdparams')
    assert 'folder' in weights_error(tmp_path)


def test_empty_file(tmp_path):
    path = tmp_path / 'empty.pdparams'
    path.write_bytes(b'')
    assert 'empty' in weights_error(path)


@pytest.mark.parametrize('content', [b'architecture: SOLOv2\n', b'PK\x03\x04zip archive',
                                     b'\x00\x00\x00\x00\x01\x00', b'(dp0\n.',
                                     b'\x80\x05protocol 5.', b'\x80\x09future protocol.'])
def test_files_that_are_not_pickles(tmp_path, content):
    path = tmp_path / 'foreign.pdparams'
    path.write_bytes(content)
    assert 'not a paddle weights file' in weights_error(path)


def test_truncated_files(tmp_path):
    model, _ = tiny_training_state()
    full = tmp_path / 'full.pdparams'
    save_file(model.state_dict(), str(full))
    data = full.read_bytes()
    for cut in [1, 2, 40, len(data) // 3, len(data) // 2, len(data) - 1]:
        path = tmp_path / f'cut{cut}.pdparams'
        path.write_bytes(data[:cut])
        assert 'truncated' in weights_error(path)


def test_corrupt_bytes_inside_a_file(tmp_path):
    path = tmp_path / 'corrupt.pdparams'
    data = bytearray(pickle.dumps({'w': np.ones(3, np.float32)}, protocol=4))
    data[12:20] = b'\xff' * 8
    path.write_bytes(bytes(data))
    assert 'corrupt' in weights_error(path)


# --- writing ---------------------------------------------------------------------------

def temp_files(folder):
    return [name for name in os.listdir(folder) if name.endswith(TEMP_SUFFIX)]


def test_save_replaces_the_file_and_leaves_no_temporary_file(tmp_path):
    path = str(tmp_path / 'out' / '0.pdparams')
    save_file({'w': np.zeros(3, np.float32)}, path)
    save_file({'w': np.ones(3, np.float32)}, path)
    np.testing.assert_array_equal(load_file(path)['w'], np.ones(3, np.float32))
    assert os.listdir(tmp_path / 'out') == ['0.pdparams']
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask


def test_save_removes_temporary_files_left_by_a_killed_write(tmp_path):
    stale = tmp_path / f'.0.pdparams.0123456789abcdef{TEMP_SUFFIX}'
    stale.write_bytes(b'\x80\x04half a checkpoint')
    other = tmp_path / f'.1.pdparams.0123456789abcdef{TEMP_SUFFIX}'
    other.write_bytes(b'another target')
    save_file({'w': np.zeros(1)}, str(tmp_path / '0.pdparams'))
    assert sorted(os.listdir(tmp_path)) == [other.name, '0.pdparams']


def test_failed_save_keeps_the_old_file_and_removes_its_temporary_file(tmp_path):
    path = str(tmp_path / '0.pdparams')
    save_file({'w': np.zeros(2, np.float32)}, path)
    with pytest.raises(ValueError):  # paddle refuses to pickle a Layer
        save_file({'layer': paddle.nn.Linear(2, 2)}, path)
    np.testing.assert_array_equal(load_file(path)['w'], np.zeros(2, np.float32))
    assert temp_files(tmp_path) == []


def checkpoint_error(obj, path):
    with pytest.raises(CheckpointError) as info:
        save_file(obj, str(path))
    message = str(info.value)
    assert str(path) in message and '\n' not in message
    return message


def test_save_into_a_folder_that_cannot_be_created(tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('not a folder')
    assert 'cannot write to the folder' in checkpoint_error({'w': np.zeros(1)},
                                                            blocker / 'out' / '0.pdparams')


def test_save_over_a_folder(tmp_path):
    target = tmp_path / 'model_final.pdparams'
    target.mkdir()
    (target / 'keep').write_text('x')
    assert 'writing failed' in checkpoint_error({'w': np.zeros(1)}, target)
    assert temp_files(tmp_path) == [] and os.listdir(target) == ['keep']


@pytest.mark.skipif(os.name != 'posix' or os.geteuid() == 0,
                    reason='needs POSIX permissions that apply to the user')
def test_save_into_a_read_only_folder(tmp_path):
    folder = tmp_path / 'ro'
    folder.mkdir()
    folder.chmod(0o500)
    try:
        assert 'cannot write to the folder' in checkpoint_error({'w': 1}, folder / 'a.pdparams')
    finally:
        folder.chmod(0o700)


def test_ordered_dicts_stay_ordered_dicts(tmp_path):
    obj = {'model': collections.OrderedDict([('b', np.ones(1)), ('a', np.zeros(1))])}
    path = str(tmp_path / 'x.pdparams')
    save_file(obj, path)
    assert_same(load_file(path), obj)


def test_save_files_renames_only_when_all_are_written(tmp_path):
    prefix = str(tmp_path / '3')
    save_files({prefix + '.pdopt': {'last_epoch': 3}, prefix + '.pdparams': {'w': np.ones(1)}})
    assert load_file(prefix + '.pdopt') == {'last_epoch': 3}
    with pytest.raises(ValueError):  # the second object cannot be written
        save_files({prefix + '.pdopt': {'last_epoch': 4},
                    prefix + '.pdparams': {'layer': paddle.nn.Linear(1, 1)}})
    assert load_file(prefix + '.pdopt') == {'last_epoch': 3}  # the first was not renamed
    assert sorted(os.listdir(tmp_path)) == ['3.pdopt', '3.pdparams']
