"""When do worker processes pay? Serial against ``ProcessExecutor(2)`` and ``AutoExecutor(2)``.

    python bench/bench_workers.py [--points 32] [--batch-size 4] [--json out.json]

A device that costs a controllable time per point, either sleeping (an external simulator
waiting on I/O: ideal for processes) or spinning the CPU (a simulator computing in Python:
processes share the cores with each other and with the parent), is swept over ``--points``
points in batches of ``--batch-size`` into a fresh store, three ways: in this process,
in 2 worker processes started up front, and with the automatic choice. Also measured: the
start-up cost of a pool (spawned interpreter + ``import torch`` + unpickling the device, up to
the first result) and the per-batch transfer cost of a running pool.

Worker processes win once the sweep's serial time W exceeds start + W / 2, i.e.
W > 2 * start; the table prints, per per-point cost, the ratio serial / processes (> 1:
processes are faster) and serial / automatic.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from quasineuron.devices.base import AbstractDevice, Box
from quasineuron.sweep import Grid, ProcessExecutor, SerialExecutor, sweep
from quasineuron.sweep.executors import AutoExecutor


class Costly(AbstractDevice):
    """``y = tanh(u)`` at ``per_point_s`` seconds per point, slept or spun (CPU-bound)."""

    n_in = 1
    n_out = 1
    differentiable = False

    def __init__(self, per_point_s: float, *, spin: bool = False) -> None:
        super().__init__()
        self.per_point_s, self.spin = per_point_s, spin
        self.domain = Box((-1.0,), (1.0,))
        self.name = f"costly-{'spin' if spin else 'sleep'}-{per_point_s:g}"

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        wait = self.per_point_s * u.shape[0]
        if self.spin:
            end = time.perf_counter() + wait
            while time.perf_counter() < end:
                pass
        elif wait:
            time.sleep(wait)
        return torch.tanh(u)


def _noop(x: object) -> object:
    return x


def _pool_costs(n_workers: int, n_items: int = 200) -> tuple[float, float]:
    """(seconds to the first result of a fresh pool, seconds per further no-op item)."""
    t0 = time.perf_counter()
    for _ in ProcessExecutor(n_workers).map_unordered(_noop, [(0, 0)]):
        pass
    start = time.perf_counter() - t0
    u = torch.zeros(4096, 1, dtype=torch.float64)  # a default-sized batch travels each way
    t0 = time.perf_counter()
    for _ in ProcessExecutor(n_workers).map_unordered(_noop, ((i, u) for i in range(n_items))):
        pass
    per_item = (time.perf_counter() - t0 - start) / (n_items - 1)
    return start, max(per_item, 0.0)


def _sweep_time(device: AbstractDevice, executor: object, points: int, batch: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        sweep(
            device,
            Grid(n=(points,)),
            store=Path(tmp) / "s",
            batch_size=batch,
            executor=executor,
            progress=False,
        )  # type: ignore[arg-type]
        return time.perf_counter() - t0


def main() -> None:
    """Measure and print the crossover table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--costs", type=float, nargs="+", default=[0.0, 0.01, 0.03, 0.1, 0.3])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    starts = [_pool_costs(2) for _ in range(3)]
    start = statistics.median(s for s, _ in starts)
    transfer = statistics.median(t for _, t in starts)
    start1 = statistics.median(_pool_costs(1)[0] for _ in range(3))
    load = os.getloadavg()[0]
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores, load {load:.2f}; "
        f"{args.points} points in batches of {args.batch_size}"
    )
    print(
        f"pool start (to first result): 1 worker {start1:.2f} s, 2 workers {start:.2f} s; "
        f"transfer {1e3 * transfer:.2f} ms per 4096-point batch"
    )
    print(
        f"crossover (serial work = 2 x start): {2 * start:.2f} s of sweep, i.e. "
        f"{2 * start / args.points * 1e3:.1f} ms per point here"
    )
    rows = []
    for spin in (False, True):
        for cost in args.costs:
            dev = Costly(cost, spin=spin)
            t_s = _sweep_time(dev, SerialExecutor(), args.points, args.batch_size)
            mode: list[str] = []

            def note(_line: str, info: dict[str, object], m: list[str] = mode) -> None:
                m.append(str(info["mode"]))

            auto = AutoExecutor(2, on_decision=note)
            t_a = _sweep_time(dev, auto, args.points, args.batch_size)
            # last: the finished pool's workers tear down (seconds with torch) in the background
            t_p = _sweep_time(dev, ProcessExecutor(2), args.points, args.batch_size)
            rows.append(
                {
                    "kind": "spin" if spin else "sleep",
                    "per_point_s": cost,
                    "serial_s": t_s,
                    "processes_s": t_p,
                    "auto_s": t_a,
                    "auto_mode": mode[0] if mode else "?",
                }
            )
            print(
                f"{rows[-1]['kind']:5s} {cost * 1e3:7.1f} ms/point  serial {t_s:6.2f} s  "
                f"processes {t_p:6.2f} s ({t_s / t_p:5.2f}x)  auto {t_a:6.2f} s "
                f"({t_s / t_a:5.2f}x, {rows[-1]['auto_mode']})"
            )
    if args.json is not None:
        out = {"pool_start_s": {"1": start1, "2": start}, "transfer_s": transfer, "rows": rows}
        args.json.write_text(json.dumps(out, indent=2))
    assert all(math.isfinite(r["serial_s"]) for r in rows)


if __name__ == "__main__":
    main()
