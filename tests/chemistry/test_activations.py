"""Sigmoid-like and saturating neurons compiled to mass-action chemistry (float64)."""

from __future__ import annotations

import pytest
import torch

import quasineuron.chemistry as ch
from quasineuron.devices.reaction import ACTIVATIONS, activation_rhs

F64 = torch.float64
ACTS = ["sigmoid", "saturating"]


def _random_net(seed: int, sizes: tuple[int, ...] = (5, 4, 3), scale: float = 3.0):
    gen = torch.Generator().manual_seed(seed)
    weights = [
        scale * torch.randn(n_out, n_in, generator=gen, dtype=F64)
        for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True)
    ]
    biases = [torch.randn(n, generator=gen, dtype=F64) for n in sizes[1:]]
    return weights, biases


@pytest.mark.parametrize("activation", ACTS)
def test_each_species_follows_its_neurons_rate_law(activation: str) -> None:
    eps = 0.1
    weights, biases = _random_net(0)
    cn = ch.compile_network(weights, biases, eps=eps, activation=activation)
    kin = ch.MassAction(cn.network)
    gen = torch.Generator().manual_seed(1)
    u = torch.rand(6, 5, generator=gen, dtype=F64)
    x = cn.initial_state(u, generator=gen)
    f = kin.rhs(x)
    # layer by layer: dx/dt of every species is the activation's rate law at its drive
    prev = u
    for layer, (w, b) in enumerate(zip(weights, biases, strict=True), start=1):
        xs = x[:, cn.layer_slice(layer)]
        z = prev @ w.T + b
        torch.testing.assert_close(
            f[:, cn.layer_slice(layer)], activation_rhs(activation, xs, z, eps)
        )
        prev = xs
    assert (f[:, cn.layer_slice(0)] == 0).all()  # inputs are held


@pytest.mark.parametrize("activation", ACTS)
def test_chemistry_steady_state_is_the_closed_form_network(activation: str) -> None:
    eps = 0.25
    weights, biases = _random_net(2)
    cn = ch.compile_network(weights, biases, eps=eps, activation=activation)
    kin = ch.MassAction(cn.network)
    gen = torch.Generator().manual_seed(3)
    u = torch.rand(32, 5, generator=gen, dtype=F64)
    x0 = cn.initial_state(u, generator=gen, low=0.0, high=1.0)
    closed = ch.closed_form(weights, biases, u, eps=eps, activation=activation)
    res = ch.steady_state(kin, x0, upper=1.0)
    assert res.converged.all()
    torch.testing.assert_close(cn.outputs(res.x), closed, rtol=0, atol=1e-12)
    # the time-accurate integration of the same ODE ends there too
    # the slowest rate of each neuron: 2ε (sigmoid, at z = 0), 2√ε (saturating, at z = −ε)
    slowest = 2 * eps if activation == "sigmoid" else 2 * eps**0.5
    x_t = ch.ode_steady_state(kin, x0[:4], t_end=3 * 25 / slowest, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(cn.outputs(x_t), closed[:4], rtol=0, atol=1e-8)


def test_the_positive_root_solver_refuses_bounded_networks() -> None:
    weights, biases = _random_net(4)
    cn = ch.compile_network(weights, biases, eps=0.1, activation="sigmoid")
    kin = ch.MassAction(cn.network)
    x0 = cn.initial_state(torch.rand(2, 5, dtype=F64))
    with pytest.raises(ValueError, match="positive second-order self-term"):
        ch.steady_state(kin, x0)


def test_compile_rejects_an_unknown_activation() -> None:
    weights, biases = _random_net(5)
    with pytest.raises(ValueError, match="unknown activation 'tanh'"):
        ch.compile_network(weights, biases, eps=0.1, activation="tanh")
    with pytest.raises(ValueError, match="unknown activation"):
        ch.reaction_activation_device("tanh", eps=0.1)


@pytest.mark.parametrize("activation", ACTS)
def test_closed_form_twin_device(activation: str) -> None:
    import quasineuron as qn

    dev = ch.reaction_activation_device(activation, eps=0.2)
    assert qn.check_device(dev).ok
    z = torch.linspace(-3, 3, 7, dtype=F64)[:, None]
    torch.testing.assert_close(dev(z), ACTIVATIONS[activation].closed_form(z, 0.2))


def test_committed_result_supports_its_claims() -> None:
    import json
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "docs" / "results" / "reaction-activations"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert (folder / "convergence-rate.png").is_file()
    for name, entry in metrics["activations"].items():
        assert entry["fixed_point"]["all_converged"], name
        assert entry["fixed_point"]["max_abs_error"] < 1e-10, name
        assert entry["rate"]["max_relative_error"] < 1e-3, name
        if name == "relu":
            continue
        digits = entry["digits"]
        assert len(digits["seeds"]) >= 3
        acc = digits["accuracy"]
        assert acc["device_mean"] == acc["closed_form_mean"] and acc["device_std"] is not None
        assert digits["agreement_min"] == 1.0
        assert all(r["all_converged"] for r in digits["runs"])
