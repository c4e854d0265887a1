"""COCO-format instance annotations -> per-image records, with every problem named.

A record is a plain dict (what the transforms consume)::

    im_file, im_id [1] int64, h, w, gt_bbox [N,4] f32 (x1y1x2y2), gt_class [N,1] i32,
    is_crowd [N,1] i32, gt_poly (per instance: list of flat polygons, or an RLE dict), ann_ids

Parsing follows the reference: images in ascending id order, category ids mapped to class ids in
the order of the file's ``categories`` list, crowd / ``ignore`` / degenerate boxes not loaded,
images left without a box skipped unless ``allow_empty``.  Bad data (missing or empty image
files, unknown ids, malformed polygons or RLE, NaN or negative boxes) is collected in
``dataset.problems`` (one :class:`DataError` per image) instead of being skipped silently;
:func:`ppdet.data.build_dataset` decides whether that stops the run (``skip_bad_samples``).
"""
import copy
import json
import logging
import math
import os

import numpy as np

from ppdet.core.errors import DataError
from ppdet.core.workspace import register

from .categories import Categories

__all__ = ['COCODataSet', 'load_coco_json']

logger = logging.getLogger(__name__)

_MIN_SIDE = 1e-5


def load_coco_json(path):
    """Read and structurally check a COCO instances file (a truncated file names the line)."""
    if not os.path.isfile(path):
        raise DataError(f'{path}: annotation file not found')
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f'{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); '
                        f'is the file truncated?') from None
    except UnicodeDecodeError:
        raise DataError(f'{path}: not a text (UTF-8 JSON) file') from None
    if not isinstance(data, dict):
        raise DataError(f'{path}: not a COCO annotation file (top level is a '
                        f'{type(data).__name__}, expected an object)')
    for key in ('images', 'categories'):
        if not isinstance(data.get(key), list):
            raise DataError(f'{path}: not a COCO annotation file (no `{key}` list)')
    if not isinstance(data.get('annotations', []), list):
        raise DataError(f'{path}: not a COCO annotation file (`annotations` is not a list)')
    for cat in data['categories']:
        if not isinstance(cat, dict) or 'id' not in cat:
            raise DataError(f'{path}: category entry {cat!r:.60} has no `id`')
        _check_id(path, 'category', cat, 'id')
    for image in data['images']:
        if isinstance(image, dict) and 'id' in image:
            _check_id(path, 'image', image, 'id')
    for ann in data.get('annotations', []):
        if isinstance(ann, dict):
            for key in ('id', 'image_id'):
                if key in ann:
                    _check_id(path, 'annotation', ann, key)
    return data


def _check_id(path, kind, entry, key):
    value = entry[key]
    if not isinstance(value, int) or isinstance(value, bool):
        raise DataError(f'{path}: {kind} `{key}` {value!r:.40} is not an integer')


def _compressed_rle_counts(text):
    """Run lengths of a COCO compressed RLE string, or None when it is malformed.

    COCO packs each run in 5-bit groups (characters 48..111, bit 0x20: more groups follow,
    bit 0x10 of the last group: negative); from the third run on a run is stored as the
    difference to the run two places before.
    """
    counts, pos = [], 0
    while pos < len(text):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(text) or not 48 <= ord(text[pos]) < 112:
                return None
            group = ord(text[pos]) - 48
            value |= (group & 0x1f) << shift
            more = bool(group & 0x20)
            pos, shift = pos + 1, shift + 5
            if not more and group & 0x10:
                value |= -1 << shift
        if len(counts) > 2:
            value += counts[-2]
        if value < 0:
            return None
        counts.append(value)
    return counts


