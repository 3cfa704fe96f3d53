from __future__ import annotations

import pytest
import torch
from network_devices import BOX1, almost_neuron, tanh_device, wrong_twin

from quasineuron.devices.formula import FormulaDevice
from quasineuron.errors import NotDifferentiableError
from quasineuron.network import (
    DeviceLayer,
    DeviceNetwork,
    Direct,
    FanIn,
    PhysicsAware,
    Quadratic,
    Sparse,
    Surrogate,
    TrueDevice,
    TwoDrive,
    physics_aware,
)

F64 = torch.float64


def _gradcheck_weights(net, x, mode):
    names = [n for n, p in net.named_parameters() if p.requires_grad]
    params = tuple(net.get_parameter(n).detach().clone().requires_grad_(True) for n in names)

    def f(*ps):
        return torch.func.functional_call(
            net, dict(zip(names, ps, strict=True)), (x,), {"mode": mode}
        )

    return torch.autograd.gradcheck(f, params)


@pytest.mark.parametrize("mode", [Surrogate(), Direct()])
@pytest.mark.parametrize(
    ("device", "connection", "wiring"),
    [
        (tanh_device, None, None),
        (lambda: almost_neuron(0.2), TwoDrive(), None),
        (tanh_device, Quadratic(), FanIn(2)),
    ],
)
def test_weight_gradients_match_finite_differences(mode, device, connection, wiring, gen):
    kw = {k: v for k, v in (("connection", connection), ("wiring", wiring)) if v is not None}
    net = DeviceNetwork(device(), (3, 4, 2), twin=device(), dtype=F64, **kw)
    x = torch.rand(4, 3, generator=gen, dtype=F64)
    assert _gradcheck_weights(net, x, mode)
    xr = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: net(v, mode=mode), (xr,))


def test_physics_aware_forward_equals_true_device_forward_exactly(gen):
    net = DeviceNetwork(tanh_device(), (6, 5, 3), twin=wrong_twin(), wiring=Sparse(0.5))
    x = torch.rand(8, 6, generator=gen)
    assert torch.equal(net(x, mode=PhysicsAware()), net(x, mode=TrueDevice()))


def test_physics_aware_backward_is_the_twin_vjp_at_the_applied_drives(gen):
    layer = DeviceLayer(5, 4, device=tanh_device(), twin=wrong_twin(), dtype=F64)
    x = torch.randn(6, 5, generator=gen, dtype=F64)
    r = torch.randn(6, 4, generator=gen, dtype=F64)
    (layer(x, mode=PhysicsAware()) * r).sum().backward()
    # Manual: u = x W + b; dL/du = r * d(1.1 tanh)/du at u; dL/dW = x^T dL/du.
    with torch.no_grad():
        u = x @ layer.map.weight + layer.map.bias[:, 0]
        g = r * 1.1 * (1 - torch.tanh(u) ** 2)
    torch.testing.assert_close(layer.map.weight.grad, x.T @ g)
    torch.testing.assert_close(layer.map.bias.grad, g.sum(0).unsqueeze(1))


def test_physics_aware_matches_a_straight_through_implementation_in_a_deep_net(gen):
    dev, twin = tanh_device(), wrong_twin()
    net = DeviceNetwork(dev, (6, 5, 4, 3), twin=twin, dtype=F64)
    x = torch.randn(7, 6, generator=gen, dtype=F64)
    net(x, mode=PhysicsAware()).square().sum().backward()
    pat = [p.grad.clone() for p in net.parameters() if p.requires_grad]
    net.zero_grad()
    h = x  # value of the true device, gradient of the twin at the same drives
    for layer in net.layers:
        u = layer.drives(h).reshape(-1, 1)
        h = (twin(u) + (dev(u) - twin(u)).detach()).reshape(h.shape[0], -1)
    (h * net.readout_scale + net.readout_offset).square().sum().backward()
    ref = [p.grad for p in net.parameters() if p.requires_grad]
    for a, b in zip(pat, ref, strict=True):
        torch.testing.assert_close(a, b)


def test_physics_aware_function_gives_twin_gradient_on_non_differentiable_device(gen):
    dev = tanh_device(differentiable=False)
    u = torch.randn(5, 1, generator=gen, dtype=F64, requires_grad=True)
    y = physics_aware(u, dev, wrong_twin())
    torch.testing.assert_close(y, torch.tanh(u.detach()))
    (g,) = torch.autograd.grad(y.sum(), u)
    torch.testing.assert_close(g, 1.1 * (1 - torch.tanh(u.detach()) ** 2))


def _cosine(a, b):
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def _input_gain_twin():
    """A twin with a 10 % gain error on the drive: tanh(1.1 u)."""
    return FormulaDevice(lambda u: torch.tanh(1.1 * u), n_in=1, n_out=1, domain=BOX1)


