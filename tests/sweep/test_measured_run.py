"""A run built from measured data: `[device] measurements` in a config, end to end."""

from __future__ import annotations

import csv
import hashlib
import json
import warnings
from pathlib import Path

import pytest
import torch

from quasineuron.cli import main
from quasineuron.config import ConfigError, load_config, parse_config
from quasineuron.devices import Noisy, ideal_neuron
from quasineuron.errors import NoTrueDeviceError, OutOfDomainWarning
from quasineuron.pipeline import run_pipeline
from quasineuron.sweep import MeasuredOnly, load_measurements

STD = 0.02


def _write_measurements(path: Path, *, n: int = 41, repeats: int = 3) -> Path:
    """A lab's CSV: a noisy tanh on [-3, 3] measured ``repeats`` times at ``n`` drives."""
    device = Noisy(ideal_neuron("tanh", limit=3.0), std=STD, seed=0)
    u = torch.linspace(-3.0, 3.0, n, dtype=torch.float64).unsqueeze(1)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["V_in", "V_out"])
        for _ in range(repeats):
            y = device(u)
            w.writerows([[float(a), float(b)] for a, b in zip(u[:, 0], y[:, 0], strict=True)])
    return path


def _cfg(path: str, **device: object) -> dict:
    return {
        "name": "measured",
        "device": {
            "measurements": {
                "path": path,
                "drives": ["V_in"],
                "outputs": ["V_out"],
                "units": {"V_in": "V", "V_out": "V"},
            },
            **device,
        },
        "twin": {"kind": "spline", "policy": "clamp"},
        "data": {"name": "digits", "limit_train": 300, "limit_test": 100},
        "network": {"hidden": [16]},
        "training": {"epochs": 3, "batch_size": 20},
        "evaluation": {"baseline_mlp": False},
    }


def _run(cfg: dict, out: Path) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OutOfDomainWarning)
        return run_pipeline(parse_config(cfg), out, progress=False)


def test_a_run_trains_and_scores_through_a_twin_of_measured_data(tmp_path: Path) -> None:
    csv_path = _write_measurements(tmp_path / "lab.csv")
    out = tmp_path / "run"
    m = _run(_cfg(str(csv_path)), out)
    # no true device: the run says so rather than scoring a device it does not have
    assert m["accuracy"]["device"] is None
    assert m["accuracy"]["surrogate"] > 0.2  # 10 classes, one tiny epoch: above chance
    assert m["gap"] is None
    assert m["device"]["kind"] == "measured data only"
    assert m["sweep"] == {"n_points": 3 * 41, "n_failed": 0}
    # the file is copied and digested into the run folder: the folder alone holds the data
    digest = hashlib.sha256(csv_path.read_bytes()).hexdigest()
    assert m["measurements"]["sha256"] == digest
    copy = out / m["measurements"]["file"]
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == digest
    # the fidelity comes from held-out measurements, with the noise floor of the repeats
    report = json.loads((out / "report.json").read_text())
    assert report["twin"]["validation"] != "device-sobol"
    assert report["twin"]["noise_floor"][0] == pytest.approx(STD, rel=0.3)
    assert m["twin"]["noise_floor"][0] == pytest.approx(STD, rel=0.3)
    summary = (out / "summary.md").read_text()
    assert "measured data only" in summary and "accuracy.device is null" in summary


def test_a_measured_table_is_the_same_table_the_run_fits(tmp_path: Path) -> None:
    csv_path = _write_measurements(tmp_path / "lab.csv", n=11, repeats=2)
    table = load_measurements(csv_path, drives=["V_in"], outputs=["V_out"])
    stand_in = MeasuredOnly(table)
    assert (stand_in.n_in, stand_in.n_out) == (1, 1)
    assert stand_in.domain == table.domain
    with pytest.raises(NoTrueDeviceError, match="known only from measurements"):
        stand_in(torch.zeros(2, 1))


def test_a_device_with_both_a_name_and_measurements_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="both measurements and name"):
        parse_config(_cfg("lab.csv", name="tanh"))
    with pytest.raises(ConfigError, match="both measurements and options"):
        parse_config(_cfg("lab.csv", options={"eps": 0.1}))
    # the resolved config (run.json) spells out the default name: that parses again
    resolved = parse_config(_cfg("lab.csv")).model_dump(mode="json")
    assert parse_config(resolved).device.measurements is not None


def test_training_or_scoring_that_needs_the_true_device_is_refused() -> None:
    cfg = _cfg("lab.csv")
    cfg["training"]["mode"] = "physics-aware"
    with pytest.raises(ConfigError, match="needs the true device"):
        parse_config(cfg)
    cfg = _cfg("lab.csv")
    cfg["training"]["stages"] = [
        {"method": "surrogate", "epochs": 1},
        {"method": "direct", "epochs": 1},
    ]
    with pytest.raises(ConfigError, match="needs the true device"):
        parse_config(cfg)


