"""The native fixed-step path of ODEDevice: equal to the torch path, falls back where it must."""

from __future__ import annotations

import logging
import subprocess

import pytest
import torch

from quasineuron.devices import native_ode
from quasineuron.devices.native_ode import NativeRHS, native_available
from quasineuron.devices.ode import (
    RK4,
    Euler,
    FinalState,
    Heun,
    ODEDevice,
    TimeAverage,
    TimeIntegral,
    solve_reference,
)
from quasineuron.devices.wuxing import wuxing_neuron, wuxing_rhs

F64 = torch.float64


class Forced:
    """A non-autonomous, nonlinear test rhs (batch layout) with its native form.

    dx0/dt = -p0 x0 + x1 x0 + u0 cos(t), dx1/dt = p1 x0 - x1 + u1
    """

    def __call__(self, t, x, u):
        x0, x1 = x[:, 0], x[:, 1]
        d0 = -2.0 * x0 + x1 * x0 + u[:, 0] * torch.cos(t)
        d1 = 0.5 * x0 - x1 + u[:, 1]
        return torch.stack([d0, d1], dim=1)

    def native_form(self) -> NativeRHS:
        code = (
            "dx[0] = -p[0] * x[0] + x[1] * x[0] + u[0] * cos(t); dx[1] = p[1] * x[0] - x[1] + u[1];"
        )
        return NativeRHS("forced", n_state=2, n_in=2, code=code, params=(2.0, 0.5))


def _pair(solver, **kw) -> tuple[ODEDevice, ODEDevice]:
    """The same device on the native path and on the torch path."""
    native = wuxing_neuron(solver=solver, **kw)
    torch_ = wuxing_neuron(
        solver=type(solver)(dt=solver.dt, unroll=solver.unroll, native=False), **kw
    )
    return native, torch_


