"""Reading and writing weight and checkpoint files.

Every load of a ``.pdparams`` / ``.pdopt`` / ``.pdema`` file in the toolkit goes through
:func:`load_file`, every write through :func:`save_file` or :func:`save_files`.

``paddle.save`` writes pickles, and an ordinary unpickler runs whatever a file tells it to.
:func:`load_file` admits only the few globals that ``paddle.save`` (paddle 1.x to 3.x) and numpy
put into such a file, each replaced by a stand-in that accepts only the arguments those writers
use, so a crafted file cannot run code.  It returns what ``paddle.load(path, return_numpy=True)``
returns: the saved structure with numpy arrays where tensors were.

:func:`save_file` writes a temporary file in the target's folder, fsyncs it, renames it over
the target and fsyncs the folder: a run killed at any moment leaves the old or the new file.
:func:`save_files` does the same for the files of one checkpoint, renaming them together once
all are written.
"""
import collections
import glob
import os
import pickle
import secrets

import numpy as np

from ppdet.core.errors import CheckpointError, WeightsError

__all__ = ['load_file', 'save_file', 'save_files', 'TEMP_SUFFIX']

# Keys paddle.save adds to a state dict: tensor names, and the parts of arrays it split up
# (protocols 2-3 cannot hold one object over 4 GB).
_NAME_TABLE = 'StructuredToParameterName@@'
_SPLIT_TABLE = 'UnpackBigParamInfor@@'

_PADDLE_PROTOCOLS = (2, 3, 4)

# Temporary files are hidden and end in TEMP_SUFFIX, so no listing of checkpoints sees them.
TEMP_SUFFIX = '.tmp'


class _Refused(pickle.UnpicklingError):
    """The file asks for something a weights file never holds."""


_ARRAY_CLASS = object()  # what ``numpy.ndarray`` stands for: an argument, never called


def _new_array(subtype, shape, dtype):
    """``numpy.core.multiarray._reconstruct``: an empty array whose state comes next."""
    if subtype is not _ARRAY_CLASS:
        raise _Refused(f'an array of class {subtype!r}')
    return np.empty(0, np.int8)


def _new_dtype(*args):
    """``numpy.dtype`` of numbers or booleans, what tensors hold.

    Other kinds are refused: object arrays hold arbitrary Python objects, and the state that
    follows a flexible dtype (strings, records) can flag it as holding objects.
    """
    dtype = np.dtype(*args)
    if dtype.kind not in 'biufc':
        raise _Refused(f'an array of dtype {dtype}')
    return dtype


def _latin1_bytes(text, encoding):
    """``_codecs.encode``: how pickle protocols 2 and 3 under Python 3 spell ``bytes``."""
    if not isinstance(text, str) or encoding != 'latin1':
        raise _Refused(f'_codecs.encode({type(text).__name__}, {encoding!r})')
    return text.encode('latin1')


def _empty_bytes(*args):
    """``bytes()``: how pickle protocol 2 spells ``b''``."""
    if args:
        raise _Refused('bytes() with arguments')
    return b''


def _dense_tensor(expr, scope):
    """``eval('data', {'data': array})``: how ``paddle.save`` writes a bare DenseTensor."""
    if expr != 'data' or not isinstance(scope, dict) or list(scope) != ['data']:
        raise _Refused(f'eval({expr!r}, ...)')
    return scope['data']


_NUMPY_CORE = ('numpy.core.multiarray', 'numpy._core.multiarray')
_BUILTINS = ('builtins', '__builtin__')  # protocol 2 writes Python 2 module names
_ALLOWED_GLOBALS = {
    ('numpy', 'ndarray'): _ARRAY_CLASS,
    ('numpy', 'dtype'): _new_dtype,
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('_codecs', 'encode'): _latin1_bytes,
    **{(module, '_reconstruct'): _new_array for module in _NUMPY_CORE},
    **{(module, 'scalar'): np.float32(0).__reduce__()[0] for module in _NUMPY_CORE},
    **{(module, 'tuple'): tuple for module in _BUILTINS},
    **{(module, 'bytes'): _empty_bytes for module in _BUILTINS},
    **{(module, 'eval'): _dense_tensor for module in _BUILTINS},
}


class _WeightsUnpickler(pickle._Unpickler):
    """An unpickler that resolves only :data:`_ALLOWED_GLOBALS`.

    The pure-Python unpickler keeps its memo in a dict: with the C one, a 4-byte memo index in
    the file makes it allocate and clear gigabytes.
    """

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise _Refused(f'the Python global {module}.{name}') from None

    def persistent_load(self, pid):
        raise _Refused('a persistent id')


def _join_split_arrays(obj):
    """Undo the splitting of big arrays recorded under ``_SPLIT_TABLE``."""
    for key, info in obj.pop(_SPLIT_TABLE).items():
        parts = [obj.pop(name) for name in info['slices']]
        obj[key] = np.concatenate(parts).reshape(info['OriginShape'])


def _is_saved_tensor(value):
    return (type(value) is tuple and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], np.ndarray))


