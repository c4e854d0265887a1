"""Errors a user can cause: each carries one line that names the file and the problem.

The scripts print ``str(err)`` and exit non-zero without a traceback (``--debug`` shows it).
"""


class PPDetError(Exception):
    """Base of every error the toolkit raises for bad user input."""

    exit_code = 2


class ConfigError(PPDetError):
    """A config file, a ``-o`` override or a CLI argument is wrong."""


class DataError(PPDetError):
    """A dataset, annotation or image cannot be used."""


class WeightsError(PPDetError):
    """A weights file is missing, unsafe, or does not fit the model."""


class CheckpointError(PPDetError):
    """A checkpoint cannot be written or resumed from."""


class TrainingError(PPDetError):
    """Training cannot go on (for instance a NaN loss)."""


class ExportError(PPDetError):
    """A model cannot be exported or converted."""
