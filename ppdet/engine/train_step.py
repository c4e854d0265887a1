"""One optimisation step of the model: ``losses = step(batch)``."""
import math

import paddle

from .amp import autocast

__all__ = ['TrainStep']


class TrainStep:
    """Forward (under autocast with AMP), backward, optimizer and schedule step, EMA update.

    Returns the model's losses (``loss*`` outputs) as floats. A non-finite loss applies no
    update, but the schedule and the EMA still advance, so the step count stays what a resumed
    run expects; whether the run goes on is the caller's decision.
    """

    def __init__(self, model, optimizer, schedule, ema=None, amp=None):
        self.model, self.optimizer, self.schedule = model, optimizer, schedule
        self.ema, self.amp = ema, amp
        self.scaler = None if amp is None else paddle.amp.GradScaler(
            init_loss_scaling=amp.init_loss_scaling)

    @property
    def lr(self):
        """The learning rate of the next step."""
        return self.optimizer.get_lr()

    def __call__(self, batch):
        with autocast(self.amp):
            outputs = self.model(batch)
        losses = {k: float(v) for k, v in outputs.items() if k.startswith('loss')}
        if all(math.isfinite(v) for v in losses.values()):
            self._update(outputs['loss'])
        else:
            self.optimizer.clear_grad()
        self.schedule.step()
        if self.ema is not None:
            self.ema.update()
        return losses

    def _update(self, loss):
        if self.scaler is None:
            loss.backward()
            self.optimizer.step()
        else:
            scaled = self.scaler.scale(loss)
            scaled.backward()
            self.scaler.minimize(self.optimizer, scaled)
        self.optimizer.clear_grad()
