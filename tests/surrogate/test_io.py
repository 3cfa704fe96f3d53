from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from quasineuron.surrogate import FitReport, fit_surrogate, load_surrogate, save_surrogate


@pytest.mark.parametrize("kind", ["spline", "mlp"])
def test_round_trip_gives_identical_outputs(tanh_table, tmp_path, kind):
    fit = fit_surrogate(tanh_table, kind=kind, hidden=(8,), max_steps=20, lbfgs_steps=5)
    fit.model.policy = "clamp"
    path = save_surrogate(fit, tmp_path / "twin.safetensors")
    loaded = load_surrogate(path)
    assert type(loaded) is type(fit.model)
    u = torch.linspace(-3.5, 3.5, 101, dtype=torch.float64)[:, None]
    torch.testing.assert_close(loaded(u), fit.model(u), rtol=0, atol=0)
    torch.testing.assert_close(loaded(u.float()), fit.model(u.float()), rtol=0, atol=0)
    assert loaded.fit_report == fit.report
    assert loaded.domain == fit.model.domain
    assert loaded.policy == "clamp"
    assert loaded.describe() == fit.model.describe()
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["quasineuron"])
    assert meta["kind"] == kind and meta["common"]["source"]["name"] == "tanh"


def test_load_refuses_foreign_files(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match="without quasineuron metadata"):
        load_surrogate(path)
    with pytest.raises(FileNotFoundError):
        load_surrogate(tmp_path / "missing.safetensors")


def test_report_dict_round_trip(tanh_table):
    report = fit_surrogate(tanh_table, kind="spline").report
    d = report.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert FitReport.from_dict(d) == report
    with pytest.raises(ValueError, match="unknown FitReport fields"):
        FitReport.from_dict({**d, "rmsee": 1.0})


def test_crash_while_saving_keeps_the_previous_twin(tanh_table, tmp_path, monkeypatch):
    old = fit_surrogate(tanh_table, kind="spline")
    path = save_surrogate(old, tmp_path / "twin.safetensors")
    before = path.read_bytes()
    new = fit_surrogate(tanh_table, kind="mlp", hidden=(4,), max_steps=2, lbfgs_steps=0)

    def crash(src, dst):
        raise OSError("simulated crash during rename")

    with monkeypatch.context() as m:
        m.setattr(os, "replace", crash)
        with pytest.raises(OSError, match="simulated crash"):
            save_surrogate(new, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["twin.safetensors"]  # no temporary left
    assert load_surrogate(path).kind == "spline"
