from __future__ import annotations

import pytest
import torch
from network_devices import almost_neuron, ports_device, raw_device, tanh_device

from quasineuron.config import parse_config
from quasineuron.devices.base import Box
from quasineuron.devices.formula import FormulaDevice
from quasineuron.devices.library import almost_neuron as library_almost_neuron
from quasineuron.devices.library import raw_almost_neuron
from quasineuron.devices.wrappers import InputClip
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
    default_connection,
)
from quasineuron.pipeline import _connection

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


# --------------------------------------------------------------------------------------------
# "auto": the connection a device declares, else one weighted sum per drive


def _generic_two_drive_device() -> FormulaDevice:
    """A two-input device that is not an almost-neuron: tanh(u0) * sigmoid(u1)."""
    return FormulaDevice(
        lambda u: torch.tanh(u[:, :1]) * torch.sigmoid(u[:, 1:2]),
        n_in=2,
        n_out=1,
        domain=Box((-3.0, -3.0), (3.0, 3.0)),
        name="gated",
    )


def test_auto_picks_two_drive_for_the_almost_neuron_and_linear_for_a_generic_device():
    assert default_connection(library_almost_neuron(0.1)) == TwoDrive()
    assert default_connection(raw_almost_neuron(fan_in=2)) == Raw()
    assert default_connection(_generic_two_drive_device()) == Linear()
    assert default_connection(tanh_device()) == Linear()
    # the wrapper keeps what the wrapped device declares
    assert default_connection(InputClip(library_almost_neuron(0.1))) == TwoDrive()


def test_the_pipeline_auto_connection_follows_the_device():
    cfg = parse_config({"network": {"connection": "auto"}})
    assert _connection(cfg, library_almost_neuron(0.1)) == TwoDrive()
    assert _connection(cfg, _generic_two_drive_device()) == Linear()
    explicit = parse_config({"network": {"connection": "two-drive"}})
    assert _connection(explicit, _generic_two_drive_device()) == TwoDrive()


def test_linear_gives_each_drive_of_a_two_drive_device_its_own_weights(gen):
    layer = DeviceLayer(5, 3, device=_generic_two_drive_device(), connection=Linear(), dtype=F64)
    x = torch.randn(4, 5, generator=gen, dtype=F64)
    w, b = layer.map.weight, layer.map.bias
    assert w.shape == (5, 3 * 2) and b.shape == (3, 2)
    expected = (x @ w).view(4, 3, 2) + b  # column = neuron * n_drives + drive
    torch.testing.assert_close(layer.drives(x), expected)
    assert not torch.equal(w[:, 0::2], w[:, 1::2])  # independent weights per drive


def test_an_unknown_natural_connection_is_refused_with_the_kinds():
    dev = _generic_two_drive_device()
    dev.natural_connection = "two drive"  # not a kind
    with pytest.raises(ValueError, match=r"not a connection kind.*two-drive"):
        default_connection(dev)


def test_an_old_spelling_of_a_natural_connection_warns_and_still_works():
    dev = _generic_two_drive_device()
    dev.natural_connection = "two_drive"
    with pytest.warns(DeprecationWarning, match="'two-drive' instead"):
        assert default_connection(dev) == TwoDrive()
