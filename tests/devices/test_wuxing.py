"""Wuxing five-element neuron: rest state, linearisation, small-signal gains, divergence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from quasineuron.devices.base import check_device
from quasineuron.devices.ode import RK4, Adaptive, solve_reference
from quasineuron.devices.wuxing import (
    wuxing_jacobian,
    wuxing_neuron,
    wuxing_rest_state,
    wuxing_rhs,
)

F64 = torch.float64


@pytest.mark.parametrize(
    ("K1", "K2", "K3", "b0"), [(1.0, 0.5, 0.5, 1.0), (2.0, 0.5, 0.25, 6.0), (1.5, 1.0, 2.0, 0.25)]
)
def test_rest_state_is_k1_minus_k2_over_k3(K1, K2, K3, b0):
    np.testing.assert_allclose(wuxing_rest_state(K1, K2, K3), [b0] * 5, rtol=1e-14)
    dev = wuxing_neuron(K1=K1, K2=K2, K3=K3)
    torch.testing.assert_close(dev(torch.zeros(2, 1, dtype=F64)), torch.zeros(2, 5, dtype=F64))


def test_non_uniform_rest_state_solves_the_equations():
    k1 = (1.0, 1.2, 0.9, 1.1, 1.0)
    b = torch.tensor(wuxing_rest_state(k1, 0.5, 0.5), dtype=F64)[None]
    rhs = wuxing_rhs(k1, 0.5, 0.5, layout="batch")
    torch.testing.assert_close(
        rhs(None, b, torch.zeros(1, 1, dtype=F64)), torch.zeros(1, 5, dtype=F64)
    )


def test_unstable_parameters_are_rejected():
    with pytest.raises(ValueError, match="K1 > K2"):
        wuxing_neuron(K1=0.5, K2=1.0)


@pytest.mark.parametrize("layout", ["batch", "rows"])
def test_jacobian_at_rest_has_the_circulant_eigenvalues(layout):
    rhs = wuxing_rhs(layout=layout)
    b0 = torch.ones(5, dtype=F64)
    u0 = torch.zeros(1, 1, dtype=F64)

    def f(x):
        if layout == "rows":
            return torch.stack(rhs(None, tuple(x[:, None]), tuple(u0.T)))[:, 0]
        return rhs(None, x[None], u0)[0]

    jac = torch.autograd.functional.jacobian(f, b0).numpy()
    np.testing.assert_allclose(jac, wuxing_jacobian(), atol=1e-14)
    lam = np.linalg.eigvals(jac)
    expected = [-0.5, -0.2865 + 0.6572j, -0.2865 - 0.6572j, -1.9635 + 1.0633j, -1.9635 - 1.0633j]
    key = lambda z: (round(z.real, 3), z.imag)  # noqa: E731
    np.testing.assert_allclose(sorted(lam, key=key), sorted(expected, key=key), atol=1e-4)


@pytest.mark.parametrize("j", [0, 3])
def test_small_signal_steady_gains(j):
    dev = wuxing_neuron(readout="steady-state", input_elements=(j,))
    delta = 1e-4
    y = dev(torch.tensor([[delta], [-delta]], dtype=F64))
    gain = ((y[0] - y[1]) / (2 * delta)).numpy()
    by_offset = np.array([gain[(j + m) % 5] for m in range(5)])
    np.testing.assert_allclose(by_offset, [0.780, 0.878, 0.488, 0.049, -0.195], atol=6e-4)
    # and exactly -J^{-1} e_j
    exact = -np.linalg.solve(wuxing_jacobian(), np.eye(5)[j])
    np.testing.assert_allclose(gain, exact, atol=1e-7)


def test_steady_gradient_is_the_small_signal_gain():
    dev = wuxing_neuron(readout="steady-state", input_elements=(1,), output_elements=(2,))
    u = torch.zeros(1, 1, dtype=F64, requires_grad=True)
    (g,) = torch.autograd.grad(dev(u).sum(), u)
    torch.testing.assert_close(g, torch.tensor([[0.878]], dtype=F64), rtol=0, atol=6e-4)


def test_window_readout_matches_scipy():
    u = torch.tensor([[-0.4], [0.3], [1.7]], dtype=F64)
    tight = wuxing_neuron(solver=Adaptive(rtol=1e-10, atol=1e-12))
    ref = solve_reference(tight, u)
    torch.testing.assert_close(tight(u), ref, rtol=0, atol=1e-6)
    # the default RK4 dt=0.1 is accurate to a few 1e-6 on this window
    torch.testing.assert_close(wuxing_neuron()(u), ref, rtol=0, atol=2e-5)


def test_window_layouts_agree_and_rows_are_independent():
    u = torch.tensor([[-0.3], [0.2], [1.1], [2.0]], dtype=F64)
    rows = wuxing_neuron(layout="rows", output_elements=(1, 4))
    batch = wuxing_neuron(layout="batch", output_elements=(1, 4))
    torch.testing.assert_close(rows(u), batch(u), rtol=0, atol=1e-14)
    single = torch.cat([rows(u[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(rows(u), single, rtol=0, atol=0)


@pytest.mark.parametrize("readout", ["window", "steady-state"])
@pytest.mark.parametrize("inputs", [(0,), (0, 1, 2, 3, 4)])
def test_default_domain_is_safe(readout, inputs):
    dev = wuxing_neuron(readout=readout, input_elements=inputs)
    check_device(dev, dtype=torch.float32)
    low, high = dev.domain.tensors(dtype=F64)
    u = torch.stack([low, high, 0.5 * (low + high)])
    assert torch.isfinite(dev(u)).all()


def test_single_drive_past_the_limit_is_reported_not_raised():
    u = torch.tensor([[-1.0], [-0.5]], dtype=F64)
    steady = wuxing_neuron(readout="steady-state")
    res = steady.solve(u)
    assert res.converged.tolist() == [False, True]
    y = steady(u)
    assert torch.isnan(y[0]).all() and torch.isfinite(y[1]).all()
    window = wuxing_neuron(T=40.0, solver=RK4(dt=0.2))
    res = window.solve(u)
    assert res.diverged.tolist() == [True, False]
    assert torch.isnan(res.y[0]).all() and torch.isfinite(res.y[1]).all()


def test_uniform_drive_below_the_fixed_point_limit_is_nan():
    dev = wuxing_neuron(readout="steady-state", input_elements=(0, 1, 2, 3, 4))
    u = torch.tensor([[-0.2] * 5, [-0.1] * 5], dtype=F64)
    y = dev(u)
    assert torch.isnan(y[0]).all() and torch.isfinite(y[1]).all()
    # uniform drive u moves every element to B = [(K1-K2) + sqrt((K1-K2)^2 + 4 K3 u)] / (2 K3)
    b = (0.5 + np.sqrt(0.25 + 4 * 0.5 * -0.1)) / (2 * 0.5)
    torch.testing.assert_close(y[1], torch.full((5,), b - 1.0, dtype=F64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_is_kept(dtype):
    for readout in ("window", "steady-state"):
        y = wuxing_neuron(readout=readout)(torch.tensor([[0.5]], dtype=dtype))
        assert y.dtype == dtype and y.shape == (1, 5)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="input_elements"):
        wuxing_neuron(input_elements=(0, 0))
    with pytest.raises(ValueError, match="output_elements"):
        wuxing_neuron(output_elements=(5,))
    with pytest.raises(ValueError, match="K3"):
        wuxing_neuron(K3=(1.0, 2.0))
    with pytest.raises(ValueError, match="readout"):
        wuxing_neuron(readout="average")


def test_the_old_steady_readout_spelling_warns_and_builds_the_same_device() -> None:
    with pytest.warns(DeprecationWarning, match="steady-state"):
        old = wuxing_neuron(readout="steady")
    new = wuxing_neuron(readout="steady-state")
    u = torch.tensor([[0.3], [1.2]], dtype=torch.float64)
    assert torch.equal(old(u), new(u))
