"""The native fused spline kernel against the torch path it replaces on CPU."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import quasineuron as qn
from quasineuron.devices.base import Box
from quasineuron.errors import OutOfDomainError, OutOfDomainWarning
from quasineuron.surrogate import SplineSurrogate, _native
from quasineuron.surrogate.spline import _NativeSplineFunction

pytestmark = pytest.mark.skipif(
    _native.library() is None, reason="no C compiler: the native spline kernel is not built"
)


def _twin(n_in: int, n_out: int, *, uniform: bool) -> SplineSurrogate:
    axes = []
    for k in range(n_in):
        n = 9 - 2 * k
        x = np.linspace(-1.0, 1.0, n) if uniform else np.sin(np.linspace(-1.4, 1.4, n))
        axes.append(x * (1 + 0.5 * k))
    mesh = np.meshgrid(*axes, indexing="ij")
    s = sum((0.7 - 0.2 * k) * m for k, m in enumerate(mesh))
    vals = np.stack([np.tanh(s + 0.3 * o) * (1 + o) for o in range(n_out)], axis=-1)
    low = tuple(float(x[0]) for x in axes)
    high = tuple(float(x[-1]) for x in axes)
    return SplineSurrogate.from_grid(axes, vals, domain=Box(low, high))


def _drives(twin: SplineSurrogate, n: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """Drives over 1.4x the domain: about half of the rows have a drive outside."""
    gen = torch.Generator().manual_seed(seed)
    low, high = twin._low.to(dtype), twin._high.to(dtype)
    r = torch.rand(n, twin.n_in, generator=gen, dtype=dtype) * 1.4 - 0.2
    return low + (high - low) * r


def _run(twin: SplineSurrogate, u: torch.Tensor, *, fused: bool):
    twin.fused = fused
    twin.reset_domain_count()
    u = u.clone().requires_grad_()
    y = twin(u)
    w = torch.linspace(-1.0, 2.0, y.numel(), dtype=y.dtype).view_as(y)
    (g,) = torch.autograd.grad((y * w).sum(), u)
    return y.detach(), g, twin.n_out_of_domain


@pytest.mark.parametrize("policy", ["clamp", "warn"])
@pytest.mark.parametrize("uniform", [True, False])
@pytest.mark.parametrize(("n_in", "n_out"), [(1, 1), (1, 2), (2, 1), (2, 3), (3, 1)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_equals_torch_path(n_in, n_out, uniform, policy, dtype):
    twin = _twin(n_in, n_out, uniform=uniform).to(dtype)
    twin.policy = policy
    u = _drives(twin, 403, dtype)  # vectors of rows and a remainder
    with pytest.warns(OutOfDomainWarning) if policy == "warn" else _nothing():
        y_f, g_f, n_f = _run(twin, u, fused=True)
    with pytest.warns(OutOfDomainWarning) if policy == "warn" else _nothing():
        y_t, g_t, n_t = _run(twin, u, fused=False)
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    torch.testing.assert_close(y_f, y_t, rtol=tol, atol=tol)
    torch.testing.assert_close(g_f, g_t, rtol=tol, atol=tol)
    assert n_f == n_t > 0
    assert y_f.dtype == dtype and y_f.shape == (403, n_out)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_fused_path_is_the_default_and_is_taken(monkeypatch):
    twin = _twin(1, 1, uniform=True)
    twin.policy = "clamp"
    assert twin.fused
    calls = []
    real = _native.spline_eval
    monkeypatch.setattr(
        _native, "spline_eval", lambda *a, **k: calls.append(k["jacobian"]) or real(*a, **k)
    )
    u = _drives(twin, 20, torch.float64)
    twin(u)
    twin(u.requires_grad_())
    assert calls == [False, True]
    twin.fused = False
    twin(u)
    assert len(calls) == 2


@pytest.mark.parametrize("n_in", [1, 2])
def test_gradcheck_float64(n_in):
    twin = _twin(n_in, 2, uniform=n_in == 1).to(torch.float64)
    grid = twin._native_grid(torch.float64)
    lib = _native.library()
    # inside the domain and away from cell edges (the spline is C2, gradcheck needs C1)
    u = (0.8 * _drives(twin, 12, torch.float64) * 0.5).requires_grad_()
    for clamp in (False, True):
        assert torch.autograd.gradcheck(
            lambda v, c=clamp: _NativeSplineFunction.apply(v, lib, grid, c, []), (u,)
        )


def test_clamp_zeroes_the_gradient_of_the_clipped_drive_only():
    twin = _twin(2, 1, uniform=True).to(torch.float64)
    twin.policy = "clamp"
    high = twin._high
    u = torch.tensor([[float(high[0]) + 0.5, 0.1], [0.1, 0.2]], dtype=torch.float64)
    u.requires_grad_()
    twin(u).sum().backward()
    assert u.grad is not None
    assert u.grad[0, 0] == 0 and u.grad[0, 1] != 0
    assert (u.grad[1] != 0).all()
    assert twin.n_out_of_domain == 1


def test_raise_policy_refuses_and_counts():
    twin = _twin(1, 1, uniform=True)
    twin.policy = "raise"
    u = torch.tensor([[0.0], [5.0], [-5.0]], dtype=torch.float64)
    with pytest.raises(OutOfDomainError, match="2 of 3 drive rows"):
        twin(u)
    assert twin.n_out_of_domain == 2


@pytest.mark.parametrize("uniform", [True, False])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_nan_and_infinite_drives_as_the_torch_path(uniform, dtype):
    twin = _twin(2, 1, uniform=uniform).to(dtype)
    twin.policy = "clamp"
    u = _drives(twin, 40, dtype, seed=3)  # rows 0-31 in whole vectors, 32-39 the remainder
    nan, inf = float("nan"), float("inf")
    u[0, 0], u[17, 1], u[39, 0] = nan, nan, nan
    u[5, 1], u[20, 0], u[35, 1] = inf, -inf, inf
    y_f, g_f, n_f = _run(twin, u, fused=True)
    y_t, g_t, n_t = _run(twin, u, fused=False)
    bad = torch.zeros(40, dtype=torch.bool)
    bad[[0, 17, 39]] = True
    assert torch.isnan(y_f[bad]).all() and torch.isfinite(y_f[~bad]).all()
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    torch.testing.assert_close(y_f[~bad], y_t[~bad], rtol=tol, atol=tol)
    torch.testing.assert_close(g_f[~bad], g_t[~bad], rtol=tol, atol=tol)
    assert n_f == n_t


def test_other_dtypes_and_bad_input_keep_the_torch_path_contract():
    twin = _twin(1, 1, uniform=True)
    with pytest.raises(ValueError, match="takes drives of shape"):
        twin(torch.zeros(3, 2, dtype=torch.float64))
    with pytest.raises(TypeError, match="fused must be True or False"):
        twin.fused = 1  # type: ignore[assignment]
    y = twin.to(torch.bfloat16)(torch.zeros(4, 1, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rows", [403, 5])
def test_drive_major_columns_are_read_in_place(rows, dtype):
    """A (2, batch) block seen as (batch, 2), as TwoDrive makes it: the same values and
    gradients as the contiguous rows, with the gradient in the drives' own layout."""
    twin = _twin(2, 1, uniform=True).to(dtype)
    twin.policy = "clamp"
    u = _drives(twin, rows, dtype, seed=4)
    cols = u.t().contiguous().t()  # drive-major: strides (1, rows)
    assert cols.stride() == (1, rows)
    results = []
    for drives in (u, cols):
        drives = drives.detach().requires_grad_()
        twin.reset_domain_count()
        y = twin(drives)
        w = torch.linspace(-1.0, 2.0, rows, dtype=dtype).view(rows, 1)
        (g,) = torch.autograd.grad((y * w).sum(), drives)
        results.append((y.detach(), g, twin.n_out_of_domain))
    (y_r, g_r, n_r), (y_c, g_c, n_c) = results
    assert torch.equal(y_r, y_c) and torch.equal(g_r, g_c) and n_r == n_c > 0
    assert g_c.stride() == (1, rows)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("connection", [qn.Linear(), qn.TwoDrive()])
