"""CoordConv: two extra channels holding the normalised x and y position of each pixel."""
import paddle


def add_coord_channels(x):
    """Append x then y coordinates (``linspace(-1, 1)``, endpoints included) after the channels.

    ``[B, C, H, W]`` -> ``[B, C + 2, H, W]``; sizes are read at run time so the graph exports
    with dynamic spatial dimensions.
    """
    shape = paddle.shape(x)
    b, h, w = shape[0], shape[2], shape[3]
    xs = paddle.linspace(-1, 1, w, dtype=x.dtype)
    ys = paddle.linspace(-1, 1, h, dtype=x.dtype)
    grid_y, grid_x = paddle.meshgrid(ys, xs)
    coords = paddle.stack([grid_x, grid_y]).unsqueeze(0).expand([b, 2, h, w])
    return paddle.concat([x, coords], axis=1)
