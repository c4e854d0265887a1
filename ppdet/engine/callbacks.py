"""Hooks of the training loop: logging, metrics.jsonl, VisualDL, snapshots, early stopping.

Each hook receives read-only state (:mod:`ppdet.engine.state`) and changes nothing in the
loop; a hook that wants the run to end says so in ``stop_requested``, which the loop reads
after each snapshot. Rank-0-only hooks are simply not installed on the other ranks.
"""
import datetime
import json
import logging
import os
import time

__all__ = ['Callback', 'LogPrinter', 'MetricsWriter', 'VisualDLWriter', 'SnapshotSaver',
           'EarlyStopping']

logger = logging.getLogger('ppdet')


class Callback:
    stop_requested = False

    def on_train_begin(self, start):
        """Before the first step; ``start``: the :class:`Progress` the run begins at."""

    def on_step_end(self, state):
        """After each step (a :class:`StepState`)."""

    def on_snapshot(self, snapshot):
        """After an epoch that is snapshotted; the model holds its EMA weights, if any."""

    def on_eval_end(self, snapshot, metrics):
        """After the evaluation of a snapshot: ``metrics`` as ``metrics.jsonl`` has them."""

    def on_train_end(self):
        """After the last step."""


class LogPrinter(Callback):
    """Every ``log_iter`` steps: losses, lr, batch/data time, images per second, ETA."""

    def __init__(self, log_iter, steps_per_epoch, batch_size):
        self.log_iter, self.steps_per_epoch, self.batch_size = log_iter, steps_per_epoch, batch_size

    def on_step_end(self, state):
        if state.iter % self.log_iter:
            return
        eta = datetime.timedelta(seconds=int(state.eta))
        losses = '  '.join(f'{k}: {v:.6f}' for k, v in state.losses.items())
        ips = self.batch_size / max(state.mean_batch_time, 1e-9)
        logger.info(f'Epoch: [{state.epoch}] [{state.iter:>4}/{self.steps_per_epoch}]'
                    f'  lr: {state.lr:.6f}  {losses}  eta: {eta}'
                    f'  batch_cost: {state.mean_batch_time:.4f} s'
                    f'  data_cost: {state.mean_data_time:.4f} s  ips: {ips:.2f} images/s')


class MetricsWriter(Callback):
    """``metrics.jsonl``: one object per logged iteration and one per evaluation."""

    def __init__(self, path, log_iter):
        self.path, self.log_iter = path, log_iter

    def on_train_begin(self, start):
        """A resumed run drops the rows after its checkpoint: they are about to be redone."""
        if not os.path.isfile(self.path):
            return
        with open(self.path, encoding='utf-8') as f:
            lines = [line for line in f if line.strip()]
        kept = [line for line in lines if json.loads(line).get('step', 0) < start.step]
        if len(kept) != len(lines):
            with open(self.path, 'w', encoding='utf-8') as f:
                f.writelines(kept)

    def _write(self, row):
        with open(self.path, 'a', encoding='utf-8') as f:
            f.write(json.dumps(row) + '\n')

    def on_step_end(self, state):
        if state.iter % self.log_iter == 0:
            self._write({'type': 'train', 'epoch': state.epoch, 'iter': state.iter,
                         'step': state.step, 'lr': state.lr, **state.losses,
                         'batch_time': state.batch_time, 'data_time': state.data_time,
                         'eta': state.eta, 'time': time.time()})

    def on_eval_end(self, snapshot, metrics):
        self._write({'type': 'eval', 'epoch': snapshot.epoch, 'step': snapshot.step, **metrics})


class VisualDLWriter(Callback):
    """Scalars for VisualDL (``--use_vdl``); needs the visualdl package."""

    def __init__(self, log_dir, log_iter):
        from visualdl import LogWriter
        self.writer, self.log_iter = LogWriter(log_dir), log_iter

    def on_step_end(self, state):
        if state.iter % self.log_iter == 0:
            for key, value in {**state.losses, 'lr': state.lr}.items():
                self.writer.add_scalar(f'train/{key}', value, state.step)

    def on_eval_end(self, snapshot, metrics):
        for key, value in metrics.items():
            self.writer.add_scalar(f'eval/{key}', value, snapshot.step)

    def on_train_end(self):
        self.writer.close()


class SnapshotSaver(Callback):
    """Epoch snapshots ``<epoch>`` / ``model_final`` through a :class:`Checkpointer`, the last
    ``keep_max`` kept (all with 0 or less), and ``best_model`` by mask AP."""

    def __init__(self, checkpointer, keep_max=5):
        self.checkpointer, self.keep_max = checkpointer, keep_max
        self.snapshots = []
        self.best_ap = -1000.

    def on_train_begin(self, start):
        # snapshots of an earlier run in this folder (resume) count towards the K kept
        self.snapshots = self.checkpointer.saved_epochs()

    def on_snapshot(self, snapshot):
        name = 'model_final' if snapshot.final else str(snapshot.epoch)
        self.checkpointer.save(name, snapshot.resume_point())
        if snapshot.final:
            return
        self.snapshots.append(name)
        if self.keep_max and self.keep_max > 0:
            while len(self.snapshots) > self.keep_max:
                self.checkpointer.remove(self.snapshots.pop(0))

    def on_eval_end(self, snapshot, metrics):
        ap = metrics.get('segm_AP')
        if ap is None:
            logger.warning('no segm predictions in this evaluation; best_model not updated')
            return
        if ap >= self.best_ap:
            self.best_ap = ap
            self.checkpointer.save('best_model', snapshot.resume_point())
        logger.info(f'best mask AP so far: {self.best_ap:.4f}')


class EarlyStopping(Callback):
    """Asks to stop after ``patience`` evaluations without a better mask AP."""

    def __init__(self, patience):
        self.patience = patience
        self.best = -1000.
        self.waited = 0

    def on_eval_end(self, snapshot, metrics):
        ap = metrics.get('segm_AP', -1000.)
        if ap > self.best:
            self.best, self.waited = ap, 0
            return
        self.waited += 1
        if self.waited >= self.patience:
            logger.info(f'no better mask AP for {self.patience} evaluations: stopping early')
            self.stop_requested = True
