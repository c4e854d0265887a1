"""The bundled quick-start dataset: generated, deterministic, learnable in minutes on a CPU.

Four classes of filled shapes, each with its own outline and colour family (red discs, green
squares, blue triangles, yellow stars), 2-6 per image over textured backgrounds, with sizes
spread over the quick-start scale ranges (shape side about a seventh of the image to nearly
all of it: the smallest still spans several stride-4 mask cells, so masks can be precise).
Shapes overlap; every annotation describes the visible part only (polygons traced from the
visible mask, no instance hidden by more than half, no holes).  A few images (one in six is tried;
the cluster must fit beside the shapes, so about one in ten) hold a crowd region: a cluster
of tiny shapes annotated as one ``iscrowd`` RLE.

The same files on every platform and library version: random draws come only from numpy's
legacy ``RandomState`` uniform stream (frozen by numpy's compatibility policy), and pixels,
outlines and colours are computed with IEEE-exact arithmetic only (``+ - * /``, ``sqrt``,
comparisons: no OpenCV resampling or drawing, no ``sin`` / ``exp`` / ``log`` whose SIMD
implementations differ between CPUs, no BLAS products whose summation order depends on the
kernel). OpenCV only traces the outlines of binary masks (an integer algorithm) and writes
lossless PNGs.
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
GENERATOR_VERSION = 4
CATEGORIES = ['disc', 'square', 'triangle', 'star']
# RGB ranges of each class's colour family (low, high per channel)
_COLOURS = [((200, 0, 20), (255, 70, 80)), ((20, 170, 0), (90, 255, 70)),
            ((0, 50, 190), (70, 120, 255)), ((220, 180, 0), (255, 240, 60))]
_SPLITS = {'train': 0, 'val': 1}
_MIN_VISIBLE = 0.5        # an earlier shape keeps at least this fraction visible
_MIN_AREA_FRACTION = 0.008   # visible pixels of an instance, as a fraction of the image
# Shape size (fraction of the image side): a bin drawn uniformly, then uniform inside it;
# the bins grow geometrically, so sizes are spread evenly over the octaves.
_SIDE_BINS = (0.14, 0.19, 0.26, 0.36, 0.5, 0.69, 0.95)
_TRACE_UPSAMPLE = 4       # contours are traced on a 4x mask for sub-pixel outlines

_SQRT3, _SQRT5 = np.sqrt(3.), np.sqrt(5.)
# unit vectors at 0, 36, ..., 324 degrees (star points), from exact square roots
_COS36, _COS72 = (1 + _SQRT5) / 4, (_SQRT5 - 1) / 4
_SIN36, _SIN72 = np.sqrt(10 - 2 * _SQRT5) / 4, np.sqrt(10 + 2 * _SQRT5) / 4
_STAR_DIRS = np.array([[1, 0], [_COS36, _SIN36], [_COS72, _SIN72], [-_COS72, _SIN72],
                       [-_COS36, _SIN36], [-1, 0], [-_COS36, -_SIN36], [-_COS72, -_SIN72],
                       [_COS72, -_SIN72], [_COS36, -_SIN36]])
_OUTLINES = {
    1: np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * 0.75,               # square
    2: np.array([[0, 1], [-_SQRT3 / 2, -0.5], [_SQRT3 / 2, -0.5]]),          # triangle
    3: _STAR_DIRS * np.where(np.arange(10) % 2 == 0, 1., 0.45)[:, None],    # star
}


@dataclass
class _Shape:
    category: int          # 0-based class
    mask: np.ndarray       # [H, W] bool, full (unoccluded) extent
    colour: np.ndarray     # [3] float32 RGB


def _rotation(rng):
    """A rotation ``(cos, sin)`` over -90..90 degrees, from a rational parametrisation."""
    t = rng.uniform(-1., 1.)
    return (1 - t * t) / (1 + t * t), 2 * t / (1 + t * t)


def _pixel_centres(size):
    centres = np.arange(size, dtype=np.float64) + 0.5
    return centres[None, :], centres[:, None]      # x [1, W], y [H, 1]


def _inside_polygon(polygon, size):
    """Pixels whose centre lies inside ``polygon`` (k, 2 as x, y): the crossing-number test,
    one vectorised pass per edge."""
    px, py = _pixel_centres(size)
    inside = np.zeros((size, size), bool)
    for (x1, y1), (x2, y2) in zip(polygon, np.roll(polygon, -1, axis=0)):
        if y1 == y2:
            continue
        crosses = (y1 > py) != (y2 > py)                              # [H, 1]
        x_at = x1 + (py - y1) * ((x2 - x1) / (y2 - y1))              # [H, 1]
        inside ^= crosses & (px < x_at)
    return inside


def _shape_mask(category, side, centre, rotation, size):
    """Full mask of a class's shape with bounding size about ``side`` centred at ``centre``."""
    if category == 0:                    # disc
        px, py = _pixel_centres(size)
        dx, dy = px - centre[0], py - centre[1]
        return dx * dx + dy * dy <= (side / 2) * (side / 2)
    c, s = rotation
    pts = _OUTLINES[category] * (side / 2)
    rotated = np.stack([pts[:, 0] * c - pts[:, 1] * s, pts[:, 0] * s + pts[:, 1] * c], 1)
    return _inside_polygon(rotated + centre, size)


def _smooth_field(rng, size, cells, channels):
    """Random values on a ``cells x cells`` lattice, bilinearly interpolated to the image."""
    lattice = rng.uniform(-1., 1., (cells, cells, channels))
    at = (np.arange(size) + 0.5) * ((cells - 1) / size)
    low = np.minimum(at.astype(np.int64), cells - 2)
    frac = at - low
    rows = lattice[low] * (1 - frac)[:, None, None] + lattice[low + 1] * frac[:, None, None]
    return rows[:, low] * (1 - frac)[None, :, None] + rows[:, low + 1] * frac[None, :, None]


