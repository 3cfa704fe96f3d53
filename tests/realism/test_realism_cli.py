"""`quasineuron realism`: the suite from the command line, its options checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quasineuron.cli import main


def test_a_quick_run_of_one_scenario_writes_metrics(tmp_path: Path) -> None:
    out = tmp_path / "realism"
    rc = main(
        ["realism", "--quick", "--scenario", "exact-twin", "--hidden", "4", "--out", str(out)]
    )
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["seeds"] == [0] and m["n_train"] == 300 and m["settings"]["epochs"] == 1
    assert [sc["name"] for sc in m["scenarios"]] == ["exact-twin"]


def test_a_skipped_route_is_left_out_of_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "realism"
    args = ["--quick", "--scenario", "exact-twin", "--hidden", "4", "--max-train", "100"]
    args += ["--skip-route", "derivative-free", "--skip-route", "direct"]
    assert main(["realism", *args, "--out", str(out)]) == 0
    (scenario,) = json.loads((out / "metrics.json").read_text())["scenarios"]
    assert [r["name"] for r in scenario["routes"]] == ["twin", "physics-aware"]


def test_a_one_epoch_run_of_a_recharacterizing_route_trains_one_epoch_per_stage(
    tmp_path: Path,
) -> None:
    # the route trains, recharacterizes, and trains again: at one epoch, neither stage is empty
    out = tmp_path / "realism"
    args = ["--quick", "--scenario", "steep-threshold", "--hidden", "4", "--max-train", "100"]
    assert main(["realism", *args, "--out", str(out)]) == 0
    (scenario,) = json.loads((out / "metrics.json").read_text())["scenarios"]
    assert "physics-aware+recharacterize" in json.dumps(scenario)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "mnist"], "needs --data-dir"),
        (["--data-dir", "x"], "--data-dir is for --data mnist"),
        (["--seeds", "0", "0"], "repeats a seed"),
        (["--scenario", "nosuch"], "not a scenario"),
        (["--skip-route", "nosuch"], "is not a route"),
        (
            [
                "--scenario",
                "exact-twin",
                "--skip-route",
                "twin",
                "--skip-route",
                "physics-aware",
                "--skip-route",
                "direct",
                "--skip-route",
                "derivative-free",
            ],
            "no route to run",
        ),
    ],
)
def test_bad_options_are_refused_with_a_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    rc = main(["realism", *args, "--out", str(tmp_path / "r")])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r" / "metrics.json").exists()
