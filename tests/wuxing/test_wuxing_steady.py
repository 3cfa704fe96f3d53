"""Steady state of a Wuxing network, method 1, the mixed method and twin training."""

from __future__ import annotations

import math

import pytest
import torch

from quasineuron.data import ArrayDataset
from quasineuron.devices.ode import RK4, Heun
from quasineuron.training import Callback, fit
from quasineuron.training.config import Cosine
from quasineuron.wuxing import (
    Backprop,
    Method1,
    Method2,
    Mixed,
    SimConfig,
    TargetCoding,
    WuxingNetwork,
    bptt_step,
    evaluate,
    method1_signal,
    method1_step,
    method2_step,
    one_to_one_wiring,
    signals,
    train,
)

F64 = torch.float64


def toy(seed: int = 1, c_low: float = 0.5, c_high: float = 1.5, **cfg) -> WuxingNetwork:
    """The 3 -> 4 -> 1 network (11 links) of docs/models.md §A.6, coefficients U(c_low, c_high)."""
    wiring = one_to_one_wiring((3, 4, 1), links=(7, 4), seed=seed)
    config = SimConfig(**({"T": 300.0, "solver": RK4(dt=0.05), "readout": "final"} | cfg))
    net = WuxingNetwork(wiring, config=config, dtype=F64)
    with torch.no_grad():
        net.c.uniform_(c_low, c_high, generator=torch.Generator().manual_seed(0))
    return net


@pytest.mark.parametrize("clip", [None, (0.0, 50.0)])
@pytest.mark.slow
def test_steady_state_is_the_long_time_limit_forward_and_reversed(clip):
    net = toy(c_low=-1.5, clip=clip)
    x = torch.rand(6, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        st, sim = net.steady_state(x), net.simulate(x)
        assert bool(st.converged.all())
        torch.testing.assert_close(st.signal, sim.final - net.rest_state(), atol=1e-8, rtol=0)
        torch.testing.assert_close(st.score, sim.score, atol=1e-8, rtol=0)
        e = 0.3 * torch.randn(6, 1, dtype=F64, generator=torch.Generator().manual_seed(2))
        rev, rsim = net.steady_state_reversed(e), net.simulate_reversed(e)
        rest_rev = net.rest_rev[net.to_internal, 0]
        torch.testing.assert_close(rev.signal, rsim.final - rest_rev, atol=1e-8, rtol=0)


@pytest.mark.slow
def test_steady_state_with_a_clipped_neuron_matches_the_guarded_time_simulation():
    """Strong negative drives have no fixed point; the clip holds the neuron at E = 0."""
    net = toy(c_low=-3.0, c_high=-2.0, T=200.0, solver=Heun(dt=0.05))
    x = torch.tensor([[0.9, 0.8, 0.9], [0.1, 0.0, 0.05]], dtype=F64)
    with torch.no_grad():
        st, sim = net.steady_state(x), net.simulate(x)
    assert bool(sim.clipped[0]) and bool(st.converged.all())
    torch.testing.assert_close(st.signal, sim.final - net.rest_state(), atol=1e-7, rtol=0)


def test_steady_state_gradient_is_the_implicit_one():
    net = toy(c_low=-1.0)
    x = torch.tensor([[0.3, 0.1, 0.2], [0.05, 0.4, 0.1]], dtype=F64)
    c = net.c.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda cc: net.steady_state(x, coeffs=cc).score, (c,))


@pytest.mark.slow
def test_steady_method2_signal_is_the_window_one_for_a_long_window():
    """``F/T → D*`` and ``R/T → D̂*``: the two estimates of G1 agree for T ≫ settling."""
    net = toy(T=400.0, solver=Heun(dt=0.05), readout="mean")
    x = torch.tensor([[0.05, 0.1, 0.08]], dtype=F64)
    y = torch.zeros(1, dtype=torch.long)
    coding = TargetCoding(kind="onehot", amplitude=0.5)
    w = net.wiring
    sw = signals(net, x, y, coding, "window")
    ss = signals(net, x, y, coding, "steady-state")
    gw = sw.F[:, w.src] * sw.R[:, w.dst]
    gs = ss.F[:, w.src] * ss.R[:, w.dst]
    assert torch.corrcoef(torch.cat([gw, gs]))[0, 1] > 0.99
    torch.testing.assert_close(gs, gw, rtol=0.1, atol=1e-3 * float(gs.abs().max()))


