"""Data pipeline benchmark: images/s of the train pipeline and ms/image of the SOLOv2 targets.

The targets are timed against `reference_targets`, a direct loop-based transcription of the
reference `Gt2Solov2Target` (SOLOV2_SPEC section 8: per instance and per grid cell, in Python,
scipy centre of mass, one OpenCV resize per mask), run in the same process on the same inputs;
the tests also use it as an independent check.
"""
import cv2
import numpy as np
from scipy import ndimage


def reference_targets(samples, num_grids, scale_ranges, coord_sigma=0.2, sampling_ratio=4.0):
    """``samples`` after PadBatch -> list of dicts with per-level lists, padded to the batch."""
    per_sample, max_rows = [], [0] * len(num_grids)
    for k, sample in enumerate(samples):
        hp, wp = sample['image'].shape[1:]
        hm, wm = int(hp / sampling_ratio), int(wp / sampling_ratio)
        boxes, labels = sample['gt_bbox'], sample['gt_class'][:, 0] + 1
        masks = sample['gt_segm']
        areas = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
        levels, fg = [], 0
        for l, ((lo, hi), grid) in enumerate(zip(scale_ranges, num_grids)):
            hit = np.nonzero((areas >= lo) & (areas <= hi))[0]
            cate = np.zeros([grid, grid], np.int64)
            ins_ind = np.zeros([grid * grid], bool)
            rows, order = [], []
            if len(hit):
                half_w = 0.5 * (boxes[hit, 2] - boxes[hit, 0]) * coord_sigma
                half_h = 0.5 * (boxes[hit, 3] - boxes[hit, 1]) * coord_sigma
                for mask, label, hh, hw in zip(masks[hit], labels[hit], half_h, half_w):
                    if mask.sum() == 0:
                        continue
                    cy, cx = ndimage.center_of_mass(mask)
                    ch = int((cy / hp) // (1. / grid))
                    cw = int((cx / wp) // (1. / grid))
                    top = max(0, int(((cy - hh) / hp) // (1. / grid)))
                    down = min(grid - 1, int(((cy + hh) / hp) // (1. / grid)))
                    left = max(0, int(((cx - hw) / wp) // (1. / grid)))
                    right = min(grid - 1, int(((cx + hw) / wp) // (1. / grid)))
                    top, down = max(top, ch - 1), min(down, ch + 1)
                    left, right = max(cw - 1, left), min(right, cw + 1)
                    cate[top:down + 1, left:right + 1] = label
                    small = cv2.resize(mask, None, None, fx=1. / sampling_ratio,
                                       fy=1. / sampling_ratio)
                    for i in range(top, down + 1):
                        for j in range(left, right + 1):
                            row = np.zeros([hm, wm], np.uint8)
                            row[:small.shape[0], :small.shape[1]] = small
                            rows.append(row)
                            ins_ind[i * grid + j] = True
                            order.append(k * grid * grid + i * grid + j)
            if rows:
                max_rows[l] = max(max_rows[l], len(rows))
            elif len(hit):
                max_rows[l] = max(max_rows[l], 1)
            if not rows:
                rows, order = [np.zeros([hm, wm], np.uint8)], [k * grid * grid]
            levels.append((cate.reshape(-1), np.stack(rows), np.array(order, np.int32)))
            fg += int(ins_ind.sum())
        per_sample.append((levels, fg))
    out = []
    for levels, fg in per_sample:
        target = {'cate_label': [], 'ins_label': [], 'grid_order': [], 'fg_num': np.int64(fg)}
        for l, (cate, rows, order) in enumerate(levels):
            n = max_rows[l]
            padded_rows = np.zeros((n,) + rows.shape[1:], np.uint8)
            padded_order = np.zeros(n, np.int32)
            padded_rows[:min(n, len(rows))] = rows[:n]
            padded_order[:min(n, len(order))] = order[:n]
            target['cate_label'].append(cate)
            target['ins_label'].append(padded_rows)
            target['grid_order'].append(padded_order)
        out.append(target)
    return out
