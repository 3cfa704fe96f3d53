"""Reaction networks: data, compilation, training through the fixed point, simulation, SBML."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import quasineuron as qn
import quasineuron.chemistry as ch

F64 = torch.float64


def _random_net(sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    ws = [torch.randn(b, a, generator=g, dtype=F64) for a, b in zip(sizes, sizes[1:], strict=False)]
    bs = [torch.randn(b, generator=g, dtype=F64) for b in sizes[1:]]
    return ws, bs


def test_reaction_data_checks():
    with pytest.raises(ValueError, match=">= 0"):
        ch.Reaction((("A", 1),), (), -1.0)
    with pytest.raises(ValueError, match="not in species"):
        ch.ReactionNetwork((ch.Species("A"),), (ch.Reaction((("B", 1),), (), 1.0),))
    with pytest.raises(ValueError, match="twice"):
        ch.ReactionNetwork((ch.Species("A"), ch.Species("A")), ())
    with pytest.raises(ValueError, match="identifier"):
        ch.Species("1x")


def test_conservation_laws_from_left_null_space():
    # A + B -> C, C -> A + B: A + C and B + C are conserved (2 laws), D is untouched (1 law)
    sp = tuple(ch.Species(n, 1.0) for n in "ABCD")
    rx = (
        ch.Reaction({"A": 1, "B": 1}, {"C": 1}, 2.0),
        ch.Reaction({"C": 1}, {"A": 1, "B": 1}, 1.0),
    )
    net = ch.ReactionNetwork(sp, rx)
    laws = net.conservation_laws()
    assert laws.shape == (3, 4)
    s = net.stoichiometry().to_dense().numpy()
    np.testing.assert_allclose(laws @ s, 0.0, atol=1e-12)
    # the compiled neuron network has none: every neuron species has an inflow
    assert (
        ch.compile_network(*_random_net((3, 2)), eps=0.1).network.conservation_laws().shape[0] == 0
    )


def test_mass_action_rhs_matches_hand_written_odes_and_split():
    sp = (ch.Species("A"), ch.Species("B"), ch.Species("U", boundary=True))
    rx = (
        ch.Reaction({"A": 2}, {"B": 1}, 0.7),
        ch.Reaction({"U": 1, "B": 1}, {"U": 1, "A": 1}, 1.3),
        ch.Reaction({}, {"A": 1}, 0.2),
    )
    kin = ch.MassAction(ch.ReactionNetwork(sp, rx))
    x = torch.rand(4, 3, dtype=F64, generator=torch.Generator().manual_seed(1)) + 0.1
    a, b, u = x.unbind(1)
    v1, v2 = 0.7 * a**2, 1.3 * u * b
    expected = torch.stack([-2 * v1 + v2 + 0.2, v1 - v2, torch.zeros_like(u)], 1)
    torch.testing.assert_close(kin.rhs(x), expected)
    ca, cb, cc = kin.self_coefficients(x)
    torch.testing.assert_close(ca + cb * x + cc * x * x, expected)


def test_compile_then_read_back_equals_original():
    ws, bs = _random_net((5, 4, 3))
    ws[0][1, 2] = 0.0  # a zero weight has no reaction and reads back as 0
    cn = ch.compile_network(ws, bs, eps=0.05)
    w2, b2, eps = ch.read_weights(cn.network)
    assert eps == 0.05
    for p, q in zip(ws + bs, w2 + b2, strict=True):
        torch.testing.assert_close(q, p, rtol=0, atol=0)
    n_w = sum(int((w != 0).sum()) for w in ws)
    n_b = sum(int((b != 0).sum()) for b in bs)
    assert cn.network.n_reactions == n_w + n_b + 2 * 7


def test_simulated_chemistry_reaches_the_closed_form_network_from_random_starts():
    ws, bs = _random_net((6, 5, 4, 3), seed=2)
    cn = ch.compile_network(ws, bs, eps=0.01)
    kin = ch.MassAction(cn.network)
    g = torch.Generator().manual_seed(0)
    u = torch.rand(8, 6, generator=g, dtype=F64)
    res = ch.steady_state(kin, cn.initial_state(u, generator=g))
    assert res.converged.all() and res.residual.max() < 1e-10
    torch.testing.assert_close(
        cn.outputs(res.x), ch.closed_form(ws, bs, u, eps=0.01), rtol=1e-9, atol=1e-12
    )
    # and a stiff reference solver on the same stoichiometric ODE agrees
    x0 = cn.initial_state(u[:1], generator=g)
    ref = ch.scipy_steady_state(kin, x0[0].numpy(), t_end=400.0, method="LSODA")
    np.testing.assert_allclose(ref, res.x[0].numpy(), rtol=1e-6, atol=1e-9)


@pytest.mark.slow
def test_settling_time_tracks_the_convergence_rate_of_one_neuron():
    # one neuron, z = b: (x - x*) decays at rate sqrt(b^2 + 4 eps)
    eps, b = 0.01, -1.0
    cn = ch.compile_network([torch.zeros(1, 1, dtype=F64)], [torch.tensor([b], dtype=F64)], eps=eps)
    kin = ch.MassAction(cn.network)
    x0 = cn.initial_state(torch.zeros(1, 1, dtype=F64))  # x(0) = 1
    star = ch.steady_state(kin, x0).x
    t = ch.settling_time(kin, x0, star, dt=0.002, t_max=20.0, rtol=1e-3, atol=0.0).item()
    rate = math.sqrt(b * b + 4 * eps)
    # Riccati solution: (x-x*)/(x-x-) = C exp(-rate t); solve for |x-x*| = 1e-3 x*
    xs, xm = star[0, 1].item(), (b - rate) / 2
    c0 = (1.0 - xs) / (1.0 - xm)
    target = 1e-3 * xs
    expected = -math.log((target / (xs + target - xm)) / c0) / rate
    assert abs(t - expected) / expected < 0.02


@pytest.fixture
def digits_small():
    train, test = qn.load_digits(seed=0)
    return train.subset(np.arange(200)), test


def _net(device, seed=0):
    return qn.DeviceNetwork(device, (64, 8, 10), readout_affine=False, seed=seed, dtype=F64)


def test_implicit_gradients_equal_closed_form_gradients_at_network_level(digits_small):
    train, _ = digits_small
    x, y = train.x[:16].double(), train.y[:16]
    grads = []
    for dev, mode in (
        (ch.smoothed_relu_device(eps=0.01), qn.TrueDevice()),
        (qn.reaction_relu(eps=0.01), qn.Direct()),
    ):
        net = _net(dev)
        loss = qn.MSE()(net(x, mode=mode), y)
        grads.append(torch.autograd.grad(loss, list(net.parameters())))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_training_trajectories_agree(digits_small):
    train, _ = digits_small
    train = qn.ArrayDataset(train.x.double(), train.y)
    hist = []
    for dev, mode in (
        (ch.smoothed_relu_device(eps=0.01), qn.TrueDevice()),
        (qn.reaction_relu(eps=0.01), qn.Direct()),
    ):
        net = _net(dev)
        res = qn.train(
            net, train, mode=mode, epochs=2, batch_size=50, lr=1e-2, loss="mse", progress=False
        )
        hist.append([m.train_loss for m in res.history])
    np.testing.assert_allclose(hist[0], hist[1], rtol=1e-6)


def test_network_weights_refuses_affine_readout():
    net = qn.DeviceNetwork(ch.smoothed_relu_device(eps=0.01), (4, 3), readout_affine=True)
    with pytest.raises(ValueError, match="readout_affine=False"):
        ch.network_weights(net)


def test_sbml_round_trip_consistency_and_roadrunner_steady_state():
    pytest.importorskip("libsbml")
    ws, bs = _random_net((4, 3, 2), seed=3)
    cn = ch.compile_network(ws, bs, eps=0.02)
    u = torch.tensor([0.2, 0.9, 0.0, 0.5], dtype=F64)
    net = cn.with_inputs(u)
    text = ch.to_sbml(net)
    assert ch.sbml_errors(text) == []
    back = ch.from_sbml(text)
    assert [(s.name, s.boundary) for s in back.species] == [
        (s.name, s.boundary) for s in net.species
    ]
    np.testing.assert_allclose(
        [s.initial for s in back.species], [s.initial for s in net.species], rtol=1e-14
    )
    assert [(r.reactants, r.products, r.name) for r in back.reactions] == [
        (r.reactants, r.products, r.name) for r in net.reactions
    ]
    np.testing.assert_allclose(
        [r.rate for r in back.reactions], [r.rate for r in net.reactions], rtol=1e-14
    )
    w2, b2, _ = ch.read_weights(back)
    for p, q in zip(ws + bs, w2 + b2, strict=True):
        torch.testing.assert_close(q, p, rtol=1e-14, atol=0)

    pytest.importorskip("roadrunner")
    kin = ch.MassAction(net)
    ours = ch.steady_state(kin, net.initial_state()[None]).x[0]
    traj = ch.roadrunner_simulate(
        text, t_end=400.0, selections=[s.name for s in net.species if not s.boundary]
    )
    np.testing.assert_allclose(
        traj[-1], ours[~torch.from_numpy(net.boundary_mask)].numpy(), rtol=1e-6
    )
