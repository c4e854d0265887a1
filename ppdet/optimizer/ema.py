"""Exponential moving average of the model weights, as the reference's ``ModelEMA``."""
import paddle

__all__ = ['ModelEMA']


class ModelEMA:
    """One float32 average per state_dict key (aliases and BN statistics included).

    After each optimizer step ``d = min(decay, (1 + n) / (10 + n))`` and
    ``ema = d * ema + (1 - d) * weight``.  :meth:`apply` returns the bias-corrected weights
    ``ema / (1 - d_last ** n)`` (the reference corrects with the last decay only).
    """

    def __init__(self, model, decay=0.9998):
        self.model = model
        self.decay = float(decay)
        self.step = 0
        self.last_decay = 0.
        self.state = {k: paddle.zeros(v.shape, 'float32') for k, v in model.state_dict().items()}

    @paddle.no_grad()
    def update(self):
        d = min(self.decay, (1 + self.step) / (10 + self.step))
        for key, value in self.model.state_dict().items():
            avg = self.state[key]
            avg.set_value(d * avg + (1 - d) * value.astype('float32'))
        self.step += 1
        self.last_decay = d

    @paddle.no_grad()
    def apply(self):
        """The averaged weights as a state dict in the model's dtypes."""
        dtypes = {k: v.dtype for k, v in self.model.state_dict().items()}
        if self.step == 0:
            return {k: v.astype(dtypes[k]) for k, v in self.state.items()}
        correction = 1 - self.last_decay ** self.step
        return {k: (v / correction).astype(dtypes[k]) for k, v in self.state.items()}

    def resume(self, state_dict, step):
        """Continue from saved (bias-corrected) averages after ``step`` updates."""
        for key, value in state_dict.items():
            if key in self.state:
                self.state[key].set_value(paddle.to_tensor(value, dtype='float32'))
        self.step = int(step)
        self.last_decay = min(self.decay, self.step / (9 + self.step)) if self.step else 0.
