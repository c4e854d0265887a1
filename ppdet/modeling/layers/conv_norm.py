"""Conv (plain or DCNv2) + norm, the building block of the SOLOv2 heads."""
import paddle.nn as nn
from paddle import ParamAttr
from paddle.nn.initializer import Normal
from paddle.regularizer import L2Decay

from .deformable_conv import DeformableConvV2
from .norm import build_norm


class ConvNormLayer(nn.Layer):
    """``conv`` -> ``norm``; the caller applies the activation.

    The conv has no bias; with ``use_dcn`` it is a :class:`DeformableConvV2` whose biases learn
    at ``dcn_lr_scale`` times the rate without weight decay. Norm parameters carry
    ``L2Decay(norm_decay)``.
    """

    def __init__(self, ch_in, ch_out, filter_size, stride=1, norm_type='bn', norm_decay=0.,
                 norm_groups=32, use_dcn=False, freeze_norm=False, initializer=None,
                 dcn_lr_scale=2., dcn_regularizer=None):
        super().__init__()
        initializer = initializer or Normal(mean=0., std=0.01)
        weight_attr = ParamAttr(initializer=initializer)
        if use_dcn:
            self.conv = DeformableConvV2(
                ch_in, ch_out, filter_size, stride=stride, weight_attr=weight_attr,
                lr_scale=dcn_lr_scale,
                bias_regularizer=dcn_regularizer or L2Decay(0.))
        else:
            self.conv = nn.Conv2D(ch_in, ch_out, filter_size, stride=stride,
                                  padding=(filter_size - 1) // 2, weight_attr=weight_attr,
                                  bias_attr=False)
        self.norm = build_norm(norm_type, ch_out, norm_decay=norm_decay, norm_groups=norm_groups,
                               lr=0. if freeze_norm else 1., freeze=freeze_norm)

    def forward(self, x):
        return self.norm(self.conv(x))