def _finite(values):
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def _check_segmentation(segm, h, w):
    """The problem with one instance's segmentation, or None."""
    if isinstance(segm, list):
        if not segm:
            return 'empty segmentation'
        for k, poly in enumerate(segm):
            if not isinstance(poly, list) or not _finite(poly):
                return f'polygon {k} is not a list of numbers'
            if len(poly) % 2:
                return f'polygon {k} has an odd number of coordinates ({len(poly)})'
            if len(poly) < 6:
                return f'polygon {k} has {len(poly) // 2} point(s), needs at least 3'
        return None
    if isinstance(segm, dict):
        size, counts = segm.get('size'), segm.get('counts')
        if not isinstance(size, list) or len(size) != 2 or counts is None:
            return 'RLE without `size` [h, w] and `counts`'
        if [int(size[0]), int(size[1])] != [int(h), int(w)]:
            return f'RLE of size {size[0]}x{size[1]} on an image of {int(h)}x{int(w)}'
        if isinstance(counts, str):
            counts = _compressed_rle_counts(counts)
            if counts is None:
                return 'compressed RLE `counts` is malformed'
        if not isinstance(counts, list) or not all(
                isinstance(c, int) and c >= 0 for c in counts):
            return 'RLE `counts` must be a list of run lengths or a compressed string'
        if sum(counts) != int(h) * int(w):
            return f'RLE counts cover {sum(counts)} pixels, the image has {int(h) * int(w)}'
        return None
    return f'segmentation of type {type(segm).__name__} (expected polygons or RLE)'


def _check_annotation(ann, image, catid2clsid):
    """The problem with one annotation (a string), or None."""
    if ann['category_id'] not in catid2clsid:
        return f'unknown category_id {ann["category_id"]!r}'
    box = ann.get('bbox')
    if box is not None:
        if not isinstance(box, list) or len(box) != 4 or not _finite(box):
            return f'bbox {box!r} is not 4 finite numbers'
        if box[2] < 0 or box[3] < 0:
            return f'bbox {box!r} has a negative size'
    if 'segmentation' not in ann:
        return 'no segmentation'
    return _check_segmentation(ann['segmentation'], image['height'], image['width'])


def _clean_box(ann):
    """The reference's box filter: [x1, y1, x2, y2] rounded to 3 decimals, or None."""
    box = ann.get('bbox')
    if not box or not any(box):
        return None
    x1, y1, bw, bh = box
    x2, y2 = x1 + bw, y1 + bh
    if ann.get('area', 1) <= 0 or x2 - x1 <= _MIN_SIDE or y2 - y1 <= _MIN_SIDE:
        return None
    return [round(float(v), 3) for v in (x1, y1, x2, y2)]


