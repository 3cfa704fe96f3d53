from __future__ import annotations

import numpy as np
import pytest
import torch

from quasineuron.devices.base import AbstractDevice, Box, check_device
from quasineuron.devices.formula import FormulaDevice
from quasineuron.surrogate import MLPSurrogate, SplineSurrogate, fit_surrogate, spline_grid
from quasineuron.sweep import Grid, Sobol, sweep

FAST_MLP = {"hidden": (16, 16), "max_steps": 100, "lbfgs_steps": 100}


def test_spline_fidelity_on_1d_tanh(tanh_table, tanh_dev):
    fit = fit_surrogate(tanh_table, kind="spline")
    rep = fit.report
    assert isinstance(fit.model, SplineSurrogate)
    assert rep.kind == "spline" and rep.validation == "grid-leave-out"
    assert rep.n_train == 41 and rep.n_val == 20 and rep.n_failed == 0
    assert rep.nrmse < 1e-3 and rep.r2 > 0.9999
    assert rep.output_range[0] == pytest.approx(2 * np.tanh(3.0))
    # the leave-out estimate is pessimistic: the true error of the returned twin is lower
    true = fit_surrogate(tanh_table, kind="spline", true_device=tanh_dev).report
    assert true.validation == "device-sobol" and true.nrmse < rep.nrmse / 4


def test_mlp_fidelity_on_1d_tanh(tanh_table):
    fit = fit_surrogate(tanh_table, kind="mlp", **FAST_MLP)
    rep = fit.report
    assert isinstance(fit.model, MLPSurrogate) and fit.model.hidden == (16, 16)
    assert rep.validation == "random-split" and rep.n_val == 8 and rep.n_train == 33
    assert rep.nrmse < 5e-3
    # seeded: the same fit twice gives the same twin
    again = fit_surrogate(tanh_table, kind="mlp", **FAST_MLP)
    u = torch.linspace(-3, 3, 7, dtype=torch.float64)[:, None]
    torch.testing.assert_close(again.model(u), fit.model(u), rtol=0, atol=0)


def test_twin_is_a_device(two_output_dev):
    dev = two_output_dev
    table = sweep(dev, Grid(n=21), progress=False)
    for kind in ("spline", "mlp"):
        twin = fit_surrogate(table, kind=kind, hidden=(8,), max_steps=5, lbfgs_steps=0).model
        assert isinstance(twin, AbstractDevice) and twin.differentiable
        assert (twin.n_in, twin.n_out, twin.domain) == (1, 2, dev.domain)
        check_device(twin)
        check_device(twin, dtype=torch.float64)
        assert list(twin.parameters()) == []  # frozen: a network only trains its connections
        assert twin.describe()["twin"]["source"]["name"] == "tanh-sin"


def test_auto_prefers_the_spline_on_a_grid(almost_table):
    fit = fit_surrogate(almost_table, hidden=(8,), max_steps=20, lbfgs_steps=10, good_enough=0.0)
    assert fit.report.kind == "spline"
    assert [r.kind for r in fit.alternatives] == ["mlp"]
    assert fit.alternatives[0].nrmse > fit.report.nrmse
    assert fit.model.fit_report is fit.report


def test_scattered_table_uses_the_mlp(almost_neuron):
    table = sweep(almost_neuron, Sobol(n=64, seed=0), progress=False)
    nodes, reason = spline_grid(table)
    assert nodes is None and "tensor grid" in reason
    with pytest.raises(ValueError, match="cannot fit kind='spline'.*tensor grid"):
        fit_surrogate(table, kind="spline")
    fit = fit_surrogate(table, hidden=(8,), max_steps=20, lbfgs_steps=10)
    assert fit.report.kind == "mlp" and fit.alternatives == ()


def _holey_device() -> FormulaDevice:
    def fn(u: torch.Tensor) -> torch.Tensor:
        y = torch.tanh(u[:, :1] - 0.1 * u[:, 1:])
        hole = (u[:, :1] - 1.0) ** 2 + (u[:, 1:] + 2.0) ** 2 < 0.3
        return torch.where(hole, torch.nan, y)

    return FormulaDevice(fn, n_in=2, n_out=1, domain=Box((-4.0, -4.0), (4.0, 4.0)), probe=False)


def test_failed_points_are_excluded_and_counted(almost_neuron):
    table = sweep(_holey_device(), Grid(n=25), progress=False)
    assert table.n_failed > 0
    spline = fit_surrogate(table, kind="spline", true_device=almost_neuron)
    assert spline.report.n_failed == table.n_failed == spline.report.n_filled
    assert spline.report.n_train == table.n_points - table.n_failed
    assert spline.report.nrmse < 1e-3  # the filled nodes are close to the truth
    mlp = fit_surrogate(table, kind="mlp", hidden=(8,), max_steps=5, lbfgs_steps=0)
    assert mlp.report.n_failed == table.n_failed
    assert mlp.report.n_train + mlp.report.n_val == table.n_points - table.n_failed


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "gp"}, "kind must be one of"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"hidden": (0,)}, "hidden"),
        ({"activation": "relu6"}, "unknown activation"),
        ({"policy": "ignore"}, "policy"),
        ({"lr": -1.0}, "lr must be"),
    ],
)
def test_bad_options_are_rejected(tanh_table, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fit_surrogate(tanh_table, **kwargs)


@pytest.mark.slow
def test_acceptance_almost_neuron_default_twin_within_1e_3_of_range(almost_neuron):
    table = sweep(almost_neuron, Grid(n=41), progress=False)
    fit = fit_surrogate(table, seed=0)  # defaults: kind="auto", hidden=(64, 64)
    assert fit.report.nrmse <= 1e-3, fit.report.summary()
    # and against the true device between the sweep points
    u = torch.as_tensor(Sobol(n=1024, seed=1).points(almost_neuron.domain))
    with torch.no_grad():
        err = fit.model(u) - almost_neuron(u)
    assert float(err.pow(2).mean().sqrt()) <= 1e-3 * fit.report.output_range[0]


def test_auto_skips_the_mlp_when_the_spline_is_good_enough(almost_table):
    fit = fit_surrogate(almost_table, hidden=(8,), max_steps=20, lbfgs_steps=10, good_enough=1e-2)
    assert fit.report.kind == "spline" and fit.report.nrmse <= 1e-2
    assert fit.alternatives == ()
