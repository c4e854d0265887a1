"""Image preprocessing of an exported model, driven by the ``Preprocess`` list of infer_cfg.yml.

Self-contained (numpy + OpenCV): the same arithmetic as the toolkit's evaluation transforms, so
an exported model sees the same tensors it saw in evaluation.
"""
import cv2
import numpy as np

__all__ = ['decode_image', 'Preprocessor', 'collate']


def decode_image(path_or_array):
    """An RGB uint8 image from a file path or an already decoded BGR frame (OpenCV)."""
    if isinstance(path_or_array, np.ndarray):
        return cv2.cvtColor(path_or_array, cv2.COLOR_BGR2RGB)
    image = cv2.imread(path_or_array, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f'{path_or_array}: not a readable image')
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class NormalizeImage:
    def __init__(self, mean, std, is_scale=True, norm_type='mean_std'):
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        self.is_scale = is_scale

    def __call__(self, image, info):
        image = image.astype(np.float32)
        if self.is_scale:
            image /= 255.0
        return (image - self.mean) / self.std


class Resize:
    def __init__(self, target_size, keep_ratio=True, interp=cv2.INTER_LINEAR):
        self.target_size = [target_size] * 2 if isinstance(target_size, int) else target_size
        self.keep_ratio = keep_ratio
        self.interp = interp

    def scales(self, h, w):
        if not self.keep_ratio:
            return self.target_size[0] / h, self.target_size[1] / w
        short, long = min(self.target_size), max(self.target_size)
        scale = min(short / min(h, w), long / max(h, w))
        return int(scale * h + 0.5) / h, int(scale * w + 0.5) / w

    def __call__(self, image, info):
        fy, fx = self.scales(*image.shape[:2])
        image = cv2.resize(image, None, None, fx=fx, fy=fy, interpolation=self.interp)
        info['im_shape'] = np.array(image.shape[:2], np.float32)
        info['scale_factor'] = np.array([fy, fx], np.float32)
        return image


class Permute:
    def __call__(self, image, info):
        return image.transpose((2, 0, 1))


class PadStride:
    """Records the stride; the padding itself happens when images are batched."""

    def __init__(self, stride=32):
        self.stride = stride

    def __call__(self, image, info):
        info['pad_stride'] = self.stride
        return image


OPS = {cls.__name__: cls for cls in (NormalizeImage, Resize, Permute, PadStride)}


class Preprocessor:
    """Runs the ``Preprocess`` ops of infer_cfg.yml on one RGB image."""

    def __init__(self, ops_cfg):
        self.ops = []
        for op in ops_cfg:
            params = dict(op)
            kind = params.pop('type')
            if kind not in OPS:
                raise ValueError(f'infer_cfg.yml: unknown preprocess op {kind!r}')
            self.ops.append(OPS[kind](**params))

    def __call__(self, image):
        info = {'orig_hw': image.shape[:2], 'im_shape': np.array(image.shape[:2], np.float32),
                'scale_factor': np.ones(2, np.float32), 'pad_stride': 1}
        for op in self.ops:
            image = op(image, info)
        return np.ascontiguousarray(image, np.float32), info


def collate(samples):
    """Batch ``(chw image, info)`` pairs: zero-pad to a common size, a multiple of the stride."""
    stride = max(info['pad_stride'] for _, info in samples)
    h = max(image.shape[1] for image, _ in samples)
    w = max(image.shape[2] for image, _ in samples)
    h, w = -(-h // stride) * stride, -(-w // stride) * stride
    batch = np.zeros((len(samples), 3, h, w), np.float32)
    for i, (image, _) in enumerate(samples):
        batch[i, :, :image.shape[1], :image.shape[2]] = image
    return {'image': batch,
            'im_shape': np.stack([info['im_shape'] for _, info in samples]),
            'scale_factor': np.stack([info['scale_factor'] for _, info in samples])}
