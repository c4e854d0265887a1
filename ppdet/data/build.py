"""Datasets and loaders from a config's ``{Train,Eval,Test}Dataset`` / ``...Reader`` sections.

    dataset = build_dataset(cfg, 'train')          # 'train' | 'eval' | 'test'
    loader = build_loader(cfg, 'train', dataset)   # iterable of batch dicts, has len()
    loader.set_epoch(epoch)                        # before iterating each epoch

Bad data is found when the dataset is built (annotations, and for training the image files'
headers): it raises the first :class:`~ppdet.core.errors.DataError` unless the top-level
``skip_bad_samples`` is true, in which case each bad image is left out with a warning.
"""
import logging

from ppdet.core.errors import ConfigError, DataError
from ppdet.core.workspace import REGISTRY, create

from .imageio import check_image_file
from .source.categories import Categories

__all__ = ['build_dataset', 'build_loader', 'check_images', 'test_categories']

logger = logging.getLogger(__name__)

_SECTIONS = {'train': ('TrainDataset', 'TrainReader'), 'eval': ('EvalDataset', 'EvalReader'),
             'test': ('TestDataset', 'TestReader')}


def _sections(mode):
    if mode not in _SECTIONS:
        raise ValueError(f'mode must be one of {list(_SECTIONS)}, got {mode!r}')
    return _SECTIONS[mode]


def check_images(dataset):
    """Header-level checks of every image file (missing, empty, truncated, size mismatch);
    returns the problems as :class:`DataError` objects and leaves the bad records out."""
    problems, good = [], []
    for record in dataset.records:
        declared = (record['h'], record['w']) if 'h' in record else None
        try:
            check_image_file(record['im_file'], declared)
            good.append(record)
        except DataError as err:
            problems.append(DataError(f'{err} (image id {int(record["im_id"][0])})'))
    dataset.records = good
    return problems


def _check_num_classes(cfg, key, dataset):
    """The model's ``num_classes`` must match the dataset's category list."""
    categories = getattr(dataset, 'categories', None)
    num_classes = cfg.get('num_classes')
    if categories and num_classes is not None and len(categories) != num_classes:
        raise ConfigError(f'{getattr(dataset, "anno_path", key)}: {len(categories)} categories but '
                          f'num_classes is {num_classes}; set -o num_classes={len(categories)}')


def build_dataset(cfg, mode, images=None, validate_images=None):
    """The ``{Train,Eval,Test}Dataset`` section's dataset, checked for bad data.

    ``images`` (test mode): a file, folder or list for :class:`ImageFolder`.
    ``validate_images``: read every image header now (default: in train mode).
    """
    key, _ = _sections(mode)
    section = dict(cfg.get(key) or {})
    name = section.pop('name', None)
    if not isinstance(name, str) or name not in REGISTRY:
        raise ConfigError(f'{cfg.source_of(key) or "config"}: `{key}` needs a `name` of a '
                          f'registered dataset, got {name!r}')
    dataset = REGISTRY[name](**section)
    if images is not None:
        dataset.set_images(images)
    _check_num_classes(cfg, key, dataset)
    problems = list(getattr(dataset, 'problems', []))
    if validate_images if validate_images is not None else mode == 'train':
        problems += check_images(dataset)
    if problems:
        if not cfg.get('skip_bad_samples', False):
            more = f' (and {len(problems) - 1} more problem(s): tools/check_dataset.py lists ' \
                   f'them)' if len(problems) > 1 else ''
            raise DataError(f'{problems[0]}{more}; set skip_bad_samples: true to leave bad '
                            f'samples out')
        for problem in problems:
            logger.warning('skipped (skip_bad_samples): %s', problem)
    if len(dataset) == 0 and mode != 'test':
        raise DataError(f'{key}: no usable image left')
    return dataset


def build_loader(cfg, mode, dataset=None, split_ranks=None, num_workers=None):
    """The reader of ``mode`` over ``dataset`` (built with :func:`build_dataset` if None).

    Training splits the data across ranks with ``paddle.io.DistributedBatchSampler`` (padded
    so every rank runs the same number of steps).  Evaluation and inference give every rank
    all images by default; ``split_ranks=True`` gives each image to exactly one rank (no
    padding, no duplicates: gather the results of all ranks).
    Workers: the top-level ``worker_num`` for train/eval, 0 for test.
    """
    _, reader_key = _sections(mode)
    if dataset is None:
        dataset = build_dataset(cfg, mode)
    reader = create(reader_key, cfg)
    if num_workers is None:
        num_workers = int(cfg.get('worker_num', 0) or 0) if mode != 'test' else 0
    if split_ranks is None:
        split_ranks = mode == 'train'
    seed = cfg.get('seed')
    return reader.loader(dataset, num_workers=num_workers, seed=0 if seed is None else int(seed),
                         split_ranks=split_ranks, even_ranks=mode == 'train',
                         skip_bad_samples=bool(cfg.get('skip_bad_samples', False)))


def test_categories(cfg, dataset=None):
    """The classes' categories for results and drawings: the TestDataset's (``dataset``, built
    from the config if None), or numbered ones when it has no annotation file."""
    if dataset is None:
        dataset = build_dataset(cfg, 'test')
    categories = getattr(dataset, 'categories', None)
    return categories if categories else Categories.numbered(cfg.get('num_classes', 80))
