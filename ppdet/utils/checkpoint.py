"""Loading and saving model weights and training checkpoints.

* :func:`load_weights` with ``strict=True`` (full weights for eval/infer, resume): every
  model key must be in the file with the right shape; alias keys (the same tensor under two
  names) may be absent when their twin is present.
* ``strict=False`` (``pretrain_weights``): keys are matched by the reference's suffix rule
  and whatever does not fit is listed in one report block.
* :func:`save_checkpoint` / :func:`load_checkpoint`: ``.pdparams`` (+ ``.pdema``) and
  ``.pdopt`` (optimizer, scheduler, epoch, step, RNG seeds).

Weights may be given by an ``http(s)://`` address (fetched once into the weights cache by
:mod:`ppdet.utils.download`); checkpoints to resume from are local.

Files are read with :func:`ppdet.utils.fileio.load_file` and written with
:func:`ppdet.utils.fileio.save_files` only.
"""
import os
from dataclasses import dataclass, field

import numpy as np

from ppdet.core.errors import CheckpointError, WeightsError
from ppdet.utils.download import fetch, is_url
from ppdet.utils.fileio import load_file, save_files

__all__ = ['weights_path', 'load_weights', 'assign_state', 'match_partial', 'alias_groups',
           'LoadReport', 'save_checkpoint', 'load_checkpoint', 'remove_checkpoint']


EXTENSIONS = ('.pdparams', '.pdopt', '.pdmodel', '.pdema')


def weights_path(path):
    """``path`` without its weight-file extension: the prefix checkpoints share."""
    path = str(path)
    for ext in EXTENSIONS:
        if path.endswith(ext):
            return path[:-len(ext)]
    return path


def _params_file(path, what):
    """The ``.pdparams`` file for ``path`` (an address is fetched into the cache first), or a
    one-line error saying what to do."""
    if is_url(path):
        return fetch(str(path), _read_state, what)
    file = weights_path(path) + '.pdparams'
    if not os.path.isfile(file):
        hint = (f'; put the file there, or pass -o {what}= to train from scratch'
                if what == 'pretrain_weights' else '')
        raise WeightsError(f'{file}: weights file not found{hint}')
    return file


def _read_state(file):
    state = load_file(file)
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise WeightsError(f'{file}: not a weights file (expected a dict of named arrays)')
    return {k: np.asarray(v) for k, v in state.items()}


def alias_groups(model):
    """Lists of state_dict keys that name one tensor (first key is the primary one)."""
    by_tensor = {}
    for key, tensor in model.state_dict().items():
        by_tensor.setdefault(id(tensor), []).append(key)
    return [keys for keys in by_tensor.values() if len(keys) > 1]


@dataclass
class LoadReport:
    """What a partial load did not use; ``str()`` is the one report block."""
    file: str
    loaded: int = 0
    missing: list = field(default_factory=list)      # model keys left as they were
    unexpected: list = field(default_factory=list)   # file keys nothing used
    mismatched: list = field(default_factory=list)   # (model key, model shape, file shape)

    def __str__(self):
        lines = [f'{self.file}: loaded {self.loaded} tensors']
        if self.missing:
            lines.append(f'  not in the file, left as initialised ({len(self.missing)}): '
                         + _short(self.missing))
        if self.unexpected:
            lines.append(f'  in the file, unused ({len(self.unexpected)}): '
                         + _short(self.unexpected))
        if self.mismatched:
            lines.append(f'  shape mismatch, skipped ({len(self.mismatched)}): ' + _short(
                [f'{k} model {list(m)} file {list(f)}' for k, m, f in self.mismatched]))
        return '\n'.join(lines)


def _short(names, limit=8):
    shown = ', '.join(names[:limit])
    return shown + (f', ... ({len(names) - limit} more)' if len(names) > limit else '')


def match_partial(model_keys, file_keys):
    """Model key -> file key by the reference's suffix rule (longest file key wins).

    A file key ``w`` fits model key ``m`` when ``m == w'`` or ``m`` ends with ``'.' + w'``;
    ``w'`` is ``w`` without a leading ``backbone.`` when ``w`` starts with ``backbone.res5``.
    """
    def stripped(w):
        return w[len('backbone.'):] if w.startswith('backbone.res5') else w

    by_suffix = {}
    for w in sorted(file_keys):
        by_suffix.setdefault(stripped(w), []).append(w)
    matches = {}
    for m in sorted(model_keys):
        parts = m.split('.')
        candidates = [w for i in range(len(parts))
                      for w in by_suffix.get('.'.join(parts[i:]), ())]
        if candidates:
            matches[m] = max(candidates, key=len)
    return matches


