"""Throughput of ODE device solves: neuron-solves per second for the Wuxing neuron.

Workload: the five-element Wuxing neuron (docs/models.md §A.1), one drive on element 0, drawn
uniformly from the default domain [-0.5, 2.0], from rest over T = 10, readout the time average
of all five signals, float32, at the accuracy of RK4 with dt = 0.1.

Methods:
    ours-native           ODEDevice, RK4(dt=0.1): the default path, the native C kernel
    ours-eager-batch      ODEDevice, RK4(dt=0.1, native=False), layout="batch"
    ours-eager-rows       ODEDevice, RK4(dt=0.1, native=False), layout="rows" (the former default)
    ours-compiled-rows    ODEDevice, RK4(dt=0.1, compile=True, unroll=U), layout="rows"
    ours-compiled-batch   ODEDevice, RK4(dt=0.1, compile=True, unroll=U), layout="batch"
    torchdiffeq-rk4       torchdiffeq.odeint(method="rk4", step_size=0.1), quadrature state
    torchode-dopri5-fixed torchode Dopri5 with a fixed step 0.1 (torchode has no RK4)
    scipy-loop            scipy solve_ivp(RK45, rtol=1e-5, atol=1e-7) per point, on a sample

Compile time is excluded from the rates (one warm-up call per shape) and reported separately.
Rates are the best of a few repeats, the methods interleaved round by round (the machine may be
shared, so a load change hits every method alike). ``cpu_rate`` divides by the CPU seconds of
the process instead of the wall seconds: on a loaded machine, ``cpu_rate`` times the number of
threads estimates the rate on as many idle cores. ``max_err`` is the largest deviation from a
DOP853 (rtol 1e-10) float64 reference on a few points.

The first call of the native path is timed in fresh processes: once with an empty kernel cache
(the compile included) and once more with the cache the first one left (a new process loads the
library from disk).

Usage:
    python bench/bench_ode_throughput.py [--quick] [--json out.json] [--threads 2]
        [--batches 10000,100000,1000000] [--no-compile] [--no-first-call] [--skip M1,M2]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np
import torch

from quasineuron.devices.ode import RK4, solve_reference
from quasineuron.devices.wuxing import wuxing_neuron, wuxing_rhs

T_END, DT = 10.0, 0.1
N_REF = 8


def drives(batch: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return -0.5 + 2.5 * torch.rand(batch, 1, generator=gen, dtype=torch.float32)


def best_time(fn: Callable[[], torch.Tensor], *, budget: float, max_reps: int = 5) -> float:
    times: list[float] = []
    spent = 0.0
    while len(times) < max_reps and (not times or spent < budget):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        times.append(dt)
        spent += dt
    return min(times)


def timed(fn: Callable[[], torch.Tensor]) -> tuple[float, float]:
    """Wall and process CPU seconds of one call."""
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


_FIRST_CALL = """
import time, torch
t0 = time.perf_counter()
from quasineuron.devices.wuxing import wuxing_neuron
torch.set_num_threads({threads})
u = -0.5 + 2.5 * torch.rand({batch}, 1)
t1 = time.perf_counter()
with torch.no_grad():
    wuxing_neuron()(u)
