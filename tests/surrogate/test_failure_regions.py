"""Failed and non-finite points: never fitted, masked out by ``valid``, counted in the report."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from quasineuron.devices.base import Box
from quasineuron.devices.formula import FormulaDevice
from quasineuron.surrogate import fit_surrogate, load_surrogate, save_surrogate
from quasineuron.sweep import Grid, Sobol, sweep

FAST_MLP = {"kind": "mlp", "hidden": (8,), "max_steps": 50, "lbfgs_steps": 0}


def holed_device(n_in: int = 1) -> FormulaDevice:
    """tanh of the first drive, NaN where the first drive exceeds 0.5 (the device fails)."""

    def fn(u: torch.Tensor) -> torch.Tensor:
        y = torch.tanh(u[:, :1])
        return torch.where(u[:, :1] > 0.5, torch.full_like(y, math.nan), y)

    box = Box((-2.0,) * n_in, (2.0,) * n_in)
    return FormulaDevice(fn, n_in=n_in, n_out=1, domain=box, name="holed", probe=False)


def raising_device() -> FormulaDevice:
    """tanh that raises for any drive above 1 (a simulator that does not converge there)."""

    def fn(u: torch.Tensor) -> torch.Tensor:
        if bool((u > 1.0).any()):
            raise RuntimeError("no convergence")
        return torch.tanh(u)

    return FormulaDevice(fn, n_in=1, n_out=1, domain=Box((-2.0,), (2.0,)), probe=False)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_points_marked_ok_with_nonfinite_outputs_are_not_fitted(bad: float) -> None:
    table = sweep(
        FormulaDevice(torch.tanh, n_in=1, n_out=1, domain=Box((-2.0,), (2.0,))),
        Grid(n=41),
        progress=False,
    )
    y = table.y.copy()
    y[7] = bad  # the table says OK (status 0) but the output is not finite
    table = dataclasses.replace(table, y=y)
    fit = fit_surrogate(table, seed=0, **FAST_MLP)  # filterwarnings=error: no inf/inf warning
    with torch.no_grad():
        out = fit.model(torch.linspace(-2, 2, 101, dtype=torch.float64).reshape(-1, 1))
    assert bool(out.isfinite().all())
    rep = fit.report
    assert rep.sweep_failures == {"non-finite": 1}
    assert rep.failed_fraction == pytest.approx(1 / 41)
    assert math.isfinite(rep.nrmse) and rep.output_range == pytest.approx((2 * math.tanh(2),))


def test_spline_mask_is_the_cells_whose_corners_all_succeeded(tmp_path) -> None:
    table = sweep(holed_device(), Grid(n=41), progress=False)  # nodes every 0.1
    assert table.n_failed == 15  # u = 0.6 .. 2.0
    fit = fit_surrogate(table, kind="spline")
    u = torch.tensor([[-1.9], [0.0], [0.45], [0.55], [0.75], [2.0], [2.5]], dtype=torch.float64)
    expect = torch.tensor([True, True, True, False, False, False, False])
    assert torch.equal(fit.model.valid(u), expect)  # 0.55 lies in the cell [0.5, 0.6]
    loaded = load_surrogate(save_surrogate(fit, tmp_path / "twin.safetensors"))
    assert torch.equal(loaded.valid(u), expect)


def test_scattered_mask_marks_bins_holding_failed_points() -> None:
    table = sweep(holed_device(n_in=2), Sobol(n=256, seed=0), progress=False)
    fit = fit_surrogate(table, seed=0, **FAST_MLP)
    g = torch.Generator().manual_seed(1)
    u = torch.rand(400, 2, generator=g, dtype=torch.float64) * 4 - 2
    valid = fit.model.valid(u)
    # 8 bins per drive (edges every 0.5): failed points (u0 > 0.5) fill the bins above 0.5
    assert bool(valid[u[:, 0] < 0.5].all()) and not bool(valid[u[:, 0] > 0.5].any())
    assert fit.report.sweep_failures == {"non-finite": int(table.n_failed)}


def test_failed_check_points_are_counted_by_reason() -> None:
    dev = raising_device()
    table = sweep(dev, Grid(n=41), progress=False)
    fit = fit_surrogate(table, kind="spline", true_device=dev, n_check=64)
    assert fit.report.n_val + sum(fit.report.excluded.values()) == 64
    # a quarter of [-2, 2] lies above 1: about 16 of 64 Sobol points, none silently dropped
    assert 10 <= fit.report.excluded["device failed"] <= 22
    assert fit.report.sweep_failures == {"device failed": 10}
    assert "check points excluded" in fit.report.summary()
    assert not bool(fit.model.valid(torch.tensor([[1.5]], dtype=torch.float64)))


def test_fidelity_counts_nonfinite_targets_instead_of_returning_nan() -> None:
    from quasineuron.surrogate.report import fidelity

    y = np.array([[0.0], [1.0], [np.nan], [np.inf]])
    rep = fidelity(
        y, np.zeros((4, 1)), np.array([1.0]), kind="mlp", validation="random-split", n_train=4
    )
    assert rep.excluded == {"non-finite": 2} and rep.n_val == 2
    assert rep.rmse == pytest.approx(math.sqrt(0.5))


def test_plot_of_a_twin_with_a_failed_region(tmp_path) -> None:
    from quasineuron.surrogate import plot_fit

    dev = holed_device()
    table = sweep(dev, Grid(n=41), progress=False)
    fit = fit_surrogate(table, kind="spline")
    paths = plot_fit(fit.model, table, tmp_path, true_device=dev)
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)

    class Axes:  # records the shaded spans
        spans: list[tuple[float, float]] = []

        def axvspan(self, a: float, b: float, **kw: object) -> None:
            self.spans.append((a, b))

    from quasineuron.surrogate.plot import _shade_invalid

    ax = Axes()
    _shade_invalid(ax, fit.model)
    assert len(ax.spans) == 1 and ax.spans[0] == pytest.approx((0.5, 2.0), abs=3e-3)


def test_no_mask_above_sixteen_drives_rather_than_one_huge_bin() -> None:
    from quasineuron.sweep import SweepTable

    rng = np.random.default_rng(0)
    u = rng.uniform(-1, 1, (64, 17))
    status = np.zeros(64, dtype=np.int8)
    status[0] = 2  # one failure must not invalidate the whole domain
    table = SweepTable(
        u=u,
        y=u[:, :1] ** 2,
        status=status,
        errors={0: "RuntimeError: x"},
        domain=Box((-1.0,) * 17, (1.0,) * 17),
        device={"name": "bowl"},
    )
    fit = fit_surrogate(table, seed=0, **{**FAST_MLP, "max_steps": 5})
    assert fit.model.validity is None
    assert bool(fit.model.valid(torch.zeros(2, 17, dtype=torch.float64)).all())
