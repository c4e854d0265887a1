"""Model building blocks against hand-computed values and plain numpy transcriptions."""
import math

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from ppdet.modeling import FPN, MaskMatrixNMS, ResNet, SOLOv2Head, SOLOv2Loss, SOLOv2MaskHead
from ppdet.modeling.heads.solov2_head import point_nms
from ppdet.modeling.layers.coord_conv import add_coord_channels
from ppdet.modeling.layers.drop_block import DropBlock
from ppdet.modeling.losses.solov2_loss import dice_loss, sigmoid_focal_loss
from ppdet.modeling.ops import bilinear_matrix, masks_to_boxes


# ---------------------------------------------------------------- losses

def test_dice_loss_by_hand():
    probs = paddle.to_tensor([[0.5, 0.5, 0.5, 0.5]])
    target = paddle.to_tensor([[1., 1., 0., 0.]])
    # 1 - 2 * 1 / ((1 + 0.001) + (2 + 0.001))
    np.testing.assert_allclose(dice_loss(probs, target).numpy(), [1 - 2 / 3.002], rtol=1e-6)


def test_instance_loss_averages_over_rows_with_a_positive_pixel_only():
    logits = paddle.zeros([3, 4])                   # p = 0.5 everywhere
    targets = paddle.to_tensor([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]], dtype='uint8')
    loss = SOLOv2Loss(ins_loss_weight=3.0).instance_loss(logits, targets)
    dice_a, dice_b = 1 - 2 / 3.002, 1 - 2 * 2 / (1.001 + 4.001)
    np.testing.assert_allclose(float(loss), 3.0 * (dice_a + dice_b) / 2, rtol=1e-6)


def test_focal_loss_by_hand_and_normalised_by_positives_plus_one():
    logits = paddle.zeros([4, 3])
    labels = paddle.to_tensor([0, 2, 0, 3])          # two positive cells, classes 1 and 2
    loss = SOLOv2Loss().category_loss(logits, labels, paddle.to_tensor(2))
    # p = 0.5: each element is alpha_t * 0.25 * ln 2; 2 positives, 10 negatives
    expected = (2 * 0.25 + 10 * 0.75) * 0.25 * math.log(2) / (2 + 1)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6)


def test_focal_loss_matches_paddles_sigmoid_focal_loss():
    rng = np.random.RandomState(0)
    logits = paddle.to_tensor(rng.standard_normal((50, 7)) * 3, 'float32')
    targets = paddle.to_tensor(rng.rand(50, 7) < 0.2, 'float32')
    ours = sigmoid_focal_loss(logits, targets, 0.25, 2.0).sum() / 5.
    theirs = F.sigmoid_focal_loss(logits, targets, normalizer=paddle.to_tensor([5.]),
                                  alpha=0.25, gamma=2.0)
    np.testing.assert_allclose(float(ours), float(theirs), rtol=1e-5)


def test_losses_run_in_float32_for_half_precision_inputs():
    loss = SOLOv2Loss()(paddle.zeros([2, 4], 'float16'),
                        paddle.to_tensor([[1, 0, 0, 0], [0, 0, 0, 0]], dtype='uint8'),
                        paddle.zeros([3, 2], 'float16'), paddle.to_tensor([0, 1, 2]),
                        paddle.to_tensor(2))
    assert all(v.dtype == paddle.float32 for v in loss.values())


# ---------------------------------------------------------------- Matrix NMS

def matrix_nms_numpy(masks, labels, scores, kernel='gaussian', sigma=2.0, update_threshold=0.05):
    """The formula of SOLOV2_SPEC 10.3, one pair at a time."""
    order = np.argsort(-scores, kind='stable')
    masks, labels, scores = masks[order].astype(np.float64), labels[order], scores[order]
    n = len(scores)
    iou = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            if labels[i] == labels[j]:
                inter = (masks[i] * masks[j]).sum()
                iou[i, j] = inter / (masks[i].sum() + masks[j].sum() - inter)
    comp = iou.max(axis=0)
    decay = np.ones(n)
    for j in range(n):
        values = []
        for i in range(n):
            if kernel == 'gaussian':
                values.append(np.exp(-sigma * iou[i, j] ** 2) / np.exp(-sigma * comp[i] ** 2))
            else:
                values.append((1 - iou[i, j]) / (1 - comp[i]))
        decay[j] = min(values)
    new_scores = scores * decay
    kept = [(order[j], new_scores[j]) for j in range(n) if new_scores[j] >= update_threshold]
    return sorted(kept, key=lambda t: -t[1]), decay


