"""tools/browse_dataset.py on a small quick-start dataset: files, sizes, where masks are drawn."""
import os
import sys

import cv2
import numpy as np
import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, 'tools'))
import browse_dataset as bd  # noqa: E402

from ppdet.core.config import load_config, merge_overrides  # noqa: E402
from ppdet.data import build_dataset, build_loader, generate_quickstart  # noqa: E402

QUICKSTART = os.path.join(ROOT, 'configs', 'quickstart.yml')
NUM_TRAIN = 80            # about one image in 25 holds a crowd region
SIZE = (160, 192)         # h, w of the transformed view
LABEL_AREA = 400          # pixels of a drawn class-name box, about
TRANSFORMS = ('TrainReader.sample_transforms=[{Decode: {}}, {Poly2Mask: {}}, '
              '{Resize: {target_size: [160, 192], keep_ratio: false, interp: 1}}, '
              '{RandomFlip: {prob: 1.0}}, {NormalizeImage: {}}, {Permute: {}}]')


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('browse') / 'quickstart')
    generate_quickstart(path, num_train=NUM_TRAIN, num_val=2)
    return path


def _options(data_dir):
    return ['-o', f'TrainDataset.dataset_dir={data_dir}', f'EvalDataset.dataset_dir={data_dir}',
            TRANSFORMS]


def _read_rgb(path):
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    assert image is not None, path
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _interior(mask, pixels=2):
    return cv2.erode(mask.astype(np.uint8), np.ones((2 * pixels + 1,) * 2, np.uint8)) > 0


def _assert_masks_drawn(drawn, gt, names):
    """Inside each (eroded) mask the pixels are blended with the class colour, but where a
    label box is drawn over it; pixels outside every mask are mostly untouched (only
    outlines, boxes and labels)."""
    colours = bd.class_colours(len(names))
    base = gt.image.astype(np.float32)
    blended = []
    for mask, cls, crowd in zip(gt.masks, gt.classes, gt.crowd):
        inside = _interior(mask)
        if crowd or inside.sum() < 20:
            continue
        expected = (1 - bd.MASK_ALPHA) * base[inside] + bd.MASK_ALPHA * colours[cls]
        blended.append(np.abs(drawn[inside] - expected).max(axis=1) <= 1.5)
        if inside.sum() > LABEL_AREA:        # a label box may hide a small instance
            assert blended[-1].mean() > 0.6, (cls, blended[-1].mean())
    assert blended and np.concatenate(blended).mean() > 0.9
    outside = ~gt.masks.any(axis=0)
    assert (drawn[outside] == gt.image[outside]).all(axis=1).mean() > 0.85


def test_cli_writes_both_views_at_their_sizes(data_dir, tmp_path, capsys):
    out = str(tmp_path / 'browse')
    bd.main(['-c', QUICKSTART, '--num', '2', '--output_dir', out] + _options(data_dir))
    assert 'wrote 4 images' in capsys.readouterr().out
    assert sorted(os.listdir(out)) == ['train_00000.annotated.png', 'train_00000.transformed.png',
                                       'train_00001.annotated.png', 'train_00001.transformed.png']

    cfg = bd._browse_config(merge_overrides(load_config(QUICKSTART), _options(data_dir)[1:]),
                            'train')
    dataset = build_dataset(cfg, 'train', validate_images=False)
    loader = build_loader(cfg, 'train', dataset, num_workers=0)
    names = dataset.category_names

    original = bd.annotated(dataset, 0)
    drawn = _read_rgb(os.path.join(out, 'train_00000.annotated.png'))
    assert drawn.shape == original.image.shape
    assert (original.image == _read_rgb(os.path.join(data_dir, 'train', 'train_00000.png'))).all()
    _assert_masks_drawn(drawn.astype(np.float32), original, names)

    fed = bd.transformed(loader, 0)
    drawn = _read_rgb(os.path.join(out, 'train_00000.transformed.png'))
    assert drawn.shape == SIZE + (3,)
    _assert_masks_drawn(drawn.astype(np.float32), fed, names)
    # What the model is fed, un-normalised: the original resized and flipped.
    resized = cv2.resize(original.image, SIZE[::-1], interpolation=cv2.INTER_LINEAR)[:, ::-1]
    assert np.abs(fed.image.astype(int) - resized).max() <= 1
    for before, after in zip(original.masks, fed.masks):
        expected = cv2.resize(before.astype(np.uint8), SIZE[::-1],
                              interpolation=cv2.INTER_NEAREST)[:, ::-1] > 0
        assert (expected & after).sum() / (expected | after).sum() > 0.9


def test_crowd_regions_are_hatched_grey(data_dir):
    cfg = bd._browse_config(merge_overrides(load_config(QUICKSTART), _options(data_dir)[1:]),
                            'train')
    dataset = build_dataset(cfg, 'train', validate_images=False)
    # the largest crowd region, so that class-name labels cover little of it
    crowds = [i for i, r in enumerate(dataset.records) if r['is_crowd'].any()]
    gt = max((bd.annotated(dataset, i) for i in crowds), key=lambda g: g.masks[g.crowd].sum())
    drawn = bd.draw_ground_truth(gt, [''] * len(dataset.category_names))   # no label text
    crowd = _interior(gt.masks[gt.crowd][0], pixels=1)
    hatch = bd._hatch(*crowd.shape)
    grey = (drawn == np.array(bd.CROWD_GREY, np.uint8)).all(axis=2)
    assert grey[crowd & hatch].mean() > 0.8                 # labels may cover a part
    assert (drawn[crowd & ~hatch] == gt.image[crowd & ~hatch]).all(axis=1).mean() > 0.8


def test_eval_split_rasterises_the_resized_polygons(data_dir, tmp_path):
    cfg = merge_overrides(load_config(QUICKSTART), [
        f'EvalDataset.dataset_dir={data_dir}',
        'EvalReader.sample_transforms=[{Decode: {}}, {Resize: {target_size: [128, 128]}}, '
        '{NormalizeImage: {}}, {Permute: {}}]'])
    paths = bd.browse(cfg, 'eval', str(tmp_path), num=1)
    assert _read_rgb(paths[1]).shape == (128, 128, 3)
    cfg = bd._browse_config(cfg, 'eval')
    dataset = build_dataset(cfg, 'eval', validate_images=False)
    fed = bd.transformed(build_loader(cfg, 'eval', dataset, num_workers=0), 0)
    original = bd.annotated(dataset, 0)
    assert len(fed.masks) == len(original.masks) > 0
    scale = 128 / original.image.shape[0]          # square images, resized to 128 x 128
    assert fed.masks.sum(axis=(1, 2)) == pytest.approx(
        original.masks.sum(axis=(1, 2)) * scale ** 2, rel=0.2)
