"""ResNet backbones (depth 18-152, variants a-d), state_dict names as PaddleDetection's."""
import string

import paddle.nn as nn
import paddle.nn.functional as F

from ppdet.core.errors import ConfigError
from ppdet.core.workspace import register
from ..layers.conv_norm import ConvNormLayer
from ..shape_spec import ShapeSpec

__all__ = ['ResNet', 'BottleNeck', 'BasicBlock']

BLOCKS_PER_DEPTH = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3],
                    101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}
STAGE_CHANNELS = [64, 128, 256, 512]
STAGE_STRIDES = [4, 8, 16, 32]


class _Shortcut(nn.Sequential):
    """ResNet-D projection for a strided block: 2x2 average pool, then a 1x1 conv."""

    def __init__(self, ch_in, ch_out, **norm_args):
        super().__init__()
        self.add_sublayer('pool', nn.AvgPool2D(2, 2, 0, ceil_mode=True))
        self.add_sublayer('conv', ConvNormLayer(ch_in, ch_out, 1, 1, **norm_args))


def _projection(ch_in, ch_out, stride, variant, norm_args):
    if variant == 'd' and stride == 2:
        return _Shortcut(ch_in, ch_out, **norm_args)
    return ConvNormLayer(ch_in, ch_out, 1, stride, **norm_args)


class BottleNeck(nn.Layer):
    """1x1 -> 3x3 -> 1x1 (x4 channels) residual block."""
    expansion = 4

    def __init__(self, ch_in, ch_out, stride, shortcut, variant='b', groups=1, base_width=64,
                 dcn_v2=False, **norm_args):
        super().__init__()
        width = int(ch_out * (base_width / 64.)) * groups
        stride_1x1, stride_3x3 = (stride, 1) if variant == 'a' else (1, stride)
        self.branch2a = ConvNormLayer(ch_in, width, 1, stride_1x1, act='relu', **norm_args)
        self.branch2b = ConvNormLayer(width, width, 3, stride_3x3, groups=groups, act='relu',
                                      dcn='backbone' if dcn_v2 else None, **norm_args)
        self.branch2c = ConvNormLayer(width, ch_out * self.expansion, 1, 1, **norm_args)
        self.short = None if shortcut else _projection(
            ch_in, ch_out * self.expansion, stride, variant, norm_args)

    def forward(self, x):
        y = self.branch2c(self.branch2b(self.branch2a(x)))
        return F.relu(y + (x if self.short is None else self.short(x)))


class BasicBlock(nn.Layer):
    """3x3 -> 3x3 residual block (ResNet-18/34)."""
    expansion = 1

    def __init__(self, ch_in, ch_out, stride, shortcut, variant='b', groups=1, base_width=64,
                 dcn_v2=False, **norm_args):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ConfigError('ResNet: BasicBlock (depth 18/34) supports only groups=1, '
                              'base_width=64')
        self.branch2a = ConvNormLayer(ch_in, ch_out, 3, stride, act='relu', **norm_args)
        self.branch2b = ConvNormLayer(ch_out, ch_out, 3, 1, dcn='backbone' if dcn_v2 else None,
                                      **norm_args)
        self.short = None if shortcut else _projection(ch_in, ch_out, stride, variant, norm_args)

    def forward(self, x):
        y = self.branch2b(self.branch2a(x))
        return F.relu(y + (x if self.short is None else self.short(x)))


def block_names(stage, count):
    """``res4a, res4b, ...``; a res4 of more than 10 blocks is ``res4a, res4b1, res4b2, ...``."""
    if stage == 4 and count > 10:
        return ['res4a'] + [f'res4b{i}' for i in range(1, count)]
    return [f'res{stage}{string.ascii_lowercase[i]}' for i in range(count)]


