"""Training: the loop with checkpoint/resume and early stopping, and its typed options.

Also derivative-free optimisation of the weights (``derivative_free``) and local learning
rules (``local_rules``), which need no gradient of the device.
"""

from quasineuron.training.config import (
    MSE,
    SGD,
    AbstractLoss,
    AbstractOptimizer,
    Adam,
    Cosine,
    CrossEntropy,
)
from quasineuron.training.derivative_free import (
    CMAES,
    AbstractDerivativeFree,
    AntColony,
    DifferentialEvolution,
    NelderMead,
    OptimizeResult,
    OptimizeStep,
    ParticleSwarm,
    optimize_weights,
    population_forward,
)
from quasineuron.training.local_rules import (
    AbstractLocalRule,
    AbstractRate,
    Constant,
    Delta,
    ErrorPolynomial,
    LocalEpoch,
    LocalResult,
    LocalStep,
    Perceptron,
    train_local,
)
from quasineuron.training.loop import EpochMetrics, TrainResult, train

__all__ = [
    "CMAES",
    "MSE",
    "SGD",
    "AbstractDerivativeFree",
    "AbstractLocalRule",
    "AbstractLoss",
    "AbstractOptimizer",
    "AbstractRate",
    "Adam",
    "AntColony",
    "Constant",
    "Cosine",
    "CrossEntropy",
    "Delta",
    "DifferentialEvolution",
    "EpochMetrics",
    "ErrorPolynomial",
    "LocalEpoch",
    "LocalResult",
    "LocalStep",
    "NelderMead",
    "OptimizeResult",
    "OptimizeStep",
    "ParticleSwarm",
    "Perceptron",
    "TrainResult",
    "optimize_weights",
    "population_forward",
    "train",
    "train_local",
]
