"""Layered Wuxing five-element networks: wiring, time simulation and training.

The model equations are in docs/models.md §A.
"""

from quasineuron.wuxing.network import SimConfig, SimulationResult, SteadyState, WuxingNetwork
from quasineuron.wuxing.training import (
    Backprop,
    Method,
    Method1,
    Method2,
    Mixed,
    Signals,
    StepReport,
    TargetCoding,
    bptt_step,
    evaluate,
    method1_signal,
    method1_step,
    method2_step,
    output_error,
    predict,
    signals,
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
    "Method",
    "Method1",
    "Method2",
    "Mixed",
    "SimConfig",
    "Signals",
    "SimulationResult",
    "SteadyState",
    "StepReport",
    "TargetCoding",
    "WuxingNetwork",
    "WuxingWiring",
    "adder_wiring",
    "bptt_step",
    "evaluate",
    "method1_signal",
    "method1_step",
    "method2_step",
    "model_wiring",
    "one_to_one_wiring",
    "output_error",
    "predict",
    "signals",
    "train",
]
