from __future__ import annotations

import numpy as np
import pytest

from quasineuron.surrogate import fit_surrogate, refine_surrogate, spline_grid
from quasineuron.sweep import Grid, Sobol, sweep


def test_refining_a_spline_grid_reduces_the_error(almost_neuron):
    dev = almost_neuron
    table = sweep(dev, Grid(n=7), progress=False)
    fit, refined = refine_surrogate(
        dev, table, target_nrmse=1e-4, max_rounds=3, points_per_round=32, kind="spline", n_check=256
    )
    assert fit.report.validation == "device-sobol"
    assert len(fit.history) >= 2
    assert fit.history[-1] < fit.history[0] / 10
    assert refined.n_points > table.n_points
    assert spline_grid(refined)[0] is not None  # still a full grid
    assert fit.model.fit_report is fit.report


@pytest.mark.slow
def test_refining_an_mlp_adds_points_and_reduces_the_error(tanh_dev):
    dev = tanh_dev
    table = sweep(dev, Sobol(n=6, seed=0), progress=False)
    opts = {"kind": "mlp", "hidden": (16, 16), "activation": "tanh", "max_steps": 100}
    opts["lbfgs_steps"] = 200
    fit, refined = refine_surrogate(
        dev, table, target_nrmse=1e-9, max_rounds=2, points_per_round=8, n_check=64, **opts
    )
    assert len(fit.history) == 3
    assert refined.n_points == table.n_points + 16
    assert fit.history[-1] < fit.history[0] / 10
    # worst points were added: the new rows are evaluated device points
    np.testing.assert_allclose(refined.y[6:], np.tanh(refined.u[6:]), atol=1e-12)


def test_refine_stops_at_the_target(tanh_dev):
    dev = tanh_dev
    table = sweep(dev, Grid(n=41), progress=False)
    fit, refined = refine_surrogate(dev, table, target_nrmse=1e-3, kind="spline", n_check=64)
    assert fit.history == (fit.report.nrmse,) and refined is table
    assert fit.report.nrmse <= 1e-3
    assert fit_surrogate(table, kind="spline").report.kind == "spline"
