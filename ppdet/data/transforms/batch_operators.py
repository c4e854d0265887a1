"""Batch transforms that need every sample of the batch: padding to a common size."""
import numpy as np

from . import register_op

__all__ = ['PadBatch']


@register_op
class PadBatch:
    """Zero-pad every CHW image (and ``gt_segm``) at the bottom/right to the batch's largest
    size rounded up to a multiple of ``pad_to_stride``; ``im_shape`` keeps the unpadded size."""

    def __init__(self, pad_to_stride=0):
        self.pad_to_stride = pad_to_stride

    def padded_size(self, samples):
        h = max(s['image'].shape[1] for s in samples)
        w = max(s['image'].shape[2] for s in samples)
        if self.pad_to_stride > 0:
            stride = self.pad_to_stride
            h, w = -(-h // stride) * stride, -(-w // stride) * stride
        return h, w

    def __call__(self, samples):
        hp, wp = self.padded_size(samples)
        out = []
        for sample in samples:
            c, h, w = sample['image'].shape
            padded = dict(sample)
            padded['image'] = np.zeros((c, hp, wp), np.float32)
            padded['image'][:, :h, :w] = sample['image']
            if 'gt_segm' in sample:
                masks = sample['gt_segm']
                padded['gt_segm'] = np.zeros((len(masks), hp, wp), np.uint8)
                padded['gt_segm'][:, :masks.shape[1], :masks.shape[2]] = masks
            out.append(padded)
        return out

    def __repr__(self):
        return f'PadBatch(pad_to_stride={self.pad_to_stride})'
