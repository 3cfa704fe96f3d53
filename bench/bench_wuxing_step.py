"""Samples/s of one method-2 training step on the Wuxing MODEL1 network, with its floor.

    python bench/bench_wuxing_step.py [--device cpu|cuda] [--threads 2] [--batch 32] [--compile]
                                      [--json F]

Measures, in one run on one machine:
- ``window``: the paper's step, forward + reversed time simulation over T = 30 (Heun,
  dt = 0.05, float32), ``G1`` from the integrals, update of the 4711 coefficients;
- ``forward``: the forward time simulation alone (the baseline: a step is two such runs);
- ``steady``: the same rule from the layer-by-layer steady states (``estimate="steady"``);
- with ``--compile``: the forward simulation and the window step again with
  ``Heun(dt, compile=True, unroll=5)`` (each 5 steps of the whole network one
  ``torch.compile``'d function), and one step of backprop through time (``Backprop``, Adam),
  eager and compiled; compilation happens in the untimed warm-up call.

and prints the ratios against ``forward`` together with the arithmetic and memory floor of the
window step (per sample; S = 10,220 slots, L = 4711 links, 600 Heun steps per run, 2 runs):
arithmetic ≈ 33·S + 4·L flop per Heun step (two right-hand sides of ≈ 14 flop per slot, the
quadrature and the update), memory ≈ 33 elementwise passes over S floats of ≈ 12 bytes each
per step as written (unfused), and ≈ 2 passes if a fused kernel kept E and ∫D in registers.
"""

from __future__ import annotations

import argparse
import json
import platform

import torch

from bench_gpu import _best  # same folder: the timing helper of the GPU benchmark
from quasineuron.devices.ode import Heun
from quasineuron.wuxing import (
    Backprop,
    Method2,
    SimConfig,
    WuxingNetwork,
    bptt_step,
    method2_step,
    model_wiring,
)


def floor(n_slots: int, n_links: int, n_steps: int) -> dict[str, float]:
    """Arithmetic and memory floor of one window step per sample (2 runs of n_steps)."""
    flop_step = 33 * n_slots + 4 * n_links
    return {
        "flop_per_sample": 2 * n_steps * flop_step,
        "bytes_per_sample_unfused": 2 * n_steps * 33 * n_slots * 12,
        "bytes_per_sample_fused": 2 * n_steps * 2 * n_slots * 12,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--compile", action="store_true", help="also time the compiled steps")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    torch.manual_seed(0)
    config = SimConfig(T=30.0, solver=Heun(dt=0.05))
    net = WuxingNetwork(model_wiring("MODEL1"), config=config).to(device)
    with torch.no_grad():
        net.c.uniform_(-1.0, 1.0)
    x = torch.rand(a.batch, 784, device=device)
    y = torch.randint(0, 10, (a.batch,), device=device)
    window, steady = Method2(), Method2(estimate="steady")

    def fwd() -> None:
        with torch.no_grad():
            net.simulate(x)

    c0 = net.c.detach().clone()

    def step(method: Method2) -> None:
        with torch.no_grad():
            net.c.copy_(c0)
        method2_step(net, x, y, method)

    t_fwd = _best(fwd, device, a.reps)
    t_win = _best(lambda: step(window), device, a.reps)
    t_std = _best(lambda: step(steady), device, a.reps)
    compiled: dict[str, float] = {}
    if a.compile:
        opt = torch.optim.Adam([net.c], lr=1e-3)

        def bptt() -> None:
            with torch.no_grad():
                net.c.copy_(c0)
            bptt_step(net, x, y, Backprop(), opt)

        t_bptt = _best(bptt, device, a.reps)
        net.config = SimConfig(T=30.0, solver=Heun(dt=0.05, compile=True, unroll=5))
        t_fwd_c = _best(fwd, device, a.reps)
        t_win_c = _best(lambda: step(window), device, a.reps)
        t_bptt_c = _best(bptt, device, a.reps)
        net.config = config
        compiled = {
            "forward_compiled": a.batch / t_fwd_c,
            "window_step_compiled": a.batch / t_win_c,
            "bptt_step": a.batch / t_bptt,
            "bptt_step_compiled": a.batch / t_bptt_c,
        }
        speedup = {"forward": t_fwd / t_fwd_c, "window_step": t_win / t_win_c,
                   "bptt_step": t_bptt / t_bptt_c}  # fmt: skip
    fl = floor(net.n_slots, net.wiring.n_links, config.n_steps)
    sps = a.batch / t_win
    out = {
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "device": a.device,
            "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
            "threads": a.threads,
        },
        "batch": a.batch,
        "config": repr(config),
        "samples_per_s": {
            "forward": a.batch / t_fwd,
            "window_step": sps,
            "steady_step": a.batch / t_std,
            **compiled,
        },  # fmt: skip
        "ratio_vs_forward": {"window_step": t_win / t_fwd, "steady_step": t_std / t_fwd},
        "compiled_speedup": speedup if a.compile else None,
        "floor": fl,
        "achieved": {
            "gflop_per_s": fl["flop_per_sample"] * sps / 1e9,
            "gb_per_s_unfused": fl["bytes_per_sample_unfused"] * sps / 1e9,
        },  # fmt: skip
    }
    print(json.dumps(out, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
