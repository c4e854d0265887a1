"""The bundled quick-start dataset: generated, deterministic, learnable in minutes on a CPU.

Four classes of filled shapes, each with its own outline and colour family (red discs, green
squares, blue triangles, yellow stars), 2-6 per image over textured backgrounds, with sizes
spread over the quick-start scale ranges (shape side about 27 to 182 px on 192-px images: the
smallest still spans several stride-4 mask cells, so masks can be precise).
Shapes overlap; every annotation describes the visible part only (polygons traced from the
visible mask, no instance hidden by more than half, no holes).  A few images (one in six is tried;
the cluster must fit beside the shapes, so about one in twenty) hold a crowd region: a cluster
of tiny shapes annotated as one ``iscrowd`` RLE.  Deterministic for given numpy and OpenCV
versions.
"""
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass

import cv2
import numpy as np
from pycocotools import mask as mask_util

from ppdet.core.workspace import register

from .coco import COCODataSet

__all__ = ['QuickStartDataSet', 'generate_quickstart', 'CATEGORIES', 'GENERATOR_VERSION']

logger = logging.getLogger(__name__)

# Raised whenever the generated data changes: an older generated copy is then replaced.
GENERATOR_VERSION = 3
CATEGORIES = ['disc', 'square', 'triangle', 'star']
# OpenCV hue (0-180) of each class's colour family.
_HUES = [0, 60, 115, 28]
_SPLITS = {'train': 0, 'val': 1}
_MIN_VISIBLE = 0.5        # an earlier shape keeps at least this fraction visible
_MIN_AREA = 300           # visible pixels of an instance
_SIDES = (0.14, 0.95)     # shape size range, as fractions of the image side (log-uniform)
_TRACE_UPSAMPLE = 4       # contours are traced on a 4x mask for sub-pixel outlines


@dataclass
class _Shape:
    category: int          # 0-based class
    mask: np.ndarray       # [H, W] bool, full (unoccluded) extent
    colour: tuple


def _outline(category, size, angle):
    """Polygon (k, 2) of a class's shape centred at 0 with a bounding size about ``size``."""
    r = size / 2
    if category == 0:
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t)], 1) * r
    elif category == 1:
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float) * r * 0.75
    elif category == 2:
        t = np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        pts = np.stack([np.cos(t), np.sin(t)], 1) * r
    else:
        t = np.arange(10) * np.pi / 5
        radius = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        pts = np.stack([np.cos(t), np.sin(t)], 1) * radius[:, None]
    c, s = np.cos(angle), np.sin(angle)
    return pts @ np.array([[c, -s], [s, c]])


