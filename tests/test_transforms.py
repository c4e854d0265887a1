"""Sample and batch transforms: geometry consistency, decoding traps, config errors."""
import copy
import textwrap

import numpy as np
import pytest
from PIL import Image

from ppdet.core.errors import ConfigError, DataError
from ppdet.core.workspace import load_config
from ppdet.data.transforms import build_transforms
from ppdet.data.transforms.batch_operators import PadBatch
from ppdet.data.transforms.operators import (Decode, NormalizeImage, Permute, Poly2Mask,
                                             RandomCrop, RandomDistort, RandomFlip, RandomResize,
                                             Resize, segm_to_mask)
from pycocotools import mask as mask_util


def scene(h=60, w=90):
    """An image with a triangle (polygon) and a rectangle (RLE), masks and boxes."""
    rng = np.random.default_rng(0)
    tri = [10., 5., 50., 12., 20., 40.]
    rect = np.zeros((h, w), np.uint8)
    rect[30:55, 60:85] = 1
    rle = mask_util.encode(np.asfortranarray(rect))
    sample = {'image': rng.integers(0, 255, (h, w, 3), dtype=np.uint8),
              'im_shape': np.array([h, w], np.float32),
              'scale_factor': np.ones(2, np.float32),
              'gt_bbox': np.array([[10, 5, 50, 40], [60, 30, 85, 55]], np.float32),
              'gt_class': np.array([[0], [1]], np.int32),
              'is_crowd': np.zeros((2, 1), np.int32),
              'gt_poly': [[tri], rle], 'im_file': 'scene', 'ann_ids': [1, 2]}
    return Poly2Mask()(sample)


def masks_of_polys(sample):
    h, w = sample['image'].shape[:2]
    return np.stack([segm_to_mask(segm, h, w) for segm in sample['gt_poly']])


def test_flip_moves_image_boxes_polygons_and_masks_together():
    sample = scene()
    before = copy.deepcopy(sample)
    flipped = RandomFlip(prob=1.0)(sample, np.random.default_rng(0))
    w = sample['image'].shape[1]
    assert np.array_equal(flipped['image'], sample['image'][:, ::-1])
    assert np.array_equal(flipped['gt_segm'], sample['gt_segm'][:, :, ::-1])
    assert np.allclose(flipped['gt_bbox'][:, [0, 2]], w - sample['gt_bbox'][:, [2, 0]])
    # the RLE flips exactly; the polygon's raster matches the flipped mask up to its edge
    rasters = masks_of_polys(flipped)
    assert np.array_equal(rasters[1], flipped['gt_segm'][1])
    overlap = (rasters[0] & flipped['gt_segm'][0]).sum() / (rasters[0] | flipped['gt_segm'][0]).sum()
    assert overlap > 0.9
    assert set(flipped) == set(sample)                          # no key added
    for key in ('image', 'gt_segm', 'gt_bbox'):                 # input untouched
        assert np.array_equal(sample[key], before[key])
    assert repr(sample['gt_poly']) == repr(before['gt_poly'])


def test_flip_probability_comes_from_the_given_rng():
    sample = scene()
    flips = [RandomFlip(0.5)(sample, np.random.default_rng(s)) is not sample for s in range(40)]
    assert 5 < sum(flips) < 35
    again = [RandomFlip(0.5)(sample, np.random.default_rng(s)) is not sample for s in range(40)]
    assert flips == again


def test_resize_keeps_ratio_and_scales_everything():
    sample = scene(60, 90)
    out = Resize([800, 1333], keep_ratio=True, interp=1)(sample)
    # scale = min(800/60, 1333/90) = 13.33 -> 800 x 1200
    assert out['image'].shape == (800, 1200, 3) and out['image'].dtype == np.float32
    assert list(out['im_shape']) == [800, 1200]
    sy, sx = 800 / 60, 1200 / 90
    assert np.allclose(out['scale_factor'], [sy, sx])
    assert abs(sy / sx - 1) < 2e-3
    assert out['gt_segm'].shape == (2, 800, 1200)
    assert np.allclose(out['gt_bbox'], sample['gt_bbox'] * [sx, sy, sx, sy])
    assert np.allclose(out['gt_poly'][0][0][0::2], np.array(sample['gt_poly'][0][0][0::2]) * sx)
    assert np.allclose(out['gt_poly'][0][0][1::2], np.array(sample['gt_poly'][0][0][1::2]) * sy)
    assert mask_util.decode(out['gt_poly'][1]).shape == (800, 1200)


def test_resize_rounds_sizes_like_the_reference():
    sample = {'image': np.zeros((338, 500, 3), np.uint8)}
    out = Resize([800, 1333], True, 1)(sample)
    assert out['image'].shape[:2] == (800, 1183)
    assert np.array_equal(out['scale_factor'], np.array([800 / 338, 1183 / 500], np.float32))


