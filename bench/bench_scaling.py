"""Time and peak memory against batch size, network size and sweep size; Dask worker scaling.

    python bench/bench_scaling.py [--quick] [--json out.json] [--plots docs/results/bench]

Series (each point timed as the best of a few repeats, the machine may be shared):
    batch   one Adam step (forward + backward) of a 784-256-10 tanh DeviceNetwork vs batch size
    width   the same step at batch 512 vs hidden width (parameters grow linearly with width)
    sweep   an in-memory sweep of a formula device vs number of points (batch 4096)
    dask    a sweep of a black box that sleeps 10 ms per point on 1 and 2 local Dask workers

Peak memory is the largest resident-set increase over the process's resident set just before
the workload, sampled every millisecond from /proc/self/statm (so a peak shorter than that may
be missed), plus tracemalloc's peak for the numpy-heavy sweep series. Log-log slopes are fitted
over each series (linear scaling: slope ≈ 1) and printed; plots go to ``--plots``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import threading
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import quasineuron as qn

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
SLEEP_PER_POINT = 0.01


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except OSError:  # not Linux: fall back to the (monotonic) maximum
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _PeakRSS:
    """Samples the resident set in a thread; ``.peak`` is the largest increase seen."""

    def __enter__(self) -> _PeakRSS:
        self.base = _rss()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss() - self.base)
            time.sleep(0.001)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss() - self.base)


def _best(fn: Callable[[], Any], reps: int) -> tuple[float, int]:
    """Best wall time of ``reps`` calls and the peak RSS increase of the first call."""
    with _PeakRSS() as mem:
        t0 = time.perf_counter()
        fn()
        times = [time.perf_counter() - t0]
    for _ in range(reps - 1):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), mem.peak


def _net(hidden: int) -> torch.nn.Module:
    return qn.DeviceNetwork(qn.ideal_neuron("tanh"), sizes=(784, hidden, 10), seed=0)


def _step_fn(net: torch.nn.Module, batch: int) -> Callable[[], None]:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 784, generator=gen)
    y = torch.randint(0, 10, (batch,), generator=gen)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    mode = qn.Direct()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x, mode=mode), y).backward()
        opt.step()

    step()  # allocate optimiser state outside the measurement
    return step


def _n_weights(hidden: int) -> int:
    return 784 * hidden + hidden * 10


def series_batch(sizes: list[int], reps: int) -> list[dict[str, float]]:
    out = []
    for b in sizes:
        net = _net(256)
        t, mem = _best(_step_fn(net, b), reps)
        # ~6 flops per weight per sample (forward 2, backward 4); inputs + activations saved.
        out.append(
            {
                "x": b,
                "seconds": t,
                "peak_bytes": mem,
                "flops_floor": 6.0 * b * _n_weights(256),
                "activation_bytes_floor": 4.0 * b * (784 + 2 * 256 + 2 * 10),
            }
        )
        print(f"batch {b:>6}: {t * 1e3:8.2f} ms/step, peak +{mem / 2**20:7.1f} MiB")
    return out


def series_width(widths: list[int], reps: int, batch: int = 512) -> list[dict[str, float]]:
    out = []
    for h in widths:
        t, mem = _best(_step_fn(_net(h), batch), reps)
        out.append(
            {
                "x": h,
                "seconds": t,
                "peak_bytes": mem,
                "flops_floor": 6.0 * batch * _n_weights(h),
                # weights, grads and two Adam moments, float32
                "parameter_bytes_floor": 4.0 * 4 * _n_weights(h),
            }
        )
        print(f"width {h:>6}: {t * 1e3:8.2f} ms/step, peak +{mem / 2**20:7.1f} MiB")
    return out


def series_sweep(sizes: list[int], reps: int) -> list[dict[str, float]]:
    dev = qn.ideal_neuron("tanh")
    out = []
    for n in sizes:
        sampler = qn.Random(n=n, seed=0)

        def run(sampler: qn.Random = sampler) -> None:
            qn.sweep(dev, sampler, batch_size=4096, progress=False)

        tracemalloc.start()
        t, mem = _best(run, 1)
        traced = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        if reps > 1:
            t = min(t, _best(run, reps - 1)[0])
        # u (n, 1), y (n, 1) float64 and a status byte per point
        out.append(
            {
                "x": n,
                "seconds": t,
                "peak_bytes": mem,
                "tracemalloc_peak_bytes": traced,
                "table_bytes_floor": n * (8 + 8 + 1),
            }
        )
        print(
            f"sweep {n:>8}: {t:8.3f} s, peak +{mem / 2**20:7.1f} MiB "
            f"(tracemalloc {traced / 2**20:.1f} MiB)"
        )
    return out


def _sleepy(u: np.ndarray) -> np.ndarray:
    time.sleep(SLEEP_PER_POINT * len(u))
    return np.tanh(u)


def series_dask(n_points: int) -> dict[str, Any] | None:
    try:
        import distributed
    except ImportError:
        print("dask: distributed not installed, skipped")
        return None
    from quasineuron.sweep import DaskExecutor

    dev = qn.BlackBoxDevice(
        _sleepy, n_in=1, n_out=1, domain=qn.Box(low=(-1.0,), high=(1.0,)), vectorized=True
    )
    cluster = distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    )
    client = distributed.Client(cluster, set_as_default=False)
    ex = DaskExecutor(client=client)
    rec: dict[str, Any] = {"n_points": n_points, "batch_size": 8, "sleep_per_point": 0.01}
    try:
        for workers in (1, 2):
            cluster.scale(workers)
            client.wait_for_workers(workers, timeout=120)
            qn.sweep(dev, qn.Grid(n=16), batch_size=8, progress=False, executor=ex)  # warm up
            t0 = time.perf_counter()
            qn.sweep(dev, qn.Grid(n=n_points), batch_size=8, progress=False, executor=ex)
            t = time.perf_counter() - t0
            rec[f"seconds_{workers}_workers"] = t
            rec[f"points_per_s_{workers}_workers"] = n_points / t
            print(f"dask {workers} worker(s): {n_points / t:7.1f} points/s ({t:.2f} s)")
    finally:
        client.close()
        cluster.close()
    rec["speedup_2_vs_1"] = rec["points_per_s_2_workers"] / rec["points_per_s_1_workers"]
    rec["ideal_points_per_s_per_worker"] = 1 / SLEEP_PER_POINT
    print(f"dask speedup 2 vs 1 worker: {rec['speedup_2_vs_1']:.2f}x (ideal 2)")
    return rec


def slope(points: list[dict[str, float]], key: str) -> float | None:
    xs = np.array([p["x"] for p in points], dtype=float)
    ys = np.array([p[key] for p in points], dtype=float)
    ok = ys > 0
    if ok.sum() < 2:
        return None
    return float(np.polyfit(np.log(xs[ok]), np.log(ys[ok]), 1)[0])


def plot(name: str, points: list[dict[str, float]], xlabel: str, folder: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [p["x"] for p in points]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, key, label in (
        (axes[0], "seconds", "time [s]"),
        (axes[1], "peak_bytes", "peak memory increase [bytes]"),
    ):
        ys = [p[key] for p in points]
        keep = [(x, y) for x, y in zip(xs, ys, strict=True) if y > 0]
        if keep:
            ax.loglog(*zip(*keep, strict=True), "o-")
        s = slope(points, key)
        ax.set_title(f"{label}, slope {s:.2f}" if s is not None else label)
        ax.set_xlabel(xlabel)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"scaling: {name}")
    fig.tight_layout()
    path = os.path.join(folder, f"scaling_{name}.png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer, smaller points (< 1 min)")
    ap.add_argument("--json", default=None, help="write results to this JSON file")
    ap.add_argument("--plots", default=None, help="folder for the log-log PNG plots")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-dask", action="store_true", help="skip the Dask worker series")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        batches, widths, sweeps, reps, n_dask = [256, 1024, 4096], [64, 256, 1024], None, 2, 160
        sweeps = [10_000, 100_000, 1_000_000]
    else:
        batches, widths, reps, n_dask = [128, 512, 2048, 8192, 32768], [32, 128, 512, 2048], 3, 400
        sweeps = [10_000, 100_000, 1_000_000, 4_000_000]
    series = {
        "batch": series_batch(batches, reps),
        "width": series_width(widths, reps),
        "sweep": series_sweep(sweeps, reps),
    }
    slopes = {
        name: {"seconds": slope(pts, "seconds"), "peak_bytes": slope(pts, "peak_bytes")}
        for name, pts in series.items()
    }
    for name, s in slopes.items():
        fmt = {k: "n/a" if v is None else f"{v:.2f}" for k, v in s.items()}
        print(f"slope {name}: time {fmt['seconds']}, memory {fmt['peak_bytes']}")
    dask = None if args.no_dask else series_dask(n_dask)
    plots = []
    if args.plots:
        os.makedirs(args.plots, exist_ok=True)
        labels = {"batch": "batch size", "width": "hidden width", "sweep": "sweep points"}
        plots = [plot(k, v, labels[k], args.plots) for k, v in series.items()]
    record = {
        "series": series,
        "slopes": slopes,
        "dask": dask,
        "plots": [os.path.basename(p) for p in plots],
        "quick": args.quick,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "threads": args.threads,
            "torch": torch.__version__,
            "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
        },
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=2)


if __name__ == "__main__":
    main()
