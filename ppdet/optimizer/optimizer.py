"""Momentum + L2 optimizer and the iteration-based learning-rate schedule of the reference.

The YAML keeps PaddleDetection's shape::

    LearningRate:
      base_lr: 0.01
      schedulers: [!PiecewiseDecay {gamma: 0.1, milestones: [8, 11]},
                   !LinearWarmup {start_factor: 0., steps: 1000}]
    OptimizerBuilder:
      optimizer: {type: Momentum, momentum: 0.9}
      regularizer: {type: L2, factor: 0.0001}

Per-parameter learning-rate multipliers and regularisers come from each parameter's
``ParamAttr`` (paddle applies ``optimize_attr['learning_rate']`` and ``param.regularizer``
itself), so the builder only chooses which parameters are optimised.
"""
import paddle

from ppdet.core.errors import ConfigError
from ppdet.core.workspace import instantiate, register, serializable

__all__ = ['PiecewiseDecay', 'LinearWarmup', 'LearningRate', 'IterationLR', 'OptimizerBuilder']


@serializable
class PiecewiseDecay:
    """Step decay at epoch ``milestones``; a scalar ``gamma`` g means factors g, g/10, ..."""

    def __init__(self, gamma=0.1, milestones=(8, 11)):
        milestones = [int(m) for m in milestones]
        if milestones != sorted(milestones):
            raise ConfigError(f'PiecewiseDecay.milestones must increase, got {milestones}')
        if isinstance(gamma, (list, tuple)):
            factors = [float(g) for g in gamma]
            if len(factors) != len(milestones):
                raise ConfigError('PiecewiseDecay.gamma as a list needs one value per milestone')
        else:
            factors = [float(gamma) / 10 ** i for i in range(len(milestones))]
        self.milestones = milestones
        self.factors = factors

    def factor(self, step, steps_per_epoch):
        """The multiplier of ``base_lr`` at iteration ``step``."""
        passed = sum(step >= m * steps_per_epoch for m in self.milestones)
        return self.factors[passed - 1] if passed else 1.0


@serializable
class LinearWarmup:
    """Linear ramp from ``start_factor * base_lr`` to ``base_lr`` over ``steps`` iterations."""

    def __init__(self, start_factor=1. / 3, steps=500):
        self.start_factor = float(start_factor)
        self.steps = int(steps)

    def factor(self, step):
        alpha = step / self.steps
        return self.start_factor * (1 - alpha) + alpha


class IterationLR(paddle.optimizer.lr.LRScheduler):
    """Warmup values during warmup, decayed values after it; stepped once per iteration.

    Warmup values replace (do not multiply) the decay, as in the reference; its state
    (``last_epoch`` = iterations done, ``last_lr``) is what ``.pdopt`` stores for resume.
    """

    def __init__(self, base_lr, steps_per_epoch, decay=None, warmup=None):
        self.base = float(base_lr)
        self.steps_per_epoch = int(steps_per_epoch)
        self.decay = decay
        self.warmup = warmup
        super().__init__(learning_rate=self.base)

    def value_at(self, step):
        if self.warmup is not None and step < self.warmup.steps:
            return self.base * self.warmup.factor(step)
        if self.decay is not None:
            return self.base * self.decay.factor(step, self.steps_per_epoch)
        return self.base

    def get_lr(self):
        return self.value_at(self.last_epoch)


@register
class LearningRate:
    """``base_lr`` and a list of schedulers (``!PiecewiseDecay``, ``!LinearWarmup``)."""

    def __init__(self, base_lr=0.01, schedulers=()):
        self.base_lr = float(base_lr)
        built = [instantiate(s) for s in schedulers or ()]
        self.decay = next((s for s in built if isinstance(s, PiecewiseDecay)), None)
        self.warmup = next((s for s in built if isinstance(s, LinearWarmup)), None)
        unknown = [type(s).__name__ for s in built
                   if not isinstance(s, (PiecewiseDecay, LinearWarmup))]
        if unknown:
            raise ConfigError(f'LearningRate.schedulers: unsupported scheduler {unknown[0]}')

    def __call__(self, steps_per_epoch):
        return IterationLR(self.base_lr, steps_per_epoch, self.decay, self.warmup)


@register
class OptimizerBuilder:
    """Builds the optimizer for a model's trainable parameters."""

    def __init__(self, optimizer=None, regularizer=None, clip_grad_by_norm=None,
                 clip_grad_by_value=None):
        self.optimizer = dict(optimizer or {'type': 'Momentum', 'momentum': 0.9})
        self.regularizer = regularizer
        self.clip_grad_by_norm = clip_grad_by_norm
        self.clip_grad_by_value = clip_grad_by_value

    def _weight_decay(self):
        if not self.regularizer:
            return None
        kind = self.regularizer.get('type', 'L2')
        factor = float(self.regularizer.get('factor', 0.))
        if kind not in ('L2', 'L1'):
            raise ConfigError(f'OptimizerBuilder.regularizer.type: {kind} is not L1 or L2')
        decay = paddle.regularizer.L2Decay if kind == 'L2' else paddle.regularizer.L1Decay
        return decay(factor)

    def _grad_clip(self):
        if self.clip_grad_by_norm is not None:
            return paddle.nn.ClipGradByGlobalNorm(clip_norm=float(self.clip_grad_by_norm))
        if self.clip_grad_by_value is not None:
            limit = abs(float(self.clip_grad_by_value))
            return paddle.nn.ClipGradByValue(min=-limit, max=limit)
        return None

    def __call__(self, learning_rate, model):
        settings = dict(self.optimizer)
        kind = settings.pop('type', 'Momentum')
        if not hasattr(paddle.optimizer, kind):
            raise ConfigError(f'OptimizerBuilder.optimizer.type: paddle has no optimizer {kind}')
        params = [p for p in model.parameters() if not p.stop_gradient]
        # aliased state_dict keys are one parameter: optimise each tensor once
        unique = list({id(p): p for p in params}.values())
        return getattr(paddle.optimizer, kind)(
            learning_rate=learning_rate, parameters=unique, weight_decay=self._weight_decay(),
            grad_clip=self._grad_clip(), **settings)