def test_random_resize_picks_one_of_the_sizes():
    sample = scene(100, 100)
    op = RandomResize([[128, 999], [160, 999]], keep_ratio=True)
    sides = {op(sample, np.random.default_rng(s))['image'].shape[0] for s in range(20)}
    assert sides == {128, 160}


def test_pad_batch_pads_to_a_multiple_of_32_and_keeps_content():
    a, b = scene(60, 90), scene(70, 33)
    samples = [Permute()(NormalizeImage()(s)) for s in (a, b)]
    padded = PadBatch(pad_to_stride=32)(samples)
    for original, out in zip(samples, padded):
        assert out['image'].shape == (3, 96, 96)
        c, h, w = original['image'].shape
        assert np.array_equal(out['image'][:, :h, :w], original['image'])
        assert not out['image'][:, h:].any() and not out['image'][:, :, w:].any()
        assert out['gt_segm'].shape == (2, 96, 96)
        assert out['gt_segm'].sum() == original['gt_segm'].sum()
        assert np.array_equal(out['im_shape'], original['im_shape'])


def test_normalize_and_permute():
    sample = scene()
    out = Permute()(NormalizeImage(mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])(sample))
    expected = (sample['image'].astype(np.float32) / 255 - 0.5) / 0.25
    assert out['image'].shape == (3, 60, 90)
    assert np.allclose(out['image'], expected.transpose(2, 0, 1), atol=1e-5)


def test_random_distort_is_deterministic_per_rng_and_returns_float():
    sample = scene()
    op = RandomDistort()
    a = op(sample, np.random.default_rng(1))['image']
    b = op(sample, np.random.default_rng(1))['image']
    assert a.dtype == np.float32 and np.array_equal(a, b)
    assert np.array_equal(a, np.round(a))                     # integer-valued
    outs = [op(sample, np.random.default_rng(s))['image'] for s in range(6)]
    assert sum(not np.array_equal(o, sample['image']) for o in outs) >= 4


def test_random_crop_keeps_boxes_masks_and_classes_aligned():
    sample = scene(120, 160)
    cropped = [RandomCrop()(sample, np.random.default_rng(s)) for s in range(30)]
    changed = [c for c in cropped if c['image'].shape != sample['image'].shape]
    assert changed
    for c in changed:
        h, w = c['image'].shape[:2]
        n = len(c['gt_bbox'])
        assert c['gt_segm'].shape == (n, h, w) and len(c['gt_class']) == n == len(c['gt_poly'])
        for box, mask in zip(c['gt_bbox'], c['gt_segm']):
            ys, xs = np.nonzero(mask)
            if len(ys):      # the mask lies inside its clipped box
                assert xs.min() >= box[0] - 1 and xs.max() <= box[2] and ys.max() <= box[3]


# -- decoding ---------------------------------------------------------------------------
def write_image(path, mode, size=(40, 30), exif_orientation=None, fmt=None):
    image = Image.new(mode, size, color=(200, 10, 10, 255)[:len(mode)] if mode != 'L' else 128)
    image.paste(Image.new(mode, (10, 5), 0 if mode == 'L' else (0,) * len(mode)), (0, 0))
    kwargs = {}
    if exif_orientation:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kwargs['exif'] = exif
    image.save(path, fmt, **kwargs)
    return str(path)


@pytest.mark.parametrize('mode, ext', [('L', 'png'), ('RGBA', 'png'), ('CMYK', 'jpg'),
                                       ('RGB', 'jpg')])
def test_decode_gives_three_channel_rgb(tmp_path, mode, ext):
    path = write_image(tmp_path / f'im.{ext}', mode)
    out = Decode()({'im_file': path, 'im_id': np.array([1]), 'h': 30, 'w': 40})
    assert out['image'].shape == (30, 40, 3) and out['image'].dtype == np.uint8
    assert list(out['im_shape']) == [30, 40]
    if mode in ('RGB', 'RGBA'):
        assert out['image'][20, 30, 0] > 150 and out['image'][20, 30, 2] < 60   # red, RGB order


def test_decode_applies_exif_orientation(tmp_path):
    path = write_image(tmp_path / 'rot.jpg', 'RGB', size=(40, 30), exif_orientation=6)
    out = Decode()({'im_file': path, 'im_id': np.array([1]), 'h': 40, 'w': 30})
    assert out['image'].shape == (40, 30, 3)           # rotated by 90 degrees
    # the dark 10x5 patch at the stored top-left is at the top-right after rotation
    assert out['image'][:10, -5:].mean() < 60 and out['image'][:10, :5].mean() > 60


