"""Training: one loop (:func:`fit`) driven by strategies, with callbacks and checkpoints.

Strategies: :class:`Gradient` (surrogate, physics-aware, direct or device gradients), local
learning rules (``local_rules``) and derivative-free population optimisers
(``derivative_free``), which need no gradient of the device, and the Wuxing methods
(``quasineuron.wuxing``).
"""

from quasineuron.training.callbacks import (
    Callback,
    DomainMonitor,
    FunctionCallback,
    LoopState,
    NonfiniteCounter,
    WeightAveraging,
)
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
    Population,
    optimize_weights,
    population_forward,
)
from quasineuron.training.gradient import Gradient
from quasineuron.training.local_rules import (
    AbstractLocalRule,
    AbstractRate,
    Constant,
    Delta,
    ErrorPolynomial,
    LocalRule,
    LocalStep,
    Perceptron,
    train_local,
)
from quasineuron.training.loop import EpochMetrics, TrainResult, fit, train
from quasineuron.training.strategy import AbstractStrategy, Plan, StepOutput

__all__ = [
    "AbstractStrategy",
    "Callback",
    "DomainMonitor",
    "FunctionCallback",
    "Gradient",
    "LoopState",
    "NonfiniteCounter",
    "Plan",
    "StepOutput",
    "WeightAveraging",
    "fit",
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
    "LocalRule",
    "LocalStep",
    "NelderMead",
    "OptimizeResult",
    "OptimizeStep",
    "ParticleSwarm",
    "Perceptron",
    "Population",
    "TrainResult",
    "optimize_weights",
    "population_forward",
    "train",
    "train_local",
]
