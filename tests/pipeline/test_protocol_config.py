"""The run config: network kinds, stages, windows and seeds, validated where they enter."""

from __future__ import annotations

import warnings

import pytest

from quasineuron.config import ConfigError, config_hash, parse_config

WUXING = {"network": {"kind": "wuxing", "sizes": [64, 12, 10]}}


def _error(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return str(info.value)


def test_a_wuxing_network_with_a_device_spec_is_refused() -> None:
    msg = _error({**WUXING, "device": {"name": "tanh"}})
    assert "[device]" in msg and "Wuxing" in msg


def test_wuxing_options_on_a_device_network_are_refused() -> None:
    msg = _error({"network": {"model": "MODEL1"}})
    assert "network.model" in msg and "kind = 'wuxing'" in msg
    msg = _error({"network": {"kind": "wuxing", "model": "MODEL1", "hidden": [4]}})
    assert "network.hidden" in msg and "device network" in msg


def test_a_wuxing_network_needs_model_or_sizes_and_its_own_wiring() -> None:
    assert "exactly one of model" in _error({"network": {"kind": "wuxing"}})
    msg = _error({"network": {"kind": "wuxing", "model": "MODEL1", "wiring": "dense"}})
    assert "'one-to-one'" in msg


def test_a_stage_needs_exactly_one_budget() -> None:
    msg = _error({**WUXING, "training": {"stages": [{"method": "bptt"}]}})
    assert "exactly one budget" in msg
    msg = _error({**WUXING, "training": {"stages": [{"epochs": 1, "samples": 10}]}})
    assert "exactly one budget" in msg


def test_a_stage_method_must_fit_the_network_kind() -> None:
    msg = _error({**WUXING, "training": {"stages": [{"method": "surrogate", "epochs": 1}]}})
    assert "device-network mode" in msg
    msg = _error({"training": {"stages": [{"method": "method2", "epochs": 1}]}})
    assert "trains a Wuxing network" in msg
    msg = _error({"training": {"stages": [{"epochs": 1, "options": {"eta": 1.0}}]}})
    assert "options of a Wuxing method" in msg


def test_the_window_is_checked() -> None:
    msg = _error({"network": {**WUXING["network"], "window": {"T": 1.0, "dt": 2.0}}})
    assert "dt = 2.0 is longer than the window" in msg
    assert "unknown key 'network.window.steps'" in _error(
        {"network": {**WUXING["network"], "window": {"steps": 3}}}
    )


def test_old_spellings_parse_with_a_warning_naming_the_new_one() -> None:
    with pytest.warns(DeprecationWarning, match="write 'fan-in'"):
        cfg = parse_config({"network": {"wiring": "fan_in"}})
    assert cfg.network.wiring == "fan-in"
    with pytest.warns(DeprecationWarning, match="write 'cross-entropy'"):
        old = parse_config({"training": {"loss": "cross_entropy"}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = parse_config({"training": {"loss": "cross-entropy"}})
    assert config_hash(old) == config_hash(new)


def test_a_resolved_config_parses_again_to_the_same_hash() -> None:
    for data in (WUXING, {"network": {"hidden": [4]}}):
        cfg = parse_config(data)
        again = parse_config(cfg.model_dump(mode="json"))
        assert config_hash(again) == config_hash(cfg)


def test_seeds_must_differ() -> None:
    assert "repeats a seed" in _error({"experiment": {"seeds": [0, 1, 0]}})


def test_no_stages_means_one_stage_from_training() -> None:
    cfg = parse_config({"training": {"epochs": 3}})
    (stage,) = cfg.stages()
    assert stage.epochs == 3 and stage.samples is None


def test_every_wuxing_example_config_builds_its_methods() -> None:
    from pathlib import Path

    from quasineuron.config import load_config
    from quasineuron.pipeline import _wuxing_method

    examples = sorted((Path(__file__).parents[2] / "examples").glob("wuxing-model1-*.toml"))
    assert len(examples) == 7
    for path in examples:
        cfg = load_config(path)
        assert cfg.network.kind == "wuxing" and cfg.network.model == "MODEL1"
        for i, stage in enumerate(cfg.stages()):
            _wuxing_method(cfg, stage, i)  # an option the method does not take raises here
