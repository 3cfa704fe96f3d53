"""Throughput of ODE device solves: neuron-solves per second for the Wuxing neuron.

Workload: the five-element Wuxing neuron (docs/models.md §A.1), one drive on element 0, drawn
uniformly from the default domain [-0.5, 2.0], from rest over T = 10, readout the time average
of all five signals, float32, at the accuracy of RK4 with dt = 0.1.

Methods:
    ours-eager-batch      ODEDevice, RK4(dt=0.1), layout="batch"
    ours-eager-rows       ODEDevice, RK4(dt=0.1), layout="rows"
    ours-compiled-rows    ODEDevice, RK4(dt=0.1, compile=True, unroll=U), layout="rows"
    ours-compiled-batch   ODEDevice, RK4(dt=0.1, compile=True, unroll=U), layout="batch"
    torchdiffeq-rk4       torchdiffeq.odeint(method="rk4", step_size=0.1), quadrature state
    torchode-dopri5-fixed torchode Dopri5 with a fixed step 0.1 (torchode has no RK4)
    scipy-loop            scipy solve_ivp(RK45, rtol=1e-5, atol=1e-7) per point, on a sample

Compile time is excluded (one warm-up call per shape) and reported separately. Rates are the
best of a few repeats (the machine may be shared). ``max_err`` is the largest deviation from a
DOP853 (rtol 1e-10) float64 reference on a few points.

Usage:
    python bench/bench_ode_throughput.py [--quick] [--json out.json] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
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


# ---- the methods -------------------------------------------------------------------------------


def ours(layout: str, compile_: bool, unroll: int) -> Callable[[torch.Tensor], torch.Tensor]:
    dev = wuxing_neuron(layout=layout, solver=RK4(dt=DT, compile=compile_, unroll=unroll))

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
    budget = 0.5 if args.quick else 2.0

    methods: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
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
    )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    print(f"{'method':24s} {'batch':>9s} {'solves/s':>11s} {'vs tdq':>8s} {'max_err':>9s} compile")
    for batch in batches:
        u = drives(batch)
        rates: dict[str, float] = {}
        for name, fn in methods.items():
            if name == "ours-compiled-batch" and batch > 10**5:
                continue  # slow to compile and run; its rate is flat past 1e4
            if batch / last_rate.get(name, math.inf) > args.max_run_seconds:
                print(f"{name:24s} {batch:9d} skipped (one run would exceed --max-run-seconds)")
                continue
            t0 = time.perf_counter()
            fn(u)  # warm-up (compiles once per shape for the compiled variants)
            first = time.perf_counter() - t0
            best = best_time(
                lambda fn=fn, u=u: fn(u), budget=budget, max_reps=3 if batch > 1e5 else 5
            )
            rates[name] = last_rate[name] = batch / best
            compile_s = max(first - best, 0.0) if "compiled" in name else 0.0
            results.append(
                dict(
                    method=name,
                    batch=batch,
                    rate=rates[name],
                    seconds=best,
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
        for r in results:
            if r["batch"] == batch:
                r["ratio_vs_torchdiffeq"] = None if base is None else r["rate"] / base
                ratio = "    n/a " if base is None else f"{r['ratio_vs_torchdiffeq']:7.2f}x"
                print(
                    f"{r['method']:24s} {batch:9d} {r['rate']:11.3g} "
                    f"{ratio} {r['max_err']:9.1e} "
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
