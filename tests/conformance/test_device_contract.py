"""Conformance: every device kind passes the same checks.

A new device kind is one module in ``devices/`` plus one line in ``FACTORIES``.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pytest
import torch

from quasineuron.devices.base import AbstractDevice, Box, check_device
from quasineuron.devices.blackbox import BlackBoxDevice
from quasineuron.devices.library import almost_neuron, ideal_neuron


def _blackbox() -> AbstractDevice:
    return BlackBoxDevice(np.tanh, n_in=1, n_out=1, domain=Box((-3.0,), (3.0,)), vectorized=True)


def _wuxing_window() -> AbstractDevice:
    from quasineuron.devices.wuxing import wuxing_neuron

    return wuxing_neuron(readout="window")


def _wuxing_steady() -> AbstractDevice:
    from quasineuron.devices.wuxing import wuxing_neuron

    return wuxing_neuron(readout="steady")


def _clipped_wuxing_steady() -> AbstractDevice:
    from quasineuron.devices.wrappers import InputClip

    return InputClip(_wuxing_steady())


def _reaction() -> AbstractDevice:
    from quasineuron.devices.reaction import reaction_relu

    return reaction_relu(eps=0.05)


FACTORIES: dict[str, Callable[[], AbstractDevice]] = {
    "formula-tanh": lambda: ideal_neuron("tanh"),
    "formula-almost-neuron": lambda: almost_neuron(0.1),
    "blackbox": _blackbox,
    "ode-wuxing-window": _wuxing_window,
    "fixed-point-wuxing-steady": _wuxing_steady,
    "fixed-point-reaction-relu": _reaction,
    "wrapper-input-clip": _clipped_wuxing_steady,
}


def _points(dev: AbstractDevice, n: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    low, high = dev.domain.tensors(dtype=dtype)
    # stay a little inside the domain so finite differences never cross its edge
    gen = torch.Generator().manual_seed(seed)
    r = 0.1 + 0.8 * torch.rand(n, dev.n_in, generator=gen, dtype=dtype)
    return low + (high - low) * r


@pytest.fixture(params=sorted(FACTORIES))
def device(request: pytest.FixtureRequest) -> AbstractDevice:
    return FACTORIES[request.param]()


def test_declares_the_contract(device: AbstractDevice) -> None:
    assert isinstance(device.n_in, int) and device.n_in >= 1
    assert isinstance(device.n_out, int) and device.n_out >= 1
    assert isinstance(device.differentiable, bool)
    assert device.domain.dim == device.n_in
    check_device(device)
    json.dumps(device.describe())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_shape_kept(device: AbstractDevice, dtype: torch.dtype) -> None:
    u = _points(device, 5, dtype)
    y = device(u)
    assert y.shape == (5, device.n_out)
    assert y.dtype == dtype
    assert y.device == u.device
    assert torch.isfinite(y).all()


def test_rows_of_a_batch_are_independent(device: AbstractDevice) -> None:
    u = _points(device, 4, torch.float64)
    whole = device(u)
    rows = torch.cat([device(u[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(whole, rows, rtol=1e-9, atol=1e-10)


def test_gradients_match_finite_differences(device: AbstractDevice) -> None:
    if not device.differentiable:
        pytest.skip(f"{device.name} is not differentiable")
    u = _points(device, 2, torch.float64, seed=1).requires_grad_(True)
    assert torch.autograd.gradcheck(device, (u,), eps=1e-6, atol=1e-5, rtol=1e-4)
