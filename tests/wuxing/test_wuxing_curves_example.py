"""The Wuxing learning-curve plot (examples/wuxing_curves.py): multi-stage runs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType


def _run(results: Path, name: str, history: list[dict], seen: int, init: str | None = None) -> dict:
    doc = {
        "name": name,
        "args": {"n_train": 0},
        "history": history,
        "train_samples_seen": seen,
        "command": f"train --name {name}",
    }
    if init is not None:
        parent = json.loads((results / init / "model.json").read_text())
        doc["init"] = {k: parent[k] for k in ("name", "history", "train_samples_seen", "command")}
    (results / name).mkdir()
    (results / name / "model.json").write_text(json.dumps(doc))
    return doc


def test_a_curve_follows_every_stage_it_continued_from(
    example: Callable[[str], ModuleType], tmp_path: Path
) -> None:
    curves = example("wuxing_curves")
    _run(
        tmp_path,
        "a",
        [
            {"epoch": 1, "images": 100, "val_accuracy_steady": 0.5},
            {"epoch": 2, "images": 200, "val_accuracy_steady": 0.6},
        ],
        200,
    )
    _run(tmp_path, "b", [{"epoch": 1, "images": 30, "val_accuracy_time": 0.7}], 30, init="a")
    c = _run(tmp_path, "c", [{"epoch": 1, "images": 10, "val_accuracy_time": 0.8}], 10, init="b")
    assert curves.curve(c, tmp_path) == ([100, 200, 230, 240], [0.5, 0.6, 0.7, 0.8], 240)


def test_a_stage_whose_folder_now_holds_another_run_uses_the_kept_summary(
    example: Callable[[str], ModuleType], tmp_path: Path
) -> None:
    curves = example("wuxing_curves")
    _run(tmp_path, "a", [{"epoch": 1, "images": 100, "val_accuracy_steady": 0.5}], 100)
    b = _run(tmp_path, "b", [{"epoch": 1, "images": 30, "val_accuracy_time": 0.7}], 30, init="a")
    (tmp_path / "a").rename(tmp_path / "a-first")  # renamed; "a" now holds another run
    other = {
        "name": "a",
        "command": "train --name a --lr 1",
        "train_samples_seen": 7,
        "history": [{"epoch": 1, "images": 7, "val_accuracy_time": 0.9}],
    }
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "model.json").write_text(json.dumps(other))
    assert curves.curve(b, tmp_path) == ([100, 130], [0.5, 0.7], 130)


def test_a_run_that_continues_its_namesake_uses_the_kept_summary(
    example: Callable[[str], ModuleType], tmp_path: Path
) -> None:
    curves = example("wuxing_curves")
    stage1 = {
        "name": "a",
        "train_samples_seen": 50,
        "history": [{"epoch": 1, "images": 50, "val_accuracy_steady": 0.4}],
    }
    doc = {
        "name": "a",
        "args": {},
        "train_samples_seen": 10,
        "init": stage1,
        "history": [{"epoch": 1, "images": 10, "val_accuracy_steady": 0.8}],
    }
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "model.json").write_text(json.dumps(doc))
    assert curves.curve(doc, tmp_path) == ([50, 60], [0.4, 0.8], 60)


def test_a_chain_kept_only_as_summaries_counts_each_stage_once(
    example: Callable[[str], ModuleType], tmp_path: Path
) -> None:
    curves = example("wuxing_curves")
    # as train keeps them: each summary's images count the chain below it (50, then 50 + 20)
    s1 = {
        "name": "s1",
        "train_samples_seen": 50,
        "init": None,
        "history": [{"epoch": 1, "images": 50, "val_accuracy_steady": 0.4}],
    }
    s2 = {
        "name": "s2",
        "train_samples_seen": 70,
        "init": s1,
        "history": [{"epoch": 1, "images": 20, "val_accuracy_time": 0.6}],
    }
    doc = {
        "name": "s3",
        "args": {},
        "train_samples_seen": 10,
        "init": s2,
        "history": [{"epoch": 1, "images": 10, "val_accuracy_time": 0.8}],
    }
    assert curves.curve(doc, tmp_path) == ([50, 70, 80], [0.4, 0.6, 0.8], 80)


def test_an_average_of_runs_is_listed_and_does_not_break_the_plot(
    example: Callable[[str], ModuleType], tmp_path: Path
) -> None:
    curves = example("wuxing_curves")
    doc = {
        "name": "wuxing-model1-avg",
        "args": {"batch_size": 32},
        "history": [],
        "loss_per_step": [],
        "train_samples_seen": 0,
        "train_seconds": 0.0,
        "wiring": {"n_links": 3},
        "averaged": [{"name": "p"}, {"name": "q"}],
    }
    (tmp_path / doc["name"]).mkdir()
    path = tmp_path / doc["name"] / "model.json"
    path.write_text(json.dumps(doc))
    assert "| wuxing-model1-avg | 3 | mean of p, q |" in curves.table([path])
    trained = {
        **doc,
        "name": "wuxing-model1-p",
        "loss_per_step": [1.0] * 60,
        "averaged": None,
        "history": [{"epoch": 1, "images": 64, "val_accuracy_steady": 0.5}],
        "train_samples_seen": 64,
    }
    (tmp_path / trained["name"]).mkdir()
    (tmp_path / trained["name"] / "model.json").write_text(json.dumps(trained))
    runs = sorted(tmp_path.glob("*/model.json"))
    assert curves.plot(runs, tmp_path / "c.png") == ["model1-p"]  # the average is left out
    assert (tmp_path / "c.png").stat().st_size > 0
    curves.main([str(tmp_path), "--out", str(tmp_path / "d.png")])
    assert (tmp_path / "d.png").stat().st_size > 0


def test_a_run_kept_under_another_name_is_drawn_once_as_the_copy(
    example: Callable[[str], ModuleType], tmp_path: Path
) -> None:
    curves = example("wuxing_curves")
    base = {
        "args": {"batch_size": 32},
        "loss_per_step": [1.0] * 60,
        "train_samples_seen": 64,
        "history": [{"epoch": 1, "images": 64, "val_accuracy_time": 0.5}],
    }
    runs = {
        "wuxing-b-1": {**base, "name": "wuxing-b-1", "command": "train --name wuxing-b-1"},
        "wuxing-b": {
            **base,
            "name": "wuxing-b",
            "trained_as": "wuxing-b-1",
            "command": "train --name wuxing-b-1",
        },  # keep's copy of b-1
        # renamed: its old name now holds another run (another command), so both are drawn
        "wuxing-a-first": {
            **base,
            "name": "wuxing-a-first",
            "trained_as": "wuxing-a",
            "command": "train --name wuxing-a",
        },
        "wuxing-a": {**base, "name": "wuxing-a", "command": "train --name wuxing-a --lr 1"},
    }
    for name, doc in runs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.json").write_text(json.dumps(doc))
    paths = sorted(tmp_path.glob("*/model.json"))
    assert curves.plot(paths, tmp_path / "c.png") == ["a", "a-first", "b"]
