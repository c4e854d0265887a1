"""Tensor operations that export: shapes are read at run time, no data-dependent Python.

Batched gathers, the matrices of bilinear resizes, and the boxes of masks.
"""
import paddle

__all__ = ['batched_gather', 'bilinear_matrix', 'masks_to_boxes']


def batched_gather(x, index):
    """``out[b, n] = x[b, index[b, n]]`` for ``x [B, K, ...]`` and ``index [B, N]``."""
    x_shape = paddle.shape(x)
    offsets = paddle.arange(x_shape[0], dtype=index.dtype).unsqueeze(1) * x_shape[1].astype(
        index.dtype)
    flat = paddle.gather(x.flatten(0, 1) if x.ndim > 1 else x, (index + offsets).flatten())
    return flat.reshape(paddle.concat([paddle.shape(index), x_shape[2:]]))


def bilinear_matrix(in_size, out_size, in_len=None, out_len=None, align_corners=False,
                    align_mode=0, scale=None):
    """The linear map of a bilinear resize from ``in_size`` to ``out_size`` samples, as a
    matrix, with the options (and the arithmetic) of ``F.interpolate``.

    ``in_size``/``out_size``: float tensors ``[B]`` (per image sizes) or scalars. With
    ``in_len``/``out_len`` the result ``[B, out_len, in_len]`` is zero in rows ``>= out_size``
    and columns ``>= in_size``, so images of one batch can have their own (cropped) input and
    output sizes; without, it is ``[B, out_size, in_size]``. ``scale`` (a float), when given,
    sets the sampling ratio ``1 / scale`` instead of ``in / out``.
    """
    padded = out_len is not None
    in_len = in_size if in_len is None else in_len
    out_len = out_size if out_len is None else out_len
    in_size, out_size = _float_column(in_size), _float_column(out_size)
    dst = paddle.arange(out_len, dtype='float32').reshape([1, -1])
    if align_corners:
        src = dst * (in_size - 1.) / paddle.clip(out_size - 1., min=1.)
    else:
        ratio = 1. / scale if scale else in_size / out_size
        src = paddle.clip(ratio * (dst + 0.5) - 0.5 if align_mode == 0 else ratio * dst, min=0.)
    lo = paddle.floor(src)
    frac = (src - lo).unsqueeze(2)
    hi = paddle.minimum(lo + 1., in_size - 1.)
    cols = paddle.arange(in_len, dtype='float32').reshape([1, 1, -1])
    weights = (cols == lo.unsqueeze(2)).astype('float32') * (1. - frac) + \
        (cols == hi.unsqueeze(2)).astype('float32') * frac
    return weights * (dst < out_size).astype('float32').unsqueeze(2) if padded else weights


def _float_column(value):
    if isinstance(value, (int, float)):
        return paddle.full([1, 1], float(value), 'float32')
    return paddle.cast(value, 'float32').reshape([-1, 1])


def masks_to_boxes(masks):
    """Tight boxes ``[N, 4]`` (x1, y1, x2, y2; x2/y2 one past the last pixel, so ``x2 - x1`` is
    the width in pixels) of binary masks ``[N, H, W]``; all zeros for an empty mask."""
    rows = masks.any(axis=2).astype('int64')
    cols = masks.any(axis=1).astype('int64')
    # one past the last set pixel as the largest (position + 1) among set pixels: ``flip``
    # of a run-time-sized axis has no ONNX conversion
    y1 = rows.argmax(axis=1)
    y2 = (rows * paddle.arange(1, paddle.shape(rows)[1] + 1, dtype='int64')).max(axis=1)
    x1 = cols.argmax(axis=1)
    x2 = (cols * paddle.arange(1, paddle.shape(cols)[1] + 1, dtype='int64')).max(axis=1)
    nonempty = rows.max(axis=1) > 0
    boxes = paddle.stack([x1, y1, x2, y2], axis=1).astype('float32')
    return boxes * nonempty.astype('float32').unsqueeze(1)
