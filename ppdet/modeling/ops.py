"""Tensor helpers that export: shapes are read at run time, no data-dependent Python."""
import paddle


def batched_gather(x, index):
    """``out[b, n] = x[b, index[b, n]]`` for ``x [B, K, ...]`` and ``index [B, N]``."""
    x_shape = paddle.shape(x)
    offsets = paddle.arange(x_shape[0], dtype=index.dtype).unsqueeze(1) * x_shape[1].astype(
        index.dtype)
    flat = paddle.gather(x.flatten(0, 1) if x.ndim > 1 else x, (index + offsets).flatten())
    return flat.reshape(paddle.concat([paddle.shape(index), x_shape[2:]]))
