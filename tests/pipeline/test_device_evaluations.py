"""metrics.json's device_evaluations: the drive rows a run sends to the true device, by stage."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from quasineuron.config import parse_config
from quasineuron.pipeline import run_pipeline

# A device of the test's own: a tanh neuron that logs the batch size of every call it gets,
# so the rows are counted a second time, independently of the library's counter.
COUNTED_DEVICE = """
import torch
from quasineuron.devices.formula import FormulaDevice
from quasineuron.devices.base import Box

CALLS: list[int] = []


class Logged(FormulaDevice):
    def forward(self, u):
        CALLS.append(int(u.shape[0]))
        return super().forward(u)


def make():
    dev = Logged(torch.tanh, n_in=1, n_out=1, domain=Box(low=(-3.0,), high=(3.0,)), name="logged")
    CALLS.clear()  # the constructor's own contract probe is not the run's
    return dev
"""


def _config(mode: str) -> dict:
    return {
        "name": "counted",
        "device": {"name": "counted_device_mod:make"},
        "sweep": {"points": 21},
        "twin": {"kind": "spline", "policy": "clamp"},
        "data": {"name": "digits", "limit_train": 100},
        "network": {"hidden": [3]},
        "training": {"mode": mode, "epochs": 1, "batch_size": 20, "lr": 0.003},
        "evaluation": {"modes": ["surrogate", "device"], "baseline_mlp": False},
    }


@pytest.fixture
def logged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    folder = tmp_path / "mod"
    folder.mkdir()
    (folder / "counted_device_mod.py").write_text(textwrap.dedent(COUNTED_DEVICE))
    monkeypatch.syspath_prepend(str(folder))
    sys.modules.pop("counted_device_mod", None)
    import counted_device_mod  # type: ignore[import-not-found]

    yield counted_device_mod
    sys.modules.pop("counted_device_mod", None)


@pytest.mark.parametrize("mode", ["surrogate", "physics-aware"])
def test_device_evaluations_equal_the_rows_the_device_received(
    tmp_path: Path, logged, mode: str
) -> None:
    metrics = run_pipeline(
        parse_config(_config(mode)),
        tmp_path / "run",
        progress=False,
        allow_import=("counted_device_mod",),
    )
    counts = metrics["device_evaluations"]
    # every row the device received is in the total, and nothing else
    assert counts["total"] == sum(logged.CALLS) > 0
    parts = counts["sweep"] + counts["twin_check"] + counts["training"] + counts["other"]
    assert counts["total"] == parts + sum(counts["evaluation"].values())
    # hand counts: the sweep evaluates its 21 points once
    assert counts["sweep"] == 21
    # scoring on the device sends one row per test image and neuron (3 hidden + 10 outputs)
    n_test = metrics["evaluation"]["n_samples"]
    neurons = sum(metrics["network"]["sizes"][1:])
    assert counts["evaluation"] == {"surrogate": 0, "device": n_test * neurons}
    if mode == "surrogate":  # training on the twin alone never touches the device
        assert counts["training"] == 0
    else:  # physics-aware: the forward pass of each of the 90 training samples (100 less the
        # validation split) runs on the device, at least once
        assert counts["training"] >= 90 * neurons
