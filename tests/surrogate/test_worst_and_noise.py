"""The report's worst point, worst region, refine suggestion and noise floor."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from quasineuron.devices import Noisy, ideal_neuron
from quasineuron.devices.base import Box
from quasineuron.devices.formula import FormulaDevice
from quasineuron.surrogate import fit_surrogate
from quasineuron.sweep import Grid, sweep


def steep_device() -> FormulaDevice:
    """A threshold: tanh(50 u) on [-1, 1], flat almost everywhere, steep near 0."""
    return FormulaDevice(
        lambda u: torch.tanh(50 * u), n_in=1, n_out=1, domain=Box((-1.0,), (1.0,)), name="steep"
    )


def NoisyTanh(std: float, seed: int = 0) -> Noisy:
    """tanh(u) on [-2.0, 2.0] plus Gaussian noise of known ``std`` from a seeded generator."""
    return Noisy(ideal_neuron("tanh", limit=2.0), std=std, seed=seed)


def test_steep_device_mean_small_worst_large_and_refine_suggested() -> None:
    dev = steep_device()
    table = sweep(dev, Grid(n=41), progress=False)
    rep = fit_surrogate(table, kind="spline", true_device=dev, n_check=512).report
    assert rep.nrmse < 0.03  # the mean hides it ...
    assert rep.worst_error > 5 * rep.nrmse and rep.worst_abs > 0.2  # ... the worst point not
    assert abs(rep.worst_u[0]) < 0.05
    low, high = rep.worst_region["low"][0], rep.worst_region["high"][0]
    assert low <= 0.0 <= high and high - low == pytest.approx(0.25)
    assert rep.error_p95 <= rep.error_p99 <= rep.worst_error
    assert "refine_surrogate(device, table, target_nrmse=" in rep.suggestion
    assert "kind='spline'" in rep.suggestion and "suggestion:" in rep.summary()
    restored = type(rep).from_dict(json.loads(json.dumps(rep.to_dict())))
    assert restored.worst_u == rep.worst_u and restored.suggestion == rep.suggestion


def test_smooth_device_gets_no_suggestion() -> None:
    dev = FormulaDevice(torch.tanh, n_in=1, n_out=1, domain=Box((-1.0,), (1.0,)))
    rep = fit_surrogate(sweep(dev, Grid(n=41), progress=False), kind="spline").report
    assert rep.worst_error < 1e-3 and rep.suggestion == ""


def test_noise_floor_matches_the_true_std() -> None:
    std = 0.02
    table = sweep(NoisyTanh(std, seed=0), Grid(n=401), progress=False, repeats=3)
    assert table.n_points == 3 * 401
    fit = fit_surrogate(table, kind="spline", true_device=NoisyTanh(std, seed=1), n_check=512)
    rep = fit.report
    assert rep.repeats == 3 and rep.noise_floor[0] == pytest.approx(std, rel=0.1)
    # measured against single noisy evaluations, a twin at the noise floor scores about 1
    assert rep.error_to_noise[0] == pytest.approx(rep.rmse_per_output[0] / rep.noise_floor[0])
    assert 0.8 < rep.error_to_noise[0] < 1.6
    assert "noise floor" in rep.summary()


def test_twin_is_fitted_on_the_mean_of_repeats() -> None:
    dev = FormulaDevice(torch.tanh, n_in=1, n_out=1, domain=Box((-1.0,), (1.0,)))
    table = sweep(dev, Grid(n=9), progress=False, repeats=2)
    y = table.y.copy()
    y[:9] += 0.1  # first repeat high, second low: the mean is the device itself
    y[9:] -= 0.1
    fit = fit_surrogate(dataclasses.replace(table, y=y), kind="spline")
    nodes = torch.linspace(-1, 1, 9, dtype=torch.float64).reshape(-1, 1)
    with torch.no_grad():
        torch.testing.assert_close(fit.model(nodes), torch.tanh(nodes))
    assert fit.report.noise_floor == pytest.approx((0.1 * math.sqrt(2),))


def test_a_failed_repeat_leaves_the_other_repeat() -> None:
    dev = FormulaDevice(torch.tanh, n_in=1, n_out=1, domain=Box((-1.0,), (1.0,)))
    table = sweep(dev, Grid(n=9), progress=False, repeats=2)
    status = table.status.copy()
    status[4] = 2  # the first repeat of u=0 raised
    fit = fit_surrogate(dataclasses.replace(table, status=status), kind="spline")
    assert bool(fit.model.valid(torch.zeros(1, 1, dtype=torch.float64)))
    assert fit.report.sweep_failures == {"device failed": 1}
    assert fit.report.failed_fraction == pytest.approx(1 / 18)
    assert np.isfinite(fit.report.noise_floor).all()


def test_characterize_report_shows_noise_floor_and_worst_point(tmp_path) -> None:
    from quasineuron.pipeline import characterize

    res = characterize(
        NoisyTanh(0.02),
        tmp_path / "run",
        sampler=Grid(n=101),
        repeats=2,
        progress=False,
        twin_kind="spline",
    )
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["sweep"]["repeats"] == 2 and report["sweep"]["n_points"] == 202
    assert report["twin"]["noise_floor"][0] == pytest.approx(0.02, rel=0.25)
    assert len(report["twin"]["error_to_noise"]) == 1
    assert len(report["twin"]["worst_u"]) == 1
    assert report["twin"]["details"]["repeats"] == 2
    assert res.fit.report.noise_floor == tuple(report["twin"]["noise_floor"])


def test_characterize_report_has_no_noise_floor_without_repeats(tmp_path) -> None:
    from quasineuron.pipeline import characterize

    characterize(
        steep_device(), tmp_path / "run", sampler=Grid(n=41), progress=False, twin_kind="spline"
    )
    twin = json.loads((tmp_path / "run" / "report.json").read_text())["twin"]
    assert "noise_floor" not in twin
    assert "refine_surrogate(" in twin["suggestion"]
