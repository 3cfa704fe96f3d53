"""The committed headline seed families: the config that ran, its seeds and its spread."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from quasineuron.config import config_hash, load_config, parse_config
from quasineuron.protocol import QUICK_SAMPLES, reproduce_config

ROOT = Path(__file__).parents[2]
FAMILIES = (
    "almost-neuron-mnist",
    "almost-neuron-mnist-eps0",
    "almost-neuron-mnist-eps0.05",
    "almost-neuron-mnist-eps0.2",
    "almost-neuron-mnist-eps0.5",
    "wuxing-mnist",
    "spice-mnist",
    "spice-mnist-physics-aware",
    "reaction-mnist",
    "wuxing-model1-chain",
)


def _metrics(name: str) -> dict:
    return json.loads((ROOT / "docs/results" / name / "metrics.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", FAMILIES)
def test_a_headline_family_holds_the_config_of_its_example(name: str) -> None:
    folder = ROOT / "docs" / "results" / name
    config = load_config(folder / "config.toml")
    assert config_hash(config) == config_hash(load_config(ROOT / "examples" / f"{name}.toml"))
    assert config_hash(config) == config_hash(parse_config(_metrics(name)["config"]))
    quick = reproduce_config(folder, quick=True)
    assert quick.data.limit_train == 200
    for stage in quick.stages():  # one epoch, or a budget of samples cut to the smoke size
        assert stage.epochs == 1 if stage.samples is None else stage.samples <= QUICK_SAMPLES


@pytest.mark.parametrize("name", FAMILIES)
def test_a_headline_family_reports_mean_and_std_over_at_least_three_seeds(name: str) -> None:
    metrics = _metrics(name)
    seeds = metrics["seeds"]
    assert len(seeds) >= 3 and len(set(seeds)) == len(seeds)
    assert list(load_config(ROOT / "docs/results" / name / "config.toml").experiment.seeds) == seeds
    per_seed = [metrics["per_seed"][str(s)]["accuracy"]["device"] for s in seeds]
    # the headline numbers are the mean and sample std of the per-seed test accuracies
    assert metrics["accuracy"]["device_mean"] == pytest.approx(statistics.fmean(per_seed))
    assert metrics["accuracy"]["device_std"] == pytest.approx(statistics.stdev(per_seed))
    assert metrics["accuracy"]["device_std"] > 0


def test_reaction_mnist_runs_in_chemistry_as_in_closed_form_on_every_seed() -> None:
    metrics = _metrics("reaction-mnist")
    agreements = []
    for seed in metrics["seeds"]:
        entry = metrics["per_seed"][str(seed)]
        chem = entry["chemistry"]
        # every test image, simulated to steady state in the compiled chemistry
        assert chem["n_test"] == 10_000
        assert chem["max_abs_output_difference"] < 1e-9
        assert entry["accuracy"]["chemistry"] == chem["accuracy_closed_form"]
        agreements.append(chem["agreement"])
    assert metrics["chemistry_agreement_min"] == min(agreements) == 1.0
    assert metrics["accuracy"]["chemistry_mean"] == pytest.approx(
        metrics["accuracy"]["device_mean"]
    )