def _fd_K(net: WuxingNetwork, x: torch.Tensor, e: torch.Tensor, k: int) -> torch.Tensor:
    """Finite-difference ``e · ∂s*/∂K_k`` (relative steps) for every (element, neuron)."""
    K0 = net.K.clone()
    out = torch.zeros(5, net.wiring.n_neurons, dtype=F64)
    h = 1e-6
    for el in range(5):
        for n in range(net.wiring.n_neurons):
            vals = []
            for sgn in (1.0, -1.0):
                net.K.copy_(K0)
                net.K[k, el, n] *= 1 + sgn * h
                net.update_rest_states()
                vals.append(net.steady_state(x).score)
            out[el, n] = (e * (vals[0] - vals[1])).sum() / (2 * h)
    net.K.copy_(K0)
    net.update_rest_states()
    return out


@pytest.mark.parametrize("k", [0, 1, 2])
@pytest.mark.slow
def test_method1_signal_correlates_with_the_finite_difference_gradient(k):
    """docs/models.md §A.7: g_k (per neuron and element) against e · K ∂s/∂K (small signals)."""
    net = toy()
    x = torch.tensor([[0.05, 0.1, 0.08]], dtype=F64)
    with torch.no_grad():
        st = net.steady_state(x)
        e = -st.score  # target 0
        R = net.steady_state_reversed(e).signal
        g = method1_signal(net, st.signal, R)[0, k]  # (neuron, element)
        # multiplicative update: compare g·K with the gradient in relative steps
        fd = _fd_K(net, x, e, k).T  # (neuron, element)
    corr = torch.corrcoef(torch.stack([(g * net.K[k].T).flatten(), fd.flatten()]))[0, 1]
    assert corr > 0.98


def test_method1_and_mixed_steps_keep_parameters_in_range_and_rest_states_valid():
    net = toy(c_low=-1.0)
    x = torch.rand(4, 3, dtype=F64, generator=torch.Generator().manual_seed(3))
    y = torch.zeros(4, dtype=torch.long)
    coding = TargetCoding(kind="onehot")
    m1 = Method1(
        eta=3.0, eta_i=1.0, K_range=(0.2, 2.0), margin=0.1, target=coding, estimate="steady-state"
    )
    c0, memory = net.c.detach().clone(), None
    for _ in range(3):
        rep, memory = method1_step(net, x, y, m1, memory)
    assert memory.shape == (3, 5, net.wiring.n_neurons) and rep.update_norm > 0
    K = net.K
    assert float(K.min()) >= 0.2 - 1e-12 and float(K.max()) <= 2.0 + 1e-12
    assert bool((K[0] >= K[1] + 0.1 - 1e-12).all())
    assert torch.equal(net.c.detach(), c0)  # method 1 leaves the coefficients alone
    zero = net.rest_state().new_zeros(1, net.n_slots)
    resid = net.rhs(net.rest_state()[None], zero, net.c.detach())
    assert float(resid.abs().max()) < 1e-9  # the recomputed rest is a fixed point
    mixed = Mixed(method1=m1, method2=Method2(eta=5.0), target=coding, estimate="steady-state")
    K1 = net.K.clone()
    method1_step(net, x, y, mixed)
    assert not torch.equal(net.c.detach(), c0) and not torch.equal(net.K, K1)


