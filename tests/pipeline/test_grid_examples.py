"""The committed grid results: their configs parse, match what ran, and shrink for --quick."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quasineuron.config import config_hash, load_config, parse_config
from quasineuron.protocol import reproduce_config

ROOT = Path(__file__).parents[2]
RESULTS = ("almost-neuron-eps-sweep", "raw-f-mnist")


@pytest.mark.parametrize("name", RESULTS)
def test_a_committed_grid_result_holds_the_config_that_ran(name: str) -> None:
    folder = ROOT / "docs" / "results" / name
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    config = load_config(folder / "config.toml")
    assert config_hash(config) == config_hash(parse_config(metrics["config"]))
    assert config_hash(config) == config_hash(load_config(ROOT / "examples" / f"{name}.toml"))
    key = metrics["vary"].split(".")[-1]
    assert metrics[key] == list(config.experiment.vary[metrics["vary"]])
    for mode in ("device_mean", "device_std"):
        assert len(metrics["accuracy"][mode]) == len(metrics[key])
    quick = reproduce_config(folder, quick=True)
    assert quick.data.limit_train == 200 and len(quick.experiment.vary[metrics["vary"]]) <= 2


def test_the_eps_sweep_goes_through_the_collapse_with_three_seeds() -> None:
    metrics = json.loads(
        (ROOT / "docs/results/almost-neuron-eps-sweep/metrics.json").read_text(encoding="utf-8")
    )
    assert {0, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2} <= set(metrics["eps"])
    assert all(len(p["seeds"]) >= 3 for p in metrics["per_value"])
