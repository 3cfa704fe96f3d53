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
    assert (RESULTS / name / "model.safetensors").is_file()


@pytest.mark.parametrize("name", sorted(KEPT))
def test_a_kept_name_is_the_best_validating_candidate_unchanged(name: str) -> None:
    model, metrics = _read(name)
    selection = model["selection"]
    kept = model["trained_as"]
    assert kept == max(selection, key=selection.get) and len(selection) > 1
    assert metrics["trained_as"] == kept
    _, cand_metrics = _read(kept)
    assert cand_metrics["accuracy"] == metrics["accuracy"]
    for f in ("model.safetensors", "predictions.safetensors"):
        assert (RESULTS / name / f).read_bytes() == (RESULTS / kept / f).read_bytes(), f
    # every candidate is a scored network, and its selection value is its own last
    # validation on the 6,000 validation images at the device settings
    for cand in selection:
        _, m = _read(cand)
        assert m["n_test"] == 10_000
        last = json.loads((RESULTS / cand / "validation.json").read_text())[-1]
        assert (last["mode"], last["T"], last["dt"], last["n_val"]) == (
            "time",
            KEPT[name],
            0.1,
            6000,
        )
        assert last["accuracy"] == selection[cand]
