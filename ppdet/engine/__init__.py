from . import runtime  # noqa: F401  (registers the inference_engine check)
from .trainer import Trainer  # noqa: F401
