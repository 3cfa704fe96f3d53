from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from quasineuron.data import ArrayDataset, regression_1d
from quasineuron.errors import NonFiniteOutputWarning
from quasineuron.evaluation import evaluate, mode_name
from quasineuron.network.modes import Direct, PhysicsAware, Surrogate, TrueDevice
from quasineuron.network.variability import Variability

# class 2 is read as class 0 by the "device": device accuracy 6/8, surrogate 8/8
LABELS = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
DATA = ArrayDataset(torch.nn.functional.one_hot(LABELS, 3).double(), LABELS, name="toy")
DEVICE_MAP = torch.tensor([[1.0, 0, 0], [0, 1, 0], [1, 0, 0]], dtype=torch.float64)


class StandIn(torch.nn.Module):
    """Same forward signature as DeviceNetwork; the true device confuses class 2 with 0."""

    def __init__(self, offset: float = 0.0):
        super().__init__()
        self.w = torch.nn.Parameter(torch.eye(3, dtype=torch.float64))
        self.offset = offset
        self.calls: list[tuple[str, bool, bool]] = []

    def forward(self, x: torch.Tensor, *, mode=Surrogate()) -> torch.Tensor:  # noqa: B008
        self.calls.append((mode_name(mode), torch.is_grad_enabled(), self.training))
        if isinstance(mode, Surrogate):
            return x @ self.w
        return x @ DEVICE_MAP @ self.w + self.offset * torch.tensor([0.0, 0.0, 1.0]).double()

    def with_variability(self, v: Variability) -> StandIn:
        # odd seeds give a "chip" whose output 2 is offset by 2: every sample reads as class 2
        view = StandIn(offset=2.0 if v.seed % 2 else 0.0)
        view.w = self.w
        return view


def test_mode_names():
    assert [mode_name(m) for m in (Surrogate(), TrueDevice(), PhysicsAware(), Direct())] == [
        "surrogate",
        "device",
        "physics-aware",
        "direct",
    ]

    class MyFancyMode:
        pass

    @dataclasses.dataclass(frozen=True)
    class Named:
        name: str = "chip_b"

    assert (mode_name(MyFancyMode()), mode_name(Named()), mode_name(None)) == (
        "my-fancy-mode",
        "chip_b",
        "default",
    )


def test_accuracy_gap_and_confusion_per_mode():
    net = StandIn().train()
    report = evaluate(net, DATA, batch_size=3)
    assert report.accuracy == {"surrogate": 1.0, "device": 0.75}
    assert report.gap == pytest.approx(0.25)
    assert report.confusion["surrogate"] == [[3, 0, 0], [0, 3, 0], [0, 0, 2]]
    assert report.confusion["device"] == [[3, 0, 0], [0, 3, 0], [2, 0, 0]]
    assert (report.n_samples, report.n_classes, report.dataset) == (8, 3, "toy")
    assert set(report.samples_per_second) == {"surrogate", "device"}
    assert all(v > 0 for v in report.samples_per_second.values())
    # no_grad, eval mode while scoring; the train flag is restored afterwards
    assert net.calls and all(not grad and not training for _, grad, training in net.calls)
    assert net.training
    assert json.loads(json.dumps(report.to_dict()))["accuracy"]["device"] == 0.75


def test_gap_is_none_without_both_modes_and_duplicates_are_refused():
    report = evaluate(StandIn(), DATA, modes=(PhysicsAware(), Direct()))
    assert report.gap is None and set(report.accuracy) == {"physics-aware", "direct"}
    with pytest.raises(ValueError, match="duplicate report names"):
        evaluate(StandIn(), DATA, modes=(Direct(), Direct(adjoint=True)))


def test_variability_spread_over_draws_for_true_device_modes():
    report = evaluate(StandIn(), DATA, variability=Variability(gain_std=0.1, seed=0), n_draws=3)
    spread = report.variability
    assert [s["seed"] for s in spread["settings"]] == [0, 1, 2]
    assert set(spread["modes"]) == {"device"}  # the twin does not vary
    device = spread["modes"]["device"]
    assert device["accuracy"] == [0.75, 0.25, 0.75]
    assert device["min"] == 0.25 and device["max"] == 0.75
    assert device["mean"] == pytest.approx(1.75 / 3)
    json.dumps(report.to_dict())


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="integer labels"):
        evaluate(StandIn(), regression_1d(4), modes=(Surrogate(),))
    with pytest.raises(TypeError, match="with_variability"):
        evaluate(torch.nn.Linear(3, 3), DATA, modes=(None,), variability=Variability())
    with pytest.raises(ValueError, match="n_draws needs variability"):
        evaluate(StandIn(), DATA, n_draws=2)


def test_plain_module_with_mode_none():
    net = torch.nn.Linear(3, 3).double()
    with torch.no_grad():
        net.weight.copy_(torch.eye(3))
        net.bias.zero_()
    report = evaluate(net, DATA, modes=(None,))
    assert report.accuracy == {"default": 1.0} and report.gap is None


class Overflowing(StandIn):
    """The true device gives inf in the right class's logit of rows 1 and 4, NaN in row 6."""

    def forward(self, x: torch.Tensor, *, mode=Surrogate()) -> torch.Tensor:  # noqa: B008
        out = x @ self.w
        if isinstance(mode, TrueDevice):
            out = out.clone()
            out[1, LABELS[1]] = out[4, LABELS[4]] = torch.inf  # argmax would say "right"
            out[6, 0] = torch.nan
        return out


def test_non_finite_rows_are_counted_scored_wrong_and_warned_once_per_mode():
    with pytest.warns(NonFiniteOutputWarning, match="'device': 3 of 8 rows of 'toy'") as rec:
        report = evaluate(Overflowing(), DATA)
    assert len(rec) == 1
    assert report.nonfinite_rows == {"surrogate": 0, "device": 3}
    assert report.accuracy == {"surrogate": 1.0, "device": 5 / 8}
    # the confusion matrix holds the rows that have a prediction
    assert report.confusion["device"] == [[2, 0, 0], [0, 1, 0], [0, 0, 2]]
    assert json.loads(json.dumps(report.to_dict()))["nonfinite_rows"]["device"] == 3


def test_non_finite_rows_under_variability_are_counted_per_draw():
    class Chip(Overflowing):
        def with_variability(self, v: Variability) -> Chip:
            return Chip()

    with pytest.warns(NonFiniteOutputWarning) as rec:
        report = evaluate(Chip(), DATA, variability=Variability(gain_std=0.1), n_draws=2)
    assert [str(w.message).split(":")[0] for w in rec] == ["mode 'device'"] * 2
    assert "6 of 16 rows of 'toy' over the variability draws" in str(rec[1].message)
    device = report.variability["modes"]["device"]
    assert device["nonfinite_rows"] == [3, 3] and device["accuracy"] == [5 / 8, 5 / 8]