def test_network_step_equals_torch_path(connection, dtype):
    dev = qn.almost_neuron(0.1) if isinstance(connection, qn.TwoDrive) else qn.ideal_neuron("tanh")
    twin = qn.fit_surrogate(qn.sweep(dev, qn.Grid(21), progress=False), kind="spline").model
    twin.policy = "clamp"
    net = qn.DeviceNetwork(dev, (12, 8, 3), twin=twin, connection=connection, seed=0)
    net = net.to(dtype)
    x = torch.rand(16, 12, generator=torch.Generator().manual_seed(1), dtype=dtype)
    grads = []
    for fused in (True, False):
        net.layers[0].twin.fused = fused
        net.layers[1].twin.fused = fused
        net.zero_grad()
        out = net(x, mode=qn.Surrogate())
        out.square().sum().backward()
        grads.append(
            [out.detach()] + [p.grad.clone() for p in net.parameters() if p.grad is not None]
        )
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def test_rows_split_over_threads_give_the_same_result(monkeypatch):
    twin = _twin(2, 1, uniform=True).to(torch.float64)
    twin.policy = "clamp"
    u = _drives(twin, 1001, torch.float64)  # not a multiple of the thread count
    y_t, g_t, n_t = _run(twin, u, fused=False)
    monkeypatch.setattr(_native, "ROWS_PER_THREAD", 100)
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        y_f, g_f, n_f = _run(twin, u, fused=True)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(y_f, y_t, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_f, g_t, rtol=1e-12, atol=1e-12)
    assert n_f == n_t > 0


@pytest.mark.parametrize("policy", ["raise", "warn"])
def test_a_nan_drive_alone_is_not_called_out_of_domain(policy):
    twin = _twin(2, 1, uniform=True)
    twin.policy = policy
    u = torch.tensor([[float("nan"), 0.0], [0.1, 0.1]], dtype=torch.float64)
    for fused in (True, False):
        twin.fused = fused
        twin.reset_domain_count()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            y = twin(u)
        assert torch.isnan(y[0]).all() and torch.isfinite(y[1]).all()
        assert twin.n_out_of_domain == 0
