"""Reading and writing weight and checkpoint files.

Every load of a ``.pdparams`` / ``.pdopt`` file in the toolkit goes through :func:`load_file`,
every write through :func:`save_file` (temporary file in the same folder, fsync, rename).
"""
import io
import os
import tempfile

import paddle

from ppdet.core.errors import CheckpointError, WeightsError

__all__ = ['load_file', 'save_file']


def load_file(path):
    """Load a pickled paddle file (state dict of arrays) from ``path``."""
    if not os.path.isfile(path):
        raise WeightsError(f'{path}: file not found')
    try:
        return paddle.load(path, return_numpy=True)
    except Exception as e:  # a truncated or foreign file
        raise WeightsError(f'{path}: not a readable weights file ({type(e).__name__}: {e})') from e


def save_file(obj, path):
    """Write ``obj`` with ``paddle.save`` atomically: readers see the old file or the new one."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', dir=folder)
    except OSError as e:
        raise CheckpointError(f'{path}: cannot write here ({e.strerror})') from e
    try:
        buffer = io.BytesIO()  # paddle.save takes a path or a BytesIO, not an open file
        paddle.save(obj, buffer)
        with os.fdopen(fd, 'wb') as f:
            f.write(buffer.getvalue())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
