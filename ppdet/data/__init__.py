"""Datasets, transforms, SOLOv2 targets and readers; :mod:`.build` makes them from a config."""
from . import transforms  # noqa: F401  (registers the transforms)
from .build import build_dataset, build_loader, check_images, test_categories
from .reader import BATCH_KEYS, EvalReader, Loader, TestReader, TrainReader
from .source import (COCODataSet, Categories, ImageFolder, QuickStartDataSet,
                     generate_quickstart)

__all__ = ['build_dataset', 'build_loader', 'check_images', 'test_categories', 'COCODataSet',
           'Categories', 'ImageFolder', 'QuickStartDataSet', 'generate_quickstart',
           'TrainReader', 'EvalReader', 'TestReader', 'Loader', 'BATCH_KEYS']
