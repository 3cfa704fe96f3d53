"""Compose: networks of frozen device instances behind trainable connections."""

from quasineuron.network.connections import (
    AbstractConnection,
    Linear,
    Quadratic,
    Raw,
    TwoDrive,
    default_connection,
)
from quasineuron.network.io import load_network, save_network
from quasineuron.network.layer import DeviceLayer, physics_aware
from quasineuron.network.modes import (
    MODES,
    AbstractMode,
    Direct,
    PhysicsAware,
    Surrogate,
    TrueDevice,
    mode_from_name,
)
from quasineuron.network.network import DeviceNetwork
from quasineuron.network.variability import Variability
from quasineuron.network.wiring import AbstractWiring, Dense, FanIn, Ports, Sparse

__all__ = [
    "MODES",
    "AbstractConnection",
    "AbstractMode",
    "AbstractWiring",
    "Dense",
    "DeviceLayer",
    "DeviceNetwork",
    "Direct",
    "FanIn",
    "Linear",
    "PhysicsAware",
    "Ports",
    "Quadratic",
    "Raw",
    "Sparse",
    "Surrogate",
    "TrueDevice",
    "TwoDrive",
    "Variability",
    "default_connection",
    "load_network",
    "mode_from_name",
    "physics_aware",
    "save_network",
]
