"""The Wuxing MNIST runner (examples/wuxing_mnist.py): twin, train, score, end to end."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest


@pytest.fixture(scope="module")
def script(example: Callable[[str], ModuleType]) -> ModuleType:
    """The example script imported as a module."""
    return example("wuxing_mnist")


@pytest.mark.skip(
    reason="the script still passes the removed wall-clock budget (max_seconds) and reads the "
    "removed Wuxing result fields; it is being replaced by the library's run command"
)
@pytest.mark.slow
def test_twin_train_and_score_write_a_reloadable_run(
    script: ModuleType, tmp_path: Path, mnist_dir: Path
) -> None:
    twin = tmp_path / "twin"
    script.main(["twin", "--out", str(twin), "--n-samples", "2000", "--max-steps", "50"])
    assert json.loads((twin / "twin.json").read_text())["report"]["n_train"] > 1000
    common = ["--data-dir", str(mnist_dir), "--out", str(tmp_path), "--n-train", "64",
              "--n-val", "32", "--batch-size", "32"]  # fmt: skip
    script.main(["train", "--name", "run-twin", "--method", "twin", "--twin", str(twin), *common])
    script.main(["train", "--name", "run-m2", "--method", "method2", "--twin", str(twin),
                 "--eta", "3", *common])  # fmt: skip
    runs = [str(tmp_path / "run-twin"), str(tmp_path / "run-m2")]
    # a run that ended normally keeps its model, not the per-epoch checkpoint
    assert all((Path(r) / "model.safetensors").exists() for r in runs)
    assert not any((Path(r) / "checkpoint.safetensors").exists() for r in runs)
    score = ["--data-dir", str(mnist_dir), "--n-test", "20", "--T", "4", "--dt", "0.2",
             "--device", "cpu"]  # fmt: skip
    script.main(["score", *runs, "--modes", "surrogate", *score])
    script.main(["score", *runs, "--modes", "time", *score])
    for run in runs:
        m = json.loads((Path(run) / "metrics.json").read_text())
        assert 0 <= m["accuracy"]["device"] <= 1 and 0 <= m["accuracy"]["surrogate"] <= 1
        assert m["gap"] == pytest.approx(m["accuracy"]["surrogate"] - m["accuracy"]["device"])
        assert 0 <= m["agreement"] <= 1 and m["n_test"] == 20
        assert m["train"]["train_samples_seen"] == 64
        assert "examples/wuxing_mnist.py" in m["command"]
    # a run continues from a saved one
    script.main(["train", "--name", "run-more", "--method", "twin", "--twin", str(twin),
                 "--init", runs[0], "--lr", "1e-9", *common])  # fmt: skip
    from safetensors.torch import load_file

    a = load_file(str(Path(runs[0]) / "model.safetensors"))["c"]
    b = load_file(str(tmp_path / "run-more" / "model.safetensors"))["c"]
    assert float((a - b).abs().max()) < 1e-6
    more = json.loads((tmp_path / "run-more" / "model.json").read_text())
    assert more["init"]["name"] == "run-twin" and more["init"]["train_samples_seen"] == 64
    assert more["init"]["init"] is None
    # a third stage keeps the whole chain: each stage's command, the cost summed
    script.main(["train", "--name", "run-more2", "--method", "twin", "--twin", str(twin),
                 "--init", str(tmp_path / "run-more"), "--lr", "1e-9", *common])  # fmt: skip
    more2 = json.loads((tmp_path / "run-more2" / "model.json").read_text())
    assert more2["init"]["name"] == "run-more" and more2["init"]["train_samples_seen"] == 128
    assert more2["init"]["init"]["name"] == "run-twin"
    assert more2["init"]["init"]["command"] == more["init"]["command"]
    # validation accuracy on the held-out images, appended per call
    val = [
        "--data-dir",
        str(mnist_dir),
        "--n-val",
        "16",
        "--T",
        "4",
        "--dt",
        "0.2",
        "--device",
        "cpu",
    ]
    script.main(["validate", runs[0], "--mode", "steady", *val])
    script.main(["validate", runs[0], "--mode", "time", *val])
    vals = json.loads((Path(runs[0]) / "validation.json").read_text())
    assert [v["mode"] for v in vals] == ["steady", "time"] and vals[0]["n_val"] == 16
    assert all(0 <= v["accuracy"] <= 1 for v in vals)


def test_a_continued_run_keeps_the_wiring_of_the_run_it_starts_from(
    script: ModuleType, tmp_path: Path
) -> None:
    adders = {"model": "MODEL1", "wiring": "adder", "fan_in": 16, "receiving": 3, "seed": 3,
              "c0": 0.25}  # fmt: skip
    (tmp_path / "model.json").write_text(json.dumps({"network": adders}))
    run = str(tmp_path)
    assert script._init_spec(run, None, None) == adders  # not given: taken from the run
    assert script._init_spec(run, "MODEL1", 16) == adders  # given and agreeing
    with pytest.raises(SystemExit, match="fan_in"):
        script._init_spec(run, None, 8)
    with pytest.raises(SystemExit, match="fan_in"):  # an explicit "no adders" clashes too
        script._init_spec(run, None, 0)
    with pytest.raises(SystemExit, match="model"):
        script._init_spec(run, "MODEL2", None)


def _fake_run(
    folder: Path, name: str, c: list[float], k: float = 1.0, lr: float = 0.1, scale: float = 1.0
) -> Path:
    """A run folder as ``train`` writes it, with the given coefficients."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    save_file(
        {"c": torch.tensor(c), "K": torch.full((3, 5, 2), k)}, str(folder / "model.safetensors")
    )
    doc = {"name": name, "network": {"model": "MODEL1", "seed": 0}, "wiring": {"n_links": len(c)},
           "train_config": {"T": 40.0, "input_scale": scale},
           "method": {"kind": "bptt", "repr": f"Backprop(lr={lr})"},
           "args": {"twin": None, "lr": lr},
           "command": f"train {name}", "train_seconds": 1.0, "train_samples_seen": 32}  # fmt: skip
    (folder / "model.json").write_text(json.dumps(doc))
    return folder


