"""The committed Wuxing MNIST results under their result names (docs/results/NAME).

They are what the docs and the targets file quote, so they are checked as data: each is a
scored network of the named structure, and a name that holds a ``keep`` copy holds exactly
the candidate that validated best, with that candidate's test score.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"

# name -> (structure, wiring kind, number of links)
NAMES = {
    "wuxing-model1-method1": ("MODEL1", "one-to-one", 4711),
    "wuxing-model1-method2": ("MODEL1", "one-to-one", 4711),
    "wuxing-model1-mixed": ("MODEL1", "one-to-one", 4711),
    "wuxing-model1-bptt": ("MODEL1", "one-to-one", 4711),
    "wuxing-model1-twin": ("MODEL1", "one-to-one", 4711),
    "wuxing-model2-method2": ("MODEL2", "one-to-one", 4711),
    "wuxing-model1-adders": ("MODEL1", "adder", 60259),
}

# the names that hold the best-validating of several scored runs (chosen on validation,
# never on the test set), with the T they were validated and scored at
KEPT = {
    "wuxing-model1-method2": 60.0,
    "wuxing-model1-bptt": 40.0,
    "wuxing-model2-method2": 60.0,
    "wuxing-model1-adders": 60.0,
}


def _read(name: str) -> tuple[dict, dict]:
    folder = RESULTS / name
    return (
        json.loads((folder / "model.json").read_text()),
        json.loads((folder / "metrics.json").read_text()),
    )


@pytest.mark.parametrize("name", sorted(NAMES))
def test_each_name_is_a_scored_network_of_its_structure(name: str) -> None:
    model, metrics = _read(name)
    structure, kind, links = NAMES[name]
    assert model["name"] == metrics["name"] == name
    assert model["network"]["model"] == structure
    assert (model["wiring"]["kind"], model["wiring"]["n_links"]) == (kind, links)
    assert metrics["n_test"] == 10_000
    assert 0.0 < metrics["accuracy"]["device"] <= 1.0


@pytest.mark.parametrize("name", sorted(KEPT))
def test_a_kept_name_records_the_best_validating_candidate(name: str) -> None:
    model, metrics = _read(name)
    selection = model["selection"]
    kept = model["trained_as"]
    assert kept == max(selection, key=selection.get) and len(selection) > 1
    assert metrics["trained_as"] == kept
    # the kept copy is the record: the candidate it copies is not committed beside it
    assert not (RESULTS / kept).exists(), kept
    # its own last validation is the one it was selected by, at the device settings
    last = json.loads((RESULTS / name / "validation.json").read_text())[-1]
    assert (last["mode"], last["T"], last["dt"], last["n_val"]) == ("time", KEPT[name], 0.1, 6000)
    assert last["accuracy"] == selection[kept]


def test_the_record_is_small_and_has_no_copies() -> None:
    files = [p for p in RESULTS.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 5 * 1024 * 1024
    # weights only where small and needed: the one MODEL1 network (264 KB) that
    # examples/wuxing_gradient_alignment.py reads; nothing larger
    big = [p for p in files if p.suffix == ".safetensors" and p.stat().st_size > 300_000]
    assert not big, big
    index = (RESULTS / "README.md").read_text()
    for folder in sorted(p for p in RESULTS.iterdir() if p.is_dir()):
        assert f"]({folder.name}/" in index, f"{folder.name} is not in docs/results/README.md"
