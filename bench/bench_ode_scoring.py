"""Scoring throughput of a steady-state ODE-device network on the true device: old and new path.

Workload: a trained ``examples/wuxing-mnist.toml`` network (784-256-10, every neuron one Wuxing
steady-state solve, drives clipped into [-0.5, 2]) classifies the first N MNIST test images on
the true device, float32, under ``torch.no_grad()``, in batches.

Paths (same network, same weights, same clipped device; only the fixed-point solver differs):
    integrate   every neuron integrated from rest to a residual of 1e-10 (256 float32 ulps),
                per-row adaptive steps (``wuxing_neuron(steady_solver="integrate")``)
    newton      ``BatchedNewton``: start from a table of integrated steady states, fixed
                Newton steps with the closed-form Jacobian, one residual check, failed rows
                integrated (``steady_solver="newton"``, the default)

The two paths are timed interleaved (integrate, newton, integrate, newton, ...) so that load
on a shared machine hits both alike; the rate is the best repeat, the median is reported too.
The table is solved once, before timing (its time is reported as ``table_s``). Agreement is the
fraction of images with the same predicted class; ``max_abs_logit`` and ``max_abs_hidden`` are
the largest differences of the logits and of the hidden layer's device outputs.

Usage:
    python bench/bench_ode_scoring.py RUN_FOLDER --data-dir MNIST_DIR [--images 2000]
        [--batch 1024] [--repeats 3] [--threads 1] [--json out.json]

``RUN_FOLDER`` is the output of ``quasineuron run examples/wuxing-mnist.toml`` (its
``network/`` and ``twin.safetensors``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from quasineuron.data.mnist import load_mnist
from quasineuron.devices import BatchedNewton, InputClip
from quasineuron.devices.wuxing import wuxing_neuron
from quasineuron.network.io import load_network
from quasineuron.network.modes import Surrogate, TrueDevice
from quasineuron.surrogate.io import load_surrogate

OPTIONS = {"input_elements": [0], "output_elements": [1]}


def build(run: Path, solver: str) -> tuple[Any, Any]:
    device = InputClip(wuxing_neuron(readout="steady-state", steady_solver=solver, **OPTIONS))
    twin = load_surrogate(run / "twin.safetensors").to(torch.float32)
    return load_network(run / "network", device=device, twin=twin), device.device


@torch.no_grad()
def score(net: Any, x: torch.Tensor, batch: int, mode: Any) -> tuple[torch.Tensor, float]:
    t0 = time.perf_counter()
    out = torch.cat([net(x[i : i + batch], mode=mode) for i in range(0, x.shape[0], batch)])
    return out, time.perf_counter() - t0


def newton_steps_needed(net: Any, dev: Any, x: torch.Tensor) -> dict[str, dict[str, Any]]:
    """Fewest fixed Newton steps after which every neuron of both layers meets the tolerance.

    Measured on the drives the network applies to ``x`` (after the limiter), for three starts:
    the rest state; the rest state with the read-out element set from the twin's prediction
    (the twin predicts that element's signal only, not the full state); the drive table.
    """
    _, applied = net.run(x, mode=TrueDevice())
    lo, hi = dev.domain.low[0], dev.domain.high[0]
    u = torch.cat([a.reshape(-1, 1) for a in applied]).clamp(lo, hi)
    twin = net.layers[0].twin
    rest = dev.initial_state(u)
    from_twin = rest.clone()
    from_twin[:, 1] = rest[:, 1] + twin(u)[:, 0]
    starts = {"rest": rest, "twin-output": from_twin, "table": dev.solver.start(u)}
    out: dict[str, dict[str, Any]] = {}
    for name, x0 in starts.items():
        for k in range(0, 13):
            solver = BatchedNewton(iterations=k, jacobian=dev.solver.jacobian)
            res = solver.solve(dev.residual, x0, u)
            if bool(res.converged.all()) or k == 12:
                out[name] = {
                    "steps": k,
                    "converged_fraction": float(res.converged.double().mean()),
                    "max_residual": float(res.residual.max()),
                }
                break
    out["rows"] = {"count": u.shape[0], "dtype": str(u.dtype).removeprefix("torch.")}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()

    _, test = load_mnist(args.data_dir)
    x = torch.as_tensor(test.x[: args.images]).to(torch.float32).reshape(args.images, -1)
    y = torch.as_tensor(test.y[: args.images])
    nets = {name: build(args.run, name) for name in ("integrate", "newton")}

    t0 = time.perf_counter()
    nets["newton"][1].solver.start.table(torch.float32, torch.device("cpu"))
    table_s = time.perf_counter() - t0

    times: dict[str, list[float]] = {k: [] for k in nets}
    logits: dict[str, torch.Tensor] = {}
    for _ in range(args.repeats):
        for name, (net, _dev) in nets.items():
            out, dt = score(net, x, args.batch, TrueDevice())
            times[name].append(dt)
            logits[name] = out
    twin_out, twin_dt = score(nets["newton"][0], x, args.batch, Surrogate())

    with torch.no_grad():
        hidden = {k: n.layers[0](x, mode=TrueDevice()) for k, (n, _d) in nets.items()}
        start_iterations = newton_steps_needed(nets["newton"][0], dev_new := nets["newton"][1], x)
    pred = {k: v.argmax(dim=1) for k, v in logits.items()}
    rate = {k: args.images / min(v) for k, v in times.items()}
    result = {
        "images": args.images,
        "batch": args.batch,
        "repeats": args.repeats,
        "threads": args.threads,
        "images_per_s": rate,
        "images_per_s_median": {k: args.images / statistics.median(v) for k, v in times.items()},
        "speedup": rate["newton"] / rate["integrate"],
        "twin_images_per_s": args.images / twin_dt,
        "agreement": float((pred["newton"] == pred["integrate"]).double().mean()),
        "disagreeing_images": int((pred["newton"] != pred["integrate"]).sum()),
        "max_abs_logit": float((logits["newton"] - logits["integrate"]).abs().max()),
        "max_abs_hidden": float((hidden["newton"] - hidden["integrate"]).abs().max()),
        "accuracy": {k: float((v == y).double().mean()) for k, v in pred.items()},
        "twin_agreement_with_device": float(
            (twin_out.argmax(dim=1) == pred["integrate"]).double().mean()
        ),
        "newton_steps_to_converge": start_iterations,
        "newton_rows": dict(dev_new.solve_counts),
        "newton_solver": dev_new.describe()["solver"],
        "table_s": table_s,
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
        },
    }
    print(json.dumps(result, indent=2))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