def _weight_grads(seed, twin):
    gen = torch.Generator().manual_seed(seed)
    net = DeviceNetwork(
        tanh_device(), (8, 16, 16, 4), twin=twin, dtype=F64, seed=seed, init_gain=3.0
    )
    x = torch.randn(32, 8, generator=gen, dtype=F64)
    labels = torch.randint(0, 4, (32,), generator=gen)

    def grad(mode):
        net.zero_grad()
        torch.nn.functional.cross_entropy(net(x, mode=mode), labels).backward()
        return [layer.map.weight.grad.clone() for layer in net.layers]

    return grad(Direct()), grad(PhysicsAware()), grad(Surrogate())


@pytest.mark.parametrize("make_twin", [wrong_twin, _input_gain_twin])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_physics_aware_weight_gradient_is_closer_to_the_truth_than_the_twin_gradient(
    seed, make_twin
):
    true, pat, twin = _weight_grads(seed, make_twin())
    flat = lambda gs: torch.cat([g.flatten() for g in gs])  # noqa: E731
    assert _cosine(flat(pat), flat(true)) > _cosine(flat(twin), flat(true))
    for p, s, t in zip(pat, twin, true, strict=True):  # and layer by layer
        assert _cosine(p.flatten(), t.flatten()) > _cosine(s.flatten(), t.flatten())


def test_an_output_gain_error_only_rescales_each_layers_physics_aware_gradient():
    true, pat, _ = _weight_grads(0, wrong_twin())
    for p, t in zip(pat, true, strict=True):
        assert _cosine(p.flatten(), t.flatten()) > 1 - 1e-12


# --- refusals: each names the device and every alternative ------------------------------


def _black_box_net(twin=None, sizes=(3, 4, 2)):
    return DeviceNetwork(tanh_device(differentiable=False, name="chip-7"), sizes, twin=twin)


def _assert_lists_alternatives(message, *, without=()):
    assert "'chip-7'" in message  # the device, by name
    for way in ("PhysicsAware()", "Surrogate()", "CMAES", "TrueDevice()"):
        if way not in without:
            assert way in message, f"{way} missing from: {message}"


def test_direct_on_a_non_differentiable_device_refuses_with_every_alternative():
    net = _black_box_net()
    for context in (torch.enable_grad, torch.no_grad):  # Direct refuses even to evaluate
        with context(), pytest.raises(NotDifferentiableError) as info:
            net(torch.rand(2, 3), mode=Direct())
        _assert_lists_alternatives(str(info.value))
        assert "fit_surrogate" in str(info.value)  # there is no twin yet: say how to get one
        assert "Direct():" not in str(info.value)  # not offered as its own alternative


def test_direct_adjoint_needs_a_device_built_for_it():
    net = DeviceNetwork(tanh_device(), (3, 2))
    with pytest.raises(ValueError, match="adjoint"):
        net(torch.rand(2, 3), mode=Direct(adjoint=True))


@pytest.mark.parametrize("differentiable", [True, False])
def test_true_device_evaluates_a_non_differentiable_device_with_or_without_no_grad(
    differentiable, gen
):
    net = DeviceNetwork(tanh_device(differentiable=differentiable), (3, 2), dtype=F64)
    x = torch.rand(5, 3, generator=gen, dtype=F64)
    expected = torch.tanh(x @ net.layers[0].map.weight + net.layers[0].map.bias[:, 0])
    expected = expected * net.readout_scale + net.readout_offset
    with torch.no_grad():
        torch.testing.assert_close(net(x, mode=TrueDevice()), expected.detach())
    torch.testing.assert_close(net(x, mode=TrueDevice()).detach(), expected.detach())


def test_evaluate_scores_a_non_differentiable_device_in_true_device_mode(gen):
    from quasineuron.data import ArrayDataset
    from quasineuron.evaluation import evaluate

    net = _black_box_net()
    x = torch.rand(12, 3, generator=gen)
    labels = torch.tensor([0, 1] * 6)
    with torch.no_grad():
        right = (net(x, mode=TrueDevice()).argmax(1) == labels).double().mean().item()
    report = evaluate(net, ArrayDataset(x, labels), modes=(TrueDevice(),))
    assert report.accuracy == {"device": right}


def test_backward_through_a_non_differentiable_device_in_true_device_mode_raises():
    # Before, this "trained" silently: only the readout after the device got a gradient.
    net = _black_box_net(twin=wrong_twin())
    out = net(torch.rand(2, 3), mode=TrueDevice())
    with pytest.raises(NotDifferentiableError) as info:
        out.square().sum().backward()
    _assert_lists_alternatives(str(info.value), without=("TrueDevice()",))
    assert "fit_surrogate" not in str(info.value)  # this network has its twin already


@pytest.mark.parametrize("mode", [Surrogate(), PhysicsAware()])
def test_modes_that_need_a_twin_refuse_with_every_alternative(mode):
    net = _black_box_net()
    with torch.no_grad(), pytest.raises(ValueError) as info:
        net(torch.rand(2, 3), mode=mode)
    assert "fit_surrogate" in str(info.value)
    _assert_lists_alternatives(str(info.value), without=(f"{type(mode).__name__}()",))
    with pytest.raises(ValueError, match="(?s)layer 0 of 2: .*fit_surrogate"):
        net.check_mode(mode, training=False)


