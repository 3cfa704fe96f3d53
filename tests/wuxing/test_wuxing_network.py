"""Tests of the layered Wuxing network: wiring counts, simulation, reversed network, method 2."""

from __future__ import annotations

import math

import pytest
import torch

from quasineuron.devices.ode import RK4, Heun
from quasineuron.devices.wuxing import wuxing_neuron
from quasineuron.wuxing import (
    Backprop,
    Method2,
    SimConfig,
    TargetCoding,
    WuxingNetwork,
    adder_wiring,
    bptt_step,
    method2_step,
    model_wiring,
    one_to_one_wiring,
    output_error,
    train,
)

F64 = torch.float64


def toy(seed: int = 1, **cfg) -> WuxingNetwork:
    """The 3 -> 4 -> 1 network with 11 links of docs/models.md §A.6."""
    wiring = one_to_one_wiring((3, 4, 1), links=(7, 4), seed=seed)
    config = SimConfig(**({"T": 40.0, "solver": Heun(dt=0.02), "clip": None} | cfg))
    net = WuxingNetwork(wiring, config=config, dtype=F64)
    with torch.no_grad():
        net.c.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(0))
    return net


# -- wiring ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "pooled"), [("MODEL1", 4711 / 925_773), ("MODEL2", 4711 / 1_238_743)]
)
def test_model_wiring_counts_ratios_and_one_to_one(model, pooled):
    w = model_wiring(model, seed=3)
    assert w.n_links == 4711
    assert w.links_per_layer == (3136, 1055, 360, 120, 40)
    assert w.pooled_link_ratio == pytest.approx(pooled)
    assert round(100 * w.pooled_link_ratio, 3) == (0.509 if model == "MODEL1" else 0.380)
    sizes = w.sizes
    for ell, lr in enumerate(w.link_ratios):
        assert lr == pytest.approx(w.links_per_layer[ell] / (sizes[ell] * sizes[ell + 1]))
    # one-to-one: no interface in two links, none both sends and receives, none reserved
    used = torch.cat([w.src, w.dst, w.input_slots, w.output_slots])
    assert used.unique().numel() == used.numel()
    # links go from layer l to layer l+1
    bounds = torch.tensor([0, *torch.cumsum(torch.tensor(sizes), 0).tolist()]) * 5
    layer_of = torch.bucketize(torch.cat([w.src, w.dst]), bounds[1:], right=True)
    assert torch.equal(layer_of[: w.n_links], w.layer)
    assert torch.equal(layer_of[w.n_links :], w.layer + 1)
    assert w.input_slots.numel() == 784 and w.output_slots.numel() == 10


def test_default_links_fill_every_interface_as_model1():
    w = one_to_one_wiring((784, 839, 283, 96, 32, 10), seed=0)
    assert w.links_per_layer == (3136, 1055, 360, 120, 40)


def test_one_to_one_rejects_too_many_links():
    with pytest.raises(ValueError, match="free interfaces"):
        one_to_one_wiring((3, 4, 1), links=(13, 4))


def test_adder_wiring_fan_in_and_ratio():
    w = adder_wiring((50, 20, 10), link_ratio=0.3, fan_in=5, seed=0)
    assert w.links_per_layer == (300, 60)
    assert w.link_ratios == pytest.approx((0.3, 0.3))
    fan = torch.bincount(w.dst)
    assert int(fan.max()) <= 5
    assert set(w.src.tolist()).isdisjoint(w.dst.tolist())
    with pytest.raises(ValueError, match="fan_in"):
        adder_wiring((50, 20, 10), link_ratio=0.9, fan_in=1)


# -- simulation ------------------------------------------------------------------------------


def test_rest_is_a_fixed_point_and_zero_input_gives_zero_score():
    net = toy(T=2.0)
    with torch.no_grad():
        res = net.simulate(torch.zeros(2, 3, dtype=F64))
    torch.testing.assert_close(res.score, torch.zeros(2, 1, dtype=F64))
    assert not res.diverged.any()


