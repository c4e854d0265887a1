"""SOLOv2's unified mask-feature branch: FPN levels merged at stride 4."""
import paddle.nn as nn
import paddle.nn.functional as F
from paddle.nn.initializer import Normal

from ppdet.core.workspace import register
from ..layers.conv_norm import ConvNormLayer
from ..layers.coord_conv import add_coord_channels
from ..layers.train_ops import upsample_bilinear_2x

__all__ = ['SOLOv2MaskHead']


@register
class SOLOv2MaskHead(nn.Layer):
    """Each FPN level ``start_level..end_level`` goes through ``i`` (conv, ReLU, 2x bilinear
    upsample) steps to stride 4 (one conv for the finest level); the coarsest level gets
    CoordConv channels first. The sum passes a 1x1 conv + norm + ReLU to ``out_channels``
    (the dynamic kernels' input width). ``use_dcn_in_tower`` makes every conv DCNv2.

    ``conv_pred`` is registered under two names, as in the reference, so the state_dict holds
    ``mask_feat_head.conv_pred.0.*`` and its alias ``conv_pred.*``.
    """
    __shared__ = ['norm_type']

    def __init__(self, in_channels=256, mid_channels=128, out_channels=256, start_level=0,
                 end_level=3, use_dcn_in_tower=False, norm_type='gn'):
        super().__init__()
        self.start_level, self.end_level = start_level, end_level
        conv_args = dict(norm_type=norm_type, initializer=Normal(mean=0., std=0.01),
                         dcn='head' if use_dcn_in_tower else None)
        self.levels = []
        for i in range(start_level, end_level + 1):
            tower = nn.Sequential()
            steps = max(i, 1)
            for j in range(steps):
                ch_in = mid_channels if j else in_channels + 2 * (i == end_level and i > 0)
                tower.add_sublayer(f'mask_feat_head.convs_all_levels.{i}.conv{j}',
                                   ConvNormLayer(ch_in, mid_channels, 3, 1, **conv_args))
                tower.add_sublayer(f'act{j}', nn.ReLU())
                if i > 0:
                    tower.add_sublayer(f'upsample{j}', nn.Upsample(
                        scale_factor=2, mode='bilinear', align_corners=False))
            self.levels.append(self.add_sublayer(f'conv_pre_feat{i}', tower))
        self.conv_pred = self.add_sublayer(
            'mask_feat_head.conv_pred.0',
            ConvNormLayer(mid_channels, out_channels, 1, 1, **conv_args))

    @classmethod
    def from_config(cls, cfg, input_shape=None):
        return {'in_channels': input_shape[0].channels} if input_shape else {}

    def _run_tower(self, tower, x):
        """The tower's layers in order; in training its x2 upsamplings take the cheaper backward
        pass of ``layers.train_ops`` (evaluation and export keep paddle's interpolate op)."""
        for layer in tower.children():
            fast = self.training and isinstance(layer, nn.Upsample)
            x = upsample_bilinear_2x(x) if fast else layer(x)
        return x

    def forward(self, feats):
        """``feats``: FPN maps (finest first) -> mask features ``[B, out_channels, H/4, W/4]``."""
        merged = None
        for i, tower in zip(range(self.start_level, self.end_level + 1), self.levels):
            x = feats[i]
            if i == self.end_level and i > 0:
                x = add_coord_channels(x)
            x = self._run_tower(tower, x)
            merged = x if merged is None else merged + x
        return F.relu(self.conv_pred(merged))