def random_masks(rng, n, h=12, w=16):
    masks = np.zeros((n, h, w), np.float32)
    for k in range(n):
        y, x = rng.randint(0, h - 4), rng.randint(0, w - 4)
        masks[k, y:y + rng.randint(4, 10), x:x + rng.randint(4, 12)] = 1
    return masks


@pytest.mark.parametrize('kernel', ['gaussian', 'linear'])
def test_matrix_nms_matches_numpy_transcription(kernel):
    rng = np.random.RandomState(4)
    n = 40
    masks = random_masks(rng, n)
    labels = rng.randint(0, 3, n)
    scores = rng.uniform(0.05, 0.25, n).astype(np.float32)
    expected, expected_decay = matrix_nms_numpy(masks, labels, scores, kernel)
    assert len(expected) <= n - 4                        # some masks are suppressed

    nms = MaskMatrixNMS(kernel=kernel, post_nms_top_n=n)
    index, out_scores, keep = nms(paddle.to_tensor(masks.reshape(1, n, -1)),
                                  paddle.to_tensor(labels[None]), paddle.to_tensor(scores[None]),
                                  paddle.ones([1, n], 'bool'))
    keep = keep.numpy()[0]
    assert keep.sum() == len(expected)
    np.testing.assert_array_equal(index.numpy()[0][keep], [k for k, _ in expected])
    np.testing.assert_allclose(out_scores.numpy()[0][keep], [s for _, s in expected], rtol=1e-5)

    order = np.argsort(-scores, kind='stable')
    flat = masks[order].reshape(n, -1)
    inter = flat @ flat.T
    area = flat.sum(1)
    iou = inter / (area[:, None] + area[None] - inter)
    same = (labels[order][:, None] == labels[order][None]).astype(np.float32)
    decay = nms.decay(paddle.to_tensor(iou[None], 'float32'), paddle.to_tensor(same[None]))
    np.testing.assert_allclose(decay.numpy()[0], expected_decay, rtol=1e-5)


def test_matrix_nms_ignores_invalid_slots_and_caps_results():
    rng = np.random.RandomState(4)
    n = 30
    masks, labels = random_masks(rng, n), rng.randint(0, 2, n)
    scores = rng.uniform(0.2, 1.0, n).astype(np.float32)
    valid = rng.rand(n) < 0.6
    expected, _ = matrix_nms_numpy(masks[valid], labels[valid], scores[valid])
    expected_rows = np.flatnonzero(valid)[[k for k, _ in expected]]
    index, _, keep = MaskMatrixNMS(post_nms_top_n=5)(
        paddle.to_tensor(masks.reshape(1, n, -1), 'float16'), paddle.to_tensor(labels[None]),
        paddle.to_tensor(scores[None]), paddle.to_tensor(valid[None]))
    assert index.shape == [1, 5] and keep.numpy().all()
    np.testing.assert_array_equal(index.numpy()[0], expected_rows[:5])


# ---------------------------------------------------------------- head pieces

def test_coord_conv_appends_x_then_y_channels():
    out = add_coord_channels(paddle.zeros([2, 5, 3, 4])).numpy()
    assert out.shape == (2, 7, 3, 4)
    np.testing.assert_allclose(out[1, 5], np.tile([-1, -1 / 3, 1 / 3, 1], (3, 1)), atol=1e-6)
    np.testing.assert_allclose(out[1, 6], np.tile([[-1], [0], [1]], (1, 4)), atol=1e-6)


def test_point_nms_keeps_maxima_of_the_up_left_window():
    heat = paddle.to_tensor([[[[0.1, 0.3], [0.2, 0.25]]]])
    # each cell is compared with its upper, left and upper-left neighbours only:
    # (1,1) loses to (0,1) above it; (1,0) beats (0,0); (0,1) beats (0,0)
    np.testing.assert_allclose(point_nms(heat).numpy()[0, 0], [[0.1, 0.3], [0.2, 0.]])