def test_check_mode_refuses_training_through_a_non_differentiable_device_up_front():
    net = _black_box_net(twin=wrong_twin())
    net.check_mode(TrueDevice(), training=False)  # evaluating is fine
    net.check_mode(PhysicsAware(), training=True)
    with pytest.raises(NotDifferentiableError, match="layer 0 of 2") as info:
        net.check_mode(TrueDevice(), training=True)
    _assert_lists_alternatives(str(info.value), without=("TrueDevice()",))
    DeviceNetwork(tanh_device(), (3, 2)).check_mode(TrueDevice(), training=True)
    with pytest.raises(TypeError, match="mode_from_name"):
        net.check_mode("device", training=True)


def test_check_mode_lets_a_frozen_front_layer_run_a_non_differentiable_device(gen):
    # Gradients never pass through layer 0's device if nothing before it trains.
    net = DeviceNetwork([tanh_device(differentiable=False), tanh_device()], (3, 4, 2), dtype=F64)
    net.layers[0].requires_grad_(False)
    net.check_mode(TrueDevice(), training=True)
    net(torch.rand(5, 3, generator=gen, dtype=F64), mode=TrueDevice()).sum().backward()
    assert net.layers[1].map.weight.grad.abs().sum() > 0
    net.layers[0].requires_grad_(True)
    with pytest.raises(NotDifferentiableError, match="layer 0 of 2"):
        net.check_mode(TrueDevice(), training=True)


def test_train_refuses_before_the_first_forward_pass():
    from quasineuron.data import ArrayDataset
    from quasineuron.training import train

    calls = []

    def counted_tanh(u):
        calls.append(len(u))
        return torch.tanh(u)

    dev = FormulaDevice(counted_tanh, n_in=1, n_out=1, domain=BOX1, differentiable=False)
    net = DeviceNetwork(dev, (3, 2))
    data = ArrayDataset(torch.rand(8, 3), torch.tensor([0, 1] * 4))
    calls.clear()  # the device may be probed once when it is built
    before = [p.detach().clone() for p in net.parameters()]
    with pytest.raises(NotDifferentiableError, match="CMAES"):
        train(net, data, mode=TrueDevice(), epochs=1, batch_size=4, progress=False)
    assert calls == []  # refused before any device evaluation, let alone a step
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))


def test_a_mode_must_be_a_mode_object():
    with pytest.raises(TypeError, match="mode_from_name"):
        DeviceNetwork(tanh_device(), (3, 2))(torch.rand(2, 3), mode="device")


def test_only_connection_weights_train():
    net = DeviceNetwork(tanh_device(), (3, 4, 2), twin=wrong_twin())
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable == {
        "readout_scale",
        "readout_offset",
        "layers.0.map.weight",
        "layers.0.map.bias",
        "layers.1.map.weight",
        "layers.1.map.bias",
    }


def test_drives_are_reported_per_layer(gen):
    net = DeviceNetwork(tanh_device(), (6, 5, 3), twin=wrong_twin())
    drives = net.drives(torch.rand(4, 6, generator=gen))
    assert [tuple(d.shape) for d in drives] == [(4, 5, 1), (4, 3, 1)]


def test_twin_of_another_shape_is_rejected():
    with pytest.raises(ValueError, match="twin"):
        DeviceNetwork(tanh_device(), (3, 2), twin=almost_neuron(0.1))


def test_per_layer_sequences_must_match_the_depth():
    with pytest.raises(ValueError, match="3 entries"):
        DeviceNetwork([tanh_device()] * 3, (3, 4, 2))


def test_direct_adjoint_runs_through_an_adjoint_ode_device_and_matches_autograd():
    from quasineuron.devices.ode import Adaptive, FinalState, ODEDevice

    def rhs(t, x, u):
        return -x + torch.tanh(u)

    def make(adjoint):
        return ODEDevice(
            rhs,
            x0=torch.zeros(1),
            n_in=1,
            t_end=1.0,
            readout=FinalState(),
            solver=Adaptive(rtol=1e-9, atol=1e-11, adjoint=adjoint),
            domain=BOX1,
        )

    x = torch.randn(5, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    grads = []
    for adjoint, mode in ((False, Direct()), (True, Direct(adjoint=True))):
        net = DeviceNetwork(make(adjoint), (3, 4, 2), dtype=F64, seed=0, readout_affine=False)
        net(x, mode=mode).sum().backward()
        grads.append(net.layers[0].map.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-6, atol=1e-8)
    with pytest.raises(ValueError, match="adjoint"):
        DeviceNetwork(make(False), (3, 4, 2), dtype=F64)(x, mode=Direct(adjoint=True))