def test_average_writes_one_run_with_the_mean_coefficients(
    script: ModuleType, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    a = _fake_run(tmp_path / "a", "a", [0.0, 1.0, -2.0])
    b = _fake_run(tmp_path / "b", "b", [1.0, 2.0, 2.0], lr=0.3)
    script.main(["average", str(a), str(b), "--name", "ab", "--out", str(tmp_path)])
    c = load_file(str(tmp_path / "ab" / "model.safetensors"))["c"]
    assert c.tolist() == [0.5, 1.5, 0.0]
    doc = json.loads((tmp_path / "ab" / "model.json").read_text())
    assert [r["name"] for r in doc["averaged"]] == ["a", "b"] and doc["network"]["seed"] == 0
    # the settings of the runs are kept where they agree, never taken from one of them
    assert doc["args"] == {"twin": None} and doc["method"] == {"kind": "bptt"}
    assert doc["train_config"] == {"T": 40.0, "input_scale": 1.0}
    other_scale = _fake_run(tmp_path / "s", "s", [0.0, 0.0, 0.0], scale=2.0)
    with pytest.raises(SystemExit, match="input scale"):
        script.main(["average", str(a), str(other_scale), "--name", "x", "--out", str(tmp_path)])
    other_k = _fake_run(tmp_path / "k", "k", [0.0, 0.0, 0.0], k=2.0)
    with pytest.raises(SystemExit, match="not the network"):
        script.main(["average", str(a), str(other_k), "--name", "x", "--out", str(tmp_path)])
    other_wiring = _fake_run(tmp_path / "w", "w", [0.0, 0.0, 0.0])
    doc = json.loads((other_wiring / "model.json").read_text())
    (other_wiring / "model.json").write_text(json.dumps({**doc, "network": {"seed": 1}}))
    with pytest.raises(SystemExit, match="not the network"):
        script.main(["average", str(a), str(other_wiring), "--name", "x", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="at least two"):
        script.main(["average", str(a), "--name", "x", "--out", str(tmp_path)])


def _validated(run: Path, acc: float, n_val: int = 3000, in_training: float | None = None) -> Path:
    """``run`` with a ``validate`` result and, optionally, an in-training (time) validation."""
    entry = {"accuracy": acc, "mode": "time", "T": 40.0, "dt": 0.1, "readout": "final",
             "n_val": n_val}  # fmt: skip
    (run / "validation.json").write_text(json.dumps([{**entry, "accuracy": 0.0}, entry]))
    doc = json.loads((run / "model.json").read_text())
    doc["train_config"].update(dt=0.1, readout="final")
    doc["args"]["n_val"] = n_val
    if in_training is not None:
        doc["val_accuracy_time"] = [in_training - 0.01, in_training]
    (run / "model.json").write_text(json.dumps(doc))
    return run


def test_keep_copies_the_candidate_that_validates_best(script: ModuleType, tmp_path: Path) -> None:
    start = _validated(_fake_run(tmp_path / "start", "start", [0.0]), 0.80)
    a = _validated(_fake_run(tmp_path / "a", "a", [1.0]), 0.82, in_training=0.90)
    b = _validated(_fake_run(tmp_path / "b", "b", [2.0]), 0.85, in_training=0.70)
    out = ["--out", str(tmp_path)]
    # the last `validate` result of each (b), against the start
    script.main(["keep", str(a), str(b), "--name", "kept", "--start", str(start), "--by",
                 "validate", *out])  # fmt: skip
    doc = json.loads((tmp_path / "kept" / "model.json").read_text())
    assert doc["name"] == "kept" and doc["trained_as"] == "b" and doc["command"] == "train b"
    assert doc["selection"] == {"a": 0.82, "b": 0.85, "start (the start)": 0.80}
    assert "3,000 images" in doc["selection_rule"] and "start from" in doc["selection_rule"]
    assert (tmp_path / "kept" / "model.safetensors").read_bytes() == (
        b / "model.safetensors"
    ).read_bytes()
    assert not (tmp_path / "kept" / "metrics.json").exists()  # b was never scored
    # a scored candidate: its test score comes along, under the new name
    (b / "metrics.json").write_text(json.dumps({"name": "b", "accuracy": {"device": 0.84}}))
    script.main(["keep", str(a), str(b), "--name", "kept", "--by", "validate", *out])
    m = json.loads((tmp_path / "kept" / "metrics.json").read_text())
    assert m["name"] == "kept" and m["trained_as"] == "b" and m["accuracy"] == {"device": 0.84}
    assert m["selection"] == {"a": 0.82, "b": 0.85}
    assert json.loads((b / "metrics.json").read_text())["name"] == "b"  # the candidate's as it was
    # the best epoch of the in-training validation (a); the earlier copy is replaced
    script.main(["keep", str(a), str(b), "--name", "kept", *out])
    doc = json.loads((tmp_path / "kept" / "model.json").read_text())
    assert doc["trained_as"] == "a" and doc["selection"] == {"a": 0.90, "b": 0.70}
    # nothing kept when no candidate beats the start
    with pytest.raises(SystemExit, match="no candidate beats"):
        script.main(["keep", str(a), "--name", "k2", "--start", str(b), "--by", "validate", *out])
    assert not (tmp_path / "k2").exists()
    # like is compared with like only
    c = _validated(_fake_run(tmp_path / "c", "c", [3.0]), 0.99, n_val=1000)
    with pytest.raises(SystemExit, match="not comparable"):
        script.main(["keep", str(a), str(c), "--name", "k3", "--by", "validate", *out])
    with pytest.raises(SystemExit, match="no validation.json"):
        script.main(["keep", str(a), str(tmp_path / "kept"), "--name", "k4", "--by", "validate",
                     "--start", str(_fake_run(tmp_path / "s", "s", [0.0])), *out])  # fmt: skip
    with pytest.raises(SystemExit, match="val-mode time"):
        script.main(["keep", str(start), "--name", "k5", *out])
    with pytest.raises(SystemExit, match="one of the candidates"):
        script.main(["keep", str(a), str(b), "--name", "a", *out])
    twin_a = _validated(_fake_run(tmp_path / "elsewhere" / "a", "a", [4.0]), 0.95)
    with pytest.raises(SystemExit, match="two share one"):
        script.main(["keep", str(a), str(twin_a), "--name", "k6", "--by", "validate", *out])
    assert not (tmp_path / "k6").exists()


def test_keep_beat_is_a_bar_from_another_chain(script: ModuleType, tmp_path: Path) -> None:
    start = _validated(_fake_run(tmp_path / "start", "start", [0.0]), 0.80)
    best = _validated(_fake_run(tmp_path / "best", "best", [5.0]), 0.86)
    a = _validated(_fake_run(tmp_path / "a", "a", [1.0]), 0.85)
    b = _validated(_fake_run(tmp_path / "b", "b", [2.0]), 0.87)
    out = ["--out", str(tmp_path), "--by", "validate"]
    # a beats its start but not the best run so far: nothing kept, whatever the order
    for args in (["--start", str(start), "--beat", str(best)], ["--beat", str(best)]):
        with pytest.raises(SystemExit, match="no candidate beats.*best"):
            script.main(["keep", str(a), "--name", "k", *args, *out])
        assert not (tmp_path / "k").exists()
    script.main(["keep", str(a), str(b), "--name", "k", "--start", str(start), "--beat",
                 str(best), *out])  # fmt: skip
    doc = json.loads((tmp_path / "k" / "model.json").read_text())
    assert doc["trained_as"] == "b"
    assert doc["selection"] == {"a": 0.85, "b": 0.87, "start (the start)": 0.80,
                                "best (to beat)": 0.86}  # fmt: skip
    assert doc["selection_rule"].endswith("and the run they start from and best")
    with pytest.raises(SystemExit, match="also a candidate"):
        script.main(["keep", str(a), str(b), "--name", "k7", "--beat", str(b), *out])
    other = _validated(_fake_run(tmp_path / "o", "o", [0.0]), 0.5, n_val=1000)
    with pytest.raises(SystemExit, match="not comparable"):
        script.main(["keep", str(b), "--name", "k8", "--beat", str(other), *out])
