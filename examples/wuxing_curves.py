"""Learning curves of the Wuxing MNIST runs (docs/wuxing.md).

    python examples/wuxing_curves.py docs/results --out docs/results/wuxing-curves.png

Reads every ``wuxing-model*/model.json`` of the committed MNIST runs (made by an earlier
script) and plots (left) the training loss against training images seen, smoothed over 50
steps, and (right) the validation accuracy after each epoch against training images seen
(continued runs include every stage they started from). Images, not seconds: the runs
trained on different machines.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def _val(entry: dict) -> float:
    """Validation accuracy of a history entry (steady-state or time-simulation validation)."""
    return entry.get("val_accuracy_steady", entry.get("val_accuracy_time"))


def _images(doc: dict) -> list[int]:
    """Training images seen at each validation of a run's history (this stage only)."""
    n_train = doc.get("args", {}).get("n_train") or 54_000  # a kept summary has no args
    seen = doc["train_samples_seen"]
    return [h.get("images", min(h["epoch"] * n_train, seen)) for h in doc["history"]]


def _stages(doc: dict, results: Path) -> list[dict]:
    """A run and every stage it continued from, earliest first: the stage's run in ``results``
    (found by name, and the same run: the same command) where it is there, else the summary the
    later run's model.json keeps (its images count the whole chain below it, so that chain's
    images are subtracted). A folder renamed or reused since holds another run: the summary."""
    init = doc.get("init")
    if not init:
        return [doc]
    path = results / init["name"] / "model.json"
    parent = json.loads(path.read_text()) if path.exists() else {}
    if parent and parent.get("command") == init.get("command") and init["name"] != doc["name"]:
        return [*_stages(parent, results), doc]  # (a run may continue its namesake)
    below = init.get("init") or {}  # absent in summaries kept before chains were
    own = {
        **init,
        "train_samples_seen": init["train_samples_seen"] - below.get("train_samples_seen", 0),
    }
    return [*_stages(own, results), doc]


def curve(doc: dict, results: Path) -> tuple[list[int], list[float], int]:
    """Validation curve of a run over all its stages, and the images of the whole chain."""
    images: list[int] = []
    vals: list[float] = []
    n0 = 0
    for stage in _stages(doc, results):
        images += [n0 + i for i in _images(stage)]
        vals += [_val(h) for h in stage["history"]]
        n0 += stage["train_samples_seen"]
    return images, vals, n0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("results", help="folder holding the wuxing-model* runs")
    p.add_argument("--out", default="wuxing-curves.png")
    a = p.parse_args(argv)
    runs = sorted(Path(a.results).glob("wuxing-model*/model.json"))
    plotted = plot(runs, a.out)
    print(
        f"wrote {a.out} ({len(plotted)} of {len(runs)} runs; averages of runs are not plotted, "
        "kept copies once)"
    )
    print(table(runs))


def plot(runs: list[Path], out: str | Path) -> list[str]:
    """Training loss and validation curves of the runs (``model.json`` paths) into ``out``;
    returns the names plotted (an average of runs has no training of its own, and a run that
    was kept under another name is drawn once, as the copy)."""
    fig, (ax_l, ax_v) = plt.subplots(1, 2, figsize=(13, 4))
    plotted: list[str] = []
    colors = plt.get_cmap("tab20").colors + plt.get_cmap("tab20b").colors
    docs = {path: json.loads(path.read_text()) for path in runs}
    folders = {path.parent.name: doc for path, doc in docs.items()}
    kept = {
        d["trained_as"]
        for d in docs.values()
        if d.get("trained_as")
        and folders.get(d["trained_as"], {}).get("command") == d.get("command")
    }
    for i, (path, doc) in enumerate(docs.items()):
        color = colors[i % len(colors)]
        if doc.get("averaged") or path.parent.name in kept:
            continue
        name = path.parent.name.removeprefix("wuxing-")  # the folder: two runs may share a name
        loss = np.asarray(doc["loss_per_step"], dtype=float)
        batch = doc["args"]["batch_size"]
        if loss.size >= 50:
            smooth = np.convolve(np.nan_to_num(loss, nan=np.nan), np.ones(50) / 50, mode="valid")
            ax_l.plot(batch * (np.arange(smooth.size) + 50), smooth, label=name, color=color)
        images, vals, _ = curve(doc, path.parent.parent)
        ax_v.plot(images, vals, "o-", label=name, color=color)
        plotted.append(name)
    ax_l.set(
        xlabel="training images seen (this stage)",
        ylabel="training loss (50-step mean)",
        yscale="log",
    )
    ax_l.ticklabel_format(axis="x", style="sci", scilimits=(3, 3))
    ax_v.set(xlabel="training images seen", ylabel="validation accuracy", xscale="log")
    ax_v.legend(
        fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), ncol=1 + len(plotted) // 20
    )  # one column holds about 20 names at this height
    ax_l.grid(alpha=0.3)
    ax_v.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110, bbox_inches="tight")  # the legend lies outside the axes
    plt.close(fig)
    return plotted


def table(runs: list[Path]) -> str:
    """Markdown table of the runs' test scores (from each run's metrics.json)."""
    head = "| run | links | training (images, s) | best val. (steady) | test: device | "
    head += "test: twin/steady | gap | agreement |"
    rows = [head, "|---|---|---|---|---|---|---|---|"]
    for path in runs:
        doc = json.loads(path.read_text())
        mpath = path.with_name("metrics.json")
        m = json.loads(mpath.read_text()) if mpath.exists() else {}
        acc = m.get("accuracy", {})
        stages = _stages(doc, path.parent.parent)
        seen = sum(s["train_samples_seen"] for s in stages)
        secs = sum(s["train_seconds"] for s in stages)
        training = f"{seen:,} ({secs:.0f} s)"
        if doc.get("averaged"):
            training = "mean of " + ", ".join(r["name"] for r in doc["averaged"])

        def pct(v: float | None) -> str:
            return "–" if v is None else f"{100 * v:.2f} %"

        val = doc.get("val_accuracy_steady", doc.get("val_accuracy_time", []))
        rows.append(
            f"| {path.parent.name} | {doc['wiring']['n_links']} | {training} | "
            f"{pct(max(val, default=None))} | {pct(acc.get('device'))} | "
            f"{pct(acc.get('surrogate'))} | {pct(m.get('gap'))} | {pct(m.get('agreement'))} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    main()
