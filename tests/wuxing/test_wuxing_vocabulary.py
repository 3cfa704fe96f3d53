"""One spelling for "time window vs steady state" across methods, scoring and the run config."""

from __future__ import annotations

import warnings

import pytest
import torch

from quasineuron._names import NAMES, canonical
from quasineuron.config import parse_config
from quasineuron.wuxing import (
    Backprop,
    Method1,
    Method2,
    Mixed,
    SimConfig,
    TargetCoding,
    WuxingNetwork,
    evaluate,
    one_to_one_wiring,
)


def test_the_two_names_are_registered_with_their_old_spellings() -> None:
    assert NAMES["simulation"] == ("window", "steady-state")
    with pytest.warns(DeprecationWarning, match="'steady-state'"):
        assert canonical("simulation", "steady") == "steady-state"
    with pytest.warns(DeprecationWarning, match="'window'"):
        assert canonical("simulation", "time") == "window"


@pytest.mark.parametrize(
    ("make", "field", "old", "new"),
    [
        (lambda v: Method2(estimate=v), "estimate", "steady", "steady-state"),
        (lambda v: Method1(estimate=v), "estimate", "steady", "steady-state"),
        (lambda v: Mixed(estimate=v), "estimate", "steady", "steady-state"),
        (lambda v: Backprop(through=v), "through", "time", "window"),
        (lambda v: Backprop(through=v), "through", "steady", "steady-state"),
    ],
)
def test_methods_take_the_one_spelling_and_respell_the_old_one(
    make: object, field: str, old: str, new: str
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert getattr(make(new), field) == new  # type: ignore[operator]
    with pytest.warns(DeprecationWarning, match=f"{old!r} is an old spelling"):
        method = make(old)  # type: ignore[operator]
    assert getattr(method, field) == new and method == make(new)  # type: ignore[operator]


def test_an_unknown_spelling_names_the_choices() -> None:
    with pytest.raises(ValueError, match="Backprop.through.*'window', 'steady-state'"):
        Backprop(through="steady_state")
    with pytest.raises(ValueError, match="Method2.estimate"):
        Method2(estimate="windows")


def test_scoring_and_the_config_take_the_same_names() -> None:
    wiring = one_to_one_wiring((4, 3, 2), links=(6, 3), seed=0)
    net = WuxingNetwork(wiring, config=SimConfig(T=1.0))
    x, y = torch.rand(5, 4), torch.tensor([0, 1, 0, 1, 1])
    new = evaluate(net, x, y, mode="steady-state")
    with pytest.warns(DeprecationWarning):
        assert evaluate(net, x, y, mode="steady") == new
    assert evaluate(net, x, y, mode="window") == evaluate(net, x, y)
    with pytest.raises(ValueError, match="mode"):
        evaluate(net, x, y, mode="surrogate")

    data = {"network": {"kind": "wuxing", "sizes": [64, 12, 10]}}
    assert parse_config(data).training.validate_on == "steady-state"
    with pytest.warns(DeprecationWarning, match="training.validate_on = 'time'"):
        cfg = parse_config({**data, "training": {"validate_on": "time"}})
    assert cfg.training.validate_on == "window"


def test_mixed_records_the_target_and_estimate_its_inner_rules_run_with() -> None:
    # the inner rules run with the mixed method's target and estimate; a run's record is the
    # method's repr, so the inner rules must hold those and not their own defaults
    target = TargetCoding(kind="softmax", beta=20.0, error_scale=0.05)
    m = Mixed(method1=Method1(eta=2.0), method2=Method2(eta=20.0), target=target)
    assert m.method1.target == target and m.method2.target == target
    assert m.method1.estimate == m.estimate == m.method2.estimate
    assert m.method1.eta == 2.0 and m.method2.eta == 20.0
    assert "error_scale=1.0" not in repr(m)
