"""A run's metrics and summary say how many drives left the characterised domain."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from quasineuron.config import DeviceConfig, parse_config
from quasineuron.devices.base import Box
from quasineuron.devices.formula import FormulaDevice
from quasineuron.errors import OutOfDomainWarning
from quasineuron.pipeline import STOCHASTIC_PASSES, _domain_sentences, run_pipeline


def _tiny(limit: float, policy: str = "clamp"):
    # a tanh characterised on [-limit, limit] only: with a small limit, drives leave it
    return parse_config(
        {
            "name": "tiny-domain",
            "device": {"name": "tanh", "options": {"limit": limit}},
            "sweep": {"points": 21},
            "twin": {"kind": "spline", "policy": policy},
            "data": {"name": "digits", "limit_train": 100},
            "network": {"hidden": [4]},
            "training": {"epochs": 1, "batch_size": 50},
            "evaluation": {"modes": ["surrogate", "device"], "baseline_mlp": False},
        }
    )


def test_metrics_and_summary_report_drives_outside_the_domain(tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = run_pipeline(_tiny(0.2), tmp_path / "run", progress=False)
    ours = [w for w in caught if issubclass(w.category, OutOfDomainWarning)]
    assert len(ours) == 1  # the run warns once, with the count
    rows = m["twin"]["out_of_domain_rows"]
    assert rows["test"] > 0
    assert f"the twin clamped {rows['training'] + rows['test']} drive rows" in str(ours[0].message)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    frac = saved["domain"]["outside_fraction"]["test"]
    assert set(frac) == {"surrogate", "device"}
    assert len(frac["device"]["layers"]) == 2
    hidden = frac["device"]["layers"][0]
    assert 0.01 < hidden <= 1.0 and frac["device"]["all"] > 0
    assert saved["domain"]["boxes"][0] == {"low": [-0.2], "high": [0.2]}
    assert m["passes"] == 1 and "device_std" not in m["accuracy"]
    summary = (tmp_path / "run" / "summary.md").read_text()
    assert f"{100 * hidden:.1f} % of hidden-layer drives" in summary or (
        "of hidden-layer drives" in summary  # the surrogate pass may speak for the layer
    )
    assert "fell outside the characterised domain [-0.2, 0.2]" in summary
    assert "the twin clamped them" in summary


def test_a_run_inside_the_domain_says_nothing(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutOfDomainWarning)
        m = run_pipeline(_tiny(50.0), tmp_path / "run", progress=False)
    assert m["domain"]["outside_fraction"]["test"]["device"]["all"] == 0.0
    assert "outside the characterised domain" not in (tmp_path / "run" / "summary.md").read_text()


def _metrics(fractions: list[float], policy: str) -> dict:
    box = {"low": [-1.0, 0.0], "high": [1.0, 2.0]}
    ext = {"min": [-3.0, 0.5], "max": [0.5, 1.0]}
    return {
        "domain": {
            "policy": policy,
            "boxes": [box] * len(fractions),
            "outside_fraction": {"test": {"device": {"layers": fractions}}},
            "extremes": {"test": {"device": [ext] * len(fractions)}},
        }
    }


def test_the_sentences_name_the_layer_box_extremes_and_policy():
    text = _domain_sentences(_metrics([0.123, 0.01, 0.5], "warn"))
    assert len(text) == 2  # exactly 1 % is not above the note level
    assert text[0].startswith("12.3 % of hidden-layer-1 drives (mode `device`) fell outside")
    assert "domain [-1, 1] × [0, 2] (drives seen: [-3, 0.5] × [0.5, 1])" in text[0]
    assert "the twin extrapolated there" in text[0]
    assert text[1].startswith("50.0 % of output-layer drives")
    assert "the twin clamped them" in _domain_sentences(_metrics([0.5, 0.0], "clamp"))[0]
    assert "hidden-layer drives" in _domain_sentences(_metrics([0.5, 0.0], "clamp"))[0]


_NOISE = torch.Generator().manual_seed(0)


def _noisy_tanh(u: torch.Tensor) -> torch.Tensor:
    noise = torch.randn(u.shape, generator=_NOISE, dtype=torch.float64).to(u)
    return torch.tanh(u) + 0.5 * noise


def noisy_tanh() -> FormulaDevice:
    """A tanh with output noise, declared stochastic (a device spec for the run below)."""
    dev = FormulaDevice(_noisy_tanh, n_in=1, n_out=1, domain=Box((-6.0,), (6.0,)), name="noisy")
    dev.stochastic = True
    return dev


def test_a_stochastic_device_is_scored_over_passes_with_its_std(tmp_path: Path) -> None:
    cfg = _tiny(6.0).model_copy(update={"device": DeviceConfig(name=f"{__name__}:noisy_tanh")})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OutOfDomainWarning)
        m = run_pipeline(cfg, tmp_path / "run", progress=False, allow_import=(__name__,))
    assert m["passes"] == STOCHASTIC_PASSES
    assert m["accuracy"]["device_std"] > 0 and "surrogate_std" not in m["accuracy"]
    assert len(m["evaluation"]["accuracy_passes"]["device"]) == STOCHASTIC_PASSES
    assert "std over 5 passes" in (tmp_path / "run" / "summary.md").read_text()
