"""Feature pyramid network (Lin et al., 2017) as the SOLOv2 reference configures it."""
import paddle.nn as nn
import paddle.nn.functional as F
from paddle import ParamAttr
from paddle.nn.initializer import Constant, XavierUniform

from ppdet.core.errors import ConfigError
from ppdet.core.workspace import register
from ..layers.train_ops import add_channel_bias, upsample_nearest_2x
from ..shape_spec import ShapeSpec

__all__ = ['FPN']


class _Conv(nn.Conv2D):
    """Conv with bias; Xavier-uniform whose fan-out equals its fan-in (as the reference).

    Training adds the bias with a cheaper gradient (``layers.train_ops``); evaluation and
    export keep paddle's own ops."""

    def __init__(self, ch_in, ch_out, kernel_size):
        super().__init__(ch_in, ch_out, kernel_size, padding=(kernel_size - 1) // 2,
                         weight_attr=ParamAttr(initializer=XavierUniform(
                             fan_out=ch_in * kernel_size * kernel_size)),
                         bias_attr=ParamAttr(initializer=Constant(0.)))

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        y = F.conv2d(x, self.weight, None, self._stride, self._padding, self._dilation,
                     self._groups)
        return add_channel_bias(y, self.bias)


@register
class FPN(nn.Layer):
    """Lateral 1x1 convs, nearest-neighbour top-down sums, 3x3 output convs, no activation.

    Each ``extra_stage`` adds a level by taking every second pixel of the coarsest output
    (max-pool with kernel 1, stride 2). Only the reference's SOLOv2 setting is implemented:
    no extra convs, no norm.
    """

    def __init__(self, in_channels=[256, 512, 1024, 2048], out_channel=256,
                 spatial_scales=[0.25, 0.125, 0.0625, 0.03125], has_extra_convs=False,
                 extra_stage=1, use_c5=True, norm_type=None, norm_decay=0., freeze_norm=False,
                 relu_before_extra_convs=True):
        super().__init__()
        if has_extra_convs or norm_type is not None:
            raise ConfigError('FPN: has_extra_convs and norm_type are not supported '
                              '(SOLOv2 uses plain convs without extra convs)')
        self.out_channel = out_channel
        self.spatial_scales = list(spatial_scales) + [
            spatial_scales[-1] / 2 ** (i + 1) for i in range(extra_stage)]
        self.extra_stage = extra_stage
        self.lateral_convs, self.fpn_convs = [], []
        last = len(in_channels) - 1
        for i, ch_in in enumerate(in_channels):
            stage = i + 2
            lateral = f'fpn_inner_res{stage}_sum' + ('' if i == last else '_lateral')
            self.lateral_convs.append(self.add_sublayer(lateral, _Conv(ch_in, out_channel, 1)))
            self.fpn_convs.append(self.add_sublayer(f'fpn_res{stage}_sum',
                                                    _Conv(out_channel, out_channel, 3)))

    @classmethod
    def from_config(cls, cfg, input_shape=None):
        if input_shape is None:
            return {}
        return {'in_channels': [s.channels for s in input_shape],
                'spatial_scales': [1.0 / s.stride for s in input_shape]}

    @property
    def out_shape(self):
        return [ShapeSpec(self.out_channel, int(round(1. / s))) for s in self.spatial_scales]

    def forward(self, feats):
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, feats)]
        for i in range(len(laterals) - 1, 0, -1):
            up = upsample_nearest_2x(laterals[i]) if self.training else \
                F.interpolate(laterals[i], scale_factor=2., mode='nearest')
            laterals[i - 1] = laterals[i - 1] + up
        outs = [conv(lat) for conv, lat in zip(self.fpn_convs, laterals)]
        for _ in range(self.extra_stage):
            outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))
        return outs
