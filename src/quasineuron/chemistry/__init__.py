"""Reaction networks: compile smoothed-ReLU networks to mass-action chemistry and simulate it.

Data (:class:`Species`, :class:`Reaction`, :class:`ReactionNetwork`) → batched kinetics
(:class:`MassAction`) → simulation (:func:`steady_state`, :func:`settling_time`, scipy and
libroadrunner references) and SBML exchange (:func:`to_sbml`, :func:`from_sbml`).
Construction: docs/models.md §B, after Anderson, Joshi, Deshpande, "On reaction network
implementations of neural networks", J. R. Soc. Interface 18 (2021) 20210031.
"""

from quasineuron.chemistry.compile import (
    CompiledNetwork,
    closed_form,
    compile_network,
    network_weights,
    reaction_activation_device,
    read_weights,
    smoothed_relu_device,
)
from quasineuron.chemistry.network import MassAction, Reaction, ReactionNetwork, Species
from quasineuron.chemistry.sbml import from_sbml, roadrunner_simulate, sbml_errors, to_sbml
from quasineuron.chemistry.simulate import (
    SteadyStateResult,
    implicit_step,
    ode_steady_state,
    scipy_steady_state,
    settling_time,
    steady_state,
)

__all__ = [
    "CompiledNetwork",
    "MassAction",
    "Reaction",
    "ReactionNetwork",
    "Species",
    "SteadyStateResult",
    "closed_form",
    "compile_network",
    "from_sbml",
    "implicit_step",
    "network_weights",
    "ode_steady_state",
    "reaction_activation_device",
    "read_weights",
    "roadrunner_simulate",
    "sbml_errors",
    "scipy_steady_state",
    "settling_time",
    "smoothed_relu_device",
    "steady_state",
    "to_sbml",
]