@pytest.mark.parametrize(
    "method",
    [
        Method2(eta=20.0, target=TargetCoding(kind="onehot"), estimate="steady-state"),
        Method1(eta=2.0, target=TargetCoding(kind="onehot"), estimate="steady-state"),
        Backprop(lr=0.2, target=TargetCoding(kind="onehot"), through="steady-state"),
    ],
    ids=["method2", "method1", "twin"],
)
def test_steady_rules_lower_the_loss(method):
    x = torch.tensor([[0.3, 0.2, 0.4]], dtype=F64)
    y = torch.zeros(1, dtype=torch.long)
    net = toy()
    losses, memory = [], None
    opt = torch.optim.Adam([net.c], lr=0.2)
    for _ in range(5):
        if isinstance(method, Method2):
            rep, _ = method2_step(net, x, y, method)
        elif isinstance(method, Method1):
            rep, memory = method1_step(net, x, y, method, memory)
        else:
            rep = bptt_step(net, x, y, method, opt)
        losses.append(rep.loss)
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.slow
def test_train_keeps_the_best_validation_epoch():
    net = toy(T=20.0, solver=Heun(dt=0.2))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, dtype=F64, generator=g)
    y = (x[:, 0] > x[:, 1]).long()
    # two outputs are needed for a class decision: a 3 -> 4 -> 2 network
    wiring = one_to_one_wiring((3, 4, 2), links=(6, 6), seed=0)
    net = WuxingNetwork(wiring, config=SimConfig(T=20.0, solver=Heun(dt=0.2)), dtype=F64)
    seen = []
    res = train(
        net,
        x,
        y,
        method=Method2(eta=5.0, estimate="steady-state"),
        epochs=3,
        batch_size=8,
        val=(x, y),
        epoch_callback=lambda ep, acc: seen.append((ep, acc)),
    )
    val_accuracy = [m.val_accuracy for m in res.history]
    assert len(val_accuracy) == 3 and [s[0] for s in seen] == [1, 2, 3]
    assert [s[1] for s in seen] == val_accuracy
    best = max(range(3), key=lambda i: (val_accuracy[i], -i))
    assert res.best_epoch == best + 1
    assert evaluate(net, x, y, mode="steady-state") == pytest.approx(val_accuracy[best])


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="estimate"):
        Method2(estimate="forever")
    with pytest.raises(ValueError, match="K_range"):
        Method1(K_range=(1.0, 0.5))
    with pytest.raises(ValueError, match="through"):
        Backprop(through="space")
    with pytest.raises(ValueError, match="mode"):
        evaluate(toy(), torch.zeros(1, 3, dtype=F64), torch.zeros(1, dtype=torch.long), mode="x")
    net = toy()
    with pytest.raises(ValueError, match="rest state"):
        net.K[0, :, 2] = 0.1  # K1 < K2 for every element of one neuron
        net.update_rest_states()


@pytest.mark.slow
def test_neuron_twin_is_exact_to_first_order_and_its_reverse_is_the_transpose():
    from quasineuron.wuxing.twin import fit_neuron_twin

    net = toy()
    twin, rep = fit_neuron_twin(net, n_samples=3000, max_steps=200, seed=0)
    # G = -J^{-1} at rest: column j is the response to a unit drive on element j (§A.3)
    torch.testing.assert_close(
        twin.gain[:, 0].double(),
        torch.tensor([0.780, 0.878, 0.488, 0.049, -0.195], dtype=F64),
        atol=5e-4,
        rtol=0,
    )
    assert rep.rmse < rep.signal_rms  # a 200-step fit: coarse for large drives
    assert rep.nrmse < 0.1  # 0.043 measured: 4 % of each element's range
    u = 1e-3 * torch.randn(50, 5, generator=torch.Generator().manual_seed(0), dtype=F64)
    rest = net.rest_state().reshape(-1, 5)[:1]
    with torch.no_grad():
        E, _ = net._steady_neurons(slice(0, 1), u[:, None, :], rest, reverse=False)
        Er, _ = net._steady_neurons(slice(0, 1), u[:, None, :], rest, reverse=True)
        rest_rev = net.rest_rev[net.to_internal, 0].reshape(-1, 5)[:1]
        exact, exact_rev = E[:, 0] - rest, Er[:, 0] - rest_rev
        torch.testing.assert_close(twin(u), exact, atol=1e-5, rtol=1e-2)
        torch.testing.assert_close(twin.reversed(u), exact_rev, atol=1e-5, rtol=1e-2)


@pytest.mark.slow
def test_training_through_the_neuron_twin_lowers_the_loss():
    from quasineuron.wuxing.twin import fit_neuron_twin

    net = toy(c_low=-1.0)
    twin, _ = fit_neuron_twin(net, n_samples=2000, max_steps=100)
    x = torch.tensor([[0.3, 0.2, 0.4]], dtype=F64)
    y = torch.zeros(1, dtype=torch.long)
    coding = TargetCoding(kind="onehot")
    for method in (
        Backprop(lr=0.2, target=coding, through="steady-state"),
        Method2(eta=20.0, target=coding, estimate="steady-state"),
    ):
        net = toy(c_low=-1.0)
        opt = torch.optim.Adam([net.c], lr=0.2)
        losses = []
        for _ in range(5):
            if isinstance(method, Backprop):
                rep = bptt_step(net, x, y, method, opt, twin)
            else:
                rep, _ = method2_step(net, x, y, method, twin)
            losses.append(rep.loss)
        assert losses[-1] < 0.8 * losses[0]


