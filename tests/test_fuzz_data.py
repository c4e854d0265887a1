"""Fuzzing the data side: annotations, image files and transforms.

Whatever a dataset holds, loading and transforming it either works or raises a PPDetError;
masks always have the image's size and hold only 0 and 1, and the SOLOv2 targets stay inside
their grids.
"""
import io
import json
import os

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from pycocotools import mask as mask_util

from ppdet.core.errors import PPDetError
from ppdet.data.imageio import check_image_file, decode_image, read_image_bytes
from ppdet.data.source.coco import COCODataSet
from ppdet.data.transforms.batch_operators import PadBatch
from ppdet.data.transforms.operators import (Decode, NormalizeImage, Permute, Poly2Mask,
                                             RandomCrop, RandomFlip, RandomResize, Resize)
from ppdet.data.transforms.solov2_target import Gt2Solov2Target

IMAGES = {'a.png': (24, 32), 'b.jpg': (20, 20)}  # file -> (h, w)


@pytest.fixture(scope='module')
def dataset_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp('fuzz_coco')
    (folder / 'images').mkdir()
    rng = np.random.default_rng(0)
    for name, (h, w) in IMAGES.items():
        ok, data = cv2.imencode(os.path.splitext(name)[1],
                                rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        (folder / 'images' / name).write_bytes(data.tobytes())
    (folder / 'images' / 'empty.png').write_bytes(b'')
    return folder


def check_sample(sample, chw):
    """The invariants every transformed sample keeps."""
    image = sample['image']
    h, w = image.shape[1:] if chw else image.shape[:2]
    n = len(sample['gt_class'])
    assert sample['gt_bbox'].shape == (n, 4) and np.isfinite(sample['gt_bbox']).all()
    if 'gt_segm' in sample:
        masks = sample['gt_segm']
        assert masks.shape == (n, h, w) and masks.dtype == np.uint8
        assert set(np.unique(masks)) <= {0, 1}
    if 'gt_poly' in sample:
        assert len(sample['gt_poly']) == n


def run_ops(sample, ops, rng):
    try:
        chw = False
        for op in ops:
            sample = op(sample, rng)
            chw = chw or isinstance(op, Permute)
            check_sample(sample, chw)
    except PPDetError as err:
        assert str(err).strip() and '\n' not in str(err).strip(), str(err)
        return None
    return sample


# -- COCO annotation files -------------------------------------------------------------------

junk = (st.none() | st.booleans() | st.text(max_size=3) | st.floats(allow_nan=True)
        | st.lists(st.integers(0, 3), max_size=2) | st.dictionaries(st.text(max_size=2),
                                                                    st.integers(), max_size=1))
number = st.integers(-40, 60) | st.floats(-40, 60)
ids = st.integers(-1, 4) | st.sampled_from([0, 1.0, True])  # other ids: see KNOWN_FAILURES
coordinates = st.lists(number, min_size=6, max_size=14)
polygon = coordinates | st.lists(number | junk, max_size=8)

def compressed_counts(h, w, fill):
    return mask_util.encode(np.asfortranarray(np.full((h, w), fill, np.uint8)))['counts'].decode()


# Run lengths and compressed counts, valid or not.
rle_counts = (st.lists(st.integers(-2, 800), max_size=8)
              | st.sampled_from([[768], [0, 768], [400, 368], compressed_counts(24, 32, 1),
                                 compressed_counts(24, 32, 0), compressed_counts(99, 99, 1)]))
rle = st.fixed_dictionaries({'size': st.sampled_from([[24, 32], [20, 20], [1, 1], [24]]) | junk,
                             'counts': rle_counts}) | st.dictionaries(st.text(max_size=5), junk)
segmentation = st.lists(polygon, max_size=3) | rle | junk
bbox = st.lists(number, min_size=4, max_size=4) | st.lists(number | junk, max_size=5) | junk
annotation = st.fixed_dictionaries(
    {'id': ids, 'image_id': ids, 'category_id': ids},
    optional={'bbox': bbox, 'segmentation': segmentation, 'iscrowd': st.sampled_from([0, 1]) | junk,
              'area': number | junk, 'ignore': st.booleans()}) | junk
image_entry = st.fixed_dictionaries(
    {'id': ids, 'file_name': st.sampled_from(list(IMAGES) + ['missing.png', 'empty.png', '']),
     'height': st.sampled_from([24, 20, 0, -3]) | junk,
     'width': st.sampled_from([32, 20, 0]) | junk}) | junk
coco = st.fixed_dictionaries(
    {'images': st.lists(image_entry, max_size=3),
     'categories': st.lists(st.fixed_dictionaries({'id': ids}, optional={'name': junk}),
                            max_size=3)},
    optional={'annotations': st.lists(annotation, max_size=5)}) | junk


def valid_annotations():
    """A file where most things are right, for mutations to break one thing at a time."""
    return st.builds(
        lambda anns, cat_ids: {
            'images': [{'id': 1, 'file_name': 'a.png', 'height': 24, 'width': 32},
                       {'id': 2, 'file_name': 'b.jpg', 'height': 20, 'width': 20}],
            'categories': [{'id': c, 'name': str(c)} for c in cat_ids],
            'annotations': [dict(a, id=k + 1) for k, a in enumerate(anns)]},
        st.lists(st.fixed_dictionaries({
            'image_id': st.sampled_from([1, 2]), 'category_id': st.sampled_from([1, 2, 7]),
            'bbox': st.lists(number, min_size=4, max_size=4),
            'segmentation': st.lists(coordinates, min_size=1, max_size=2) | st.fixed_dictionaries(
                {'size': st.just([24, 32]), 'counts': rle_counts}),
            'iscrowd': st.sampled_from([0, 0, 1])}), min_size=1, max_size=4),
        st.lists(st.sampled_from([1, 2, 3]), min_size=1, max_size=3, unique=True))


PIPELINE = [Decode(), Poly2Mask(), RandomFlip(prob=0.5), Resize([16, 24], keep_ratio=True),
            RandomCrop(num_attempts=5), NormalizeImage(), Permute()]


@given(data=coco | valid_annotations())
def test_coco_annotations_then_transforms(dataset_dir, data):
    (dataset_dir / 'ann.json').write_text(json.dumps(data))
    try:
        dataset = COCODataSet(dataset_dir=str(dataset_dir), image_dir='images',
                              anno_path='ann.json',
                              data_fields=['image', 'gt_bbox', 'gt_class', 'gt_poly', 'is_crowd'])
    except PPDetError as err:
        assert str(err).strip() and '\n' not in str(err).strip(), str(err)
        return
    assert all(isinstance(problem, PPDetError) for problem in dataset.problems)
    for index in range(len(dataset)):
        run_ops(dataset[index], PIPELINE, np.random.default_rng(index))


# Ids that are not integers.
BAD_IDS = [
    {'images': [], 'categories': [], 'annotations': [{'id': [], 'image_id': 0,
                                                      'category_id': None}]},
    {'images': [], 'categories': [], 'annotations': [{'id': 1, 'image_id': [],
                                                      'category_id': None}]},
    {'images': [{'id': '', 'file_name': 'a.png', 'height': 24, 'width': 32}], 'categories': []},
    {'images': [{'id': None, 'file_name': 'a.png', 'height': 24, 'width': 32}],
     'categories': []},
    {'images': [{'id': [], 'file_name': 'a.png', 'height': 24, 'width': 32}], 'categories': []},
    {'images': [], 'categories': [{'id': []}]},
]


@pytest.mark.parametrize('data', BAD_IDS)
def test_ids_that_are_not_integers_are_refused(dataset_dir, data):
    (dataset_dir / 'ann.json').write_text(json.dumps(data))
    with pytest.raises(PPDetError):
        COCODataSet(dataset_dir=str(dataset_dir), image_dir='images', anno_path='ann.json')


@pytest.mark.parametrize('counts', ['', compressed_counts(1, 2, 0)])
def test_short_compressed_rle_is_refused(dataset_dir, counts):
    data = {'images': [{'id': 1, 'file_name': 'a.png', 'height': 24, 'width': 32}],
            'categories': [{'id': 1}],
            'annotations': [{'id': 1, 'image_id': 1, 'category_id': 1, 'bbox': [0, 0, 4, 4],
                             'segmentation': {'size': [24, 32], 'counts': counts}}]}
    (dataset_dir / 'ann.json').write_text(json.dumps(data))
    dataset = COCODataSet(dataset_dir=str(dataset_dir), image_dir='images',
                          anno_path='ann.json', data_fields=['image', 'gt_poly'])
    assert len(dataset) == 0
    assert [str(p) for p in dataset.problems] == [
        f'{dataset.anno_path}: annotation 1 (image a.png): '
        + ('RLE counts cover 2 pixels, the image has 768' if counts
           else 'RLE counts cover 0 pixels, the image has 768')]


# -- image files -----------------------------------------------------------------------------

MODES = ['RGB', 'L', 'RGBA', 'LA', 'P', '1', 'I;16', 'I', 'F', 'CMYK']
FORMATS = ['PNG', 'JPEG', 'BMP', 'TIFF', 'WEBP', 'GIF']


def encode(mode, fmt, h, w, orientation):
    image = Image.fromarray(np.random.default_rng(h * w).integers(0, 256, (h, w, 3),
                                                                   dtype=np.uint8)).convert(mode)
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = orientation
    try:
        image.save(buffer, fmt, exif=exif.tobytes())
    except (OSError, ValueError, KeyError):
        return None  # a mode this format cannot hold
    return buffer.getvalue()


@given(mode=st.sampled_from(MODES), fmt=st.sampled_from(FORMATS), h=st.integers(1, 40),
       w=st.integers(1, 40), orientation=st.integers(0, 9),
       damage=st.sampled_from(['none', 'truncate', 'flip', 'garbage']), where=st.floats(0, 1),
       garbage=st.binary(max_size=64))
def test_image_files(tmp_path_factory, mode, fmt, h, w, orientation, damage, where, garbage):
    data = encode(mode, fmt, h, w, orientation)
    if data is None:
        return
    cut = int(where * len(data))
    if damage == 'truncate':
        data = data[:cut]
    elif damage == 'flip' and data:
        data = data[:cut] + bytes([data[min(cut, len(data) - 1)] ^ 0xFF]) + data[cut + 1:]
    elif damage == 'garbage':
        data = garbage
    path = str(tmp_path_factory.mktemp('img') / f'x.{fmt.lower()}')
    with open(path, 'wb') as f:
        f.write(data)
    decoded = header = None
    try:
        decoded = decode_image(read_image_bytes(path), path)
        assert decoded.dtype == np.uint8 and decoded.ndim == 3 and decoded.shape[2] == 3
    except PPDetError:
        pass
    try:
        header = check_image_file(path)
    except PPDetError:
        pass
    if decoded is not None and header is not None and damage == 'none':
        # the size read from the header (used to validate datasets) is the decoded size
        assert tuple(header) == decoded.shape[:2], (mode, fmt, orientation)


# -- transforms on generated samples -----------------------------------------------------------

@st.composite
def samples(draw):
    h, w = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    n = draw(st.integers(0, 4))
    segms, boxes = [], []
    for _ in range(n):
        if draw(st.booleans()):
            polys = draw(st.lists(st.lists(st.floats(-10, 60), min_size=6, max_size=12).filter(
                lambda p: len(p) % 2 == 0), min_size=1, max_size=2))
            segms.append(polys)
        else:
            mask = draw(st.sampled_from(['empty', 'full', 'random']))
            m = {'empty': np.zeros((h, w), np.uint8), 'full': np.ones((h, w), np.uint8),
                 'random': (np.random.default_rng(n).random((h, w)) > 0.5).astype(np.uint8)}[mask]
            segms.append(mask_util.encode(np.asfortranarray(m)))
        x1, y1 = draw(st.floats(-5, 50)), draw(st.floats(-5, 50))
        boxes.append([x1, y1, x1 + draw(st.floats(0.01, 60)), y1 + draw(st.floats(0.01, 60))])
    image = np.random.default_rng(h).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return {'image': image, 'im_file': 'generated', 'h': float(h), 'w': float(w),
            'im_shape': np.array([h, w], np.float32), 'scale_factor': np.ones(2, np.float32),
            'im_id': np.array([0], np.int64), 'gt_poly': segms,
            'gt_bbox': np.array(boxes, np.float32).reshape(-1, 4),
            'gt_class': np.array(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)),
                                 np.int32).reshape(-1, 1),
            'is_crowd': np.zeros((n, 1), np.int32)}


