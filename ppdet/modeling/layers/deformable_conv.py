"""Modulated deformable convolution (DCNv2) with its offset/mask predictor."""
import paddle.nn as nn
import paddle.nn.functional as F
from paddle import ParamAttr
from paddle.nn.initializer import Constant
from paddle.vision.ops import DeformConv2D


def split_offset_mask(offset_mask, kernel_area):
    """``[B, 3k², H, W]`` -> offsets (first 2k² channels) and sigmoid modulation (last k²).

    Both must take part in autograd: paddle's CPU backward of ``deform_conv2d`` crashes when
    the offsets do not require a gradient (e.g. a frozen offset predictor after a frozen stage).
    """
    offset = offset_mask[:, :2 * kernel_area]
    mask = F.sigmoid(offset_mask[:, 2 * kernel_area:])
    offset.stop_gradient = False
    mask.stop_gradient = False
    return offset, mask


class DeformableConvV2(nn.Layer):
    """``conv_offset`` predicts offsets and masks, ``conv_dcn`` is the deformable conv.

    Initialisation as in the reference heads: zero offset predictor; the offset bias and the
    deformable bias learn at ``lr_scale`` times the rate, without weight decay.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, dilation=1,
                 weight_attr=None, lr_scale=2., bias_regularizer=None):
        super().__init__()
        self.kernel_area = kernel_size ** 2
        padding = (kernel_size - 1) // 2 * dilation
        self.conv_offset = nn.Conv2D(
            in_channels, 3 * self.kernel_area, kernel_size, stride=stride,
            padding=(kernel_size - 1) // 2,
            weight_attr=ParamAttr(initializer=Constant(0.)),
            bias_attr=ParamAttr(initializer=Constant(0.), learning_rate=lr_scale,
                                regularizer=bias_regularizer))
        bias_attr = ParamAttr(initializer=Constant(0.), learning_rate=lr_scale,
                              regularizer=bias_regularizer)
        self.conv_dcn = DeformConv2D(in_channels, out_channels, kernel_size, stride=stride,
                                     padding=padding, dilation=dilation,
                                     weight_attr=weight_attr, bias_attr=bias_attr)

    def forward(self, x):
        offset, mask = split_offset_mask(self.conv_offset(x), self.kernel_area)
        return self.conv_dcn(x, offset, mask=mask)
