"""The training-only fast paths compute what paddle's own ops compute, forward and backward."""
import numpy as np
import paddle
import paddle.nn.functional as F

from ppdet.modeling.necks.fpn import FPN, upsample_nearest_2x


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


def test_fpn_training_path_matches_the_eval_ops():
    """The same FPN in training mode (fast bias and upsampling) and with paddle's ops."""
    paddle.seed(0)
    fpn = FPN(in_channels=[8, 16, 32, 64], out_channel=16)
    rng = np.random.RandomState(1)
    feats = [leaf(rng.standard_normal((2, c, 32 // 2 ** i, 24 // 2 ** i)).astype('float32'))
             for i, c in enumerate([8, 16, 32, 64])]
    for param in fpn.parameters():     # non-zero biases, so that their path is exercised
        param.set_value(rng.standard_normal(param.shape).astype('float32') * 0.1)
    results = []
    for training in (True, False):
        fpn.train() if training else fpn.eval()
        for tensor in feats + list(fpn.parameters()):
            tensor.clear_gradient()
        outs = fpn(feats)
        paddle.add_n([(o * (k + 1)).sum() for k, o in enumerate(outs)]).backward()
        results.append(([o.numpy() for o in outs],
                        [t.grad.numpy() for t in feats + list(fpn.parameters())]))
    (train_outs, train_grads), (eval_outs, eval_grads) = results
    for ours, theirs in zip(train_outs, eval_outs):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)
    for ours, theirs in zip(train_grads, eval_grads):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5 * np.abs(theirs).max())
