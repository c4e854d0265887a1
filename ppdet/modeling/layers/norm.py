"""Normalisation layers with the reference's parameter attributes."""
import paddle.nn as nn
from paddle import ParamAttr
from paddle.regularizer import L2Decay

from ppdet.core.errors import ConfigError

NORM_TYPES = ('bn', 'sync_bn', 'gn')


def build_norm(norm_type, channels, norm_decay=0., norm_groups=32, lr=1., freeze=False):
    """BatchNorm (``bn``; ``sync_bn`` is also a plain BatchNorm here, as in the reference) or
    GroupNorm (``gn``).

    ``freeze``: affine parameters get learning rate 0 and no gradient, and BatchNorm always
    normalises with its running statistics (a fixed affine map, also in training).
    """
    if norm_type not in NORM_TYPES:
        raise ConfigError(f'norm_type must be one of {", ".join(NORM_TYPES)}, got {norm_type!r}')
    attrs = [ParamAttr(learning_rate=lr, regularizer=L2Decay(norm_decay), trainable=not freeze)
             for _ in range(2)]
    if norm_type == 'gn':
        norm = nn.GroupNorm(norm_groups, channels, weight_attr=attrs[0], bias_attr=attrs[1])
    else:
        norm = nn.BatchNorm2D(channels, weight_attr=attrs[0], bias_attr=attrs[1],
                              use_global_stats=True if freeze else None)
    if freeze:
        for param in norm.parameters():
            param.stop_gradient = True
    return norm
