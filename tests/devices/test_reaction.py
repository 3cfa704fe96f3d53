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
    assert d["params"] == {"eps": 0.05} and d["name"] == "reaction-relu"
    assert dev.domain.low == (-4.0,) and dev.domain.high == (4.0,)


def test_bad_eps_is_rejected() -> None:
    with pytest.raises(ValueError, match="eps must be a finite float > 0"):
        reaction_relu(eps=0.0)
    with pytest.raises(ValueError, match="x0 must be >= 0"):
        integrate_reaction(torch.zeros(2, dtype=F64), -1.0, torch.linspace(0, 1, 3), eps=0.1)


# ---------------------------------------------------------------------------------------------
# The general construction: sigmoid-like and saturating neurons

from quasineuron.devices.reaction import (  # noqa: E402
    ACTIVATIONS,
    activation_rhs,
    integrate_activation,
    reaction_saturating,
    reaction_sigmoid,
    saturating_relu,
    saturating_relu_rate,
    smoothed_sigmoid,
    smoothed_sigmoid_rate,
)

BOUNDED = {"sigmoid": reaction_sigmoid, "saturating": reaction_saturating}
Z_WIDE = torch.cat(
    [
        torch.linspace(-8.0, 8.0, 161, dtype=F64),
        torch.tensor([0.0, -1.0, 1e-9, -1e-9, -1.0 + 1e-9, 30.0, -30.0], dtype=F64),
    ]
)[:, None]


def _quadratic_root(name: str, z: np.ndarray, eps: float) -> np.ndarray:
    """The root in [0, 1] of the neuron's quadratic, by numpy.roots (independent of the code)."""
    out = []
    for zi in z:
        if name == "sigmoid":  # -z x^2 + (z - 2 eps) x + eps
            coeffs = [-zi, zi - 2 * eps, eps]
        else:  # -(z + 1) x^2 + (z - eps) x + eps
            coeffs = [-(zi + 1), zi - eps, eps]
        roots = np.roots(np.trim_zeros(np.array(coeffs), "f") if coeffs[0] == 0 else coeffs)
        real = [r.real for r in roots if abs(r.imag) < 1e-12 and -1e-12 <= r.real <= 1 + 1e-12]
        assert len(real) == 1, (zi, roots)  # exactly one steady state in [0, 1]
        out.append(real[0])
    return np.array(out)


@pytest.mark.parametrize("name", sorted(BOUNDED))
@pytest.mark.parametrize("eps", [1e-3, 1e-2, 0.1, 0.5, 2.0])
def test_bounded_fixed_point_is_the_closed_form(name: str, eps: float) -> None:
    dev = BOUNDED[name](eps=eps)
    res = dev.solve(Z_WIDE)
    assert res.converged.all()
    exact = ACTIVATIONS[name].closed_form(Z_WIDE, eps)
    assert ((exact > 0) & (exact < 1)).all()
    torch.testing.assert_close(res.x, exact, rtol=0, atol=1e-10)
    torch.testing.assert_close(dev(Z_WIDE), exact, rtol=0, atol=1e-10)
    # a steady state of the mass-action rate, and the root numpy finds independently
    assert activation_rhs(name, exact, Z_WIDE, eps).abs().max() < 1e-12
    z_np = Z_WIDE[:, 0].numpy()
    roots = _quadratic_root(name, z_np[np.abs(z_np) < 20], eps)
    np.testing.assert_allclose(exact[:, 0].numpy()[np.abs(z_np) < 20], roots, atol=1e-9, rtol=0)


def test_sigmoid_shape() -> None:
    z = torch.linspace(-5.0, 5.0, 101, dtype=F64)
    for eps in (0.05, 0.5, 3.0):
        s = smoothed_sigmoid(z, eps)
        torch.testing.assert_close(s + smoothed_sigmoid(-z, eps), torch.ones_like(z))
        assert (s.diff() > 0).all()
        zero = torch.zeros(1, dtype=F64, requires_grad=True)
        (g,) = torch.autograd.grad(smoothed_sigmoid(zero, eps).sum(), zero)
        assert abs(float(g) - 1 / (8 * eps)) < 1e-12
    assert float(smoothed_sigmoid(torch.tensor(0.0, dtype=F64), 0.5)) == 0.5