def test_single_neuron_network_matches_the_wuxing_device():
    """1 input neuron -> 1 output neuron, one link: the output neuron sees c·D of the first."""
    w = one_to_one_wiring((1, 1), links=(1,), seed=0)
    net = WuxingNetwork(w, config=SimConfig(T=5.0, solver=RK4(dt=0.05), clip=None), dtype=F64)
    x = torch.tensor([[0.3]], dtype=F64)
    res = net.simulate(x)
    p = int(w.input_slots[0]) % 5
    dev = wuxing_neuron(input_elements=(p,), T=5.0, solver=RK4(dt=0.05))
    # time-mean of every element of the input neuron equals the single-neuron device
    torch.testing.assert_close(res.integral[:, :5] / 5.0, dev(x), rtol=1e-10, atol=1e-12)


def test_batch_rows_are_independent_and_float32_works():
    net = toy(T=4.0, solver=Heun(dt=0.1))
    x = torch.rand(4, 3, dtype=F64, generator=torch.Generator().manual_seed(0)) * 0.5
    full = net.simulate(x).score
    torch.testing.assert_close(
        full, torch.cat([net.simulate(x[i : i + 1]).score for i in range(4)])
    )
    net32 = WuxingNetwork(net.wiring, config=net.config)
    with torch.no_grad():
        net32.c.copy_(net.c)
    s32 = net32.simulate(x.float()).score
    assert s32.dtype == torch.float32
    torch.testing.assert_close(s32, full.float(), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_heun_converges_at_second_order():
    x = torch.full((1, 3), 0.2, dtype=F64)
    ref = toy(T=4.0, solver=RK4(dt=0.01)).simulate(x).score
    errs = [
        (toy(T=4.0, solver=Heun(dt=dt)).simulate(x).score - ref).abs().item()
        for dt in (0.2, 0.1, 0.05)
    ]
    orders = [math.log2(a / b) for a, b in zip(errs, errs[1:], strict=False)]
    assert all(1.7 < o < 2.3 for o in orders), orders


def test_divergence_is_detected_per_sample_and_clip_guards_it():
    """A strong negative coefficient drives a receiving element below its limit (§A.3)."""
    x = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], dtype=F64)
    net = toy(T=20.0, solver=Heun(dt=0.05), bound=50.0)
    res = net.simulate(x, coeffs=torch.full((net.c.numel(),), -40.0, dtype=F64))
    assert res.diverged.tolist() == [False, True]
    clipped = toy(T=20.0, solver=Heun(dt=0.05), clip=(0.0, 20.0), bound=50.0)
    res = clipped.simulate(x, coeffs=torch.full((net.c.numel(),), -40.0, dtype=F64))
    assert res.diverged.tolist() == [False, False]
    assert res.clipped.tolist() == [False, True]
    assert torch.isfinite(res.score).all()


# -- reversed network ------------------------------------------------------------------------


def test_reversed_jacobian_at_rest_is_the_transpose():
    net = toy()
    n = net.n_slots
    rest = net.rest[net.to_internal, 0][None].clone()
    drive = torch.zeros(1, n, dtype=F64)
    c = net.c.detach()
    jf = torch.autograd.functional.jacobian(lambda e: net.rhs(e, drive, c), rest)[0, :, 0, :]
    jr = torch.autograd.functional.jacobian(lambda e: net.rhs_reversed(e, drive, c), rest)
    torch.testing.assert_close(jr[0, :, 0, :], jf.T, rtol=0, atol=1e-14)
    assert (jf != jf.T).any()  # not trivially symmetric


# -- method 2 --------------------------------------------------------------------------------


