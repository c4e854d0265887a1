"""DropBlock regularisation (Ghiasi et al., 2018) as the SOLOv2 reference configures it."""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F


class DropBlock(nn.Layer):
    """Zero ``block_size`` x ``block_size`` squares, rescaling to keep the expected sum.

    Seeds are drawn independently for every channel of the full input shape, as the reference
    does. Identity in eval mode or when ``keep_prob == 1``.
    """

    def __init__(self, block_size=3, keep_prob=0.9):
        super().__init__()
        self.block_size = block_size
        self.keep_prob = keep_prob

    def forward(self, x):
        if not self.training or self.keep_prob == 1:
            return x
        b = self.block_size
        h, w = x.shape[2], x.shape[3]
        gamma = (1. - self.keep_prob) / (b ** 2) * (h / (h - b + 1)) * (w / (w - b + 1))
        seeds = paddle.cast(paddle.rand(x.shape, dtype=x.dtype) < gamma, x.dtype)
        dropped = F.max_pool2d(seeds, kernel_size=b, stride=1, padding=b // 2)
        mask = 1. - dropped
        return x * mask * (mask.numel().astype(x.dtype) / mask.sum())
