"""Reaction-network neuron: the steady state of dx/dt = eps + z x - x^2 is the smoothed ReLU."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from quasineuron.devices.base import check_device
from quasineuron.devices.reaction import (
    convergence_rate,
    integrate_reaction,
    reaction_relu,
    reaction_rhs,
    smoothed_relu,
    smoothed_relu_derivative,
)

F64 = torch.float64
EPSILONS = [1e-4, 1e-3, 1e-2, 0.1, 0.5]
Z_GRID = torch.cat(
    [
        torch.linspace(-4.0, 4.0, 81, dtype=F64),
        torch.tensor([0.0, 1e-9, -1e-9, 2.0, -2.0, 20.0, -20.0, 50.0, -50.0], dtype=F64),
    ]
)[:, None]


@pytest.mark.parametrize("eps", EPSILONS)
def test_fixed_point_is_the_smoothed_relu(eps: float) -> None:
    dev = reaction_relu(eps=eps)
    res = dev.solve(Z_GRID)
    assert res.converged.all()
    assert (res.x > 0).all()  # the positive root, for every z
    exact = smoothed_relu(Z_GRID, eps)
    torch.testing.assert_close(res.x, exact, rtol=0, atol=1e-8)
    torch.testing.assert_close(dev(Z_GRID), exact, rtol=0, atol=1e-8)
    # it really is a steady state of the mass-action ODE
    assert reaction_rhs(res.x, Z_GRID, eps).abs().max() <= 1e-11


@pytest.mark.parametrize("eps", EPSILONS)
def test_implicit_gradient_is_the_closed_form_derivative(eps: float) -> None:
    dev = reaction_relu(eps=eps)
    z = Z_GRID.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(dev(z).sum(), z)
    expected = 0.5 * (1.0 + Z_GRID / torch.sqrt(Z_GRID**2 + 4.0 * eps))
    torch.testing.assert_close(g, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(
        smoothed_relu_derivative(Z_GRID, eps), expected, rtol=1e-10, atol=1e-15
    )


def test_closed_form_properties() -> None:
    z = torch.linspace(-5.0, 5.0, 41, dtype=F64, requires_grad=True)
    eps = 0.01
    y = smoothed_relu(z, eps)
    naive = (z + torch.sqrt(z**2 + 4 * eps)) / 2
    torch.testing.assert_close(y, naive, rtol=1e-9, atol=0)
    (g,) = torch.autograd.grad(y.sum(), z)
    torch.testing.assert_close(g, smoothed_relu_derivative(z.detach(), eps), rtol=1e-12, atol=0)
    zero = torch.zeros(1, dtype=F64)
    torch.testing.assert_close(
        smoothed_relu(zero, eps), torch.full((1,), math.sqrt(eps), dtype=F64)
    )
    # -> ReLU as eps -> 0, and no cancellation for very negative z
    torch.testing.assert_close(
        smoothed_relu(z.detach(), 1e-12), z.detach().clamp_min(0), atol=1e-6, rtol=0
    )
    far = smoothed_relu(torch.tensor([-1e4], dtype=F64), eps)
    torch.testing.assert_close(far, torch.tensor([eps / 1e4], dtype=F64), rtol=1e-6, atol=0)
    torch.testing.assert_close(
        convergence_rate(torch.tensor([0.0, 2.0], dtype=F64), eps),
        torch.tensor([0.2, math.sqrt(4.04)], dtype=F64),
    )


@pytest.mark.parametrize("z", [-2.0, 0.0, 1.5])
def test_time_integration_converges_at_the_predicted_rate(z: float) -> None:
    eps = 0.01
    zt = torch.full((3,), z, dtype=F64)
    x0 = torch.tensor([1e-6, 1.0, 5.0], dtype=F64)
    rate = convergence_rate(zt[:1], eps).item()
    t = torch.linspace(0.0, 30.0 / rate, 301, dtype=F64)
    x = integrate_reaction(zt, x0, t, eps=eps)
    assert x.shape == (301, 3) and x.dtype == F64
    assert (x > 0).all()
    dev_ = (x - smoothed_relu(zt, eps)).abs().numpy()
    for j in range(3):
        # tail of the exponential approach, clear of the start-up transient and of rounding
        win = (dev_[:, j] < 1e-4) & (dev_[:, j] > 1e-9)
        assert win.sum() >= 10
        slope = np.polyfit(t.numpy()[win], np.log(dev_[win, j]), 1)[0]
        assert abs(-slope / rate - 1.0) < 0.03, (x0[j].item(), -slope, rate)


def test_device_contract_in_both_dtypes_and_describe() -> None:
    dev = reaction_relu(eps=0.05)
    check_device(dev)
    check_device(dev, dtype=F64)
    y32 = dev(torch.tensor([[-3.0], [0.0], [3.0]]))
    assert y32.dtype == torch.float32
    torch.testing.assert_close(y32, smoothed_relu(torch.tensor([[-3.0], [0.0], [3.0]]), 0.05))
    d = dev.describe()
    assert d["params"] == {"eps": 0.05} and d["name"] == "reaction_relu"
    assert dev.domain.low == (-4.0,) and dev.domain.high == (4.0,)


def test_bad_eps_is_rejected() -> None:
    with pytest.raises(ValueError, match="eps must be a finite float > 0"):
        reaction_relu(eps=0.0)
    with pytest.raises(ValueError, match="x0 must be >= 0"):
        integrate_reaction(torch.zeros(2, dtype=F64), -1.0, torch.linspace(0, 1, 3), eps=0.1)
