"""FixedPointDevice: solvers against closed forms and scipy, implicit gradients, failure rows."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pytest
import scipy.optimize
import torch

from quasineuron.devices.base import Box, check_device
from quasineuron.devices.fixed_point import (
    AbstractFixedPointSolver,
    Anderson,
    FixedPointDevice,
    FixedPointResult,
    Integrate,
    Newton,
)
from quasineuron.errors import DeviceContractError

F64 = torch.float64


def _cube_chain(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """dx1/dt = u1 - x1^3, dx2/dt = x1^2 - u2 x2: x* = (u1^(1/3), u1^(2/3) / u2)."""
    return torch.stack([u[:, 0] - x[:, 0] ** 3, x[:, 0] ** 2 - u[:, 1] * x[:, 1]], dim=1)


def _cube_chain_exact(u: torch.Tensor) -> torch.Tensor:
    c = u[:, 0] ** (1.0 / 3.0)
    return torch.stack([c, c**2 / u[:, 1]], dim=1)


def _cube_chain_device(solver=None) -> FixedPointDevice:
    return FixedPointDevice(
        _cube_chain,
        n_in=2,
        n_state=2,
        n_out=2,
        x_init=torch.ones(2),
        readout=lambda x: x,
        domain=Box((0.5, 0.5), (8.0, 4.0)),
        solver=solver,
        name="cube_chain",
    )


U_CHAIN = torch.tensor([[8.0, 2.0], [0.5, 0.5], [3.0, 4.0], [1.0, 1.0]], dtype=F64)


@pytest.mark.parametrize(
    "solver",
    [Newton(), Integrate(), Anderson(step=0.1, max_iter=200), Newton(fallback=Integrate())],
    ids=["newton", "integrate", "anderson", "newton+fallback"],
)
def test_two_state_system_matches_closed_form(solver) -> None:
    dev = _cube_chain_device(solver)
    res = dev.solve(U_CHAIN)
    assert res.converged.all()
    torch.testing.assert_close(res.x, _cube_chain_exact(U_CHAIN), rtol=0, atol=1e-9)
    torch.testing.assert_close(dev(U_CHAIN), _cube_chain_exact(U_CHAIN), rtol=0, atol=1e-12)


def test_result_reports_per_row_residual_and_iterations() -> None:
    dev = _cube_chain_device()
    res = dev.solve(U_CHAIN)
    assert isinstance(res, FixedPointResult)
    assert res.x.shape == (4, 2) and res.x.dtype == F64
    assert res.residual.shape == (4,) and res.residual.dtype == F64
    assert res.iterations.shape == (4,) and res.iterations.dtype == torch.int64
    assert res.converged.shape == (4,) and res.converged.dtype == torch.bool
    assert (res.residual <= 1e-10).all()
    assert (res.iterations[:3] >= 1).all()
    # the row already at its fixed point (u = (1, 1), x_init = (1, 1)) needs no iteration
    assert res.iterations[3] == 0
    assert res.iterations[0] > res.iterations[3]


def test_implicit_gradient_matches_closed_form_jacobian() -> None:
    dev = _cube_chain_device()
    u = U_CHAIN.clone()
    jac = torch.autograd.functional.jacobian(lambda v: dev(v).sum(0), u)  # (n_out, batch, n_in)
    exact = torch.autograd.functional.jacobian(lambda v: _cube_chain_exact(v).sum(0), u)
    torch.testing.assert_close(jac, exact, rtol=1e-9, atol=1e-10)


# a 3-state nonlinear contraction with a parameter matrix A
A0 = torch.tensor([[0.3, -0.5, 0.2], [0.4, 0.1, -0.3], [-0.2, 0.6, 0.2]], dtype=F64)
B0 = torch.tensor([[1.0, 0.0], [0.5, -1.0], [0.0, 1.0]], dtype=F64)


def _tanh_device(a: torch.Tensor, solver=None, kind: str = "ode") -> FixedPointDevice:
    def f(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        drive = torch.tanh(x @ a.T) + u @ B0.T
        return drive - x if kind == "ode" else drive

    return FixedPointDevice(
        f,
        n_in=2,
        n_state=3,
        n_out=2,
        x_init=torch.zeros(3, dtype=F64),
        readout=lambda x: torch.stack([x[:, 0] * x[:, 1], torch.sin(x[:, 2])], dim=1),
        domain=Box((-1.0, -1.0), (1.0, 1.0)),
        kind=kind,
        solver=solver,
    )


U3 = torch.tensor([[0.3, -0.7], [-0.4, 0.2], [0.9, 0.5]], dtype=F64)


def test_gradcheck_inputs_three_state_system() -> None:
    dev = _tanh_device(A0)
    u = U3.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(dev, (u,), eps=1e-6, atol=1e-7, rtol=1e-6)


def test_gradcheck_device_parameter() -> None:
    def out(a: torch.Tensor) -> torch.Tensor:
        return _tanh_device(a)(U3)

    a = A0.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(out, (a,), eps=1e-6, atol=1e-7, rtol=1e-6)


def test_parameter_gradient_of_a_module_rhs_matches_unrolled_iteration() -> None:
    class Rhs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Parameter(A0.clone())

        def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
            return torch.tanh(x @ self.a.T) + u @ B0.T - x

    rhs = Rhs()
    dev = FixedPointDevice(
        rhs,
        n_in=2,
        n_state=3,
        n_out=3,
        x_init=torch.zeros(3, dtype=F64),
        readout=lambda x: x,
        domain=Box((-1.0, -1.0), (1.0, 1.0)),
    )
    assert any(p is rhs.a for p in dev.parameters())
    (g_implicit,) = torch.autograd.grad(dev(U3).square().sum(), rhs.a)
    # reference: backprop through many iterations of the contraction x <- x + F(x)
    x = torch.zeros(3, 3, dtype=F64)
    for _ in range(200):
        x = x + rhs(x, U3)
    (g_unrolled,) = torch.autograd.grad(x.square().sum(), rhs.a)
    torch.testing.assert_close(g_implicit, g_unrolled, rtol=1e-9, atol=1e-11)


def test_anderson_map_matches_scipy() -> None:
    u = torch.tensor([[-0.5], [0.0], [0.3], [0.5]], dtype=F64)
    dev = FixedPointDevice(
        lambda x, v: torch.cos(x) + v,
        n_in=1,
        n_state=1,
        n_out=1,
        x_init=torch.zeros(1, dtype=F64),
        readout=lambda x: x,
        domain=Box((-0.5,), (0.5,)),
        kind="map",
        solver=Anderson(tol=1e-12),
    )
    res = dev.solve(u)
    assert res.converged.all()
    ref = [
        scipy.optimize.brentq(lambda s, c=c: math.cos(s) + c - s, -2.0, 3.0, xtol=1e-15)
        for c in u[:, 0].tolist()
    ]
    torch.testing.assert_close(res.x[:, 0], torch.tensor(ref, dtype=F64), rtol=0, atol=1e-10)
    torch.testing.assert_close(dev(u)[:, 0], torch.tensor(ref, dtype=F64), rtol=0, atol=1e-13)
    # gradient of x = cos x + u: dx/du = 1 / (1 + sin x)
    uu = u.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(dev(uu).sum(), uu)
    torch.testing.assert_close(g[:, 0], 1.0 / (1.0 + torch.sin(res.x[:, 0])), rtol=1e-10, atol=0)


def test_anderson_needs_fewer_iterations_than_plain_iteration() -> None:
    def make(memory: int) -> FixedPointDevice:
        return _tanh_device(A0, solver=Anderson(memory=memory, max_iter=500), kind="map")

    fast, plain = make(5).solve(U3), make(1).solve(U3)  # memory 1 is the plain map iteration
    assert fast.converged.all() and plain.converged.all()
    assert (fast.iterations < plain.iterations).all()
    torch.testing.assert_close(fast.x, plain.x, rtol=0, atol=1e-9)


def test_map_with_newton_matches_scipy_root() -> None:
    dev = _tanh_device(A0, kind="map")
    res = dev.solve(U3)
    assert res.converged.all()
    a, b = A0.numpy(), B0.numpy()
    for i, row in enumerate(U3.numpy()):
        sol = scipy.optimize.root(
            lambda s, r=row: np.tanh(a @ s) + b @ r - s, np.zeros(3), tol=1e-14
        )
        np.testing.assert_allclose(res.x[i].numpy(), sol.x, rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    "solver",
    [Newton(), Newton(fallback=Integrate()), Integrate(), Anderson(step=0.2)],
    ids=["newton", "newton+fallback", "integrate", "anderson"],
)
def test_rows_without_fixed_point_give_nan_and_only_those(solver) -> None:
    # dx/dt = u - x^2 has the stable steady state sqrt(u) for u > 0 and none for u < 0
    dev = FixedPointDevice(
        lambda x, u: u - x**2,
        n_in=1,
        n_state=1,
        n_out=1,
        x_init=torch.ones(1, dtype=F64),
        readout=lambda x: 2.0 * x,
        domain=Box((0.1,), (4.0,)),
        solver=solver,
    )
    u = torch.tensor([[4.0], [-1.0], [0.25], [-0.01], [2.0]], dtype=F64, requires_grad=True)
    bad = torch.tensor([False, True, False, True, False])
    res = dev.solve(u)
    assert torch.equal(res.converged, ~bad)
    y = dev(u)
    assert torch.isnan(y[bad]).all()
    torch.testing.assert_close(y[~bad], 2.0 * u[~bad].detach().sqrt(), rtol=0, atol=1e-9)
    (g,) = torch.autograd.grad(y[~bad].sum(), u)
    torch.testing.assert_close(g[~bad], 1.0 / u[~bad].detach().sqrt(), rtol=1e-6, atol=0)
    assert (g[bad] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_kept_and_rows_independent(dtype: torch.dtype) -> None:
    dev = _tanh_device(A0.to(dtype)) if dtype == F64 else None
    if dev is None:  # float32 copy of the same system
        a32, b32 = A0.float(), B0.float()
        dev = FixedPointDevice(
            lambda x, u: torch.tanh(x @ a32.T) + u @ b32.T - x,
            n_in=2,
            n_state=3,
            n_out=3,
            x_init=torch.zeros(3),
            readout=lambda x: x,
            domain=Box((-1.0, -1.0), (1.0, 1.0)),
        )
    u = U3.to(dtype)
    whole = dev(u)
    assert whole.dtype == dtype and torch.isfinite(whole).all()
    rows = torch.cat([dev(u[i : i + 1]) for i in range(u.shape[0])])
    tol = 1e-12 if dtype == F64 else 1e-6
    torch.testing.assert_close(whole, rows, rtol=0, atol=tol)
    assert dev.solve(u).x.dtype == dtype
    # f and readout are lambdas here, so the device is not picklable: that check is skipped
    assert check_device(dev, dtype=dtype, skip=("pickle",)).ok


def test_callable_x_init_and_describe_is_json() -> None:
    dev = FixedPointDevice(
        lambda x, u: u - x**3,
        n_in=1,
        n_state=1,
        n_out=1,
        x_init=lambda u: u.abs() + 1.0,
        readout=lambda x: x,
        domain=Box((0.1,), (8.0,)),
        solver=Newton(fallback=Integrate()),
        params={"p": 1},
    )
    y = dev(torch.tensor([[8.0]], dtype=F64))
    torch.testing.assert_close(y, torch.tensor([[2.0]], dtype=F64))
    d = json.loads(json.dumps(dev.describe()))
    assert d["solver"]["type"] == "Newton" and d["solver"]["fallback"]["type"] == "Integrate"
    assert d["n_state"] == 1 and d["params"] == {"p": 1}


def test_bad_arguments_raise_helpful_errors() -> None:
    kw = dict(n_in=1, n_state=2, n_out=1, readout=lambda x: x[:, :1], domain=Box((0.0,), (1.0,)))
    with pytest.raises(ValueError, match="x_init must have shape"):
        FixedPointDevice(lambda x, u: -x, x_init=torch.zeros(3), **kw)
    with pytest.raises(ValueError, match="kind must be"):
        FixedPointDevice(lambda x, u: -x, x_init=torch.zeros(2), kind="flow", **kw)
    with pytest.raises(TypeError, match="solver must be"):
        FixedPointDevice(lambda x, u: -x, x_init=torch.zeros(2), solver="newton", **kw)
    with pytest.raises(ValueError, match="tol"):
        Newton(tol=-1.0)
    with pytest.raises(ValueError, match="mixing"):
        Anderson(mixing=1.5)
    bad = FixedPointDevice(lambda x, u: x[:, :1], x_init=torch.zeros(2), **kw)
    with pytest.raises(DeviceContractError, match="f\\(x, u\\) must return"):
        bad(torch.zeros(2, 1))
    good = FixedPointDevice(lambda x, u: -x, x_init=torch.zeros(2), **kw)
    with pytest.raises(ValueError, match="takes drives of shape"):
        good(torch.zeros(2, 3))


def test_newton_bounds_keep_iterates_inside() -> None:
    # dx/dt = eps + z x - x^2 from a small start: plain Newton walks to the negative root for
    # z > 0; with lower=0 the iterate never goes below 0 (the row is reported unconverged)
    eps = 0.01

    def make(solver: Newton) -> FixedPointDevice:
        return FixedPointDevice(
            lambda x, z: eps + z * x - x**2,
            n_in=1,
            n_state=1,
            n_out=1,
            x_init=torch.full((1,), 1e-6, dtype=F64),
            readout=lambda x: x,
            domain=Box((-4.0,), (4.0,)),
            solver=solver,
        )

    z = torch.tensor([[-2.0], [2.0]], dtype=F64)
    plain = make(Newton()).solve(z)
    assert plain.converged.all() and plain.x[1, 0] < 0  # the wrong (negative) root
    guarded = make(Newton(lower=0.0)).solve(z)
    assert (guarded.x > 0).all()
    assert torch.equal(guarded.converged, torch.tensor([True, False]))
    rescued = make(Newton(lower=0.0, fallback=Integrate())).solve(z)
    assert rescued.converged.all()
    exact = (z + torch.sqrt(z**2 + 4 * eps)) / 2
    torch.testing.assert_close(rescued.x, exact, rtol=0, atol=1e-10)


@dataclass(frozen=True)
class Relax(AbstractFixedPointSolver):
    """Plain relaxation ``x += step * F(x, u)``, a solver written only in this test file."""

    step: float = 0.05
    iterations: int = 4000
    tol: float = 1e-10

    def solve(self, fn, x0, u):
        x = x0
        for _ in range(self.iterations):
            x = x + self.step * fn(x, u)
        res = fn(x, u).abs().amax(1)
        its = torch.full((x.shape[0],), self.iterations, dtype=torch.int64)
        return FixedPointResult(x=x, residual=res, iterations=its, converged=res <= self.tol)


def test_a_solver_defined_outside_the_package_runs_a_fixed_point_device() -> None:
    u = U_CHAIN[1:]  # rows where plain relaxation with this step is stable
    dev = _cube_chain_device(Relax())
    torch.testing.assert_close(dev(u), _cube_chain_exact(u), rtol=1e-8, atol=1e-8)
    assert dev.describe()["solver"]["type"] == "Relax"