@given(batch=st.lists(samples(), min_size=1, max_size=2), seed=st.integers(0, 2 ** 16),
       sizes=st.lists(st.integers(8, 64), min_size=2, max_size=2))
def test_transforms_and_targets(batch, seed, sizes):
    rng = np.random.default_rng(seed)
    ops = [Poly2Mask(), RandomFlip(), RandomResize([sizes, sizes[::-1]], keep_ratio=True),
           RandomCrop(num_attempts=5, is_mask_crop=True), NormalizeImage(), Permute()]
    outputs = [run_ops(sample, ops, rng) for sample in batch]
    if any(out is None for out in outputs):
        return
    padded = PadBatch(pad_to_stride=32)(outputs)
    grids = [6, 4]
    targets = Gt2Solov2Target(num_grids=grids, scale_ranges=[[1, 16], [8, 128]])(padded)
    hp, wp = padded[0]['image'].shape[1:]
    for k, target in enumerate(targets):
        for grid, cate, ins, order in zip(grids, target['cate_label'], target['ins_label'],
                                          target['grid_order']):
            assert cate.shape == (grid * grid,) and 0 <= cate.min() and cate.max() <= 4
            assert ins.shape[1:] == (hp // 4, wp // 4) and set(np.unique(ins)) <= {0, 1}
            assert len(order) == len(ins)
            # a cell of this image, or a padding row: cell 0 with an empty mask (as the
            # reference pads; its loss weight is 0)
            own_cell = (order >= k * grid * grid) & (order < (k + 1) * grid * grid)
            padding = (order == 0) & (ins.max(axis=(1, 2), initial=0) == 0)
            assert (own_cell | padding).all()
