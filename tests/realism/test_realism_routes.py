"""The realism suite's device routes (direct, derivative-free) and its slow, budgeted device."""

from __future__ import annotations

import dataclasses
import warnings

import pytest

from quasineuron.data import ArrayDataset, load_digits
from quasineuron.realism import (
    ROUTES,
    Route,
    Scenario,
    _cheapest_within_spread,
    _Settings,
    default_scenarios,
    run_one,
    run_realism,
)

_ROUTES = {r.name: r for r in ROUTES}
_TINY = _Settings(hidden=2, epochs=1, batch_size=20)


@pytest.fixture(scope="module")
def data() -> tuple[ArrayDataset, ArrayDataset]:
    train, test = load_digits(seed=0)
    return (
        ArrayDataset(train.x[:60], train.y[:60], name=train.name),
        ArrayDataset(test.x[:60], test.y[:60], name=test.name),
    )


def _scenario(name: str, **changes: object) -> Scenario:
    sc = next(s for s in default_scenarios() if s.name == name)
    return dataclasses.replace(sc, **changes)  # type: ignore[arg-type]


def _run(sc: Scenario, route: Route, data: tuple[ArrayDataset, ArrayDataset]) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_one(sc, route, 0, *data, settings=_TINY)


def test_direct_trains_through_the_true_device(data: tuple[ArrayDataset, ArrayDataset]) -> None:
    sc = _scenario("few-points")
    out = _run(sc, _ROUTES["direct"], data)
    # 60 samples through 2 + 10 neurons reached the device (the twin routes send none)
    assert out["device_evaluations"] == 7 + 60 * 12
    assert out["device_evaluations_counted"] >= out["device_evaluations"]
    assert 0.0 <= out["accuracy_device"] <= 1.0
    twin = _run(sc, _ROUTES["twin"], data)
    assert twin["device_evaluations_counted"] == 7  # the sweep only


def test_direct_is_skipped_with_a_reason_on_a_device_without_gradients(
    data: tuple[ArrayDataset, ArrayDataset],
) -> None:
    out = _run(_scenario("slow-device"), _ROUTES["direct"], data)
    assert out["seed"] == 0 and "no gradients" in out["skipped"]
    # the suite keeps the skipped route, with its reason, and ranks the others
    sc = _scenario("slow-device", routes=("twin", "direct"), recommended="twin")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = run_realism(scenarios=[sc], seeds=(0,), epochs=1, hidden=2, max_train=40)
    twin, direct = m["scenarios"][0]["routes"]
    assert direct["name"] == "direct" and "no gradients" in direct["skipped"]
    assert direct["accuracy_device_mean"] is None
    assert m["scenarios"][0]["best_route"] == "twin"


def test_derivative_free_spends_its_candidates_on_the_true_device(
    data: tuple[ArrayDataset, ArrayDataset],
) -> None:
    route = dataclasses.replace(_ROUTES["derivative-free"], candidates=64, candidate_batch=10)
    out = _run(_scenario("few-points"), route, data)
    assert out["sizes"] == [64, 8, 10]  # its own small network, not the suite's
    opt = out["optimizer"]
    assert opt["candidates"] == 64
    # every candidate scored on 10 samples through 8 + 10 neurons of the true device
    assert opt["device_evaluations"] == 64 * 10 * 18
    assert out["device_evaluations"] == 7 + opt["device_evaluations"]
    assert out["device_evaluations_counted"] == out["device_evaluations"]


@pytest.mark.parametrize("name", ["physics-aware", "physics-aware+recharacterize"])
def test_the_slow_device_keeps_each_route_within_its_budget(
    data: tuple[ArrayDataset, ArrayDataset], name: str
) -> None:
    # 60 samples x 12 neurons = 720 rows per epoch: a budget of 600 stops training early
    sc = _scenario("slow-device", budget=600)
    out = _run(sc, dataclasses.replace(_ROUTES[name], recharacterize=0), data)
    assert out["within_budget"] and out["device_evaluations_counted"] <= 600
    assert out["device_evaluations_counted"] > 9  # it did train on the device
    assert out["charged_seconds"] == pytest.approx(out["device_evaluations_counted"] * 0.01)


def test_the_slow_device_cuts_the_derivative_free_candidates_to_the_budget(
    data: tuple[ArrayDataset, ArrayDataset],
) -> None:
    sc = _scenario("slow-device", budget=60_000)
    out = _run(sc, _ROUTES["derivative-free"], data)
    assert out["within_budget"] and out["device_evaluations_counted"] <= 60_000
    # ten generations of 32 on 10 samples each (60 000 // (320 * 18)), rather than 13
    # candidates on 256
    assert out["optimizer"]["candidates"] == 320
    assert out["optimizer"]["candidate_batch"] == 10
    tiny = _run(_scenario("slow-device", budget=100), _ROUTES["physics-aware"], data)
    assert "budget of 100" in tiny["skipped"]


def test_the_cheapest_route_within_the_spread_of_the_best() -> None:
    def e(name: str, acc: float, std: float, evals: float) -> dict:
        return {
            "name": name,
            "accuracy_device_mean": acc,
            "accuracy_device_std": std,
            "device_evaluations_mean": evals,
        }

    entries = [e("a", 0.96, 0.01, 1e6), e("b", 0.955, 0.002, 300), e("c", 0.90, 0.01, 9)]
    assert _cheapest_within_spread(entries) == "b"
    assert _cheapest_within_spread([e("a", 0.96, 0.001, 1e6), e("b", 0.95, 0.002, 3)]) == "a"
    # a route that varies a lot over seeds does not reach the best by its own spread
    assert _cheapest_within_spread([e("a", 0.96, 0.005, 1e6), e("b", 0.87, 0.09, 9)]) == "a"


def test_the_new_routes_refuse_bad_options() -> None:
    with pytest.raises(ValueError, match="candidates must be an int >= 1"):
        Route("x", mode="derivative-free", candidates=0)
    with pytest.raises(ValueError, match="takes no domain_penalty"):
        Route("x", mode="derivative-free", domain_penalty=1.0)
    with pytest.raises(ValueError, match="budget must be None or an int"):
        _scenario("slow-device", budget=0)
    slow = _scenario("slow-device")
    assert slow.budget and slow.seconds_per_evaluation > 0 and "direct" in slow.routes
