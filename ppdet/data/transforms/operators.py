"""Per-sample transforms, under the reference's names and parameters.

A sample is a dict: ``image`` (HWC uint8/float32, CHW after ``Permute``), ``im_shape`` [2] f32
(current h, w), ``scale_factor`` [2] f32 (y, x), ``gt_bbox`` [N,4] f32 x1y1x2y2, ``gt_class``
[N,1] i32, ``is_crowd`` [N,1] i32, ``gt_poly`` (per instance: flat polygons or an RLE dict),
``gt_segm`` [N,h,w] uint8.  Random ops draw only from the ``rng`` they are given.
"""
import cv2
import numpy as np
from PIL import Image, ImageEnhance
from pycocotools import mask as mask_util

from ppdet.core.errors import DataError

from ..imageio import decode_image, read_image_bytes
from . import register_op

__all__ = ['Decode', 'Poly2Mask', 'Resize', 'RandomResize', 'RandomFlip', 'NormalizeImage',
           'Permute', 'RandomDistort', 'RandomCrop', 'segm_to_mask']

_CV2_MAX_CHANNELS = 512


class Transform:
    """Base of the sample transforms: ``op(sample, rng) -> new sample``."""

    def __call__(self, sample, rng=None):
        raise NotImplementedError

    def __repr__(self):
        args = ', '.join(f'{k}={v!r}' for k, v in vars(self).items() if not k.startswith('_'))
        return f'{type(self).__name__}({args})'


def _ann_label(sample, k):
    ids = sample.get('ann_ids')
    return f'annotation {ids[k]}' if ids is not None and k < len(ids) else f'instance {k}'


def segm_to_mask(segm, h, w):
    """One instance's polygons (parts merged) or RLE -> ``[h, w]`` uint8 0/1."""
    if isinstance(segm, list):
        rle = mask_util.merge(mask_util.frPyObjects(segm, h, w))
    elif isinstance(segm.get('counts'), list):
        rle = mask_util.frPyObjects(segm, h, w)
    else:
        rle = segm
    return mask_util.decode(rle)


def _map_segms(segms, h, w, poly_fn, mask_fn):
    """Apply ``poly_fn`` to every flat polygon and ``mask_fn`` to every RLE's mask."""
    mapped = []
    for segm in segms:
        if isinstance(segm, list):
            mapped.append([poly_fn(np.asarray(poly, np.float64)) for poly in segm])
        else:
            mask = mask_fn(segm_to_mask(segm, h, w))
            mapped.append(mask_util.encode(np.asfortranarray(mask)))
    return mapped


def resize_masks(masks, fx, fy, interpolation=cv2.INTER_NEAREST):
    """``[N, h, w]`` masks resized like ``cv2.resize(m, None, fx=fx, fy=fy)``, in few calls."""
    if len(masks) == 0:
        h, w = masks.shape[1:]
        return np.zeros((0, int(round(h * fy)), int(round(w * fx))), masks.dtype)
    chunks = []
    for start in range(0, len(masks), _CV2_MAX_CHANNELS):
        part = np.ascontiguousarray(masks[start:start + _CV2_MAX_CHANNELS].transpose(1, 2, 0))
        out = cv2.resize(part, None, None, fx=fx, fy=fy, interpolation=interpolation)
        chunks.append(out.reshape(out.shape[:2] + (-1,)).transpose(2, 0, 1))
    return np.concatenate(chunks) if len(chunks) > 1 else np.ascontiguousarray(chunks[0])


@register_op
class Decode(Transform):
    """Read ``im_file`` -> RGB uint8; the decoded size must match the declared ``h``/``w``."""

    def __call__(self, sample, rng=None):
        path = sample['im_file']
        image = decode_image(read_image_bytes(path), path)
        h, w = image.shape[:2]
        if 'h' in sample and (h, w) != (int(sample['h']), int(sample['w'])):
            raise DataError(f'{path}: decoded image is {h}x{w} but the annotation file declares '
                            f'{int(sample["h"])}x{int(sample["w"])} (height x width, image id '
                            f'{int(sample["im_id"][0])})')
        out = dict(sample, image=image, h=float(h), w=float(w))
        out['im_shape'] = np.array([h, w], np.float32)
        out['scale_factor'] = np.array([1., 1.], np.float32)
        return out


