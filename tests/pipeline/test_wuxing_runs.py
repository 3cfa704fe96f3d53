"""Wuxing runs through the one loop: resume after a kill, the MODEL1 examples, ``--quick``."""

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

from quasineuron.cli import main
from quasineuron.config import load_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
MNIST = ROOT.parent / "shared" / "data" / "mnist"
METHODS = ("method1", "method2", "method2-operating", "mixed", "bptt", "twin-bptt", "chain")

# Two stages; the second (method 2 with adaptive steps, whose moments are part of the state a
# resume must restore) runs many short epochs, so a kill lands between two of its checkpoints.
RESUMABLE = """
name = "wuxing-resume"
[data]
name = "digits"
limit_train = 300
[network]
kind = "wuxing"
sizes = [64, 12, 10]
wiring = "one-to-one"
[network.window]
T = 1.0
dt = 0.25
[training]
batch_size = 30
validate_on = "steady-state"
[[training.stages]]
method = "bptt"
epochs = 1
[[training.stages]]
method = "method2"
epochs = 12
average_last = 2
options = { eta = 0.01, update = "adaptive" }
[evaluation]
modes = ["device"]
"""


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _run_cli(*args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "quasineuron.cli", *args, "--no-progress"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_a_wuxing_run_killed_mid_stage_resumes_from_its_last_epoch_bit_identical(
    tmp_path: Path,
) -> None:
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(RESUMABLE)
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    proc = _run_cli("run", str(cfg), "--out", str(killed))
    stage = killed / "checkpoints" / "stage-2"
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if (stage / "checkpoint.safetensors").exists():
            history = stage / "history.json"
            # past the second epoch's checkpoint, so the resume cannot be a fresh start
            if history.exists() and len(json.loads(history.read_text() or "[]") or []) >= 2:
                break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (stage / "outcome.json").exists(), "killed after the stage, not inside it"

    assert main(["run", str(cfg), "--out", str(killed), "--resume", "--no-progress"]) == 0
    assert main(["run", str(cfg), "--out", str(ref), "--no-progress"]) == 0
    from safetensors.torch import load_file

    a = load_file(str(ref / "network" / "weights.safetensors"))
    b = load_file(str(killed / "network" / "weights.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0)
    ma, mb = _json(ref / "metrics.json"), _json(killed / "metrics.json")
    assert mb["accuracy"] == ma["accuracy"]
    done, resumed = mb["training"]["stages"]
    assert done == ma["training"]["stages"][0]  # loaded as it ended
    # continued from its last epoch checkpoint, not from the start of the stage
    assert resumed["resumed_from_epoch"] >= 2
    assert ma["training"]["stages"][1]["resumed_from_epoch"] == 0
    assert resumed["averaged_epochs"] == [11, 12]
    assert resumed["val_accuracy"] == ma["training"]["stages"][1]["val_accuracy"]


def _stage_methods(name: str) -> list[object]:
    from quasineuron.pipeline import _wuxing_method

    config = load_config(EXAMPLES / f"wuxing-model1-{name}.toml")
    return [_wuxing_method(config, st, i) for i, st in enumerate(config.stages())]


def test_the_model1_examples_select_the_rule_they_are_named_after() -> None:
    from quasineuron.wuxing import Backprop, Method1, Method2, Mixed

    (m1,) = _stage_methods("method1")
    assert isinstance(m1, Method1) and m1.estimate == "window"
    (paper,) = _stage_methods("method2")
    # the paper's rule: time integrals over the window, reversed network linearised at rest
    assert isinstance(paper, Method2)
    assert (paper.estimate, paper.reversal, paper.update) == ("window", "rest", "additive")
    (operating,) = _stage_methods("method2-operating")
    assert isinstance(operating, Method2)
    assert (operating.estimate, operating.reversal) == ("steady-state", "operating")
    (mixed,) = _stage_methods("mixed")
    assert isinstance(mixed, Mixed) and mixed.method2.eta == 20.0 and mixed.method1.eta == 2.0
    (bptt,) = _stage_methods("bptt")[:1]
    assert isinstance(bptt, Backprop) and bptt.through == "window"
    pre, fine = _stage_methods("twin-bptt")
    assert isinstance(pre, Backprop) and pre.through == "steady-state"
    assert isinstance(fine, Backprop) and fine.through == "window"
    twin_stage = load_config(EXAMPLES / "wuxing-model1-twin-bptt.toml").stages()[0]
    assert "neuron_twin" in twin_stage.options  # pre-training through a fitted neuron twin
    chain = _stage_methods("chain")  # the recorded best chain: 2 twin, 4 BPTT, 4 BPTT + K stages
    assert [m.through for m in chain] == ["steady-state"] * 2 + ["window"] * 8
    assert [m.k_lr > 0 for m in chain] == [False] * 6 + [True] * 4


def test_quick_shrinks_the_data_budgets_window_and_twin_and_keeps_the_model() -> None:
    from quasineuron.protocol import QUICK_WINDOW_STEPS, quick_config, reproduce_config

    path = EXAMPLES / "wuxing-model1-twin-bptt.toml"
    full = load_config(path)
    quick = quick_config(full)
    assert quick == reproduce_config(path, quick=True)  # one implementation for both flags
    assert quick.data.limit_train == 200 and quick.data.limit_test == 100
    assert [s.epochs for s in quick.stages()] == [1, 1]
    assert quick.stages()[0].options["neuron_twin"]["n_samples"] <= 2000
    w, wq = full.network.resolved_window, quick.network.resolved_window
    assert wq.dt == w.dt and wq.T == pytest.approx(QUICK_WINDOW_STEPS * w.dt)
    assert (quick.network.model, quick.network.wiring) == (full.network.model, "one-to-one")


def test_run_quick_runs_the_shrunk_config(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.toml"
    one = RESUMABLE.split("[[training.stages]]")[0] + '[evaluation]\nmodes = ["device"]\n'
    cfg.write_text(one.replace("T = 1.0\ndt = 0.25", "T = 20.0\ndt = 0.25"))
    out = tmp_path / "q"
    assert main(["run", str(cfg), "--quick", "--out", str(out), "--no-progress"]) == 0
    rec = _json(out / "run.json")["config"]
    assert rec["data"]["limit_train"] == 200 and rec["data"]["limit_test"] == 100
    assert rec["network"]["window"]["T"] == 2.5  # 10 steps of 0.25
    (stage,) = _json(out / "metrics.json")["training"]["stages"]
    assert stage["epochs_run"] == 1


@pytest.mark.slow
@pytest.mark.skipif(not MNIST.is_dir(), reason=f"MNIST not found in {MNIST}")
@pytest.mark.parametrize("name", METHODS)
def test_each_model1_example_runs_quick_and_scores_once(name: str, tmp_path: Path) -> None:
    out = tmp_path / name
    config = EXAMPLES / f"wuxing-model1-{name}.toml"
    text = config.read_text(encoding="utf-8")
    if "[experiment]" in text:  # a seed family: its first seed is the smoke run
        config = tmp_path / config.name
        config.write_text(text.replace("[experiment]\nseeds = [0, 1, 2]\n", ""))
        assert "[experiment]" not in config.read_text(encoding="utf-8")
    args = ["run", str(config), "--quick", "--out", str(out)]
    assert main([*args, "--data-dir", str(MNIST), "--no-progress"]) == 0
    metrics = _json(out / "metrics.json")
    assert metrics["test_reads"] == 1
    assert set(metrics["accuracy"]) == {"device", "surrogate"}
    stages = metrics["training"]["stages"]
    assert len(stages) == {"twin-bptt": 2, "chain": 10}.get(name, 1)
    # --quick: one epoch per stage, or at most 256 samples for a stage with a sample budget
    assert all(
        s["samples_seen"] <= 256 if "samples" in s["budget"] else s["epochs_run"] == 1
        for s in stages
    )
    for i in range(len(stages)):
        assert (out / "checkpoints" / f"stage-{i + 1}" / "checkpoint.safetensors").is_file()
    from quasineuron.network import load_network

    net = load_network(out / "network")
    assert net.wiring.sizes == (784, 839, 283, 96, 32, 10)
