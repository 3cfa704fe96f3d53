"""Forward-pass time of a 784-256-10 device network per execution mode, batch 128.

    python bench/bench_modes_forward.py [--repeats 300] [--threads 1] [--json out.json]

An ideal tanh device with a spline twin (fitted on a 61-point sweep). For each mode, prints
the median, interquartile range and minimum of one forward pass, timed alone, in two settings:
with autograd recording (as in training; the graph is built but no backward runs) and under
``torch.no_grad()`` (as in evaluation). The modes' own Python work (checks, dispatch) is a
fixed cost per layer and call; a 2-2-2 network at batch 1 (arithmetic negligible) shows it
alone. To compare two versions of the library, run this script against each (e.g. with
``PYTHONPATH`` pointing at the other's ``src``), alternating, on the same machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import torch

import quasineuron as qn
from quasineuron.errors import OutOfDomainWarning


def _time(fn, repeats: int) -> list[float]:
    for _ in range(20):  # warm-up: allocator, kernels, first-call caches
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", OutOfDomainWarning)

    dev = qn.ideal_neuron("tanh")
    table = qn.sweep(dev, qn.Grid(61), progress=False)
    twin = qn.fit_surrogate(table, kind="spline").model.to(torch.float32)
    net = qn.DeviceNetwork(dev, (784, 256, 10), twin=twin, seed=0)
    x = torch.rand(128, 784, generator=torch.Generator().manual_seed(0))

    # The same modes on a 2-2-2 network at batch 1, where the arithmetic is negligible: the
    # time is the fixed Python cost of two layers (checks, dispatch, autograd bookkeeping).
    tiny = qn.DeviceNetwork(dev, (2, 2, 2), twin=twin, seed=0)
    x1 = x[:1, :2]

    results = {}
    for mode in (qn.Surrogate(), qn.PhysicsAware(), qn.TrueDevice()):
        for label, model, inputs in (("784-256-10", net, x), ("2-2-2 b1", tiny, x1)):
            key = f"{type(mode).__name__} {label}"
            grad = _time(lambda m=mode, f=model, v=inputs: f(v, mode=m), args.repeats)
            with torch.no_grad():
                nograd = _time(lambda m=mode, f=model, v=inputs: f(v, mode=m), args.repeats)
            for setting, ts in (("grad", grad), ("no_grad", nograd)):
                q = statistics.quantiles(ts, n=4)
                med, iqr, best = 1e6 * q[1], 1e6 * (q[2] - q[0]), 1e6 * min(ts)
                results[f"{key}/{setting}"] = {"median_us": med, "iqr_us": iqr, "min_us": best}
                print(
                    f"{key:>24} {setting:>8}: median {med:8.1f} us  IQR {iqr:6.1f} us  "
                    f"min {best:8.1f} us"
                )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "threads": args.threads, **results}, f, indent=1)


if __name__ == "__main__":
    main()
