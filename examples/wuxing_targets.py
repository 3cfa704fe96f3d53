"""The three MNIST accuracy aims of the Wuxing experiments (docs/wuxing.md), read from the runs.

    python examples/wuxing_targets.py docs/results

Writes ``docs/results/wuxing-targets/metrics.json``: for each aim (a ``"target"`` entry), the
run(s) it is measured on, their test accuracy on the device (the time simulation, scored once
per run), the validation result that chose them, their training cost (every stage of a
continued run), and whether the aim is met. Nothing is trained or scored here: the numbers are
those of the runs' own ``metrics.json``. Which run stands for an aim is fixed below, not picked
by test score: each is the end of a chain of stages kept on validation (docs/wuxing.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from wuxing_mnist import _val_result  # noqa: E402

BEST_MODEL1 = "wuxing-model1-twin-bptt8k"  # the last stage the MODEL1 chain kept on validation


def _run(results: Path, name: str) -> dict[str, Any]:
    """A scored run's test accuracy, validation, network and training cost (all stages)."""
    folder = results / name
    if not (folder / "metrics.json").exists():
        raise SystemExit(f"{folder}: not scored (no metrics.json)")
    m = json.loads((folder / "metrics.json").read_text())
    doc = json.loads((folder / "model.json").read_text())
    below = doc.get("init") or {}  # the summary of the chain below counts all of its stages
    by = "validate" if (folder / "validation.json").exists() else "training"  # as keep reads it
    return {
        "run": name,
        "trained_as": doc.get("trained_as"),
        "accuracy_device": m["accuracy"]["device"],
        "validation": {**_val_result(folder, by), "by": by},
        "network": doc["network"],
        "n_links": doc["wiring"]["n_links"],
        "train_seconds": doc["train_seconds"] + below.get("train_seconds", 0.0),
        "train_samples_seen": doc["train_samples_seen"] + below.get("train_samples_seen", 0),
        "machine": doc.get("machine", {}).get("device"),
    }


def targets(results: Path) -> list[dict[str, Any]]:
    """The three MNIST accuracy aims, each with its runs and whether it is met."""
    best = _run(results, BEST_MODEL1)
    m2, bptt = _run(results, "wuxing-model1-method2"), _run(results, "wuxing-model1-bptt")
    adders = _run(results, "wuxing-model1-adders")
    if m2["network"] != bptt["network"]:
        raise SystemExit("wuxing-model1-method2 and wuxing-model1-bptt are not the same network")
    gap = bptt["accuracy_device"] - m2["accuracy_device"]
    return [
        {"target": "MODEL1 wiring (4711 links), best method: test accuracy >= 90 %",
         "threshold": 0.90, "runs": [best], "met": best["accuracy_device"] >= 0.90},
        {"target": "method 2 within 3 points of backprop through time on the same network",
         "threshold": 0.03, "runs": [m2, bptt], "difference": gap, "met": gap <= 0.03},
        {"target": "MODEL1 with adders (fan-in up to 16): test accuracy >= 97 %",
         "threshold": 0.97, "runs": [adders], "met": adders["accuracy_device"] >= 0.97},
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("results", help="folder holding the scored wuxing-model* runs")
    p.add_argument("--name", default="wuxing-targets")
    a = p.parse_args(argv)
    results = Path(a.results)
    rows = targets(results)
    out = results / a.name
    out.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python", "examples/wuxing_targets.py", *sys.argv[1:]])
    doc = {"name": a.name, "targets": rows, "all_met": all(r["met"] for r in rows),
           "command": command}  # fmt: skip
    (out / "metrics.json").write_text(json.dumps(doc, indent=1) + "\n")
    for r in rows:
        accs = ", ".join(f"{x['run']} {100 * x['accuracy_device']:.2f} %" for x in r["runs"])
        print(f"{'met' if r['met'] else 'NOT met'}: {r['target']} ({accs})")


if __name__ == "__main__":
    main()
