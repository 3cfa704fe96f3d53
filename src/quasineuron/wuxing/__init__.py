"""Layered Wuxing five-element networks: wiring, time simulation and training (models.md §A)."""

from quasineuron.wuxing.network import SimConfig, SimulationResult, WuxingNetwork
from quasineuron.wuxing.training import (
    Backprop,
    Method2,
    StepReport,
    TargetCoding,
    TrainResult,
    bptt_step,
    evaluate,
    method2_step,
    output_error,
    train,
)
from quasineuron.wuxing.wiring import (
    MODEL1_SIZES,
    MODEL2_SIZES,
    MODEL_LINKS,
    WuxingWiring,
    adder_wiring,
    model_wiring,
    one_to_one_wiring,
)

__all__ = [
    "MODEL1_SIZES",
    "MODEL2_SIZES",
    "MODEL_LINKS",
    "Backprop",
    "Method2",
    "SimConfig",
    "SimulationResult",
    "StepReport",
    "TargetCoding",
    "TrainResult",
    "WuxingNetwork",
    "WuxingWiring",
    "adder_wiring",
    "bptt_step",
    "evaluate",
    "method2_step",
    "model_wiring",
    "one_to_one_wiring",
    "output_error",
    "train",
]
