"""The realism suite's tools: bounded routes, the slope-matched learning rate, the twin's kind."""

from __future__ import annotations

import math

import pytest
import torch

from quasineuron.data import ArrayDataset
from quasineuron.devices.base import Box
from quasineuron.devices.formula import FormulaDevice
from quasineuron.realism import ROUTES, Route, Scenario, _Settings, _twin, peak_slope, run_one


def _device(fn, low: float = -3.0, high: float = 3.0) -> FormulaDevice:  # type: ignore[no-untyped-def]
    return FormulaDevice(fn, n_in=1, n_out=1, domain=Box((low,), (high,)), probe=False)


def _nan_above_2(u: torch.Tensor) -> torch.Tensor:
    y = torch.tanh(u)
    return torch.where(u > 2.0, torch.full_like(y, math.nan), y)


def _data(n: int = 60, seed: int = 0) -> ArrayDataset:
    # inputs large enough that unbounded drives reach the failing region above u = 2
    g = torch.Generator().manual_seed(seed)
    x = 3.0 * torch.randn(n, 8, generator=g, dtype=torch.float64)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    return ArrayDataset(x.float(), y, name="toy")


def test_peak_slope_measures_the_steepest_slope_of_the_twin() -> None:
    assert peak_slope(_device(lambda u: torch.tanh(3.0 * u))) == pytest.approx(3.0, rel=1e-3)
    assert peak_slope(_device(torch.tanh)) == pytest.approx(1.0, rel=1e-3)
    # NaN outputs (a failing region) are ignored, not propagated
    assert peak_slope(_device(_nan_above_2)) == pytest.approx(1.0, rel=1e-3)


def test_peak_slope_refuses_a_device_with_two_drives() -> None:
    dev = FormulaDevice(lambda u: u[..., :1], n_in=2, n_out=1, domain=Box((0, 0), (1, 1)))
    with pytest.raises(ValueError, match="one-drive twin"):
        peak_slope(dev)


def test_a_route_and_a_scenario_refuse_unknown_choices() -> None:
    with pytest.raises(ValueError, match="bounded_drives must be"):
        Route("x", bounded_drives="hidden")
    with pytest.raises(ValueError, match="twin_kind must be"):
        Scenario("s", "d", lambda seed: _device(torch.tanh), twin_kind="cubic")


@pytest.mark.filterwarnings("ignore")
def test_match_slope_divides_the_learning_rate_by_the_twins_peak_slope() -> None:
    steep = Scenario("steep", "d", lambda seed: _device(lambda u: torch.tanh(4.0 * u)), grid=61)
    data = _data()
    s = _Settings(hidden=3, epochs=1)
    plain = run_one(steep, Route("p"), 0, data, data, settings=s)
    matched = run_one(steep, Route("m", match_slope=True), 0, data, data, settings=s)
    assert plain["lr"] == s.lr
    assert matched["lr"] == pytest.approx(s.lr / 4.0, rel=1e-2)


@pytest.mark.filterwarnings("ignore")
def test_bounding_every_layer_keeps_every_drive_out_of_a_failing_region() -> None:
    # the twin's validity mask shrinks the box to u <= 2; bounded drives stay inside it, so
    # the true device never returns NaN at evaluation, where output-only bounding lets the
    # hidden drives through
    sc = Scenario("nan", "d", lambda seed: _device(_nan_above_2), grid=61)
    data = _data()
    s = _Settings(hidden=4, epochs=1)
    by_name = {r.name: r for r in ROUTES}
    loose = run_one(sc, Route("o", bounded_drives="output"), 0, data, data, settings=s)
    bounded = run_one(sc, by_name["twin+bounded"], 0, data, data, settings=s)
    assert loose["nonfinite_rows"] > 0
    assert bounded["nonfinite_rows"] == 0 and bounded["outside_fraction"] == 0.0


@pytest.mark.slow  # the MLP fit takes 5-15 s on a busy machine
def test_a_noisy_sweep_gets_a_smoother_twin_from_an_mlp_than_from_a_spline() -> None:
    from quasineuron.devices.wrappers import Noisy

    noisy = Noisy(_device(torch.tanh), std=0.05, seed=0)
    spline = Scenario("n", "d", lambda seed: noisy, grid=101, repeats=2)
    mlp = Scenario("n", "d", lambda seed: noisy, grid=101, repeats=2, twin_kind="mlp")
    spline_twin, _ = _twin(noisy, spline)
    mlp_twin, _ = _twin(noisy, mlp)
    # tanh's slope is at most 1: the spline's slopes follow the noise, the MLP's do not
    assert peak_slope(spline_twin) > 1.5
    assert peak_slope(mlp_twin) < 1.3
