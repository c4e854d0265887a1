"""SOLOv2 training targets: which grid cell predicts which instance, and its mask.

Reproduces the reference ``Gt2Solov2Target`` exactly (SOLOV2_SPEC section 8) with whole-array
numpy work: one pass over each instance mask for its mass centre and its stride-4 copy, then
per level only index arithmetic on the few hit instances.  Crowd regions (``is_crowd``) never
become positives (the reference only avoids them because its dataset does not load them).
"""
from dataclasses import dataclass

import cv2
import numpy as np

from ppdet.core.errors import ConfigError
from ppdet.modeling.grids import DEFAULT_GRIDS, SOLOv2Grids, as_lists

from . import register_op

__all__ = ['Gt2Solov2Target']

_REMOVED_KEYS = ('gt_bbox', 'gt_class', 'is_crowd', 'gt_poly', 'gt_segm', 'ann_ids')


@dataclass
class _Instances:
    """The per-instance quantities every level needs, computed once per sample."""
    labels: np.ndarray       # [N] int64, class + 1
    scale: np.ndarray        # [N] float32, sqrt of the box area
    half_h: np.ndarray       # [N] float32, half the centre region's height
    half_w: np.ndarray       # [N] float32
    centre: np.ndarray       # [N, 2] float64 (row, column) mass centre; NaN for empty masks
    nonempty: np.ndarray     # [N] bool, mask has a pixel and the instance is not crowd
    small_masks: np.ndarray  # [N, Hm, Wm] uint8


@dataclass
class _Level:
    """One sample's targets at one level, before padding to the batch."""
    cate_label: np.ndarray   # [S*S] int64
    ins_label: np.ndarray    # [M, Hm, Wm] uint8 (one all-zero row when M == 0)
    grid_order: np.ndarray   # [M] int32, batch-flattened cell index
    count: int               # rows that count towards the batch maximum
    positive_cells: int      # distinct positive cells


def downsample_masks(masks, ratio):
    """``cv2.resize(m, None, fx=1/ratio, fy=1/ratio)`` (bilinear) of 0/1 masks, vectorised.

    With an even integer ratio each output pixel sits halfway between source pixels
    ``ratio*i + ratio/2 - 1`` and ``ratio*i + ratio/2`` in both directions: OpenCV's fixed-point
    bilinear gives the rounded mean of those 4 pixels, i.e. 1 when at least 2 of them are set.
    """
    n, h, w = masks.shape
    if float(ratio).is_integer() and int(ratio) % 2 == 0:
        r = int(ratio)
        a, b = r // 2 - 1, r // 2
        hm, wm = int(round(h / r)), int(round(w / r))
        rows = masks[:, a::r][:, :hm] + masks[:, b::r][:, :hm]           # [N, Hm, W], 0..2
        votes = rows[:, :, a::r][:, :, :wm] + rows[:, :, b::r][:, :, :wm]  # 0..4
        return (votes >= 2).view(np.uint8)
    from .operators import resize_masks
    return resize_masks(masks, 1. / ratio, 1. / ratio, cv2.INTER_LINEAR)


def mass_centres(masks):
    """``[N, 2]`` (row, column) centres of mass of ``[N, H, W]`` 0/1 masks, and pixel counts.

    Integer sums are exact in float64, so the one division matches ``scipy.ndimage``.
    """
    counter = np.uint16 if max(masks.shape[1:]) < 2 ** 16 else np.int64   # narrow is faster
    row_counts = masks.sum(axis=2, dtype=counter).astype(np.int64)    # [N, H]
    col_counts = masks.sum(axis=1, dtype=counter).astype(np.int64)    # [N, W]
    area = row_counts.sum(1)
    with np.errstate(invalid='ignore', divide='ignore'):
        cy = (row_counts @ np.arange(masks.shape[1], dtype=np.int64)) / area
        cx = (col_counts @ np.arange(masks.shape[2], dtype=np.int64)) / area
    return np.stack([cy, cx], 1), area


