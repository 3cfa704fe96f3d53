"""Optuna search over sizes, learning rate and device ε (optional extra ``[tune]``)."""

from __future__ import annotations

import pytest

import quasineuron as qn
from quasineuron.tuning import SearchSpace, tune

optuna = pytest.importorskip("optuna")


def test_three_trials_write_a_sqlite_study_and_resume(tmp_path):
    data = qn.xor(n_per_corner=8, noise=0.1, seed=0)
    space = SearchSpace(widths=(4, 8), n_hidden=(1, 1), lr=(1e-2, 1e-1), eps=(0.0, 0.2))
    kw = dict(store=tmp_path, space=space, epochs=3, batch_size=8, seed=0)
    kw["connection"] = qn.TwoDrive()
    res = tune(qn.almost_neuron, data, data, n_trials=3, **kw)
    assert (tmp_path / "study.db").exists()
    assert res.n_trials == 3 and 0.0 <= res.best_value <= 1.0
    assert set(res.best_params) == {"lr", "n_hidden", "width_0", "eps"}
    assert 0.0 <= res.best_params["eps"] <= 0.2
    again = tune(qn.almost_neuron, data, data, n_trials=1, **kw)  # same study, one more trial
    assert again.n_trials == 4
    study = optuna.load_study(study_name="quasineuron", storage=res.storage)
    assert len(study.trials) == 4


def test_fixed_device_needs_eps_off(tmp_path):
    dev = qn.ideal_neuron()
    data = qn.xor()
    with pytest.raises(ValueError, match="factory"):
        tune(dev, data, data, store=tmp_path, n_trials=1)