t2 = time.perf_counter()
print(t2 - t1, t2 - t0)
"""


def first_calls(threads: int, batch: int = 10_000) -> dict[str, float]:
    """First call of the native default in fresh processes: empty cache, then cached."""
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "QUASINEURON_CACHE": cache}
        code = _FIRST_CALL.format(threads=threads, batch=batch)
        for label in ("cold", "cached"):
            done = subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
            )
            call, total = (float(v) for v in done.stdout.split())
            out[f"first_call_{label}_s"] = call
            out[f"first_call_{label}_with_import_s"] = total
    out["first_call_batch"] = batch
    return out


# ---- the methods -------------------------------------------------------------------------------


def ours(
    layout: str, compile_: bool, unroll: int, native: bool = False
) -> Callable[[torch.Tensor], torch.Tensor]:
    solver = RK4(dt=DT, compile=compile_, unroll=unroll, native=native)
    dev = wuxing_neuron(layout=layout, solver=solver)

    def run(u: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return dev(u)

    return run


def torchdiffeq_rk4() -> Callable[[torch.Tensor], torch.Tensor]:
    import torchdiffeq

    rhs = wuxing_rhs(layout="batch")

    def run(u: torch.Tensor) -> torch.Tensor:
        def func(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            x = y[:, :5]
            return torch.cat([rhs(t, x, u), x], dim=1)

        y0 = torch.cat([torch.ones(u.shape[0], 5), torch.zeros(u.shape[0], 5)], dim=1)
        tt = torch.tensor([0.0, T_END])
        with torch.no_grad():
            y = torchdiffeq.odeint(func, y0, tt, method="rk4", options={"step_size": DT})[-1]
        return y[:, 5:] / T_END - 1.0

    return run


def torchode_dopri5_fixed() -> Callable[[torch.Tensor], torch.Tensor] | None:
    try:
        import torchode as to
    except ImportError:
        return None
    rhs = wuxing_rhs(layout="batch")

    def run(u: torch.Tensor) -> torch.Tensor:
        def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            x = y[:, :5]
            return torch.cat([rhs(t, x, u), x], dim=1)

        b = u.shape[0]
        y0 = torch.cat([torch.ones(b, 5), torch.zeros(b, 5)], dim=1)
        t_eval = torch.tensor([0.0, T_END]).expand(b, 2)
        term = to.ODETerm(f)
        solver = to.AutoDiffAdjoint(to.Dopri5(term=term), to.FixedStepController())
        with torch.no_grad():
            sol = solver.solve(
                to.InitialValueProblem(y0=y0, t_eval=t_eval), dt0=torch.full((b,), DT)
            )
        return sol.ys[:, -1, 5:] / T_END - 1.0

    return run


def scipy_loop(u: torch.Tensor) -> torch.Tensor:
    from scipy.integrate import solve_ivp

    out = np.empty((u.shape[0], 5))
    for i, ui in enumerate(u[:, 0].double().numpy()):

        def fun(t: float, y: np.ndarray, ui: float = ui) -> np.ndarray:
            e = y[:5]
            d = np.roll(e, 1) - 0.5 * e - 0.5 * e * np.roll(e, 2)
            d[0] += ui
            return np.concatenate([d, e])

        sol = solve_ivp(fun, (0.0, T_END), np.r_[np.ones(5), np.zeros(5)], rtol=1e-5, atol=1e-7)
        out[i] = sol.y[5:, -1] / T_END - 1.0
    return torch.from_numpy(out).float()


# ---- main ---------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="batches 1e3..1e5, fewer repeats")
    ap.add_argument("--json", type=str, default=None, help="write results to this JSON file")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument("--unroll", type=int, default=5, help="RK4 steps per compiled call")
    ap.add_argument("--no-compile", action="store_true", help="skip the compiled variants")
    ap.add_argument("--batches", type=str, default=None, help="comma-separated batch sizes")
    ap.add_argument("--skip", type=str, default="", help="comma-separated methods to leave out")
    ap.add_argument(
        "--no-first-call", action="store_true", help="skip the first-call (compile) timing"
    )
    ap.add_argument(
        "--max-run-seconds",
        type=float,
        default=60.0,
        help="skip a method at the next batch size when one run there would take longer",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = [10**3, 10**4, 10**5] if args.quick else [10**3, 10**4, 10**5, 10**6]
    if args.batches:
        batches = [int(float(b)) for b in args.batches.split(",")]
    budget = 0.5 if args.quick else 2.0

    methods: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "ours-native": ours("rows", False, 1, native=True),
        "torchdiffeq-rk4": torchdiffeq_rk4(),
        "ours-eager-batch": ours("batch", False, 1),
        "ours-eager-rows": ours("rows", False, 1),
    }
    if not args.no_compile:
        methods["ours-compiled-rows"] = ours("rows", True, args.unroll)
        methods["ours-compiled-batch"] = ours("batch", True, args.unroll)
    tode = torchode_dopri5_fixed()
    if tode is not None:
        methods["torchode-dopri5-fixed"] = tode
    for name in filter(None, args.skip.split(",")):
        methods.pop(name, None)

    # accuracy against a DOP853 float64 reference on a few points
    u_ref = drives(N_REF, seed=1)
    ref = solve_reference(wuxing_neuron(), u_ref.double()).float()
    results: list[dict] = []
    errors = {name: float((fn(u_ref) - ref).abs().max()) for name, fn in methods.items()}
    errors["scipy-loop"] = float((scipy_loop(u_ref) - ref).abs().max())

    last_rate: dict[str, float] = {}
    meta = dict(
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        cpus=os.cpu_count(),
        machine=platform.machine(),
        processor=platform.processor(),
        T=T_END,
        dt=DT,
        dtype="float32",
        unroll=args.unroll,
        load_avg_start=os.getloadavg(),
    )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    print(
        f"{'method':24s} {'batch':>9s} {'solves/s':>11s} {'per cpu-s':>10s} {'vs tdq':>8s} "
        f"{'vs old':>8s} {'max_err':>9s} compile"
    )
    first = {} if args.no_first_call else first_calls(torch.get_num_threads())
    meta.update(first)
    if first:
        print(
            f"native first call (batch {first['first_call_batch']}): "
            f"{first['first_call_cold_s']:.2f} s with an empty cache (compile included), "
            f"{first['first_call_cached_s']:.3f} s in a new process with the cache"
        )
    for batch in batches:
        u = drives(batch)
        rates: dict[str, float] = {}
        active: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
        warm: dict[str, float] = {}
        for name, fn in methods.items():
            if name == "ours-compiled-batch" and batch > 10**5:
                continue  # slow to compile and run; its rate is flat past 1e4
            if batch / last_rate.get(name, math.inf) > args.max_run_seconds:
                print(f"{name:24s} {batch:9d} skipped (one run would exceed --max-run-seconds)")
                continue
            t0 = time.perf_counter()
            fn(u)  # warm-up (compiles once per shape for the compiled variants)
            warm[name] = time.perf_counter() - t0
            active[name] = fn
        # rounds: every method once per round, so that a change of load hits them alike
        best: dict[str, tuple[float, float]] = {n: (math.inf, math.inf) for n in active}
        rounds = 3 if batch > 1e5 else 5
        for _ in range(rounds):
            for name, fn in active.items():
                if best[name][0] * rounds > budget * 4 and best[name][0] < math.inf:
                    continue  # a slow method: the rounds it had are enough
                wall, cpu = timed(lambda fn=fn, u=u: fn(u))
                if wall < best[name][0]:
                    best[name] = (wall, cpu)
        for name in active:
            wall, cpu = best[name]
            rates[name] = last_rate[name] = batch / wall
            compile_s = max(warm[name] - wall, 0.0) if "compiled" in name else 0.0
            results.append(
                dict(
                    method=name,
                    batch=batch,
                    rate=rates[name],
                    cpu_rate=batch / cpu if cpu > 0 else None,
                    seconds=wall,
                    cpu_seconds=cpu,
                    compile_seconds=compile_s,
                    max_err=errors[name],
                )
            )
        # the scipy loop: a small sample, rate extrapolated (it is linear in batch)
        n_s = min(batch, 100 if args.quick else 300)
        best = best_time(lambda n_s=n_s, u=u: scipy_loop(u[:n_s]), budget=budget, max_reps=2)
        rates["scipy-loop"] = n_s / best
        results.append(
            dict(
                method="scipy-loop",
                batch=batch,
                rate=rates["scipy-loop"],
                seconds=best * batch / n_s,
                compile_seconds=0.0,
                max_err=errors["scipy-loop"],
                sample=n_s,
            )
        )
        base = rates.get("torchdiffeq-rk4")  # None when skipped at this size
        old = rates.get("ours-eager-rows")  # the former default path
        for r in results:
            if r["batch"] == batch:
                r["ratio_vs_torchdiffeq"] = None if base is None else r["rate"] / base
                r["ratio_vs_former_default"] = None if old is None else r["rate"] / old
                ratio = "    n/a " if base is None else f"{r['ratio_vs_torchdiffeq']:7.2f}x"
                ratio_old = "    n/a " if old is None else f"{r['ratio_vs_former_default']:7.2f}x"
                cpu = r.get("cpu_rate")
                print(
                    f"{r['method']:24s} {batch:9d} {r['rate']:11.3g} "
                    f"{'' if cpu is None else f'{cpu:.3g}':>10s} "
                    f"{ratio} {ratio_old} {r['max_err']:9.1e} "
                    f"{r['compile_seconds']:.1f}s",
                    flush=True,
                )
        if args.json:  # after every batch size, so a long run leaves partial results
            meta["load_avg"] = os.getloadavg()
            with open(args.json, "w") as fh:
                json.dump({"meta": meta, "results": results}, fh, indent=2)
    assert all(math.isfinite(r["rate"]) for r in results)


if __name__ == "__main__":
    main()
