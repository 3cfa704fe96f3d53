"""The fused Wuxing kernel equals the torch path (forward, reversed, gradients) to round-off."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from quasineuron.devices.ode import RK4, Euler, Heun
from quasineuron.wuxing import SimConfig, WuxingNetwork, kernel, one_to_one_wiring

pytestmark = pytest.mark.skipif(not kernel.available(), reason="no C compiler for the kernel")

# a clip low enough to be hit, so the clamp and its gradient mask are exercised
CLIP = (0.0, 1.3)


def _net(solver, clip=CLIP, checkpoint_every=7) -> WuxingNetwork:
    torch.manual_seed(0)
    cfg = SimConfig(T=4.0, solver=solver, clip=clip, checkpoint_every=checkpoint_every)
    net = WuxingNetwork(one_to_one_wiring((6, 5, 3), links=(9, 7)), config=cfg, dtype=torch.float64)
    with torch.no_grad():
        net.c.uniform_(-1.5, 1.5)
    return net


def _both(net: WuxingNetwork, run):
    out = []
    for fused in (True, False):
        net.config = dataclasses.replace(net.config, fused=fused)
        out.append(run())
    return out


@pytest.mark.parametrize("solver", [Heun(dt=0.1), Euler(dt=0.05), RK4(dt=0.2)], ids=repr)
@pytest.mark.parametrize("clip", [CLIP, None])
@pytest.mark.parametrize("reverse", [False, True])
def test_simulation_equals_torch_path(solver, clip, reverse) -> None:
    net = _net(solver, clip)
    # 11 samples: one full block of 8 float64 lanes and a padded one
    x = 2.0 * torch.rand(11, 6, dtype=torch.float64)
    with torch.no_grad():
        a, b = _both(net, lambda: net.simulate_reversed(x[:, :3]) if reverse else net.simulate(x))
    torch.testing.assert_close(a.integral, b.integral, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a.final, b.final, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a.score, b.score, rtol=1e-12, atol=1e-12)
    assert torch.equal(a.diverged, b.diverged) and torch.equal(a.clipped, b.clipped)
    if clip is not None and not reverse:
        assert b.clipped.any()  # the clip did act


def test_per_sample_coefficients_and_divergence() -> None:
    net = _net(Heun(dt=0.1), clip=None)
    x = 2.0 * torch.rand(5, 6, dtype=torch.float64)
    coeffs = torch.rand(5, net.c.numel(), dtype=torch.float64) * 3 - 1.5
    coeffs[2] = 40.0  # blows up
    with torch.no_grad():
        a, b = _both(net, lambda: net.simulate(x, coeffs=coeffs))
    assert torch.equal(a.diverged, b.diverged) and bool(b.diverged[2])
    ok = ~b.diverged
    torch.testing.assert_close(a.integral[ok], b.integral[ok], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("solver", [Heun(dt=0.1), Euler(dt=0.05), RK4(dt=0.2)], ids=repr)
@pytest.mark.parametrize("readout", ["mean", "final"])
@pytest.mark.parametrize("clip", [CLIP, None])
def test_backprop_through_time_equals_torch_path(solver, readout, clip) -> None:
    net = _net(solver, clip)
    net.config = dataclasses.replace(net.config, readout=readout)
    x = (2.0 * torch.rand(11, 6, dtype=torch.float64)).requires_grad_()
    y = torch.randint(0, 3, (11,))

    def grads():
        net.c.grad, x.grad = None, None
        sim = net.simulate(x)
        # the final state enters the loss too, so its gradient path is checked as well
        loss = torch.nn.functional.cross_entropy(sim.score, y) + 0.1 * sim.final.square().mean()
        loss.backward()
        return net.c.grad.clone(), x.grad.clone()

    (gc_f, gx_f), (gc_t, gx_t) = _both(net, grads)
    net.config = dataclasses.replace(net.config, fused=True)
    assert net._fused_applies(x.T, x.T, net.rest.double(), net.c)  # the kernel's reverse ran
    assert gc_t.abs().max() > 1e-4
    torch.testing.assert_close(gc_f, gc_t, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(gx_f, gx_t, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("solver", [Heun(dt=0.1), RK4(dt=0.2)], ids=repr)
def test_backprop_per_sample_coefficients_reversed(solver) -> None:
    net = _net(solver, checkpoint_every=None)
    err = torch.randn(4, 3, dtype=torch.float64)
    coeffs = (torch.rand(4, net.c.numel(), dtype=torch.float64) * 3 - 1.5).requires_grad_()

    def grad():
        coeffs.grad = None
        net.simulate_reversed(err, coeffs=coeffs).integral.sin().sum().backward()
        return coeffs.grad.clone()

    a, b = _both(net, grad)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("solver", [Heun(dt=0.1), Euler(dt=0.05), RK4(dt=0.2)], ids=repr)
@pytest.mark.parametrize("clip", [CLIP, None])
@pytest.mark.parametrize("reverse", [False, True])
def test_neuron_parameter_gradients_equal_torch_path(solver, clip, reverse) -> None:
    # K enters the kernel as each slot's rates and through the rest state the links and the
    # integral measure from; both paths of the gradient are checked
    net = _net(solver, clip)
    net.K.requires_grad_(True)
    x = 2.0 * torch.rand(11, 6, dtype=torch.float64)
    err = torch.randn(11, 3, dtype=torch.float64)

    def grads():
        net.K.grad, net.c.grad = None, None
        if reverse:
            sim = net.simulate_reversed(err)
            loss = sim.integral.sin().sum()
        else:
            sim = net.simulate(x)
            loss = sim.score.square().sum() + 0.1 * sim.final.square().mean()
        loss.backward()
        return net.K.grad.clone(), net.c.grad.clone()

    (gk_f, gc_f), (gk_t, gc_t) = _both(net, grads)
    assert gk_t.abs().max() > 1e-4
    torch.testing.assert_close(gk_f, gk_t, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gc_f, gc_t, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("solver", [Heun(dt=0.1), Euler(dt=0.05), RK4(dt=0.2)], ids=repr)
def test_backprop_through_time_equals_finite_differences(solver) -> None:
    # no clip: the loss is smooth in the coefficients, so central differences (step 1e-6,
    # error ~1e-12 in float64) check the reverse itself, not only its agreement with autograd
    net = _net(solver, clip=None)
    x = 2.0 * torch.rand(5, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (5,))

    def loss() -> torch.Tensor:
        sim = net.simulate(x)
        return torch.nn.functional.cross_entropy(sim.score, y) + 0.1 * sim.final.square().mean()

    net.c.grad = None
    loss().backward()
    grad = net.c.grad.clone()
    eps = 1e-6
    for j in torch.randperm(net.c.numel())[:4].tolist():
        with torch.no_grad():
            c0 = net.c[j].item()
            net.c[j] = c0 + eps
            up = loss().item()
            net.c[j] = c0 - eps
            down = loss().item()
            net.c[j] = c0
        fd = (up - down) / (2 * eps)
        assert abs(fd - grad[j].item()) <= 1e-6 * max(1.0, abs(fd)), (j, fd, grad[j].item())


def test_float32_close_to_float64() -> None:
    net = _net(Heun(dt=0.1))
    x = 2.0 * torch.rand(20, 6, dtype=torch.float64)
    with torch.no_grad():
        ref = net.simulate(x).integral
        net32 = net.float()
        assert net32._fused_applies(x.float().T, x.float().T, net32.rest.float(), net32.c)
        got = net32.simulate(x.float()).integral
    torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-4)


def test_dispatch() -> None:
    net = _net(Heun(dt=0.1))
    E = torch.zeros(net.n_slots, 2, dtype=torch.float64)
    rest = net.rest.double()
    assert net._fused_applies(E, E, rest, net.c)
    net.config = dataclasses.replace(net.config, fused=False)
    assert not net._fused_applies(E, E, rest, net.c)
    net.config = dataclasses.replace(net.config, fused=True, solver=RK4(dt=0.1))
    assert net._fused_applies(E, E, rest, net.c)  # RK4 gradients run in the kernel too
    net.config = dataclasses.replace(net.config, solver=Heun(dt=0.1, compile=True))
    assert not net._fused_applies(E, E, rest, net.c)  # torch.compile asked for explicitly
    net.config = dataclasses.replace(net.config, solver=Heun(dt=0.1))
    assert net._fused_applies(E, E, rest.requires_grad_(), net.c)  # gradient w.r.t. K too


def test_no_compiler_falls_back_with_a_note(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(kernel, "_LIB", None)
    monkeypatch.setattr(kernel, "_TRIED", False)
    monkeypatch.setenv("QUASINEURON_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    net = _net(Heun(dt=0.1))
    x = torch.rand(3, 6, dtype=torch.float64)
    with pytest.warns(UserWarning, match="fused Wuxing kernel is unavailable"):
        got = net.simulate(x).integral
    net.config = dataclasses.replace(net.config, fused=False)
    torch.testing.assert_close(got, net.simulate(x).integral, rtol=0, atol=0)


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_a_forked_child_runs_the_kernel() -> None:
    import multiprocessing as mp

    net = _net(Heun(dt=0.1))
    x = torch.rand(40, 6, dtype=torch.float64)  # several blocks: the thread pool is used
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.no_grad():
            want = net.simulate(x).integral
            ctx = mp.get_context("fork")
            with ctx.Pool(1) as pool:
                got = pool.apply_async(_simulate_in_child, (net, x)).get(timeout=20)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def _simulate_in_child(net: WuxingNetwork, x: torch.Tensor) -> torch.Tensor:
    torch.set_num_threads(2)
    with torch.no_grad():
        return net.simulate(x).integral


def _kernel_node(t: torch.Tensor):
    """The fused kernel's node in the graph behind ``t``."""
    todo, seen = [t.grad_fn], set()
    while todo:
        node = todo.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if type(node).__name__ == "_FusedRunBackward":
            return node
        todo.extend(f for f, _ in node.next_functions)
    raise AssertionError("no fused kernel node in the graph")


