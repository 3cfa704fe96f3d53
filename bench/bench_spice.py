"""Throughput of the circuit devices on ngspice: one sweep per batch vs one run per point.

    python bench/bench_spice.py             # about 20 s on 2 cores
    python bench/bench_spice.py --quick     # a few seconds

Prints operating points per second for each built-in circuit neuron: batched (one ngspice run
per ``chunk`` points, the device's default), one ngspice run per point (what a black box that
starts the simulator for every point costs), and their ratio; then the time to score the
10,000 MNIST test images with a (784, 128, 10) network of such neurons, estimated from the
batched rate (138 neurons per image).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from quasineuron.devices.spice import find_ngspice, spice_diffpair, spice_inverter


def rate(dev: object, u: np.ndarray, per_point: bool) -> float:
    """Operating points per second of ``dev`` on rows ``u``."""
    start = time.perf_counter()
    if per_point:
        for row in u:
            dev.evaluate_numpy(row[None, :])  # type: ignore[attr-defined]
    else:
        dev.evaluate_numpy(u)  # type: ignore[attr-defined]
    return len(u) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workers", type=int, default=1, help="ngspice runs in flight")
    args = parser.parse_args()
    n_batched, n_single = (20_000, 50) if args.quick else (200_000, 300)
    print(f"ngspice: {find_ngspice()}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    rng = np.random.default_rng(0)
    print(f"{'device':>16} | {'batched pts/s':>13} | {'per-point pts/s':>15} | {'ratio':>6}")
    batched_rates = []
    for make in (spice_diffpair, spice_inverter):
        dev = make(workers=args.workers)
        low, high = dev.domain.low[0], dev.domain.high[0]
        dev.evaluate_numpy(np.array([[low]]))  # warm the page cache
        b = rate(dev, rng.uniform(low, high, (n_batched, 1)), per_point=False)
        s = rate(dev, rng.uniform(low, high, (n_single, 1)), per_point=True)
        batched_rates.append(b)
        print(f"{dev.name:>16} | {b:13.3g} | {s:15.3g} | {b / s:6.0f}")
    points = 10_000 * (128 + 10)
    print(f"scoring 10,000 MNIST images (784-128-10, {points:.3g} operating points): "
          f"~{points / batched_rates[0]:.0f} s on spice-diffpair")  # fmt: skip


if __name__ == "__main__":
    main()
