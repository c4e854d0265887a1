"""Learning-rate schedule (spec section 21), Momentum + L2 update rule, EMA."""
import numpy as np
import paddle
import pytest

from ppdet.core.config import load_config
from ppdet.core.errors import ConfigError
from ppdet.core.workspace import ComponentSpec, create
from ppdet.optimizer import LearningRate, LinearWarmup, ModelEMA, OptimizerBuilder, PiecewiseDecay


def schedule(base=0.01, warmup=1000, start=0., milestones=(8, 11)):
    return LearningRate(base, [ComponentSpec('PiecewiseDecay', {'gamma': 0.1,
                                                                'milestones': list(milestones)}),
                               ComponentSpec('LinearWarmup', {'start_factor': start,
                                                              'steps': warmup})])


def test_reference_schedule_values_per_iteration():
    spe = 500
    lr = schedule()(spe)
    values = []
    for _ in range(12 * spe):
        values.append(lr())
        lr.step()
    values = np.array(values)
    t = np.arange(1000)
    np.testing.assert_allclose(values[:1000], 0.01 * t / 1000, rtol=1e-12)
    assert values[0] == 0.0 and values[1] == pytest.approx(1e-5)
    assert np.all(values[1000:8 * spe] == 0.01)
    np.testing.assert_allclose(values[8 * spe:11 * spe], 0.001)
    np.testing.assert_allclose(values[11 * spe:], 0.0001)


def test_warmup_start_factor_and_state_round_trip():
    lr = schedule(base=0.1, warmup=10, start=0.5, milestones=(1,))(100)
    assert lr() == pytest.approx(0.05)
    for _ in range(5):
        lr.step()
    assert lr() == pytest.approx(0.1 * (0.5 * 0.5 + 0.5))
    other = schedule(base=0.1, warmup=10, start=0.5, milestones=(1,))(100)
    other.set_state_dict(lr.state_dict())
    assert other() == lr() and other.last_epoch == 5


def test_yaml_tags_build_the_schedule():
    cfg = load_config('configs/solov2/_base_/optimizer_1x.yml')
    lr = create('LearningRate', cfg)
    assert isinstance(lr.decay, PiecewiseDecay) and lr.decay.milestones == [8, 11]
    assert isinstance(lr.warmup, LinearWarmup) and lr.warmup.steps == 1000
    assert lr(10).value_at(10 * 11) == pytest.approx(0.01 * 110 / 1000)   # warmup wins
    assert lr(100).value_at(100 * 11) == pytest.approx(0.0001)


def test_bad_milestones_are_refused():
    with pytest.raises(ConfigError, match='milestones'):
        PiecewiseDecay(milestones=[11, 8])


class TwoConvs(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.slow = paddle.nn.Linear(3, 2, weight_attr=paddle.ParamAttr(learning_rate=0.1))
        self.free = paddle.nn.Linear(
            3, 2, weight_attr=paddle.ParamAttr(regularizer=paddle.regularizer.L2Decay(0.)))
        self.frozen = paddle.nn.Linear(3, 2)
        self.frozen.weight.stop_gradient = True
        self.twin = self.slow


def test_momentum_l2_update_follows_the_reference_rule():
    paddle.seed(1)
    model = TwoConvs()
    builder = OptimizerBuilder({'type': 'Momentum', 'momentum': 0.9},
                               {'type': 'L2', 'factor': 0.1})
    opt = builder(0.5, model)
    assert len(opt._parameter_list) == 5           # the twin once, the frozen weight not at all
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    x = paddle.ones([1, 3])
    for _ in range(2):
        (model.slow(x).sum() + model.free(x).sum() + model.frozen(x).sum()).backward()
        opt.step()
        opt.clear_grad()
    grad = np.ones((3, 2))                           # d(sum(x W))/dW with x = 1
    for key, lr_mult, wd in (('slow.weight', 0.1, 0.1), ('free.weight', 1.0, 0.)):
        p, v = before[key].copy(), np.zeros_like(before[key])
        for _ in range(2):
            v = 0.9 * v + grad + wd * p
            p = p - 0.5 * lr_mult * v
        np.testing.assert_allclose(model.state_dict()[key].numpy(), p, rtol=1e-5)
    np.testing.assert_array_equal(model.frozen.weight.numpy(), before['frozen.weight'])


def test_gradient_clipping_from_the_builder():
    model = TwoConvs()
    opt = OptimizerBuilder(clip_grad_by_norm=1.0)(0.1, model)
    assert isinstance(opt._grad_clip, paddle.nn.ClipGradByGlobalNorm)


def test_ema_threshold_decay_and_bias_correction():
    layer = paddle.nn.Linear(2, 1)
    ema = ModelEMA(layer, decay=0.9998)
    history = []
    for step in range(3):
        layer.weight.set_value(np.full((2, 1), step + 1., 'float32'))
        history.append(step + 1.)
        ema.update()
    avg, last = 0., 0.
    for n, value in enumerate(history):
        last = min(0.9998, (1 + n) / (10 + n))
        avg = last * avg + (1 - last) * value
    expected = avg / (1 - last ** 3)
    np.testing.assert_allclose(ema.apply()['weight'].numpy(), expected, rtol=1e-6)
    assert ema.apply()['weight'].numpy()[0, 0] != layer.weight.numpy()[0, 0]
