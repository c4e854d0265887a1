"""The Trainer: builds everything a config describes and runs training, evaluation, inference."""
import json
import logging
import math
import os
import random
import time

import numpy as np
import paddle
import paddle.distributed as dist

from ppdet.core.errors import (CheckpointError, ConfigError, DataError, TrainingError,
                               WeightsError)
from ppdet.core.workspace import create
from ppdet.data.source.categories import Categories
from ppdet.metrics import COCOMetric
from ppdet.optimizer import ModelEMA
from ppdet.utils.cpuinfo import describe_cpu
from ppdet.utils.logger import setup_logger
from ppdet.utils.checkpoint import (assign_state, load_checkpoint, load_weights, save_checkpoint,
                                    weights_path)

from . import callbacks as cb
from .env import (epoch_seed, init_distributed, seed_everything, select_device,
                  set_cpu_threads)

__all__ = ['Trainer', 'eval_anno_file']

logger = logging.getLogger('ppdet')


class Timer:
    """Smoothed batch and data times of the last ``window`` iterations."""

    def __init__(self, window=20):
        self.window = window
        self.batches, self.datas = [], []
        self.last_batch = self.last_data = 0.

    def add(self, batch, data):
        self.last_batch, self.last_data = batch, data
        self.batches = (self.batches + [batch])[-self.window:]
        self.datas = (self.datas + [data])[-self.window:]

    @property
    def batch_time(self):
        return float(np.mean(self.batches)) if self.batches else 0.

    @property
    def data_time(self):
        return float(np.mean(self.datas)) if self.datas else 0.


def eval_anno_file(cfg):
    """The EvalDataset's annotation file (categories and ground truth of the metric)."""
    section = cfg['EvalDataset']
    return os.path.join(section.get('dataset_dir', ''), section['anno_path'])


def _default_loader(cfg, mode, images=None):
    """Train data split across ranks; evaluation split too (the metric gathers the records)."""
    from ppdet.data import build_dataset, build_loader
    dataset = build_dataset(cfg, mode, images=images)
    return build_loader(cfg, mode, dataset, split_ranks=mode in ('train', 'eval'))


