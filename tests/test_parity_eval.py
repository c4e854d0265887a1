"""solov2_r50_fpn_1x_coco with seeded weights matches the reference, stage by stage.

Fixture and tolerances: ../shared/reference/parity/README.md.
"""
import os

import numpy as np
import paddle
import pytest

from conftest import PARITY
from fixtures.parity import seeded_model, unpack

pytestmark = pytest.mark.skipif(not os.path.isdir(PARITY), reason='../shared is not present')


def projection(x):
    x = np.asarray(x, np.float64)
    c = x.shape[1]
    v = np.random.RandomState(20261126 + c).standard_normal(c) / np.sqrt(c)
    return np.einsum('nchw,c->nhw', x, v)


@pytest.fixture(scope='module')
def ref():
    return np.load(os.path.join(PARITY, 'eval_solov2_r50_fpn_1x_coco.npz'))


@pytest.fixture(scope='module')
def stages(ref):
    """Every intermediate output of the project's model on the fixture's input."""
    model = seeded_model('solov2_r50_fpn_1x_coco')
    with paddle.no_grad():
        backbone = model.backbone(paddle.to_tensor(ref['image']))
        fpn = model.neck(backbone)
        mask_feat = model.mask_head(fpn)
        cate_logits, kernels = model.solov2_head(fpn)
        cate_scores = [model.solov2_head.category_scores(c) for c in cate_logits]
        out = model.solov2_head.get_prediction(cate_logits, kernels, mask_feat,
                                               paddle.to_tensor(ref['im_shape']),
                                               paddle.to_tensor(ref['scale_factor']))
    numpy = lambda xs: [x.numpy() for x in xs]                        # noqa: E731
    return dict(backbone=numpy(backbone), fpn=numpy(fpn), mask_feat=mask_feat.numpy(),
                cate_logits=numpy(cate_logits), kernels=numpy(kernels),
                cate_scores=numpy(cate_scores), out={k: v.numpy() for k, v in out.items()})


def assert_close_scaled(mine, theirs):
    np.testing.assert_allclose(mine, theirs, rtol=0,
                               atol=1e-4 * max(1., float(np.abs(theirs).max())))


def test_backbone(stages, ref):
    assert [list(x.shape) for x in stages['backbone']] == ref['backbone_shapes'].tolist()
    for k, x in enumerate(stages['backbone']):
        assert_close_scaled(projection(x), ref[f'backbone_l{k}_proj'])


def test_fpn(stages, ref):
    assert [list(x.shape) for x in stages['fpn']] == ref['fpn_shapes'].tolist()
    for k, x in enumerate(stages['fpn']):
        assert_close_scaled(projection(x), ref[f'fpn_l{k}_proj'])
        assert_close_scaled(x[:, :4], ref[f'fpn_l{k}_ch0_4'])


def test_mask_features(stages, ref):
    x = stages['mask_feat']
    assert list(x.shape) == ref['mask_feat_shape'].tolist()
    assert_close_scaled(projection(x), ref['mask_feat_proj'])
    assert_close_scaled(x[:, :8], ref['mask_feat_ch0_8'])
    np.testing.assert_allclose(x.mean(axis=(0, 2, 3)), ref['mask_feat_chan_mean'], atol=1e-5)


def test_category_logits_scores_and_kernels(stages, ref):
    for k in range(5):
        np.testing.assert_allclose(stages['cate_logits'][k], ref[f'cate_logit_l{k}'],
                                   atol=1e-4, rtol=1e-3)
        np.testing.assert_allclose(stages['kernels'][k], ref[f'kernel_pred_l{k}'],
                                   atol=1e-4, rtol=1e-3)
        scores, theirs = stages['cate_scores'][k], ref[f'cate_pred_l{k}']
        tie = point_nms_near_ties(ref[f'cate_logit_l{k}'])
        assert tie.mean() < 0.05         # the rest is compared exactly
        np.testing.assert_allclose(scores[~tie], theirs[~tie], atol=1e-5)
        np.testing.assert_array_equal(scores[~tie] > 0, theirs[~tie] > 0)
        np.testing.assert_array_equal(scores > 0.1, theirs > 0.1)


def point_nms_near_ties(logits, tolerance=1e-5):
    """``[B, S, S, C]``: cells whose score is within round-off of the largest of the upper,
    left and upper-left neighbours. Point NMS keeps a cell only when it equals that window's
    maximum, so at a near tie the decision depends on the CPU's summation order."""
    heat = 1. / (1. + np.exp(-logits.astype(np.float64).transpose(0, 2, 3, 1)))
    padded = np.pad(heat, ((0, 0), (1, 0), (1, 0), (0, 0)), constant_values=-np.inf)
    neighbours = np.maximum(np.maximum(padded[:, :-1, 1:], padded[:, 1:, :-1]),
                            padded[:, :-1, :-1])
    return np.abs(neighbours - heat) < tolerance


def test_final_outputs(stages, ref):
    out = stages['out']
    real = ref['cate_score'] >= 0.05            # the reference's zero-score dummy excluded
    assert real.sum() == 45
    assert out['bbox_num'].tolist() == [45]     # no dummy here
    np.testing.assert_array_equal(out['cate_label'], ref['cate_label'][real])
    np.testing.assert_allclose(out['cate_score'], ref['cate_score'][real], atol=1e-4)
    mine = out['segm'].astype(bool)
    theirs = unpack(ref['segm_bits'], ref['segm_shape'])[real].astype(bool)
    assert mine.shape == theirs.shape == (45, 404, 640)
    inter = (mine & theirs).sum((1, 2))
    union = (mine | theirs).sum((1, 2))
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    assert iou.min() >= 0.99
    np.testing.assert_array_equal(mine.sum((1, 2)) == 0, ref['segm_area'][real] == 0)


def test_matrix_nms_alone(ref):
    from ppdet.modeling import MaskMatrixNMS
    masks = unpack(ref['nms_in_masks_bits'], ref['nms_in_masks_shape'])
    real = ref['nms_in_scores'] > 0              # rows 137, 138: the reference's padding
    n = int(real.sum())
    assert n == 137
    index, scores, keep = MaskMatrixNMS(pre_nms_top_n=500, post_nms_top_n=100)(
        paddle.to_tensor(masks[:n].reshape(1, n, -1), 'float32'),
        paddle.to_tensor(ref['nms_in_labels'][None, :n]),
        paddle.to_tensor(ref['nms_in_scores'][None, :n]), paddle.ones([1, n], 'bool'))
    keep = keep.numpy()[0]
    expected = ref['nms_out_scores'] >= 0.05
    np.testing.assert_array_equal(index.numpy()[0][keep], ref['nms_out_index'][expected])
    np.testing.assert_allclose(scores.numpy()[0][keep], ref['nms_out_scores'][expected],
                               atol=1e-5)
