"""The eval entry compiles with to_static (full graph) and decodes batches image by image."""
import os
import sys

import numpy as np
import paddle
import pytest
from paddle.static import InputSpec

from ppdet.modeling import FPN, ResNet, SOLOv2, SOLOv2Head, SOLOv2MaskHead

from conftest import PARITY

pytestmark = pytest.mark.skipif(not os.path.isdir(PARITY), reason='../shared is not present')

INPUT_SPEC = [InputSpec([None, 3, -1, -1], 'float32', 'image'),
              InputSpec([None, 2], 'float32', 'im_shape'),
              InputSpec([None, 2], 'float32', 'scale_factor')]


@pytest.fixture(scope='module')
def model():
    """A small model with the fixture's seeded weights, so that it detects something."""
    sys.path.insert(0, PARITY)
    import seeded_weights
    backbone = ResNet(depth=18, freeze_at=-1, freeze_norm=False)
    neck = FPN(**FPN.from_config(None, backbone.out_shape), out_channel=32)
    head = SOLOv2Head(num_classes=4, in_channels=32, seg_feat_channels=32, stacked_convs=2,
                      kernel_out_channels=32)
    model = SOLOv2(backbone, neck, head, SOLOv2MaskHead(in_channels=32, mid_channels=32,
                                                        out_channels=32))
    seeded_weights.apply_to_layer(model)
    model.eval()
    return model


@pytest.fixture(scope='module')
def compiled(model):
    """One static program for every input size (dynamic spatial dimensions)."""
    return paddle.jit.to_static(model.predict, input_spec=INPUT_SPEC, full_graph=True)


def inputs(height=128, width=160):
    rng = np.random.RandomState(0)
    return (paddle.to_tensor(rng.standard_normal((2, 3, height, width)), 'float32'),
            paddle.to_tensor([[128, 150], [100, 160]], 'float32'),
            paddle.to_tensor([[1.0, 1.0], [0.5, 0.6]], 'float32'))


@pytest.mark.parametrize('size', [(128, 160), (96, 192)])
def test_static_graph_matches_eager(model, compiled, size):
    args = inputs(*size)
    with paddle.no_grad():
        eager = model.predict(*args)
        static = compiled(*args)
    assert int(eager['bbox_num'].sum()) > 0
    assert sorted(static) == sorted(eager) == ['bbox', 'bbox_num', 'cate_label', 'cate_score',
                                               'num_above_score', 'num_candidates', 'segm']
    for key, value in eager.items():
        assert static[key].dtype == value.dtype, key
        np.testing.assert_allclose(static[key].numpy(), value.numpy(), atol=1e-5, err_msg=key)


def test_batch_is_decoded_image_by_image_at_each_original_size(model):
    image, im_shape, scale_factor = inputs()
    with paddle.no_grad():
        cate, kernels, mask_feat = model.extract(image)
        both = model.solov2_head.get_prediction(cate, kernels, mask_feat, im_shape, scale_factor)
        alone = [model.solov2_head.get_prediction([c[i:i + 1] for c in cate],
                                                  [k[i:i + 1] for k in kernels],
                                                  mask_feat[i:i + 1], im_shape[i:i + 1],
                                                  scale_factor[i:i + 1]) for i in range(2)]
    counts = both['bbox_num'].numpy().tolist()
    assert counts == [int(a['bbox_num'][0]) for a in alone] and min(counts) > 0
    # original sizes: 128x150 at scale 1, and 100x160 at scales (0.5, 0.6) -> 200x267
    assert alone[0]['segm'].shape[1:] == [128, 150]
    assert alone[1]['segm'].shape[1:] == [200, 267] and both['segm'].shape[1:] == [200, 267]
    start = 0
    for count, single in zip(counts, alone):
        part = slice(start, start + count)
        h, w = single['segm'].shape[1:]
        for key in ('cate_label', 'cate_score', 'bbox'):
            np.testing.assert_allclose(both[key].numpy()[part], single[key].numpy(), atol=1e-6)
        np.testing.assert_array_equal(both['segm'].numpy()[part, :h, :w], single['segm'].numpy())
        outside = both['segm'].numpy()[part].copy()
        outside[:, :h, :w] = 0
        assert not outside.any()
        start += count
    scores = both['cate_score'].numpy()
    assert (np.diff(scores[:counts[0]]) <= 0).all() and (scores >= 0.05).all()


def test_boxes_are_the_tight_boxes_of_the_masks(model):
    with paddle.no_grad():
        out = model.predict(*inputs())
    segm, bbox = out['segm'].numpy().astype(bool), out['bbox'].numpy()
    np.testing.assert_array_equal(bbox[:, 0], out['cate_label'].numpy())
    np.testing.assert_array_equal(bbox[:, 1], out['cate_score'].numpy())
    for mask, box in zip(segm, bbox[:, 2:]):
        ys, xs = np.nonzero(mask)
        expected = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] if len(ys) else [0] * 4
        np.testing.assert_array_equal(box, expected)


def test_threshold_counts_follow_each_stage(model):
    image, im_shape, scale_factor = inputs()
    head = model.solov2_head
    with paddle.no_grad():
        out = model.predict(image, im_shape, scale_factor)
        cate, _, _ = model.extract(image)
    scores = paddle.concat([head.category_scores(c).reshape([2, -1]) for c in cate], axis=1)
    above = np.minimum((scores.numpy() > head.score_threshold).sum(1),
                       head.mask_nms.pre_nms_top_n)
    np.testing.assert_array_equal(out['num_above_score'].numpy(), above)
    candidates, kept = out['num_candidates'].numpy(), out['bbox_num'].numpy()
    assert (above >= candidates).all() and (candidates > kept).all() and (kept > 0).all()
