"""The realism suite: scenarios, routes and the shape of its metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from quasineuron.realism import ROUTES, Route, Scenario, default_scenarios, run_realism


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
