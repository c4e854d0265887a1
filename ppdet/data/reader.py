"""Readers: a dataset, its transforms and a ``paddle.io.DataLoader`` in one iterable.

``TrainReader`` / ``EvalReader`` / ``TestReader`` sections hold ``sample_transforms`` and
``batch_transforms`` (lists of ``{OpName: {kwargs}}``), ``batch_size``, ``shuffle``,
``drop_last`` and ``use_shared_memory``; the worker count is the top-level ``worker_num``.

Reproducibility (kill-and-resume gives the same data):

* The order of epoch ``e`` is a permutation drawn from ``(seed, e)`` (``Loader.set_epoch``),
  then split across ranks by ``paddle.io.DistributedBatchSampler`` (one rank: all of it).
* Sample ``i`` of epoch ``e`` is transformed with ``numpy.random.default_rng([seed, e, i])``;
  random ops draw only from it.  Batches therefore do not depend on the number of workers, on
  which worker builds which batch, nor on where a run was resumed
  (``set_epoch(e, start_batch=k)`` skips the first ``k`` batches without loading them).

Grids: ``Gt2Solov2Target`` entries that leave out ``num_grids`` / ``scale_ranges`` get them
from the SOLOv2 head's section (or the head class's defaults); giving both with different
values fails at config load, naming both files.
"""
import logging

import numpy as np
import paddle

from ppdet.core.config import config_check
from ppdet.core.errors import ConfigError, DataError
from ppdet.core.workspace import REGISTRY, check_section, closest, get_schema, register

from .transforms import build_transforms, parse_entry

__all__ = ['TrainReader', 'EvalReader', 'TestReader', 'Loader', 'BATCH_KEYS', 'head_grids']

logger = logging.getLogger(__name__)

BATCH_KEYS = ('image', 'im_shape', 'scale_factor', 'im_id',
              'cate_label', 'ins_label', 'grid_order', 'fg_num')
READERS = ('TrainReader', 'EvalReader', 'TestReader')
DATASETS = ('TrainDataset', 'EvalDataset', 'TestDataset')
GRID_KEYS = ('num_grids', 'scale_ranges')
_MAX_REPLACEMENTS = 16


# -- grids: one source of truth ------------------------------------------------------------
def _head_section_name(cfg):
    arch = cfg.get(cfg.get('architecture') or '', None)
    name = arch.get('solov2_head') if isinstance(arch, dict) else None
    return name if isinstance(name, str) else 'SOLOv2Head'


def head_grids(cfg):
    """``{num_grids, scale_ranges}`` as the head will use them, each with where it was set."""
    name = _head_section_name(cfg)
    section = cfg.get(name) if isinstance(cfg.get(name), dict) else {}
    defaults = get_schema(REGISTRY[name]).defaults if name in REGISTRY else {}
    grids = {}
    for key in GRID_KEYS:
        if key in section:
            grids[key] = (section[key], f'{name}.{key} ({cfg.source_of(name) or "config"})')
        elif key in defaults:
            grids[key] = (defaults[key], f'{name}.{key} (default of {name})')
    return grids


def _target_entries(cfg, reader):
    section = cfg.get(reader)
    entries = section.get('batch_transforms') if isinstance(section, dict) else None
    for entry in entries or []:
        if isinstance(entry, dict) and 'Gt2Solov2Target' in entry:
            yield entry['Gt2Solov2Target'] or {}


def _as_lists(value):
    return [_as_lists(v) for v in value] if isinstance(value, (list, tuple)) else value


@config_check
def check_reader_sections(cfg):
    """Transform names and arguments of every reader; dataset sections; grid agreement."""
    for reader in READERS:
        section = cfg.get(reader)
        if not isinstance(section, dict):
            continue
        source = cfg.source_of(reader) or 'config'
        for key in ('sample_transforms', 'batch_transforms'):
            for entry in section.get(key) or []:
                parse_entry(entry, f'{source}: {reader}.{key}')
        grids = head_grids(cfg)
        for args in _target_entries(cfg, reader):
            for key in GRID_KEYS:
                if key in args and key in grids and \
                        _as_lists(args[key]) != _as_lists(grids[key][0]):
                    raise ConfigError(
                        f'{source}: {reader} Gt2Solov2Target.{key} {args[key]} differs from '
                        f'{grids[key][1]}: {grids[key][0]}; set it in one place (leave it out '
                        f'of Gt2Solov2Target to use the head\'s)')
    for key in DATASETS:
        section = cfg.get(key)
        if isinstance(section, dict):
            name = section.get('name')
            where = cfg.source_of(key) or 'config'
            if name not in REGISTRY:
                raise ConfigError(f'{where}: {key}.name `{name}` is not a registered dataset'
                                  f'{closest(name, REGISTRY)}')
            check_section(f'{key}', REGISTRY[name],
                          {k: v for k, v in section.items() if k != 'name'}, where)