@register
class ResNet(nn.Layer):
    """ResNet returning the stage outputs listed in ``return_idx`` (0 = res2, stride 4).

    ``variant`` ``b``: 7x7 stem, strided 3x3; ``c``/``d``: three 3x3 stem convs; ``d`` also
    average-pools in strided shortcuts. ``freeze_at`` stops gradients of the stem and stages
    ``res2 .. res{freeze_at+2}``; ``freeze_norm`` turns norms into fixed affines;
    ``lr_mult_list`` scales each stage's learning rate; ``dcn_v2_stages`` makes the 3x3 convs
    of those stages deformable.
    """
    __shared__ = ['norm_type']

    def __init__(self, depth=50, ch_in=64, variant='b', lr_mult_list=[1.0, 1.0, 1.0, 1.0],
                 groups=1, base_width=64, norm_type='bn', norm_decay=0, freeze_norm=True,
                 freeze_at=0, return_idx=[0, 1, 2, 3], dcn_v2_stages=[-1], num_stages=4,
                 std_senet=False, freeze_stem_only=False):
        super().__init__()
        if depth not in BLOCKS_PER_DEPTH:
            raise ConfigError(f'ResNet: depth must be one of {sorted(BLOCKS_PER_DEPTH)}, '
                              f'got {depth}')
        if variant not in ('a', 'b', 'c', 'd'):
            raise ConfigError(f'ResNet: variant must be a, b, c or d, got {variant!r}')
        if not 1 <= num_stages <= 4 or len(lr_mult_list) != 4:
            raise ConfigError('ResNet: num_stages must be 1..4 and lr_mult_list have 4 entries')
        if any(i >= num_stages for i in return_idx):
            raise ConfigError(f'ResNet: return_idx {return_idx} needs more than '
                              f'num_stages={num_stages} stages')
        if std_senet:
            raise ConfigError('ResNet: std_senet (squeeze-and-excitation) is not supported')
        self.return_idx = list(return_idx)
        block = BottleNeck if depth >= 50 else BasicBlock

        stem_norm = dict(norm_type=norm_type, norm_decay=norm_decay, freeze_norm=freeze_norm)
        if variant in ('c', 'd'):
            stem = [(3, ch_in // 2, 3, 2, 'conv1_1'), (ch_in // 2, ch_in // 2, 3, 1, 'conv1_2'),
                    (ch_in // 2, ch_in, 3, 1, 'conv1_3')]
        else:
            stem = [(3, ch_in, 7, 2, 'conv1')]
        self.conv1 = nn.Sequential(*[
            (name, ConvNormLayer(c_in, c_out, k, s, act='relu', **stem_norm))
            for c_in, c_out, k, s, name in stem])

        self.stages = []
        channels = ch_in
        for i, count in enumerate(BLOCKS_PER_DEPTH[depth][:num_stages]):
            norm_args = dict(norm_type=norm_type, norm_decay=norm_decay,
                             freeze_norm=freeze_norm, lr=lr_mult_list[i])
            stage = nn.Sequential()
            for j, name in enumerate(block_names(i + 2, count)):
                stage.add_sublayer(name, block(
                    channels, STAGE_CHANNELS[i], stride=2 if j == 0 and i > 0 else 1,
                    shortcut=j > 0, variant=variant, groups=groups, base_width=base_width,
                    dcn_v2=i in dcn_v2_stages, **norm_args))
                channels = STAGE_CHANNELS[i] * block.expansion
            self.stages.append(self.add_sublayer(f'res{i + 2}', stage))

        self._out_shape = [ShapeSpec(STAGE_CHANNELS[i] * block.expansion, STAGE_STRIDES[i])
                           for i in self.return_idx]
        if freeze_at >= 0:
            frozen = [self.conv1]
            if not freeze_stem_only:
                frozen += self.stages[:freeze_at + 1]
            for layer in frozen:
                for param in layer.parameters():
                    param.stop_gradient = True

    @property
    def out_shape(self):
        return self._out_shape

    def forward(self, image):
        x = F.max_pool2d(self.conv1(image), kernel_size=3, stride=2, padding=1)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.return_idx:
                outs.append(x)
        return outs