def _np_dtype(tensor):
    import paddle
    return {paddle.float32: 'float32', paddle.float16: 'float16', paddle.float64: 'float64',
            paddle.int64: 'int64', paddle.int32: 'int32', paddle.bfloat16: 'float32',
            paddle.uint8: 'uint8', paddle.bool: 'bool'}.get(tensor.dtype, 'float32')


def load_weights(model, path, strict=True, what='weights'):
    """Load ``path`` (with or without ``.pdparams``) into ``model``; returns a LoadReport."""
    file = _params_file(path, what)
    return assign_state(model, _read_state(file), file, strict)


def assign_state(model, state, file, strict=True):
    """Copy the arrays of ``state`` (read from ``file``) into ``model``'s tensors."""
    model_state = model.state_dict()
    aliases = {k for group in alias_groups(model) for k in group[1:]}
    report = LoadReport(file)
    if strict:
        pairs = {k: k for k in model_state if k in state}
        report.missing = [k for k in model_state if k not in state and not (
            k in aliases and _twin_present(model, k, state))]
        report.unexpected = sorted(set(state) - set(model_state))
    else:
        pairs = match_partial(model_state, state)
        report.missing = [k for k in model_state if k not in pairs]
        report.unexpected = sorted(set(state) - set(pairs.values()))
    values = {}
    for key, src in pairs.items():
        shape, file_shape = list(model_state[key].shape), list(state[src].shape)
        if shape != file_shape:
            report.mismatched.append((key, shape, file_shape))
        else:
            values[key] = state[src]
    if strict and (report.missing or report.mismatched):
        problem = (f'{len(report.missing)} model weights missing (e.g. {report.missing[0]})'
                   if report.missing else
                   'shape mismatch for {} (model {}, file {})'.format(*report.mismatched[0]))
        raise WeightsError(f'{file}: does not fit the model: {problem}')
    for key, value in values.items():
        target = model_state[key]
        target.set_value(value.astype(_np_dtype(target)))
    report.loaded = len(values)
    return report


def _twin_present(model, key, state):
    for group in alias_groups(model):
        if key in group:
            return any(k in state for k in group)
    return False


def save_checkpoint(prefix, model_state, optimizer_state=None, extra=None, ema_raw_state=None):
    """Write ``prefix.pdparams`` (+ ``.pdema``) and, with an optimizer state, ``prefix.pdopt``.

    ``model_state`` holds every state_dict key, aliases included.  ``.pdopt`` gets the
    optimizer's state (momentum buffers and ``LR_Scheduler``) plus ``extra`` (epoch, step,
    seeds...).  Writes are atomic: an interrupted save leaves the previous files.
    """
    files = {}
    if ema_raw_state is not None:
        files[prefix + '.pdema'] = {k: _to_numpy(v) for k, v in ema_raw_state.items()}
    if optimizer_state is not None:
        state = {k: (_to_numpy(v) if hasattr(v, 'numpy') else v)
                 for k, v in optimizer_state.items()}
        state.update(extra or {})
        files[prefix + '.pdopt'] = state
    # renamed last: a .pdparams on disk means its .pdopt / .pdema are complete
    files[prefix + '.pdparams'] = {k: _to_numpy(v) for k, v in model_state.items()}
    save_files(files)


def _to_numpy(value):
    return value.numpy() if hasattr(value, 'numpy') else np.asarray(value)


def load_checkpoint(path):
    """Read a checkpoint to resume from: ``(params, opt_state or None, ema_raw or None)``."""
    if is_url(path):
        raise CheckpointError(f'{path}: -r resumes from a checkpoint on disk; download its '
                              f'.pdparams and .pdopt and pass their path without extension')
    prefix = weights_path(path)
    file = prefix + '.pdparams'
    if not os.path.isfile(file):
        raise CheckpointError(f'{file}: checkpoint not found (-r takes the path without '
                              f'extension, e.g. output/<config name>/0)')
    params = _read_state(file)
    opt = load_file(prefix + '.pdopt') if os.path.isfile(prefix + '.pdopt') else None
    if opt is not None and not isinstance(opt, dict):
        raise CheckpointError(f'{prefix}.pdopt: not an optimizer checkpoint')
    ema_raw = _read_state(prefix + '.pdema') if os.path.isfile(prefix + '.pdema') else None
    return params, opt, ema_raw


def remove_checkpoint(prefix):
    for ext in ('.pdparams', '.pdopt', '.pdema'):
        if os.path.exists(prefix + ext):
            os.remove(prefix + ext)
