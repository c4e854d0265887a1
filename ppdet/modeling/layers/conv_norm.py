"""Conv (plain or DCNv2) + norm (+ ReLU): the building block of the backbone and the heads."""
import paddle.nn as nn
import paddle.nn.functional as F
from paddle import ParamAttr
from paddle.nn.initializer import Constant
from paddle.regularizer import L2Decay
from paddle.vision.ops import DeformConv2D

from .deformable_conv import DeformableConvV2, split_offset_mask
from .norm import build_norm

__all__ = ['ConvNormLayer', 'DCN_LAYOUTS']

# The reference's two parameter layouts of a deformable ConvNormLayer (weights load by name).
DCN_LAYOUTS = ('backbone', 'head')


class ConvNormLayer(nn.Layer):
    """``conv`` -> ``norm`` (-> ReLU when ``act='relu'``); the conv has no bias.

    ``dcn`` makes the conv a modulated deformable one (DCNv2), laid out as the reference does:

    * ``'backbone'``: ``conv_offset`` (zero-initialised, predicts offsets and masks) beside a
      bias-free deformable ``conv``;
    * ``'head'``: ``conv`` is a :class:`DeformableConvV2` (offset predictor inside, biases
      learning at twice the rate without weight decay).

    ``lr`` scales the learning rate of the conv and the norm; ``freeze_norm`` makes the norm a
    fixed affine map (see :func:`build_norm`). ``initializer`` (default: paddle's) sets the
    conv weights.
    """

    def __init__(self, ch_in, ch_out, filter_size, stride=1, groups=1, act=None, norm_type='bn',
                 norm_decay=0., norm_groups=32, freeze_norm=False, lr=1.0, initializer=None,
                 dcn=None):
        super().__init__()
        if dcn not in (None,) + DCN_LAYOUTS:
            raise ValueError(f'ConvNormLayer: dcn must be None or one of {DCN_LAYOUTS}, got {dcn!r}')
        self.act = act
        padding = (filter_size - 1) // 2
        weight_attr = ParamAttr(initializer=initializer, learning_rate=lr)
        self.conv_offset = None
        if dcn == 'backbone':
            self.kernel_area = filter_size ** 2
            self.conv_offset = nn.Conv2D(
                ch_in, 3 * self.kernel_area, filter_size, stride=stride, padding=padding,
                weight_attr=ParamAttr(initializer=Constant(0.)),
                bias_attr=ParamAttr(initializer=Constant(0.)))
            self.conv = DeformConv2D(ch_in, ch_out, filter_size, stride=stride, padding=padding,
                                     groups=groups, weight_attr=weight_attr, bias_attr=False)
        elif dcn == 'head':
            self.conv = DeformableConvV2(ch_in, ch_out, filter_size, stride=stride,
                                         weight_attr=weight_attr, lr_scale=2.,
                                         bias_regularizer=L2Decay(0.))
        else:
            self.conv = nn.Conv2D(ch_in, ch_out, filter_size, stride=stride, padding=padding,
                                  groups=groups, weight_attr=weight_attr, bias_attr=False)
        self.norm = build_norm(norm_type, ch_out, norm_decay=norm_decay, norm_groups=norm_groups,
                               lr=0. if freeze_norm else lr, freeze=freeze_norm)

    def forward(self, x):
        if self.conv_offset is None:
            y = self.conv(x)
        else:
            offset, mask = split_offset_mask(self.conv_offset(x), self.kernel_area)
            y = self.conv(x, offset, mask=mask)
        y = self.norm(y)
        return F.relu(y) if self.act == 'relu' else y
