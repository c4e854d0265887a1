"""Training loss and gradients of seeded solov2_r50_fpn_1x_coco match the reference.

One forward + backward at 800x1184, batch 2 (about 40 s on 2 cores). The network input is
rebuilt here with OpenCV and checked bit for bit against the fixture's checksums; the targets
are the fixture's own. See ../shared/reference/parity/README.md, section 3.
"""
import os
import sys
import zlib

import cv2
import numpy as np
import paddle
import pytest

from ppdet.core.workspace import create, load_config

from conftest import PARITY, ROOT, SHARED_DATA

pytestmark = pytest.mark.skipif(not os.path.isdir(PARITY), reason='../shared is not present')

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def unpack(bits, shape):
    shape = tuple(int(s) for s in shape)
    return np.unpackbits(bits)[:int(np.prod(shape))].reshape(shape)


def train_images(t):
    """Batch 0's network input: decode, resize (uint8), normalise, pad."""
    batch, _, height, width = t['b0__image_shape']
    images = np.zeros((batch, 3, height, width), np.float32)
    for i, name in enumerate(t['b0__im_file']):
        rgb = cv2.cvtColor(cv2.imread(os.path.join(SHARED_DATA, 'labelme_voc3', 'images', name)),
                           cv2.COLOR_BGR2RGB)
        h, w = t['b0__resized_hw'][i]
        rgb = cv2.resize(rgb, None, None, fx=w / rgb.shape[1], fy=h / rgb.shape[0],
                         interpolation=cv2.INTER_LINEAR)
        image = rgb.astype(np.float32)
        image *= 1. / 255.
        image -= MEAN
        image /= STD
        images[i, :, :h, :w] = image.transpose(2, 0, 1)
        assert zlib.crc32(images[i].tobytes()) == t['b0__image_crc32'][i]
    return images


def test_losses_and_gradients_match_reference():
    sys.path.insert(0, PARITY)
    import seeded_weights
    t = np.load(os.path.join(PARITY, 'targets_labelme_voc3.npz'))
    ref = np.load(os.path.join(PARITY, 'loss_labelme_voc3.npz'))
    batch = {'image': paddle.to_tensor(train_images(t)),
             'im_shape': paddle.to_tensor(t['b0__im_shape']),
             'scale_factor': paddle.to_tensor(t['b0__scale_factor']),
             'im_id': paddle.to_tensor(t['b0__im_id']).reshape([-1, 1]),
             'cate_label': [paddle.to_tensor(t[f'b0__cate_label{k}']) for k in range(5)],
             'ins_label': [paddle.to_tensor(unpack(t[f'b0__ins_label{k}_bits'],
                                                   t[f'b0__ins_label{k}_shape']))
                           for k in range(5)],
             'grid_order': [paddle.to_tensor(t[f'b0__grid_order{k}']) for k in range(5)],
             'fg_num': paddle.to_tensor(t['b0__fg_num'])}
    cfg = load_config(os.path.join(ROOT, 'configs', 'solov2', 'solov2_r50_fpn_1x_coco.yml'))
    model = create(cfg.architecture, cfg)
    seeded_weights.apply_to_layer(model)
    model.train()
    out = model(batch)
    out['loss'].backward()

    for key in ('loss_ins', 'loss_cate', 'loss'):
        np.testing.assert_allclose(float(out[key]), ref[key][0], rtol=1e-4, err_msg=key)
    params = dict(model.named_parameters())
    for name, shape, (total, norm, max_abs, proj) in zip(ref['grad_names'], ref['grad_shapes'],
                                                         ref['grad_stats']):
        grad = params[name].grad.numpy().astype(np.float64)
        assert 'x'.join(map(str, grad.shape)) == shape
        weights = np.random.RandomState(20261126).standard_normal(grad.size)
        tolerance = 1e-3 * norm
        assert abs(grad.sum() - total) <= tolerance, name
        assert abs(np.sqrt((grad ** 2).sum()) - norm) <= tolerance, name
        assert abs((grad.reshape(-1) * weights).sum() - proj) <= tolerance, name
        np.testing.assert_allclose(np.abs(grad).max(), max_abs, rtol=1e-3, err_msg=name)
    frozen = params['backbone.res2.res2a.branch2a.conv.weight']
    assert frozen.grad is None                     # stem and res2 are frozen in this config
