from __future__ import annotations

import pytest
import torch
from network_devices import tanh_device, wrong_twin

from quasineuron.network import DeviceNetwork, PhysicsAware, Surrogate, TrueDevice, Variability


@pytest.fixture
def net():
    return DeviceNetwork(tanh_device(), (6, 5, 3), twin=wrong_twin(), dtype=torch.float64)


@pytest.fixture
def x(gen):
    return torch.rand(4, 6, generator=gen, dtype=torch.float64)


def test_zero_variability_is_the_nominal_network(net, x):
    view = net.with_variability(Variability(seed=3))
    assert torch.equal(view(x, mode=TrueDevice()), net(x, mode=TrueDevice()))


def test_deviations_are_fixed_per_view_and_seeded(net, x):
    v = Variability(gain_std=0.1, offset_std=0.05, input_gain_std=0.1, seed=1)
    view = net.with_variability(v)
    y = view(x, mode=TrueDevice())
    assert not torch.allclose(y, net(x, mode=TrueDevice()))
    assert torch.equal(y, view(x, mode=TrueDevice()))  # fixed per instance, no noise
    assert torch.equal(y, net.with_variability(v)(x, mode=TrueDevice()))
    assert not torch.equal(
        y, net.with_variability(Variability(gain_std=0.1, seed=2))(x, mode=TrueDevice())
    )
    assert view.variability == v and net.variability is None


def test_each_neuron_gets_its_own_output_gain(net, x):
    view = net.with_variability(Variability(gain_std=0.2, seed=0))
    with torch.no_grad():
        h_nom = net.layers[0](x, mode=TrueDevice())
        h_dev = view.layers[0](x, mode=TrueDevice(), deviation=view._deviations[0])
    ratio = h_dev / h_nom  # (batch, n_neurons): constant down a column, differs across columns
    torch.testing.assert_close(ratio, ratio[:1].expand_as(ratio))
    assert float(ratio[0].std()) > 0.01


def test_output_noise_is_fresh_on_every_call(net, x):
    view = net.with_variability(Variability(noise_std=0.01, seed=0))
    a, b = view(x, mode=TrueDevice()), view(x, mode=TrueDevice())
    assert not torch.equal(a, b)
    torch.testing.assert_close(a, b, atol=0.2, rtol=0)


def test_variability_leaves_the_twin_nominal_and_shares_weights(net, x):
    view = net.with_variability(Variability(gain_std=0.3, noise_std=0.1, seed=0))
    assert torch.equal(view(x, mode=Surrogate()), net(x, mode=Surrogate()))
    assert view.layers[0].map.weight is net.layers[0].map.weight
    view(x, mode=PhysicsAware()).sum().backward()
    assert net.layers[0].map.weight.grad is not None


def test_negative_spread_is_rejected():
    with pytest.raises(ValueError, match="gain_std"):
        Variability(gain_std=-0.1)