def test_the_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "run.toml").write_text(
        '[device]\nmeasurements = { path = "data/lab.csv", drives = ["V_in"], '
        'outputs = ["V_out"] }\n'
    )
    config = load_config(folder / "run.toml")
    assert config.device.measurements is not None
    assert Path(config.device.measurements.path) == (folder / "data" / "lab.csv").resolve()


def test_a_bad_column_stops_the_run_before_any_work(tmp_path: Path) -> None:
    csv_path = _write_measurements(tmp_path / "lab.csv", n=5, repeats=1)
    cfg = _cfg(str(csv_path))
    cfg["device"]["measurements"]["outputs"] = ["V_outt"]
    with pytest.raises(ValueError, match="V_outt"):
        _run(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "run.json").exists()


def test_the_run_command_takes_a_measured_config(tmp_path: Path, capsys) -> None:
    _write_measurements(tmp_path / "lab.csv", n=21, repeats=2)
    cfg = tmp_path / "measured.toml"
    cfg.write_text(
        """name = "measured"
[device]
measurements = { path = "lab.csv", drives = ["V_in"], outputs = ["V_out"] }
[twin]
kind = "spline"
policy = "clamp"
[data]
name = "digits"
limit_train = 100
limit_test = 50
[network]
hidden = [4]
[training]
epochs = 1
batch_size = 50
[evaluation]
baseline_mlp = false
"""
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OutOfDomainWarning)
        rc = main(["run", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["accuracy"]["device"] is None
    # scored again from the run folder (its copy of the measurements): the same number
    capsys.readouterr()
    assert main(["score", str(tmp_path / "run"), "--again"]) == 0
    assert f"surrogate={100 * metrics['accuracy']['surrogate']:.2f}%" in capsys.readouterr().out


def test_characterize_takes_measurements_instead_of_a_device(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv_path = _write_measurements(tmp_path / "lab.csv", n=21, repeats=2)
    out = tmp_path / "char"
    args = ["characterize", "--measurements", str(csv_path), "--drives", "V_in"]
    rc = main([*args, "--outputs", "V_out", "--twin", "spline", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["sweep"]["n_points"] == 42 and report["twin"]["noise_floor"][0] > 0
    assert (out / "measurements" / "lab.csv").read_bytes() == csv_path.read_bytes()
    assert "noise floor" in capsys.readouterr().out
    # a device and measurements, or a sweep option with measurements, are refused
    rc = main(["characterize", "tanh", *args[1:], "--outputs", "V_out", "--out", str(out)])
    assert rc == 2 and "not both" in capsys.readouterr().err
    rc = main([*args, "--outputs", "V_out", "--points", "9", "--out", str(tmp_path / "x")])
    assert rc == 2 and "--points sweeps a device" in capsys.readouterr().err
    assert main(["characterize", "--out", str(tmp_path / "y")]) == 2
    assert "give a DEVICE" in capsys.readouterr().err


def test_a_run_folder_alone_reproduces_a_measured_run(tmp_path: Path) -> None:
    from quasineuron.protocol import reproduce_config

    csv_path = _write_measurements(tmp_path / "lab.csv", n=21, repeats=2)
    cfg = _cfg(str(csv_path))
    cfg["training"]["epochs"] = 1
    cfg["data"]["limit_train"] = 100
    out = tmp_path / "run"
    first = _run(cfg, out)
    csv_path.unlink()  # the lab's file is gone: the run folder keeps its copy
    again = reproduce_config(out)
    assert Path(again.device.measurements.path) == (out / "measurements" / "lab.csv").resolve()
    second = _run(again.model_dump(mode="json"), tmp_path / "again")
    assert second["measurements"]["sha256"] == first["measurements"]["sha256"]
    assert second["accuracy"] == first["accuracy"]


def test_the_config_hash_counts_the_measurements_by_content_not_by_path(tmp_path: Path) -> None:
    from quasineuron.config import config_hash

    (tmp_path / "a").mkdir()
    here = _write_measurements(tmp_path / "a" / "lab.csv", n=11, repeats=1)
    there = tmp_path / "elsewhere" / "moved.csv"
    there.parent.mkdir()
    there.write_bytes(here.read_bytes())
    # the same file in another folder (another machine, a moved run) hashes the same ...
    assert config_hash(parse_config(_cfg(str(here)))) == config_hash(parse_config(_cfg(str(there))))
    # ... and an edited file does not
    there.write_bytes(here.read_bytes() + b"0.0,0.0\n")
    assert config_hash(parse_config(_cfg(str(here)))) != config_hash(parse_config(_cfg(str(there))))
