"""BatchedNewton: fixed Newton steps from a table start, one residual check, fallback rows."""

from __future__ import annotations

import copy
import json
import pickle

import pytest
import torch

from quasineuron.devices import InputClip
from quasineuron.devices.fixed_point import (
    BatchedNewton,
    DriveTable,
    FixedPointDevice,
    Integrate,
    _solve_small,
)
from quasineuron.devices.wuxing import wuxing_neuron

F64 = torch.float64


def _pair(**kw: object) -> tuple[FixedPointDevice, FixedPointDevice]:
    """The same Wuxing steady-state neuron with the new and the old (integrating) solver."""
    opts = {"input_elements": (0,), "output_elements": (0, 1, 2, 3, 4), **kw}
    new = wuxing_neuron(readout="steady-state", **opts)
    old = wuxing_neuron(readout="steady-state", steady_solver="integrate", **opts)
    assert isinstance(new, FixedPointDevice) and isinstance(old, FixedPointDevice)
    assert isinstance(new.solver, BatchedNewton) and isinstance(old.solver, Integrate)
    return new, old


def test_newton_equals_the_integrated_steady_state_on_a_drive_grid() -> None:
    new, old = _pair()
    # the whole domain with both edges, table nodes and points between them
    u = torch.cat([torch.linspace(-0.5, 2.0, 301, dtype=F64), torch.tensor([-0.4999, 1.9999])])
    u = u[:, None]
    with torch.no_grad():
        y_new, y_old = new(u), old(u)
    assert torch.isfinite(y_new).all()
    assert (y_new - y_old).abs().max() <= 1e-10
    res = new.solve(u)
    assert res.converged.all() and res.residual.max() <= 1e-10
    assert new.solve_counts["fallback"] == 0  # the table start covers the domain
    # the clipped region: drives far outside the domain are clipped to its edges
    far = torch.tensor([[-5.0], [-0.75], [3.0], [40.0]], dtype=F64)
    with torch.no_grad():
        c_new, c_old = InputClip(new)(far), InputClip(old)(far)
    assert (c_new - c_old).abs().max() <= 1e-10


def test_drives_off_the_table_fall_back_to_integration_including_divergence() -> None:
    new, old = _pair()
    # below about -0.73 the neuron diverges (NaN); Newton alone would find an unstable root
    u = torch.tensor([[-1.0], [-0.6], [0.5], [2.5], [4.0]], dtype=F64)
    with torch.no_grad():
        y_new, y_old = new(u), old(u)
    assert torch.isnan(y_new[0]).all() and torch.isnan(y_old[0]).all()
    assert (y_new[1:] - y_old[1:]).abs().max() <= 1e-10
    assert new.solve_counts == {"rows": 5, "fallback": 4, "unconverged": 1}
    res = new.solve(u)
    assert res.fallback is not None
    assert res.fallback.tolist() == [True, True, False, True, True]


def test_rows_failing_the_residual_check_are_reported_and_re_solved() -> None:
    new, old = _pair()
    table = new.solver.start
    u = torch.linspace(-0.4, 1.9, 8, dtype=F64)[:, None]

    def bad_start(v: torch.Tensor) -> torch.Tensor:
        x = table(v).clone()
        x[::2] += 0.3  # one Newton step from here does not reach 1e-10
        return x

    x0 = new.initial_state(u)
    ref = old.solver.solve(new.residual, x0, u)
    with_fb = BatchedNewton(
        iterations=1, jacobian=new.solver.jacobian, start=bad_start, fallback=Integrate()
    )
    out = with_fb.solve(new.residual, x0, u)
    assert out.fallback is not None
    assert out.fallback.tolist() == [True, False] * 4
    assert out.converged.all()
    assert (out.x - ref.x).abs().max() <= 1e-9
    # without a fallback the failed rows are reported, and the device gives NaN for them
    no_fb = BatchedNewton(iterations=1, jacobian=new.solver.jacobian, start=bad_start)
    out = no_fb.solve(new.residual, x0, u)
    assert out.converged.tolist() == [False, True] * 4
    dev = wuxing_neuron(readout="steady-state", steady_solver=no_fb, output_elements=(1,))
    with torch.no_grad():
        y = dev(u)
    assert torch.isnan(y[::2]).all() and torch.isfinite(y[1::2]).all()
    assert dev.solve_counts["unconverged"] == 4


