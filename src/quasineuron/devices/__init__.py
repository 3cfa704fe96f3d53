"""Describe: the device contract and one adapter module per device kind."""

from quasineuron.devices.base import AbstractDevice, Box, DeviceCheckReport, check_device
from quasineuron.devices.blackbox import BlackBoxDevice
from quasineuron.devices.fixed_point import (
    Anderson,
    BatchedNewton,
    DriveTable,
    FixedPointDevice,
    FixedPointResult,
    Integrate,
    Newton,
)
from quasineuron.devices.formula import FormulaDevice
from quasineuron.devices.instrument import InstrumentDevice, SimulatedInstrument
from quasineuron.devices.library import (
    almost_neuron,
    available_devices,
    ideal_neuron,
    make_device,
    raw_almost_neuron,
)
from quasineuron.devices.ode import (
    RK4,
    Adaptive,
    Euler,
    FinalState,
    Heun,
    ODEDevice,
    ODEResult,
    TimeAverage,
    TimeIntegral,
    solve_reference,
)
from quasineuron.devices.reaction import reaction_relu, smoothed_relu
from quasineuron.devices.remote import CallPolicy, DeviceLink, DeviceServer, RemoteDevice
from quasineuron.devices.spice import SpiceDevice, spice_diffpair, spice_inverter
from quasineuron.devices.wrappers import InputClip, Noisy
from quasineuron.devices.wuxing import wuxing_neuron

__all__ = [
    "RK4",
    "Adaptive",
    "Euler",
    "FinalState",
    "Heun",
    "ODEDevice",
    "ODEResult",
    "TimeAverage",
    "TimeIntegral",
    "solve_reference",
    "wuxing_neuron",
    "AbstractDevice",
    "CallPolicy",
    "DeviceLink",
    "DeviceServer",
    "InstrumentDevice",
    "RemoteDevice",
    "SimulatedInstrument",
    "SpiceDevice",
    "spice_diffpair",
    "spice_inverter",
    "Anderson",
    "BatchedNewton",
    "BlackBoxDevice",
    "Box",
    "DeviceCheckReport",
    "DriveTable",
    "FixedPointDevice",
    "FixedPointResult",
    "FormulaDevice",
    "InputClip",
    "Noisy",
    "Integrate",
    "Newton",
    "almost_neuron",
    "available_devices",
    "check_device",
    "ideal_neuron",
    "make_device",
    "raw_almost_neuron",
    "reaction_relu",
    "smoothed_relu",
]
