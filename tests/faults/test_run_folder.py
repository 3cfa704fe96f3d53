"""Run folders are records: never clobbered, resumable bit for bit, honest about their state."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from quasineuron.cli import main

TINY = """
name = "tiny"
[device]
name = "tanh"
[sweep]
points = 21
[twin]
kind = "spline"
policy = "clamp"
[data]
name = "digits"
limit_train = 200
[network]
hidden = [4]
[training]
epochs = {epochs}
batch_size = 20
lr = 0.003
[evaluation]
modes = ["surrogate", "device"]
baseline_mlp = false
"""


def _config(tmp_path: Path, *, epochs: int = 2, name: str = "tiny.toml") -> Path:
    path = tmp_path / name
    path.write_text(TINY.format(epochs=epochs))
    return path


def _status(out: Path) -> dict:
    return json.loads((out / "status.json").read_text())


def test_a_complete_run_records_its_config_and_state(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["run", str(_config(tmp_path)), "--out", str(out), "--no-progress"]) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["config"]["network"]["hidden"] == [4] and len(record["config_hash"]) == 64
    assert _status(out)["status"] == "complete" and (out / "metrics.json").is_file()
    # summary.md goes through the atomic writer, which keeps the umask's permissions
    umask = os.umask(0)
    os.umask(umask)
    assert (out / "summary.md").stat().st_mode & 0o777 == 0o666 & ~umask


def test_run_refuses_another_runs_folder_and_overwrite_starts_afresh(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "report.json").write_text('{"mine": true}')  # a user's file, not a run
    cfg = _config(tmp_path)
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "report.json").read_text() == '{"mine": true}'
    assert not (out / "status.json").exists()
    assert main(["run", str(cfg), "--out", str(out), "--no-progress", "--resume"]) == 2
    assert main(["run", str(cfg), "--out", str(out), "--no-progress", "--overwrite"]) == 0
    assert _status(out)["status"] == "complete"


def test_a_failed_run_says_so_and_has_no_metrics(tmp_path: Path) -> None:
    cfg = tmp_path / "nan.toml"
    text = TINY.format(epochs=1).replace("lr = 0.003", 'lr = 1e30\noptimizer = "sgd"\nloss = "mse"')
    cfg.write_text(text)
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 2
    status = _status(out)
    assert status["status"] == "failed" and "training loss became" in status["error"]
    assert "\n" not in status["error"] and not (out / "metrics.json").exists()


def _run_cli(*args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "quasineuron.cli", *args, "--no-progress"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "network" / "weights.safetensors"))


@pytest.mark.slow
def test_a_run_killed_mid_training_resumes_bit_identical(tmp_path: Path) -> None:
    cfg = _config(tmp_path, epochs=6)
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    proc = _run_cli("run", str(cfg), "--out", str(killed))
    ckpt = killed / "checkpoints" / "stage-1" / "checkpoint.safetensors"
    deadline = time.monotonic() + 120
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    status = _status(killed)
    assert status["status"] == "running" and status["stage"] == "train"
    assert not (killed / "metrics.json").exists()  # a killed folder never looks complete

    assert main(["run", str(cfg), "--out", str(killed), "--resume", "--no-progress"]) == 0
    assert main(["run", str(cfg), "--out", str(ref), "--no-progress"]) == 0
    a, b = _tensors(ref), _tensors(killed)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0)
    ma = json.loads((ref / "metrics.json").read_text())
    mb = json.loads((killed / "metrics.json").read_text())
    assert mb["accuracy"] == ma["accuracy"]
    drop = ("seconds",)
    hist = [{k: v for k, v in e.items() if k not in drop} for e in ma["training"]["history"]]
    assert [
        {k: v for k, v in e.items() if k not in drop} for e in mb["training"]["history"]
    ] == hist
    assert _status(killed)["status"] == "complete"
    # it did continue (a restart from scratch would end identical too)
    assert mb["training"]["resumed_from_epoch"] >= 1 and ma["training"]["resumed_from_epoch"] == 0
