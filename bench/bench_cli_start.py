"""How long the ``quasineuron`` command takes to start, against ``import torch``.

    python bench/bench_cli_start.py [--repeats 7] [--src PATH/TO/OTHER/src] [--json out.json]

Each case runs in a fresh interpreter, ``--repeats`` times; the median wall time is reported,
with its ratio to the baseline ``python -c "import torch"`` measured in the same run:

- ``--help``;
- ``devices`` (lists the device names);
- a config error (``run`` on a config with an unknown key);
- ``import quasineuron.pipeline`` (everything a ``characterize`` loads before any work).

``--src`` puts another checkout's ``src`` first on ``PYTHONPATH``, to time an older version
of the package in the same run (for before/after figures).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = "from quasineuron.cli import main; raise SystemExit(main({argv!r}))"


def _time(code: str, *, repeats: int, env: dict[str, str], cwd: str) -> float:
    """Median seconds of ``python -c code`` over ``repeats`` fresh processes (one warm-up)."""
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        if i:  # the first run fills the OS file cache; it is not counted
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    """Time the cases and print a table with ratios to ``import torch``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--src", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    env = dict(os.environ)
    if args.src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(args.src.resolve()), env.get("PYTHONPATH", "")])
    with tempfile.TemporaryDirectory() as tmp:
        bad = Path(tmp) / "bad.toml"
        bad.write_text("[sweep]\nnot_a_key = 1\n", encoding="utf-8")
        cases = {
            "import torch (baseline)": "import torch",
            "quasineuron --help": CLI.format(argv=["--help"]),
            "quasineuron devices": CLI.format(argv=["devices"]),
            "quasineuron run (config error)": CLI.format(
                argv=["run", str(bad), "--out", str(Path(tmp) / "out")]
            ),
            "import quasineuron.pipeline": "import quasineuron.pipeline",
        }
        results = {k: _time(c, repeats=args.repeats, env=env, cwd=tmp) for k, c in cases.items()}
    base = results["import torch (baseline)"]
    print(
        f"median of {args.repeats} fresh processes; python {sys.version.split()[0]}, "
        f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}"
    )
    for name, t in results.items():
        print(f"{name:34s} {t:7.3f} s   {t / base:5.2f}x import torch")
    if args.json is not None:
        args.json.write_text(json.dumps({"repeats": args.repeats, "seconds": results}, indent=2))


if __name__ == "__main__":
    main()