def small_head(**kwargs):
    args = dict(num_classes=3, in_channels=32, seg_feat_channels=32, stacked_convs=2,
                kernel_out_channels=32)
    args.update(kwargs)
    return SOLOv2Head(**args)


def fpn_maps(batch, height, width, channels=32):
    return [paddle.rand([batch, channels, -(-height // s), -(-width // s)])
            for s in (4, 8, 16, 32, 64)]


def test_head_resamples_every_level_to_its_grid():
    head = small_head(num_grids=[10, 8, 6, 4, 3])
    feats = fpn_maps(2, 160, 96)
    inputs = head.level_inputs(feats)
    assert [x.shape[2:] for x in inputs] == [[20, 12], [20, 12], [10, 6], [5, 3], [5, 3]]
    cate, kernels = head(feats)
    assert [c.shape for c in cate] == [[2, 3, s, s] for s in (10, 8, 6, 4, 3)]
    assert [k.shape for k in kernels] == [[2, 32, s, s] for s in (10, 8, 6, 4, 3)]
    scores = head.category_scores(cate[0])
    assert scores.shape == [2, 10, 10, 3] and float(scores.min()) >= 0


def test_mask_head_merges_levels_at_stride_4():
    head = SOLOv2MaskHead(in_channels=32, mid_channels=32, out_channels=64)
    out = head(fpn_maps(1, 128, 96))
    assert out.shape == [1, 64, 32, 24] and float(out.min()) >= 0


def test_category_bias_is_the_focal_prior():
    head = small_head()
    np.testing.assert_allclose(head.solo_cate.bias.numpy(), -math.log(99), rtol=1e-6)


def test_bilinear_matrix_equals_interpolate_crop_interpolate():
    rng = np.random.RandomState(0)
    x = paddle.to_tensor(rng.rand(1, 1, 7, 9), 'float32')
    up = F.interpolate(x, size=[28, 36], mode='bilinear', align_corners=False)
    expected = F.interpolate(up[:, :, :25, :33], size=[41, 17], mode='bilinear',
                             align_corners=False).numpy()[0, 0]
    rows = bilinear_matrix(paddle.to_tensor([25.]), paddle.to_tensor([41.]), 28, 45).numpy()[0] \
        @ bilinear_matrix(paddle.to_tensor([7.]), paddle.to_tensor([28.]), 7, 28).numpy()[0]
    cols = bilinear_matrix(paddle.to_tensor([33.]), paddle.to_tensor([17.]), 36, 17).numpy()[0] \
        @ bilinear_matrix(paddle.to_tensor([9.]), paddle.to_tensor([36.]), 9, 36).numpy()[0]
    out = rows @ x.numpy()[0, 0] @ cols.T
    np.testing.assert_allclose(out[:41], expected, atol=1e-5)
    assert not out[41:].any()                    # rows past the output size are empty


def test_masks_to_boxes_tight_and_empty():
    masks = np.zeros((2, 6, 8), bool)
    masks[0, 1:4, 2:7] = True
    boxes = masks_to_boxes(paddle.to_tensor(masks)).numpy()
    np.testing.assert_array_equal(boxes, [[2, 1, 7, 4], [0, 0, 0, 0]])


def test_drop_block_is_identity_in_eval_and_drops_squares_in_training():
    block = DropBlock(block_size=3, keep_prob=0.5)
    x = paddle.ones([1, 4, 16, 16])
    block.eval()
    assert bool((block(x) == x).all())
    block.train()
    paddle.seed(1)
    y = block(x).numpy()
    assert (y == 0).any() and y.max() > 1          # dropped, and the rest rescaled


# ---------------------------------------------------------------- backbone / neck

def test_resnet18_shapes_names_and_fpn_wiring():
    backbone = ResNet(depth=18, freeze_at=-1, freeze_norm=False)
    assert [tuple(s) for s in backbone.out_shape] == [(64, 4), (128, 8), (256, 16), (512, 32)]
    assert 'res2.res2a.short.conv.weight' in backbone.state_dict()
    feats = backbone(paddle.rand([1, 3, 64, 96]))
    assert [f.shape for f in feats] == [[1, 64, 16, 24], [1, 128, 8, 12], [1, 256, 4, 6],
                                        [1, 512, 2, 3]]
    neck = FPN(**FPN.from_config(None, backbone.out_shape), out_channel=32)
    outs = neck(feats)
    assert [o.shape[2:] for o in outs] == [[16, 24], [8, 12], [4, 6], [2, 3], [1, 2]]
    assert [s.stride for s in neck.out_shape] == [4, 8, 16, 32, 64]


def test_resnet_freezing_lr_multipliers_and_norm_decay():
    net = ResNet(depth=50, variant='d', freeze_at=0, freeze_norm=False,
                 lr_mult_list=[0.05, 0.05, 0.1, 0.15], dcn_v2_stages=[3])
    state = net.state_dict()
    assert state['conv1.conv1_1.conv.weight'].stop_gradient
    assert state['res2.res2a.branch2a.conv.weight'].stop_gradient
    assert not state['res3.res3a.branch2a.norm.weight'].stop_gradient
    assert state['res4.res4a.branch2b.conv.weight'].optimize_attr['learning_rate'] == 0.1
    assert state['res4.res4a.branch2b.norm.weight'].optimize_attr['learning_rate'] == 0.1
    assert state['res4.res4a.branch2b.norm.weight'].regularizer._coeff == 0
    assert state['res4.res4a.branch2a.conv.weight'].regularizer is None    # global decay
    assert 'res5.res5a.branch2b.conv_offset.weight' in state
    assert not net.stages[0][0].branch2a.norm._use_global_stats

    frozen = ResNet(depth=50, freeze_norm=True)
    norm = frozen.stages[1][0].branch2a.norm
    assert norm._use_global_stats and norm.weight.stop_gradient
    assert norm.weight.optimize_attr['learning_rate'] == 0


def test_head_dcn_biases_learn_twice_as_fast_without_decay():
    head = small_head(dcn_v2_stages=[0])
    state = head.state_dict()
    for key in ('bbox_head.kernel_convs.0.conv.conv_offset.bias',
                'bbox_head.kernel_convs.0.conv.conv_dcn.bias'):
        assert state[key].optimize_attr['learning_rate'] == 2.0
        assert state[key].regularizer._coeff == 0
    assert state['bbox_head.kernel_convs.0.conv.conv_offset.weight'].regularizer is None
    assert state['bbox_head.kernel_convs.0.norm.weight'].regularizer._coeff == 0


def test_matrix_nms_with_fewer_inputs_than_slots_uses_the_best_scores():
    rng = np.random.RandomState(5)
    n = 30
    masks, labels = random_masks(rng, n), rng.randint(0, 2, n)
    scores = rng.uniform(0.2, 1.0, n).astype(np.float32)
    best = np.argsort(-scores, kind='stable')[:12]
    expected, _ = matrix_nms_numpy(masks[best], labels[best], scores[best])
    index, out_scores, keep = MaskMatrixNMS(pre_nms_top_n=12, post_nms_top_n=12)(
        paddle.to_tensor(masks.reshape(1, n, -1)), paddle.to_tensor(labels[None]),
        paddle.to_tensor(scores[None]), paddle.ones([1, n], 'bool'))
    keep = keep.numpy()[0]
    np.testing.assert_array_equal(index.numpy()[0][keep], best[[k for k, _ in expected]])
    np.testing.assert_allclose(out_scores.numpy()[0][keep], [s for _, s in expected], rtol=1e-5)


def test_matrix_nms_returns_fixed_slots_for_few_candidates():
    masks = np.zeros((1, 3, 16), np.float32)
    masks[0, 0, :8] = masks[0, 1, :7] = masks[0, 2, 8:] = 1
    index, scores, keep = MaskMatrixNMS(post_nms_top_n=100)(
        paddle.to_tensor(masks), paddle.to_tensor([[1, 1, 1]]),
        paddle.to_tensor([[0.9, 0.8, 0.5]]), paddle.to_tensor([[True, True, True]]))
    assert index.shape == [1, 100] and keep.numpy().sum() == 3
    np.testing.assert_array_equal(index.numpy()[0, :3], [0, 2, 1])   # mask 1 decayed below 2
    iou = 7 / 8
    np.testing.assert_allclose(scores.numpy()[0, :3],
                               [0.9, 0.5, 0.8 * math.exp(-2 * iou ** 2)], rtol=1e-6)