def test_gradients_are_those_of_the_integrated_device() -> None:
    new, old = _pair(output_elements=(1,))
    u = torch.linspace(-0.45, 1.95, 7, dtype=F64)[:, None]
    grads = []
    for dev in (new, old):
        v = u.clone().requires_grad_(True)
        dev(v).sum().backward()
        grads.append(v.grad)
    assert torch.allclose(grads[0], grads[1], rtol=0, atol=1e-9)
    # scoring (no grad) gives the values the grad path gives
    with torch.no_grad():
        y_nograd = new(u)
    assert (y_nograd - new(u).detach()).abs().max() <= 1e-12


def test_float32_scoring_matches_the_old_path() -> None:
    new, old = _pair(output_elements=(1,))
    u = torch.rand(2000, 1, generator=torch.Generator().manual_seed(0)) * 2.5 - 0.5
    with torch.no_grad():
        y_new, y_old = new(u), old(u)
    assert y_new.dtype == torch.float32
    # both at float32 rounding: the old path stops at a residual of 256 ulps
    assert (y_new - y_old).abs().max() <= 1e-4
    assert new.solve_counts["fallback"] == 0


def test_table_start_is_nan_off_the_table_and_close_on_it() -> None:
    new, old = _pair()
    table = new.solver.start
    u = torch.tensor([[-0.5001], [-0.5], [0.123], [2.0], [2.0001], [float("nan")]], dtype=F64)
    x = table(u)
    assert torch.isnan(x[[0, 4, 5]]).all()
    ref = old.solver.solve(new.residual, new.initial_state(u[1:4]), u[1:4]).x
    assert (x[1:4] - ref).abs().max() <= 1e-6  # linear interpolation on 4097 points


def test_written_out_solve_matches_lapack() -> None:
    gen = torch.Generator().manual_seed(1)
    jac = torch.randn(64, 5, 5, generator=gen, dtype=F64) + 4 * torch.eye(5, dtype=F64)
    rhs = torch.randn(64, 5, generator=gen, dtype=F64)
    ref = torch.linalg.solve(jac, rhs.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(_solve_small(jac, rhs), ref, rtol=0, atol=1e-12)


def test_table_start_pickles_and_describe_is_json() -> None:
    new, _ = _pair()
    u = torch.tensor([[0.3]], dtype=F64)
    with torch.no_grad():
        y = new(u)
    for copied in (copy.deepcopy(new), pickle.loads(pickle.dumps(new))):
        assert copied.solver.start._cache == {}  # tables are solved again, not copied
        with torch.no_grad():
            assert torch.equal(copied(u), y)
    d = json.loads(json.dumps(new.describe()))
    assert d["solver"]["type"] == "BatchedNewton"
    assert d["solver"]["start"]["points"] == 4097


def test_bad_arguments_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="iterations"):
        BatchedNewton(iterations=-1)
    with pytest.raises(ValueError, match="tol"):
        BatchedNewton(tol=0.0)
    with pytest.raises(TypeError, match="fallback"):
        BatchedNewton(fallback="integrate")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="start"):
        BatchedNewton(start=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="low < high"):
        DriveTable(lambda x, u: x, (1.0,), 1.0, 1.0)
    with pytest.raises(ValueError, match="points"):
        DriveTable(lambda x, u: x, (1.0,), 0.0, 1.0, points=1)
    with pytest.raises(ValueError, match="steady_solver='integrate'"):
        wuxing_neuron(readout="steady-state", input_elements=(0, 1), steady_solver="newton")
    with pytest.raises(ValueError, match="applies to readout='steady-state'"):
        wuxing_neuron(readout="window", steady_solver="newton")
    with pytest.raises(ValueError, match="steady_solver must be"):
        wuxing_neuron(readout="steady-state", steady_solver="fast")  # type: ignore[arg-type]
