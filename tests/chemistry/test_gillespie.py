"""Stochastic (Gillespie) simulation of compiled networks through libroadrunner, vs chemistry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import quasineuron.chemistry as ch

F64 = torch.float64

pytest.importorskip("libsbml")
pytest.importorskip("roadrunner")


def _one_neuron(eps: float = 0.05):
    w = [torch.tensor([[1.5, -0.7]], dtype=F64)]
    b = [torch.tensor([0.2], dtype=F64)]
    u = torch.tensor([0.8, 0.3], dtype=F64)
    return w, b, u, eps


def _cme_mean(z_plus: float, z_minus: float, eps: float, vol: float) -> float:
    """Exact stationary mean count of one neuron's birth-death chain (law as roadrunner reads it).

    Births ``εΩ + z₊ n``, deaths ``z₋ n + n²/Ω`` (``cell*k*x^2`` with ``x = n/Ω``).
    """
    n = np.arange(0, int(20 * vol) + 1, dtype=np.float64)
    birth = eps * vol + z_plus * n[:-1]
    death = z_minus * n[1:] + n[1:] ** 2 / vol
    logp = np.concatenate([[0.0], np.cumsum(np.log(birth) - np.log(death))])
    p = np.exp(logp - logp.max())
    return float((n * p).sum() / p.sum())


def _time_mean(net: ch.ReactionNetwork, ids, *, vol, t_end, burn, seed=1) -> np.ndarray:
    n_points = 10 * int(t_end) + 1
    traj = ch.roadrunner_simulate(
        ch.to_sbml(net, volume=vol),
        t_end=t_end,
        integrator="gillespie",
        seed=seed,
        n_points=n_points,
        selections=ids,
    )
    return traj[int(10 * burn) :].mean(0)


def test_gillespie_counts_are_whole_and_non_negative_at_small_volume():
    # Ω·√ε = 2.236 molecules at the start: the SSA must start (and stay) on whole counts
    w = [torch.tensor([[-1.5]], dtype=F64)]
    b = [torch.tensor([0.0], dtype=F64)]
    cn = ch.compile_network(w, b, eps=0.05)
    net = cn.with_inputs(torch.tensor([1.0], dtype=F64))
    traj = ch.roadrunner_simulate(
        ch.to_sbml(net, volume=10.0), t_end=50.0, integrator="gillespie", seed=3, n_points=501
    )
    counts = traj * 10.0
    assert counts.min() >= 0.0
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-9)


def test_gillespie_one_neuron_matches_cme_and_deterministic_steady_state():
    w, b, u, eps = _one_neuron()
    vol = 1000.0
    net = ch.compile_network(w, b, eps=eps).with_inputs(u)
    det = float(ch.closed_form(w, b, u[None], eps=eps)[0, 0])
    got = float(_time_mean(net, ["x1_0"], vol=vol, t_end=200.0, burn=20.0)[0])
    z_plus = 1.5 * 0.8 + 0.2
    z_minus = 0.7 * 0.3
    exact = _cme_mean(z_plus, z_minus, eps, vol) / vol
    assert abs(got - exact) / exact < 0.01
    assert abs(got - det) / det < 0.03
    # the exact chemical-master-equation mean itself is within O(1/Ω) of the ODE steady state
    assert abs(exact - det) / det < 2.0 / vol / det


def test_gillespie_two_layer_network_matches_deterministic_steady_state():
    w = [
        torch.tensor([[1.2, -0.5, 0.3], [0.4, 0.9, -0.6], [-0.8, 0.6, 1.0]], dtype=F64),
        torch.tensor([[0.9, -0.4, 0.7], [-0.5, 1.1, 0.6]], dtype=F64),
    ]
    b = [torch.tensor([0.1, 0.2, 0.3], dtype=F64), torch.tensor([0.2, -0.1], dtype=F64)]
    u = torch.tensor([0.9, 0.4, 0.6], dtype=F64)
    eps = 0.05
    net = ch.compile_network(w, b, eps=eps).with_inputs(u)
    det = ch.closed_form(w, b, u[None], eps=eps)[0].numpy()
    got = _time_mean(net, ["x2_0", "x2_1"], vol=1000.0, t_end=150.0, burn=20.0)
    np.testing.assert_allclose(got, det, rtol=0.04)
