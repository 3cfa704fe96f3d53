"""Peak memory of a sweep, a 1e6-point characterisation and one MNIST epoch through a twin.

    python bench/bench_memory.py [--data-dir PATH/TO/MNIST] [--points 1000000]

Each measurement runs in a fresh process (``python bench_memory.py --case NAME``), started by a
fresh wrapper process (``--measure NAME``) whose only child it is, so the wrapper's
``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` is exactly that case's peak resident set
(KiB on Linux). The cases:

- ``baseline``: a bare ``import torch``;
- ``sweep`` and ``sweep_small``: ``sweep`` of the almost-neuron on ``--points`` (and 1 % of
  that) grid points into a store, no twin; memory per point is the difference of their peaks
  over the difference of their points, so the fixed cost of the imports cancels;
- ``characterize``: ``characterize`` of the almost-neuron on ``--points`` grid points (sweep,
  spline twin fit, plots, report);
- ``verify``: reading that store back (``SweepTable.open``) with every committed chunk checked
  against its SHA-256 digest, with the seconds the check itself takes;
- ``mnist_epoch``: one epoch over the 60,000 MNIST training images of a 784-256-10
  almost-neuron network through its spline twin (``Surrogate`` mode), skipped with a message
  when the data folder is missing.

Not a test: it prints a table and the machine, for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()


def _machine() -> dict[str, object]:
    model = "?"
    mem_kib = 0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "cpus_usable": usable,
        "memory_gib": round(mem_kib / 2**20, 1),
        "python": platform.python_version(),
    }


# -- the cases (each runs alone in its own process) ---------------------------------------------


def _case_baseline(args: argparse.Namespace) -> dict[str, object]:
    import torch  # noqa: F401

    return {}


def _grid_side(points: int) -> int:
    return round(points**0.5)  # the almost-neuron has two drives: a side × side grid


def _case_sweep(args: argparse.Namespace, *, points: int | None = None) -> dict[str, object]:
    import quasineuron as qn

    side = _grid_side(points or args.points)
    name = "sweep.zarr" if points is None else "sweep-small.zarr"
    t0 = time.perf_counter()
    table = qn.sweep(
        qn.almost_neuron(0.1),
        qn.Grid(side),
        store=Path(args.work) / name,
        batch_size=4096,
        progress=False,
        overwrite=True,
    )
    return {"points": table.n_points, "seconds": time.perf_counter() - t0}


def _case_sweep_small(args: argparse.Namespace) -> dict[str, object]:
    return _case_sweep(args, points=max(1, args.points // 100))


def _case_characterize(args: argparse.Namespace) -> dict[str, object]:
    import quasineuron as qn
    from quasineuron.pipeline import characterize

    side = _grid_side(args.points)
    t0 = time.perf_counter()
    result = characterize(
        qn.almost_neuron(0.1),
        Path(args.work) / "char",
        sampler=qn.Grid(side),
        progress=False,
        overwrite=True,
    )
    return {"points": result.table.n_points, "seconds": time.perf_counter() - t0}


def _case_verify(args: argparse.Namespace) -> dict[str, object]:
    from quasineuron.sweep import SweepStore

    path = Path(args.work) / "sweep.zarr"
    t0 = time.perf_counter()
    store = SweepStore.open(path)
    problems = store.verify()  # hashes every committed chunk file once
    t_verify = time.perf_counter() - t0
    t0 = time.perf_counter()
    table = store.read_table()  # verifies again, then decodes the arrays
    t_read = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in (path / "table.zarr").rglob("*") if p.is_file())
    return {
        "points": table.n_points,
        "chunks": store.n_chunks,
        "damaged": len(problems),
        "verify_seconds": t_verify,
        "read_table_seconds": t_read,
        "table_bytes": size,
    }


def _case_mnist_epoch(args: argparse.Namespace) -> dict[str, object]:
    import warnings

    import torch

    import quasineuron as qn
    from quasineuron.errors import OutOfDomainWarning

    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", OutOfDomainWarning)
    train, _ = qn.load_mnist(args.data_dir, download=False)
    dev = qn.almost_neuron(0.1)
    table = qn.sweep(dev, qn.Grid(101), progress=False)
    twin = qn.fit_surrogate(table, kind="spline").model.to(torch.float32)
    twin.policy = "clamp"
    net = qn.DeviceNetwork(dev, (784, 256, 10), twin=twin, connection=qn.TwoDrive(), seed=0)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    perm = torch.randperm(len(train.y), generator=torch.Generator().manual_seed(0))
    mode = qn.Surrogate()
    t0 = time.perf_counter()
    for i in range(0, len(perm), 128):
        idx = perm[i : i + 128]
        loss = torch.nn.functional.cross_entropy(net(train.x[idx], mode=mode), train.y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return {"images": len(perm), "seconds": time.perf_counter() - t0}


CASES = {
    "baseline": _case_baseline,
    "sweep_small": _case_sweep_small,
    "sweep": _case_sweep,
    "characterize": _case_characterize,
    "verify": _case_verify,
    "mnist_epoch": _case_mnist_epoch,
}


def _forward(args: argparse.Namespace, flag: str, name: str) -> list[str]:
    cmd = [sys.executable, str(HERE), flag, name, "--points", str(args.points)]
    cmd += ["--work", args.work, "--threads", str(args.threads)]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    return cmd


def _measure(args: argparse.Namespace, name: str) -> None:
    """Wrapper process: run one case as the only child, report its peak RSS."""
    proc = subprocess.run(_forward(args, "--case", name), capture_output=True, text=True)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode != 0:
        print(json.dumps({"error": proc.stderr[-2000:]}))
        return
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["peak_rss_mib"] = peak_kib / 1024
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files")
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default=None, help="scratch folder (default: a temp folder)")
    parser.add_argument("--case", choices=sorted(CASES), help=argparse.SUPPRESS)
    parser.add_argument("--measure", choices=sorted(CASES), help=argparse.SUPPRESS)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()

    if args.case:
        print(json.dumps(CASES[args.case](args)))
        return
    if args.measure:
        _measure(args, args.measure)
        return

    with tempfile.TemporaryDirectory(prefix="qn-bench-memory-") as tmp:
        args.work = args.work or tmp
        names = ["baseline", "sweep_small", "sweep", "verify", "characterize"]
        if args.data_dir and Path(args.data_dir).is_dir():
            names.append("mnist_epoch")
        else:
            print(f"mnist_epoch skipped: no MNIST folder at {args.data_dir!r} (pass --data-dir)")
        results: dict[str, dict[str, object]] = {}
        for name in names:
            t0 = time.perf_counter()
            proc = subprocess.run(_forward(args, "--measure", name), capture_output=True, text=True)
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            res["wall_seconds"] = time.perf_counter() - t0
            results[name] = res
            if "error" in res:
                print(f"{name}: FAILED\n{res['error']}")
                continue
            extra = ", ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in res.items()
                if k not in ("peak_rss_mib",)
            )
            print(f"{name:13s} peak RSS {res['peak_rss_mib']:8.1f} MiB  ({extra})")
    base = results["baseline"]["peak_rss_mib"]
    sw, small = results.get("sweep", {}), results.get("sweep_small", {})
    if "peak_rss_mib" in sw and "peak_rss_mib" in small:
        d_mib = sw["peak_rss_mib"] - small["peak_rss_mib"]
        per_point = d_mib * 2**20 / (sw["points"] - small["points"])
        print(
            f"sweep memory per point: {per_point:.0f} bytes (peak above the torch baseline: "
            f"{sw['peak_rss_mib'] - base:.0f} MiB for {sw['points']} points)"
        )
        results["sweep"]["bytes_per_point"] = per_point
    if "verify_seconds" in results.get("verify", {}):
        v = results["verify"]
        print(
            f"integrity check of {v['points']} points ({v['chunks']} chunks, "
            f"{v['table_bytes'] / 2**20:.1f} MiB of chunk files): {v['verify_seconds']:.3f} s"
        )
    machine = _machine()
    print("machine:", json.dumps(machine))
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "machine": machine}, indent=2))


if __name__ == "__main__":
    main()
