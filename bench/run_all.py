"""Run every benchmark in bench/ and collect the figures into one results.json and a table.

    python bench/run_all.py [--quick] [--out docs/results/bench] [--only scaling,ode]

Each ``bench/bench_*.py`` runs as its own subprocess (one at a time, so they do not compete for
the cores). A benchmark that accepts ``--json`` writes its record there and it is embedded as
is; ``--quick`` is passed through where the script accepts it (a few scripts without it get
smaller sizes from QUICK_ARGS); otherwise the tail of its output is kept. Headline figures
are listed beside the baseline measured in the same run and, where it can be stated, their
arithmetic or memory floor. The machine load before and after is recorded, since timings on a
shared machine are only comparable within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
QUICK_ARGS = {  # scripts without --quick
    "bench_network_epoch.py": ["--limit", "4096"],
    "bench_reaction_throughput.py": ["--batch", "200", "--scipy-images", "1"],
    "bench_wuxing_bptt_memory.py": ["--T", "10"],
}
# quick runs skip torch.compile warm-ups (minutes on 2 cores)
QUICK_EXTRA = {"bench_ode_throughput.py": ["--no-compile"]}
EXTRA_ARGS = {"bench_scaling.py": lambda out: ["--plots", str(out)]}


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def discover(only: list[str] | None) -> list[Path]:
    found = sorted(p for p in HERE.glob("bench_*.py"))
    if not _has_cuda():  # the GPU benchmark is run on a GPU machine by itself (bench_gpu.py)
        found = [p for p in found if p.name != "bench_gpu.py"]
    if only:
        found = [p for p in found if any(o in p.stem for o in only)]
    return found


def run_one(
    script: Path, out: Path, *, quick: bool, timeout: float, data_dir: str | None = None
) -> dict[str, Any]:
    src = script.read_text()
    cmd = [sys.executable, str(script)]
    if data_dir and "--data-dir" in src:
        cmd += ["--data-dir", data_dir]
    json_path = out / f".{script.stem}.json"
    if "--json" in src:
        cmd += ["--json", str(json_path)]
    if quick:
        cmd += ["--quick"] if "--quick" in src else QUICK_ARGS.get(script.name, [])
        cmd += QUICK_EXTRA.get(script.name, [])
    if script.name in EXTRA_ARGS:
        cmd += EXTRA_ARGS[script.name](out)
    print(f"== {script.name}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=HERE.parent)
        rc, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc, stdout, stderr = "timeout", _text(exc.stdout), _text(exc.stderr)
    wall = time.perf_counter() - t0
    root = str(HERE.parent)  # keep machine paths out of the committed record
    stdout, stderr = stdout.replace(root, "."), stderr.replace(root, ".")
    record: dict[str, Any] = {
        "args": [Path(c).name if os.sep in c else c for c in cmd[1:]],
        "returncode": rc,
        "wall_seconds": round(wall, 2),
        "stdout_tail": stdout.strip().splitlines()[-25:],
    }
    if rc != 0:
        record["stderr_tail"] = stderr.strip().splitlines()[-15:]
    if json_path.exists():
        record["json"] = json.loads(json_path.read_text())
        json_path.unlink()
    record["figures"] = figures(script.name, record.get("json"))
    print(f"   rc={rc} in {wall:.1f} s", flush=True)
    return record


def _text(b: bytes | str | None) -> str:
    return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")


def figures(name: str, data: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Headline figures: value, the same run's baseline, and a floor where one can be stated."""
    if not data:
        return []
    rows: list[dict[str, Any]] = []
    if name == "bench_network_epoch.py":
        base = data["seconds_per_epoch"]["plain_mlp"]
        for k, v in data["seconds_per_epoch"].items():
            rows.append({"figure": f"{k} s/epoch", "value": v, "baseline": base, "ratio": v / base})
    elif name == "bench_ode_throughput.py":
        top = max(r["batch"] for r in data["results"])
        base = {
            r["batch"]: r["rate"] for r in data["results"] if r["method"] == "torchdiffeq-rk4"
        }.get(top)
        for r in data["results"]:
            if r["batch"] == top:
                rows.append(
                    {
                        "figure": f"{r['method']} solves/s @ batch {top}",
                        "value": r["rate"],
                        "baseline": base,
                        "ratio": None if not base else r["rate"] / base,
                    }
                )
    elif name == "bench_scaling.py":
        for series, s in data["slopes"].items():
            for key, v in s.items():
                rows.append(
                    {
                        "figure": f"{series}: log-log slope of {key}",
                        "value": v,
                        "baseline": None,
                        "floor": 1.0,
                        "note": "linear scaling has slope 1; below 1 means fixed costs dominate",
                    }
                )
        for series, pts in data["series"].items():
            last = pts[-1]
            floor = {k: v for k, v in last.items() if k.endswith("_floor")}
            rows.append(
                {
                    "figure": f"{series} @ {last['x']}: seconds, peak bytes",
                    "value": [last["seconds"], last["peak_bytes"]],
                    "baseline": None,
                    "floor": floor,
                }
            )
        dask = data.get("dask")
        if dask:
            rows.append(
                {
                    "figure": "dask sweep points/s, 2 workers",
                    "value": dask["points_per_s_2_workers"],
                    "baseline": dask["points_per_s_1_workers"],
                    "ratio": dask["speedup_2_vs_1"],
                    "floor": 2 * dask["ideal_points_per_s_per_worker"],
                    "note": "ceiling: 2 workers x 1 / (10 ms per point)",
                }
            )
    return rows


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Run {results['started']} ({'quick' if results['quick'] else 'full'}), "
        f"{results['machine']['cpus']} CPUs, load average before/after "
        f"{results['machine']['loadavg_before']} / {results['machine']['loadavg_after']}.",
        "",
        "| benchmark | figure | value | baseline (same run) | ratio | floor |",
        "|---|---|---|---|---|---|",
    ]
    for name, rec in results["benchmarks"].items():
        if not rec["figures"]:
            tail = rec["stdout_tail"][-1] if rec["stdout_tail"] else ""
            lines.append(f"| {name} | rc={rec['returncode']} | {tail} | | | |")
        for f in rec["figures"]:
            cells = [_fmt(f.get(k)) for k in ("value", "baseline", "ratio", "floor")]
            lines.append(f"| {name} | {f['figure']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, list):
        return ", ".join(_fmt(x) for x in v)
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items())
    return str(v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes in every benchmark")
    ap.add_argument("--out", default="docs/results/bench", help="folder for results.json")
    ap.add_argument("--only", default=None, help="comma-separated substrings of script names")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per benchmark")
    ap.add_argument("--data-dir", default=None, help="MNIST folder for benchmarks that take one")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    timeout = args.timeout or (180 if args.quick else 1800)
    load = os.getloadavg()
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "quick": args.quick,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "loadavg_before": [round(x, 2) for x in load],
        },
        "benchmarks": {},
    }
    for script in discover(args.only.split(",") if args.only else None):
        results["benchmarks"][script.name] = run_one(
            script, out, quick=args.quick, timeout=timeout, data_dir=args.data_dir
        )
    after = os.getloadavg()
    results["machine"]["loadavg_after"] = [round(x, 2) for x in after]
    cpus = os.cpu_count() or 1
    results["machine"]["shared_or_loaded"] = max(load[0], after[0]) > 0.5 * cpus
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
