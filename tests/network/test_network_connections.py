from __future__ import annotations

import pytest
import torch
from network_devices import almost_neuron, ports_device, raw_device, tanh_device

from quasineuron.network import (
    Dense,
    DeviceLayer,
    FanIn,
    Linear,
    Ports,
    Quadratic,
    Raw,
    Sparse,
    TrueDevice,
    TwoDrive,
)

F64 = torch.float64


@pytest.mark.parametrize(
    ("device", "connection", "wiring", "n_drives"),
    [
        (tanh_device, Linear(), Dense(), 1),
        (tanh_device, Linear(bias=False), Sparse(0.3), 1),
        (lambda: almost_neuron(0.1), TwoDrive(), Dense(), 2),
        (tanh_device, Quadratic(), FanIn(3), 1),
        (lambda: raw_device(3), Raw(), FanIn(3), 6),
        (ports_device, Linear(), Ports(), 3),
        (ports_device, Linear(), Ports(adder=2), 3),
    ],
)
def test_every_connection_gives_drives_and_features_of_the_right_shape(
    device, connection, wiring, n_drives, gen
):
    layer = DeviceLayer(10, 4, device=device(), connection=connection, wiring=wiring, dtype=F64)
    x = torch.rand(5, 10, generator=gen, dtype=F64)
    assert layer.drives(x).shape == (5, 4, n_drives)
    assert layer(x, mode=TrueDevice()).shape == (5, 4)


def test_layer_can_pass_on_several_device_outputs(gen):
    layer = DeviceLayer(6, 4, device=ports_device(), output=None, dtype=F64)
    x = torch.rand(3, 6, generator=gen, dtype=F64)
    y = layer(x, mode=TrueDevice())
    assert y.shape == (3, 8)
    full = ports_device()(layer.drives(x).reshape(12, 3)).reshape(3, 8)
    torch.testing.assert_close(y, full)


def test_two_drive_with_eps_zero_is_a_plain_mlp_layer(gen):
    layer = DeviceLayer(7, 5, device=almost_neuron(0.0), connection=TwoDrive(), dtype=F64)
    x = torch.randn(4, 7, generator=gen, dtype=F64)
    a, b = layer.map.weight, layer.map.bias
    torch.testing.assert_close(layer(x, mode=TrueDevice()), torch.tanh(x @ a + b))


def test_two_drive_drives_are_xA_and_x2A_with_one_matrix(gen):
    layer = DeviceLayer(7, 5, device=almost_neuron(0.3), connection=TwoDrive(), dtype=F64)
    x = torch.randn(4, 7, generator=gen, dtype=F64)
    a, b = layer.map.weight, layer.map.bias
    u = layer.drives(x)
    torch.testing.assert_close(u[..., 0], x @ a + b)
    torch.testing.assert_close(u[..., 1], (x**2) @ a)
    torch.testing.assert_close(
        layer(x, mode=TrueDevice()), torch.tanh(x @ a + b - 0.3 * (x**2) @ a)
    )


def test_quadratic_drive_matches_the_formula(gen):
    layer = DeviceLayer(3, 2, device=tanh_device(), connection=Quadratic(), dtype=F64)
    x = torch.randn(4, 3, generator=gen, dtype=F64)
    m = layer.map
    q = m.quad * m.quad_mask  # Dense wiring: index = (0, 1, 2) for every neuron
    expected = x @ m.weight + m.bias
    for n in range(2):
        for i in range(3):
            for j in range(i, 3):
                expected[:, n] += q[n, i, j] * x[:, i] * x[:, j]
    torch.testing.assert_close(layer.drives(x)[..., 0], expected)
    assert bool((m.quad_mask[:, 1, 0] == 0).all())  # i > j terms are not used


def test_quadratic_refuses_large_fan_in():
    with pytest.raises(ValueError, match=r"max_fan_in=16.*FanIn"):
        DeviceLayer(784, 4, device=tanh_device(), connection=Quadratic())


def test_raw_hands_the_device_sorted_inputs_then_weights(gen):
    layer = DeviceLayer(9, 4, device=raw_device(2), connection=Raw(), wiring=FanIn(2), dtype=F64)
    x = torch.randn(3, 9, generator=gen, dtype=F64)
    u = layer.drives(x)
    for n in range(4):
        rows = torch.nonzero(layer.mask[:, n]).flatten()  # increasing order
        torch.testing.assert_close(u[:, n, :2], x[:, rows])
        torch.testing.assert_close(u[:, n, 2:], layer.map.weight[n].expand(3, 2))


def test_raw_needs_fixed_fan_in():
    with pytest.raises(ValueError, match=r"FanIn\(2\)"):
        DeviceLayer(9, 4, device=raw_device(2), connection=Raw(), wiring=Sparse(0.3))


def test_connection_that_cannot_feed_the_device_is_rejected():
    with pytest.raises(ValueError, match="TwoDrive"):
        DeviceLayer(4, 2, device=tanh_device(), connection=TwoDrive())


def test_initial_drives_lie_in_the_device_domain(gen):
    layer = DeviceLayer(784, 50, device=tanh_device(), wiring=Sparse(0.2))
    x = torch.rand(64, 784, generator=gen)
    inside = layer.device.domain.contains(layer.drives(x).reshape(-1, 1))
    assert float(inside.float().mean()) > 0.95


@pytest.mark.parametrize(
    ("device", "connection", "wiring"),
    [
        (tanh_device, Linear(), Sparse(0.3)),
        (lambda: almost_neuron(0.1), TwoDrive(), FanIn(2)),
        (tanh_device, Quadratic(), Sparse(0.3)),
        (ports_device, Linear(), Ports()),
    ],
)
@pytest.mark.parametrize("optimiser", [torch.optim.SGD, torch.optim.AdamW])
def test_masked_weights_stay_exactly_zero_through_training(
    device, connection, wiring, optimiser, gen
):
    layer = DeviceLayer(8, 5, device=device(), connection=connection, wiring=wiring, dtype=F64)
    opt = optimiser([p for p in layer.parameters() if p.requires_grad], lr=0.1)
    x = torch.randn(6, 8, generator=gen, dtype=F64)
    for _ in range(3):
        opt.zero_grad()
        layer(x, mode=TrueDevice()).pow(2).sum().backward()
        opt.step()
    w = layer.map.weight
    assert bool((w[~layer.mask] == 0).all())
    assert bool((w[layer.mask] != 0).all())
    if isinstance(connection, Quadratic):
        assert bool((layer.map.quad[~layer.map.quad_mask] == 0).all())


def test_network_takes_per_layer_devices_connections_and_wirings(gen):
    from quasineuron.network import DeviceNetwork

    net = DeviceNetwork(
        [almost_neuron(0.1), tanh_device()],
        (6, 5, 3),
        connection=[TwoDrive(), Quadratic()],
        wiring=[Dense(), FanIn(2)],
        dtype=F64,
    )
    drives = net.drives(torch.rand(4, 6, generator=gen, dtype=F64), mode=TrueDevice())
    assert [tuple(d.shape) for d in drives] == [(4, 5, 2), (4, 3, 1)]
    assert torch.equal(net.layers[1].mask.sum(0), torch.full((3,), 2))
