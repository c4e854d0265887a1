"""Readers: a dataset, its transforms and a ``paddle.io.DataLoader`` in one iterable.

``TrainReader`` / ``EvalReader`` / ``TestReader`` sections hold ``sample_transforms`` and
``batch_transforms`` (lists of ``{OpName: {kwargs}}``), ``batch_size``, ``shuffle``,
``drop_last`` and ``use_shared_memory``; the worker count is the top-level ``worker_num``.

Reproducibility (kill-and-resume gives the same data):

* The order of epoch ``e`` is a permutation drawn from ``(seed, e)`` (``Loader.set_epoch``),
  then split across ranks: for training by ``paddle.io.DistributedBatchSampler`` (padded so
  every rank runs the same steps), for a split evaluation one image per rank, no padding.
* Sample ``i`` of epoch ``e`` is transformed with ``numpy.random.default_rng([seed, e, i])``;
  random ops draw only from it.  Batches therefore do not depend on the number of workers, on
  which worker builds which batch, nor on where a run was resumed
  (``set_epoch(e, start_batch=k)`` skips the first ``k`` batches without loading them).

Grids: batch transforms that take ``grids`` (``Gt2Solov2Target``) are given the model's
:class:`~ppdet.modeling.grids.SOLOv2Grids`, as the config's architecture builds them
(``grids_from_config``). An entry that also sets ``num_grids`` / ``scale_ranges`` must agree
with them; otherwise the config fails to load, naming both places.
"""
import logging
import traceback

import numpy as np
import paddle

from ppdet.core.config import config_check
from ppdet.core.errors import ConfigError, DataError
from ppdet.core.workspace import REGISTRY, check_section, closest, get_schema, register
from ppdet.modeling.grids import as_lists, config_grids

from .transforms import TRANSFORMS, build_transforms, check_entry_list, parse_entry

__all__ = ['TrainReader', 'EvalReader', 'TestReader', 'Loader', 'EpochBatchSampler', 'BATCH_KEYS']

logger = logging.getLogger(__name__)

BATCH_KEYS = ('image', 'im_shape', 'scale_factor', 'im_id',
              'cate_label', 'ins_label', 'grid_order', 'fg_num')
READERS = ('TrainReader', 'EvalReader', 'TestReader')
DATASETS = ('TrainDataset', 'EvalDataset', 'TestDataset')
GRID_FIELDS = ('num_grids', 'strides', 'scale_ranges')
_MAX_REPLACEMENTS = 16


# -- grids: the model's, given to the target generator --------------------------------------
def _takes_grids(entry):
    """The ``(name, args)`` of a well-formed transform entry whose op takes ``grids``, or None."""
    if not isinstance(entry, dict) or len(entry) != 1:
        return None
    (name, args), = entry.items()
    if name not in TRANSFORMS or not isinstance(args or {}, dict) or \
            'grids' not in get_schema(TRANSFORMS[name]).defaults:
        return None
    return name, args or {}


def _check_transforms(cfg, reader, section):
    source = cfg.source_of(reader) or 'config'
    for key in ('sample_transforms', 'batch_transforms'):
        where = f'{source}: {reader}.{key}'
        for entry in check_entry_list(section.get(key), where):
            parse_entry(entry, where)


def _check_grids(cfg, reader, found):
    """Grid fields set in a target entry must equal the model's (``found``: grids, where)."""
    grids, where = found
    for entry in cfg[reader].get('batch_transforms') or []:   # entries already checked
        name, args = _takes_grids(entry) or (None, {})
        for key in GRID_FIELDS:
            if key in args and as_lists(args[key]) != getattr(grids, key):
                raise ConfigError(
                    f'{cfg.source_of(reader) or "config"}: {reader} {name}.{key} {args[key]} '
                    f'differs from {where[key]}: {getattr(grids, key)}; set it in one place '
                    f'(leave it out of {name} to use the model\'s)')


def _check_dataset_section(cfg, key, section):
    name, where = section.get('name'), cfg.source_of(key) or 'config'
    if not isinstance(name, str) or name not in REGISTRY:
        raise ConfigError(f'{where}: {key}.name `{name}` is not a registered dataset'
                          f'{closest(name, REGISTRY)}')
    check_section(key, REGISTRY[name], {k: v for k, v in section.items() if k != 'name'}, where)


@config_check
def check_data_sections(cfg):
    """Transform names and arguments of every reader, grid agreement, dataset sections."""
    for key in READERS + DATASETS:
        if cfg.get(key) is not None and not isinstance(cfg[key], dict):
            raise ConfigError(f'{cfg.source_of(key) or "config"}: `{key}` must be a mapping of '
                              f'keys, got {cfg[key]!r:.40}')
    found = config_grids(cfg)
    for reader in READERS:
        if cfg.get(reader) is not None:
            _check_transforms(cfg, reader, cfg[reader])
            if found is not None:
                _check_grids(cfg, reader, found)
    for key in DATASETS:
        if cfg.get(key) is not None:
            _check_dataset_section(cfg, key, cfg[key])


