"""Runs under the protocol: one counted test read, stages that resume, seed families, Wuxing."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from quasineuron.cli import main

DEVICE = """
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
epochs = 2
batch_size = 20
lr = 0.003
{extra}
[evaluation]
modes = ["surrogate", "device"]
baseline_mlp = false
"""

WUXING = """
name = "wuxing-tiny"
[data]
name = "digits"
limit_train = 60
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
epochs = 2
keep = "best"
[[training.stages]]
method = "method2-operating"
samples = 40
keep = "last"
options = { eta = 0.01, update = "adaptive" }
[[training.stages]]
method = "bptt"
epochs = 2
average_last = 2
[evaluation]
modes = ["device", "surrogate"]
"""


def _write(tmp_path: Path, text: str, name: str = "cfg.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_test_reads_are_recorded_and_a_second_one_needs_again(tmp_path: Path) -> None:
    from quasineuron.errors import RunFolderError
    from quasineuron.protocol import TestReadRefused, record_test_read, test_reads

    assert test_reads(tmp_path) == 0
    record_test_read(tmp_path, {"device": 0.5}, what="network/")
    with pytest.raises(TestReadRefused, match="--again"):
        record_test_read(tmp_path, {"device": 0.6}, what="network/")
    assert test_reads(tmp_path) == 1
    doc = record_test_read(tmp_path, {"device": 0.6}, what="network/", again=True)
    assert doc["test_reads"] == 2
    assert [r["accuracy"]["device"] for r in doc["readings"]] == [0.5, 0.6]
    (tmp_path / "scores.json").write_text("{not json")
    with pytest.raises(RunFolderError, match="restore it"):
        test_reads(tmp_path)


@pytest.mark.slow
def test_run_reads_the_test_set_once_and_score_refuses_a_second_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _write(tmp_path, DEVICE.format(extra=""))
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    metrics = _json(out / "metrics.json")
    assert metrics["test_reads"] == 1
    assert _json(out / "scores.json")["test_reads"] == 1
    capsys.readouterr()

    assert main(["score", str(out)]) == 2
    assert "--again" in capsys.readouterr().err
    assert _json(out / "scores.json")["test_reads"] == 1  # a refused read is not a read

    assert main(["score", str(out), "--again"]) == 0
    scores = _json(out / "scores.json")
    assert scores["test_reads"] == 2 and [r["read"] for r in scores["readings"]] == [1, 2]
    # the saved network is what the run scored
    assert scores["readings"][1]["accuracy"] == scores["readings"][0]["accuracy"]
    assert scores["readings"][1]["accuracy"]["device"] == metrics["accuracy"]["device"]

    # starting afresh in the same folder does not wipe the record: the count carries on
    assert main(["run", str(cfg), "--out", str(out), "--overwrite", "--no-progress"]) == 0
    assert _json(out / "metrics.json")["test_reads"] == 3


@pytest.mark.slow
def test_score_reads_the_test_set_under_the_run_s_device_variability(tmp_path: Path) -> None:
    # device-to-device spread is part of what a score is: `score --again` scores the saved
    # network under the same (seeded) spread as the run did, not on ideal copies of the device
    spread = "\n[evaluation.variability]\ngain_std = 0.6\noffset_std = 0.3\nseed = 4\n"
    text = DEVICE.format(extra="").replace("hidden = [4]", "hidden = [16]")
    text = text.replace("epochs = 2", "epochs = 10").replace("lr = 0.003", "lr = 0.03")
    cfg = _write(tmp_path, text + spread)
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    ran = _json(out / "metrics.json")["accuracy"]
    # the spread changes the score on the drawn instances, so this can fail
    assert ran["device_instances"] < ran["device"] - 0.01
    assert main(["score", str(out), "--again"]) == 0
    scored = _json(out / "scores.json")["readings"][-1]["accuracy"]
    assert scored == ran


def test_score_refuses_a_run_that_is_not_complete(tmp_path: Path) -> None:
    from quasineuron.errors import RunFolderError
    from quasineuron.protocol import score_run

    (tmp_path / "status.json").write_text('{"status": "running"}')
    (tmp_path / "run.json").write_text("{}")
    with pytest.raises(RunFolderError, match="not complete"):
        score_run(tmp_path)


def _run_cli(*args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "quasineuron.cli", *args, "--no-progress"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


STAGES = """
[[training.stages]]
method = "surrogate"
epochs = 2
keep = "best"
[[training.stages]]
method = "physics-aware"
epochs = 40
keep = "last"
average_last = 3
"""


@pytest.mark.slow
def test_a_run_killed_after_its_first_stage_resumes_bit_identical(tmp_path: Path) -> None:
    cfg = _write(tmp_path, DEVICE.format(extra=STAGES))
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    proc = _run_cli("run", str(cfg), "--out", str(killed))
    # killed inside the second stage, after its first epoch's checkpoint
    mark = killed / "checkpoints" / "stage-2" / "checkpoint.safetensors"
    deadline = time.monotonic() + 120
    while not mark.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed / "metrics.json").exists()
    assert _json(killed / "run.json")["stages"][0]["stage"] == 1  # recorded as it ended

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
    stages = mb["training"]["stages"]
    assert [s["method"] for s in stages] == ["surrogate", "physics-aware"]
    # the first stage was loaded as it ended, the second continued from its checkpoint
    assert stages[0] == ma["training"]["stages"][0]
    assert stages[1]["resumed_from_epoch"] >= 1
    assert ma["training"]["stages"][1]["resumed_from_epoch"] == 0
    assert stages[1]["keep"] == "average" and stages[1]["averaged_epochs"] == [38, 39, 40]
    record = _json(killed / "run.json")
    assert record["stages"] == stages
    assert set(record["versions"]) >= {"torch", "python", "quasineuron", "numpy"}
    assert record["seeds"]["training"] == 0
    text = json.dumps(record)
    assert str(tmp_path) not in text  # only paths relative to the run folder


def test_stages_train_in_order_and_averaging_is_the_mean_of_the_last_epochs(
    tmp_path: Path,
) -> None:
    stages = STAGES.replace("epochs = 40", "epochs = 3")
    cfg = _write(tmp_path, DEVICE.format(extra=stages))
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    from quasineuron._atomic import load_safetensors_checked
    from quasineuron.training.checkpoint import load_checkpoint
    from quasineuron.training.loop import _decode

    folder = out / "checkpoints" / "stage-2"
    # the weights of each epoch, as the averaging callback kept them in the stage's checkpoint
    ckpt = load_checkpoint(folder / "checkpoint.safetensors")
    # the first callback is the averaging (the domain monitor follows it)
    kept = _decode(ckpt.meta["callbacks_state"], ckpt.extra_tensors or {})[0]
    assert kept["epochs"] == [1, 2, 3]
    snaps = kept["snapshots"]
    end, _ = load_safetensors_checked(folder / "end.safetensors")
    key = next(k for k in end if end[k].is_floating_point() and end[k].numel() > 1)
    mean = torch.stack([s[key].double() for s in snaps]).mean(0)
    torch.testing.assert_close(end[key].double(), mean, rtol=1e-6, atol=1e-7)
    assert not torch.equal(end[key], snaps[-1][key])


def test_a_seed_family_records_each_seed_and_the_mean_and_spread(tmp_path: Path) -> None:
    extra = "[experiment]\nseeds = [0, 1]\n"
    cfg = _write(tmp_path, DEVICE.format(extra="").replace("[evaluation]", extra + "[evaluation]"))
    out = tmp_path / "family"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    fam = _json(out / "metrics.json")
    assert fam["seeds"] == [0, 1]
    per = [_json(out / f"seed-{s}" / "metrics.json") for s in (0, 1)]
    for s, m in zip((0, 1), per, strict=True):
        assert m["config"]["training"]["seed"] == s and m["config"]["network"]["seed"] == s
        assert fam["per_seed"][str(s)]["accuracy"] == m["accuracy"]
    values = [m["accuracy"]["device"] for m in per]
    assert fam["accuracy"]["device_mean"] == pytest.approx(sum(values) / 2, abs=1e-12)
    assert fam["accuracy"]["device_std"] == pytest.approx(
        abs(values[0] - values[1]) / math.sqrt(2), abs=1e-12
    )
    assert fam["test_reads"] == 2
    # the seeds share the sweep and the twin: the family carries that one twin record
    assert fam["twin"] == per[0]["twin"] == per[1]["twin"]
    assert "twin" not in fam["per_seed"]["0"]


def test_a_seed_family_characterises_once_and_each_seed_ends_as_on_its_own(
    tmp_path: Path,
) -> None:
    # seed 1 copies seed 0's sweep and twin (the family does not vary their seeds); it must
    # end exactly as a run of seed 1 alone, which sweeps and fits for itself
    extra = "[experiment]\nseeds = [0, 1]\n"
    cfg = _write(tmp_path, DEVICE.format(extra="").replace("[evaluation]", extra + "[evaluation]"))
    out = tmp_path / "family"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    first, second = (_json(out / f"seed-{s}" / "metrics.json") for s in (0, 1))
    assert "reused_from" not in first["sweep"] and first["device_evaluations"]["sweep"] == 21
    assert second["sweep"]["reused_from"] == os.path.join("..", "seed-0")
    assert second["device_evaluations"]["sweep"] == 0
    assert (out / "seed-1" / "sweep.zarr").is_dir() and (
        out / "seed-1" / "twin.safetensors"
    ).is_file()
    alone = tmp_path / "alone"
    single = DEVICE.format(extra="").replace('name = "tiny"', 'name = "tiny"\n')
    single = (
        single.replace("[data]\n", "[data]\nseed = 1\n")
        .replace("[network]\n", "[network]\nseed = 1\n")
        .replace("[training]\n", "[training]\nseed = 1\n")
    )
    assert (
        main(
            ["run", str(_write(tmp_path, single, "one.toml")), "--out", str(alone), "--no-progress"]
        )
        == 0
    )
    own = _json(alone / "metrics.json")
    assert own["accuracy"] == second["accuracy"]
    assert own["twin"] == second["twin"]


@pytest.mark.slow
def test_a_wuxing_config_runs_saves_loads_and_scores(tmp_path: Path) -> None:
    from quasineuron.wuxing import evaluate
    from quasineuron.wuxing.io import load_wuxing_network

    cfg = _write(tmp_path, WUXING)
    out = tmp_path / "wx"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    metrics = _json(out / "metrics.json")
    assert metrics["test_reads"] == 1
    assert [s["method"] for s in metrics["training"]["stages"]] == [
        "bptt",
        "method2-operating",
        "bptt",
    ]
    # the budget in whole batches: ceil(40 / 30) = 2 batches, the second one maybe short
    assert 40 <= metrics["training"]["stages"][1]["samples_seen"] <= 60
    assert metrics["training"]["stages"][2]["averaged_epochs"] == [1, 2]
    net = load_wuxing_network(out / "network")
    assert net.config.T == 1.0 and net.config.solver.dt == 0.25  # the window is the model's
    from quasineuron.data import load_digits

    _, test = load_digits(seed=0)
    acc = evaluate(net, torch.as_tensor(test.x), torch.as_tensor(test.y), mode="window")
    assert acc == metrics["accuracy"]["device"]

    assert main(["score", str(out), "--again"]) == 0
    assert _json(out / "scores.json")["test_reads"] == 2


def test_a_one_stage_wuxing_run_scores_the_network_it_saved(tmp_path: Path) -> None:
    from quasineuron.wuxing.io import load_wuxing_network

    one = WUXING.split("[[training.stages]]")[0] + '[evaluation]\nmodes = ["device"]\n'
    one = one.replace("[training]", "[training]\nepochs = 1")
    cfg = _write(tmp_path, one)
    out = tmp_path / "wx"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    metrics = _json(out / "metrics.json")
    (stage,) = metrics["training"]["stages"]
    assert stage["method"] == "bptt" and stage["budget"] == {"epochs": 1}
    assert metrics["test_reads"] == 1 and set(metrics["accuracy"]) == {"device"}
    net = load_wuxing_network(out / "network")
    assert net.wiring.sizes == (64, 12, 10) and net.config.readout == "mean"
    assert net.config.T == 1.0 and net.config.solver.dt == 0.25  # the window is the model's


def test_a_wuxing_network_that_does_not_fit_the_data_is_refused_before_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _write(tmp_path, WUXING.replace("[64, 12, 10]", "[60, 12, 10]"))
    assert main(["run", str(cfg), "--out", str(tmp_path / "wx"), "--no-progress"]) == 2
    assert "network.sizes = [64, ..., 10]" in capsys.readouterr().err


def test_an_unknown_method_option_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _write(tmp_path, WUXING.replace("eta = 0.01", "etaa = 0.01"))
    assert main(["run", str(cfg), "--out", str(tmp_path / "wx"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "method2-operating takes no option 'etaa'" in err


def test_reproduce_quick_reruns_from_the_config_beside_the_result(tmp_path: Path) -> None:
    result = tmp_path / "result"
    result.mkdir()
    text = DEVICE.format(extra="").replace("limit_train = 200", "limit_train = 600")
    _write(result, text, "config.toml")
    (result / "metrics.json").write_text("{}")
    again = tmp_path / "again"
    assert main(["reproduce", str(result), "--quick", "--out", str(again), "--no-progress"]) == 0
    rec = _json(again / "run.json")["config"]
    assert rec["training"]["epochs"] == 1 and rec["data"]["limit_train"] == 200
    assert rec["name"] == "tiny" and rec["network"]["hidden"] == [4]
    assert _json(again / "metrics.json")["test_reads"] == 1


def test_reproduce_reads_the_config_a_run_recorded(tmp_path: Path) -> None:
    from quasineuron.config import config_hash, parse_config
    from quasineuron.protocol import reproduce_config

    cfg = parse_config(
        {
            "network": {"kind": "wuxing", "sizes": [64, 12, 10]},
            "training": {"stages": [{"method": "bptt", "samples": 5000, "average_last": 1}]},
            "experiment": {"seeds": [0, 1, 2]},
        }
    )
    (tmp_path / "run.json").write_text(json.dumps({"config": cfg.model_dump(mode="json")}))
    assert config_hash(reproduce_config(tmp_path)) == config_hash(cfg)
    quick = reproduce_config(tmp_path, quick=True)
    assert quick.training.stages[0].samples == 256 and quick.experiment.seeds == (0, 1)
    assert quick.data.limit_train == 200
    toml = tmp_path / "c.toml"
    toml.write_text("[training]\nepochs = 7\n")
    assert reproduce_config(toml).training.epochs == 7
    assert reproduce_config(toml, quick=True).training.epochs == 1


@pytest.mark.slow
def test_a_neuron_twin_is_fitted_into_the_run_folder_for_steady_state_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    head = WUXING.split("[[training.stages]]")[0]
    twin = "{ n_samples = 100, max_steps = 20, hidden = [8] }"
    stage = f'[[training.stages]]\nmethod = "backprop-steady"\nepochs = 1\noptions = {{ neuron_twin = {twin} }}\n'  # noqa: E501
    evaluation = '[evaluation]\nmodes = ["device"]\n'
    cfg = _write(tmp_path, head + stage + evaluation)
    out = tmp_path / "wx"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    (outcome,) = _json(out / "metrics.json")["training"]["stages"]
    info = outcome["neuron_twin"]
    assert info["path"] == "checkpoints/stage-1/neuron-twin.safetensors"  # inside the run
    assert (out / info["path"]).is_file()
    assert info["options"]["n_samples"] == 100 and "rmse" in info["report"]

    bad = _write(tmp_path, head + stage.replace("backprop-steady", "bptt") + evaluation, "b.toml")
    assert main(["run", str(bad), "--out", str(tmp_path / "b"), "--no-progress"]) == 2
    assert "no use for a neuron twin" in capsys.readouterr().err


@pytest.mark.slow
def test_a_device_stage_takes_a_samples_budget_and_keeps_the_best_validation_accuracy(
    tmp_path: Path,
) -> None:
    stages = """
