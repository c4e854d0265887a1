"""Gt2Solov2Target on hand-made cases: levels, centre cells, crowd, precedence, padding."""
import cv2
import numpy as np
import pytest
from scipy import ndimage

from fixtures.reference_targets import reference_targets
from ppdet.data.transforms.solov2_target import Gt2Solov2Target, downsample_masks, mass_centres

GRIDS = [24, 16, 12, 8, 6]
RANGES = [[1, 32], [16, 64], [32, 128], [64, 256], [128, 512]]
SIZE = 256


def make_sample(squares, crowd=None, size=SIZE):
    """squares: (y0, x0, side, class) in annotation order; masks fill the squares."""
    boxes, classes, masks = [], [], []
    for y0, x0, side, cls in squares:
        boxes.append([x0, y0, x0 + side, y0 + side])
        classes.append([cls])
        mask = np.zeros((size, size), np.uint8)
        mask[y0:y0 + side, x0:x0 + side] = 1
        masks.append(mask)
    return {'image': np.zeros((3, size, size), np.float32),
            'gt_bbox': np.array(boxes, np.float32).reshape(-1, 4),
            'gt_class': np.array(classes, np.int32).reshape(-1, 1),
            'is_crowd': np.array(crowd or [0] * len(squares), np.int32).reshape(-1, 1),
            'gt_segm': np.array(masks, np.uint8).reshape(-1, size, size)}


def targets(*samples):
    return Gt2Solov2Target(GRIDS, RANGES)(list(samples))


def positive_levels(target):
    return [l for l, cate in enumerate(target['cate_label']) if cate.any()]


@pytest.mark.parametrize('side, levels', [(10, [0]), (24, [0, 1]), (48, [1, 2]),
                                          (100, [2, 3]), (200, [3, 4])])
def test_object_lands_in_the_levels_of_its_scale(side, levels):
    y0 = x0 = (SIZE - side) // 2 - 3
    target, = targets(make_sample([(y0, x0, side, 2)]))
    assert positive_levels(target) == levels
    centre = y0 + (side - 1) / 2
    for l in levels:
        grid = GRIDS[l]
        cate = target['cate_label'][l].reshape(grid, grid)
        cell = int(centre / SIZE * grid)
        assert cate[cell, cell] == 3                       # class 2 -> label 3
        rows, cols = np.nonzero(cate)
        assert rows.min() >= cell - 1 and rows.max() <= cell + 1   # at most 3x3 cells
        assert cols.min() >= cell - 1 and cols.max() <= cell + 1
        cells = np.flatnonzero(cate)
        assert sorted(target['grid_order'][l]) == sorted(cells)   # sample 0: index = cell
        expected_mask = downsample_masks(make_sample([(y0, x0, side, 2)])['gt_segm'], 4)[0]
        assert all(np.array_equal(row, expected_mask) for row in target['ins_label'][l])
    assert target['fg_num'] == sum(np.count_nonzero(c) for c in target['cate_label'])


def test_small_object_claims_exactly_its_centre_cell():
    target, = targets(make_sample([(100, 100, 10, 0)]))
    cate = target['cate_label'][0].reshape(24, 24)
    assert list(zip(*np.nonzero(cate))) == [(9, 9)]           # centre 104.5 / (256/24) = 9.8
    assert list(target['grid_order'][0]) == [9 * 24 + 9]
    assert target['ins_label'][0].shape == (1, 64, 64)
    assert target['fg_num'] == 1


def test_crowd_region_is_never_a_positive():
    target, = targets(make_sample([(100, 100, 10, 0), (20, 20, 40, 1)], crowd=[0, 1]))
    assert positive_levels(target) == [0]
    assert set(np.unique(target['cate_label'][0])) == {0, 1}
    assert target['fg_num'] == 1


def test_later_instance_wins_shared_cells_but_both_keep_their_masks():
    first, second = (96, 96, 60, 0), (100, 100, 56, 3)      # same centre cells, two levels
    target, = targets(make_sample([first, second]))
    alone, = targets(make_sample([first]))
    level = 1
    cate = target['cate_label'][level]
    claimed = np.flatnonzero(alone['cate_label'][level])
    assert set(cate[claimed]) == {4}                          # the later instance's label
    rows = target['grid_order'][level]
    assert len(rows) == 2 * len(claimed)                      # one row per (instance, cell)
    # first instance's rows come first, each cell row-major
    assert list(rows[:len(claimed)]) == sorted(claimed)
    masks = target['ins_label'][level]
    assert not np.array_equal(masks[0], masks[len(claimed)])
    assert target['fg_num'] == sum(np.count_nonzero(c) for c in target['cate_label'])


