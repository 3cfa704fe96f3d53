"""Small devices and sweep tables shared by the surrogate tests."""

from __future__ import annotations

import pytest
import torch

from quasineuron.devices.base import AbstractDevice, Box
from quasineuron.devices.formula import FormulaDevice
from quasineuron.sweep import Grid, SweepTable, sweep


class AlmostNeuron(AbstractDevice):
    """The seed's almost neuron f(s1, s2) = tanh(s1 - eps*s2) on [-4, 4]²."""

    def __init__(self, eps: float = 0.1) -> None:
        super().__init__()
        self.eps = eps
        self.n_in, self.n_out, self.differentiable = 2, 1, True
        self.domain = Box((-4.0, -4.0), (4.0, 4.0))
        self.name = "almost-neuron"

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return torch.tanh(u[:, :1] - self.eps * u[:, 1:2])


def tanh_device(limit: float = 3.0) -> FormulaDevice:
    return FormulaDevice(torch.tanh, n_in=1, n_out=1, domain=Box((-limit,), (limit,)), name="tanh")


def two_output_device() -> FormulaDevice:
    def fn(u: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.tanh(u), torch.sin(u)], dim=1)

    return FormulaDevice(fn, n_in=1, n_out=2, domain=Box((-2.0,), (2.0,)), name="tanh-sin")


@pytest.fixture
def tanh_table() -> SweepTable:
    return sweep(tanh_device(), Grid(n=41), progress=False)


@pytest.fixture
def almost_table() -> SweepTable:
    return sweep(AlmostNeuron(), Grid(n=25), progress=False)


@pytest.fixture
def almost_neuron() -> AlmostNeuron:
    return AlmostNeuron(eps=0.1)


@pytest.fixture
def tanh_dev() -> FormulaDevice:
    return tanh_device()


@pytest.fixture
def two_output_dev() -> FormulaDevice:
    return two_output_device()