# -- sampling ------------------------------------------------------------------------------
class _Positions(paddle.io.Dataset):
    """Stands for a dataset of ``n`` items so paddle's sampler can split positions."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n


class EpochBatchSampler:
    """Batches of ``(epoch, index)``: order drawn from ``(seed, epoch)``, split by rank."""

    def __init__(self, num_samples, batch_size, shuffle, drop_last, seed, split_ranks=True):
        self.num_samples, self.shuffle, self.seed = num_samples, shuffle, seed
        kwargs = {} if split_ranks else {'num_replicas': 1, 'rank': 0}
        self._positions = paddle.io.DistributedBatchSampler(
            _Positions(num_samples), batch_size, shuffle=False, drop_last=drop_last, **kwargs)
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

    def __getitem__(self, key):
        epoch, index = key
        for attempt in range(_MAX_REPLACEMENTS):
            try:
                return self.transform(epoch, (index + attempt) % len(self.dataset))
            except DataError as err:
                if not self.skip_bad_samples:
                    raise
                logger.warning('skipping a bad sample (skip_bad_samples): %s', err)
        raise DataError(f'{_MAX_REPLACEMENTS} bad samples in a row from index {index}; '
                        f'check the dataset with tools/check_dataset.py')


class _Collate:
    """Batch transforms, then stack every batch key (per-level targets stay lists)."""

    def __init__(self, ops):
        self.ops = ops

    def __call__(self, samples):
        for op in self.ops:
            samples = op(samples)
        batch = {}
        for key in BATCH_KEYS:
            if key not in samples[0]:
                continue
            values = [s[key] for s in samples]
            if isinstance(values[0], list):
                batch[key] = [np.stack(level) for level in zip(*values)]
            else:
                batch[key] = np.stack([np.asarray(v) for v in values])
        return batch


class Loader:
    """An iterable of batch dicts with ``len()`` and ``set_epoch`` (see the module doc)."""

    def __init__(self, dataset, sample_ops, batch_ops, batch_size=1, shuffle=False,
                 drop_last=False, num_workers=0, use_shared_memory=False, seed=0,
                 split_ranks=True, skip_bad_samples=False):
        self.dataset = dataset
        self.batch_sampler = EpochBatchSampler(len(dataset), batch_size, shuffle, drop_last,
                                               seed, split_ranks)
        self.samples = _TransformedDataset(dataset, sample_ops, seed, skip_bad_samples)
        self._loader = paddle.io.DataLoader(
            self.samples, batch_sampler=self.batch_sampler, collate_fn=_Collate(batch_ops),
            num_workers=num_workers, use_shared_memory=use_shared_memory, return_list=True)

    def set_epoch(self, epoch, start_batch=0):
        self.batch_sampler.set_epoch(epoch, start_batch)

    def __len__(self):
        return len(self.batch_sampler)

    def __iter__(self):
        return iter(self._loader)


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
        """Fill the grids of ``Gt2Solov2Target`` from the head when the reader leaves them out."""
        section = cfg.get(cls.__name__) or {}
        if 'batch_transforms' not in section:
            return {}
        grids = {key: value for key, (value, _) in head_grids(cfg).items()}
        entries = []
        for entry in section['batch_transforms']:
            if isinstance(entry, dict) and 'Gt2Solov2Target' in entry:
                entry = {'Gt2Solov2Target': {**grids, **(entry['Gt2Solov2Target'] or {})}}
            entries.append(entry)
        return {'batch_transforms': entries}

    def loader(self, dataset, num_workers=0, seed=0, split_ranks=True, skip_bad_samples=False):
        return Loader(dataset, self.sample_ops, self.batch_ops, self.batch_size, self.shuffle,
                      self.drop_last, num_workers, self.use_shared_memory, seed, split_ranks,
                      skip_bad_samples)


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
