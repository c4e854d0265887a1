"""Convert a labelme folder (one JSON per image, polygons) to COCO instances with a split.

    python tools/x2coco.py --labelme_dir my_labels/ --output_dir dataset/mine --val_ratio 0.2

Writes ``<output_dir>/{train,val}/`` (the images, copied) and
``<output_dir>/annotations/instances_{train,val}.json``.  Shapes: ``polygon``, ``rectangle``
and ``circle`` (as a 32-point polygon); shapes sharing a ``group_id`` and label form one
instance with several parts; other shape types are skipped with a note.  Categories are the
sorted label names (or ``--labels``, one per line, in that order), with ids from 1.  The split
is a seeded shuffle, so the same folder always gives the same split.
"""
import base64
import glob
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from pycocotools import mask as mask_util  # noqa: E402

from ppdet.core.errors import DataError  # noqa: E402
from ppdet.data.imageio import image_size  # noqa: E402
from ppdet.utils.cli import run_main  # noqa: E402

CIRCLE_POINTS = 32


def shape_polygon(shape, where):
    """A labelme shape -> flat polygon [x1, y1, x2, y2, ...], or None for unsupported types."""
    points = np.asarray(shape.get('points', []), np.float64)
    kind = shape.get('shape_type') or 'polygon'
    if points.ndim != 2 or points.shape[1:] != (2,) or not np.isfinite(points).all():
        raise DataError(f'{where}: `points` must be a list of [x, y] pairs')
    if kind == 'rectangle' and len(points) == 2:
        (x1, y1), (x2, y2) = points
        points = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]])
    elif kind == 'circle' and len(points) == 2:
        centre, edge = points
        radius = np.linalg.norm(edge - centre)
        t = np.linspace(0, 2 * np.pi, CIRCLE_POINTS, endpoint=False)
        points = centre + radius * np.stack([np.cos(t), np.sin(t)], 1)
    elif kind != 'polygon':
        return None
    if len(points) < 3:
        raise DataError(f'{where}: a polygon needs at least 3 points, got {len(points)}')
    return points.reshape(-1).round(2).tolist()


def read_labelme(path, image_dir_out):
    """One labelme file -> (image path, height, width, [(label, [polygons])])."""
    try:
        with open(path, encoding='utf-8') as f:
            doc = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f'{path}: not a valid labelme JSON file ({e})') from None
    if not isinstance(doc, dict) or 'shapes' not in doc or 'imagePath' not in doc:
        raise DataError(f'{path}: not a labelme file (needs `shapes` and `imagePath`)')
    image = os.path.normpath(os.path.join(os.path.dirname(path), doc['imagePath']))
    if not os.path.isfile(image):
        if not doc.get('imageData'):
            raise DataError(f'{path}: image {doc["imagePath"]} not found and no imageData')
        image = os.path.join(image_dir_out, os.path.basename(doc['imagePath']))
        with open(image, 'wb') as f:
            f.write(base64.b64decode(doc['imageData']))
    h, w = image_size(image)
    if (doc.get('imageHeight'), doc.get('imageWidth')) not in ((h, w), (None, None)):
        raise DataError(f'{path}: imageHeight/imageWidth {doc.get("imageHeight")}x'
                        f'{doc.get("imageWidth")} differ from the image file ({h}x{w})')
    instances, groups = [], {}
    for k, shape in enumerate(doc['shapes']):
        polygon = shape_polygon(shape, f'{path}: shape {k}')
        if polygon is None:
            print(f'note: {path}: shape {k} ({shape.get("shape_type")}) skipped')
            continue
        group = shape.get('group_id')
        key = (shape['label'], group)
        if group is not None and key in groups:
            groups[key][1].append(polygon)
            continue
        instances.append((shape['label'], [polygon]))
        if group is not None:
            groups[key] = instances[-1]
    return image, h, w, instances


def to_coco(items, categories, split_dir):
    images, annotations = [], []
    catid = {name: i + 1 for i, name in enumerate(categories)}
    for image_id, (image, h, w, instances) in enumerate(items, start=1):
        name = os.path.basename(image)
        shutil.copy(image, os.path.join(split_dir, name))
        images.append({'id': image_id, 'file_name': name, 'height': h, 'width': w})
        for label, polygons in instances:
            rle = mask_util.merge(mask_util.frPyObjects(polygons, h, w))
            annotations.append({'id': len(annotations) + 1, 'image_id': image_id,
                                'category_id': catid[label], 'segmentation': polygons,
                                'area': float(mask_util.area(rle)),
                                'bbox': [round(float(v), 2) for v in mask_util.toBbox(rle)],
                                'iscrowd': 0})
    return {'images': images, 'annotations': annotations,
            'categories': [{'id': catid[n], 'name': n} for n in categories]}


def split_items(items, val_ratio, seed):
    order = np.random.default_rng(seed).permutation(len(items))
    n_val = int(round(len(items) * val_ratio))
    if val_ratio > 0 and len(items) > 1:
        n_val = min(max(n_val, 1), len(items) - 1)
    val = sorted(order[:n_val])
    train = sorted(order[n_val:])
    return [items[i] for i in train], [items[i] for i in val]


def convert(labelme_dir, output_dir, val_ratio=0.2, seed=0, labels=None):
    files = sorted(glob.glob(os.path.join(labelme_dir, '*.json')))
    if not files:
        raise DataError(f'{labelme_dir}: no labelme .json file found')
    if os.path.exists(output_dir):
        raise DataError(f'{output_dir}: already exists; choose a new output folder')
    staging = os.path.join(output_dir, 'staging')
    for sub in ('train', 'val', 'annotations', 'staging'):
        os.makedirs(os.path.join(output_dir, sub))
    items = [read_labelme(path, staging) for path in files]
    found = sorted({label for *_, instances in items for label, _ in instances})
    categories = labels or found
    unknown = sorted(set(found) - set(categories))
    if unknown:
        raise DataError(f'{labelme_dir}: labels {unknown} are not in the --labels list')
    counts = {}
    for split, part in zip(('train', 'val'), split_items(items, val_ratio, seed)):
        coco = to_coco(part, categories, os.path.join(output_dir, split))
        with open(os.path.join(output_dir, 'annotations', f'instances_{split}.json'), 'w') as f:
            json.dump(coco, f)
        counts[split] = (len(coco['images']), len(coco['annotations']))
    shutil.rmtree(staging)
    return counts, categories


def main(argv):
    import argparse
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--labelme_dir', required=True, help='folder of labelme .json files')
    parser.add_argument('--output_dir', required=True, help='new dataset folder')
    parser.add_argument('--val_ratio', type=float, default=0.2)
    parser.add_argument('--seed', type=int, default=0, help='seed of the train/val split')
    parser.add_argument('--labels', default=None, help='text file: one class name per line')
    parser.add_argument('--debug', action='store_true', help='show tracebacks')
    args = parser.parse_args(argv)
    labels = None
    if args.labels:
        with open(args.labels, encoding='utf-8') as f:
            labels = [line.strip() for line in f if line.strip()]
    counts, categories = convert(args.labelme_dir, args.output_dir, args.val_ratio, args.seed,
                                 labels)
    for split, (n_images, n_instances) in counts.items():
        print(f'{split}: {n_images} images, {n_instances} instances')
    print(f'{len(categories)} categories: {", ".join(categories)}')


if __name__ == '__main__':
    run_main(main)