@register
class COCODataSet:
    """COCO instance annotations (polygons or RLE, crowd regions optional)."""

    def __init__(self, dataset_dir=None, image_dir=None, anno_path=None, data_fields=['image'],
                 sample_num=-1, load_crowd=False, allow_empty=False, empty_ratio=1.0, repeat=1):
        self.dataset_dir = dataset_dir or ''
        self.image_dir = os.path.join(self.dataset_dir, image_dir or '')
        if not anno_path:
            raise DataError(f'{type(self).__name__}: `anno_path` is not set')
        self.anno_path = os.path.join(self.dataset_dir, anno_path)
        self.data_fields = list(data_fields)
        self.sample_num, self.load_crowd = sample_num, load_crowd
        self.allow_empty, self.empty_ratio, self.repeat = allow_empty, empty_ratio, max(1, repeat)
        self.prepare()
        self.records, self.problems = self._parse()

    def prepare(self):
        """Hook run before parsing (the quick-start dataset generates its files here)."""

    # -- what the metric and the tools need ----------------------------------------------
    @property
    def category_names(self):
        """Class names indexed by contiguous class id."""
        return list(self.categories.names)

    def __len__(self):
        return len(self.records) * self.repeat

    def __getitem__(self, index):
        return copy.copy(self.records[index % len(self.records)])

    # -- parsing -------------------------------------------------------------------------
    def _parse(self):
        data = load_coco_json(self.anno_path)
        self.categories = Categories.from_coco(data['categories'])
        catid2clsid = self.categories.catid2clsid

        images, problems = self._index_images(data['images'])
        anns_of = self._group_annotations(data.get('annotations', []), images, problems)
        records, empty = [], []
        for image_id in sorted(images):
            image = images[image_id]
            path = os.path.join(self.image_dir, image['file_name'])
            problem = self._image_problem(image, path)
            anns = anns_of.get(image_id, [])
            for ann in anns:
                if problem is None:
                    issue = _check_annotation(ann, image, catid2clsid)
                    problem = issue and f'annotation {ann["id"]} (image {image["file_name"]}): {issue}'
            if problem:
                problems.append(DataError(f'{self.anno_path}: {problem}'))
                continue
            record = self._record(image, path, anns, catid2clsid)
            (records if record['ann_ids'] else empty).append(record)
        if self.allow_empty:
            records += self._sample_empty(empty, len(records))
            records.sort(key=lambda r: int(r['im_id'][0]))
        elif empty:
            logger.debug('%s: %d images without a usable box are skipped', self.anno_path,
                         len(empty))
        if self.sample_num > 0:
            records = records[:self.sample_num]
        if not records and not problems:
            raise DataError(f'{self.anno_path}: no image with a usable annotation')
        return records, problems

    def _index_images(self, entries):
        images, problems = {}, []
        for image in entries:
            if not isinstance(image, dict) or not {'id', 'file_name'} <= set(image):
                raise DataError(f'{self.anno_path}: image entry {image!r:.80} needs `id` and '
                                f'`file_name`')
            if image['id'] in images:
                problems.append(DataError(f'{self.anno_path}: image id {image["id"]} is used '
                                          f'twice'))
            images[image['id']] = image
        return images, problems

    def _group_annotations(self, annotations, images, problems):
        anns_of, seen = {}, set()
        for ann in annotations:
            if not isinstance(ann, dict) or not {'id', 'image_id', 'category_id'} <= set(ann):
                raise DataError(f'{self.anno_path}: annotation {ann!r:.80} needs `id`, '
                                f'`image_id` and `category_id`')
            if ann['id'] == 0:
                # pycocotools' COCOeval marks "unmatched" with id 0: such an instance is never
                # counted as found, so the metric would silently lose AP.
                raise DataError(f'{self.anno_path}: annotation id 0 (image_id {ann["image_id"]}) '
                                f'is mis-scored by pycocotools; renumber the annotations from 1')
            if ann['id'] in seen:
                raise DataError(f'{self.anno_path}: annotation id {ann["id"]} is used twice; '
                                f'annotation ids must be unique')
            seen.add(ann['id'])
            if ann['image_id'] not in images:
                problems.append(DataError(f'{self.anno_path}: annotation {ann["id"]}: unknown '
                                          f'image_id {ann["image_id"]!r}'))
                continue
            anns_of.setdefault(ann['image_id'], []).append(ann)
        return anns_of

    @staticmethod
    def _image_problem(image, path):
        h, w = image.get('height'), image.get('width')
        if not _finite([h, w]) or h <= 0 or w <= 0:
            return f'image {image["file_name"]}: height/width {h!r}/{w!r} must be positive'
        try:
            size = os.path.getsize(path)
        except OSError:
            return f'image file {path} not found'
        return None if size else f'image file {path} is empty (0 bytes)'

    def _record(self, image, path, anns, catid2clsid):
        boxes, classes, crowd, segms, ids = [], [], [], [], []
        for ann in anns:
            if ann.get('ignore') or (ann.get('iscrowd') and not self.load_crowd):
                continue
            box = _clean_box(ann)
            if box is None:
                continue
            boxes.append(box)
            classes.append(catid2clsid[ann['category_id']])
            crowd.append(int(bool(ann.get('iscrowd'))))
            segms.append(ann.get('segmentation'))
            ids.append(ann['id'])
        record = {'im_file': path, 'im_id': np.array([image['id']], np.int64),
                  'h': float(image['height']), 'w': float(image['width']), 'ann_ids': ids}
        if 'gt_bbox' in self.data_fields:
            record['gt_bbox'] = np.array(boxes, np.float32).reshape(-1, 4)
        if 'gt_class' in self.data_fields:
            record['gt_class'] = np.array(classes, np.int32).reshape(-1, 1)
        if 'is_crowd' in self.data_fields:
            record['is_crowd'] = np.array(crowd, np.int32).reshape(-1, 1)
        if 'gt_poly' in self.data_fields:
            record['gt_poly'] = segms
        return record

    def _sample_empty(self, empty, num_nonempty):
        if not 0 <= self.empty_ratio < 1 or not empty:
            return empty
        keep = int(num_nonempty * self.empty_ratio / (1 - self.empty_ratio))
        order = np.random.default_rng(0).permutation(len(empty))[:keep]
        return [empty[i] for i in sorted(order)]

    def __repr__(self):
        return (f'{type(self).__name__}({self.anno_path}: {len(self.records)} images, '
                f'{len(self.categories)} classes)')
