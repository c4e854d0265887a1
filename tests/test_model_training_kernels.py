"""The training-only fast paths compute what paddle's own ops compute, forward and backward."""
import numpy as np
import paddle
import paddle.nn.functional as F

from ppdet.modeling import SOLOv2MaskHead
from ppdet.modeling.layers.train_ops import add_channel_bias, upsample_bilinear_2x, \
    upsample_nearest_2x
from ppdet.modeling.necks.fpn import FPN


def leaf(array):
    tensor = paddle.to_tensor(array)
    tensor.stop_gradient = False
    return tensor


def grads_of(fn, inputs, upstream):
    for tensor in inputs:
        tensor.clear_gradient()
    out = fn(*inputs)
    out.backward(upstream)
    return out.numpy(), [tensor.grad.numpy() for tensor in inputs]


def test_nearest_upsample_matches_interpolate():
    rng = np.random.RandomState(0)
    x = leaf(rng.standard_normal((2, 3, 5, 7)).astype('float32'))
    upstream = paddle.to_tensor(rng.standard_normal((2, 3, 10, 14)).astype('float32'))
    ours, (our_grad,) = grads_of(upsample_nearest_2x, [x], upstream)
    theirs, (their_grad,) = grads_of(
        lambda t: F.interpolate(t, scale_factor=2., mode='nearest'), [x], upstream)
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_allclose(our_grad, their_grad, rtol=1e-6, atol=1e-6)


def test_bilinear_upsample_matches_interpolate():
    rng = np.random.RandomState(2)
    for shape in [(2, 3, 5, 7), (1, 2, 1, 4)]:
        x = leaf(rng.standard_normal(shape).astype('float32'))
        upstream = paddle.to_tensor(rng.standard_normal(
            shape[:2] + (2 * shape[2], 2 * shape[3])).astype('float32'))
        ours, (our_grad,) = grads_of(upsample_bilinear_2x, [x], upstream)
        theirs, (their_grad,) = grads_of(lambda t: F.interpolate(
            t, scale_factor=2, mode='bilinear', align_corners=False), [x], upstream)
        np.testing.assert_array_equal(ours, theirs)
        np.testing.assert_allclose(our_grad, their_grad, rtol=1e-5, atol=1e-5)


def test_channel_bias_matches_broadcast_add_and_allows_a_frozen_side():
    rng = np.random.RandomState(1)
    x = leaf(rng.standard_normal((2, 3, 4, 5)).astype('float32'))
    bias = leaf(rng.standard_normal(3).astype('float32'))
    upstream = paddle.to_tensor(rng.standard_normal((2, 3, 4, 5)).astype('float32'))
    ours, our_grads = grads_of(add_channel_bias, [x, bias], upstream)
    theirs, their_grads = grads_of(lambda t, b: t + b.reshape([1, -1, 1, 1]), [x, bias],
                                   upstream)
    np.testing.assert_array_equal(ours, theirs)
    for mine, want in zip(our_grads, their_grads):
        np.testing.assert_allclose(mine, want, rtol=1e-5, atol=1e-5)
    for frozen, other in ((bias, x), (x, bias)):      # a frozen layer's bias, a frozen input
        frozen.stop_gradient = True
        other.clear_gradient()
        add_channel_bias(x, bias).backward(upstream)
        np.testing.assert_allclose(other.grad.numpy(), their_grads[0 if other is x else 1],
                                   rtol=1e-5, atol=1e-5)
        frozen.stop_gradient = False


def train_and_eval_paths(layer, feats):
    """Outputs and gradients (inputs, then parameters) in training and in eval mode."""
    rng = np.random.RandomState(1)
    for param in layer.parameters():     # non-zero biases, so that their path is exercised
        param.set_value(rng.standard_normal(param.shape).astype('float32') * 0.1)
    results = []
    for training in (True, False):
        layer.train() if training else layer.eval()
        for tensor in feats + list(layer.parameters()):
            tensor.clear_gradient()
        outs = layer(feats)
        outs = outs if isinstance(outs, list) else [outs]
        paddle.add_n([(o * (k + 1)).sum() for k, o in enumerate(outs)]).backward()
        results.append(([o.numpy() for o in outs],
                        [t.grad.numpy() for t in feats + list(layer.parameters())
                         if t.grad is not None]))
    return results


def pyramid(channels, seed=1):
    rng = np.random.RandomState(seed)
    return [leaf(rng.standard_normal((2, c, 32 // 2 ** i, 24 // 2 ** i)).astype('float32'))
            for i, c in enumerate(channels)]


def test_fpn_training_path_matches_the_eval_ops():
    """The same FPN in training mode (fast bias and upsampling) and with paddle's ops."""
    paddle.seed(0)
    fpn = FPN(in_channels=[8, 16, 32, 64], out_channel=16)
    assert_same_paths(*train_and_eval_paths(fpn, pyramid([8, 16, 32, 64])))


def test_mask_head_training_path_matches_the_eval_ops():
    paddle.seed(0)
    head = SOLOv2MaskHead(in_channels=32, mid_channels=32, out_channels=32, norm_type='gn')
    assert_same_paths(*train_and_eval_paths(head, pyramid([32, 32, 32, 32])))


def assert_same_paths(train, evaluation):
    (train_outs, train_grads), (eval_outs, eval_grads) = train, evaluation
    assert len(train_grads) == len(eval_grads) > 4
    for ours, theirs in zip(train_outs, eval_outs):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)
    for ours, theirs in zip(train_grads, eval_grads):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5 * np.abs(theirs).max())
