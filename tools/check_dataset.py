"""Check a dataset the way training reads it: every problem, then a summary.

    python tools/check_dataset.py -c configs/quickstart.yml [--split train|eval|all] [--decode]

Problems (missing, empty, truncated or corrupt images; declared sizes that differ from the
file; unknown ids; malformed polygons or RLE; NaN or negative boxes) are printed one per line
with the file and the annotation id.  The summary gives the number of images, instances per
class, a histogram of instance sizes (sqrt of the box area after the reader's resize) against
the SOLOv2 head's scale ranges, and how many instances each grid level will get.  The exit
status is non-zero when a problem was found.
"""
import math
import os
import sys
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from ppdet.core.errors import ConfigError, DataError  # noqa: E402
from ppdet.core.workspace import REGISTRY  # noqa: E402
from ppdet.data import check_images  # noqa: E402
from ppdet.data.imageio import decode_image, read_image_bytes  # noqa: E402
from ppdet.data.transforms import parse_entry  # noqa: E402
from ppdet.modeling.grids import config_grids  # noqa: E402
from ppdet.utils.cli import ArgsParser, load_cli_config, run_main  # noqa: E402

SPLITS = {'train': ('TrainDataset', 'TrainReader'), 'eval': ('EvalDataset', 'EvalReader')}
ALL_FIELDS = ['image', 'gt_bbox', 'gt_class', 'gt_poly', 'is_crowd']


def open_dataset(cfg, key):
    """The split's dataset with every field and crowd regions, problems collected."""
    section = dict(cfg.get(key) or {})
    name = section.pop('name', None)
    if name not in REGISTRY:
        raise ConfigError(f'{cfg.source_of(key) or "config"}: `{key}.name` must name a dataset')
    section.update(data_fields=ALL_FIELDS, load_crowd=True)
    return REGISTRY[name](**section)


def decode_problems(dataset):
    """Full decode of every image: catches corrupt pixel data the header check cannot see."""
    problems = []
    for record in dataset.records:
        path = record['im_file']
        try:
            image = decode_image(read_image_bytes(path), path)
        except DataError as err:
            problems.append(err)
            continue
        if image.shape[:2] != (int(record['h']), int(record['w'])):
            problems.append(DataError(f'{path}: decoded image is {image.shape[0]}x'
                                      f'{image.shape[1]} but the annotation file declares '
                                      f'{int(record["h"])}x{int(record["w"])}'))
    return problems


def resize_target(cfg, reader):
    """The reader's Resize / RandomResize target (the largest size of a random choice)."""
    for entry in (cfg.get(reader) or {}).get('sample_transforms') or []:
        name, args = parse_entry(entry, reader)
        if name == 'Resize':
            return args.get('target_size', [800, 1333]), args.get('keep_ratio', True)
        if name == 'RandomResize':
            sizes = args['target_size']
            return max(sizes, key=lambda s: min(s)), args.get('keep_ratio', True)
    return None, True


def instance_scales(dataset, target, keep_ratio):
    """sqrt(box area) of every non-crowd instance in the resized frame, and its class id."""
    scales, classes = [], []
    for record in dataset.records:
        keep = record['is_crowd'][:, 0] == 0
        boxes = record['gt_bbox'][keep]
        sy = sx = 1.0
        if target is not None:
            h, w = record['h'], record['w']
            if keep_ratio:
                s = min(min(target) / min(h, w), max(target) / max(h, w))
                sy, sx = int(s * h + 0.5) / h, int(s * w + 0.5) / w
            else:
                sy, sx = target[0] / h, target[1] / w
        scales.append(np.sqrt((boxes[:, 2] - boxes[:, 0]) * sx * (boxes[:, 3] - boxes[:, 1]) * sy))
        classes.append(record['gt_class'][keep, 0])
    return np.concatenate(scales or [np.zeros(0)]), np.concatenate(classes or [np.zeros(0, int)])


def summary_lines(dataset, scales, classes, grids, frame):
    names = dataset.category_names
    crowd = sum(int(r['is_crowd'].sum()) for r in dataset.records)
    lines = [f'images: {len(dataset.records)}   instances: {len(scales)}   crowd regions: {crowd}',
             'instances per class:']
    counts = Counter(int(c) for c in classes)
    width = max([len(n) for n in names] + [5])
    lines += [f'  {n:<{width}} {counts.get(i, 0):>7}' for i, n in enumerate(names)]
    if grids is None:
        return lines
    ranges = grids.scale_ranges
    edges = sorted({float(v) for r in ranges for v in r})
    lines.append(f'instance size (sqrt of the box area, {frame}):')
    bins = [(-math.inf, edges[0])] + list(zip(edges[:-1], edges[1:])) + [(edges[-1], math.inf)]
    for lo, hi in bins:
        n = int(((scales >= lo) & (scales < hi)).sum())
        lines.append(f'  [{lo:>6g}, {hi:<6g})  {n:>7}  {"#" * min(60, n * 60 // max(1, len(scales)))}')
    lines.append('instances per grid level (ranges are inclusive and overlap):')
    for level, ((lo, hi), grid) in enumerate(zip(ranges, grids.num_grids)):
        n = int(((scales >= lo) & (scales <= hi)).sum())
        lines.append(f'  level {level}  grid {grid}x{grid}  range [{lo}, {hi}]  {n:>7}')
    outside = int(((scales < ranges[0][0]) | (scales > ranges[-1][1])).sum())
    if outside:
        lines.append(f'  outside every range (never a positive): {outside}')
    return lines


def check_split(cfg, split, decode):
    key, reader = SPLITS[split]
    dataset = open_dataset(cfg, key)
    problems = list(dataset.problems) + check_images(dataset)
    if decode:
        problems += decode_problems(dataset)
    target, keep_ratio = resize_target(cfg, reader)
    scales, classes = instance_scales(dataset, target, keep_ratio)
    frame = f'after Resize to {target}' if target else 'original pixels'
    found = config_grids(cfg)
    return problems, summary_lines(dataset, scales, classes, found and found[0], frame)


def main(argv):
    parser = ArgsParser(description=__doc__)
    parser.add_argument('--split', choices=['train', 'eval', 'all'], default='all')
    parser.add_argument('--decode', action='store_true',
                        help='also decode every image fully (slower)')
    args = parser.parse_args(argv)
    cfg = load_cli_config(args)
    total = 0
    for split in (['train', 'eval'] if args.split == 'all' else [args.split]):
        problems, lines = check_split(cfg, split, args.decode)
        print(f'== {split} ({SPLITS[split][0]})')
        for problem in problems:
            print(f'problem: {problem}')
        print('\n'.join(lines))
        total += len(problems)
    if total:
        raise DataError(f'{args.config}: {total} problem(s) found (listed above)')
    print('no problem found')


if __name__ == '__main__':
    run_main(main)
