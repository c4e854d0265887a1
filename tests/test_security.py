"""A weights file cannot run code: crafted pickles are refused before anything happens."""
import os
import pickle
import re
import resource

import numpy as np
import pytest

from ppdet.core.errors import WeightsError
from ppdet.utils.fileio import load_file

from conftest import ROOT
from fixtures.weight_files import Calls, CreatesFile


def refused(path, forbidden):
    with pytest.raises(WeightsError) as info:
        load_file(str(path))
    message = str(info.value)
    assert str(path) in message and 'refused' in message and forbidden in message, message
    assert '\n' not in message
    return message


@pytest.mark.parametrize('protocol', [2, 3, 4])
def test_a_pdparams_whose_reduce_creates_a_file_is_refused_and_creates_nothing(tmp_path,
                                                                               protocol):
    payload = pickle.dumps({'conv.weight': np.ones(2, np.float32),
                            'conv.bias': CreatesFile(str(tmp_path / 'pwned'))}, protocol=protocol)

    pickle.loads(payload.replace(b'pwned', b'contr'))['conv.bias'].close()  # plain pickle
    assert (tmp_path / 'contr').exists()

    path = tmp_path / 'malicious.pdparams'
    path.write_bytes(payload)
    refused(path, 'io.open')  # the module of builtins.open
    assert not (tmp_path / 'pwned').exists()


@pytest.mark.parametrize('function, args, forbidden', [
    (os.system, ('touch pwned',), 'posix.system'),
    (eval, ("open('pwned', 'w')", {}), "eval(\"open('pwned', 'w')\""),
    (eval, ('data', {'data': 1, 'more': 2}), "eval('data'"),
    (exec, ('import os',), 'builtins.exec'),
    (getattr, ('text', 'upper'), 'builtins.getattr'),
    (np.load, ('x.npy',), 'numpy.load'),
    (np.dtype, ('O',), 'an array of dtype object'),
    (np.dtype, ([('a', 'f4'), ('b', 'O')],), "an array of dtype [('a', '<f4'), ('b', 'O')]"),
    (np.dtype, ('V8',), 'an array of dtype |V8'),
    (np.dtype, ('U3',), 'an array of dtype <U3'),
    (np.core.multiarray._reconstruct, (np.matrix, (0,), b'b'), 'numpy.matrix'),
    (bytes, (10 ** 12,), 'bytes() with arguments'),
])
def test_other_callables_and_arguments_are_refused(tmp_path, monkeypatch, function, args,
                                                   forbidden):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / 'crafted.pdopt'
    path.write_bytes(pickle.dumps({'LR_Scheduler': {'last_epoch': Calls(function, *args)}},
                                  protocol=4))
    refused(path, forbidden)
    assert os.listdir(tmp_path) == ['crafted.pdopt']


def test_a_record_dtype_flagged_as_holding_objects_is_refused(tmp_path):
    # Its state (flags 63) would make numpy treat the float64 field as object pointers.
    flagged = np.dtype('V8')
    flagged.__setstate__((3, '|', None, ('a',), {'a': (np.dtype('f8'), 0)}, 8, 1, 63))
    assert flagged.hasobject
    payload = pickle.dumps({'w': np.zeros(2, [('a', 'f8')]).view(flagged)}, protocol=4)
    assert pickle.loads(payload)['w'].dtype.hasobject  # what plain pickle gives
    path = tmp_path / 'flags.pdparams'
    path.write_bytes(payload)
    refused(path, 'an array of dtype |V8')


def test_a_codec_other_than_latin1_is_refused(tmp_path):
    import codecs
    path = tmp_path / 'codec.pdparams'
    path.write_bytes(pickle.dumps([Calls(codecs.encode, 'data', 'rot13')], protocol=2))
    refused(path, "_codecs.encode(str, 'rot13')")


def test_a_persistent_id_is_refused(tmp_path):
    path = tmp_path / 'pid.pdparams'
    path.write_bytes(b'\x80\x04\x95\x06\x00\x00\x00\x00\x00\x00\x00K\x01Q.')  # BINPERSID
    refused(path, 'a persistent id')


def test_array_class_is_only_an_argument_never_called(tmp_path):
    # numpy.ndarray(shape) would allocate what the file asks for.
    path = tmp_path / 'alloc.pdparams'
    path.write_bytes(pickle.dumps(Calls(np.ndarray, (10 ** 6, 10 ** 6)), protocol=4))
    with pytest.raises(WeightsError, match='corrupt'):
        load_file(str(path))


def test_a_huge_memo_index_allocates_nothing(tmp_path):
    # LONG_BINPUT 0x7fffffff: the C unpickler would allocate and clear 32 GB for its memo.
    path = tmp_path / 'memo.pdparams'
    path.write_bytes(b'\x80\x02}r\xff\xff\xff\x7f.')
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert load_file(str(path)) == {}
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024  # KB


def test_every_weight_load_in_the_toolkit_goes_through_load_file():
    unsafe = re.compile(r'\bpaddle\.load\(|\bpickle\.(load|loads|Unpickler)\b|\bdill\b'
                        r'|allow_pickle\s*=\s*True|\bjoblib\.load\b')
    offenders = []
    for top in ['ppdet', 'tools', 'deploy', '.']:
        folder = os.path.join(ROOT, top)
        for dirpath, dirnames, filenames in os.walk(folder):
            if top == '.':
                dirnames[:] = []  # only the scripts at the top level
            for name in filenames:
                path = os.path.join(dirpath, name)
                if not name.endswith('.py') or path.endswith(os.path.join('utils', 'fileio.py')):
                    continue
                with open(path, encoding='utf-8') as f:
                    for number, line in enumerate(f, 1):
                        if unsafe.search(line.split('#')[0]):
                            offenders.append(f'{os.path.relpath(path, ROOT)}:{number}')
    assert offenders == [], f'weights must be read with ppdet.utils.fileio.load_file: {offenders}'