@register_op
class Gt2Solov2Target:
    """Grid targets per FPN level: ``cate_label``, ``ins_label``, ``grid_order``, ``fg_num``.

    Runs after ``PadBatch`` (masks ``gt_segm`` at the padded size, boxes in resized pixels).
    ``grids``: the model's :class:`SOLOv2Grids`, which the reader gives it; ``num_grids`` and
    ``scale_ranges`` (the reference's keys) may repeat them and must then agree. Without
    ``grids`` they default to the SOLOv2 head's defaults.
    """

    def __init__(self, num_grids=None, scale_ranges=None, coord_sigma=0.2, sampling_ratio=4.0,
                 grids=None):
        if grids is not None and not isinstance(grids, SOLOv2Grids):
            raise ConfigError('Gt2Solov2Target: `grids` come from the model; set num_grids and '
                              'scale_ranges in the head\'s section instead')
        self.num_grids = _grid_field('num_grids', num_grids, grids)
        self.scale_ranges = _grid_field('scale_ranges', scale_ranges, grids)
        if len(self.num_grids) != len(self.scale_ranges):
            raise ConfigError(f'Gt2Solov2Target: {len(self.num_grids)} num_grids but '
                              f'{len(self.scale_ranges)} scale_ranges')
        self.coord_sigma, self.sampling_ratio = coord_sigma, sampling_ratio

    def __repr__(self):
        return (f'Gt2Solov2Target(num_grids={self.num_grids}, scale_ranges={self.scale_ranges}, '
                f'coord_sigma={self.coord_sigma}, sampling_ratio={self.sampling_ratio})')

    # -- per sample -----------------------------------------------------------------------
    def _instances(self, sample):
        boxes = np.asarray(sample['gt_bbox'], np.float32).reshape(-1, 4)
        masks = sample['gt_segm']
        widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        crowd = np.asarray(sample.get('is_crowd', np.zeros((len(boxes), 1))),
                           bool).reshape(-1)
        centre, area = mass_centres(masks)
        return _Instances(
            labels=np.asarray(sample['gt_class'], np.int64).reshape(-1) + 1,
            scale=np.sqrt(widths * heights),
            half_h=0.5 * heights * self.coord_sigma, half_w=0.5 * widths * self.coord_sigma,
            centre=centre, nonempty=(area > 0) & ~crowd,
            small_masks=downsample_masks(masks, self.sampling_ratio))

    def _level(self, inst, lo, hi, grid, index_in_batch, canvas_hw):
        hm, wm = inst.small_masks.shape[1:]
        hit = (inst.scale >= lo) & (inst.scale <= hi)
        ids = np.flatnonzero(hit & inst.nonempty)
        if ids.size == 0:
            return _Level(np.zeros(grid * grid, np.int64), np.zeros((1, hm, wm), np.uint8),
                          np.array([index_in_batch * grid * grid], np.int32),
                          count=int(hit.any()), positive_cells=0)

        def cell(value, length):   # the reference's Python float floor division
            return np.floor_divide(value / length, 1. / grid).astype(np.int64)

        cy, cx = inst.centre[ids, 0], inst.centre[ids, 1]
        hp, wp = canvas_hw
        ch, cw = cell(cy, hp), cell(cx, wp)
        top = np.maximum.reduce([np.zeros_like(ch), cell(cy - inst.half_h[ids], hp), ch - 1])
        down = np.minimum.reduce([np.full_like(ch, grid - 1), cell(cy + inst.half_h[ids], hp),
                                  ch + 1])
        left = np.maximum.reduce([np.zeros_like(cw), cell(cx - inst.half_w[ids], wp), cw - 1])
        right = np.minimum.reduce([np.full_like(cw, grid - 1), cell(cx + inst.half_w[ids], wp),
                                   cw + 1])
        # Every region lies within 3x3 cells of its centre: enumerate them row-major per
        # instance, in annotation order (the order of the reference's nested loops).
        rows = top[:, None] + np.arange(3)
        cols = left[:, None] + np.arange(3)
        inside = (rows <= down[:, None])[:, :, None] & (cols <= right[:, None])[:, None, :]
        cells = (rows[:, :, None] * grid + cols[:, None, :])[inside]
        owner = np.broadcast_to(np.arange(ids.size)[:, None, None], inside.shape)[inside]

        last_owner = np.full(grid * grid, -1)
        np.maximum.at(last_owner, cells, owner)       # a later instance overwrites a cell
        cate_label = np.where(last_owner >= 0, inst.labels[ids][last_owner], 0)
        return _Level(cate_label.astype(np.int64), inst.small_masks[ids[owner]],
                      (index_in_batch * grid * grid + cells).astype(np.int32),
                      count=len(cells), positive_cells=len(np.unique(cells)))

    # -- per batch ------------------------------------------------------------------------
    def __call__(self, samples):
        canvas_hw = samples[0]['image'].shape[1:]
        levels = []                      # levels[k][l]: sample k, level l
        for k, sample in enumerate(samples):
            inst = self._instances(sample)
            levels.append([self._level(inst, lo, hi, grid, k, canvas_hw)
                           for (lo, hi), grid in zip(self.scale_ranges, self.num_grids)])
        out = []
        for k, sample in enumerate(samples):
            target = {key: value for key, value in sample.items() if key not in _REMOVED_KEYS}
            target['cate_label'] = [lv.cate_label for lv in levels[k]]
            target['ins_label'], target['grid_order'] = [], []
            for l, level in enumerate(levels[k]):
                rows = max(other[l].count for other in levels)
                target['ins_label'].append(_fit_rows(level.ins_label, rows))
                target['grid_order'].append(_fit_rows(level.grid_order, rows))
            target['fg_num'] = np.int64(sum(lv.positive_cells for lv in levels[k]))
            out.append(target)
        return out


def _grid_field(key, value, grids):
    """``value`` of the grids field ``key`` as given, checked against ``grids`` when given."""
    if grids is None:
        return as_lists(getattr(DEFAULT_GRIDS, key) if value is None else value)
    if value is not None and as_lists(value) != getattr(grids, key):
        raise ConfigError(f'Gt2Solov2Target.{key} {value} differs from the model\'s '
                          f'{getattr(grids, key)}; set it in one place')
    return getattr(grids, key)


def _fit_rows(array, rows):
    """Zero-pad (or cut) ``array`` along its first axis to ``rows`` rows."""
    if len(array) >= rows:
        return array[:rows]
    padded = np.zeros((rows,) + array.shape[1:], array.dtype)
    padded[:len(array)] = array
    return padded