def test_decode_refuses_declared_size_mismatch_before_masks(tmp_path):
    path = write_image(tmp_path / 'small.png', 'RGB')
    with pytest.raises(DataError, match=r'small\.png.*decoded image is 30x40.*declares 3000x4000'):
        Decode()({'im_file': path, 'im_id': np.array([7]), 'h': 3000, 'w': 4000})


@pytest.mark.parametrize('content, message', [
    (None, 'not found'), (b'', 'empty'), (b'not an image at all', 'not a decodable image')])
def test_decode_refuses_missing_empty_and_corrupt_files(tmp_path, content, message):
    path = tmp_path / 'bad.jpg'
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=f'bad.jpg.*{message}'):
        Decode()({'im_file': str(path), 'im_id': np.array([1])})


def test_decode_detects_truncated_jpeg_that_opencv_would_grey_fill(tmp_path):
    rng = np.random.default_rng(0)
    full = tmp_path / 'full.jpg'
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(full, quality=95)
    data = full.read_bytes()
    cut = tmp_path / 'cut.jpg'
    cut.write_bytes(data[:len(data) * 2 // 3])
    with pytest.raises(DataError, match='cut.jpg.*truncated JPEG'):
        Decode()({'im_file': str(cut), 'im_id': np.array([1])})
    assert Decode()({'im_file': str(full), 'im_id': np.array([1])})['image'].shape == (64, 64, 3)


def test_poly2mask_names_the_annotation_of_a_broken_rle():
    sample = {'image': np.zeros((10, 10, 3), np.uint8), 'im_file': 'x.jpg', 'ann_ids': [41],
              'gt_poly': [{'size': [10, 10], 'counts': 5}]}
    with pytest.raises(DataError, match='x.jpg: annotation 41'):
        Poly2Mask()(sample)


# -- configuration ------------------------------------------------------------------------
def write_reader(tmp_path, entry):
    path = tmp_path / 'reader.yml'
    path.write_text(textwrap.dedent(f"""
        TrainReader:
          sample_transforms:
          - Decode: {{}}
          - {entry}
          batch_size: 2
    """))
    return str(path)


def test_unknown_transform_is_refused_with_suggestion_and_file(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write_reader(tmp_path, 'RandomFlipp: {}'))
    message = str(err.value)
    assert 'reader.yml' in message and '`RandomFlipp`' in message
    assert 'did you mean `RandomFlip`' in message and '\n' not in message


def test_unknown_transform_argument_is_refused_with_suggestion(tmp_path):
    with pytest.raises(ConfigError, match=r'reader\.yml.*`prb`.*did you mean `prob`'):
        load_config(write_reader(tmp_path, 'RandomFlip: {prb: 0.5}'))


def test_reference_entries_build_every_transform():
    ops = build_transforms([
        {'Decode': {}}, {'Poly2Mask': {}}, {'RandomDistort': {}}, {'RandomCrop': {}},
        {'RandomResize': {'interp': 1, 'target_size': [[352, 852], [512, 852]],
                          'keep_ratio': True}},
        {'RandomFlip': {}}, {'NormalizeImage': {'is_scale': True, 'mean': [0.485, 0.456, 0.406],
                                                'std': [0.229, 0.224, 0.225]}},
        {'Permute': {}}, {'PadBatch': {'pad_to_stride': 32}},
        {'Gt2Solov2Target': {'num_grids': [40, 36, 24, 16, 12], 'coord_sigma': 0.2}}], 'test')
    assert [type(op).__name__ for op in ops][-2:] == ['PadBatch', 'Gt2Solov2Target']
    assert ops[-1].num_grids == [40, 36, 24, 16, 12] and ops[-1].sampling_ratio == 4.0


@pytest.mark.parametrize('dtype, integer', [(np.uint8, True), (np.float32, True),
                                            (np.float32, False)])
def test_normalize_lookup_path_equals_exact_arithmetic(dtype, integer):
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (17, 23, 3))
    image = (np.round(image) if integer else image).astype(dtype)
    op = NormalizeImage()
    fast = op({'image': image})['image']
    assert fast.dtype == np.float32 and np.array_equal(fast, op._exact(image))


@pytest.mark.parametrize('entry, message', [
    ('Permute: 1', 'arguments of `Permute` must be a mapping'),
    ('7: {}', 'unknown transform `7`'),
])
def test_malformed_transform_entries_are_config_errors(tmp_path, entry, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write_reader(tmp_path, entry))


def test_transform_list_and_reader_section_must_have_the_right_shape(tmp_path):
    path = tmp_path / 'r.yml'
    path.write_text('TrainReader: {sample_transforms: Decode}\n')
    with pytest.raises(ConfigError, match=r'r.yml: .*sample_transforms.* must be a list'):
        load_config(str(path))
    path.write_text('EvalReader: 3\n')
    with pytest.raises(ConfigError, match=r'r.yml: `EvalReader` must be a mapping'):
        load_config(str(path))
