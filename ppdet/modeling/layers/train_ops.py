"""Ops whose gradients paddle's CPU kernels compute slowly, with cheaper backward passes.

Each computes what paddle's own op computes (the forward values are identical; gradients
agree to float32 round-off). They are meant for training: the layers that use them keep
paddle's ops in evaluation and export, which is what paddle2onnx converts.
"""
import paddle
import paddle.nn.functional as F
from paddle.autograd import PyLayer

__all__ = ['add_channel_bias', 'upsample_nearest_2x', 'upsample_bilinear_2x']


class _ChannelBias(PyLayer):
    """Paddle's broadcast add reduces the bias gradient with a generic kernel, about 20x slower
    on large maps than this row sum."""

    @staticmethod
    def forward(ctx, x, bias):
        ctx.wanted = (not x.stop_gradient, not bias.stop_gradient)
        return (x.reshape([0, 0, -1]) + bias.reshape([1, -1, 1])).reshape(x.shape)

    @staticmethod
    def backward(ctx, grad):
        # paddle refuses a gradient for an input that does not require one (a frozen bias)
        x_wanted, bias_wanted = ctx.wanted
        return (grad if x_wanted else None,
                grad.reshape([0, 0, -1]).sum(axis=2).sum(axis=0) if bias_wanted else None)


def add_channel_bias(x, bias):
    """``x + bias`` over the channels of ``[N, C, H, W]``."""
    return _ChannelBias.apply(x, bias)


def upsample_nearest_2x(x):
    """``F.interpolate(x, scale_factor=2, mode='nearest')`` of ``[N, C, H, W]`` as a tiled copy:
    a third of its cost, forward and backward together."""
    n, c, h, w = x.shape
    return paddle.tile(x.unsqueeze([3, 5]), [1, 1, 1, 2, 1, 2]).reshape([n, c, 2 * h, 2 * w])


def _bilinear_2x_adjoint(grad, axis):
    """The gradient of x2 bilinear upsampling (half-pixel centres) along one ``axis``: output
    ``2i`` is ``0.25 x[i-1] + 0.75 x[i]``, output ``2i+1`` is ``0.75 x[i] + 0.25 x[i+1]``, with
    the neighbours clamped at the borders."""
    size = grad.shape[axis] // 2
    pairs = grad.reshape(grad.shape[:axis] + [size, 2] + grad.shape[axis + 1:])
    even, odd = paddle.unbind(pairs, axis=axis + 1)
    after = paddle.concat([paddle.slice(even, [axis], [1], [size]),
                           paddle.slice(odd, [axis], [size - 1], [size])], axis)
    before = paddle.concat([paddle.slice(even, [axis], [0], [1]),
                            paddle.slice(odd, [axis], [0], [size - 1])], axis)
    return 0.75 * (even + odd) + 0.25 * (after + before)


class _Bilinear2x(PyLayer):
    @staticmethod
    def forward(ctx, x):
        return F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=False)

    @staticmethod
    def backward(ctx, grad):
        return _bilinear_2x_adjoint(_bilinear_2x_adjoint(grad, 2), 3)


def upsample_bilinear_2x(x):
    """``F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=False)`` with a
    separable backward pass: 2.4x faster forward and backward together on 128-channel maps."""
    return _Bilinear2x.apply(x)
