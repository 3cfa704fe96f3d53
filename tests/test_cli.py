"""The ``quasineuron`` command, end to end on small inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quasineuron.cli import main


@pytest.mark.slow
def test_characterize_writes_report_with_required_fields(tmp_path: Path) -> None:
    out = tmp_path / "an"
    rc = main(
        [
            "characterize",
            "almost-neuron",
            "--out",
            str(out),
            "--points",
            "441",
            "-o",
            "eps=0.1",
            "--no-progress",
        ]
    )
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert report["sweep"]["n_points"] == 441 and report["sweep"]["n_failed"] == 0
    for key in ("rmse", "nrmse", "max_abs", "r2"):
        assert isinstance(report["twin"][key], float)
    assert report["twin"]["nrmse"] < 1e-3
    assert report["device"]["params"]["eps"] == 0.1
    for name in ("response.png", "error.png", "twin.safetensors"):
        assert (out / name).stat().st_size > 0
    # a second call resumes the finished store and evaluates nothing new
    assert (
        main(
            [
                "characterize",
                "almost-neuron",
                "--out",
                str(out),
                "--points",
                "441",
                "-o",
                "eps=0.1",
                "--no-progress",
            ]
        )
        == 0
    )


@pytest.mark.slow
def test_characterize_refuses_a_store_made_for_another_device(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x"
    assert main(["characterize", "tanh", "--out", str(out), "--points", "21", "--no-progress"]) == 0
    rc = main(["characterize", "sigmoid", "--out", str(out), "--points", "21", "--no-progress"])
    assert rc == 2
    assert "overwrite" in capsys.readouterr().err


def test_bad_input_gets_a_message_and_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["characterize", "no-such-device", "--out", str(tmp_path)]) == 2
    assert "unknown device 'no-such-device'" in capsys.readouterr().err
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[training]\nepochz = 3\n[network]\nhidden = [8]\n")
    assert main(["run", str(cfg), "--out", str(tmp_path / "run")]) == 2
    assert "unknown key 'training.epochz'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["characterize", "tanh", "--out", str(tmp_path), "-o", "novalue"])


def test_run_small_config_writes_metrics_and_plots(tmp_path: Path) -> None:
    cfg = tmp_path / "small.toml"
    cfg.write_text(
        """
name = "small"
[device]
name = "tanh"
[twin]
kind = "spline"
policy = "clamp"
[data]
name = "digits"
[network]
hidden = [16]
[training]
epochs = 2
batch_size = 64
lr = 0.003
[evaluation]
modes = ["surrogate", "device"]
"""
    )
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert 0.5 < m["accuracy"]["device"] <= 1.0
    assert m["accuracy"]["surrogate"] == pytest.approx(m["accuracy"]["device"], abs=0.01)
    assert m["gap"] == pytest.approx(m["accuracy"]["surrogate"] - m["accuracy"]["device"])
    assert m["twin"]["nrmse"] < 1e-3 and "baseline_mlp" in m["accuracy"]
    assert m["config"]["training"]["epochs"] == 2 and "total_s" in m["timings"]
    for name in (
        "training.png",
        "accuracy.png",
        "confusion.png",
        "response.png",
        "error.png",
        "summary.md",
        "network/network.json",
    ):
        assert (out / name).stat().st_size > 0