def test_saturating_shape() -> None:
    z = torch.linspace(-5.0, 5.0, 101, dtype=F64)
    r = saturating_relu(z, 1e-8)
    target = z.clamp(min=0) / (1 + z.clamp(min=0))
    torch.testing.assert_close(r, target, rtol=0, atol=1e-4)
    assert (saturating_relu(z, 0.01).diff() > 0).all()


@pytest.mark.parametrize("name", sorted(BOUNDED))
def test_closed_form_gradient_is_finite_and_matches_implicit(name: str) -> None:
    eps = 0.05
    z = Z_WIDE[:, 0].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(ACTIVATIONS[name].closed_form(z, eps).sum(), z)
    assert torch.isfinite(g).all()
    # implicit function theorem on f(x, z) = 0: dx/dz = -(df/dz)/(df/dx) = x(1 - x) / rate
    x = ACTIVATIONS[name].closed_form(z.detach(), eps)
    implicit = x * (1 - x) / ACTIVATIONS[name].rate(z.detach(), eps)
    torch.testing.assert_close(g, implicit, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["relu", "sigmoid", "saturating"])
def test_rate_is_minus_the_slope_of_the_rate_law(name: str) -> None:
    eps = 0.1
    z = Z_WIDE[:, 0]
    x = ACTIVATIONS[name].closed_form(z, eps).clone().requires_grad_(True)
    (dfdx,) = torch.autograd.grad(activation_rhs(name, x, z, eps).sum(), x)
    torch.testing.assert_close(-dfdx, ACTIVATIONS[name].rate(z, eps), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", sorted(BOUNDED))
def test_measured_convergence_rate_matches_theory(name: str) -> None:
    eps = 0.1
    z = torch.tensor([-4.0, -1.5, -0.1, 0.0, 0.7, 3.0], dtype=F64)
    rate = ACTIVATIONS[name].rate(z, eps)
    x_star = ACTIVATIONS[name].closed_form(z, eps)
    for x0 in (0.0, 1.0):  # both ends of the invariant interval
        t = torch.linspace(0.0, float(20.0 / rate.min()), 801, dtype=F64)
        x = integrate_activation(name, z, x0, t, eps=eps, rtol=1e-12, atol=1e-16, method="dopri8")
        d = (x - x_star).abs()
        for k in range(z.shape[0]):
            w = (d[:, k] < 1e-3 * d[0, k]) & (d[:, k] > 1e-8 * d[0, k])
            tt, ld = t[w], torch.log(d[w, k])
            slope = ((tt - tt.mean()) * (ld - ld.mean())).sum() / ((tt - tt.mean()) ** 2).sum()
            assert abs(-float(slope) - float(rate[k])) < 1e-3 * float(rate[k]), (name, x0, k)
    assert float(smoothed_sigmoid_rate(torch.tensor(0.0), eps)) == pytest.approx(2 * eps)
    assert float(saturating_relu_rate(torch.tensor(-eps), eps)) == pytest.approx(2 * eps**0.5)


@pytest.mark.parametrize("name", sorted(BOUNDED))
def test_bounded_devices_pass_the_checks_and_are_registered(name: str) -> None:
    import quasineuron as qn

    assert check_device(BOUNDED[name]()).ok
    dev = qn.make_device(f"reaction-{name}", eps=0.2)
    assert dev.params["activation"] == name and dev.params["eps"] == 0.2


def test_integrate_activation_refuses_a_start_outside_the_interval() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1.0\]"):
        integrate_activation(
            "sigmoid", torch.zeros(2, dtype=F64), 1.5, torch.linspace(0, 1, 3), eps=0.1
        )
    with pytest.raises(ValueError, match="unknown reaction activation"):
        activation_rhs("tanh", torch.zeros(1), torch.zeros(1), 0.1)
