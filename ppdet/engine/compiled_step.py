"""The training forward as a static program: ``CompiledStep: {enabled: true}`` in a config.

:class:`~ppdet.engine.train_step.TrainStep` calls ``forward(batch)`` for the model's losses;
:meth:`CompiledStep.forward_of` gives it either the model itself or the model's call translated
by ``paddle.jit.to_static`` (SOT mode: the program is traced again when a guarded shape or
branch changes, then reused). The model stays eager for evaluation, EMA and checkpoints, and
the backward pass and optimizer are paddle's own either way, so both give the same losses and
updates up to float32 round-off.

Measured on a 2-core AMD EPYC (Zen 5), one thread: a tenth less CPU time per quick-start step
once traced, but tracing costs about 12 s of CPU (again for each new guarded shape or branch),
so the first 75 steps took 13 % more in all; no gain for ``solov2_r50_fpn_1x``, whose time is
in the convolutions. Off by default: worth it only for long runs of small models.
"""
import paddle

from ppdet.core.workspace import register

__all__ = ['CompiledStep']


class _Forward(paddle.nn.Layer):
    """The model's call as a layer of its own, so that translating it leaves the model's
    ``forward`` (used by evaluation) as it is."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch):
        return self.model(batch)


@register
class CompiledStep:
    """``enabled``: run the training forward as a static program (see the module)."""

    def __init__(self, enabled=False):
        self.enabled = bool(enabled)

    def forward_of(self, model):
        """What the training step calls for the losses of a batch."""
        if not self.enabled:
            return model
        return paddle.jit.to_static(_Forward(model), full_graph=False)
