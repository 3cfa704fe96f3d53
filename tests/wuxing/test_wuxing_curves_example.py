"""The Wuxing learning-curve plot (examples/wuxing_curves.py): multi-stage runs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType


def _run(results: Path, name: str, history: list[dict], seen: int, init: str | None = None) -> dict:
    doc = {"name": name, "args": {"n_train": 0}, "history": history, "train_samples_seen": seen}
    if init is not None:
        parent = json.loads((results / init / "model.json").read_text())
        doc["init"] = {k: parent[k] for k in ("name", "history", "train_samples_seen")}
    (results / name).mkdir()
    (results / name / "model.json").write_text(json.dumps(doc))
    return doc


def test_a_curve_follows_every_stage_it_continued_from(
    example: Callable[[str], ModuleType], tmp_path: Path
) -> None:
    curves = example("wuxing_curves")
    _run(tmp_path, "a", [{"epoch": 1, "images": 100, "val_accuracy_steady": 0.5},
                         {"epoch": 2, "images": 200, "val_accuracy_steady": 0.6}], 200)  # fmt: skip
    _run(tmp_path, "b", [{"epoch": 1, "images": 30, "val_accuracy_time": 0.7}], 30, init="a")
    c = _run(tmp_path, "c", [{"epoch": 1, "images": 10, "val_accuracy_time": 0.8}], 10, init="b")
    assert curves._curve(c, tmp_path) == ([100, 200, 230, 240], [0.5, 0.6, 0.7, 0.8], 240)


def test_a_run_that_continues_its_namesake_uses_the_kept_summary(
    example: Callable[[str], ModuleType], tmp_path: Path
) -> None:
    curves = example("wuxing_curves")
    stage1 = {"name": "a", "train_samples_seen": 50,
              "history": [{"epoch": 1, "images": 50, "val_accuracy_steady": 0.4}]}  # fmt: skip
    doc = {"name": "a", "args": {}, "train_samples_seen": 10, "init": stage1,
           "history": [{"epoch": 1, "images": 10, "val_accuracy_steady": 0.8}]}  # fmt: skip
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "model.json").write_text(json.dumps(doc))
    assert curves._curve(doc, tmp_path) == ([50, 60], [0.4, 0.8], 60)