@register_op
class Poly2Mask(Transform):
    """``gt_poly`` (polygons or RLE per instance) -> ``gt_segm [N, h, w]`` uint8."""

    def __call__(self, sample, rng=None):
        h, w = sample['image'].shape[:2]
        masks = np.zeros((len(sample['gt_poly']), h, w), np.uint8)
        for k, segm in enumerate(sample['gt_poly']):
            try:
                masks[k] = segm_to_mask(segm, h, w)
            except (ValueError, TypeError, KeyError) as e:
                raise DataError(f'{sample["im_file"]}: {_ann_label(sample, k)}: cannot rasterise '
                                f'its segmentation ({e})') from None
        return dict(sample, gt_segm=masks)


def _keep_ratio_scale(h, w, target_size):
    short, long = min(target_size), max(target_size)
    return min(short / min(h, w), long / max(h, w))


@register_op
class Resize(Transform):
    """Resize to ``target_size`` [h, w] (``keep_ratio``: fit the short and long sides)."""

    def __init__(self, target_size=[800, 1333], keep_ratio=True, interp=cv2.INTER_LINEAR):
        if isinstance(target_size, (int, float)):
            target_size = [target_size, target_size]
        self.target_size, self.keep_ratio, self.interp = list(target_size), keep_ratio, interp

    def __call__(self, sample, rng=None):
        image = sample['image']
        h, w = image.shape[:2]
        if self.keep_ratio:
            scale = _keep_ratio_scale(h, w, self.target_size)
            new_h, new_w = max(int(scale * h + 0.5), 1), max(int(scale * w + 0.5), 1)
        else:
            new_h, new_w = self.target_size
        sy, sx = new_h / h, new_w / w
        out = dict(sample)
        out['image'] = cv2.resize(image, None, None, fx=sx, fy=sy,
                                  interpolation=self.interp).astype(np.float32)
        out['im_shape'] = np.array([new_h, new_w], np.float32)
        previous = np.asarray(sample.get('scale_factor', (1., 1.)), np.float64)
        out['scale_factor'] = (previous * (sy, sx)).astype(np.float32)
        if 'gt_bbox' in sample:
            box = sample['gt_bbox'] * np.array([sx, sy, sx, sy], np.float32)
            box[:, 0::2] = np.clip(box[:, 0::2], 0, new_w)
            box[:, 1::2] = np.clip(box[:, 1::2], 0, new_h)
            out['gt_bbox'] = box
        if 'gt_segm' in sample:
            out['gt_segm'] = resize_masks(sample['gt_segm'], sx, sy)
        if 'gt_poly' in sample:
            def scale_poly(p):
                return p * np.resize([sx, sy], len(p))
            out['gt_poly'] = _map_segms(sample['gt_poly'], h, w, scale_poly,
                                        lambda m: cv2.resize(m, (new_w, new_h),
                                                             interpolation=cv2.INTER_NEAREST))
        return out


@register_op
class RandomResize(Transform):
    """Resize to a size drawn per sample from ``target_size`` (or a range of them)."""

    _INTERPS = [cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_AREA, cv2.INTER_CUBIC,
                cv2.INTER_LANCZOS4]

    def __init__(self, target_size, keep_ratio=True, interp=cv2.INTER_LINEAR, random_range=False,
                 random_size=True, random_interp=False):
        sizes = [[s, s] if isinstance(s, (int, float)) else list(s) for s in target_size]
        self.target_size, self.keep_ratio, self.interp = sizes, keep_ratio, interp
        self.random_range, self.random_size = random_range, random_size
        self.random_interp = random_interp

    def _draw_size(self, rng):
        if self.random_range:
            shorts, longs = zip(*[(min(s), max(s)) for s in self.target_size])
            return [int(rng.integers(min(shorts), max(shorts) + 1)),
                    int(rng.integers(min(longs), max(longs) + 1))]
        if self.random_size:
            return self.target_size[int(rng.integers(len(self.target_size)))]
        return self.target_size[0]

    def __call__(self, sample, rng):
        size = self._draw_size(rng)
        interp = self._INTERPS[int(rng.integers(len(self._INTERPS)))] if self.random_interp \
            else self.interp
        return Resize(size, self.keep_ratio, interp)(sample)