[[training.stages]]
method = "surrogate"
samples = 50
[[training.stages]]
method = "surrogate"
epochs = 4
keep = "best"
"""
    cfg = _write(tmp_path, DEVICE.format(extra=stages))
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    budget, best = _json(out / "metrics.json")["training"]["stages"]
    assert budget["budget"] == {"samples": 50}
    assert budget["samples_seen"] == 60  # ceil(50 / 20) = 3 whole batches of 20
    # the one loop's ranking: the highest validation accuracy (ties: lower loss, then earlier)
    acc = best["val_accuracy"]
    assert acc[best["best_epoch"] - 1] == max(acc)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::quasineuron.errors.OutOfDomainWarning")
def test_a_stage_that_ends_below_the_one_before_is_recorded_and_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a step size far too large for a trained network: the second stage's only epoch is worse
    # on validation than the first stage's end; a keep = "best-or-start" stage never is
    stages = """
[[training.stages]]
method = "surrogate"
epochs = 3
[[training.stages]]
method = "surrogate"
epochs = 1
lr = 5.0
[[training.stages]]
method = "surrogate"
epochs = 1
lr = 5.0
keep = "best-or-start"
"""
    cfg = _write(tmp_path, DEVICE.format(extra=stages).replace("hidden = [4]", "hidden = [16]"))
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    first, second, third = _json(out / "metrics.json")["training"]["stages"]
    assert "below_previous_stage" not in first
    assert second["below_previous_stage"] == {
        "previous_stage": 1,
        "val_accuracy": first["val_accuracy"][first["best_epoch"] - 1],
    }
    assert second["val_accuracy"][0] < second["below_previous_stage"]["val_accuracy"]
    assert "below_previous_stage" not in third  # undone, or kept only where it won
    err = capsys.readouterr().err
    assert "note: stage 2 (surrogate) ends at" in err and "stage 3" not in err
