"""A batch's detections (the model's eval outputs) split into one typed value per image."""
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

__all__ = ['Detections', 'split_detections']


@dataclass
class Detections:
    """One image's detections, best first within a class order the model chose."""
    im_id: int
    masks: np.ndarray     # [n, h0, w0] uint8, at the image's original size
    labels: np.ndarray    # [n] int64, contiguous class ids
    scores: np.ndarray    # [n] float32
    boxes: np.ndarray     # [n, 4] float32, x1 y1 x2 y2 (x2, y2 one past the last pixel)
    # what passed the model's first two thresholds, when it reports them (for logs)
    num_above_score: Optional[int] = None
    num_candidates: Optional[int] = None

    def __len__(self):
        return len(self.scores)

    def above(self, threshold):
        """The detections scoring at least ``threshold``."""
        keep = self.scores >= threshold
        return replace(self, masks=self.masks[keep], labels=self.labels[keep],
                       scores=self.scores[keep], boxes=self.boxes[keep])


def _numpy(value):
    return value.numpy() if hasattr(value, 'numpy') else np.asarray(value)


def split_detections(batch, outputs):
    """Per-image :class:`Detections` of a batch (``im_id``, ``im_shape``, ``scale_factor``) and
    its outputs (``segm``, ``cate_label``, ``cate_score``, ``bbox``, ``bbox_num``: see
    docs/architecture.md; ``num_above_score`` / ``num_candidates`` when the detector reports
    them), tensors or arrays."""
    counts = _numpy(outputs['bbox_num']).reshape(-1).astype(int)
    reported = {key: _numpy(outputs[key]).reshape(-1).tolist()
                for key in ('num_above_score', 'num_candidates') if key in outputs}
    segm = _numpy(outputs['segm'])
    labels = _numpy(outputs['cate_label']).reshape(-1).astype(np.int64)
    scores = _numpy(outputs['cate_score']).reshape(-1).astype(np.float32)
    boxes = _numpy(outputs['bbox']).reshape(-1, 6)[:, 2:6]
    im_ids = _numpy(batch['im_id']).reshape(-1)
    sizes = np.round(_numpy(batch['im_shape']) / _numpy(batch['scale_factor'])).astype(int)
    images, start = [], 0
    for i, n in enumerate(counts):
        part = slice(start, start + n)
        start += n
        # masks share the batch's largest original size; each image's own is its top left
        h0, w0 = min(sizes[i][0], segm.shape[-2]), min(sizes[i][1], segm.shape[-1])
        if len(counts) == 1:
            h0, w0 = segm.shape[-2:]
        images.append(Detections(int(im_ids[i]), segm[part, :h0, :w0].astype(np.uint8),
                                 labels[part], scores[part], boxes[part],
                                 **{key: values[i] for key, values in reported.items()}))
    return images