def test_batch_padding_dummy_rows_and_empty_levels():
    big, small = make_sample([(20, 20, 200, 0)]), make_sample([(100, 100, 10, 1)])
    t_big, t_small = targets(big, small)
    # level 0: only the second sample has a positive; the first gets one zero row pointing
    # at its own cell 0, padded to the batch's row count
    assert t_big['ins_label'][0].shape == t_small['ins_label'][0].shape == (1, 64, 64)
    assert list(t_big['grid_order'][0]) == [0] and not t_big['ins_label'][0].any()
    assert list(t_small['grid_order'][0]) == [1 * 576 + 9 * 24 + 9]
    # level 2 ([32, 128]) has no instance in the whole batch: zero rows
    assert t_big['ins_label'][2].shape == (0, 64, 64) and t_big['grid_order'][2].shape == (0,)
    # level 4: sample 1 has none, so it gets a zero row plus zero padding rows
    n = len(t_big['grid_order'][4])
    assert n >= 1 and t_small['ins_label'][4].shape == (n, 64, 64)
    assert t_small['grid_order'][4][0] == 1 * 36 and not t_small['ins_label'][4].any()


def test_instance_with_empty_mask_counts_towards_rows_but_is_not_positive():
    sample = make_sample([(100, 100, 10, 0)])
    sample['gt_segm'][:] = 0
    target, = targets(sample)
    assert not any(c.any() for c in target['cate_label'])
    assert target['ins_label'][0].shape == (1, 64, 64) and target['fg_num'] == 0


def test_random_scenes_equal_the_loop_transcription():
    rng = np.random.default_rng(3)
    samples = []
    for _ in range(4):
        squares = [(int(rng.integers(0, 200)), int(rng.integers(0, 200)),
                    int(rng.integers(2, 56)), int(rng.integers(0, 4))) for _ in range(8)]
        sample = make_sample(squares, size=SIZE)
        sample['gt_segm'] = sample['gt_segm'] * (rng.random(sample['gt_segm'].shape) < 0.8)
        samples.append(sample)
    mine, theirs = targets(*samples), reference_targets(samples, GRIDS, RANGES)
    for a, b in zip(mine, theirs):
        assert a['fg_num'] == b['fg_num']
        for key in ('cate_label', 'ins_label', 'grid_order'):
            for x, y in zip(a[key], b[key]):
                assert x.dtype == y.dtype and np.array_equal(x, y)


@pytest.mark.parametrize('ratio', [2, 4, 8])
def test_downsampling_equals_opencv_bilinear(ratio):
    rng = np.random.default_rng(ratio)
    masks = (rng.random((3, 96, 160)) < 0.5).astype(np.uint8)
    expected = np.stack([cv2.resize(m, None, None, fx=1 / ratio, fy=1 / ratio) for m in masks])
    assert np.array_equal(downsample_masks(masks, ratio), expected)


def test_mass_centres_equal_scipy():
    rng = np.random.default_rng(0)
    masks = (rng.random((5, 67, 91)) < rng.random((5, 1, 1))).astype(np.uint8)
    centres, area = mass_centres(masks)
    for m, c, a in zip(masks, centres, area):
        assert tuple(c) == ndimage.center_of_mass(m) and a == m.sum()


def test_the_model_grids_set_the_target_levels_and_a_disagreement_is_refused():
    from ppdet.core.errors import ConfigError
    from ppdet.modeling.grids import SOLOv2Grids
    grids = SOLOv2Grids(GRIDS, [8, 8, 16, 32, 32], RANGES)
    target = Gt2Solov2Target(grids=grids)
    assert (target.num_grids, target.scale_ranges) == (GRIDS, RANGES)
    sample = make_sample([(100, 100, 10, 1)])
    assert all(np.array_equal(a, b) for a, b in zip(target([sample])[0]['cate_label'],
                                                    targets(sample)[0]['cate_label']))
    assert Gt2Solov2Target(num_grids=tuple(GRIDS), grids=grids).num_grids == GRIDS
    with pytest.raises(ConfigError, match=r'num_grids \[9, 9, 9, 9, 9\] differs from the '
                                          r'model\'s \[24, 16'):
        Gt2Solov2Target(num_grids=[9] * 5, grids=grids)
    with pytest.raises(ConfigError, match='`grids` come from the model'):
        Gt2Solov2Target(grids={'num_grids': GRIDS})
