"""Throughput of the circuit devices on ngspice: one sweep per batch vs one run per point.

    python bench/bench_spice.py             # about 20 s on 2 cores
    python bench/bench_spice.py --quick     # a few seconds

Prints operating points per second for each built-in circuit neuron, best of ``--repeats``
runs, all in the same process so that the ratios share one machine load: the DC sweep in lanes
(the device's default, ``lanes=8``), the one-copy sweep (``lanes=1``, the earlier default), one
ngspice run per point (what a black box that starts the simulator for every point costs), and
the ratios; a transient readout (200 instances per run); then the time to score the 10,000
MNIST test images with a (784, 128, 10) network of such neurons, estimated from the lanes rate
(138 neurons per image). Also prints where the time of one 5000-point run goes.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from quasineuron.devices.spice import (
    Transient,
    _read_binary_raw,
    find_ngspice,
    spice_diffpair,
    spice_inverter,
)


def rate(dev: object, u: np.ndarray, per_point: bool) -> float:
    """Operating points per second of ``dev`` on rows ``u``."""
    start = time.perf_counter()
    if per_point:
        for row in u:
            dev.evaluate_numpy(row[None, :])  # type: ignore[attr-defined]
    else:
        dev.evaluate_numpy(u)  # type: ignore[attr-defined]
    return len(u) / (time.perf_counter() - start)


def profile(dev: object, u: np.ndarray) -> str:
    """Seconds spent writing the netlist, running ngspice and reading its results, one run."""
    program = find_ngspice()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        text = dev.batch_netlist(np.sort(u, axis=0), f"{tmp}/out.raw")  # type: ignore[attr-defined]
        Path(tmp, "b.cir").write_text(text)
        t1 = time.perf_counter()
        subprocess.run([program, "-b", "b.cir"], cwd=tmp, capture_output=True, check=True)
        t2 = time.perf_counter()
        _read_binary_raw(Path(tmp, "out.raw").read_bytes())
        t3 = time.perf_counter()
    return f"netlist {t1 - t0:.4f} s, ngspice {t2 - t1:.4f} s, parse {t3 - t2:.4f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workers", type=int, default=1, help="ngspice runs in flight")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n_batched, n_single, n_tran = (20_000, 50, 400) if args.quick else (100_000, 200, 2000)
    print(
        f"ngspice: {find_ngspice()}; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    rng = np.random.default_rng(0)
    print(
        f"{'device':>16} | {'lanes=8 pts/s':>13} | {'lanes=1 pts/s':>13} | "
        f"{'per-point pts/s':>15} | {'8 vs 1':>6} | {'8 vs per-point':>14} | "
        f"{'transient pts/s':>15}"
    )
    lane_rates = []
    for make in (spice_diffpair, spice_inverter):
        new, old = make(workers=args.workers), make(workers=args.workers, lanes=1)
        low, high = new.domain.low[0], new.domain.high[0]
        tran = make(readout=Transient(t_stop=1e-6, t_step=1e-8), workers=args.workers)
        new.evaluate_numpy(np.array([[low]]))  # warm the page cache
        b, o, s, t = [], [], [], []
        for _ in range(args.repeats):  # interleaved, so that a load change hits all of them
            b.append(rate(new, rng.uniform(low, high, (n_batched, 1)), per_point=False))
            o.append(rate(old, rng.uniform(low, high, (n_batched, 1)), per_point=False))
            s.append(rate(new, rng.uniform(low, high, (n_single, 1)), per_point=True))
            t.append(rate(tran, rng.uniform(low, high, (n_tran, 1)), per_point=False))
        lane_rates.append(max(b))
        print(
            f"{new.name:>16} | {max(b):13.3g} | {max(o):13.3g} | {max(s):15.3g} | "
            f"{max(b) / max(o):6.2f} | {max(b) / max(s):14.0f} | {max(t):15.3g}"
        )
        u = rng.uniform(low, high, (5000, 1))
        print(
            f"{'':>16}   one 5000-point run, lanes=8: {profile(new, u)}; lanes=1: {profile(old, u)}"
        )
    points = 10_000 * (128 + 10)
    print(
        f"scoring 10,000 MNIST images (784-128-10, {points:.3g} operating points): "
        f"~{points / lane_rates[0]:.0f} s on spice-diffpair; load average now "
        f"{os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
