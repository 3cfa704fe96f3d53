"""PNG plots of a run. Uses matplotlib's object API on the Agg canvas: no global state."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from quasineuron._atomic import atomic_write_bytes

__all__ = ["plot_accuracy_per_mode", "plot_confusion", "plot_training_curves", "save_figure"]


def save_figure(fig: Figure, path: str | Path, **savefig_kw: Any) -> Path:
    """Render ``fig`` as PNG and write it atomically (a crash never leaves a torn image).

    Args:
        fig: The figure.
        path: The ``.png`` file to write.
        **savefig_kw: Passed to ``Figure.savefig`` (e.g. ``dpi``).

    Returns:
        ``path``.
    """
    path = Path(path)
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", **savefig_kw)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _save(fig: Figure, path: str | Path) -> Path:
    return save_figure(fig, path, dpi=110, bbox_inches="tight")


def plot_training_curves(
    history: Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    title: str = "training",
    baseline: Sequence[Mapping[str, Any]] | None = None,
) -> Path:
    """Loss and accuracy per epoch (train and validation when present).

    Args:
        history: One mapping per epoch with keys among ``train_loss``, ``val_loss``,
            ``train_accuracy``, ``val_accuracy``.
        path: PNG file to write.
        title: Figure title.
        baseline: Optional second history (e.g. a plain MLP) drawn dashed.
    """
    fig = Figure(figsize=(9, 3.6))
    ax_loss, ax_acc = fig.subplots(1, 2)
    for hist, style, label in ((history, "-", ""), (baseline or [], "--", "baseline ")):
        epochs = np.arange(1, len(hist) + 1)
        for key, ax in (("loss", ax_loss), ("accuracy", ax_acc)):
            for split in ("train", "val"):
                vals = [h.get(f"{split}_{key}") for h in hist]
                if vals and all(v is not None for v in vals):
                    ax.plot(epochs, vals, style, marker=".", label=f"{label}{split}")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (ax_loss, ax_acc):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path)


def plot_accuracy_per_mode(accuracy: Mapping[str, float], path: str | Path) -> Path:
    """Bar chart of test accuracy per execution mode (and baselines)."""
    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.subplots()
    names = list(accuracy)
    vals = [100.0 * float(accuracy[n]) for n in names]
    bars = ax.bar(names, vals, color="tab:blue")
    for bar, v in zip(bars, vals, strict=True):
        ax.annotate(f"{v:.2f}", (bar.get_x() + bar.get_width() / 2, v), ha="center", va="bottom")
    lo = max(0.0, min(vals) - 10.0) if vals else 0.0
    ax.set(ylabel="test accuracy (%)", ylim=(lo, 100.5), title="accuracy per mode")
    ax.tick_params(axis="x", labelrotation=20)
    return _save(fig, path)


def plot_confusion(confusion: Sequence[Sequence[int]], path: str | Path, *, title: str) -> Path:
    """Confusion matrix (rows: true class, columns: predicted class)."""
    cm = np.asarray(confusion, dtype=float)
    fig = Figure(figsize=(4.8, 4.2))
    ax = fig.subplots()
    im = ax.imshow(cm, cmap="Blues")
    fig.colorbar(im, ax=ax)
    n = cm.shape[0]
    if n <= 12:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title=title, xticks=range(n), yticks=range(n))
    return _save(fig, path)
