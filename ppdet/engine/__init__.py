"""Training, evaluation and inference; :class:`Trainer` builds them from a config."""
from .checkpointer import Checkpointer  # noqa: F401
from .loop import TrainingLoop  # noqa: F401
from .predictor import EagerDetector, Predictor  # noqa: F401
from . import runtime  # noqa: F401  (registers the inference_engine check)
from .train_step import TrainStep  # noqa: F401
from .trainer import Trainer  # noqa: F401
from . import compiled_step  # noqa: F401  (registers the CompiledStep section)
