"""Trainer callbacks: logging, metrics.jsonl, VisualDL, checkpoints, early stopping.

Each hook receives the trainer; rank-0-only callbacks are simply not installed elsewhere.
"""
import datetime
import json
import logging
import os
import time

from ppdet.utils.checkpoint import remove_checkpoint

__all__ = ['Callback', 'LogPrinter', 'MetricsWriter', 'VisualDLWriter', 'Checkpointer',
           'EarlyStopping']

logger = logging.getLogger('ppdet')


class Callback:
    def on_train_begin(self, trainer):
        pass

    def on_step_end(self, trainer, status):
        pass

    def on_snapshot(self, trainer, status):
        """After an epoch that is snapshotted (weights are the EMA ones here, if any)."""

    def on_eval_end(self, trainer, status):
        pass

    def on_train_end(self, trainer):
        pass


def _logged(trainer, status):
    return status['iter'] % trainer.cfg.get('log_iter', 20) == 0


def _eta_seconds(trainer, status):
    """Seconds left at the current mean batch time."""
    return (trainer.total_steps - status['step'] - 1) * status['timer'].batch_time


class LogPrinter(Callback):
    """Every ``log_iter`` steps: losses, lr, batch/data time, images per second, ETA."""

    def on_step_end(self, trainer, status):
        if not _logged(trainer, status):
            return
        timer = status['timer']
        eta = datetime.timedelta(seconds=int(_eta_seconds(trainer, status)))
        losses = '  '.join(f'{k}: {v:.6f}' for k, v in status['losses'].items())
        logger.info(f'Epoch: [{status["epoch"]}] [{status["iter"]:>4}/{trainer.steps_per_epoch}]'
                    f'  lr: {status["lr"]:.6f}  {losses}  eta: {eta}'
                    f'  batch_cost: {timer.batch_time:.4f} s  data_cost: {timer.data_time:.4f} s'
                    f'  ips: {trainer.batch_size / max(timer.batch_time, 1e-9):.2f} images/s')


class MetricsWriter(Callback):
    """``metrics.jsonl``: one object per logged iteration and one per evaluation."""

    def __init__(self, path):
        self.path = path

    def on_train_begin(self, trainer):
        """A resumed run drops the rows after its checkpoint: they are about to be redone."""
        if not os.path.isfile(self.path):
            return
        with open(self.path, encoding='utf-8') as f:
            lines = [line for line in f if line.strip()]
        kept = [line for line in lines if json.loads(line).get('step', 0) < trainer.global_step]
        if len(kept) != len(lines):
            with open(self.path, 'w', encoding='utf-8') as f:
                f.writelines(kept)

    def _write(self, row):
        with open(self.path, 'a', encoding='utf-8') as f:
            f.write(json.dumps(row) + '\n')

    def on_step_end(self, trainer, status):
        if _logged(trainer, status):
            self._write({'type': 'train', 'epoch': status['epoch'], 'iter': status['iter'],
                         'step': status['step'], 'lr': status['lr'], **status['losses'],
                         'batch_time': status['timer'].last_batch,
                         'data_time': status['timer'].last_data,
                         'eta': _eta_seconds(trainer, status), 'time': time.time()})

    def on_eval_end(self, trainer, status):
        self._write({'type': 'eval', 'epoch': status['epoch'], 'step': status['step'],
                     **status['metrics']})


class VisualDLWriter(Callback):
    """Scalars for VisualDL (``--use_vdl``); needs the visualdl package."""

    def __init__(self, log_dir):
        from visualdl import LogWriter
        self.writer = LogWriter(log_dir)

    def on_step_end(self, trainer, status):
        if _logged(trainer, status):
            for key, value in {**status['losses'], 'lr': status['lr']}.items():
                self.writer.add_scalar(f'train/{key}', value, status['step'])

    def on_eval_end(self, trainer, status):
        for key, value in status['metrics'].items():
            self.writer.add_scalar(f'eval/{key}', value, status['step'])

    def on_train_end(self, trainer):
        self.writer.close()


class Checkpointer(Callback):
    """Epoch snapshots ``<epoch>``/``model_final``, the last K kept, and ``best_model``."""

    def __init__(self, keep_max=5):
        self.keep_max = keep_max
        self.snapshots = []
        self.best_ap = -1000.

    def on_train_begin(self, trainer):
        # snapshots of an earlier run in this folder (resume) count towards the K kept
        names = [f[:-len('.pdparams')] for f in os.listdir(trainer.save_dir)
                 if f.endswith('.pdparams')]
        self.snapshots = sorted((n for n in names if n.isdigit()), key=int)

    def on_snapshot(self, trainer, status):
        name = 'model_final' if status['final'] else str(status['epoch'])
        trainer.save(name, status)
        if status['final']:
            return
        self.snapshots.append(name)
        if self.keep_max and self.keep_max > 0:
            while len(self.snapshots) > self.keep_max:
                remove_checkpoint(os.path.join(trainer.save_dir, self.snapshots.pop(0)))

    def on_eval_end(self, trainer, status):
        ap = status['metrics'].get('segm_AP')
        if ap is None:
            logger.warning('no segm predictions in this evaluation; best_model not updated')
            return
        if ap >= self.best_ap:
            self.best_ap = ap
            trainer.save('best_model', status)
        logger.info(f'best mask AP so far: {self.best_ap:.4f}')


class EarlyStopping(Callback):
    """Stop after ``patience`` evaluations without a better mask AP."""

    def __init__(self, patience):
        self.patience = patience
        self.best = -1000.
        self.waited = 0

    def on_eval_end(self, trainer, status):
        ap = status['metrics'].get('segm_AP', -1000.)
        if ap > self.best:
            self.best, self.waited = ap, 0
            return
        self.waited += 1
        if self.waited >= self.patience:
            logger.info(f'no better mask AP for {self.patience} evaluations: stopping early')
            trainer.stop_requested = True