@pytest.mark.slow
def test_method2_g1_correlates_with_finite_difference_gradient():
    """docs/models.md §A.6: G1/T² against e·∂s/∂c (paper-derived check: 0.99987)."""
    net = toy()
    w, T = net.wiring, net.config.T
    x = torch.tensor([[0.05, 0.1, 0.08]], dtype=F64)
    with torch.no_grad():
        fwd = net.simulate(x)
        e = torch.zeros_like(fwd.score) - fwd.score  # target 0: e = y* - s
        g1 = fwd.integral[:, w.src] * net.simulate_reversed(e).integral[:, w.dst]
        n_links, eps = w.n_links, 1e-5
        cc = net.c.expand(2 * n_links, n_links).clone()
        idx = torch.arange(n_links)
        cc[idx, idx] += eps
        cc[n_links + idx, idx] -= eps
        sp = net.simulate(x.expand(2 * n_links, 3), coeffs=cc).score
    fd = (e * (sp[:n_links] - sp[n_links:]) / (2 * eps)).sum(1)
    corr = torch.corrcoef(torch.stack([g1[0] / T**2, fd]))[0, 1]
    assert corr >= 0.99


def test_method2_step_is_the_soft_clipped_rule_and_reduces_loss():
    net = toy(T=20.0, solver=Heun(dt=0.05))
    x = torch.tensor([[0.2, 0.1, 0.3], [0.1, 0.3, 0.2]], dtype=F64)
    y = torch.zeros(2, dtype=torch.long)
    # one output: softmax coding would give zero error, so use the squared-error coding
    method = Method2(kt=2.0, eta=0.5, c_range=(-3.0, 3.0), target=TargetCoding(kind="onehot"))
    c_old = net.c.detach().clone()
    with torch.no_grad():
        f = net.simulate(x)
        b = net.simulate_reversed(output_error(f.score, y, method.target))
        g1 = f.integral[:, net.wiring.src] * b.integral[:, net.wiring.dst] / 20.0**2
    rep, g2 = method2_step(net, x, y, method)
    torch.testing.assert_close(g2, (torch.atan(2.0 * g1) / 2.0).mean(0))
    torch.testing.assert_close(net.c.detach(), (c_old + 0.5 * g2).clamp(-3.0, 3.0))
    assert rep.n_diverged == 0 and rep.update_norm > 0


@pytest.mark.slow
def test_method2_and_bptt_lower_the_loss_on_a_tiny_task():
    """One output, onehot coding: push the score of a fixed input towards 0.5."""
    coding = TargetCoding(kind="onehot", amplitude=0.5)
    x = torch.tensor([[0.3, 0.2, 0.4]], dtype=F64)
    y = torch.zeros(1, dtype=torch.long)
    net = toy(T=20.0, solver=Heun(dt=0.1))
    losses = [method2_step(net, x, y, Method2(eta=20.0, target=coding))[0].loss for _ in range(5)]
    assert losses[-1] < 0.7 * losses[0]
    net = toy(T=10.0, solver=Heun(dt=0.2), checkpoint_every=10)
    opt = torch.optim.Adam([net.c], lr=0.3)
    m = Backprop(lr=0.3, target=coding)
    losses = [bptt_step(net, x, y, m, opt).loss for _ in range(4)]
    assert losses[-1] < 0.85 * losses[0]


def test_bptt_gradient_matches_finite_differences_with_checkpointing():
    net = toy(T=5.0, solver=Heun(dt=0.1), checkpoint_every=7)
    x = torch.tensor([[0.2, 0.1, 0.3]], dtype=F64)
    net.simulate(x).score.sum().backward()
    g = net.c.grad.clone()
    eps, k = 1e-6, 3
    cp, cm = net.c.detach().clone(), net.c.detach().clone()
    cp[k] += eps
    cm[k] -= eps
    with torch.no_grad():
        fd = (net.simulate(x, coeffs=cp).score - net.simulate(x, coeffs=cm).score).sum() / (2 * eps)
    torch.testing.assert_close(g[k], fd, rtol=1e-6, atol=1e-10)


