"""One MNIST epoch in surrogate mode against a plain MLP of the same shape, measured in one run.

    python bench/bench_network_epoch.py --data-dir PATH/TO/MNIST [--json out.json]

Prints seconds per epoch for a plain torch MLP (784-256-10, tanh) and for device networks of the
same shape whose neurons are twins: one-drive (ideal tanh device, spline twin) and two-drive (the
almost-neuron, spline twin), eager and with the twin kernel compiled; and the ratio of each to the
MLP. Without --data-dir, random data of MNIST's shape is used (the cost does not depend on values
much, but out-of-domain handling does).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings

import torch

import quasineuron as qn
from quasineuron.errors import OutOfDomainWarning


def _epoch(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, mode, batch: int) -> float:
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(y), generator=gen)
    t0 = time.perf_counter()
    for i in range(0, len(y), batch):
        idx = perm[i : i + batch]
        out = net(x[idx]) if mode is None else net(x[idx], mode=mode)
        loss = torch.nn.functional.cross_entropy(out, y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def _twin(device: qn.AbstractDevice, n: int) -> qn.AbstractDevice:
    table = qn.sweep(device, qn.Grid(n), progress=False)
    twin = qn.fit_surrogate(table, kind="spline").model.to(torch.float32)
    twin.policy = "clamp"
    return twin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--limit", type=int, default=60000, help="training images per epoch")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", OutOfDomainWarning)

    if args.data_dir:
        train, _ = qn.load_mnist(args.data_dir)
        x, y = train.x[: args.limit], train.y[: args.limit]
    else:
        gen = torch.Generator().manual_seed(0)
        x = (torch.rand(args.limit, 784, generator=gen) < 0.2).float()
        y = torch.randint(0, 10, (args.limit,), generator=gen)
    sizes = (784, args.hidden, 10)

    mlp = torch.nn.Sequential(
        torch.nn.Linear(784, args.hidden), torch.nn.Tanh(), torch.nn.Linear(args.hidden, 10)
    )
    results: dict[str, float] = {}
    results["plain_mlp"] = _epoch(mlp, x, y, mode=None, batch=args.batch)
    base = results["plain_mlp"]
    print(f"plain MLP {sizes}: {base:.2f} s/epoch (baseline)")

    cases = {
        "one_drive_tanh": (qn.ideal_neuron("tanh"), qn.Linear(), 401),
        "two_drive_almost_neuron": (qn.almost_neuron(0.1), qn.TwoDrive(), 101),
    }
    for name, (dev, conn, n) in cases.items():
        twin = _twin(dev, n)
        for compiled in (False, True):
            twin.compiled = compiled
            net = qn.DeviceNetwork(dev, sizes, twin=twin, connection=conn, seed=0)
            if compiled:  # compile outside the timed epoch
                _epoch(net, x[:512], y[:512], mode=qn.Surrogate(), batch=args.batch)
            key = f"{name}{'_compiled' if compiled else ''}"
            results[key] = _epoch(net, x, y, mode=qn.Surrogate(), batch=args.batch)
            print(f"{key}: {results[key]:.2f} s/epoch, {results[key] / base:.2f}x the plain MLP")

    record = {
        "seconds_per_epoch": results,
        "ratio_to_plain_mlp": {k: v / base for k, v in results.items()},
        "images": len(y),
        "batch": args.batch,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "threads": args.threads,
            "torch": torch.__version__,
        },
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=2)


if __name__ == "__main__":
    main()
