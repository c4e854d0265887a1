"""What the training loop and its hooks exchange: typed, read-only values."""
from dataclasses import dataclass, field

__all__ = ['Progress', 'TrainPlan', 'StepState', 'Snapshot']


@dataclass(frozen=True)
class Progress:
    """Where a run starts, or where a checkpoint lets it go on: epoch ``epoch`` from its batch
    ``iter``, global step ``step``, with the run's ``seed``."""
    epoch: int = 0
    iter: int = 0
    step: int = 0
    seed: int = 0


@dataclass(frozen=True)
class TrainPlan:
    """How long a run is and when it takes snapshots."""
    epochs: int
    steps_per_epoch: int
    total_steps: int              # ``epochs * steps_per_epoch``, or fewer with ``max_iters``
    save_dir: str
    snapshot_epoch: int = 1
    skip_non_finite: bool = False  # ``nan_policy: skip``


@dataclass(frozen=True)
class StepState:
    """One training step, as the hooks see it after it ran."""
    epoch: int
    iter: int                     # batch within the epoch
    step: int                     # global step, from 0
    lr: float                     # the learning rate the step used
    losses: dict = field(default_factory=dict)
    batch_time: float = 0.        # this step, data loading included (s)
    data_time: float = 0.
    mean_batch_time: float = 0.   # over the last steps
    mean_data_time: float = 0.
    eta: float = 0.               # seconds left at the mean batch time


@dataclass(frozen=True)
class Snapshot:
    """The end of an epoch that is saved (and evaluated); ``final`` for the run's last, which
    is ``partial_epoch`` when ``max_iters`` stopped it within the epoch at batch ``iter``."""
    epoch: int
    iter: int
    step: int
    final: bool
    partial_epoch: bool
    seed: int

    def resume_point(self):
        """Where a run resumed from this snapshot goes on."""
        if self.partial_epoch:
            return Progress(self.epoch, self.iter + 1, self.step + 1, self.seed)
        return Progress(self.epoch + 1, 0, self.step + 1, self.seed)
