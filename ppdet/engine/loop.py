"""The training loop: epochs of steps, snapshots, and hooks that watch them."""
import contextlib
import logging
import math
import time

import numpy as np

from ppdet.core.errors import TrainingError

from .env import epoch_seed, seed_everything
from .state import Snapshot, StepState

__all__ = ['TrainingLoop', 'Timer']

logger = logging.getLogger('ppdet')


class Timer:
    """Smoothed batch and data times of the last ``window`` iterations."""

    def __init__(self, window=20):
        self.window = window
        self.batches, self.datas = [], []

    def add(self, batch, data):
        self.batches = (self.batches + [batch])[-self.window:]
        self.datas = (self.datas + [data])[-self.window:]

    @property
    def batch_time(self):
        return float(np.mean(self.batches)) if self.batches else 0.

    @property
    def data_time(self):
        return float(np.mean(self.datas)) if self.datas else 0.


class TrainingLoop:
    """Runs ``step`` (``batch -> losses``, one update) over ``loader`` as ``plan`` says.

    Epoch ``e`` re-seeds every generator from ``(seed, e)`` and asks the loader for its batches
    from the resume point on, so a resumed run repeats the uninterrupted one. After each
    snapshotted epoch: ``sync()`` (optional), then within ``snapshot_weights()`` the hooks'
    ``on_snapshot``, ``evaluate()`` (optional) and the hooks' ``on_eval_end``.
    """

    def __init__(self, step, loader, plan, hooks, snapshot_weights=contextlib.nullcontext,
                 evaluate=None, sync=None):
        self.step, self.loader, self.plan, self.hooks = step, loader, plan, hooks
        self.snapshot_weights, self.evaluate, self.sync = snapshot_weights, evaluate, sync

    def run(self, start):
        """Train from ``start`` (a :class:`Progress`) to the end of the plan."""
        for hook in self.hooks:
            hook.on_train_begin(start)
        step, timer = start.step, Timer()
        for epoch in range(start.epoch, self.plan.epochs):
            seed_everything(epoch_seed(start.seed, epoch))
            first = start.iter if epoch == start.epoch else 0
            self.loader.set_epoch(epoch, first)     # the epoch's order, from batch `first` on
            it, step = self._epoch(epoch, first, step, timer)
            final = epoch == self.plan.epochs - 1 or step >= self.plan.total_steps
            if final or (epoch + 1) % self.plan.snapshot_epoch == 0:
                self._snapshot(Snapshot(epoch, it, step - 1, final,
                                        it + 1 < self.plan.steps_per_epoch, start.seed))
            if final or any(hook.stop_requested for hook in self.hooks):
                break
        for hook in self.hooks:
            hook.on_train_end()

    def _epoch(self, epoch, first, step, timer):
        """The epoch's steps from batch ``first``; -> (last batch index, next global step)."""
        tic = time.perf_counter()
        for it, batch in enumerate(self.loader, start=first):
            data_time = time.perf_counter() - tic
            lr = self.step.lr
            losses = self.step(batch)
            self._check_finite(losses, epoch, it)
            batch_time = time.perf_counter() - tic
            timer.add(batch_time, data_time)
            state = StepState(epoch, it, step, lr, losses, batch_time, data_time,
                              timer.batch_time, timer.data_time,
                              eta=(self.plan.total_steps - step - 1) * timer.batch_time)
            for hook in self.hooks:
                hook.on_step_end(state)
            step += 1
            tic = time.perf_counter()
            if step >= self.plan.total_steps:
                break
        return it, step

    def _check_finite(self, losses, epoch, it):
        bad = next((k for k, v in losses.items() if not math.isfinite(v)), None)
        if bad is None:
            return
        where = f'epoch {epoch} iteration {it}: {bad} is {losses[bad]}'
        if not self.plan.skip_non_finite:
            save_dir = self.plan.save_dir
            raise TrainingError(f'{save_dir}: training stopped at {where}; the last snapshot in '
                                f'{save_dir} is intact')
        logger.warning(f'skipping the step at {where}')

    def _snapshot(self, snapshot):
        if self.sync is not None:
            self.sync()
        with self.snapshot_weights():
            for hook in self.hooks:
                hook.on_snapshot(snapshot)
            if self.evaluate is not None:
                metrics = self.evaluate()
                for hook in self.hooks:
                    hook.on_eval_end(snapshot, metrics)