# -- sampling ------------------------------------------------------------------------------
class _Positions(paddle.io.Dataset):
    """Stands for a dataset of ``n`` items so paddle's sampler can split positions."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n


class _RankSlices:
    """Rank ``r`` of ``n`` takes positions ``r, r+n, ...`` in batches, nothing repeated."""

    def __init__(self, num_samples, batch_size, num_replicas=None, rank=None):
        replicas = paddle.distributed.get_world_size() if num_replicas is None else num_replicas
        rank = paddle.distributed.get_rank() if rank is None else rank
        self.positions = np.arange(rank, num_samples, replicas)
        self.batch_size = batch_size

    def __iter__(self):
        for start in range(0, len(self.positions), self.batch_size):
            yield self.positions[start:start + self.batch_size].tolist()

    def __len__(self):
        return -(-len(self.positions) // self.batch_size)


class EpochBatchSampler:
    """Batches of ``(epoch, index)``: order drawn from ``(seed, epoch)``, split by rank.

    ``even=True`` (training): ``paddle.io.DistributedBatchSampler``, which pads the order by
    repeating its head so every rank runs the same number of steps.  ``even=False``
    (evaluation): each image on exactly one rank, the last batches may be smaller.
    """

    def __init__(self, num_samples, batch_size, shuffle, drop_last, seed, num_replicas=None,
                 rank=None, even=True):
        """``num_replicas`` / ``rank``: None reads them from ``paddle.distributed``."""
        self.num_samples, self.shuffle, self.seed = num_samples, shuffle, seed
        if even:
            self._positions = paddle.io.DistributedBatchSampler(
                _Positions(num_samples), batch_size, num_replicas=num_replicas, rank=rank,
                shuffle=False, drop_last=drop_last)
        else:
            self._positions = _RankSlices(num_samples, batch_size, num_replicas, rank)
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch, start_batch=0):
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def order(self):
        if not self.shuffle:
            return np.arange(self.num_samples)
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples)

    def __iter__(self):
        order = self.order()
        for k, positions in enumerate(self._positions):
            if k >= self.start_batch:
                yield [(self.epoch, int(order[p])) for p in positions]

    def __len__(self):
        return max(0, len(self._positions) - self.start_batch)


# -- per-sample and per-batch work (runs in the workers) ------------------------------------
class _Failure:
    """An error raised while loading, carried to the main process as a batch.

    Paddle's DataLoader hangs when a dataset or collate function raises with 0 workers, so
    errors travel as data: :class:`Loader` re-raises them where the batch is consumed.
    """

    KEY = 'data_error'

    def __init__(self, error):
        self.is_data_error = isinstance(error, DataError)
        self.message = str(error) if self.is_data_error else ''.join(
            traceback.format_exception(type(error), error, error.__traceback__))

    def as_batch(self):
        text = ('D' if self.is_data_error else 'E') + self.message
        return {self.KEY: np.frombuffer(text.encode('utf-8'), np.uint8).copy()}

    @classmethod
    def error_of(cls, batch):
        text = bytes(np.asarray(batch[cls.KEY]).astype(np.uint8)).decode('utf-8')
        if text[0] == 'D':
            return DataError(text[1:])
        return RuntimeError(f'data loading failed in a worker:\n{text[1:]}')


class _TransformedDataset(paddle.io.Dataset):
    """``dataset[(epoch, i)]``: sample ``i`` through the sample transforms, seeded."""

    def __init__(self, dataset, ops, seed, skip_bad_samples):
        self.dataset, self.ops, self.seed = dataset, ops, seed
        self.skip_bad_samples = skip_bad_samples

    def __len__(self):
        return len(self.dataset)

    def transform(self, epoch, index):
        rng = np.random.default_rng([self.seed, epoch, index])
        sample = self.dataset[index]
        for op in self.ops:
            sample = op(sample, rng)
        return sample

    def _replaceable(self, epoch, index):
        for attempt in range(_MAX_REPLACEMENTS):
            try:
                return self.transform(epoch, (index + attempt) % len(self.dataset))
            except DataError as err:
                if not self.skip_bad_samples:
                    raise
                logger.warning('skipping a bad sample (skip_bad_samples): %s', err)
        raise DataError(f'{_MAX_REPLACEMENTS} bad samples in a row from index {index}; '
                        f'check the dataset with tools/check_dataset.py')

    def __getitem__(self, key):
        try:
            return self._replaceable(*key)
        except Exception as err:     # noqa: BLE001  (re-raised by Loader in the main process)
            return _Failure(err)


class _Collate:
    """Batch transforms, then stack every batch key (per-level targets stay lists)."""

    def __init__(self, ops, shared_memory=False):
        self.ops, self.shared_memory = ops, shared_memory

    def __call__(self, samples):
        failure = next((s for s in samples if isinstance(s, _Failure)), None)
        if failure is not None:
            return failure.as_batch()
        try:
            return self._collate(samples)
        except Exception as err:     # noqa: BLE001  (re-raised by Loader in the main process)
            return _Failure(err).as_batch()

    def _collate(self, samples):
        for op in self.ops:
            samples = op(samples)
        batch = {}
        for key in BATCH_KEYS:
            if key not in samples[0]:
                continue
            values = [s[key] for s in samples]
            if isinstance(values[0], list):
                batch[key] = [self._carried(np.stack(level)) for level in zip(*values)]
            else:
                batch[key] = self._carried(np.stack([np.asarray(v) for v in values]))
        return batch

    def _carried(self, array):
        return _ZeroSize(array) if self.shared_memory and array.size == 0 else array


class _ZeroSize:
    """A zero-size array on its way from a worker (a level without any positive in the batch):
    paddle cannot place one in shared memory, so its shape and type travel instead."""

    def __init__(self, array):
        self.shape, self.dtype = list(array.shape), str(array.dtype)

    @staticmethod
    def restored(value):
        if isinstance(value, list):
            return [_ZeroSize.restored(v) for v in value]
        return paddle.zeros(value.shape, value.dtype) if isinstance(value, _ZeroSize) else value


class Loader:
    """An iterable of batch dicts with ``len()`` and ``set_epoch`` (see the module doc)."""

    def __init__(self, dataset, sample_ops, batch_ops, batch_size=1, shuffle=False,
                 drop_last=False, num_workers=0, use_shared_memory=False, seed=0,
                 split_ranks=True, even_ranks=True, skip_bad_samples=False):
        self.dataset = dataset
        ranks = {} if split_ranks else {'num_replicas': 1, 'rank': 0}
        self.batch_sampler = EpochBatchSampler(len(dataset), batch_size, shuffle, drop_last,
                                               seed, even=even_ranks, **ranks)
        self.samples = _TransformedDataset(dataset, sample_ops, seed, skip_bad_samples)
        collate = _Collate(batch_ops, shared_memory=use_shared_memory and num_workers > 0)
        self._loader = paddle.io.DataLoader(
            self.samples, batch_sampler=self.batch_sampler, collate_fn=collate,
            num_workers=num_workers, use_shared_memory=use_shared_memory, return_list=True)

    def set_epoch(self, epoch, start_batch=0):
        self.batch_sampler.set_epoch(epoch, start_batch)

    def __len__(self):
        return len(self.batch_sampler)

    def __iter__(self):
        for batch in self._loader:
            if _Failure.KEY in batch:
                raise _Failure.error_of(batch)
            yield {key: _ZeroSize.restored(value) for key, value in batch.items()}


# -- the reader sections -------------------------------------------------------------------
class _Reader:
    """What a reader section describes; :meth:`loader` binds it to a dataset."""

    def __init__(self, sample_transforms=[], batch_transforms=[], batch_size=1, shuffle=False,
                 drop_last=False, use_shared_memory=False, collate_batch=True):
        where = type(self).__name__
        self.sample_ops = build_transforms(sample_transforms, f'{where}.sample_transforms')
        self.batch_ops = build_transforms(batch_transforms, f'{where}.batch_transforms')
        if not collate_batch:
            raise ConfigError(f'{where}: collate_batch: false is not supported (SOLOv2 batches '
                              f'are always collated)')
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.use_shared_memory = use_shared_memory

    @classmethod
    def from_config(cls, cfg):
        """Batch transforms that take ``grids`` get the model's (see the module doc)."""
        section = cfg.get(cls.__name__) or {}
        found = config_grids(cfg)
        if not isinstance(section.get('batch_transforms'), list) or found is None:
            return {}
        entries = []
        for entry in section['batch_transforms']:
            takes = _takes_grids(entry)
            entries.append({takes[0]: {**takes[1], 'grids': found[0]}} if takes else entry)
        return {'batch_transforms': entries}

    def loader(self, dataset, num_workers=0, seed=0, split_ranks=True, even_ranks=True,
               skip_bad_samples=False):
        """See :class:`Loader`; ``even_ranks``: pad so every rank gets as many batches."""
        return Loader(dataset, self.sample_ops, self.batch_ops, self.batch_size, self.shuffle,
                      self.drop_last, num_workers, self.use_shared_memory, seed, split_ranks,
                      even_ranks, skip_bad_samples)


@register
class TrainReader(_Reader):
    def __init__(self, sample_transforms=[], batch_transforms=[], batch_size=1, shuffle=True,
                 drop_last=True, use_shared_memory=False, collate_batch=True):
        super().__init__(sample_transforms, batch_transforms, batch_size, shuffle, drop_last,
                         use_shared_memory, collate_batch)


@register
class EvalReader(_Reader):
    pass


@register
class TestReader(_Reader):
    pass
