"""SOLOv2 head: per grid cell a category score and a dynamic mask kernel (Wang et al., 2020).

The head owns its grids, its loss and its post-processing.
"""
import math
from dataclasses import dataclass

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddle import ParamAttr
from paddle.nn.initializer import Constant, Normal

from ppdet.core.errors import ConfigError
from ppdet.core.workspace import register, section_values
from ..grids import DEFAULT_GRIDS, SOLOv2Grids
from ..layers.conv_norm import ConvNormLayer
from ..layers.coord_conv import add_coord_channels
from ..layers.drop_block import DropBlock
from ..layers.matrix_nms import MaskMatrixNMS
from ..losses.solov2_loss import SOLOv2Loss
from ..ops import batched_gather, bilinear_matrix, masks_to_boxes

__all__ = ['SOLOv2Head', 'PredictionThresholds', 'point_nms']

CATEGORY_PRIOR = 0.01
NUM_LEVELS = 5
# SOLOv2Grids field -> the head's argument that sets it
GRID_ARGS = {'num_grids': 'num_grids', 'strides': 'segm_strides', 'scale_ranges': 'scale_ranges'}


@dataclass(frozen=True)
class PredictionThresholds:
    """What decides which (cell, class) pairs become detections, in the order applied."""
    score_threshold: float
    pre_nms_top_n: int
    mask_threshold: float
    update_threshold: float
    post_nms_top_n: int

    def funnel(self, above_score, candidates, detected):
        """One sentence: how many pairs each threshold let through (counts over some images)."""
        return (f'{above_score} (cell, class) scores above score_threshold '
                f'{self.score_threshold} (at most pre_nms_top_n {self.pre_nms_top_n} per image); '
                f'{above_score - candidates} dropped for a mask not larger than its stride at '
                f'mask_threshold {self.mask_threshold}; {candidates - detected} dropped by '
                f'Matrix NMS (update_threshold {self.update_threshold}, post_nms_top_n '
                f'{self.post_nms_top_n})')


def point_nms(heat, kernel_size=2):
    """Keep a score only where it is the maximum of the 2x2 window formed with its upper, left
    and upper-left neighbours (the reference's window), zero elsewhere."""
    hmax = F.max_pool2d(heat, kernel_size=kernel_size, stride=1, padding=1)
    keep = (hmax[:, :, :-1, :-1] == heat).astype(heat.dtype)
    return heat * keep


def _resize(x, **kwargs):
    return F.interpolate(x, mode='bilinear', align_corners=False, align_mode=0, **kwargs)


def _conv_norm(ch_in, ch_out, norm_type, use_dcn):
    return ConvNormLayer(ch_in, ch_out, 3, 1, norm_type=norm_type,
                         initializer=Normal(mean=0., std=0.01), dcn='head' if use_dcn else None)


def _head_conv(ch_in, ch_out, bias_init=0.):
    return nn.Conv2D(ch_in, ch_out, 3, padding=1,
                     weight_attr=ParamAttr(initializer=Normal(mean=0., std=0.01)),
                     bias_attr=ParamAttr(initializer=Constant(bias_init)))