def test_backprop_memory_grows_as_sqrt_of_the_steps() -> None:
    # 2500 and 10,000 Heun steps on the small network: the kept states plus the recomputed
    # segment, (n/s + s) states, must grow as √n with s = ⌈√n⌉ (2×), where a fixed segment
    # of 25 grows 3.1× and keeping every state 4×
    x = 2.0 * torch.rand(5, 6, dtype=torch.float64)
    sizes, grads = [], []
    for T, every in ((250.0, "sqrt"), (1000.0, "sqrt"), (250.0, None)):
        net = _net(Heun(dt=0.1), checkpoint_every=every)
        net.config = dataclasses.replace(net.config, T=T)
        sim = net.simulate(x)
        node = _kernel_node(sim.integral)
        call, ckpt = node.call, node.saved[2]
        state = ckpt[0, 0].nbytes  # one block's state
        # what the reverse allocates: the kept states (a tensor) + its recomputed segment (the
        # state, Heun's stage state and the clip mask of each step)
        kept = kernel.kept_per_step(call.solver, bool(call.net.clip))  # Heun, clipped: 3
        sizes.append(ckpt.nbytes + kept * call.net.seg * state)
        assert node.buffer_bytes >= sizes[-1]
        sim.score.sum().backward()
        grads.append(net.c.grad.clone())
    assert sizes[1] < 2.5 * sizes[0]
    # checkpoints recompute the same steps: the gradient of the one-segment reverse, bit for bit
    assert torch.equal(grads[0], grads[2])
    assert sizes[2] > 2 * sizes[0]  # the one-segment reverse does keep every state


@pytest.mark.parametrize("solver", [Heun(dt=0.1), Euler(dt=0.05), RK4(dt=0.2)], ids=repr)
def test_segment_length_does_not_change_the_gradient(solver) -> None:
    x = 2.0 * torch.rand(11, 6, dtype=torch.float64)
    grads = []
    for every in (None, "sqrt", 3, 1):
        net = _net(solver, checkpoint_every=every)
        net.simulate(x).score.sum().backward()
        grads.append(net.c.grad.clone())
    for g in grads[1:]:
        assert torch.equal(g, grads[0])


def test_checkpoint_every_sqrt_resolves_and_validates() -> None:
    assert SimConfig().segment_steps == 25  # √600 rounded up: the default window's segment
    assert SimConfig(T=7.5).segment_steps == 13  # √150
    assert SimConfig(checkpoint_every=7).segment_steps == 7
    assert SimConfig(checkpoint_every=None).segment_steps is None
    for bad in (0, "cube", True, 2.5):
        with pytest.raises(ValueError, match="int >= 1, 'sqrt' or None"):
            SimConfig(checkpoint_every=bad)
