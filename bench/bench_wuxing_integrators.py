"""Error against steps of the Wuxing MODEL1 window for Euler, Heun and RK4.

    python bench/bench_wuxing_integrators.py [--batch 8] [--threads 2] [--json F]

The window's two quantities that training uses, in float64 (fused kernel), against a tight
reference (RK4, dt = 0.005, checked against RK4 dt = 0.01):

- ``score``: the window read-out ``(1/T) ∫ D dt`` at the 10 read-out slots (forward run);
- ``F``: ``(1/T) ∫ D dt`` of every slot of the forward run (method 2's forward integrals);
- ``R``: the same of the reversed run driven by the reference's output error (method 2's
  reversed integrals).

Errors are the largest absolute error over samples and slots relative to the largest
reference value; cost is right-hand-side evaluations per window (stages × steps). MNIST test
digits when the ``shared/data/mnist`` folder beside the checkout (or ``--data``) holds them,
else uniform pixels;
coefficients uniform in [-1, 1] (seed 0), the same network as ``bench_wuxing_step.py``.
``--no-clip``: coefficients uniform in [0, 1], without the state clip (a clamp is a kink in
the dynamics: where it acts, every method converges at first order).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch

from quasineuron.devices.ode import RK4, Euler, Heun
from quasineuron.wuxing import SimConfig, TargetCoding, WuxingNetwork, model_wiring, output_error

CLIP: tuple[float, float] | None = (0.0, 50.0)
STAGES = {"Euler": 1, "Heun": 2, "RK4": 4}
GRID = {
    "Euler": [0.1, 0.05, 0.025, 0.0125],
    "Heun": [0.5, 0.25, 0.1, 0.05, 0.025, 0.0125],
    "RK4": [1.0, 0.5, 0.25, 0.1, 0.05],
}


def pixels(batch: int, data: str) -> torch.Tensor:
    if os.path.isdir(data):
        from quasineuron.data.mnist import load_mnist

        _, test = load_mnist(data)
        return test.x[:batch].double()
    torch.manual_seed(1)
    return torch.rand(batch, 784, dtype=torch.float64)


def run(net: WuxingNetwork, solver, x: torch.Tensor, e: torch.Tensor) -> dict[str, torch.Tensor]:
    net.config = SimConfig(solver=solver, clip=CLIP)
    with torch.no_grad():
        fwd = net.simulate(x)
        rev = net.simulate_reversed(e)
    T = net.config.T
    return {"score": fwd.score, "F": fwd.integral / T, "R": rev.integral / T}


def error(a: dict, ref: dict) -> dict[str, float]:
    # samples the reference run keeps finite (a run that diverges where it does not: NaN)
    ok = {k: ref[k].isfinite().all(1) for k in ref}
    return {k: float((a[k] - ref[k])[ok[k]].abs().max() / ref[k][ok[k]].abs().max()) for k in ref}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    # the worktree's sibling shared/ folder, wherever the bench is run from
    here = os.path.dirname(os.path.abspath(__file__))
    p.add_argument("--data", default=os.path.join(here, "..", "..", "shared", "data", "mnist"))
    p.add_argument("--no-clip", action="store_true", help="SimConfig(clip=None)")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    global CLIP
    CLIP = None if a.no_clip else CLIP
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    net = WuxingNetwork(model_wiring("MODEL1"), dtype=torch.float64)
    with torch.no_grad():
        # without the clip, negative couplings let states run away: positive ones instead
        net.c.uniform_(0.0 if a.no_clip else -1.0, 1.0)
    x = pixels(a.batch, a.data)
    # the reversed run is driven by the output error of the reference forward run
    net.config = SimConfig(solver=RK4(dt=0.005), clip=CLIP)
    with torch.no_grad():
        y = torch.arange(a.batch) % 10
        e = output_error(net.simulate(x).score, y, TargetCoding())
    t0 = time.perf_counter()
    ref = run(net, RK4(dt=0.005), x, e)
    check = error(run(net, RK4(dt=0.01), x, e), ref)
    print(f"reference RK4 dt=0.005 ({time.perf_counter() - t0:.0f} s); vs dt=0.01: {check}")
    rows = []
    for name, dts in GRID.items():
        cls = {"Euler": Euler, "Heun": Heun, "RK4": RK4}[name]
        for dt in dts:
            out = run(net, cls(dt=dt), x, e)
            err = error(out, ref)
            finite = all(math.isfinite(v) for v in err.values())
            steps = net.config.n_steps
            rows.append(
                {"solver": name, "dt": dt, "steps": steps, "rhs": STAGES[name] * steps, **err}
            )
            print(
                f"{name:5s} dt={dt:<7g} rhs/window={STAGES[name] * steps:6d}  "
                + "  ".join(f"{k}={v:.2e}" for k, v in err.items())
                + ("" if finite else "  (diverged)"),
                flush=True,
            )
    fewest = {}
    for tol in (1e-2, 1e-3, 1e-4):
        ok = [r for r in rows if max(r["score"], r["F"], r["R"]) <= tol]
        best = min(ok, key=lambda r: r["rhs"]) if ok else None
        fewest[f"{tol:g}"] = None if best is None else {k: best[k] for k in ("solver", "dt", "rhs")}
    out = {
        "batch": a.batch,
        "pixels": "mnist test" if os.path.isdir(a.data) else "uniform",
        "reference": "RK4 dt=0.005",
        "clip": CLIP,
        "reference_vs_dt_0.01": check,
        "rows": rows,
        "fewest_rhs_for_tolerance": fewest,
    }
    print(json.dumps(fewest, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
