"""Characterise your own devices: a formula device and a black-box simulator that sometimes fails.

1. A formula device: any torch function of the drives, here a diode-like softplus curve.
2. A black box: a numpy function (a stand-in for a circuit simulator) that raises in one corner
   of its domain and returns NaN in another. The sweep records those points with their status
   and goes on; the spline twin fills the failed grid nodes from their neighbours.
3. Resume: the black-box sweep is interrupted after two batches (as by Ctrl-C) and run again with
   the same arguments; only the batches not yet committed to the store are evaluated.

    python examples/characterize_custom_device.py                  # a few seconds
    python examples/characterize_custom_device.py --quick          # smaller grids, for tests
    python examples/characterize_custom_device.py --out runs/mine  # where the stores go

``QUASINEURON_EXAMPLES_QUICK=1`` in the environment does the same as ``--quick``.
"""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

import quasineuron as qn


def diode(u: torch.Tensor) -> torch.Tensor:
    """A diode-like response; u (batch, 1) → (batch, 1), same dtype."""
    return torch.nn.functional.softplus(4 * u) / 4 - 0.1 * u


def simulate(u: np.ndarray) -> np.ndarray:
    """One operating point of a made-up two-terminal circuit: u (2,) = (v_gate, v_drain) → (1,).

    Like a real simulator it fails for some inputs: it raises where it "does not converge"
    (v_gate + v_drain > 2.6) and returns NaN in another corner (v_gate < -0.85 and
    v_drain < -0.85).
    """
    v_gate, v_drain = float(u[0]), float(u[1])
    if v_gate + v_drain > 2.6:
        raise RuntimeError(f"Newton iteration did not converge at v={v_gate:.3f}+{v_drain:.3f}")
    if v_gate < -0.85 and v_drain < -0.85:
        return np.array([np.nan])
    current = np.log1p(np.exp(3 * v_gate)) * np.tanh(2 * v_drain) / 3
    return np.array([current])


def interrupt_after(n_points: int) -> Callable[[np.ndarray], np.ndarray]:
    """``simulate``, but raising KeyboardInterrupt once ``n_points`` points were evaluated."""
    calls = 0

    def fn(u: np.ndarray) -> np.ndarray:
        nonlocal calls
        calls += 1
        if calls > n_points:
            raise KeyboardInterrupt  # not an Exception: the sweep stops instead of recording it
        return simulate(u)

    return fn


def make_simulator(fn: Callable[[np.ndarray], np.ndarray] = simulate) -> qn.BlackBoxDevice:
    """The black-box device around ``fn``.

    A store knows a device by its ``describe()`` (kind, name, sizes, domain, params), not by
    its code, so two devices built here resume each other's sweeps.
    """
    return qn.BlackBoxDevice(
        fn,
        n_in=2,
        n_out=1,
        domain=qn.Box(low=(-1.0, -1.0), high=(1.5, 1.5)),
        name="toy-transistor",
        params={"model": "softplus*tanh", "version": 1},
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the example; returns the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for tests")
    parser.add_argument("--out", type=Path, default=Path("runs/custom-devices"), help="stores")
    args = parser.parse_args(argv)
    quick = args.quick or os.environ.get("QUASINEURON_EXAMPLES_QUICK") == "1"

    # 1. A formula device ------------------------------------------------------------------
    dev = qn.FormulaDevice(
        diode, n_in=1, n_out=1, domain=qn.Box(low=(-2.0,), high=(2.0,)), name="diode"
    )  # the constructor probes diode() once in float32 and float64 (shape, dtype, device)
    table = qn.sweep(dev, qn.Grid(101 if quick else 401), store=args.out / "diode", progress=False)
    fit = qn.fit_surrogate(table, kind="spline", true_device=dev)
    print(f"diode: {table.summary()}\n  {fit.report.summary()}")

    # 2 + 3. A black box with failures, interrupted and resumed ----------------------------
    store = args.out / "transistor"
    shutil.rmtree(store, ignore_errors=True)  # start afresh so the demonstration is repeatable
    grid = qn.Grid(21 if quick else 41)
    batch = 64
    try:
        qn.sweep(
            make_simulator(interrupt_after(2 * batch)),
            grid,
            store=store,
            batch_size=batch,
            progress=False,
        )
    except KeyboardInterrupt:
        partial = qn.SweepTable.open(store)
        print(f"interrupted: {partial.summary()}")

    sim = make_simulator()
    table = qn.sweep(sim, grid, store=store, batch_size=batch, progress=False)
    # A batch in which a point raised is evaluated again point by point to isolate the failure,
    # so the count of evaluations exceeds the pending points when there were failures.
    print(f"resumed:     {table.summary()} ({sim.n_evaluations} point evaluations)")
    again = make_simulator()
    qn.sweep(again, grid, store=store, batch_size=batch, progress=False)
    print(f"run again:   {again.n_evaluations} points evaluated (everything was committed)")

    codes = {s.name: int((table.status == s).sum()) for s in qn.PointStatus}
    print(f"status counts: {codes}")
    first = min(table.errors)
    print(f"first error, point {first} at u={table.u[first].tolist()}: {table.errors[first]}")

    # Failed points are left out of the fit; the spline fills their grid nodes (n_failed,
    # n_filled in the report). The held-out error is the grid leave-out estimate.
    fit = qn.fit_surrogate(table, kind="spline")
    print(f"  {fit.report.summary()}; filled {fit.report.n_filled} failed nodes")
    path = qn.save_surrogate(fit, args.out / "transistor-twin.safetensors")
    twin = qn.load_surrogate(path)
    u = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    print(f"twin at u={u.tolist()[0]}: {twin(u).item():.6f}, device: {sim(u).item():.6f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
