"""The domain tools from a run config: monitor on by default, penalty, masking, recharacterize."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from quasineuron.config import ConfigError, parse_config
from quasineuron.errors import OutOfDomainWarning
from quasineuron.pipeline import run_pipeline


def _cfg(**training: object) -> dict:
    # a tanh characterised on [-0.3, 0.3] only: the drives leave it at once
    return {
        "name": "domain-tools",
        "device": {"name": "tanh", "options": {"limit": 0.3}},
        "sweep": {"points": 21},
        "twin": {"kind": "spline", "policy": "clamp"},
        "data": {"name": "digits", "limit_train": 120},
        "network": {"hidden": [4]},
        "training": {"epochs": 2, "batch_size": 60, **training},
        "evaluation": {"modes": ["surrogate", "device"], "baseline_mlp": False},
    }


def _run(cfg: dict, out: Path) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OutOfDomainWarning)
        return run_pipeline(parse_config(cfg), out, progress=False)


@pytest.mark.slow
def test_the_monitor_records_each_epochs_outside_fraction_by_default(tmp_path: Path) -> None:
    m = _run(_cfg(), tmp_path / "run")
    history = m["training"]["history"]
    assert len(history) == 2
    for epoch in history:
        fr = epoch["extras"]["out_of_domain"]
        assert len(fr) == 2 and all(0.0 <= f <= 1.0 for f in fr)
    assert max(history[-1]["extras"]["out_of_domain"]) > 0.2  # a narrow box: drives escape
    off = _run(_cfg(monitor_domain=False), tmp_path / "off")
    assert "out_of_domain" not in off["training"]["history"][-1]["extras"]


@pytest.mark.slow
def test_a_recharacterize_stage_widens_the_twin_and_training_continues(tmp_path: Path) -> None:
    stages = [
        {"method": "surrogate", "epochs": 1},
        {"method": "recharacterize", "options": {"points": 40, "max_steps": 100}},
        {"method": "surrogate", "epochs": 1},
    ]
    cfg = _cfg(stages=stages, domain_penalty=1.0, nonfinite="mask")
    m = _run(cfg, tmp_path / "run")
    outcomes = m["training"]["stages"]
    assert [o["method"] for o in outcomes] == ["surrogate", "recharacterize", "surrogate"]
    rc = outcomes[1]["recharacterize"]
    assert rc["n_new"] == 40 and rc["domain_after"]["high"][0] > 0.3
    assert (tmp_path / "run" / "checkpoints" / "stage-2" / "twin.safetensors").is_file()
    # the evaluation counts drives against the new, wider twin domain
    assert m["domain"]["boxes"][0]["high"][0] > 0.3
    assert m["twin"]["failed_fraction"] == 0.0 and m["twin"]["noise_floor"] == []
    assert m["training"]["history"]  # the last training stage's epochs


def test_a_recharacterize_stage_takes_points_not_epochs() -> None:
    with pytest.raises(ConfigError, match="takes no epochs or samples"):
        parse_config(_cfg(stages=[{"method": "recharacterize", "epochs": 1}]))
    with pytest.raises(ConfigError, match="unknown option"):
        parse_config(_cfg(stages=[{"method": "recharacterize", "options": {"pts": 3}}]))
    with pytest.raises(ConfigError, match="nonfinite"):
        parse_config(_cfg(nonfinite="skip"))
    with pytest.raises(ConfigError, match="domain_penalty"):
        parse_config(_cfg(domain_penalty=-1.0))


def test_reproduce_quick_keeps_a_recharacterize_stage_without_epochs(tmp_path: Path) -> None:
    from quasineuron.protocol import reproduce_config

    stages = [
        {"method": "surrogate", "epochs": 5},
        {"method": "recharacterize", "options": {"points": 64}},
        {"method": "surrogate", "epochs": 5},
    ]
    cfg = _cfg(stages=stages)
    (tmp_path / "run.json").write_text(json.dumps({"config": cfg}), encoding="utf-8")
    quick = reproduce_config(tmp_path, quick=True)
    assert [s.epochs for s in quick.training.stages] == [1, None, 1]
    assert quick.training.stages[1].options == {"points": 64}


@pytest.mark.slow  # a whole run with three stages, then two scores: about 10 s on a busy CPU
def test_score_after_a_recharacterize_stage_uses_the_refitted_twin(tmp_path: Path) -> None:
    from quasineuron.protocol import score_run

    # the original twin knows [-0.3, 0.3] only, so the refitted (wider) twin and the original
    # one give different twin-mode accuracies: a score with the wrong twin cannot match
    stages = [
        {"method": "surrogate", "epochs": 1},
        {"method": "recharacterize", "options": {"points": 40, "max_steps": 100}},
        {"method": "surrogate", "epochs": 1},
    ]
    cfg = _cfg(stages=stages, domain_penalty=1.0, nonfinite="mask")
    cfg["evaluation"]["modes"] = ["surrogate"]
    m = _run(cfg, tmp_path / "run")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OutOfDomainWarning)
        # the run read the test set once already: every later score is a counted re-read
        first = score_run(tmp_path / "run", again=True)
        again = score_run(tmp_path / "run", again=True)
    assert first["accuracy"]["surrogate"] == pytest.approx(m["accuracy"]["surrogate"], abs=1e-12)
    assert again["accuracy"]["surrogate"] == first["accuracy"]["surrogate"]
    assert again["test_reads"] == 3  # the run's own read, then two scores