def _background(rng, size):
    """Muted texture: low-frequency blotches, stripes and grain around a grey-ish colour."""
    base = rng.uniform(70, 190) + rng.uniform(-20, 20, 3)
    image = base + 40 * _smooth_field(rng, size, 6, 1) + 12 * _smooth_field(rng, size, 6, 3)
    c, s = _rotation(rng)
    period, amplitude = rng.uniform(6, 24), rng.uniform(4, 14)
    px, py = _pixel_centres(size)
    phase = (px * c + py * s) / period
    triangle = 4 * np.abs(phase - np.floor(phase) - 0.5) - 1                # in [-1, 1]
    image += (amplitude * triangle)[..., None]
    image += rng.uniform(-10, 10, (size, size, 3))
    return image


def _colour(rng, category):
    low, high = _COLOURS[category]
    return rng.uniform(low, high)


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


def _acceptable(shapes, min_area):
    for shape, vis in zip(shapes, _visible(shapes)):
        area, full = int(vis.sum()), int(shape.mask.sum())
        if area < max(min_area, _MIN_VISIBLE * full) or _has_hole(vis):
            return False
    return True


def _polygons(mask):
    """Sub-pixel outlines of a hole-free mask, as COCO flat polygons."""
    k = _TRACE_UPSAMPLE
    big = np.repeat(np.repeat(mask.astype(np.uint8), k, axis=0), k, axis=1)
    contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for contour in contours:
        contour = cv2.approxPolyDP(contour, 1.0, True)   # within 1/4 px of the outline
        if len(contour) >= 3:
            polys.append(((contour[:, 0, :] + 0.5) / k).round(2).reshape(-1).tolist())
    return polys


def _draw_shapes(rng, size, count):
    shapes = []
    min_area = _MIN_AREA_FRACTION * size * size
    for _ in range(count):
        for _attempt in range(20):
            category = int(rng.randint(len(CATEGORIES)))
            bin_ = int(rng.randint(len(_SIDE_BINS) - 1))
            side = size * rng.uniform(_SIDE_BINS[bin_], _SIDE_BINS[bin_ + 1])
            centre = rng.uniform(side * 0.3, size - side * 0.3, 2)
            mask = _shape_mask(category, side, centre, _rotation(rng), size)
            shape = _Shape(category, mask, _colour(rng, category))
            if mask.sum() >= min_area and _acceptable(shapes + [shape], min_area):
                shapes.append(shape)
                break
    return shapes


def _dilate(mask, radius):
    """Binary dilation with a ``(2 radius + 1)`` square."""
    padded = np.pad(mask, radius)
    out = np.zeros_like(mask)
    h, w = mask.shape
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            out |= padded[dy:dy + h, dx:dx + w]
    return out


def _crowd(rng, size, occupied, attempts=4):
    """A cluster of tiny same-class shapes in a free region, or None."""
    category = int(rng.randint(len(CATEGORIES)))
    for _ in range(attempts):
        centre = rng.uniform(0.15 * size, 0.85 * size, 2)
        mask = np.zeros((size, size), bool)
        for _ in range(int(rng.randint(5, 10))):
            at = centre + rng.uniform(-0.09 * size, 0.09 * size, 2)
            mask |= _shape_mask(category, rng.uniform(4, 8), at, _rotation(rng), size)
        if mask.any() and not (_dilate(mask, 2) & occupied).any():
            return _Shape(category, mask, _colour(rng, category))
    return None


def _paint(image, shape, rng):
    shade = 1 + rng.uniform(-0.07, 0.07, (int(shape.mask.sum()), 1))
    image[shape.mask] = shape.colour * shade


def _image(rng, size):
    """One image and its annotations (without ids)."""
    image = _background(rng, size)
    shapes = _draw_shapes(rng, size, int(rng.randint(2, 7)))
    annotations = []
    for shape, vis in zip(shapes, _visible(shapes)):
        _paint(image, shape, rng)
        polys = _polygons(vis)
        rle = mask_util.merge(mask_util.frPyObjects(polys, size, size))
        annotations.append({'category_id': shape.category + 1, 'segmentation': polys,
                            'area': float(mask_util.area(rle)), 'iscrowd': 0,
                            'bbox': [round(float(v), 2) for v in mask_util.toBbox(rle)]})
    occupied = np.any([s.mask for s in shapes], axis=0) if shapes else np.zeros((size,) * 2, bool)
    crowd = _crowd(rng, size, occupied) if rng.random_sample() < 1 / 6 else None
    if crowd is not None:
        _paint(image, crowd, rng)
        region = _dilate(crowd.mask, 2).astype(np.uint8)
        rle = mask_util.encode(np.asfortranarray(region))
        annotations.append({'category_id': crowd.category + 1,
                            'segmentation': {'size': [size, size],
                                             'counts': rle['counts'].decode('ascii')},
                            'area': float(mask_util.area(rle)), 'iscrowd': 1,
                            'bbox': [float(v) for v in mask_util.toBbox(rle)]})
    return np.clip(np.round(image), 0, 255).astype(np.uint8), annotations


def _write_split(root, split, count, size, seed):
    os.makedirs(os.path.join(root, split))
    images, annotations = [], []
    for i in range(count):
        rng = np.random.RandomState([seed, _SPLITS[split], i])
        image, anns = _image(rng, size)
        name = f'{split}_{i:05d}.png'
        cv2.imwrite(os.path.join(root, split, name), np.ascontiguousarray(image[..., ::-1]))
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


def generate_quickstart(dataset_dir, num_train=300, num_val=50, image_size=128, seed=0):
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