def _drives(n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return -0.5 + 2.5 * torch.rand(n, 1, generator=gen, dtype=F64)


@pytest.mark.parametrize("solver", [RK4(dt=0.1), Heun(dt=0.1), Euler(dt=0.05)])
@pytest.mark.parametrize(
    "readout",
    [FinalState(), TimeIntegral(), TimeAverage(), TimeAverage(t_from=0.35)],
    ids=["final", "integral", "average", "average-from"],
)
def test_native_equals_torch_path(solver, readout) -> None:
    u = torch.rand(37, 2, dtype=F64)  # 37 rows: several lane blocks and a partial one
    kw = dict(x0=torch.tensor([0.2, -0.1], dtype=F64), n_in=2, t_end=1.3, readout=readout)
    native = ODEDevice(Forced(), solver=solver, **kw)
    slow = ODEDevice(Forced(), solver=type(solver)(dt=solver.dt, native=False), **kw)
    got, want = native.solve(u), slow.solve(u)
    assert native.solve_path[0] == "native" and slow.solve_path[0] == "torch"
    torch.testing.assert_close(got.y, want.y, rtol=0, atol=1e-12)
    torch.testing.assert_close(got.x, want.x, rtol=0, atol=1e-12)
    assert got.n_steps == want.n_steps


@pytest.mark.parametrize("layout", ["rows", "batch"])
@pytest.mark.parametrize("solver", [RK4(dt=0.1), Heun(dt=0.1), Euler(dt=0.1)])
def test_wuxing_native_equals_torch_path(layout, solver) -> None:
    native, slow = _pair(solver, layout=layout, input_elements=(0, 2), output_elements=(1, 3))
    u = -0.1 + 2.1 * torch.rand(21, 2, dtype=F64)
    got = native(u)
    assert native.solve_path[0] == "native"
    torch.testing.assert_close(got, slow(u), rtol=0, atol=1e-12)


def test_wuxing_native_matches_the_reference_in_float32() -> None:
    dev = wuxing_neuron()
    u = _drives(6)
    got = dev(u.float())
    assert got.dtype == torch.float32 and dev.solve_path[0] == "native"
    torch.testing.assert_close(got.double(), solve_reference(dev, u), rtol=0, atol=2e-6)


@pytest.mark.parametrize("clip", [None, (0.0, 2.5)])
def test_divergence_gives_the_same_nan_rows_and_mask(clip) -> None:
    native, slow = _pair(RK4(dt=0.1, unroll=4), bound=3.0, clip=clip)
    # below about -0.75 a drive on one element blows up; 3.0 is reached by large drives
    u = torch.tensor(
        [[0.1], [-3.0], [1.0], [-20.0], [2.0], [6.0], [float("nan")], [0.5]], dtype=F64
    )
    got, want = native.solve(u), slow.solve(u)
    assert native.solve_path[0] == "native"
    assert torch.equal(got.diverged, want.diverged)
    assert got.diverged.any() and not got.diverged.all()
    assert torch.equal(got.y.isnan(), want.y.isnan())
    assert torch.equal(got.y.isnan().any(1), got.diverged)
    ok = ~got.diverged
    torch.testing.assert_close(got.y[ok], want.y[ok], rtol=0, atol=1e-12)


def test_threads_split_rows_without_changing_them() -> None:
    dev = wuxing_neuron(solver=RK4(dt=0.5))
    u = _drives(5003)  # more than one thread's share, not a multiple of the lanes
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = dev(u)
        torch.set_num_threads(2)
        two = dev(u)
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(one, two, rtol=0, atol=0)


def test_grad_required_takes_the_torch_path_and_gradcheck_passes() -> None:
    dev = wuxing_neuron(solver=RK4(dt=0.5), T=2.0)
    u = _drives(3).requires_grad_()
    assert torch.autograd.gradcheck(dev, (u,))
    assert dev.solve_path[0] == "torch" and "gradient" in dev.solve_path[1]
    with torch.no_grad():
        dev(u)
    assert dev.solve_path[0] == "native"


def test_each_reason_is_noted_once_per_device(caplog) -> None:
    dev = wuxing_neuron(solver=RK4(dt=0.5))
    u = _drives(4)
    with caplog.at_level(logging.INFO, logger="quasineuron.devices.ode"):
        for _ in range(3):
            dev(u)
            dev(u.clone().requires_grad_())
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "native path" in lines[0] and "torch path" in lines[1] and "gradient" in lines[1]


def test_unsupported_cases_name_their_reason() -> None:
    dev = wuxing_neuron()
    u = _drives(2)
    cases = {
        "native=False": RK4(dt=0.1, native=False),
        "torch.compile": RK4(dt=0.1, compile=True),
    }
    for words, solver in cases.items():
        assert words in native_ode._why_not(dev, solver, u)
    assert "float32 and float64" in native_ode._why_not(dev, RK4(dt=0.1), u.bfloat16())
    # drives on another device (CUDA in practice; "meta" needs no GPU)
    assert "runs on the CPU" in native_ode._why_not(dev, RK4(dt=0.1), u.to("meta"))
    # per-neuron tensor parameters have no native form: the rows rhs says so
    assert wuxing_rhs(K1=torch.ones(5, 3, 1)).native_form() is None
    plain = ODEDevice(lambda t, x, u: -x + u, x0=torch.zeros(1), n_in=1, t_end=1.0)
    plain(u)
    assert plain.solve_path == ("torch", "the rhs declares no native form (a native_form() method)")


def test_no_compiler_falls_back_with_a_warning(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(native_ode, "_LIBS", {})
    monkeypatch.setattr(native_ode, "_WARNED", False)
    monkeypatch.setenv("QUASINEURON_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    native, slow = _pair(RK4(dt=0.5))
    u = _drives(5)
    with pytest.warns(RuntimeWarning, match="native ODE kernel could not be built"):
        got = native(u)
    assert native.solve_path[0] == "torch" and "could not be built" in native.solve_path[1]
    torch.testing.assert_close(got, slow(u), rtol=0, atol=0)
    native(u)  # warned once per process, not per call (warnings are errors in the tests)


def test_the_build_is_cached_on_disk_across_processes(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(native_ode, "_LIBS", {})
    monkeypatch.setenv("QUASINEURON_CACHE", str(tmp_path))
    # a one-state form: the smallest source, the quickest compile
    form = NativeRHS("decay", n_state=1, n_in=1, code="dx[0] = -x[0] + u[0];")
    assert native_available(form)
    assert len(list((tmp_path / "kernels").glob("ode-decay-*.so"))) == 1

    def no_compiler(*args, **kwargs):
        raise AssertionError("compiled again although the build is cached")

    # a new process: nothing in memory, the library on disk, no compiler run
    monkeypatch.setattr(native_ode, "_LIBS", {})
    monkeypatch.setattr(subprocess, "run", no_compiler)
    assert native_available(form)


def test_native_rhs_rejects_bad_forms() -> None:
    with pytest.raises(ValueError, match="lower-case identifier"):
        NativeRHS("Bad Name", n_state=1, n_in=1, code="dx[0] = 0;")
    with pytest.raises(ValueError, match="n_state must be an int >= 1"):
        NativeRHS("a", n_state=0, n_in=1, code="dx[0] = 0;")
    with pytest.raises(ValueError, match="assigning dx"):
        NativeRHS("a", n_state=1, n_in=1, code="y = 0;")
    with pytest.raises(ValueError, match="finite"):
        NativeRHS("a", n_state=1, n_in=1, code="dx[0] = p[0];", params=(float("inf"),))
    with pytest.raises(ValueError, match="integer literals"):
        NativeRHS("a", n_state=2, n_in=1, code="dx[0] = x[1]; dx[1] = x[i];")
    with pytest.raises(TypeError, match="native must be a bool"):
        RK4(dt=0.1, native="yes")


def test_an_initial_state_per_row_is_read_per_row() -> None:
    def x0(u: torch.Tensor) -> torch.Tensor:
        return 0.3 * u

    kw = dict(x0=x0, n_state=2, n_in=2, t_end=0.7, readout=TimeAverage())
    native = ODEDevice(Forced(), solver=RK4(dt=0.1), **kw)
    slow = ODEDevice(Forced(), solver=RK4(dt=0.1, native=False), **kw)
    u = torch.rand(19, 2, dtype=F64)
    got = native(u)
    assert native.solve_path[0] == "native"
    torch.testing.assert_close(got, slow(u), rtol=0, atol=1e-12)
