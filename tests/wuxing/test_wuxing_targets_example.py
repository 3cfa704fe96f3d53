"""The Wuxing MNIST targets (examples/wuxing_targets.py), read from scored runs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

NET = {"model": "MODEL1", "wiring": "one-to-one", "fan_in": 0, "seed": 0}


def _scored(results: Path, name: str, device: float, network: dict = NET) -> None:
    (results / name).mkdir(parents=True)
    doc = {"name": name, "network": network, "wiring": {"n_links": 4711},
           "train_seconds": 10.0, "train_samples_seen": 100, "val_accuracy_time": [0.5, 0.6],
           "train_config": {"T": 40.0, "dt": 0.2, "readout": "final"}, "args": {"n_val": 1000},
           "init": {"name": "first", "train_seconds": 5.0, "train_samples_seen": 50}}  # fmt: skip
    (results / name / "model.json").write_text(json.dumps(doc))
    (results / name / "metrics.json").write_text(json.dumps({"accuracy": {"device": device}}))


def test_targets_are_read_from_the_scored_runs(
    example: Callable[[str], ModuleType], tmp_path: Path
) -> None:
    targets = example("wuxing_targets")
    _scored(tmp_path, targets.BEST_MODEL1, 0.905)
    _scored(tmp_path, "wuxing-model1-method2", 0.80)
    _scored(tmp_path, "wuxing-model1-bptt", 0.84)
    _scored(tmp_path, "wuxing-model1-adders", 0.9699)
    targets.main([str(tmp_path)])
    doc = json.loads((tmp_path / "wuxing-targets" / "metrics.json").read_text())
    assert [t["met"] for t in doc["targets"]] == [True, False, False] and not doc["all_met"]
    assert doc["targets"][1]["difference"] == pytest.approx(0.04)
    run = doc["targets"][0]["runs"][0]
    assert run["train_seconds"] == 15.0 and run["train_samples_seen"] == 150  # every stage
    assert run["validation"] == {"accuracy": 0.6, "mode": "time", "T": 40.0, "dt": 0.2,
                                 "readout": "final", "n_val": 1000, "by": "training"}  # fmt: skip
    (tmp_path / "wuxing-model1-bptt" / "validation.json").write_text(json.dumps([
        {"accuracy": 0.7, "mode": "time", "T": 40.0, "dt": 0.1, "readout": "final", "n_val": 6000,
         "seconds": 1.0}
    ]))  # fmt: skip
    val = targets.targets(tmp_path)[1]["runs"][1]["validation"]
    assert val["n_val"] == 6000 and val["accuracy"] == 0.7 and val["by"] == "validate"


def test_targets_refuse_an_unscored_run_or_two_different_networks(
    example: Callable[[str], ModuleType], tmp_path: Path
) -> None:
    targets = example("wuxing_targets")
    _scored(tmp_path, targets.BEST_MODEL1, 0.905)
    _scored(tmp_path, "wuxing-model1-method2", 0.88, network={**NET, "seed": 1})
    _scored(tmp_path, "wuxing-model1-adders", 0.975)
    with pytest.raises(SystemExit, match="not scored"):
        targets.targets(tmp_path)
    _scored(tmp_path, "wuxing-model1-bptt", 0.89)
    with pytest.raises(SystemExit, match="not the same network"):
        targets.targets(tmp_path)
