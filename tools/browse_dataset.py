"""Draw the ground truth over the images: as annotated, and as the model is fed it.

    python tools/browse_dataset.py -c configs/quickstart.yml --split train --num 8

For each of the first ``--num`` images of the split, two PNGs go to ``--output_dir``:

* ``<name>.annotated.png``: the original image with the annotation file's masks, boxes and
  class names;
* ``<name>.transformed.png``: the same sample after the reader's sample transforms of that
  split (flips, resizes, crops, colour distortion), exactly as epoch 0 of a run draws them;
  normalisation and the channel permutation are undone for display, batch padding is left out.

Instances are coloured by class. Crowd regions (``iscrowd``) are drawn as grey hatching with a
grey outline and a ``crowd:`` label; they are shown even where the config does not load them
for training (``load_crowd: false``, the default).
"""
import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from ppdet.core.errors import ConfigError  # noqa: E402
from ppdet.core.workspace import REGISTRY, get_schema  # noqa: E402
from ppdet.data import build_dataset, build_loader  # noqa: E402
from ppdet.data.transforms.operators import (Decode, NormalizeImage, Permute,  # noqa: E402
                                             segm_to_mask)
from ppdet.utils.cli import ArgsParser, load_cli_config, run_main  # noqa: E402
from ppdet.utils.visualizer import colormap, frame_and_label  # noqa: E402

__all__ = ['GroundTruth', 'annotated', 'transformed', 'draw_ground_truth', 'class_colours',
           'browse']

SPLITS = {'train': 'TrainDataset', 'eval': 'EvalDataset'}
ALL_FIELDS = ['image', 'gt_bbox', 'gt_class', 'gt_poly', 'is_crowd']
MASK_ALPHA = 0.5
CROWD_GREY = (160., 160., 160.)
HATCH_PERIOD = 6


@dataclasses.dataclass
class GroundTruth:
    """One image and its instances, ready to draw."""
    image: np.ndarray      # [h, w, 3] uint8 RGB
    masks: np.ndarray      # [N, h, w] bool
    boxes: np.ndarray      # [N, 4] float32 x1 y1 x2 y2
    classes: np.ndarray    # [N] int, contiguous class ids
    crowd: np.ndarray      # [N] bool


def class_colours(num_classes):
    """One RGB colour per class, the inference drawings' palette."""
    return colormap(num_classes).astype(np.float32)


def _masks(sample, h, w):
    if 'gt_segm' in sample:
        return sample['gt_segm'].astype(bool)
    return np.array([segm_to_mask(segm, h, w) for segm in sample['gt_poly']],
                    bool).reshape(-1, h, w)


def _ground_truth(sample, image):
    h, w = image.shape[:2]
    return GroundTruth(image=image, masks=_masks(sample, h, w),
                       boxes=np.asarray(sample['gt_bbox'], np.float32).reshape(-1, 4),
                       classes=np.asarray(sample['gt_class']).reshape(-1).astype(int),
                       crowd=np.asarray(sample['is_crowd']).reshape(-1).astype(bool))


def annotated(dataset, index):
    """The image file and its annotations as written, at the original size."""
    sample = Decode()(dataset[index])
    return _ground_truth(sample, sample['image'])


def _display_image(image, ops):
    """Undo ``Permute`` and ``NormalizeImage`` (in reverse order) -> HWC uint8 RGB."""
    image = np.asarray(image, np.float32)
    for op in reversed(ops):
        if isinstance(op, Permute):
            image = image.transpose(1, 2, 0)
        elif isinstance(op, NormalizeImage):
            if op.norm_type == 'mean_std':
                image = image * np.asarray(op.std) + np.asarray(op.mean)
            if op.is_scale:
                image = image * 255.
    return np.ascontiguousarray(np.clip(np.round(image), 0, 255).astype(np.uint8))


def transformed(loader, index, epoch=0):
    """Sample ``index`` after the reader's sample transforms, as epoch ``epoch`` draws it."""
    sample = loader.samples.transform(epoch, index)
    return _ground_truth(sample, _display_image(sample['image'], loader.samples.ops))


def _hatch(h, w):
    y, x = np.mgrid[:h, :w]
    return (x + y) % HATCH_PERIOD < 2


def _outline(canvas, mask, colour):
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(canvas, contours, -1, colour, 1)


def draw_ground_truth(gt, names):
    """``gt.image`` with masks blended in their class colour, crowd regions hatched grey,
    then outlines, boxes and class names on top (RGB uint8)."""
    canvas = gt.image.astype(np.float32)
    colours = class_colours(len(names))
    hatch = _hatch(*canvas.shape[:2]) if gt.crowd.any() else None
    for mask, cls, crowd in zip(gt.masks, gt.classes, gt.crowd):
        if crowd:
            canvas[mask & hatch] = CROWD_GREY
        else:
            canvas[mask] = (1 - MASK_ALPHA) * canvas[mask] + MASK_ALPHA * colours[cls]
    for mask, box, cls, crowd in zip(gt.masks, gt.boxes, gt.classes, gt.crowd):
        colour = CROWD_GREY if crowd else tuple(float(c) for c in colours[cls])
        _outline(canvas, mask, colour)
        frame_and_label(canvas, box, colour, f'crowd:{names[cls]}' if crowd else names[cls])
    return np.clip(canvas, 0, 255).astype(np.uint8)


def _browse_config(cfg, split):
    """``cfg`` with the split's dataset loading every annotation field and crowd regions."""
    key = SPLITS[split]
    section = cfg.get(key) or {}
    schema = get_schema(REGISTRY[section['name']]) if section.get('name') in REGISTRY else None
    if schema is None or 'data_fields' not in schema.defaults:
        raise ConfigError(f'{cfg.source_of(key) or "config"}: {key} ({section.get("name")}) '
                          f'holds no annotations to browse')
    overlay = {'data_fields': ALL_FIELDS}
    if 'load_crowd' in schema.defaults:
        overlay['load_crowd'] = True
    return cfg.with_section(key, overlay)


def _write(path, image):
    if not cv2.imwrite(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise ConfigError(f'{path}: cannot write the image (check --output_dir)')


def browse(cfg, split, output_dir, num):
    """Write the two views of the split's first ``num`` images; returns the written paths."""
    cfg = _browse_config(cfg, split)
    dataset = build_dataset(cfg, split, validate_images=False)
    loader = build_loader(cfg, split, dataset, num_workers=0)
    names = dataset.category_names
    os.makedirs(output_dir, exist_ok=True)
    paths = []
    for index in range(min(num, len(dataset))):
        stem = os.path.splitext(os.path.basename(dataset[index]['im_file']))[0]
        for view, gt in (('annotated', annotated(dataset, index)),
                         ('transformed', transformed(loader, index))):
            path = os.path.join(output_dir, f'{stem}.{view}.png')
            _write(path, draw_ground_truth(gt, names))
            paths.append(path)
    return paths


def main(argv):
    parser = ArgsParser(description=__doc__)
    parser.add_argument('--split', choices=sorted(SPLITS), default='train')
    parser.add_argument('--output_dir', default=None,
                        help='default: output/browse/<config name>/<split>')
    parser.add_argument('--num', type=int, default=10, help='how many images (from the first)')
    args = parser.parse_args(argv)
    cfg = load_cli_config(args)
    output_dir = args.output_dir or os.path.join('output', 'browse', cfg['filename'], args.split)
    paths = browse(cfg, args.split, output_dir, args.num)
    print(f'wrote {len(paths)} images ({len(paths) // 2} samples, annotated and transformed) '
          f'to {output_dir}')


if __name__ == '__main__':
    run_main(main)