@register_op
class RandomFlip(Transform):
    """Horizontal flip with probability ``prob``: image, boxes, polygons, RLE and masks."""

    def __init__(self, prob=0.5):
        self.prob = prob

    def __call__(self, sample, rng):
        if rng.random() >= self.prob:
            return sample
        image = sample['image']
        h, w = image.shape[:2]
        out = dict(sample, image=np.ascontiguousarray(image[:, ::-1]))
        if 'gt_bbox' in sample:
            box = sample['gt_bbox'].copy()
            box[:, 0], box[:, 2] = w - sample['gt_bbox'][:, 2], w - sample['gt_bbox'][:, 0]
            out['gt_bbox'] = box
        if 'gt_segm' in sample:
            out['gt_segm'] = np.ascontiguousarray(sample['gt_segm'][:, :, ::-1])
        if 'gt_poly' in sample:
            def flip_poly(p):
                p = p.copy()
                p[0::2] = w - p[0::2]
                return p
            out['gt_poly'] = _map_segms(sample['gt_poly'], h, w, flip_poly, lambda m: m[:, ::-1])
        return out


@register_op
class NormalizeImage(Transform):
    """To float32, times 1/255 if ``is_scale``, then ``(x - mean) / std`` per channel.

    Images holding only the integers 0..255 (all the reference pipelines feed it those) go
    through a per-channel lookup table built with the exact arithmetic below, which gives the
    same float32 values about five times faster.
    """

    def __init__(self, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], is_scale=True,
                 norm_type='mean_std'):
        if norm_type not in ('mean_std', 'none'):
            raise ValueError(f'NormalizeImage: norm_type must be mean_std or none, got {norm_type}')
        self.mean, self.std, self.is_scale, self.norm_type = mean, std, is_scale, norm_type
        self._table = None

    def _exact(self, image):
        # The reference's float32/float64 mix, so results agree bit for bit.
        image = image.astype(np.float32)
        if self.is_scale:
            image *= 1.0 / 255.0
        if self.norm_type == 'mean_std':
            image -= np.array(self.mean)[None, None, :]
            image /= np.array(self.std)[None, None, :]
        return image

    def _lookup_table(self):
        if self._table is None:
            levels = np.repeat(np.arange(256, dtype=np.float32), 3).reshape(1, 256, 3)
            self._table = self._exact(levels)
        return self._table

    def __call__(self, sample, rng=None):
        image = sample['image']
        if image.ndim == 3 and image.shape[2] == 3:
            as_bytes = image if image.dtype == np.uint8 else image.astype(np.uint8)
            if as_bytes is image or np.array_equal(as_bytes, image):
                return dict(sample, image=cv2.LUT(as_bytes, self._lookup_table()))
        return dict(sample, image=self._exact(image))


@register_op
class Permute(Transform):
    """HWC -> CHW."""

    def __call__(self, sample, rng=None):
        return dict(sample, image=np.ascontiguousarray(sample['image'].transpose(2, 0, 1)))


@register_op
class RandomDistort(Transform):
    """Random brightness, contrast, saturation and hue (PIL), in a random order.

    Each ``[low, high, prob]`` op is skipped when a uniform draw is below ``prob`` (as in the
    reference); the output is float32 with integer values.
    """

    def __init__(self, hue=[-18, 18, 0.5], saturation=[0.5, 1.5, 0.5],
                 contrast=[0.5, 1.5, 0.5], brightness=[0.5, 1.5, 0.5], random_apply=True,
                 count=4, random_channel=False, prob=1.0):
        self.hue, self.saturation, self.contrast, self.brightness = \
            hue, saturation, contrast, brightness
        self.random_apply, self.count = random_apply, count
        self.random_channel, self.prob = random_channel, prob

    @staticmethod
    def _enhance(enhancer):
        return lambda img, factor: enhancer(img).enhance(factor)

    @staticmethod
    def _shift_hue(img, delta):
        hsv = np.array(img.convert('HSV'))
        # Written back into uint8 the reference way: truncate toward zero, wrap modulo 256.
        hsv[..., 0] = (np.trunc(hsv[..., 0] + delta).astype(np.int64) % 256).astype(np.uint8)
        return Image.fromarray(hsv, 'HSV').convert('RGB')

    def __call__(self, sample, rng):
        if rng.random() > self.prob:
            return sample
        ops = [(self.brightness, self._enhance(ImageEnhance.Brightness)),
               (self.contrast, self._enhance(ImageEnhance.Contrast)),
               (self.saturation, self._enhance(ImageEnhance.Color)),
               (self.hue, self._shift_hue)]
        if self.random_apply:
            ops = [ops[i] for i in rng.permutation(len(ops))[:self.count]]
        img = Image.fromarray(np.asarray(sample['image']).astype(np.uint8))
        for (low, high, prob), apply in ops:
            if rng.random() < prob:
                continue
            img = apply(img, rng.uniform(low, high))
        image = np.asarray(img)
        if self.random_channel and rng.random() < 0.5:
            image = image[..., rng.permutation(3)]
        return dict(sample, image=image.astype(np.float32))


