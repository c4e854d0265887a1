from .optimizer import (PiecewiseDecay, LinearWarmup, LearningRate, IterationLR,  # noqa: F401
                        OptimizerBuilder)
from .ema import ModelEMA  # noqa: F401
