"""Memory and time of one backprop-through-time step on MODEL1: tape, checkpoints, adjoint.

    python bench/bench_wuxing_bptt_memory.py [--threads 1] [--batch 32] [--T 40] [--dt 0.2]
                                             [--json F]
    python bench/bench_wuxing_bptt_memory.py --sweep-T 7.5 15 30 [--dt 0.05] [--json F]

Each variant runs in a fresh process (so that peak memory is its own): one
:func:`~quasineuron.wuxing.bptt_step` on the MODEL1 network (4711 links, float32, Heun, no
state clip, coefficients uniform in [0, 1], random pixels), after an untimed forward run.
Reported: the rise of the process's peak resident memory during the step, its time, and the
gradient's relative distance to the taped one. The children run with glibc's
``MALLOC_MMAP_THRESHOLD_=65536``, so that freed tensors go back to the system and the peak is
that of live memory (with glibc's default, adaptive threshold, freed memory stays with the
process and every variant looks as large as the taped one). Variants (``SimConfig`` settings):

- ``tape``: every step's graph kept (``checkpoint_every=None``) — the baseline;
- ``checkpoint5``, ``checkpoint25``: states kept every 5 or 25 steps, the steps in between
  recomputed in the backward pass;
- ``adjoint25``: ``adjoint=True``, the adjoint ODE solved backwards, its state reconstruction
  restarted from the forward states kept every 25 steps;
- ``adjoint``: ``adjoint=True, checkpoint_every=None``, the textbook adjoint (the state is
  reconstructed by integrating the network backwards over the whole window).

These run on the torch path (``fused=False``). With ``--sweep-T T1 T2 ...`` the fused kernel
(the default on CPUs, default clip) is measured instead, at every window length in the same
run, each in its own process: ``fused-sqrt`` (states kept every ⌈√n_steps⌉ steps, the
default), ``fused-25`` (every 25 steps at any T) and ``fused-all`` (every state kept,
``checkpoint_every=None``); besides the resident-memory rise, the bytes the kernel allocates
(:func:`quasineuron.wuxing.kernel.bptt_buffer_bytes`), and the gradient against ``fused-all``
at the same T.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

VARIANTS = {
    "tape": {"checkpoint_every": None},
    "checkpoint5": {"checkpoint_every": 5},
    "checkpoint25": {"checkpoint_every": 25},
    "adjoint25": {"checkpoint_every": 25, "adjoint": True},
    "adjoint": {"checkpoint_every": None, "adjoint": True},
}
FUSED = {
    "fused-sqrt": {"checkpoint_every": "sqrt"},
    "fused-25": {"checkpoint_every": 25},
    "fused-all": {"checkpoint_every": None},
}


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(a: argparse.Namespace) -> None:
    """One variant in this process; writes its numbers and gradient to ``a.child``."""
    from quasineuron.devices.ode import Heun
    from quasineuron.wuxing import (
        Backprop,
        SimConfig,
        WuxingNetwork,
        bptt_step,
        kernel,
        model_wiring,
    )

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if a.variant in FUSED:
        kw = FUSED[a.variant]
        config = SimConfig(T=a.T, solver=Heun(dt=a.dt), readout="final", **kw)
    else:
        kw = {**VARIANTS[a.variant], "fused": False}
        config = SimConfig(T=a.T, solver=Heun(dt=a.dt), clip=None, readout="final", **kw)
    net = WuxingNetwork(model_wiring("MODEL1"), config=config)
    with torch.no_grad():
        net.c.uniform_(0.0, 1.0)
    x = torch.rand(a.batch, 784)
    y = torch.randint(0, 10, (a.batch,))
    with torch.no_grad():
        net.simulate(x)
    opt = torch.optim.SGD([net.c], lr=0.0)  # keeps c: every variant sees the same point
    before = _peak_mib()
    t0 = time.perf_counter()
    report = bptt_step(net, x, y, Backprop(), opt)
    seconds = time.perf_counter() - t0
    out = Path(a.child)
    torch.save(net.c.grad, out.with_suffix(".pt"))
    row = {"peak_rise_mib": _peak_mib() - before, "seconds": seconds}
    row["diverged"] = report.n_diverged
    if a.variant in FUSED:
        row["segment"] = config.segment_steps or config.n_steps
        n_slots, n_links = net.n_slots, net.c.numel()
        b = kernel.bptt_buffer_bytes(
            n_slots, n_links, a.batch, config.n_steps, row["segment"], torch.float32, a.threads
        )
        row["kernel_buffer_mib"] = b / 2**20
    out.write_text(json.dumps(row))


def _run_child(a: argparse.Namespace, name: str, T: float, tmp: str) -> tuple[dict, torch.Tensor]:
    f = Path(tmp) / f"{name}-{T}.json"
    args = [sys.executable, __file__, "--variant", name, "--child", str(f)]
    args += ["--threads", str(a.threads), "--batch", str(a.batch)]
    args += ["--T", str(T), "--dt", str(a.dt)]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    subprocess.run(args, check=True, env=env)
    return json.loads(f.read_text()), torch.load(f.with_suffix(".pt"))


def sweep(a: argparse.Namespace) -> None:
    """The fused kernel's step at each window length of ``a.sweep_T``, in one run."""
    load = os.getloadavg()[0]
    rows: dict[str, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for T in a.sweep_T:
            res, grads = {}, {}
            for name in FUSED:
                res[name], grads[name] = _run_child(a, name, T, tmp)
            g0 = grads["fused-all"]
            for name, r in res.items():
                r["grad_rel_diff_vs_all"] = float((grads[name] - g0).norm() / g0.norm())
            rows[str(T)] = res
    T0 = str(a.sweep_T[0])
    for res in rows.values():
        for name, r in res.items():
            r["kernel_buffer_vs_first_T"] = (
                r["kernel_buffer_mib"] / rows[T0][name]["kernel_buffer_mib"]
            )
            r["peak_rise_vs_first_T"] = r["peak_rise_mib"] / rows[T0][name]["peak_rise_mib"]
    out = {
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "device": "cpu",
            "threads": a.threads,
            "load_average_before": load,
            "load_average_after": os.getloadavg()[0],
        },
        "batch": a.batch,
        "dt": a.dt,
        "solver": "Heun",
        "n_steps": {T: round(float(T) / a.dt) for T in rows},
        "by_T": rows,
    }
    print(json.dumps(out, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--T", type=float, default=40.0)
    p.add_argument("--dt", type=float, default=0.2)
    p.add_argument("--json", default=None)
    p.add_argument("--sweep-T", type=float, nargs="+", default=None, metavar="T")
    p.add_argument("--variant", choices=sorted({**VARIANTS, **FUSED}), help=argparse.SUPPRESS)
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(a)
        return
    if a.sweep_T:
        sweep(a)
        return
    res: dict[str, dict] = {}
    grads: dict[str, torch.Tensor] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in VARIANTS:
            f = Path(tmp) / f"{name}.json"
            args = [sys.executable, __file__, "--variant", name, "--child", str(f)]
            args += ["--threads", str(a.threads), "--batch", str(a.batch)]
            args += ["--T", str(a.T), "--dt", str(a.dt)]
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
            subprocess.run(args, check=True, env=env)
            res[name] = json.loads(f.read_text())
            grads[name] = torch.load(f.with_suffix(".pt"))
    g0, base = grads["tape"], res["tape"]
    for name, r in res.items():
        r["memory_vs_tape"] = r["peak_rise_mib"] / base["peak_rise_mib"]
        r["time_vs_tape"] = r["seconds"] / base["seconds"]
        r["grad_rel_diff_vs_tape"] = float((grads[name] - g0).norm() / g0.norm())
    out = {
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "device": "cpu",
            "threads": a.threads,
        },
        "batch": a.batch,
        "T": a.T,
        "dt": a.dt,
        "n_steps": round(a.T / a.dt),
        "variants": res,
    }
    print(json.dumps(out, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
