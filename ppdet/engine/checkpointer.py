"""Checkpoints of a training run: save, resume, and the EMA weights they hold.

``<save_dir>/<name>.pdparams`` holds the weights that are evaluated (the EMA average when
``use_ema``), ``.pdema`` the raw weights beside them, ``.pdopt`` the optimizer and schedule
state plus where the run was (:class:`~ppdet.engine.state.Progress`).
"""
import contextlib
import logging
import os

from ppdet.core.errors import CheckpointError
from ppdet.utils.checkpoint import (assign_state, load_checkpoint, load_weights,
                                    remove_checkpoint, save_checkpoint, weights_path)

from .state import Progress

__all__ = ['Checkpointer']

logger = logging.getLogger('ppdet')


class Checkpointer:
    """Saves and restores ``model`` (with ``optimizer`` and ``ema`` when training)."""

    def __init__(self, model, save_dir, optimizer=None, ema=None):
        self.model, self.save_dir = model, save_dir
        self.optimizer, self.ema = optimizer, ema
        self._raw = None            # the raw weights while the model holds the EMA ones

    # ---- weights ----------------------------------------------------------------------
    def load_weights(self, path, strict=True, what='weights'):
        """Weights only (``strict=False``: the partial match of pretrained weights)."""
        report = load_weights(self.model, path, strict=strict, what=what)
        logger.info(str(report))
        return report

    @contextlib.contextmanager
    def evaluated_weights(self):
        """Meanwhile the model holds the weights that are saved and evaluated: the EMA average
        when there is one (the raw weights come back afterwards)."""
        if self.ema is None or self._raw is not None:
            yield
            return
        self._raw = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.model.set_state_dict(self.ema.apply())
        try:
            yield
        finally:
            self.model.set_state_dict(self._raw)
            self._raw = None

    # ---- checkpoints --------------------------------------------------------------------
    def prepare(self):
        """Fail before training, not at the first snapshot, when the folder is not writable."""
        try:
            os.makedirs(self.save_dir, exist_ok=True)
            probe = os.path.join(self.save_dir, f'.write_test_{os.getpid()}')
            open(probe, 'w').close()
            os.remove(probe)
        except OSError as e:
            raise CheckpointError(f'{self.save_dir}: cannot write the output folder '
                                  f'({e.strerror}); set save_dir') from e

    def save(self, name, progress):
        """Write ``<save_dir>/<name>``; a run resumed from it goes on at ``progress``."""
        prefix = os.path.join(self.save_dir, name)
        extra = {'last_epoch': progress.epoch, 'step': progress.step, 'seed': progress.seed,
                 'iter_in_epoch': progress.iter}
        with self.evaluated_weights():
            optimizer = self._optimizer_state(self.optimizer.state_dict(), to_structured=True)
            save_checkpoint(prefix, self.model.state_dict(), optimizer, extra, self._raw)
        logger.info(f'saved {prefix}')

    def resume(self, path, steps_per_epoch, seed):
        """Restore model, EMA, optimizer and schedule from ``path``; where the run goes on
        (from the start, with ``seed``, for weights without a ``.pdopt``)."""
        params, opt, ema_raw = load_checkpoint(path)
        file = weights_path(path)
        if self.ema is not None and ema_raw is not None:
            assign_state(self.model, ema_raw, file + '.pdema')
            self.ema.resume(params, (opt or {}).get('LR_Scheduler', {}).get('last_epoch', 0))
        else:
            assign_state(self.model, params, file + '.pdparams')
        if opt is None:
            logger.warning(f'{path}: no .pdopt next to it; optimizer and schedule start fresh')
            return Progress(seed=seed)
        try:
            epoch = int(opt.pop('last_epoch'))
            progress = Progress(epoch, int(opt.pop('iter_in_epoch', 0)),
                                int(opt.pop('step', epoch * steps_per_epoch)),
                                int(opt.pop('seed', seed)))
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f'{path}.pdopt: not a checkpoint of this toolkit ({e})') from e
        try:
            self.optimizer.set_state_dict(self._optimizer_state(opt, to_structured=False))
        except (AssertionError, KeyError, ValueError) as e:
            raise CheckpointError(f'{file}.pdopt: the optimizer state does not fit this model '
                                  f'and config ({e})') from e
        logger.info(f'resumed from {path}: epoch {progress.epoch}, step {progress.step}')
        return progress

    def saved_epochs(self):
        """Names of the epoch snapshots in ``save_dir``, oldest first."""
        names = [f[:-len('.pdparams')] for f in os.listdir(self.save_dir)
                 if f.endswith('.pdparams')]
        return sorted((n for n in names if n.isdigit()), key=int)

    def remove(self, name):
        remove_checkpoint(os.path.join(self.save_dir, name))

    def _optimizer_state(self, state, to_structured):
        """Key optimizer buffers by state_dict names (``fc.weight_velocity_0``), not by paddle's
        creation-order names (``linear_2.w_0_velocity_0``), so any build of the model fits."""
        pairs = {}
        for key, param in self.model.state_dict().items():
            pairs.setdefault(param.name, key)
        if not to_structured:
            pairs = {v: k for k, v in pairs.items()}
        names = sorted(pairs, key=len, reverse=True)

        def rename(key):
            for name in names:
                if key == name or key.startswith(name + '_'):
                    return pairs[name] + key[len(name):]
            return key

        renamed = {}
        for key, value in state.items():
            if isinstance(value, dict) and key == 'master_weights':
                value = {rename(k): v for k, v in value.items()}
            renamed[rename(key)] = value
        return renamed
