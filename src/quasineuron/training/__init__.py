"""Training: the loop with checkpoint/resume and early stopping, and its typed options."""

from quasineuron.training.config import (
    MSE,
    SGD,
    AbstractLoss,
    AbstractOptimizer,
    Adam,
    Cosine,
    CrossEntropy,
)
from quasineuron.training.loop import EpochMetrics, TrainResult, train

__all__ = [
    "MSE",
    "SGD",
    "AbstractLoss",
    "AbstractOptimizer",
    "Adam",
    "Cosine",
    "CrossEntropy",
    "EpochMetrics",
    "TrainResult",
    "train",
]
