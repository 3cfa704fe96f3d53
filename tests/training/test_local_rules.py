"""The perceptron and delta rules, with the error-dependent learning rate alpha(e, x)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import quasineuron as qn
from quasineuron.training import Constant, Delta, ErrorPolynomial, Perceptron, train_local


def step(u: np.ndarray) -> np.ndarray:
    return np.heaviside(u, 1.0)


def step_neurons(sizes=(2, 1), seed=0) -> qn.DeviceNetwork:
    """A layer of hard-limiting black-box neurons (no gradient anywhere)."""
    dev = qn.BlackBoxDevice(step, n_in=1, n_out=1, domain=qn.Box((-1.0,), (1.0,)), vectorized=True)
    return qn.DeviceNetwork(dev, sizes, readout_affine=False, seed=seed, dtype=torch.float64)


CORNERS = qn.xor().x.double()


@pytest.mark.parametrize(
    ("gate", "labels"), [("and", [0, 0, 0, 1]), ("or", [0, 1, 1, 1])], ids=["and", "or"]
)
@pytest.mark.parametrize("alpha", [0.1, ErrorPolynomial((0.05, 0.2)), lambda e, x: 0.1 + x[:, :1]])
def test_perceptron_rule_learns_and_or(gate, labels, alpha):
    net = step_neurons()
    data = qn.ArrayDataset(CORNERS, torch.tensor(labels))
    res = train_local(net, data, rule=Perceptron(alpha=alpha), epochs=100, seed=0)
    assert res.extras["converged"] and res.history[-1].train_accuracy == 1.0
    out = net(CORNERS, mode=qn.TrueDevice())[:, 0]
    torch.testing.assert_close(out, torch.tensor(labels, dtype=torch.float64))


def test_perceptron_cannot_learn_xor_with_one_linear_neuron():
    res = train_local(step_neurons(), qn.xor(), rule=Perceptron(alpha=0.1), epochs=30)
    assert not res.extras["converged"] and res.history[-1].train_accuracy < 1.0


def test_one_online_step_is_the_lecture_formula():
    net = step_neurons()
    layer = net.layers[0]
    w0, b0 = layer.map.weight.detach().clone(), layer.map.bias.detach().clone()
    x = torch.tensor([[1.0, 0.5]], dtype=torch.float64)
    with torch.no_grad():  # evaluating: a graph through the step device would refuse backward
        y = net(x, mode=qn.TrueDevice())
    d = 1.0 - y  # the opposite label, so the neuron errs: e = d - Y = +-1
    rule = Perceptron(alpha=ErrorPolynomial((0.1, 0.3)))
    train_local(net, qn.ArrayDataset(x, d.long()[:, 0]), rule=rule, epochs=1)
    e = float(d - y)
    alpha = 0.1 + 0.3 * e**2
    torch.testing.assert_close(layer.map.weight, w0 + alpha * x.T * e)
    torch.testing.assert_close(layer.map.bias, b0 + alpha * e)


def test_delta_rule_restores_a_line_on_an_identity_device():
    ident = qn.FormulaDevice(lambda u: u, n_in=1, n_out=1, domain=qn.Box((-10.0,), (10.0,)))
    net = qn.DeviceNetwork(ident, (1, 1), readout_affine=False, dtype=torch.float64)
    x = torch.linspace(-3, 3, 50, dtype=torch.float64).reshape(-1, 1)
    res = train_local(net, qn.ArrayDataset(x, 2 * x + 3), rule=Delta(alpha=0.02), epochs=40)
    assert res.history[-1].train_loss < 1e-12
    torch.testing.assert_close(
        net.layers[0].map.weight.detach(), torch.full((1, 1), 2.0, dtype=torch.float64)
    )
    torch.testing.assert_close(
        net.layers[0].map.bias.detach(), torch.full((1, 1), 3.0, dtype=torch.float64)
    )


def test_error_polynomial_values_and_checks():
    e = torch.tensor([[0.0, 1.0, -2.0]])
    torch.testing.assert_close(ErrorPolynomial((0.1, 0.5))(e, e), 0.1 + 0.5 * e**2)
    with pytest.raises(ValueError, match=">= 0"):
        ErrorPolynomial((0.1, -0.5))
    with pytest.raises(ValueError, match="> 0"):
        Constant(0.0)


def test_a_negative_callable_rate_is_refused():
    with pytest.raises(ValueError, match=">= 0"):
        train_local(step_neurons(), qn.xor(), rule=Perceptron(alpha=lambda e, x: -e.abs() - 1))


def test_only_single_linear_layers_are_accepted():
    with pytest.raises(TypeError, match="one layer"):
        train_local(step_neurons((2, 2, 1)), qn.xor(), rule=Delta())
    dev = step_neurons().layers[0].device
    with pytest.raises(ValueError, match="readout_affine=False"):
        train_local(qn.DeviceNetwork(dev, (2, 1)), qn.xor(), rule=Delta())


def test_callbacks_see_every_update_in_order_and_can_stop():
    net = step_neurons()
    data = qn.ArrayDataset(CORNERS, torch.tensor([0, 0, 0, 1]))
    seen = []
    res = train_local(
        net,
        data,
        rule=Perceptron(alpha=0.1),
        epochs=3,
        shuffle=False,
        callbacks=[lambda s: seen.append((s.epoch, s.step, s.samples)) or s.step == 6],
    )
    # Unshuffled, one sample per update: the data set's order, epoch after epoch, until
    # the callback says stop after the sixth update.
    assert seen == [
        (1, 1, (0,)),
        (1, 2, (1,)),
        (1, 3, (2,)),
        (1, 4, (3,)),
        (2, 5, (0,)),
        (2, 6, (1,)),
    ]
    assert res.stopped_early and not res.extras["converged"]
    assert len(res.history) == 2
