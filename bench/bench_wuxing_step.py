"""Samples/s of the Wuxing MODEL1 network's time steps: the fused kernel against the torch path.

    python bench/bench_wuxing_step.py [--threads 2] [--batch 64] [--repeats 3] [--json F]
                                      [--T 30] [--dt 0.05] [--readout mean] [--train-k]
    python bench/bench_wuxing_step.py --legacy [--device cpu|cuda] [--batch 32] [--compile]

Default: in one run on one machine, interleaved and repeated ``--repeats`` times, the torch path
(``SimConfig(fused=False)``, the baseline) and the fused kernel (``fused=True``, the default) on
MODEL1 {784, 839, 283, 96, 32, 10} (4711 links), T = 30, Heun dt = 0.05, float32 (``--T``,
``--dt``, ``--readout`` set the window):

- ``forward``: the forward time simulation (no gradient);
- ``method2``: one method-2 step (forward + reversed simulation, ``G1`` from the integrals,
  update of the coefficients);
- ``bptt``: one backprop-through-time step (cross-entropy, Adam), states kept every
  ⌈√n_steps⌉ steps (the default);
- ``bptt_k`` (with ``--train-k``): the same step that also trains the neurons' parameters
  ``K`` (Adam over the coefficients and ``K``).

It prints samples/s of each (median, min, max over the repeats) and the ratio fused/torch of
each repeat, the one-time compile time of the kernel (in a fresh cache folder), the load
average before and after, and the arithmetic the fused kernel does per sample against the
float32 matmul rate of the same cores measured in the same run (``fraction_of_floor``: that
arithmetic at the matmul rate over the measured time; the kernel is vector code without the
matmul's reuse, so 1 is not reachable, but the figure shows how far from the machine it is).
With ``--threads`` above 1 the torch path also runs on one thread, interleaved in the same run
(``baseline_one_thread``): at small batches it is faster there than on several threads, so
``ratio_over_best_torch`` divides the fused rate by the better of the two.

``--legacy``: the earlier measurement of this bench (torch path only, with ``--compile`` the
``torch.compile``'d steps), kept for the tables in BENCHMARKS.md measured with it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import tempfile
import time

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


def legacy(a: argparse.Namespace) -> None:
    """The earlier measurement: torch path only (optionally compiled), window vs forward."""
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    torch.manual_seed(0)
    config = SimConfig(T=30.0, solver=Heun(dt=0.05), fused=False)
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
        net.config = SimConfig(T=30.0, solver=Heun(dt=0.05, compile=True, unroll=5), fused=False)
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
        speedup = {
            "forward": t_fwd / t_fwd_c,
            "window_step": t_win / t_win_c,
            "bptt_step": t_bptt / t_bptt_c,
        }
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
        },
        "ratio_vs_forward": {"window_step": t_win / t_fwd, "steady_step": t_std / t_fwd},
        "compiled_speedup": speedup if a.compile else None,
        "floor": fl,
        "achieved": {
            "gflop_per_s": fl["flop_per_sample"] * sps / 1e9,
            "gb_per_s_unfused": fl["bytes_per_sample_unfused"] * sps / 1e9,
        },
    }
    print(json.dumps(out, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


def kernel_flop(n_slots: int, n_links: int, n_steps: int) -> dict[str, float]:
    """Floating-point operations of the fused kernel per sample (its own operation count).

    Per Heun step: two right-hand sides (7 per slot for the neuron equation and its drive, 3
    per link), the stage state (2 per slot), the quadrature (5) and the update (3): 24 S + 6 L.
    The backward pass per step recomputes the forward step without the quadrature (19 S + 6 L)
    and then does two right-hand sides and two transposed ones (9 per slot, 4 per link) and
    ≈ 12 per slot of bookkeeping: 44 S + 14 L.
    """
    step = 24 * n_slots + 6 * n_links
    back = 19 * n_slots + 6 * n_links + 44 * n_slots + 14 * n_links
    return {
        "forward": n_steps * step,
        "method2": 2 * n_steps * step,
        "bptt": n_steps * (step + back),
    }


def matmul_gflops(threads: int) -> float:
    """float32 matmul rate of these cores (GFlop/s), best of 3."""
    a = torch.rand(2048, 2048)
    a @ a
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t0)
    return 2 * 2048**3 / best / 1e9


def compile_seconds() -> float:
    """Seconds to compile and load the kernel from an empty cache folder."""
    from quasineuron.wuxing import kernel

    old = os.environ.get("QUASINEURON_CACHE")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["QUASINEURON_CACHE"] = tmp
        lib, tried = kernel._LIB, kernel._TRIED
        kernel._LIB, kernel._TRIED = None, False
        t0 = time.perf_counter()
        ok = kernel.available()
        seconds = time.perf_counter() - t0
        kernel._LIB, kernel._TRIED = lib, tried
    if old is None:
        del os.environ["QUASINEURON_CACHE"]
    else:
        os.environ["QUASINEURON_CACHE"] = old
    return seconds if ok else float("nan")


def cpu_model() -> str:
    """The CPU's model name (Linux), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def compare(a: argparse.Namespace) -> dict:
    """Fused kernel against the torch path, interleaved, ``a.repeats`` times."""
    torch.set_num_threads(a.threads)
    load_before = os.getloadavg()
    torch.manual_seed(0)
    config = SimConfig(T=a.T, solver=Heun(dt=a.dt), readout=a.readout)
    net = WuxingNetwork(model_wiring("MODEL1"), config=config)
    with torch.no_grad():
        net.c.uniform_(-1.0, 1.0)
    x = torch.rand(a.batch, 784)
    y = torch.randint(0, 10, (a.batch,))
    c0, K0 = net.c.detach().clone(), net.K.detach().clone()
    opt = torch.optim.Adam([net.c], lr=1e-3)
    opt_k = torch.optim.Adam([net.c, net.K], lr=1e-3)

    def reset() -> None:
        with torch.no_grad():
            net.c.copy_(c0)
            net.K.copy_(K0)

    def forward() -> None:
        with torch.no_grad():
            net.simulate(x)

    def method2() -> None:
        reset()
        method2_step(net, x, y, Method2())

    def bptt() -> None:
        reset()
        bptt_step(net, x, y, Backprop(), opt)

    def bptt_k() -> None:
        reset()
        net.K.requires_grad_(True)
        try:
            bptt_step(net, x, y, Backprop(), opt_k)
        finally:
            net.K.requires_grad_(False)

    jobs = {"forward": forward, "method2": method2, "bptt": bptt}
    if a.train_k:
        jobs["bptt_k"] = bptt_k
    seconds = compile_seconds()
    t0 = time.perf_counter()
    net.config = dataclasses.replace(config, fused=True)
    forward()  # first call: compile (cached) + index
    first_call = time.perf_counter() - t0
    for path in ("torch", "fused"):  # untimed warm-up of every job on both paths (short window)
        net.config = dataclasses.replace(config, T=config.T / 20, fused=path == "fused")
        for job in jobs.values():
            job()
    # "torch1": the torch path on one thread, in the same run (with several threads the torch
    # path splits small tensors and can be slower than on one): the baseline is the better one
    paths = ("torch", "fused") + (("torch1",) if a.threads > 1 else ())
    rates: dict[str, dict[str, list[float]]] = {p: {} for p in paths}
    # samples per second of this process's CPU time (all its threads): on a shared machine
    # this is what a step would take on cores of its own, where wall time counts the waits
    cpu_rates: dict[str, dict[str, list[float]]] = {p: {} for p in paths}
    for r in range(a.repeats):
        for name, job in jobs.items():
            for path in paths[r % len(paths) :] + paths[: r % len(paths)]:
                net.config = dataclasses.replace(config, fused=path == "fused")
                torch.set_num_threads(1 if path == "torch1" else a.threads)
                t, c = time.perf_counter(), time.process_time()
                job()
                rate = a.batch / (time.perf_counter() - t)
                torch.set_num_threads(a.threads)
                rates[path].setdefault(name, []).append(rate)
                cpu_rates[path].setdefault(name, []).append(a.batch / (time.process_time() - c))
                print(f"repeat {r}: {name:8s} {path:5s} {rate:8.2f} samples/s", flush=True)
    load_after = os.getloadavg()
    gflops = matmul_gflops(a.threads)
    flop = kernel_flop(net.n_slots, net.wiring.n_links, config.n_steps)
    flop["bptt_k"] = flop["bptt"]

    def summary(v: list[float]) -> dict[str, float]:
        return {"median": statistics.median(v), "min": min(v), "max": max(v)}

    ratio = {
        k: [f / t for f, t in zip(rates["fused"][k], rates["torch"][k], strict=True)] for k in jobs
    }
    # the better torch thread count of each job, median against median
    best_torch = {
        k: max(statistics.median(rates[p][k]) for p in paths if p != "fused") for k in jobs
    }
    out = {
        "machine": {
            "platform": platform.platform(),
            "processor": cpu_model(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
        },
        "threads": a.threads,
        "batch": a.batch,
        "dtype": "float32",
        "config": repr(config),
        "repeats": a.repeats,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "samples_per_s": {k: statistics.median(rates["fused"][k]) for k in jobs},
        "baseline": {"samples_per_s": {k: statistics.median(rates["torch"][k]) for k in jobs}},
        **(
            {
                "baseline_one_thread": {
                    "samples_per_s": {k: statistics.median(rates["torch1"][k]) for k in jobs}
                }
            }
            if "torch1" in rates
            else {}
        ),
        "spread": {p: {k: summary(v) for k, v in rates[p].items()} for p in rates},
        "samples_per_cpu_s": {p: {k: summary(v) for k, v in cpu_rates[p].items()} for p in rates},
        "ratio_fused_over_torch": {k: summary(v) for k, v in ratio.items()},
        "ratio_over_best_torch": {
            k: statistics.median(rates["fused"][k]) / best_torch[k] for k in jobs
        },
        "kernel_compile_s": seconds,
        "first_call_s": first_call,
        "matmul_gflop_per_s": gflops,
        "kernel_flop_per_sample": flop,
        "fraction_of_floor": {
            k: flop[k] * statistics.median(rates["fused"][k]) / (gflops * 1e9) for k in jobs
        },
    }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--legacy", action="store_true", help="the earlier torch-path measurement")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=None, help="64 (32 with --legacy)")
    p.add_argument("--reps", type=int, default=2, help="--legacy: best of this many")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--T", type=float, default=30.0, help="window length")
    p.add_argument("--dt", type=float, default=0.05, help="Heun step")
    p.add_argument("--readout", default="mean", choices=("mean", "final"))
    p.add_argument("--train-k", action="store_true", help="also time BPTT that trains K")
    p.add_argument("--compile", action="store_true", help="--legacy: also the compiled steps")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    if a.legacy:
        a.batch = a.batch or 32
        legacy(a)
        return
    a.batch = a.batch or 64
    out = compare(a)
    print(json.dumps(out, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