class Trainer:
    """``Trainer(cfg, mode)`` with mode ``train``, ``eval`` or ``test``.

    ``model`` and ``build_loader(cfg, mode)`` may be given to run other components.
    """

    def __init__(self, cfg, mode='train', model=None, build_loader=None):
        self.cfg, self.mode = cfg, mode
        self.device = select_device(cfg.get('use_gpu', False))
        self.rank, self.world_size = init_distributed()
        setup_logger(self.rank)
        if self.device == 'cpu':
            logger.info('CPU: %s', describe_cpu(set_cpu_threads(cfg.get('cpu_threads'))))
        self.seed = cfg.get('seed')
        if self.seed is None:
            self.seed = random.SystemRandom().randrange(2 ** 31)
        seed_everything(self.seed)
        self.amp = self._amp_settings()
        self.build_loader = build_loader or _default_loader
        self.model = model if model is not None else create(cfg['architecture'], cfg)
        self.save_dir = os.path.join(cfg.get('save_dir', 'output'), cfg['filename'])
        self.start_epoch, self.start_iter, self.global_step = 0, 0, 0
        self.stop_requested = False
        self.ema = ModelEMA(self.model, cfg.get('ema_decay', 0.9998)) \
            if cfg.get('use_ema') and mode == 'train' else None
        if mode == 'train':
            self.loader = self.build_loader(cfg, 'train')
            self.steps_per_epoch = len(self.loader)
            if self.steps_per_epoch == 0:
                raise ConfigError(f'{cfg["filename"]}: the training set is smaller than one batch')
            self.batch_size = cfg['TrainReader'].get('batch_size', 1)
            self.lr = create('LearningRate', cfg)(self.steps_per_epoch)
            self.optimizer = create('OptimizerBuilder', cfg)(self.lr, self.model)
            if self.amp and self.amp['level'] == 'O2':
                self.model, self.optimizer = paddle.amp.decorate(
                    self.model, self.optimizer, level='O2')
            self.total_steps = self._total_steps()

    # ---- set-up -------------------------------------------------------------------------
    def _amp_settings(self):
        if not self.cfg.get('amp'):
            return None
        if self.device == 'cpu':
            logger.warning('--amp has no effect on the CPU (paddle runs float32 there); '
                           'training in float32')
            return None
        level = self.cfg.get('amp_level', 'O1')
        if level not in ('O1', 'O2'):
            raise ConfigError(f'amp_level must be O1 or O2, got {level}')
        return {'level': level, 'custom_white_list': self.cfg.get('custom_white_list'),
                'custom_black_list': self.cfg.get('custom_black_list')}

    def _total_steps(self):
        total = self.cfg.get('epoch', 1) * self.steps_per_epoch
        max_iters = self.cfg.get('max_iters', -1)
        return min(total, max_iters) if max_iters and max_iters > 0 else total

    def _autocast(self):
        if self.amp is None:
            return paddle.amp.auto_cast(enable=False)
        return paddle.amp.auto_cast(enable=True, level=self.amp['level'],
                                    custom_white_list=self.amp['custom_white_list'],
                                    custom_black_list=self.amp['custom_black_list'])

    def _callbacks(self, validate):
        callbacks = [cb.LogPrinter()]
        if self.rank == 0:
            callbacks += [cb.MetricsWriter(os.path.join(self.save_dir, 'metrics.jsonl')),
                          cb.Checkpointer(self.cfg.get('keep_checkpoint_max', 5))]
            if self.cfg.get('use_vdl'):
                try:
                    callbacks.append(cb.VisualDLWriter(self.cfg.get('vdl_log_dir',
                                                                    'vdl_log_dir/scalar')))
                except ImportError:
                    logger.warning('--use_vdl: visualdl is not installed '
                                   '(pip install visualdl); training without it')
        patience = self.cfg.get('patience', -1)
        if validate and patience and patience > 0:
            callbacks.append(cb.EarlyStopping(patience))
        return callbacks

    # ---- weights --------------------------------------------------------------------------
    def load_weights(self, path, strict=True, what='weights'):
        if not path:
            raise WeightsError(f'{self.cfg["filename"]}: no weights to load; pass -w PATH or '
                               f'-o {what}=PATH')
        report = load_weights(self.model, path, strict=strict, what=what)
        logger.info(str(report))
        return report

    def resume(self, path):
        """Restore model, EMA, optimizer, schedule, epoch, step and seed from a checkpoint."""
        params, opt, ema_raw = load_checkpoint(path)
        file = weights_path(path)
        if self.ema is not None and ema_raw is not None:
            assign_state(self.model, ema_raw, file + '.pdema')
            self.ema.resume(params, (opt or {}).get('LR_Scheduler', {}).get('last_epoch', 0))
        else:
            assign_state(self.model, params, file + '.pdparams')
        if opt is None:
            logger.warning(f'{path}: no .pdopt next to it; optimizer and schedule start fresh')
            return
        try:
            self.start_epoch = int(opt.pop('last_epoch'))
            self.start_iter = int(opt.pop('iter_in_epoch', 0))
            self.global_step = int(opt.pop('step', self.start_epoch * self.steps_per_epoch))
            self.seed = int(opt.pop('seed', self.seed))
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f'{path}.pdopt: not a checkpoint of this toolkit ({e})') from e
        try:
            self.optimizer.set_state_dict(self._rename_optimizer_state(opt, to_structured=False))
        except (AssertionError, KeyError, ValueError) as e:
            raise CheckpointError(f'{file}.pdopt: the optimizer state does not fit this model '
                                  f'and config ({e})') from e
        logger.info(f'resumed from {path}: epoch {self.start_epoch}, step {self.global_step}')

    def save(self, name, status):
        """Write ``<save_dir>/<name>``: the evaluated (EMA) weights and the training state."""
        prefix = os.path.join(self.save_dir, name)
        finished = status['epoch'] + (0 if status.get('partial_epoch') else 1)
        extra = {'last_epoch': finished, 'step': status['step'] + 1, 'seed': self.seed,
                 'iter_in_epoch': status['iter'] + 1 if status.get('partial_epoch') else 0}
        raw = self.raw_state if self.ema is not None else None
        opt = self._rename_optimizer_state(self.optimizer.state_dict(), to_structured=True)
        save_checkpoint(prefix, self.model.state_dict(), opt, extra, raw)
        logger.info(f'saved {prefix}')

    def _rename_optimizer_state(self, state, to_structured):
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

    # ---- training -------------------------------------------------------------------------
    def _prepare_save_dir(self):
        """Fail before training, not at the first snapshot, when the folder is not writable."""
        try:
            os.makedirs(self.save_dir, exist_ok=True)
            probe = os.path.join(self.save_dir, f'.write_test_{os.getpid()}')
            open(probe, 'w').close()
            os.remove(probe)
        except OSError as e:
            raise CheckpointError(f'{self.save_dir}: cannot write the output folder '
                                  f'({e.strerror}); set save_dir') from e

    def train(self, validate=False):
        if self.rank == 0:
            self._prepare_save_dir()
        model = self._parallel_model()
        callbacks = self._callbacks(validate)
        self.eval_loader = self.build_loader(self.cfg, 'eval') if validate else None
        for c in callbacks:
            c.on_train_begin(self)
        epochs = self.cfg.get('epoch', 1)
        nan_policy = self.cfg.get('nan_policy', 'stop')
        step, timer = self.global_step, Timer()
        for epoch in range(self.start_epoch, epochs):
            seed_everything(epoch_seed(self.seed, epoch))
            skip = self.start_iter if epoch == self.start_epoch else 0
            self.loader.set_epoch(epoch, skip)     # the epoch's order, from batch `skip` on
            model.train()
            tic = time.perf_counter()
            for it, batch in enumerate(self.loader, start=skip):
                data_time = time.perf_counter() - tic
                lr = self.optimizer.get_lr()
                losses = self._train_step(model, batch, epoch, it, nan_policy)
                if self.ema is not None:
                    self.ema.update()
                timer.add(time.perf_counter() - tic, data_time)
                status = {'epoch': epoch, 'iter': it, 'step': step, 'lr': lr,
                          'losses': losses, 'timer': timer}
                for c in callbacks:
                    c.on_step_end(self, status)
                step += 1
                tic = time.perf_counter()
                if step >= self.total_steps:
                    break
            partial = it + 1 < self.steps_per_epoch
            final = epoch == epochs - 1 or step >= self.total_steps
            if final or (epoch + 1) % self.cfg.get('snapshot_epoch', 1) == 0:
                status = {'epoch': epoch, 'iter': it, 'step': step - 1, 'final': final,
                          'partial_epoch': partial}
                self._snapshot(model, callbacks, status, validate)
            if final or self.stop_requested:
                break
        for c in callbacks:
            c.on_train_end(self)

    def _parallel_model(self):
        if self.world_size < 2:
            return self.model
        if self.device == 'gpu' and self._wants_sync_bn():
            self.model = paddle.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            if self.ema is not None:
                self.ema.model = self.model
        return paddle.DataParallel(self.model,
                                   find_unused_parameters=self.cfg.get('find_unused_parameters',
                                                                       False))

    def _wants_sync_bn(self):
        sections = [self.cfg] + [v for v in self.cfg.values() if isinstance(v, dict)]
        return any(s.get('norm_type') == 'sync_bn' for s in sections)

    def _train_step(self, model, batch, epoch, it, nan_policy):
        with self._autocast():
            outputs = model(batch)
        losses = {k: v for k, v in outputs.items() if k.startswith('loss')}
        values = {k: float(v) for k, v in losses.items()}
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        if bad:
            where = f'epoch {epoch} iteration {it}: {bad[0]} is {values[bad[0]]}'
            if nan_policy != 'skip':
                raise TrainingError(f'{self.save_dir}: training stopped at {where}; the last '
                                    f'snapshot in {self.save_dir} is intact')
            logger.warning(f'skipping the step at {where}')
            self.optimizer.clear_grad()
            self.lr.step()
            return values
        loss = outputs['loss']
        if self.amp is not None:
            scaler = self._scaler()
            scaled = scaler.scale(loss)
            scaled.backward()
            scaler.minimize(self.optimizer, scaled)
        else:
            loss.backward()
            self.optimizer.step()
        self.lr.step()
        self.optimizer.clear_grad()
        return values

    def _scaler(self):
        if not hasattr(self, 'grad_scaler'):
            self.grad_scaler = paddle.amp.GradScaler(
                init_loss_scaling=self.cfg.get('init_loss_scaling', 1024))
        return self.grad_scaler

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

    def _snapshot(self, model, callbacks, status, validate):
        if self.world_size > 1:
            self._average_buffers()
        if self.ema is not None:
            self.raw_state = {k: v.clone() for k, v in self.model.state_dict().items()}
            self.model.set_state_dict(self.ema.apply())
        for c in callbacks:
            c.on_snapshot(self, status)
        if validate:
            status['metrics'] = self._evaluate(self.eval_loader)
            for c in callbacks:
                c.on_eval_end(self, status)
        if self.ema is not None:
            self.model.set_state_dict(self.raw_state)
            self.raw_state = None

    # ---- evaluation -----------------------------------------------------------------------
    def evaluate(self, output_eval=None, classwise=False):
        loader = self.build_loader(self.cfg, 'eval')
        return self._evaluate(loader, output_eval, classwise)

    @paddle.no_grad()
    def _evaluate(self, loader, output_eval=None, classwise=False):
        from tqdm import tqdm
        metric = COCOMetric(eval_anno_file(self.cfg), classwise=classwise, output_eval=output_eval)
        self.model.eval()
        batches = tqdm(loader, desc='eval', disable=self.rank != 0, leave=False)
        for batch in batches:
            with self._autocast():
                outputs = self.model(batch)
            metric.update(batch, outputs)
        results = metric.accumulate(write=self.rank == 0)
        self.model.train()
        return results

    # ---- inference ------------------------------------------------------------------------
    @paddle.no_grad()
    def predict(self, images, output_dir='output', draw_threshold=0.5, save_results=False,
                visualize=True):
        """Run the model on image files; write drawings and, optionally, ``segm.json``."""
        from tqdm import tqdm
        from ppdet.metrics import to_records
        from ppdet.modeling.detections import split_detections
        from ppdet.utils.visualizer import draw_detections
        names = category_names(self.cfg)
        clsid2catid = {i: i for i in range(len(names))}
        catids = result_category_ids(self.cfg)
        if catids:
            clsid2catid = dict(enumerate(catids))
        loader = self.build_loader(self.cfg, 'test', images=images)
        _prepare_output(output_dir)
        self.model.eval()
        records = {'segm': [], 'bbox': []}
        kept = dropped = above_score = candidates = detected = 0
        for batch in tqdm(loader, desc='infer', disable=self.rank != 0):
            with self._autocast():
                outputs = self.model(batch)
            above_score += int(outputs['num_above_score'].sum())
            candidates += int(outputs['num_candidates'].sum())
            detected += int(outputs['bbox_num'].sum())
            for det in split_detections(batch, outputs):
                path = images[det.im_id]
                if save_results:
                    for iou_type, recs in to_records(det, clsid2catid).items():
                        records[iou_type].extend(recs)
                shown = det.above(draw_threshold)
                kept, dropped = kept + len(shown), dropped + len(det) - len(shown)
                if visualize:
                    _draw(path, det, names, draw_threshold, output_dir, draw_detections)
        head = self.model.solov2_head
        logger.info(f'{len(images)} images: {above_score} (cell, class) scores above '
                    f'score_threshold {head.score_threshold} (at most pre_nms_top_n '
                    f'{head.mask_nms.pre_nms_top_n} per image); {above_score - candidates} '
                    f'dropped for a mask not larger than its stride at mask_threshold '
                    f'{head.mask_threshold}; {candidates - detected} dropped by Matrix NMS '
                    f'(update_threshold {head.mask_nms.update_threshold}, post_nms_top_n '
                    f'{head.mask_nms.post_nms_top_n}); {kept} drawn, {dropped} below '
                    f'draw_threshold {draw_threshold}')
        if visualize:
            logger.info(f'visualisations written to {output_dir}/')
        if save_results:
            for iou_type, recs in records.items():
                path = os.path.join(output_dir, f'{iou_type}.json')
                with open(path, 'w', encoding='utf-8') as f:
                    json.dump(recs, f)
            logger.info(f'results written to {output_dir}/segm.json and bbox.json '
                        f'(image_id = index in the sorted image list)')
        return records


