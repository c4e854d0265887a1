from .trainer import Trainer  # noqa: F401
from . import compiled_step  # noqa: F401  (registers the TrainStep section)
