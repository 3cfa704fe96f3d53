"""evaluate() reports the drives against the domain, and the spread a noisy device gives."""

from __future__ import annotations

import json

import pytest
import torch

from quasineuron.data import ArrayDataset
from quasineuron.devices.base import AbstractDevice, Box
from quasineuron.devices.formula import FormulaDevice
from quasineuron.evaluation import evaluate, is_stochastic
from quasineuron.network import DeviceNetwork, Surrogate, TrueDevice, Variability

F64 = torch.float64
X = torch.tensor([[0.1, 0.2], [0.9, 0.3], [-0.8, 0.1], [0.0, -0.6]], dtype=F64)
DATA = ArrayDataset(X, torch.tensor([0, 1, 0, 1]), name="four")


def _tanh(limit: float) -> FormulaDevice:
    return FormulaDevice(torch.tanh, n_in=1, n_out=1, domain=Box((-limit,), (limit,)))


def _forced_net(twin: AbstractDevice | None = None) -> DeviceNetwork:
    """Layer 0 drives are 2x; layer 1's neuron 0 is always driven at 5, neuron 1 at 0."""
    net = DeviceNetwork(_tanh(1.0), (2, 2, 2), twin=twin, readout_affine=False, dtype=F64)
    with torch.no_grad():
        net.layers[0].map.weight.copy_(2 * torch.eye(2, dtype=F64))
        net.layers[0].map.bias.zero_()
        net.layers[1].map.weight.zero_()
        net.layers[1].map.bias.copy_(torch.tensor([[5.0], [0.0]], dtype=F64))
    return net


def test_outside_fractions_and_extremes_per_layer_are_exact():
    # drives of layer 0: 2x = .2 .4 | 1.8 .6 | -1.6 .2 | 0 -1.2 -> 3 of 8 outside [-1, 1]
    # layer 1: neuron 0 at 5 for every sample -> 4 of 8 outside
    report = evaluate(_forced_net(), DATA, modes=(TrueDevice(),), batch_size=3, passes=2)
    dev = report.domain["device"]
    l0, l1 = dev["layers"]
    assert (l0["outside_fraction"], l1["outside_fraction"]) == (3 / 8, 4 / 8)
    assert dev["outside_fraction"] == 7 / 16
    assert (dev["n_outside"], dev["n_rows"]) == (14, 32)  # two passes of 16 rows
    assert l0["min"] == pytest.approx([-1.6]) and l0["max"] == pytest.approx([1.8])
    assert l1["min"] == pytest.approx([0.0]) and l1["max"] == pytest.approx([5.0])
    assert (l0["low"], l0["high"]) == ([-1.0], [1.0])
    assert json.loads(json.dumps(report.to_dict()))["domain"]["device"]["layers"][1][
        "outside_fraction"
    ] == pytest.approx(0.5)


def test_the_twins_box_is_the_domain_when_there_is_a_twin():
    # the twin was characterised on [-2, 2]: layer 0's drives all lie inside it
    report = evaluate(_forced_net(twin=_tanh(2.0)), DATA, modes=(Surrogate(), TrueDevice()))
    for mode in ("surrogate", "device"):
        assert [e["outside_fraction"] for e in report.domain[mode]["layers"]] == [0.0, 0.5]


def test_nan_drives_count_as_outside():
    net = _forced_net()
    with torch.no_grad():
        net.layers[1].map.bias.copy_(torch.tensor([[float("nan")], [0.0]], dtype=F64))
    with pytest.warns(Warning, match="non-finite"):
        report = evaluate(net, DATA, modes=(TrueDevice(),))
    l1 = report.domain["device"]["layers"][1]
    assert l1["outside_fraction"] == 0.5 and l1["min"] == [0.0] and l1["max"] == [0.0]


class NoisyTanh(AbstractDevice):
    """tanh(u) plus large output noise from its own generator: a stochastic device."""

    differentiable = True
    stochastic = True

    def __init__(self) -> None:
        super().__init__()
        self.n_in, self.n_out, self.domain, self.name = 1, 1, Box((-3.0,), (3.0,)), "noisy"
        self.gen = torch.Generator().manual_seed(0)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(u.shape, generator=self.gen, dtype=F64).to(u)
        return torch.tanh(u) + 2.0 * noise


def _digits_like(n: int = 64) -> ArrayDataset:
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(n, 5, generator=gen, dtype=F64)
    return ArrayDataset(x, (x[:, 0] > 0.5).long(), name="rand")


def test_a_noisy_device_gets_a_spread_over_passes_and_the_twin_one_pass():
    net = DeviceNetwork(NoisyTanh(), (5, 4, 2), twin=_tanh(3.0), dtype=F64, seed=0)
    assert is_stochastic(net)
    report = evaluate(net, _digits_like(), passes=5)
    accs = report.accuracy_passes["device"]
    assert len(accs) == 5 and len(set(accs)) > 1
    assert report.accuracy["device"] == pytest.approx(sum(accs) / 5)
    assert report.accuracy_std["device"] == pytest.approx(
        torch.tensor(accs, dtype=F64).std(correction=0).item()
    )
    assert report.accuracy_std["device"] > 0
    assert len(report.accuracy_passes["surrogate"]) == 1
    assert report.accuracy_std["surrogate"] == 0.0
    assert report.to_dict()["accuracy_std"]["device"] > 0


def test_a_deterministic_device_has_no_spread():
    net = DeviceNetwork(_tanh(3.0), (5, 4, 2), dtype=F64, seed=0)
    assert not is_stochastic(net)
    one = evaluate(net, _digits_like(), modes=(TrueDevice(),))
    assert one.accuracy_passes["device"] == [one.accuracy["device"]]
    assert one.accuracy_std["device"] == 0.0
    three = evaluate(net, _digits_like(), modes=(TrueDevice(),), passes=3)
    assert three.accuracy_passes["device"] == [one.accuracy["device"]] * 3
    assert three.accuracy_std["device"] == 0.0


def test_output_noise_of_a_variability_view_makes_a_network_stochastic():
    net = DeviceNetwork(_tanh(3.0), (5, 4, 2), dtype=F64, seed=0)
    assert not is_stochastic(net.with_variability(Variability(gain_std=0.1)))
    assert is_stochastic(net.with_variability(Variability(noise_std=0.1)))


@pytest.mark.parametrize("passes", [0, -1, 1.5, True])
def test_bad_passes_are_refused(passes):
    with pytest.raises(ValueError, match="passes must be an int >= 1"):
        evaluate(_forced_net(), DATA, passes=passes)