def _jitter_K(net: WuxingNetwork, seed: int = 3) -> None:
    """Give every neuron its own parameters (still K1 > K2, a stable rest state)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        net.K.mul_(1 + 0.1 * torch.randn(net.K.shape, generator=g, dtype=net.K.dtype))
        net.K[0] = torch.maximum(net.K[0], net.K[1] + 0.05)
        net.update_rest_states()


def test_bptt_gradient_in_K_matches_finite_differences_through_the_rest_state():
    """K moves each neuron's rest state, which the links measure from: the gradient sees it.

    (Compiled steps give the same gradient: test_wuxing_steady's compiled-step test.)
    """
    net = toy(T=5.0, solver=Heun(dt=0.1), checkpoint_every=10)
    _jitter_K(net)
    x = torch.tensor([[0.2, 0.1, 0.3], [0.5, 0.0, 0.4]], dtype=F64)
    net.K.requires_grad_(True)
    net.simulate(x).score.pow(2).sum().backward()
    g = net.K.grad.clone()
    net.K.requires_grad_(False)

    def loss_at(K: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            net.K.copy_(K)
            net.update_rest_states()
            return net.simulate(x).score.pow(2).sum()

    K0, eps = net.K.clone(), 1e-6
    # input, hidden and output neurons, each of K1, K2, K3
    for idx in [(0, 1, 2), (1, 3, 4), (2, 0, 5), (0, 4, 7), (2, 2, 0), (1, 0, 7)]:
        kp, km = K0.clone(), K0.clone()
        kp[idx] += eps
        km[idx] -= eps
        fd = (loss_at(kp) - loss_at(km)) / (2 * eps)
        torch.testing.assert_close(g[idx], fd, rtol=1e-5, atol=1e-12)
    loss_at(K0)


@pytest.mark.slow
def test_training_K_by_backprop_lowers_the_loss_and_keeps_every_rest_state_valid():
    coding = TargetCoding(kind="onehot", amplitude=0.5)
    x = torch.tensor([[0.3, 0.2, 0.4], [0.1, 0.5, 0.0]], dtype=F64)
    y = torch.zeros(2, dtype=torch.long)
    net = toy(T=10.0, solver=Heun(dt=0.2), checkpoint_every=10)
    K0 = net.K.clone()
    c_only = Backprop(lr=1e-9, target=coding)  # c all but frozen: any progress is K's
    before = train(net, x, y, method=c_only, epochs=1, batch_size=2).extras["steps"][0].loss
    m = Backprop(lr=1e-9, k_lr=0.05, target=coding, K_range=(0.3, 2.0), margin=0.1)
    res = train(net, x, y, method=m, epochs=8, batch_size=2)
    assert res.extras["steps"][-1].loss < 0.7 * before
    assert not net.K.requires_grad and net.K.grad is None  # left as it was found
    assert (net.K - K0).abs().amax() > 0.05
    assert net.K.min() >= 0.3 and net.K.max() <= 2.0
    assert (net.K[0] - net.K[1]).min() >= 0.1 - 1e-12
    rest = net.rest.clone()
    net.update_rest_states()  # the stored rest states are those of the trained K
    torch.testing.assert_close(net.rest, rest)


def test_a_K_step_that_costs_a_rest_state_is_undone(monkeypatch):
    from quasineuron.wuxing.training import _project_K

    net = toy(T=1.0, solver=Heun(dt=0.1))
    old, rest = net.K.clone(), net.rest.clone()
    with torch.no_grad():
        net.K.mul_(1.5)
    real, calls = net.update_rest_states, []

    def fail_once() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("no positive stable rest state")
        real()

    monkeypatch.setattr(net, "update_rest_states", fail_once)
    with torch.no_grad():
        _project_K(net, Backprop(k_lr=0.01), old)
    torch.testing.assert_close(net.K, old)
    torch.testing.assert_close(net.rest, rest)
    with torch.no_grad():  # a valid step is kept, clipped to the range and the margin
        net.K.copy_(old * 3.0)
        net.K[1, 0, 0] = net.K[0, 0, 0]
        _project_K(net, Backprop(k_lr=0.01, K_range=(0.1, 2.0), margin=0.2), old)
    assert net.K.max() <= 2.0 and (net.K[0] - net.K[1]).min() >= 0.2 - 1e-12
    assert not torch.equal(net.rest, rest)


def test_training_K_needs_the_taped_time_simulation():
    with pytest.raises(ValueError, match="through must be 'window'"):
        Backprop(k_lr=0.01, through="steady-state")
    with pytest.raises(ValueError, match="k_lr"):
        Backprop(k_lr=-1.0)
    with pytest.raises(ValueError, match="K_range"):
        Backprop(K_range=(0.0, 1.0))
    with pytest.raises(ValueError, match="margin must be below"):
        Backprop(K_range=(0.1, 0.2), margin=0.2)
    net = toy(T=1.0, solver=Heun(dt=0.1), adjoint=True)
    x, y = torch.zeros(1, 3, dtype=F64), torch.zeros(1, dtype=torch.long)
    with pytest.raises(ValueError, match="adjoint"):
        train(net, x, y, method=Backprop(k_lr=0.01), epochs=1)
    assert not net.K.requires_grad


def _bptt_grad(net: WuxingNetwork, x: torch.Tensor) -> torch.Tensor:
    net.c.grad = None
    net.simulate(x).score.pow(2).sum().backward()
    return net.c.grad.clone()


@pytest.mark.parametrize("readout", ["final", "mean"])
@pytest.mark.slow
def test_adjoint_gradient_converges_to_the_taped_one(readout):
    """Same forward values; the adjoint gradient is the continuous one, O(dt^2) from the tape."""
    x = torch.tensor([[0.2, 0.1, 0.3], [0.5, 0.0, 0.4]], dtype=F64)
    errs = []
    for dt in (0.2, 0.1):
        cfg = {"T": 30.0, "solver": Heun(dt=dt), "readout": readout}
        tape, adj = toy(**cfg), toy(**cfg, adjoint=True, checkpoint_every=25)
        same = adj.simulate(x).score - tape.simulate(x).score
        assert same.abs().max() < 1e-14
        g = _bptt_grad(tape, x)
        errs.append(float((_bptt_grad(adj, x) - g).norm() / g.norm()))
    assert errs[1] < 2e-4, errs
    assert errs[1] < errs[0] / 4, errs  # at least second order


@pytest.mark.slow
def test_adjoint_freezes_and_reports_a_diverging_sample():
    x = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], dtype=F64)
    net = toy(T=20.0, solver=Heun(dt=0.05), bound=50.0, adjoint=True)
    with torch.no_grad():
        net.c.fill_(-40.0)
    res = net.simulate(x)
    assert res.diverged.tolist() == [False, True]
    res.score[0].sum().backward()
    assert torch.isfinite(net.c.grad).all()


def test_adjoint_settings_are_checked():
    with pytest.raises(ValueError, match="clip=None"):
        SimConfig(adjoint=True)
    with pytest.raises(ValueError, match="Heun"):
        SimConfig(adjoint=True, clip=None, solver=RK4(dt=0.1))
    with pytest.raises(ValueError, match="compile"):
        SimConfig(adjoint=True, clip=None, solver=Heun(dt=0.1, compile=True))
    with pytest.raises(TypeError, match="bool"):
        SimConfig(adjoint=1, clip=None)


def test_bad_inputs_are_rejected_with_a_hint():
    net = toy(T=1.0)
    with pytest.raises(ValueError, match="n_in=3"):
        net.simulate(torch.zeros(2, 4, dtype=F64))
    with pytest.raises(ValueError, match="T must be"):
        SimConfig(T=-1.0)
    with pytest.raises(ValueError, match="c_range"):
        Method2(c_range=(1.0, -1.0))
