"""The Trainer: builds what a config describes and runs training, evaluation or inference.

It wires the parts, each in its own module: :class:`TrainStep` (one update),
:class:`TrainingLoop` (epochs, snapshots, hooks), :class:`Checkpointer` (save, resume, EMA
weights), :func:`evaluate` and :class:`Predictor`, the last two fed by one detector callable.
"""
import logging
import os
import random

import paddle
import paddle.distributed as dist

from ppdet.core.errors import ConfigError, WeightsError
from ppdet.core.workspace import create
from ppdet.metrics import COCOMetric
from ppdet.optimizer import ModelEMA
from ppdet.utils.cpuinfo import describe_cpu
from ppdet.utils.logger import setup_logger

from . import callbacks as cb
from .amp import amp_settings
from .checkpointer import Checkpointer
from .env import init_distributed, seed_everything, select_device, set_cpu_threads
from .evaluation import eval_anno_file, evaluate
from .loop import TrainingLoop
from .predictor import EagerDetector, Predictor
from .runtime import build_runtime, release_parameters
from .state import Progress, TrainPlan
from .train_step import TrainStep

__all__ = ['Trainer']

logger = logging.getLogger('ppdet')


def _default_loader(cfg, mode, images=None):
    """Train data split across ranks; evaluation split too (the metric gathers the records).
    Inference reads one image at a time; the Predictor batches images of one size."""
    from ppdet.data import build_dataset, build_loader
    dataset = build_dataset(cfg, mode, images=images)
    return build_loader(cfg, mode, dataset, split_ranks=mode in ('train', 'eval'),
                        batch_size=1 if mode == 'test' else None)