@register
class SOLOv2Head(nn.Layer):
    """Category and kernel branches over ``len(num_grids)`` levels (shared weights).

    Level inputs: the stride-4 FPN map bilinearly halved, the next three maps, and the extra
    (stride-64) map resized to the stride-32 map's size. Each level gets CoordConv channels and
    is resampled to its ``S x S`` grid; the kernel branch sees the coordinates, the category
    branch does not. ``num_grids``, ``segm_strides`` and ``scale_ranges`` make the head's
    :class:`SOLOv2Grids` (``self.grids``), which the training targets are laid on too
    (:meth:`grids_from_config`). ``solo_kernel``/``solo_cate`` are registered under two names
    as in the reference, so the state_dict holds both spellings.
    """
    __shared__ = ['num_classes', 'norm_type']
    __inject__ = ['solov2_loss', 'mask_nms']

    # Set by the export: one spare row after the N detections (not counted in bbox_num), as
    # paddle 3.3.1's oneDNN kernels fail on the empty tensors of a detection-free batch.
    spare_row = False

    def __init__(self, num_classes=80, in_channels=256, seg_feat_channels=256, stacked_convs=4,
                 num_grids=DEFAULT_GRIDS.num_grids, kernel_out_channels=256, dcn_v2_stages=[],
                 segm_strides=DEFAULT_GRIDS.strides, solov2_loss=None, score_threshold=0.1,
                 mask_threshold=0.5, mask_nms=None, norm_type='gn', drop_block=False,
                 scale_ranges=DEFAULT_GRIDS.scale_ranges):
        super().__init__()
        self.grids = SOLOv2Grids(num_grids, segm_strides, scale_ranges)
        if self.grids.num_levels != NUM_LEVELS:
            raise ConfigError(f'SOLOv2Head: num_grids, segm_strides and scale_ranges need one '
                              f'entry per FPN level ({NUM_LEVELS})')
        self.num_classes = num_classes
        self.kernel_out_channels = kernel_out_channels
        self.score_threshold = score_threshold
        self.mask_threshold = mask_threshold
        self.loss = solov2_loss if solov2_loss is not None else SOLOv2Loss()
        self.mask_nms = mask_nms if mask_nms is not None else MaskMatrixNMS()

        self.kernel_convs, self.cate_convs = [], []
        for i in range(stacked_convs):
            ch_in, use_dcn = seg_feat_channels if i else in_channels, i in dcn_v2_stages
            self.kernel_convs.append(self.add_sublayer(
                f'bbox_head.kernel_convs.{i}',
                _conv_norm(ch_in + 2 * (i == 0), seg_feat_channels, norm_type, use_dcn)))
            self.cate_convs.append(self.add_sublayer(
                f'bbox_head.cate_convs.{i}',
                _conv_norm(ch_in, seg_feat_channels, norm_type, use_dcn)))
        self.solo_kernel = self.add_sublayer(
            'bbox_head.solo_kernel', _head_conv(seg_feat_channels, kernel_out_channels))
        self.solo_cate = self.add_sublayer(
            'bbox_head.solo_cate', _head_conv(seg_feat_channels, num_classes,
                                              -math.log((1 - CATEGORY_PRIOR) / CATEGORY_PRIOR)))
        self.drop_block = DropBlock(block_size=3, keep_prob=0.9) if drop_block else None

        cell_strides = np.concatenate([np.full(s * s, st, 'float32') for s, st in
                                       zip(self.grids.num_grids, self.grids.strides)])
        self.register_buffer('cell_strides', paddle.to_tensor(cell_strides), persistable=False)

    @classmethod
    def from_config(cls, cfg, input_shape=None):
        return {'in_channels': input_shape[0].channels} if input_shape else {}

    @classmethod
    def grids_from_config(cls, cfg):
        """``(grids, where)``: the :class:`SOLOv2Grids` this head gets from ``cfg``, and for each
        field the key that set it (``SOLOv2Head.num_grids (file)`` or its default)."""
        values = section_values(cls, cfg, GRID_ARGS.values())
        try:
            grids = SOLOv2Grids(**{field: values[arg][0] for field, arg in GRID_ARGS.items()})
        except ConfigError as err:
            raise ConfigError(f'{cfg.source_of(cls.__name__) or "config"}: {cls.__name__}: '
                              f'{err}') from None
        return grids, {field: values[arg][1] for field, arg in GRID_ARGS.items()}

    @property
    def thresholds(self):
        return PredictionThresholds(self.score_threshold, self.mask_nms.pre_nms_top_n,
                                    self.mask_threshold, self.mask_nms.update_threshold,
                                    self.mask_nms.post_nms_top_n)

    # ------------------------------------------------------------------ network

    def level_inputs(self, feats):
        """The 5 head inputs from the 5 FPN maps (strides 8, 8, 16, 32, 32)."""
        first = _resize(feats[0], scale_factor=0.5)
        last = _resize(feats[4], size=paddle.shape(feats[3])[2:])
        return [first] + list(feats[1:4]) + [last]

    def _tower(self, x, convs):
        for conv in convs:
            x = F.relu(conv(x))
            if self.drop_block is not None:
                x = self.drop_block(x)
        return x

    def forward(self, feats):
        """-> (category logits ``[B, C, S, S]``, kernels ``[B, E, S, S]``), one per level."""
        cate_logits, kernels = [], []
        for x, grid in zip(self.level_inputs(feats), self.grids.num_grids):
            kernel_feat = _resize(add_coord_channels(x), size=[grid, grid])
            cate_feat = kernel_feat[:, :-2]
            kernels.append(self.solo_kernel(self._tower(kernel_feat, self.kernel_convs)))
            cate_logits.append(self.solo_cate(self._tower(cate_feat, self.cate_convs)))
        return cate_logits, kernels

    @staticmethod
    def category_scores(cate_logits):
        """Sigmoid + point NMS, channels last: ``[B, C, S, S]`` -> ``[B, S, S, C]``."""
        return point_nms(F.sigmoid(cate_logits)).transpose([0, 2, 3, 1])

    # ------------------------------------------------------------------ training

    def get_loss(self, cate_logits, kernels, mask_feat, targets):
        """Loss dict from the head outputs, the mask features and :class:`SOLOv2Targets`."""
        batch, channels = mask_feat.shape[0], mask_feat.shape[1]
        mask_feat = mask_feat.reshape([batch, channels, -1])
        mask_logits, mask_targets = [], []
        for kernel, order, ins_label in zip(kernels, targets.grid_orders, targets.ins_labels):
            rows = order.shape[1]
            if rows == 0:
                continue
            flat = kernel.transpose([0, 2, 3, 1]).reshape([-1, channels])
            picked = paddle.gather(flat, order.reshape([-1]).astype('int64'))
            logits = paddle.bmm(picked.reshape([batch, rows, channels]), mask_feat)
            mask_logits.append(logits.reshape([batch * rows, -1]))
            mask_targets.append(ins_label.reshape([batch * rows, -1]))
        if mask_logits:
            mask_logits = paddle.concat(mask_logits)
            mask_targets = paddle.concat(mask_targets)
        else:   # no positive instance in the batch: a zero loss still linked to the graph
            mask_logits = mask_feat[:, :1].reshape([batch, -1]) * 0.
            mask_targets = paddle.zeros_like(mask_logits)
        cate_logits = paddle.concat([c.transpose([0, 2, 3, 1]).reshape([-1, self.num_classes])
                                     for c in cate_logits])
        cate_labels = paddle.concat([label.reshape([-1]) for label in targets.cate_labels])
        return self.loss(mask_logits, mask_targets, cate_logits, cate_labels,
                         targets.fg_num.sum())

    # ------------------------------------------------------------------ inference

    def get_prediction(self, cate_logits, kernels, mask_feat, im_shape, scale_factor):
        """Decode a batch into the output dict (masks at the original image sizes).

        Written for export: no Python branch on data and no loop over images or detections.
        Candidates are the ``pre_nms_top_n`` best (cell, class) scores of each image, cut to
        the largest number above ``score_threshold`` in the batch (a run-time slice, so
        sparse images cost little); Matrix NMS returns ``post_nms_top_n`` slots with a keep
        mask, compacted into the ``N`` detections at the end.

        Differences from the reference, on purpose: no zero-score dummy detection (so up to
        ``post_nms_top_n`` real results, not one fewer); the original size uses both scale
        factors (the reference used the y factor for both axes); every image of the batch
        is decoded (the reference decoded the first only); with more than ``pre_nms_top_n``
        candidates, the best category scores are kept before mask rescoring (the reference
        rescored all of them first).
        """
        labels, scores, soft, binary, above, valid = self._candidates(cate_logits, kernels,
                                                                      mask_feat)
        index, det_scores, keep = self.mask_nms(binary, labels, scores, valid)

        kept = paddle.nonzero(keep.flatten()).flatten()
        if self.spare_row:
            kept = paddle.concat([kept, paddle.zeros([1], kept.dtype)])
        image_of = kept // keep.shape[1]
        rows = image_of * paddle.shape(labels)[1] + paddle.gather(index.flatten(), kept)
        det_labels = paddle.gather(labels.flatten(), rows)
        det_scores = paddle.gather(det_scores.flatten(), kept)
        segm = self._paste(paddle.gather(soft.flatten(0, 1), rows), image_of,
                           paddle.shape(mask_feat)[2:], im_shape, scale_factor)
        bbox = paddle.concat([det_labels.astype('float32').unsqueeze(1),
                              det_scores.unsqueeze(1), masks_to_boxes(segm)], axis=1)
        return {'segm': segm.astype('uint8'), 'cate_label': det_labels.astype('int64'),
                'cate_score': det_scores, 'bbox': bbox,
                'bbox_num': keep.astype('int32').sum(axis=1).astype('int32'),
                # per image, what passed each threshold before Matrix NMS (for logs)
                'num_above_score': above.astype('int32').sum(axis=1),
                'num_candidates': valid.astype('int32').sum(axis=1)}

    def _candidates(self, cate_logits, kernels, mask_feat):
        """Per image, the best (cell, class) pairs (``[B, K]`` labels and mask-rescored
        scores, best category score first), their soft and binary masks ``[B, K, H/4 * W/4]``
        which pass ``score_threshold``, and which are real: category score above
        ``score_threshold`` and mask area above the level's stride. ``K`` is the batch's
        largest count of scores above the threshold, at most ``pre_nms_top_n`` (at least 1)."""
        channels = mask_feat.shape[1]
        num_cells = self.grids.num_cells
        scores = paddle.concat([self.category_scores(c).reshape([0, -1, self.num_classes])
                                for c in cate_logits], axis=1)
        kernels = paddle.concat([k.transpose([0, 2, 3, 1]).reshape([0, -1, channels])
                                 for k in kernels], axis=1)
        num_slots = min(self.mask_nms.pre_nms_top_n, num_cells * self.num_classes)
        scores, flat_index = paddle.topk(scores.reshape([-1, num_cells * self.num_classes]),
                                         num_slots, axis=1)
        count = (scores > self.score_threshold).astype('int32').sum(axis=1).max()
        count = paddle.maximum(count, paddle.ones_like(count))
        scores, flat_index = scores[:, :count], flat_index[:, :count]
        cells = flat_index // self.num_classes
        labels = flat_index % self.num_classes

        soft = F.sigmoid(paddle.bmm(batched_gather(kernels, cells),
                                    mask_feat.reshape([0, channels, -1])))
        binary = (soft > self.mask_threshold).astype(soft.dtype)
        area = binary.sum(axis=2)
        min_area = paddle.gather(self.cell_strides, cells.flatten()).reshape(paddle.shape(cells))
        above = scores > self.score_threshold
        valid = above & (area > min_area)
        scores = scores * (soft * binary).sum(axis=2) / paddle.clip(area, min=1.)
        return labels, scores, soft, binary, above, valid

    def _paste(self, soft, image_of, feat_hw, im_shape, scale_factor):
        """Soft masks ``[N, H/4 * W/4]`` -> binary masks at the original size, the reference's
        way: bilinear x4 to the padded input, crop to the resized image, bilinear to the
        original size, threshold. Both resizes are linear and separable, so each axis is one
        composed matrix per image; columns are mapped first, at the low resolution."""
        padded_hw = feat_hw * 4
        crop_hw = paddle.floor(im_shape)
        orig_hw = paddle.floor(im_shape / scale_factor + 0.5)
        out_hw = orig_hw.max(axis=0).astype('int32')
        rows, cols = [paddle.gather(paddle.matmul(
            bilinear_matrix(crop_hw[:, axis], orig_hw[:, axis], padded_hw[axis], out_hw[axis]),
            bilinear_matrix(feat_hw[axis:axis + 1], padded_hw[axis:axis + 1], feat_hw[axis],
                            padded_hw[axis])), image_of) for axis in (0, 1)]
        masks = soft.astype('float32').reshape(paddle.concat([paddle.shape(soft)[:1], feat_hw]))
        masks = paddle.matmul(rows, paddle.matmul(masks, cols, transpose_y=True))
        return masks > self.mask_threshold
