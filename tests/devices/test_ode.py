"""ODEDevice: accuracy against closed forms and scipy, convergence order, gradients, guards."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from quasineuron.devices.base import check_device
from quasineuron.devices.ode import (
    RK4,
    AbstractReadout,
    Adaptive,
    Euler,
    FinalState,
    FixedStep,
    Heun,
    ODEDevice,
    TimeAverage,
    TimeIntegral,
    solve_reference,
)
from quasineuron.errors import DeviceContractError, SolverError

F64 = torch.float64
TIGHT = Adaptive(rtol=1e-10, atol=1e-12)


def decay_batch(t, x, u):  # dx/dt = -x + u
    return -x + u


def decay_rows(t, x, u):
    return [-x[0] + u[0]]


def pendulum_batch(t, x, u):  # forced damped pendulum, two drives
    return torch.stack([x[:, 1], -torch.sin(x[:, 0]) - 0.3 * x[:, 1] + u[:, 0] * u[:, 1]], dim=1)


def pendulum_rows(t, x, u):
    return [x[1], -torch.sin(x[0]) - 0.3 * x[1] + u[0] * u[1]]


def pendulum(readout, solver, layout="batch", **kw) -> ODEDevice:
    rhs = pendulum_rows if layout == "rows" else pendulum_batch
    return ODEDevice(
        rhs,
        x0=lambda u: torch.stack([0.5 * u[:, 0], torch.zeros_like(u[:, 0])], dim=1),
        n_state=2,
        n_in=2,
        t_end=1.5,
        readout=readout,
        solver=solver,
        layout=layout,
        **kw,
    )


def drives(n: int = 3, n_in: int = 1, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return 2 * torch.rand(n, n_in, generator=gen, dtype=F64) - 1


# ---- readouts against closed forms on dx/dt = -x + u, x(0) = 0 ------------------------------


def closed_form(readout, u: torch.Tensor, T: float) -> torch.Tensor:
    rest = torch.tensor(readout.rest, dtype=u.dtype)
    if isinstance(readout, FinalState):
        return u * (1 - math.exp(-T)) - rest
    a = 0.0 if readout.t_from is None else readout.t_from
    integral = u * ((T - a) - (math.exp(-a) - math.exp(-T))) - rest * (T - a)
    return integral / (T - a) if isinstance(readout, TimeAverage) else integral


READOUTS = [
    FinalState(),
    FinalState(components=(0,), rest=0.25),
    TimeIntegral(),
    TimeIntegral(t_from=0.7, rest=0.1),
    TimeAverage(),
    TimeAverage(t_from=1.3, rest=(0.2,)),
]


@pytest.mark.parametrize("readout", READOUTS, ids=repr)
@pytest.mark.parametrize("solver", [RK4(dt=0.02), TIGHT], ids=["rk4", "dopri5"])
@pytest.mark.parametrize("layout", ["batch", "rows"])
def test_readouts_match_closed_forms_on_a_linear_ode(readout, solver, layout):
    rhs = decay_rows if layout == "rows" else decay_batch
    dev = ODEDevice(
        rhs, x0=torch.zeros(1), n_in=1, t_end=2.0, readout=readout, solver=solver, layout=layout
    )
    u = drives(4)
    torch.testing.assert_close(dev(u), closed_form(readout, u, 2.0), rtol=0, atol=1e-8)


# ---- against scipy DOP853 --------------------------------------------------------------------


@pytest.mark.parametrize(
    "readout", [FinalState(), TimeAverage(components=(0,), t_from=0.3, rest=0.1)], ids=repr
)
@pytest.mark.parametrize("solver", [TIGHT, RK4(dt=0.01)], ids=["dopri5", "rk4"])
@pytest.mark.parametrize("layout", ["batch", "rows"])
def test_nonlinear_ode_matches_scipy_dop853(readout, solver, layout):
    dev = pendulum(readout, solver, layout)
    u = drives(3, n_in=2, seed=1) * 2
    ref = solve_reference(dev, u)
    torch.testing.assert_close(dev(u), ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("solver", "order"), [(Euler, 1), (Heun, 2), (RK4, 4)], ids=["euler", "heun", "rk4"]
)
def test_fixed_step_solvers_converge_at_their_order(solver, order):
    u = torch.tensor([[0.5]], dtype=F64)
    exact = solve_reference(pendulum(FinalState(), TIGHT), torch.cat([u, u], 1))
    errs = []
    for n in (8, 16, 32, 64):
        dev = pendulum(FinalState(), solver(dt=1.5 / n))
        errs.append((dev(torch.cat([u, u], 1)) - exact).abs().max().item())
    rates = [math.log2(a / b) for a, b in zip(errs, errs[1:], strict=False)]
    assert all(order - 0.5 < r < order + 0.5 for r in rates), rates


# ---- gradients -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "solver",
    [
        RK4(dt=0.05),
        Adaptive(rtol=1e-10, atol=1e-12),
        # gradcheck through the adjoint ODE: 9 s on 2 busy cores
        pytest.param(Adaptive(rtol=1e-10, atol=1e-12, adjoint=True), marks=pytest.mark.slow),
    ],
    ids=["rk4-autograd", "dopri5-autograd", "dopri5-adjoint"],
)
def test_input_gradients_pass_gradcheck(solver):
    dev = pendulum(TimeAverage(t_from=0.5), solver)
    u = drives(1, n_in=2, seed=2).requires_grad_(True)
    assert torch.autograd.gradcheck(dev, (u,), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_adjoint_gradient_matches_backprop_through_the_solver():
    u = drives(3, n_in=2, seed=3)
    grads = []
    for adjoint in (False, True):
        dev = pendulum(TimeIntegral(), Adaptive(rtol=1e-10, atol=1e-12, adjoint=adjoint))
        ul = u.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(dev(ul).pow(2).sum(), ul)
        grads.append(g)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-6, atol=1e-8)


# ---- batching, dtype, layouts ----------------------------------------------------------------


@pytest.mark.parametrize("solver", [RK4(dt=0.05), TIGHT], ids=["rk4", "dopri5"])
@pytest.mark.parametrize("layout", ["batch", "rows"])
def test_rows_of_a_batch_are_independent(solver, layout):
    dev = pendulum(TimeAverage(), solver, layout)
    u = drives(4, n_in=2, seed=4)
    whole = dev(u)
    rows = torch.cat([dev(u[i : i + 1]) for i in range(4)])
    # the adaptive step is shared by the batch, so rows agree to the tolerance, not bitwise
    tol = 0.0 if isinstance(solver, RK4) else 1e-8
    torch.testing.assert_close(whole, rows, rtol=0, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("solver", [RK4(dt=0.05), Adaptive()], ids=["rk4", "dopri5"])
def test_dtype_is_kept(dtype, solver):
    dev = pendulum(FinalState(components=(1,)), solver, domain=None)
    # the pendulum's x0 is a lambda, so the device is not picklable: that check is skipped
    assert check_device(dev, dtype=dtype, skip=("pickle",)).ok
    y = dev(drives(3, n_in=2).to(dtype))
    assert y.dtype == dtype and y.shape == (3, 1)


def test_layouts_give_the_same_numbers():
    u = drives(5, n_in=2, seed=5)
    a = pendulum(TimeAverage(), RK4(dt=0.05), "batch")(u)
    b = pendulum(TimeAverage(), RK4(dt=0.05), "rows")(u)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-14)


# ---- divergence guard ------------------------------------------------------------------------


def blowup(t, x, u):  # dx/dt = x^2 + u, x(0) = 1: blows up at t = 1 for u = 0
    return x * x + u


@pytest.mark.parametrize(
    ("solver", "bound"),
    [
        (RK4(dt=0.01), None),
        (RK4(dt=0.01), 100.0),
        (Adaptive(), 100.0),
        # no bound: the shared adaptive step collapses at the blow-up, the batch is split
        pytest.param(Adaptive(), None, marks=pytest.mark.slow),
    ],
    ids=["rk4", "rk4-bound", "dopri5-bound", "dopri5-split"],
)
def test_diverging_rows_become_nan_without_raising(solver, bound):
    dev = ODEDevice(
        blowup,
        x0=torch.ones(1),
        n_in=1,
        t_end=2.0,
        solver=solver,
        bound=bound,
        readout=TimeAverage(),
    )
    u = torch.tensor([[0.0], [-2.0], [-1.0]], dtype=F64)  # -2: stable at -sqrt(2); -1: x = 1
    result = dev.solve(u)
    assert result.diverged.tolist() == [True, False, False]
    assert torch.isnan(result.y[0]).all() and torch.isfinite(result.y[1:]).all()
    torch.testing.assert_close(result.y[2], torch.ones(1, dtype=F64))
    assert torch.isnan(dev(u)[0]).all()


def test_clip_keeps_the_state_in_the_box():
    def grow(t, x, u):
        return torch.ones_like(x) * u

    dev = ODEDevice(
        grow, x0=torch.zeros(2), n_in=1, t_end=2.0, solver=Euler(dt=0.1), clip=(0.0, (1.0, 0.5))
    )
    y = dev(torch.tensor([[1.0], [-1.0]], dtype=F64))
    torch.testing.assert_close(y, torch.tensor([[1.0, 0.5], [0.0, 0.0]], dtype=F64))


# ---- construction errors and description -----------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "exc", "match"),
    [
        ({"t_end": 0.0}, ValueError, "t_start < t_end"),
        ({"readout": FinalState(components=(3,))}, ValueError, "out of range"),
        ({"readout": TimeAverage(t_from=5.0)}, ValueError, "t_from"),
        ({"solver": Adaptive(), "clip": (0.0, 1.0)}, ValueError, "fixed-step"),
        ({"solver": "rk4"}, TypeError, "solver must be"),
        ({"layout": "columns"}, ValueError, "layout"),
    ],
)
def test_bad_arguments_are_rejected_with_a_hint(kw, exc, match):
    args = {"x0": torch.zeros(1), "n_in": 1, "t_end": 1.0} | kw
    with pytest.raises(exc, match=match):
        ODEDevice(decay_batch, **args)


def test_solver_options_are_validated():
    with pytest.raises(ValueError, match="dt"):
        RK4(dt=0.0)
    with pytest.raises(ValueError, match="method"):
        Adaptive(method="rk4")


def test_wrong_rhs_shape_is_a_contract_error():
    dev = ODEDevice(lambda t, x, u: x[:, :1], x0=torch.zeros(2), n_in=1, t_end=1.0)
    with pytest.raises(DeviceContractError, match="rhs"):
        dev(torch.zeros(2, 1))


def test_describe_is_json():
    d = pendulum(TimeAverage(t_from=0.2), RK4(dt=0.1), clip=(-5.0, 5.0), bound=10.0).describe()
    json.dumps(d)
    assert d["solver"]["type"] == "RK4" and d["readout"]["t_from"] == 0.2


@pytest.mark.slow
def test_compiled_fixed_step_path_matches_eager():
    u = drives(6, n_in=2, seed=6)
    eager = pendulum(TimeAverage(t_from=0.5), RK4(dt=0.1), "rows", clip=(-3.0, 3.0))(u)
    comp = pendulum(
        TimeAverage(t_from=0.5), RK4(dt=0.1, compile=True, unroll=3), "rows", clip=(-3.0, 3.0)
    )(u)
    torch.testing.assert_close(comp, eager, rtol=0, atol=1e-12)


# -- solvers and readouts are strategies: new ones are defined here, outside the package ----


@dataclass(frozen=True)
class Midpoint(FixedStep):
    """The explicit midpoint method (second order), written only in this test file."""

    def step(self, f, t, x, h):
        k1 = f(t, x)
        k2 = f(t + 0.5 * h, tuple(a + (0.5 * h) * b for a, b in zip(x, k1, strict=True)))
        return tuple(a + h * b for a, b in zip(x, k2, strict=True))


@pytest.mark.parametrize("layout", ["batch", "rows"])
def test_a_solver_defined_outside_the_package_runs_an_ode_device(layout):
    u = torch.tensor([[0.5], [2.0]], dtype=F64)
    exact = u * (1 - math.exp(-1.0))  # dx/dt = -x + u from 0, read at t = 1
    rhs = decay_batch if layout == "batch" else decay_rows
    errs = []
    for dt in (0.1, 0.05):
        dev = ODEDevice(
            rhs, x0=torch.zeros(1), n_in=1, t_end=1.0, solver=Midpoint(dt=dt), layout=layout
        )
        errs.append((dev(u) - exact).abs().max().item())
    # second order: halving the step quarters the error
    assert 3.5 < errs[0] / errs[1] < 4.5
    # the fixed-step machinery comes with it: clip, and a quadrature readout
    clipped = ODEDevice(
        rhs,
        x0=torch.zeros(1),
        n_in=1,
        t_end=1.0,
        solver=Midpoint(dt=0.01),
        layout=layout,
        clip=(0.0, 0.3),
    )
    assert clipped(u).max().item() == pytest.approx(0.3)
    avg = ODEDevice(
        rhs,
        x0=torch.zeros(1),
        n_in=1,
        t_end=1.0,
        solver=Midpoint(dt=0.01),
        layout=layout,
        readout=TimeAverage(),
    )
    torch.testing.assert_close(avg(u), u * math.exp(-1.0), rtol=1e-4, atol=0)  # u (1 - (1-e^-1))


@dataclass(frozen=True)
class Doubled(AbstractReadout):
    """Twice the time integral: a readout written only in this test file."""

    rest: float = 0.0
    needs_quadrature: ClassVar[bool] = True

    def finish(self, value, length):
        return 2.0 * (value - self._rest(value) * length)


def test_a_readout_defined_outside_the_package_runs_an_ode_device():
    u = torch.tensor([[0.5], [2.0]], dtype=F64)
    kw = {"x0": torch.zeros(1), "n_in": 1, "t_end": 1.0, "solver": RK4(dt=0.01)}
    integral = ODEDevice(decay_batch, readout=TimeIntegral(rest=0.1), **kw)(u)
    torch.testing.assert_close(
        ODEDevice(decay_batch, readout=Doubled(rest=0.1), **kw)(u), 2.0 * integral
    )


def _blows_up_backward(t, x, u):
    # A stiff relaxation towards u, d' = -k d |d| for d = x - u, from d = 1e3: forward it settles
    # (d ~ 1 / (k t)), but backward in time, as the adjoint re-integrates it, d' = +k d |d|
    # blows up at 1e-6 past the window's start; a loose tolerance puts that inside the window.
    return -1e3 * (x - u) * (x - u).abs()


def test_a_failed_adjoint_solve_is_a_solver_error_that_explains_it():
    solver = Adaptive(rtol=1e-5, atol=1e-7, adjoint=True)
    dev = ODEDevice(
        _blows_up_backward,
        x0=torch.full((1,), 1e3),
        n_in=1,
        t_end=1.0,
        solver=solver,
        name="stiff-relaxer",
    )
    u = torch.tensor([[0.1], [0.2]], dtype=F64, requires_grad=True)
    res = dev.solve(u)
    assert not res.diverged.any()  # the forward solve is fine
    with pytest.raises(SolverError) as info:
        res.y.sum().backward()
    msg = str(info.value)
    for part in (
        "'stiff-relaxer'",
        "underflow in dt",
        repr(solver),
        "rtol=1e-05",
        "atol=1e-07",
        "RK4(dt=...)",
        "adjoint=False",
        "tolerances",
        "PhysicsAware()",
    ):
        assert part in msg, part
    assert isinstance(info.value.__cause__, AssertionError)  # torchdiffeq's, kept as the cause


class _NaNSlope(torch.nn.Module):
    """dx/dt = -x + u, plus a term that is zero forward but whose gradient is NaN."""

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.tensor(1.0, dtype=F64))

    def forward(self, t, x, u):
        return -x + u + 0.0 * (self.p - 1.0).sqrt()  # d/dp sqrt(0) = inf, times 0: NaN


def test_a_non_finite_adjoint_is_a_solver_error():
    dev = ODEDevice(
        _NaNSlope(),
        x0=torch.zeros(1),
        n_in=1,
        t_end=1.0,
        solver=Adaptive(adjoint=True),
        name="nan-slope",
    )
    y = dev(torch.tensor([[0.3]], dtype=F64))
    assert torch.isfinite(y).all()
    with pytest.raises(SolverError, match="(?s)'nan-slope'.*non-finite.*adjoint=False"):
        y.sum().backward()
