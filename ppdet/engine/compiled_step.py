"""The training step as one object: ``step(batch) -> {loss name: float}``, the update applied.

``create('TrainStep', cfg)(model, optimizer)`` gives an :class:`EagerStep` or, with
``TrainStep: {compiled: true}``, a :class:`CompiledStep`, whose forward (model and losses) runs
as a static program translated from the Python code by ``paddle.jit.to_static`` (SOT mode: the
program is traced again when a guarded shape or branch changes, then reused). Both compute the
same losses and updates up to float32 round-off; the backward pass and the optimizer are
paddle's own in both. A step whose losses are not all finite changes no parameter (its
gradients are dropped): the caller decides whether to stop or go on.
"""
import math

import paddle

from ppdet.core.workspace import register

__all__ = ['TrainStep', 'EagerStep', 'CompiledStep']


class EagerStep:
    """Forward, backward and optimizer step, in eager mode."""

    def __init__(self, model, optimizer):
        self.model, self.optimizer = model, optimizer

    def forward(self, batch):
        return self.model(batch)

    def __call__(self, batch):
        self.model.train()
        outputs = self.forward(batch)
        values = {k: float(v) for k, v in outputs.items() if k.startswith('loss')}
        if all(math.isfinite(v) for v in values.values()):
            outputs['loss'].backward()
            self.optimizer.step()
        self.optimizer.clear_grad()
        return values


class CompiledStep(EagerStep):
    """:class:`EagerStep` with the forward run by ``paddle.jit.to_static`` (SOT mode).

    The model object stays eager (evaluation, EMA and checkpoints see the same parameters);
    only this step's forward is translated, on its first call.
    """

    def __init__(self, model, optimizer):
        super().__init__(model, optimizer)
        self._static = paddle.jit.to_static(_Forward(model), full_graph=False)

    def forward(self, batch):
        return self._static(batch)


class _Forward(paddle.nn.Layer):
    """The model's call as a layer of its own, so that translating it leaves the model's
    ``forward`` (used by evaluation) as it is."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch):
        return self.model(batch)


@register
class TrainStep:
    """Config section choosing how the training step runs.

    ``compiled: true`` translates the forward to a static program. Measured on a 2-core
    AMD EPYC (Zen 5), one thread: a tenth less CPU time per quick-start step once traced, but
    tracing costs about 12 s of CPU (again for each new guarded shape or branch), so the first
    75 steps took 13 % more in all; no gain for ``solov2_r50_fpn_1x``, whose time is in the
    convolutions. Worth it only for long runs of small models."""

    def __init__(self, compiled=False):
        self.compiled = bool(compiled)

    def __call__(self, model, optimizer):
        return (CompiledStep if self.compiled else EagerStep)(model, optimizer)
