"""SOLOv2 targets on real images: the reference fixture bit for bit, and a loop transcription."""
import json
import os
import zlib

import numpy as np
import pytest

from fixtures.reference_targets import reference_targets
from conftest import PARITY, SHARED_DATA, needs_shared
from fixtures.parity import unpack
from ppdet.data import COCODataSet, TrainReader
from ppdet.data.transforms import build_transforms

pytestmark = needs_shared

FIELDS = ['image', 'gt_bbox', 'gt_class', 'gt_poly', 'is_crowd']


def assert_same(mine, ref):
    assert mine.dtype == ref.dtype and mine.shape == ref.shape
    assert np.array_equal(mine, ref)


@pytest.fixture(scope='module')
def fixture_batches():
    meta = json.load(open(os.path.join(PARITY, 'fixture_meta.json')))['targets']
    dataset = COCODataSet(os.path.join(SHARED_DATA, 'labelme_voc3'), 'images',
                          'annotations.json', data_fields=FIELDS)
    assert [os.path.basename(r['im_file']) for r in dataset.records] == meta['record_order']
    reader = TrainReader(meta['train_sample_transforms'], meta['train_batch_transforms'],
                         batch_size=2, shuffle=False, drop_last=False)
    batches = [{k: ([t.numpy() for t in v] if isinstance(v, list) else v.numpy())
                for k, v in batch.items()} for batch in reader.loader(dataset)]
    return np.load(os.path.join(PARITY, 'targets_labelme_voc3.npz')), batches


def test_reader_reproduces_reference_targets_exactly(fixture_batches):
    ref, batches = fixture_batches
    assert len(batches) == int(ref['n_batches']) == 2
    for j, batch in enumerate(batches):
        p = f'b{j}__'
        assert_same(batch['fg_num'], ref[p + 'fg_num'])
        for level in range(5):
            assert_same(batch['cate_label'][level], ref[f'{p}cate_label{level}'])
            assert_same(batch['grid_order'][level], ref[f'{p}grid_order{level}'])
            assert_same(batch['ins_label'][level],
                        unpack(ref[f'{p}ins_label{level}_bits'], ref[f'{p}ins_label{level}_shape']))


def test_reader_reproduces_reference_images_exactly(fixture_batches):
    ref, batches = fixture_batches
    for j, batch in enumerate(batches):
        p = f'b{j}__'
        assert list(batch['image'].shape) == list(ref[p + 'image_shape'])
        assert [zlib.crc32(im.tobytes()) for im in batch['image']] == list(ref[p + 'image_crc32'])
        assert_same(batch['im_shape'], ref[p + 'im_shape'])
        assert_same(batch['scale_factor'], ref[p + 'scale_factor'])
        assert list(batch['im_id'].reshape(-1)) == list(ref[p + 'im_id'])


def test_target_inputs_match_reference(fixture_batches):
    """Boxes and masks right before the target op (Decode, Poly2Mask, Resize, PadBatch)."""
    ref, _ = fixture_batches
    meta = json.load(open(os.path.join(PARITY, 'fixture_meta.json')))['targets']
    dataset = COCODataSet(os.path.join(SHARED_DATA, 'labelme_voc3'), 'images',
                          'annotations.json', data_fields=FIELDS)
    ops = build_transforms(meta['train_sample_transforms'], 'fixture')
    pad, = build_transforms(meta['train_batch_transforms'][:1], 'fixture')
    for j, indices in enumerate(meta['batches_of_records']):
        samples = []
        for i in indices:
            sample = dataset[i]
            for op in ops:
                sample = op(sample, None)
            samples.append(sample)
        for s, sample in enumerate(pad(samples)):
            assert_same(sample['gt_bbox'], ref[f'b{j}__gt_bbox_{s}'])
            assert_same(sample['gt_class'], ref[f'b{j}__gt_class_{s}'])
            assert_same(sample['gt_segm'], unpack(ref[f'b{j}__gt_segm_{s}_bits'],
                                                  ref[f'b{j}__gt_segm_{s}_shape']))


@pytest.mark.parametrize('grids, ranges, size', [
    ([40, 36, 24, 16, 12], [[1, 96], [48, 192], [96, 384], [192, 768], [384, 2048]], [512, 852]),
    ([24, 16, 12, 8, 6], [[1, 32], [16, 64], [32, 128], [64, 256], [128, 512]], [256, 256]),
])
def test_targets_equal_loop_transcription_on_coco_person(grids, ranges, size):
    """Independent check on other real annotations: 30 COCO images, batches of 3."""
    root = os.path.join(SHARED_DATA, 'coco_person60')
    dataset = COCODataSet(root, 'images/train2017', 'annotations/person_keypoints_train2017.json',
                          data_fields=FIELDS)
    sample_ops = build_transforms([{'Decode': {}}, {'Poly2Mask': {}},
                                   {'Resize': {'target_size': size, 'interp': 1}},
                                   {'Permute': {}}], 'test')
    pad, target = build_transforms([{'PadBatch': {'pad_to_stride': 32}},
                                    {'Gt2Solov2Target': {'num_grids': grids,
                                                         'scale_ranges': ranges}}], 'test')
    compared = 0
    for start in range(0, len(dataset), 3):
        samples = []
        for i in range(start, min(start + 3, len(dataset))):
            sample = dataset[i]
            for op in sample_ops:
                sample = op(sample, None)
            samples.append(sample)
        padded = pad(samples)
        for mine, theirs in zip(target(padded), reference_targets(padded, grids, ranges)):
            assert mine['fg_num'] == theirs['fg_num']
            for key in ('cate_label', 'ins_label', 'grid_order'):
                for level, (a, b) in enumerate(zip(mine[key], theirs[key])):
                    assert_same(a, b)
            compared += 1
    assert compared == len(dataset) == 19