class Trainer:
    """``Trainer(cfg, mode)`` with mode ``train``, ``eval`` or ``test``.

    ``model``, ``build_loader(cfg, mode)`` and ``detector`` (``(image, im_shape,
    scale_factor) -> outputs`` for evaluation and inference; default: the model, eagerly)
    may be given to run other components. For ``eval`` and ``test`` the model is built
    without initial values (:class:`paddle.LazyGuard`): weights loaded next give every
    parameter its value, and a program the inference cache holds needs none
    (:meth:`load_for_inference`).
    """

    def __init__(self, cfg, mode='train', model=None, build_loader=None, detector=None):
        self.cfg, self.mode = cfg, mode
        self.device = select_device(cfg.get('use_gpu', False))
        self.rank, self.world_size = init_distributed()
        setup_logger(self.rank)
        if self.device == 'cpu':
            logger.info('CPU: %s', describe_cpu(set_cpu_threads(cfg.get('cpu_threads'))))
        seed = cfg.get('seed')
        self.progress = Progress(seed=random.SystemRandom().randrange(2 ** 31)
                                 if seed is None else seed)
        seed_everything(self.progress.seed)
        self.amp = amp_settings(cfg, self.device)
        self.build_loader = build_loader or _default_loader
        self.model = model if model is not None else self._build_model()
        self.save_dir = os.path.join(cfg.get('save_dir', 'output'), cfg['filename'])
        self.ema = self.optimizer = self.schedule = None
        if mode == 'train':
            self._build_training()   # sets self.ema, optimizer, schedule, loader and plan
        self.detector = detector or EagerDetector(self.model, self.amp)
        self.checkpointer = Checkpointer(self.model, self.save_dir, self.optimizer, self.ema)

    def _build_model(self):
        if self.mode == 'train':
            return create(self.cfg['architecture'], self.cfg)
        with paddle.LazyGuard():
            return create(self.cfg['architecture'], self.cfg)

    def _build_training(self):
        cfg = self.cfg
        if cfg.get('use_ema'):
            self.ema = ModelEMA(self.model, cfg.get('ema_decay', 0.9998))
        self.loader = self.build_loader(cfg, 'train')
        steps_per_epoch = len(self.loader)
        if steps_per_epoch == 0:
            raise ConfigError(f'{cfg["filename"]}: the training set is smaller than one batch')
        self.batch_size = cfg['TrainReader'].get('batch_size', 1)
        self.schedule = create('LearningRate', cfg)(steps_per_epoch)
        self.optimizer = create('OptimizerBuilder', cfg)(self.schedule, self.model)
        if self.amp and self.amp.level == 'O2':
            self.model, self.optimizer = paddle.amp.decorate(self.model, self.optimizer,
                                                             level='O2')
        epochs, max_iters = cfg.get('epoch', 1), cfg.get('max_iters', -1)
        total = epochs * steps_per_epoch
        self.plan = TrainPlan(epochs, steps_per_epoch,
                              min(total, max_iters) if max_iters and max_iters > 0 else total,
                              self.save_dir, cfg.get('snapshot_epoch', 1),
                              cfg.get('nan_policy') == 'skip')

    # ---- weights --------------------------------------------------------------------------
    def load_weights(self, path, strict=True, what='weights'):
        self._require(path, what)
        return self.checkpointer.load_weights(path, strict=strict, what=what)

    def _require(self, path, what):
        if not path:
            raise WeightsError(f'{self.cfg["filename"]}: no weights to load; pass -w PATH or '
                               f'-o {what}=PATH')

    def load_for_inference(self, path):
        """Evaluate and predict with the weights ``path`` through the config's
        ``inference_engine`` (see :mod:`ppdet.engine.runtime`); once an exported program
        runs, the model's own parameters are released."""
        self._require(path, 'weights')
        self.detector = build_runtime(self.model, self.cfg, weights=path, amp=self.amp,
                                      load_weights=lambda: self.load_weights(path))
        if not isinstance(self.detector, EagerDetector):
            release_parameters(self.model)
        return self.detector

    def resume(self, path):
        """Restore model, EMA, optimizer, schedule, epoch, step and seed from a checkpoint."""
        self.progress = self.checkpointer.resume(path, self.plan.steps_per_epoch,
                                                 self.progress.seed)

    # ---- training -------------------------------------------------------------------------
    def train(self, validate=False):
        if self.rank == 0:
            self.checkpointer.prepare()
        model = self._parallel_model()
        model.train()
        eval_loader = self.build_loader(self.cfg, 'eval') if validate else None
        loop = TrainingLoop(
            TrainStep(create('CompiledStep', self.cfg).forward_of(model), self.optimizer,
                      self.schedule, self.ema, self.amp), self.loader,
            self.plan, self._hooks(validate), self.checkpointer.evaluated_weights,
            evaluate=(lambda: self._evaluate(eval_loader)) if validate else None,
            sync=self._average_buffers if self.world_size > 1 else None)
        loop.run(self.progress)

    def _hooks(self, validate):
        log_iter = self.cfg.get('log_iter', 20)
        hooks = [cb.LogPrinter(log_iter, self.plan.steps_per_epoch, self.batch_size)]
        if self.rank == 0:
            hooks += [cb.MetricsWriter(os.path.join(self.plan.save_dir, 'metrics.jsonl'),
                                       log_iter),
                      cb.SnapshotSaver(self.checkpointer, self.cfg.get('keep_checkpoint_max', 5))]
            if self.cfg.get('use_vdl'):
                try:
                    hooks.append(cb.VisualDLWriter(
                        self.cfg.get('vdl_log_dir', 'vdl_log_dir/scalar'), log_iter))
                except ImportError:
                    logger.warning('--use_vdl: visualdl is not installed '
                                   '(pip install visualdl); training without it')
        patience = self.cfg.get('patience', -1)
        if validate and patience and patience > 0:
            hooks.append(cb.EarlyStopping(patience))
        return hooks

    def _parallel_model(self):
        if self.world_size < 2:
            return self.model
        if self.device == 'gpu' and self._wants_sync_bn():
            # replaces the BN sublayers in place: the model stays the same object
            paddle.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        return paddle.DataParallel(self.model,
                                   find_unused_parameters=self.cfg.get('find_unused_parameters',
                                                                       False))

    def _wants_sync_bn(self):
        sections = [self.cfg] + [v for v in self.cfg.values() if isinstance(v, dict)]
        return any(s.get('norm_type') == 'sync_bn' for s in sections)

    @paddle.no_grad()
    def _average_buffers(self):
        """Average BN running statistics over the ranks (each saw its own data), so every
        rank evaluates, and rank 0 saves, the same model."""
        # paddle keeps BN statistics as non-trainable parameters, not as buffers
        tensors = {id(t): t for t in self.model.state_dict().values() if t.stop_gradient}
        for buffer in tensors.values():
            if buffer.dtype in (paddle.float32, paddle.float16, paddle.float64):
                total = buffer.clone()
                dist.all_reduce(total)
                buffer.set_value(total / self.world_size)

    # ---- evaluation and inference -----------------------------------------------------------
    def evaluate(self, output_eval=None, classwise=False):
        return self._evaluate(self.build_loader(self.cfg, 'eval'), output_eval, classwise)

    def _evaluate(self, loader, output_eval=None, classwise=False):
        metric = COCOMetric(eval_anno_file(self.cfg), classwise=classwise, output_eval=output_eval)
        return evaluate(self.detector, loader, metric, main_process=self.rank == 0)

    def predict(self, images, output_dir='output', draw_threshold=0.5, save_results=False,
                visualize=True):
        """Run on image files (a file, a folder or a list); write drawings and, optionally,
        ``segm.json`` / ``bbox.json``; returns the result records."""
        from ppdet.data import test_categories
        loader = self.build_loader(self.cfg, 'test', images=images)
        predictor = Predictor(self.detector, test_categories(self.cfg, loader.dataset),
                              self.model.thresholds, show_progress=self.rank == 0,
                              batch_size=(self.cfg.get('TestReader') or {}).get('batch_size', 1))
        return predictor.predict(loader, output_dir, draw_threshold, save_results, visualize)