def _fill(polygon, hw):
    mask = np.zeros(hw, np.uint8)
    cv2.fillPoly(mask, [np.round(polygon * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
    return mask.astype(bool)


def _background(rng, size):
    """Muted texture: low-frequency blotches, stripes and grain around a grey-ish colour."""
    base = rng.uniform(70, 190) + rng.uniform(-20, 20, 3)
    tint = rng.normal(0, 25, (6, 6, 1)) + rng.normal(0, 8, (6, 6, 3))
    image = cv2.resize(tint.astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    theta, period, amplitude = rng.uniform(0, np.pi), rng.uniform(6, 24), rng.uniform(4, 14)
    phase = np.arange(size, dtype=np.float32) * np.float32(2 * np.pi / period)
    across, down = phase * np.float32(np.cos(theta)), phase * np.float32(np.sin(theta))
    # sin(across_x + down_y) as two outer products
    stripes = np.outer(np.cos(down), np.sin(across)) + np.outer(np.sin(down), np.cos(across))
    image += (amplitude * stripes)[..., None]
    image += rng.standard_normal((size, size, 3), np.float32) * 6 + base.astype(np.float32)
    return image


def _colour(rng, category):
    hsv = np.uint8([[[(_HUES[category] + rng.integers(-6, 7)) % 180, rng.integers(170, 256),
                      rng.integers(150, 256)]]])
    return tuple(float(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def _has_hole(mask):
    contours, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP,
                                           cv2.CHAIN_APPROX_SIMPLE)
    return hierarchy is not None and (hierarchy[0, :, 3] >= 0).any()


def _visible(shapes):
    """Visible part of each shape when painted in list order (later ones on top)."""
    covered = np.zeros_like(shapes[0].mask)
    visible = []
    for shape in reversed(shapes):
        visible.append(shape.mask & ~covered)
        covered |= shape.mask
    return visible[::-1]


def _acceptable(shapes):
    for shape, vis in zip(shapes, _visible(shapes)):
        if vis.sum() < max(_MIN_AREA, _MIN_VISIBLE * shape.mask.sum()) or _has_hole(vis):
            return False
    return True


def _polygons(mask):
    """Sub-pixel outlines of a hole-free mask, as COCO flat polygons."""
    k = _TRACE_UPSAMPLE
    big = cv2.resize(mask.astype(np.uint8), None, fx=k, fy=k, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for contour in contours:
        contour = cv2.approxPolyDP(contour, 1.0, True)   # within 1/4 px of the outline
        if len(contour) >= 3:
            polys.append(((contour[:, 0, :] + 0.5) / k).round(2).reshape(-1).tolist())
    return polys


def _draw_shapes(rng, size, count):
    shapes = []
    for _ in range(count):
        for _attempt in range(20):
            category = int(rng.integers(len(CATEGORIES)))
            side = size * float(np.exp(rng.uniform(*np.log(_SIDES))))
            centre = rng.uniform(side * 0.3, size - side * 0.3, 2)
            polygon = _outline(category, side, rng.uniform(0, 2 * np.pi)) + centre
            shape = _Shape(category, _fill(polygon, (size, size)), _colour(rng, category))
            if shape.mask.sum() >= _MIN_AREA and _acceptable(shapes + [shape]):
                shapes.append(shape)
                break
    return shapes


def _crowd(rng, size, occupied):
    """A cluster of tiny same-class shapes in a free corner region, or None."""
    category = int(rng.integers(len(CATEGORIES)))
    centre = rng.uniform(30, size - 30, 2)
    mask = np.zeros((size, size), bool)
    for _ in range(int(rng.integers(5, 10))):
        at = centre + rng.normal(0, 10, 2)
        mask |= _fill(_outline(category, rng.uniform(4, 8), rng.uniform(0, 6.3)) + at,
                      (size, size))
    if not mask.any() or (mask & occupied).any():
        return None
    return _Shape(category, mask, _colour(rng, category))


def _paint(image, shape, rng):
    shade = 1 + rng.normal(0, 0.04, (int(shape.mask.sum()), 1))
    image[shape.mask] = np.array(shape.colour) * shade


def _image(rng, size):
    """One image and its annotations (without ids)."""
    image = _background(rng, size)
    shapes = _draw_shapes(rng, size, int(rng.integers(2, 7)))
    annotations = []
    for shape, vis in zip(shapes, _visible(shapes)):
        _paint(image, shape, rng)
        polys = _polygons(vis)
        rle = mask_util.merge(mask_util.frPyObjects(polys, size, size))
        annotations.append({'category_id': shape.category + 1, 'segmentation': polys,
                            'area': float(mask_util.area(rle)), 'iscrowd': 0,
                            'bbox': [round(float(v), 2) for v in mask_util.toBbox(rle)]})
    occupied = np.any([s.mask for s in shapes], axis=0) if shapes else np.zeros((size,) * 2, bool)
    crowd = _crowd(rng, size, occupied) if rng.random() < 1 / 6 else None
    if crowd is not None:
        _paint(image, crowd, rng)
        region = cv2.dilate(crowd.mask.astype(np.uint8), np.ones((5, 5), np.uint8))
        rle = mask_util.encode(np.asfortranarray(region))
        annotations.append({'category_id': crowd.category + 1,
                            'segmentation': {'size': [size, size],
                                             'counts': rle['counts'].decode('ascii')},
                            'area': float(mask_util.area(rle)), 'iscrowd': 1,
                            'bbox': [float(v) for v in mask_util.toBbox(rle)]})
    return np.clip(image, 0, 255).astype(np.uint8), annotations


def _write_split(root, split, count, size, seed):
    os.makedirs(os.path.join(root, split))
    images, annotations = [], []
    for i in range(count):
        rng = np.random.default_rng([seed, _SPLITS[split], i])
        image, anns = _image(rng, size)
        name = f'{split}_{i:05d}.png'
        cv2.imwrite(os.path.join(root, split, name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        images.append({'id': i + 1, 'file_name': name, 'height': size, 'width': size})
        for ann in anns:
            annotations.append(dict(ann, id=len(annotations) + 1, image_id=i + 1))
    coco = {'info': {'description': f'quick-start shapes, {split} split, seed {seed}',
                     'generator': 'ppdet quickstart', 'version': GENERATOR_VERSION},
            'images': images, 'annotations': annotations,
            'categories': [{'id': k + 1, 'name': n, 'supercategory': 'shape'}
                           for k, n in enumerate(CATEGORIES)]}
    with open(os.path.join(root, 'annotations', f'instances_{split}.json'), 'w') as f:
        json.dump(coco, f)


def generate_quickstart(dataset_dir, num_train=300, num_val=50, image_size=192, seed=0):
    """Write the dataset to ``dataset_dir`` (``train/``, ``val/``, ``annotations/``).

    Built in a temporary folder beside it and moved into place, so an interrupted run or a
    second process never sees half a dataset.  Returns the seconds it took.
    """
    start = time.perf_counter()
    parent = os.path.dirname(os.path.abspath(dataset_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='.quickstart-', dir=parent)
    try:
        os.makedirs(os.path.join(tmp, 'annotations'))
        _write_split(tmp, 'train', num_train, image_size, seed)
        _write_split(tmp, 'val', num_val, image_size, seed)
        try:
            os.rename(tmp, dataset_dir)
        except OSError:
            if not os.path.isdir(dataset_dir):    # not another process that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return time.perf_counter() - start


@register
class QuickStartDataSet(COCODataSet):
    """A :class:`COCODataSet` over the quick-start data, generated on first use."""

    def prepare(self):
        if os.path.isfile(self.anno_path):
            if _generated_version(self.anno_path) in (None, GENERATOR_VERSION):
                return
            logger.info('%s was made by an older generator: regenerating it', self.dataset_dir)
            shutil.rmtree(self.dataset_dir)
        seconds = generate_quickstart(self.dataset_dir)
        logger.info('generated the quick-start dataset in %s (%.1f s)', self.dataset_dir, seconds)


def _generated_version(anno_path):
    """The generator version of a generated file; None for data this module did not write."""
    try:
        with open(anno_path, encoding='utf-8') as f:
            info = json.load(f).get('info', {})
    except (ValueError, AttributeError):
        return None                      # not ours to replace; parsing will name the problem
    if info.get('generator') == 'ppdet quickstart':
        return info.get('version')
    return None if 'quick-start shapes' not in info.get('description', '') else 1
