"""Matrix NMS (SOLOv2, Wang et al., 2020): soft suppression of overlapping masks, in one pass."""
import paddle

from ppdet.core.errors import ConfigError
from ppdet.core.workspace import register, serializable
from ..ops import batched_gather

__all__ = ['MaskMatrixNMS']


@register
@serializable
class MaskMatrixNMS:
    """Decay every mask's score by its overlap with higher-scored masks of the same class.

    Batched and loop-free. Inputs per image: ``K`` candidate slots of which ``valid`` are real.
    Steps, as the reference: sort by score and keep the top ``pre_nms_top_n``; IoU of every pair
    from one matrix product; for mask j, ``decay_j = min_i f(iou_ij) / f(comp_i)`` over
    higher-scored same-class masks i, where ``comp_i`` is i's own largest IoU with a
    higher-scored same-class mask and ``f(x) = exp(-sigma x²)`` (gaussian) or ``1 - x``
    (linear); keep decayed scores >= ``update_threshold``, at most ``post_nms_top_n``.

    Unlike the reference no extra lowest-score entry is kept: the results are exactly the masks
    that pass the threshold. Runs in float32 whatever the input precision.
    """

    def __init__(self, update_threshold=0.05, pre_nms_top_n=500, post_nms_top_n=100,
                 kernel='gaussian', sigma=2.0):
        if kernel not in ('gaussian', 'linear'):
            raise ConfigError(f"MaskMatrixNMS: kernel must be 'gaussian' or 'linear', "
                              f"got {kernel!r}")
        self.update_threshold = update_threshold
        self.pre_nms_top_n = pre_nms_top_n
        self.post_nms_top_n = post_nms_top_n
        self.kernel = kernel
        self.sigma = sigma

    def decay(self, iou, same_label):
        """Decay factors ``[B, K]`` for IoUs ``[B, K, K]`` of score-sorted masks."""
        upper = paddle.triu(paddle.ones_like(iou), diagonal=1)
        decay_iou = iou * same_label * upper
        compensate = decay_iou.max(axis=1).unsqueeze(2)          # comp_i along rows
        if self.kernel == 'gaussian':
            ratio = paddle.exp(-self.sigma * decay_iou * decay_iou) / paddle.exp(
                -self.sigma * compensate * compensate)
        else:
            ratio = (1. - decay_iou) / (1. - compensate)
        return ratio.min(axis=1)

    def __call__(self, masks, labels, scores, valid):
        """Masks ``[B, K, P]`` (0/1, flattened), labels ``[B, K]`` int, scores ``[B, K]``,
        valid ``[B, K]`` bool; ``K`` may be known only at run time.

        Returns ``post_nms_top_n`` slots per image: ``index`` (rows of the input, by decayed
        score descending), ``score`` and ``keep`` (bool; false for unused slots).
        """
        scores = paddle.where(valid, scores.astype('float32'),
                              paddle.full_like(scores, -1., 'float32'))
        order = paddle.argsort(scores, axis=1, descending=True)[:, :self.pre_nms_top_n]
        scores = batched_gather(scores, order)
        labels = batched_gather(labels, order)
        # Products of the unsorted masks, then sorted as a K x K matrix: cheaper than
        # gathering the masks. The areas of 0/1 masks are the diagonal.
        masks = masks.astype('float32')
        products = paddle.matmul(masks, masks, transpose_y=True)
        areas = batched_gather(_diagonal(products), order)
        inter = _permute_square(products, order)
        union = areas.unsqueeze(2) + areas.unsqueeze(1) - inter
        iou = inter / paddle.maximum(union, paddle.full_like(union, 1.))
        same_label = (labels.unsqueeze(2) == labels.unsqueeze(1)).astype('float32')
        decayed = scores * self.decay(iou, same_label)

        keep = (scores >= 0) & (decayed >= self.update_threshold)
        # Pad to at least post_nms_top_n columns so that the top-k size is fixed.
        padding = paddle.full([paddle.shape(scores)[0], self.post_nms_top_n], -1., 'float32')
        decayed = paddle.concat([paddle.where(keep, decayed, paddle.full_like(decayed, -1.)),
                                 padding], axis=1)
        top_scores, top = paddle.topk(decayed, self.post_nms_top_n, axis=1)
        keep = paddle.concat([keep.astype('int32'), paddle.zeros_like(padding, 'int32')], axis=1)
        last = (paddle.shape(order)[1] - 1).astype(top.dtype)
        index = batched_gather(order, paddle.minimum(top, last))
        return index, top_scores, batched_gather(keep, top).astype('bool')


def _diagonal(matrix):
    """``matrix[b, i, i]`` of ``[B, K, K]`` (gathers: no diagonal operator in the export)."""
    size = paddle.shape(matrix)[1]
    index = paddle.arange(size, dtype='int64') * (size.astype('int64') + 1)
    return paddle.gather(matrix.flatten(1), index, axis=1)


def _permute_square(matrix, order):
    """``matrix[b, order[b, i], order[b, j]]`` for ``[B, K, K]`` and ``order [B, k]``."""
    rows = batched_gather(matrix, order)
    return batched_gather(rows.transpose([0, 2, 1]), order).transpose([0, 2, 1])
