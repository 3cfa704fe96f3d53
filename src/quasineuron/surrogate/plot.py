"""PNG plots of a twin against its device: the response, and the twin's error vs drive.

Figures are built with ``matplotlib.figure.Figure`` and its Agg canvas, so the global pyplot
state, backend and style are never touched.

With ``true_device`` the truth is evaluated on a dense mesh of the domain (1-D: 1001 points;
2-D: ``resolution`` per drive), so the error plot shows the twin between sweep points too.
Without it the truth is the sweep table's successful points, which include the training
points (a spline is exact there). For one drive, the stretches outside the twin's validity mask
(where the device failed in the sweep, so the twin's values there are invented) are shaded grey.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from quasineuron.devices.base import AbstractDevice
from quasineuron.report.plots import save_figure
from quasineuron.surrogate.base import AbstractSurrogate

__all__ = ["plot_fit"]


def plot_fit(
    model: AbstractSurrogate,
    table: Any,
    folder: str | os.PathLike[str],
    *,
    true_device: AbstractDevice | None = None,
    resolution: int = 101,
    output: int = 0,
    timeout: float | None = None,
) -> list[Path]:
    """Write ``response.png`` and ``error.png`` for one output of a twin.

    1 drive: curves of device and twin vs the drive, and the error curve. 2 drives: heat maps
    of device, twin and error. More drives: twin vs device scatter, and error vs each drive.

    Args:
        model: The twin.
        table: The sweep table it was fitted to (``u``, ``y``, ``status``).
        folder: Output folder, created if missing.
        true_device: If given, the truth is evaluated on a dense mesh of the domain.
        resolution: Mesh points per drive for 2-drive plots with ``true_device``.
        timeout: Seconds a mesh point of ``true_device`` may take (see ``sweep``).
        output: Which output to plot, in ``[0, n_out)``.

    Returns:
        Paths of the PNG files written.

    Raises:
        ValueError: If ``output`` is out of range.
    """
    if not 0 <= output < model.n_out:
        raise ValueError(f"output must be in [0, {model.n_out}), got {output}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    u, y, on_mesh = _truth(model, table, true_device, resolution, timeout)
    with torch.no_grad():
        y_hat = model(torch.as_tensor(u, dtype=torch.float64)).numpy()
    y, y_hat = y[:, output], y_hat[:, output]
    err = y_hat - y
    title = f"{model.name}, output {output}"
    names = [f"u[{k}]" for k in range(model.n_in)]
    resp, errf = _figure(), _figure()
    if model.n_in == 1:
        order = np.argsort(u[:, 0])
        ax = resp.add_subplot()
        ax.plot(u[order, 0], y[order], "k-" if on_mesh else "k.", label="device", ms=3)
        ax.plot(u[order, 0], y_hat[order], "C1--", label=f"twin ({model.kind})")
        ax.set(xlabel=names[0], ylabel="y", title=title)
        _shade_invalid(ax, model)
        ax.legend()
        ax = errf.add_subplot()
        ax.plot(u[order, 0], err[order], "C3-" if on_mesh else "C3.", ms=3)
        ax.set(xlabel=names[0], ylabel="twin − device", title=f"twin error, {title}")
        _shade_invalid(ax, model)
    elif model.n_in == 2:
        resp.set_size_inches(11, 4.2)
        for i, (vals, label) in enumerate(((y, "device"), (y_hat, f"twin ({model.kind})"))):
            ax = resp.add_subplot(1, 2, i + 1)
            sc = _map(ax, u, vals, on_mesh, resolution, cmap="viridis")
            resp.colorbar(sc, ax=ax)
            ax.set(xlabel=names[0], ylabel=names[1], title=f"{label}, {title}")
        ax = errf.add_subplot()
        lim = float(np.max(np.abs(err))) or 1.0
        sc = _map(ax, u, err, on_mesh, resolution, cmap="RdBu_r", vmin=-lim, vmax=lim)
        errf.colorbar(sc, ax=ax, label="twin − device")
        ax.set(xlabel=names[0], ylabel=names[1], title=f"twin error, {title}")
    else:
        ax = resp.add_subplot()
        ax.plot(y, y_hat, ".", ms=2)
        ax.set(xlabel="device", ylabel="twin", title=title)
        errf.set_size_inches(4 * model.n_in, 3.5)
        for k in range(model.n_in):
            ax = errf.add_subplot(1, model.n_in, k + 1)
            ax.plot(u[:, k], err, ".", ms=2)
            ax.set(xlabel=names[k], ylabel="twin − device")
    paths = [folder / "response.png", folder / "error.png"]
    for fig, path in zip((resp, errf), paths, strict=True):
        fig.tight_layout()
        save_figure(fig, path, dpi=110)
    return paths


def _shade_invalid(ax: Any, model: AbstractSurrogate) -> None:
    """Shade the drive intervals of a 1-drive twin that lie outside its validity mask."""
    x = torch.linspace(model.domain.low[0], model.domain.high[0], 2001, dtype=torch.float64)
    bad = (~model.valid(x.reshape(-1, 1))).numpy()
    if not bad.any():
        return
    xs = x.numpy()
    edges = np.flatnonzero(np.diff(np.r_[0, bad.astype(np.int8), 0]))  # run starts and ends
    for k, (a, b) in enumerate(zip(edges[::2], edges[1::2], strict=True)):
        label = "device failed: twin not fitted" if k == 0 else None
        ax.axvspan(xs[a], xs[b - 1], color="0.85", zorder=0, label=label)


def _figure() -> Figure:
    fig = Figure(figsize=(6, 4.2))
    FigureCanvasAgg(fig)
    return fig


def _truth(
    model: AbstractSurrogate,
    table: Any,
    device: AbstractDevice | None,
    resolution: int,
    timeout: float | None,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Drives (n, n_in) and true outputs (n, n_out), and whether they lie on a dense mesh."""
    if device is not None and model.n_in <= 2:
        from quasineuron.sweep import evaluate_points

        low, high = model.domain.low, model.domain.high
        n = 1001 if model.n_in == 1 else resolution
        axes = [np.linspace(lo, hi, n) for lo, hi in zip(low, high, strict=True)]
        mesh = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, model.n_in)
        tab = evaluate_points(device, mesh, batch_size=4096, timeout=timeout)
        ok = (np.asarray(tab.status) == 0) & np.isfinite(np.asarray(tab.y)).all(axis=1)
        if ok.all():
            return np.asarray(tab.u), np.asarray(tab.y), True
        table = tab
    y = np.asarray(table.y)
    ok = (np.asarray(table.status) == 0) & np.isfinite(y).all(axis=1)
    return np.asarray(table.u)[ok], y[ok], False


def _map(ax: Any, u: np.ndarray, v: np.ndarray, on_mesh: bool, resolution: int, **kw: Any) -> Any:
    if on_mesh:
        n = resolution
        return ax.pcolormesh(
            u[:, 0].reshape(n, n), u[:, 1].reshape(n, n), v.reshape(n, n), shading="auto", **kw
        )
    return ax.scatter(u[:, 0], u[:, 1], c=v, s=6, **kw)
