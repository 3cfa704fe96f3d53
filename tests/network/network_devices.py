"""Tiny formula devices for the network tests (a helper module, not a test file)."""

from __future__ import annotations

import torch

from quasineuron.devices.base import Box
from quasineuron.devices.formula import FormulaDevice

BOX1 = Box((-3.0,), (3.0,))


def tanh_device(*, differentiable: bool = True, name: str = "tanh") -> FormulaDevice:
    return FormulaDevice(
        torch.tanh, n_in=1, n_out=1, domain=BOX1, differentiable=differentiable, name=name
    )


def wrong_twin() -> FormulaDevice:
    """A twin of ``tanh_device`` with a 10 % gain error."""
    return FormulaDevice(
        lambda u: 1.1 * torch.tanh(u), n_in=1, n_out=1, domain=BOX1, name="tanh-twin"
    )


def almost_neuron(eps: float) -> FormulaDevice:
    """f(s1, s2) = tanh(s1 - eps * s2): the seed's f_nl(x·A - eps A·x²) with TwoDrive()."""
    return FormulaDevice(
        lambda u: torch.tanh(u[:, :1] - eps * u[:, 1:2]),
        n_in=2,
        n_out=1,
        domain=Box((-3.0, 0.0), (3.0, 3.0)),
        name="almost",
        params={"eps": eps},
    )


def raw_device(k: int) -> FormulaDevice:
    """f(x, w) = tanh(sum_i x_i w_i) for k inputs followed by k weights."""
    return FormulaDevice(
        lambda u: torch.tanh((u[:, :k] * u[:, k:]).sum(dim=1, keepdim=True)),
        n_in=2 * k,
        n_out=1,
        domain=Box((-1.0,) * k + (-2.0,) * k, (1.0,) * k + (2.0,) * k),
        name="raw",
    )


def ports_device() -> FormulaDevice:
    """Three ports, two outputs."""
    return FormulaDevice(
        lambda u: torch.stack((torch.tanh(u.sum(1)), torch.sigmoid(u[:, 0] - u[:, 2])), dim=1),
        n_in=3,
        n_out=2,
        domain=Box((-2.0,) * 3, (2.0,) * 3),
        name="ports",
    )
