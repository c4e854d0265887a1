"""Export-friendly helpers of the SOLOv2 post-processing: mask resizing and mask boxes."""
import paddle


def bilinear_matrix(in_size, out_size, in_len, out_len):
    """The linear map of a bilinear resize (``align_corners=False``, half-pixel centres, as
    ``F.interpolate``) from ``in_size`` to ``out_size`` samples, as a matrix.

    ``in_size``/``out_size``: float tensors ``[B]`` (per image sizes); the result
    ``[B, out_len, in_len]`` is zero in rows ``>= out_size`` and columns ``>= in_size``, so
    images of one batch can have their own (cropped) input and output sizes.
    """
    in_size = in_size.astype('float32').reshape([-1, 1])
    out_size = out_size.astype('float32').reshape([-1, 1])
    dst = paddle.arange(out_len, dtype='float32').reshape([1, -1])
    src = paddle.clip((in_size / out_size) * (dst + 0.5) - 0.5, min=0.)
    lo = paddle.floor(src)
    frac = (src - lo).unsqueeze(2)
    hi = paddle.minimum(lo + 1., in_size - 1.)
    cols = paddle.arange(in_len, dtype='float32').reshape([1, 1, -1])
    weights = (cols == lo.unsqueeze(2)).astype('float32') * (1. - frac) + \
        (cols == hi.unsqueeze(2)).astype('float32') * frac
    return weights * (dst < out_size).astype('float32').unsqueeze(2)


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