def _tensors_to_arrays(obj, done):
    """Replace each ``(name, array)`` tuple (a tensor saved by ``paddle.save``) by its array.

    Dicts and lists are updated in place.  ``done`` maps the id of each visited container to
    its result, so shared and self-referencing containers are handled once.
    """
    if _is_saved_tensor(obj):
        return obj[1]
    if id(obj) in done:
        return done[id(obj)]
    if isinstance(obj, (dict, list)):
        done[id(obj)] = obj
        for key in list(obj) if isinstance(obj, dict) else range(len(obj)):
            obj[key] = _tensors_to_arrays(obj[key], done)
    elif type(obj) is tuple:
        done[id(obj)] = obj  # a cycle back to this tuple keeps the original
        done[id(obj)] = tuple(_tensors_to_arrays(item, done) for item in obj)
        return done[id(obj)]
    return obj


def _restore_structure(obj):
    """What ``paddle.load(..., return_numpy=True)`` makes of the unpickled object."""
    if isinstance(obj, dict) and _SPLIT_TABLE in obj:
        _join_split_arrays(obj)
    if isinstance(obj, dict) and _NAME_TABLE in obj:
        del obj[_NAME_TABLE]  # a state dict: its values are arrays already
        return obj
    return _tensors_to_arrays(obj, {})


def _check_is_complete_pickle(path, f):
    """Cheap checks of the first and last bytes, before anything is unpickled."""
    head = f.read(2)
    if not head:
        raise WeightsError(f'{path}: the file is empty')
    if head[:1] != pickle.PROTO or (len(head) == 2 and head[1] not in _PADDLE_PROTOCOLS):
        raise WeightsError(f'{path}: not a paddle weights file (paddle.save writes pickles of '
                           f'protocol 2 to 4; this file starts with {head!r})')
    f.seek(-1, os.SEEK_END)
    if len(head) < 2 or f.read(1) != pickle.STOP:
        raise WeightsError(f'{path}: the file is truncated (its data stops before the end; '
                           f'an interrupted download or write?)')
    f.seek(0)


def load_file(path):
    """Load a file written by ``paddle.save``: the saved structure, numpy arrays for tensors.

    Raises :class:`WeightsError` for a missing, empty, truncated, corrupt or foreign file, and
    for a file that asks for any Python object outside the weights format.
    """
    if os.path.isdir(path):
        raise WeightsError(f'{path}: is a folder, not a weights file')
    try:
        f = open(path, 'rb')
    except FileNotFoundError:
        raise WeightsError(f'{path}: file not found') from None
    except OSError as e:
        raise WeightsError(f'{path}: cannot read the file ({e.strerror or e})') from e
    with f:
        _check_is_complete_pickle(path, f)
        try:
            return _restore_structure(_WeightsUnpickler(f, encoding='latin1').load())
        except _Refused as e:
            raise WeightsError(f'{path}: refused to load: the file asks for {e}, which a '
                               f'weights file never holds (a crafted file could run code '
                               f'this way)') from e
        except Exception as e:  # the unpickler runs no code: anything else is bad data
            raise WeightsError(f'{path}: corrupt or truncated weights file '
                               f'({type(e).__name__}: {_first_line(e)})') from e


def _first_line(err):
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else 'no details'


def _temp_files_of(path):
    folder, name = os.path.split(os.path.abspath(path))
    return glob.glob(os.path.join(glob.escape(folder), glob.escape(f'.{name}.') + '*'
                                  + TEMP_SUFFIX))


def _fsync(path, flags=os.O_RDONLY):
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_file(obj, path):
    """Write ``obj`` with ``paddle.save`` so that ``path`` is always the old or the new file.

    Temporary files left by an earlier, killed write of the same target are removed first.
    Raises :class:`CheckpointError` when the folder cannot be written.
    """
    save_files({path: obj})


def save_files(objects):
    """Write the files of one checkpoint, ``{path: obj}``, renaming them only once all are
    written, in the given order: put the ``.pdparams`` last, and when it is there the others
    (``.pdopt``, ``.pdema``) written with it are complete too.
    """
    temps = {}
    try:
        for path, obj in objects.items():
            temps[path] = _new_temp_file(path)
            _write(obj, temps[path], path)
        for path, tmp in temps.items():
            _rename(tmp, path)
    finally:
        for tmp in temps.values():
            if os.path.exists(tmp):
                os.remove(tmp)


def _new_temp_file(path):
    """An empty temporary file next to ``path`` (permissions from the umask); its name."""
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f'.{name}.{secrets.token_hex(8)}{TEMP_SUFFIX}')
    try:
        os.makedirs(folder, exist_ok=True)
        for stale in _temp_files_of(path):
            os.remove(stale)
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as e:
        raise CheckpointError(f'{path}: cannot write to the folder {folder} '
                              f'({e.strerror or e})') from e
    return tmp


def _write(obj, tmp, path):
    import paddle

    try:
        paddle.save(obj, tmp)
        _fsync(tmp)
    except OSError as e:
        raise CheckpointError(f'{path}: writing failed ({e.strerror or e})') from e


def _rename(tmp, path):
    try:
        os.replace(tmp, path)
        if os.name == 'posix':  # make the rename itself durable
            _fsync(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        raise CheckpointError(f'{path}: writing failed ({e.strerror or e})') from e
