"""Fuzzing load_file: random bytes and mutated weight files load as data or raise WeightsError."""
import collections
import io
import os
import pickle

import numpy as np
import paddle
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ppdet.core.errors import WeightsError
from ppdet.utils.fileio import load_file

from fixtures.weight_files import PY2_PICKLE, assert_same, tiny_training_state

DATA_TYPES = (type(None), bool, int, float, complex, str, bytes, bytearray, np.generic,
              np.dtype)
CONTAINERS = (dict, collections.OrderedDict, list, tuple, set, frozenset)


def assert_only_data(obj, seen=None):
    """Nothing but containers, numbers, strings and numeric arrays (no object arrays)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        assert type(obj) is np.ndarray and not obj.dtype.hasobject
    elif type(obj) in CONTAINERS:
        items = obj.items() if isinstance(obj, dict) else enumerate(obj)
        for key, value in items:
            assert_only_data(key, seen)
            assert_only_data(value, seen)
    else:
        assert isinstance(obj, DATA_TYPES), type(obj)


@pytest.fixture(scope='module')
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp('fuzz_fileio')


def load_or_refuse(folder, data):
    path = folder / 'fuzz.pdparams'
    path.write_bytes(data)
    before = set(os.listdir(folder))
    try:
        assert_only_data(load_file(str(path)))
    except WeightsError as err:
        message = str(err)
        assert message.startswith(str(path)) and '\n' not in message, message
    assert set(os.listdir(folder)) == before


def paddle_saved(obj, protocol):
    buffer = io.BytesIO()
    paddle.save(obj, buffer, protocol=protocol)
    return buffer.getvalue()


def seed_files():
    model, optimizer = tiny_training_state()
    small = {k: v for k, v in list(model.state_dict().items())[:3]}
    optimizer_state = dict(optimizer.state_dict(), last_epoch=2)
    return [paddle_saved(small, 4), paddle_saved(small, 2), paddle_saved(optimizer_state, 4),
            paddle_saved(optimizer_state, 2), PY2_PICKLE,
            pickle.dumps({'a': [1, 2.5, 'x', (None, True)], 'b': np.float32(2)}, protocol=4)]


SEEDS = seed_files()

edits = st.lists(st.tuples(st.sampled_from(['flip', 'set', 'insert', 'delete', 'cut', 'splice']),
                           st.integers(0, 2 ** 20), st.binary(min_size=1, max_size=8)),
                 min_size=1, max_size=5)


def mutate(data, edits):
    data = bytearray(data)
    for op, where, payload in edits:
        i = where % (len(data) + 1)
        if op == 'flip' and i < len(data):
            data[i] ^= payload[0] or 1
        elif op == 'set':
            data[i:i + len(payload)] = payload
        elif op == 'insert':
            data[i:i] = payload
        elif op == 'delete':
            del data[i:i + len(payload)]
        elif op == 'cut':
            del data[i:]
        elif op == 'splice':  # a piece of another valid file
            other = SEEDS[payload[0] % len(SEEDS)]
            start = where % len(other)
            data[i:i] = other[start:start + 64]
    return bytes(data)


@given(seed=st.sampled_from(range(len(SEEDS))), edits=edits)
def test_mutated_weight_files(scratch, seed, edits):
    load_or_refuse(scratch, mutate(SEEDS[seed], edits))


@given(body=st.binary(max_size=200), protocol=st.sampled_from([2, 3, 4]))
def test_random_bytes(scratch, body, protocol):
    load_or_refuse(scratch, body)
    # past the header and end-of-data checks, straight into the unpickler
    load_or_refuse(scratch, bytes([0x80, protocol]) + body + b'.')


OPCODES = [bytes([op.code.encode('latin1')[0]]) for op in __import__('pickletools').opcodes]


@given(ops=st.lists(st.tuples(st.sampled_from(OPCODES), st.binary(max_size=9)), max_size=30))
def test_random_opcode_sequences(scratch, ops):
    load_or_refuse(scratch, b'\x80\x04' + b''.join(op + arg for op, arg in ops) + b'.')


arrays = st.builds(
    lambda dtype, shape, seed: (np.random.default_rng(seed).standard_normal(shape) * 100)
    .astype(dtype), st.sampled_from(['float32', 'float64', 'float16', 'int64', 'int32',
                                     'uint8', 'bool']),
    st.lists(st.integers(0, 3), max_size=3).map(tuple), st.integers(0, 2 ** 16))
leaves = (st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats()
          | st.text(max_size=5) | arrays | arrays.map(paddle.to_tensor))
structures = st.recursive(
    leaves, lambda inner: (st.lists(inner, max_size=3) | st.tuples(inner, inner)
                           | st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=10)


@given(obj=structures | st.dictionaries(st.text(max_size=6), arrays.map(paddle.to_tensor),
                                        max_size=4),
       protocol=st.sampled_from([2, 3, 4]))
def test_anything_paddle_saves_loads_as_paddle_load_returns_it(scratch, obj, protocol):
    path = str(scratch / 'saved.pdparams')
    paddle.save(obj, path, protocol=protocol)
    assert_same(load_file(path), paddle.load(path, return_numpy=True))
