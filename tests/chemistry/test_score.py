"""evaluation.chemistry: a trained reaction-neuron network scored as one compiled chemistry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import quasineuron as qn
from quasineuron.chemistry.score import score_chemistry
from quasineuron.config import ConfigError, parse_config
from quasineuron.devices.reaction import reaction_sigmoid
from quasineuron.pipeline import run_pipeline
from quasineuron.protocol import seed_family_metrics

F64 = torch.float64


def _config(**over: dict) -> dict:
    doc: dict = {
        "name": "tiny-chemistry",
        "device": {"name": "reaction-relu", "options": {"eps": 0.01}},
        "twin": {"kind": "spline"},
        "data": {"name": "digits", "limit_train": 200, "limit_test": 40},
        "network": {"hidden": [4], "connection": "linear", "readout_affine": False},
        "training": {"mode": "direct", "epochs": 1, "batch_size": 64, "loss": "mse"},
        "evaluation": {"modes": ["device"], "baseline_mlp": False, "chemistry": True},
    }
    for section, values in over.items():
        doc[section] = {**doc.get(section, {}), **values}
    return doc


@pytest.mark.slow  # two tiny runs, each with its characterisation and plots
def test_a_run_scores_the_compiled_chemistry_and_a_family_keeps_each_seeds_agreement(
    tmp_path: Path,
) -> None:
    config = parse_config(_config(experiment={"seeds": [0, 1]}))
    family = run_pipeline(config, tmp_path / "run", progress=False)
    assert family["seeds"] == [0, 1]
    assert {"chemistry_mean", "chemistry_std", "device_mean"} <= set(family["accuracy"])
    assert family["chemistry_agreement_min"] == 1.0
    for seed in ("0", "1"):
        chem = family["per_seed"][seed]["chemistry"]
        assert chem["agreement"] == 1.0 and chem["n_test"] == 40
        assert chem["max_abs_output_difference"] < 1e-9
    one = json.loads((tmp_path / "run" / "seed-0" / "metrics.json").read_text())
    assert one["accuracy"]["chemistry"] == one["chemistry"]["accuracy"]
    assert one["chemistry"]["n_species"] == 64 + 4 + 10 and one["chemistry"]["all_converged"]
    # the chemistry's accuracy is part of the run's one test read
    scores = json.loads((tmp_path / "run" / "seed-0" / "scores.json").read_text())
    assert scores["test_reads"] == 1 and "chemistry" in scores["readings"][0]["accuracy"]
    # a later read scores the chemistry again, as the run did
    from quasineuron.protocol import score_run

    again = score_run(tmp_path / "run" / "seed-0", again=True)
    assert again["accuracy"] == scores["readings"][0]["accuracy"] and again["test_reads"] == 2


def test_a_family_carries_each_seeds_chemistry_agreement_and_its_minimum() -> None:
    def run(acc: float, agreement: float) -> dict:
        chem = {"agreement": agreement, "max_abs_output_difference": 1e-15}
        chem |= {"accuracy_closed_form": acc, "n_test": 100, "seconds": 1.0}
        return {"accuracy": {"device": acc, "chemistry": acc}, "chemistry": chem}

    family = seed_family_metrics("f", {0: run(0.9, 1.0), 1: run(0.8, 0.99)}, config={})
    assert family["chemistry_agreement_min"] == 0.99
    assert family["per_seed"]["1"]["chemistry"]["agreement"] == 0.99
    assert "seconds" not in family["per_seed"]["1"]["chemistry"]
    assert family["accuracy"]["chemistry_mean"] == pytest.approx(0.85)
    plain = seed_family_metrics("f", {0: {"accuracy": {"device": 0.9}}}, config={})
    assert "chemistry_agreement_min" not in plain and "chemistry" not in plain["per_seed"]["0"]


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"device": {"name": "almost-neuron", "options": {}}}, "has no chemistry"),
        ({"network": {"readout_affine": True}}, "readout_affine = false"),
        ({"network": {"connection": "quadratic"}}, "connection = 'linear'"),
        ({"data": {"name": "xor"}}, "negative inputs"),
    ],
)
def test_a_chemistry_score_of_a_network_that_does_not_compile_is_refused(
    over: dict, match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_config(_config(**over))


def test_a_bounded_reaction_network_reaches_its_closed_form_in_chemistry() -> None:
    # the sigmoid neurons keep their concentrations in [0, 1]: the solver's bounded path
    net = qn.DeviceNetwork(reaction_sigmoid(eps=0.05), (6, 5, 3), readout_affine=False, seed=1)
    net = net.to(F64)
    x = torch.rand(30, 6, generator=torch.Generator().manual_seed(2), dtype=F64)
    y = torch.randint(0, 3, (30,), generator=torch.Generator().manual_seed(3))
    out = score_chemistry(net, x, y, device_name="reaction-sigmoid", eps=0.05, seed=0)
    assert out["agreement"] == 1.0 and out["all_converged"]
    assert out["max_abs_output_difference"] < 1e-9
    with torch.no_grad():
        device_cls = net(x, mode=qn.TrueDevice()).argmax(1)
    assert out["accuracy"] == pytest.approx(float((device_cls == y).double().mean()))


def test_negative_inputs_are_refused_because_they_are_concentrations() -> None:
    net = qn.DeviceNetwork(reaction_sigmoid(eps=0.05), (2, 2), readout_affine=False, seed=0)
    with pytest.raises(ValueError, match=">= 0"):
        score_chemistry(
            net, -torch.ones(3, 2), torch.zeros(3), device_name="reaction-sigmoid", eps=0.05, seed=0
        )
    with pytest.raises(ValueError, match="no chemistry"):
        score_chemistry(net, torch.ones(3, 2), torch.zeros(3), device_name="tanh", eps=0.1, seed=0)
