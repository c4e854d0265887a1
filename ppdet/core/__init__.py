from .errors import PPDetError, ConfigError, DataError, WeightsError, CheckpointError  # noqa: F401
from . import workspace, config  # noqa: F401