def test_adaptive_method2_step_is_adam_on_g2():
    net = toy(c_low=-1.0)
    x = torch.tensor([[0.3, 0.2, 0.4]], dtype=F64)
    y = torch.zeros(1, dtype=torch.long)
    m = Method2(
        eta=0.01, update="adaptive", target=TargetCoding(kind="onehot"), estimate="steady-state"
    )
    c0, state = net.c.detach().clone(), {}
    _, g2 = method2_step(net, x, y, m, state=state)
    # first Adam step: m̂/√v̂ = sign(G2), so every link moves by η in G2's direction
    torch.testing.assert_close(net.c.detach() - c0, 0.01 * torch.sign(g2))
    assert state["t"] == 1
    losses = [method2_step(net, x, y, m, state=state)[0].loss for _ in range(6)]
    assert losses[-1] < losses[0]


def _fd_c(net: WuxingNetwork, x: torch.Tensor, e: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    """Finite-difference ``Σ e · ∂s*/∂c`` (steady state, e held fixed) for every link."""
    c0 = net.c.detach().clone()
    out = torch.zeros_like(c0)
    for k in range(c0.numel()):
        cp, cm = c0.clone(), c0.clone()
        cp[k] += h
        cm[k] -= h
        sp = net.steady_state(x, coeffs=cp).score
        sm = net.steady_state(x, coeffs=cm).score
        out[k] = (e * (sp - sm)).sum() / (2 * h)
    return out


def test_operating_point_reversal_gives_the_exact_gradient_signal():
    """Large drives: the operating-point G1 is e·∂s*/∂c exactly; the paper's rest one is not."""
    net = toy(c_low=-1.5, c_high=2.5)
    x = torch.tensor([[0.9, 0.2, 1.0], [0.6, 1.0, 0.1]], dtype=F64)
    y = torch.zeros(2, dtype=torch.long)
    coding = TargetCoding(kind="onehot", amplitude=0.5)
    w = net.wiring
    with torch.no_grad():
        op = signals(net, x, y, coding, "steady-state", reversal="operating")
        rest = signals(net, x, y, coding, "steady-state")
        fd = _fd_c(net, x, op.error)
    g_op = (op.F[:, w.src] * op.R[:, w.dst]).sum(0)
    g_rest = (rest.F[:, w.src] * rest.R[:, w.dst]).sum(0)
    torch.testing.assert_close(g_op, fd, rtol=1e-5, atol=1e-8)
    assert float((g_rest - fd).norm()) > 0.05 * float(fd.norm())  # the rest linearisation
    torch.testing.assert_close(op.F, rest.F)  # the same forward signals


def test_operating_point_reversal_is_the_paper_reversal_for_small_signals():
    net = toy()
    x = 1e-3 * torch.tensor([[0.5, 1.0, 0.8]], dtype=F64)
    y = torch.zeros(1, dtype=torch.long)
    coding = TargetCoding(kind="onehot", amplitude=1e-3)
    with torch.no_grad():
        op = signals(net, x, y, coding, "steady-state", reversal="operating")
        rest = signals(net, x, y, coding, "steady-state")
    scale = float(rest.R.abs().max())
    torch.testing.assert_close(op.R, rest.R, rtol=0, atol=1e-2 * scale)


def test_operating_point_reversal_settings_are_checked():
    with pytest.raises(ValueError, match="estimate='steady-state'"):
        Method2(reversal="operating")  # the default estimate is the time window
    with pytest.raises(ValueError, match="reversal"):
        Method2(reversal="sideways", estimate="steady-state")
    with pytest.raises(ValueError, match="reversal"):
        Mixed(
            method2=Method2(reversal="operating", estimate="steady-state"), estimate="steady-state"
        )
    net = toy()
    x, y = torch.zeros(1, 3, dtype=F64), torch.zeros(1, dtype=torch.long)
    with pytest.raises(ValueError, match="reversal"):
        signals(net, x, y, TargetCoding(), "window", reversal="operating")


def _xor_data() -> tuple[WuxingNetwork, torch.Tensor, torch.Tensor]:
    wiring = one_to_one_wiring((3, 4, 2), links=(6, 6), seed=0)
    net = WuxingNetwork(wiring, config=SimConfig(T=20.0, solver=Heun(dt=0.2)), dtype=F64)
    x = torch.rand(16, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    return net, x, (x[:, 0] > x[:, 1]).long()


@pytest.mark.slow
def test_cosine_schedule_decays_the_step_after_the_first_epoch():
    net, x, y = _xor_data()
    # kt → 0: G2 = G1; a tiny η keeps c (and so G1 of the one full batch) nearly fixed, so
    # each step's size is the schedule's factor times the first one's
    m = Method2(eta=1e-4, estimate="steady-state", kt=1e-3)
    res = train(net, x, y, method=m, epochs=4, batch_size=16, schedule=Cosine())
    assert res.extras["epochs_planned"] == 4 and len(res.extras["steps"]) == 4
    norms = torch.tensor([s.update_norm for s in res.extras["steps"]])
    # epoch 1 at the full step, then (1 + cos(π k/3)) / 2 for k = 0, 1, 2
    torch.testing.assert_close(
        norms / norms[0], torch.tensor([1.0, 1.0, 0.75, 0.25], dtype=norms.dtype), rtol=1e-2, atol=0
    )
    with pytest.raises(TypeError, match="schedule"):
        train(net, x, y, method=m, schedule="cosine")


@pytest.mark.slow
def test_sample_budget_stops_training_and_the_cosine_spans_it():
    net, x, y = _xor_data()
    m = Method2(eta=1e-4, estimate="steady-state", kt=1e-3)  # step sizes as in the test above
    res = train(net, x, y, method=m, epochs=9, batch_size=4, max_samples=17, schedule=Cosine())
    # ceil(17 / 4) = 5 steps: one epoch of 4 and one step of the second, which counts as planned
    assert (
        len(res.extras["steps"]) == 5
        and res.samples_seen == 20
        and res.extras["epochs_planned"] == 2
    )
    # a budget that ends at an epoch's end begins no empty epoch (nothing validated twice)
    res = train(net, x, y, method=m, epochs=9, batch_size=4, max_samples=16, val=(x, y))
    assert (
        len(res.extras["steps"]) == 4
        and res.extras["epochs_planned"] == 1
        and len(res.history) == 1
    )
    res = train(
        net, x, y, method=m, epochs=1, batch_size=16, max_samples=10 * 16, schedule=Cosine()
    )
    assert (
        len(res.extras["steps"]) == 1 and res.extras["epochs_planned"] == 1
    )  # never more than `epochs`
    res = train(
        net, x[:8], y[:8], method=m, epochs=4, batch_size=8, max_samples=32, schedule=Cosine()
    )
    norms = torch.tensor([s.update_norm for s in res.extras["steps"]])
    # no full-step first epoch: (1 + cos(π k/4)) / 2 for k = 0..3 from the first step
    want = torch.tensor([(1 + math.cos(math.pi * k / 4)) / 2 for k in range(4)], dtype=F64)
    torch.testing.assert_close(norms / norms[0], want.to(norms.dtype), rtol=1e-2, atol=0)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="max_samples"):
            train(net, x, y, method=m, max_samples=bad)


@pytest.mark.slow
def test_compiled_time_step_equals_the_eager_one_forward_reversed_and_gradient():
    import copy

    x = torch.tensor([[0.9, 0.2, 1.0], [0.3, 0.6, 0.1]], dtype=F64)
    e = torch.tensor([[0.3], [-0.2]], dtype=F64)
    out = {}
    for solver in (Heun(dt=0.1), Heun(dt=0.1, compile=True, unroll=2)):
        net = toy(c_low=-1.0, T=1.0, solver=solver)  # 10 steps: 5 fused calls of 2
        net.K.requires_grad_(True)  # the gradient in K too (Backprop(k_lr > 0))
        res = net.simulate(x)
        (res.score.square().sum() + res.integral.sum()).backward()
        rev = net.simulate_reversed(e)
        out[solver.compile] = (
            res.score.detach(),
            res.integral.detach(),
            net.c.grad.clone(),
            net.K.grad.clone(),
            rev.integral.detach(),
            res.clipped,
        )
    for a, b in zip(out[False], out[True], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert net._compiled is not None and copy.deepcopy(net)._compiled is None


def test_weight_decay_is_decoupled_and_augment_sees_every_batch():
    net, x, y = _xor_data()
    c0 = net.c.detach().clone()
    lr, wd = 0.01, 0.5
    after = {}
    for decay in (0.0, wd):
        with torch.no_grad():
            net.c.copy_(c0)
        m = Backprop(lr=lr, through="steady-state", weight_decay=decay, c_range=(-9.0, 9.0))
        train(net, x[:6], y[:6], method=m, epochs=1, batch_size=6)
        after[decay] = net.c.detach().clone()
    # AdamW's first step is Adam's plus exactly the decoupled shrink lr·wd·c
    torch.testing.assert_close(after[wd] - after[0.0], -lr * wd * c0, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="weight_decay"):
        Backprop(weight_decay=-1.0)

    seen = []

    def spy(xb, gen):
        seen.append(xb.shape[0])
        return torch.zeros_like(xb)

    m = Backprop(lr=lr, through="steady-state")
    losses = []
    for data, augment in ((x, spy), (torch.zeros_like(x), None), (x, None)):
        with torch.no_grad():
            net.c.copy_(c0)
        res = train(net, data, y, method=m, epochs=2, batch_size=6, augment=augment)
        losses.append([s.loss for s in res.extras["steps"]])
    assert seen == [6, 6, 4, 6, 6, 4]
    # the steps trained on what augment returned (blank images), on the same batches
    assert losses[0] == losses[1] != losses[2]


class _CutAt(Callback):
    def __init__(self, step: int) -> None:
        self.at = step

    def on_step(self, state, output):
        if state.step == self.at:
            raise KeyboardInterrupt


def _method1_run(tmp, cut=None):
    net, x, y = _xor_data()
    # the integral term carries memory from step to step: the checkpoint must hold it
    method = Method1(eta=0.5, eta_i=0.5, estimate="steady-state").bound(val_mode="steady-state")
    res = fit(
        net,
        ArrayDataset(x, y),
        method,
        epochs=2,
        batch_size=8,
        seed=1,
        val_data=ArrayDataset(x[:8], y[:8]),
        checkpoint_dir=tmp,
        resume=cut is None,
        progress=False,
        callbacks=[_CutAt(cut)] if cut else [],
    )
    return res, net


def test_a_wuxing_method_resumes_bit_identically_through_fit(tmp_path):
    full, net_full = _method1_run(tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        _method1_run(tmp_path / "cut", cut=3)  # 2 steps per epoch: inside epoch 2
    resumed, net_resumed = _method1_run(tmp_path / "cut")
    assert resumed.resumed_from_epoch == 1
    assert torch.equal(net_full.K, net_resumed.K) and torch.equal(net_full.c, net_resumed.c)
    assert [m.val_accuracy for m in full.history] == [m.val_accuracy for m in resumed.history]


def test_the_fidelity_nrmse_is_range_normalised_not_per_entry():
    # the neuron twin's report uses it (it reported an error relative to each entry, 3.03
    # for a twin within 2 % of each element's range)
    from quasineuron.surrogate.report import pooled_nrmse

    # column 0 spans 2 and is off by 0.1 everywhere; column 1 is exact but crosses zero, where
    # an error relative to each entry would blow up
    target = torch.tensor([[-1.0, -1e-6], [1.0, 1e-6], [0.0, 1.0]])
    err = torch.tensor([[0.1, 0.0], [0.1, 0.0], [-0.1, 0.0]])
    span = (target.amax(0) - target.amin(0)).numpy()
    assert pooled_nrmse(err.numpy(), span) == pytest.approx(math.sqrt((0.1 / 2) ** 2 / 2))
    # a zero range counts as 1
    assert pooled_nrmse(torch.full((3, 1), 0.5).numpy(), [0.0]) == pytest.approx(0.5)
