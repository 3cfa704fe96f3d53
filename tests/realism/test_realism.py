"""The realism suite: scenarios, routes and the shape of its metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from quasineuron.data import ArrayDataset
from quasineuron.realism import (
    ROUTES,
    Route,
    Scenario,
    default_scenarios,
    run_realism,
    validation_split,
)


def test_every_scenario_names_known_routes_and_recommends_one_it_runs() -> None:
    names = {r.name for r in ROUTES}
    scenarios = default_scenarios()
    assert {s.name for s in scenarios} >= {
        "exact-twin",
        "noisy",
        "nan-region",
        "steep-threshold",
        "variability",
        "few-points",
        "escaping-drives",
    }
    for sc in scenarios:
        assert set(sc.routes) <= names
        assert sc.recommended in sc.routes


def test_the_validation_split_holds_out_the_last_sixth_at_most_5000() -> None:
    import torch

    for n, start, stop in ((60_000, 50_000, 55_000), (1438, 1199, 1438)):
        data = ArrayDataset(torch.arange(n, dtype=torch.float32)[:, None], torch.zeros(n).long())
        train, held, (a, b) = validation_split(data)
        assert (a, b) == (start, stop) and len(train) == start and len(held) == stop - start
        # nothing held out is trained on, and the held-out images are the ones named
        assert float(train.x[-1, 0]) == start - 1 and float(held.x[0, 0]) == start


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
def test_the_suite_scores_the_validation_split_when_asked() -> None:
    exact = default_scenarios()[0]
    sc = Scenario(
        exact.name, exact.description, exact.make_device, routes=("twin",), recommended="twin"
    )
    m = run_realism(scenarios=[sc], seeds=(0,), epochs=1, hidden=4, max_train=100, validation=True)
    assert m["scored_on"] == "validation (training images 1199-1437)" and m["n_test"] == 239
    m = run_realism(scenarios=[sc], seeds=(0,), epochs=1, hidden=4, max_train=100)
    assert m["scored_on"] == "test" and m["n_test"] == 359


def test_a_route_refuses_an_unknown_mode() -> None:
    with pytest.raises(ValueError, match="Route.mode must be"):
        Route("x", mode="backprop")


def test_a_scenario_naming_an_unknown_route_is_refused() -> None:
    sc = Scenario("s", "d", lambda seed: default_scenarios()[0].make_device(seed), routes=("nope",))
    with pytest.raises(ValueError, match="unknown routes"):
        run_realism(scenarios=[sc], seeds=(0,), epochs=1, max_train=50)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
def test_the_suite_writes_scenarios_with_routes_seeds_and_the_ideal(tmp_path: Path) -> None:
    escape = next(s for s in default_scenarios() if s.name == "escaping-drives")
    sc = Scenario(
        escape.name,
        escape.description,
        escape.make_device,
        grid=21,
        routes=("twin", "physics-aware+domain"),
        recommended="physics-aware+domain",
    )
    m = run_realism(tmp_path, scenarios=[sc], seeds=(0, 1), epochs=1, hidden=4, max_train=100)
    assert json.loads((tmp_path / "metrics.json").read_text()) == m
    assert m["data"] == "digits" and m["seeds"] == [0, 1]
    (entry,) = m["scenarios"]
    assert entry["name"] == "escaping-drives" and 0 <= entry["ideal"]["accuracy_mean"] <= 1
    assert [r["name"] for r in entry["routes"]] == ["twin", "physics-aware+domain"]
    for r in entry["routes"]:
        assert len(r["seeds"]) == 2
        for key in ("accuracy_device_mean", "accuracy_device_std", "gap_mean"):
            assert math.isfinite(r[key])
        accs = [s["accuracy_device"] for s in r["seeds"]]
        assert r["accuracy_device_mean"] == pytest.approx(sum(accs) / 2)
    # the bounded output layer keeps its drives in the box: the tools' route is never worse
    tools = entry["routes"][1]
    assert tools["outside_fraction_mean"] <= entry["routes"][0]["outside_fraction_mean"]


def test_every_recommendation_is_the_cheapest_route_within_spread_on_validation() -> None:
    # the committed validation run (held-out training images, never the test set) is where the
    # recommendations come from: a recommendation changed without it fails here
    path = Path(__file__).parents[2] / "docs/results/realism-mnist/validation.json"
    record = json.loads(path.read_text(encoding="utf-8"))
    assert record["scored_on"].startswith("validation")
    chosen = {sc["name"]: sc["cheapest_within_spread"] for sc in record["scenarios"]}
    assert chosen == {sc.name: sc.recommended for sc in default_scenarios()}