def _box_overlaps(boxes, crop, mode):
    """IoU (or intersection over box area, ``iof``) of ``[N,4]`` boxes with one crop box."""
    lt = np.maximum(boxes[:, :2], crop[:2])
    rb = np.minimum(boxes[:, 2:], crop[2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    if mode == 'iof':
        return inter / np.maximum(area, 1e-10)
    crop_area = np.prod(crop[2:] - crop[:2])
    return inter / np.maximum(area + crop_area - inter, 1e-10)


@register_op
class RandomCrop(Transform):
    """SSD-style random crop keeping the boxes whose centre lies inside (masks cropped too).

    Polygons are subset with the boxes but not clipped (the masks, built before, are exact).
    """

    def __init__(self, aspect_ratio=[.5, 2.], thresholds=[.0, .1, .3, .5, .7, .9],
                 scaling=[.3, 1.], num_attempts=50, allow_no_crop=True, cover_all_box=False,
                 is_mask_crop=False, ioumode='iou', prob=1.0):
        if ioumode not in ('iou', 'iof'):
            raise ValueError(f'RandomCrop: ioumode must be iou or iof, got {ioumode}')
        self.aspect_ratio, self.thresholds, self.scaling = aspect_ratio, thresholds, scaling
        self.num_attempts, self.allow_no_crop = num_attempts, allow_no_crop
        self.cover_all_box, self.is_mask_crop = cover_all_box, is_mask_crop
        self.ioumode, self.prob = ioumode, prob

    def _attempt(self, rng, h, w, boxes, threshold):
        scale = rng.uniform(*self.scaling)
        lo = max(self.aspect_ratio[0], scale ** 2)
        hi = min(self.aspect_ratio[1], scale ** -2)
        ratio = rng.uniform(lo, hi)
        crop_h, crop_w = int(h * scale / np.sqrt(ratio)), int(w * scale * np.sqrt(ratio))
        if crop_h >= h or crop_w >= w or crop_h <= 0 or crop_w <= 0:
            return None
        y0, x0 = int(rng.integers(0, h - crop_h)), int(rng.integers(0, w - crop_w))
        crop = np.array([x0, y0, x0 + crop_w, y0 + crop_h], np.float32)
        overlap = _box_overlaps(boxes, crop, self.ioumode)
        if overlap.max() < threshold or self.cover_all_box and overlap.min() < threshold:
            return None
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        inside = np.all((centre >= crop[:2]) & (centre < crop[2:]), axis=1)
        return (crop, inside) if inside.any() else None

    def __call__(self, sample, rng):
        boxes = sample.get('gt_bbox')
        if boxes is None or len(boxes) == 0 or rng.random() > self.prob:
            return sample
        h, w = sample['image'].shape[:2]
        modes = list(self.thresholds) + (['no_crop'] if self.allow_no_crop else [])
        for k in rng.permutation(len(modes)):
            if modes[k] == 'no_crop':
                return sample
            for _ in range(self.num_attempts):
                found = self._attempt(rng, h, w, boxes, modes[k])
                if found is not None:
                    return self._crop(sample, *found)
        return sample

    @staticmethod
    def _crop(sample, crop, keep):
        x0, y0, x1, y1 = (int(v) for v in crop)
        out = dict(sample, image=sample['image'][y0:y1, x0:x1])
        box = sample['gt_bbox'][keep].copy()
        box[:, 0::2] = np.clip(box[:, 0::2], x0, x1) - x0
        box[:, 1::2] = np.clip(box[:, 1::2], y0, y1) - y0
        out['gt_bbox'] = box
        for key in ('gt_class', 'is_crowd'):
            if key in sample:
                out[key] = sample[key][keep]
        if 'gt_segm' in sample:
            out['gt_segm'] = sample['gt_segm'][keep][:, y0:y1, x0:x1]
        if 'gt_poly' in sample:
            out['gt_poly'] = [p for p, k in zip(sample['gt_poly'], keep) if k]
        if 'ann_ids' in sample:
            out['ann_ids'] = [a for a, k in zip(sample['ann_ids'], keep) if k]
        return out