def _prepare_output(output_dir):
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as e:
        raise ConfigError(f'{output_dir}: cannot create the output folder ({e.strerror})') from e
    if not os.access(output_dir, os.W_OK):
        raise ConfigError(f'{output_dir}: the output folder is not writable')


def _draw(path, det, names, threshold, output_dir, draw_detections):
    import cv2
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f'{path}: cannot read the image')
    drawn = draw_detections(image[:, :, ::-1], det, names, threshold)
    cv2.imwrite(os.path.join(output_dir, os.path.basename(path)), drawn[:, :, ::-1])


def _test_anno_file(cfg):
    section = cfg.get('TestDataset') or {}
    if not section.get('anno_path'):
        return None
    path = os.path.join(section.get('dataset_dir', ''), section['anno_path'])
    return path if os.path.isfile(path) else None


def result_category_ids(cfg):
    anno = _test_anno_file(cfg)
    return list(Categories.from_file(anno).ids) if anno else None


def category_names(cfg):
    """Class names for drawings: the TestDataset's categories, COCO names, or class ids."""
    anno = _test_anno_file(cfg)
    if anno:
        return list(Categories.from_file(anno).names)
    num_classes = cfg.get('num_classes', 80)
    if num_classes == len(COCO_NAMES):
        return list(COCO_NAMES)
    return [f'class{i}' for i in range(num_classes)]


COCO_NAMES = (
    'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck', 'boat',
    'traffic light', 'fire hydrant', 'stop sign', 'parking meter', 'bench', 'bird', 'cat', 'dog',
    'horse', 'sheep', 'cow', 'elephant', 'bear', 'zebra', 'giraffe', 'backpack', 'umbrella',
    'handbag', 'tie', 'suitcase', 'frisbee', 'skis', 'snowboard', 'sports ball', 'kite',
    'baseball bat', 'baseball glove', 'skateboard', 'surfboard', 'tennis racket', 'bottle',
    'wine glass', 'cup', 'fork', 'knife', 'spoon', 'bowl', 'banana', 'apple', 'sandwich',
    'orange', 'broccoli', 'carrot', 'hot dog', 'pizza', 'donut', 'cake', 'chair', 'couch',
    'potted plant', 'bed', 'dining table', 'toilet', 'tv', 'laptop', 'mouse', 'remote',
    'keyboard', 'cell phone', 'microwave', 'oven', 'toaster', 'sink', 'refrigerator', 'book',
    'clock', 'vase', 'scissors', 'teddy bear', 'hair drier', 'toothbrush')
