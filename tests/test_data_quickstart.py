"""The generated quick-start dataset: deterministic, valid COCO, visible-part annotations."""
import hashlib
import json
import os

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_util

from ppdet.core.config import Config
from ppdet.data import build_dataset, generate_quickstart
from ppdet.data.source import quickstart

RANGES = [[1, 32], [16, 64], [32, 128], [64, 256], [128, 512]]
SIZE = 128                # the generator's default image side


def digest(root):
    h = hashlib.sha256()
    for folder, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            h.update(name.encode())
            h.update(open(os.path.join(folder, name), 'rb').read())
    return h.hexdigest()


@pytest.fixture(scope='module')
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp('qs') / 'quickstart'
    generate_quickstart(str(root), num_train=40, num_val=6, seed=0)
    return root


def test_generation_is_deterministic(tmp_path):
    runs = {}
    for name, seed in (('a', 0), ('b', 0), ('c', 1)):
        generate_quickstart(str(tmp_path / name), num_train=5, num_val=2, seed=seed)
        runs[name] = digest(tmp_path / name)
    assert runs['a'] == runs['b'] != runs['c']


def content_digest(root):
    """SHA-256 of the decoded pixels and the parsed annotations of every split."""
    h = hashlib.sha256()
    for split in ('train', 'val'):
        with open(os.path.join(root, 'annotations', f'instances_{split}.json')) as f:
            h.update(json.dumps(json.load(f), sort_keys=True).encode())
        for name in sorted(os.listdir(os.path.join(root, split))):
            pixels = cv2.imread(os.path.join(root, split, name), cv2.IMREAD_UNCHANGED)
            h.update(name.encode() + str(pixels.shape).encode() + pixels.tobytes())
    return h.hexdigest()


# The same on every numpy and OpenCV that requirements.txt admits and on every CPU (checked
# with numpy 1.24 + OpenCV 4.8 and numpy 1.26 + OpenCV 4.11): a change here changes the
# quick-start data, and needs a new GENERATOR_VERSION.
STABLE_DIGEST = '247776a8bfdf932a6f569dbe468603354642757385512604b2ca9cf135608840'


def test_generated_data_is_the_same_everywhere(tmp_path):
    generate_quickstart(str(tmp_path / 'qs'), num_train=12, num_val=3, image_size=128, seed=1)
    crowds = [a for split in ('train', 'val') for a in json.load(open(
        tmp_path / 'qs' / 'annotations' / f'instances_{split}.json'))['annotations']
        if a['iscrowd']]
    assert crowds                                   # the crowd code is covered too
    assert content_digest(tmp_path / 'qs') == STABLE_DIGEST


def test_annotations_are_visible_parts_with_real_outlines(generated):
    coco = json.load(open(generated / 'annotations' / 'instances_train.json'))
    assert [c['name'] for c in coco['categories']] == quickstart.CATEGORIES
    assert len(coco['images']) == 40 and all(a['id'] > 0 for a in coco['annotations'])
    per_image = {}
    for ann in coco['annotations']:
        per_image.setdefault(ann['image_id'], []).append(ann)
    crowd = 0
    for image in coco['images']:
        assert image['height'] == image['width'] == SIZE
        anns = per_image.get(image['id'], [])
        things = [a for a in anns if not a['iscrowd']]
        assert 2 <= len(things) <= 6
        crowd += len(anns) - len(things)
        masks = []
        for ann in things:
            assert all(len(p) >= 6 and len(p) % 2 == 0 for p in ann['segmentation'])
            rle = mask_util.merge(mask_util.frPyObjects(ann['segmentation'], SIZE, SIZE))
            assert abs(mask_util.area(rle) - ann['area']) < 1
            masks.append(mask_util.decode(rle))
        # visible parts never overlap: the later shape hides what is under it
        assert np.stack(masks).sum(0).max() == 1
        # at least some outlines are not axis-aligned boxes (discs, triangles, stars)
    assert crowd >= 2
    shapes = [len(a['segmentation'][0]) // 2 for a in coco['annotations'] if not a['iscrowd']]
    assert max(shapes) > 8


def test_sizes_cover_every_scale_range(generated):
    coco = json.load(open(generated / 'annotations' / 'instances_train.json'))
    scales = np.array([np.sqrt(a['bbox'][2] * a['bbox'][3]) for a in coco['annotations']
                       if not a['iscrowd']])
    for lo, hi in RANGES[:4]:
        assert ((scales >= lo) & (scales <= hi)).sum() >= 5
    # the largest nearly fill the image; the smallest still span 3 stride-4 mask cells
    assert (scales >= 0.75 * SIZE).sum() >= 1 and scales.min() >= 12
    classes = {a['category_id'] for a in coco['annotations']}
    assert classes == {1, 2, 3, 4}


def test_quickstart_dataset_generates_itself_when_missing(tmp_path, monkeypatch):
    calls = []

    def small(dataset_dir, *args):
        calls.append(dataset_dir)
        return generate_quickstart(dataset_dir, num_train=4, num_val=2)

    monkeypatch.setattr(quickstart, 'generate_quickstart', small)
    section = {'name': 'QuickStartDataSet', 'dataset_dir': str(tmp_path / 'qs'),
               'image_dir': 'train', 'anno_path': 'annotations/instances_train.json',
               'data_fields': ['image', 'gt_bbox', 'gt_class', 'gt_poly', 'is_crowd']}
    dataset = build_dataset(Config({'TrainDataset': section}), 'train')
    assert len(dataset) == 4 and calls == [str(tmp_path / 'qs')]
    assert dataset.category_names == quickstart.CATEGORIES
    build_dataset(Config({'TrainDataset': section}), 'train')
    assert len(calls) == 1                                   # generated once
    assert [p for p in os.listdir(tmp_path) if p.startswith('.quickstart')] == []
    anno = tmp_path / 'qs' / 'annotations' / 'instances_train.json'
    coco = json.load(open(anno))
    coco['info']['version'] = quickstart.GENERATOR_VERSION - 1
    anno.write_text(json.dumps(coco))
    build_dataset(Config({'TrainDataset': section}), 'train')
    assert len(calls) == 2                                   # an older copy is replaced
    assert json.load(open(anno))['info']['version'] == quickstart.GENERATOR_VERSION
