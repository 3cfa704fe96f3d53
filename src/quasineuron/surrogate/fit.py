"""Fit a twin to a sweep table, measure its held-out fidelity, refine it adaptively.

Held-out error, by twin kind (recorded in ``FitReport.validation``):

- MLP: a seeded random ``val_fraction`` of the successful sweep points is held out; it drives
  early stopping and is where the report's error is measured (``"random-split"``).
- Spline: a spline interpolates every node, so node errors say nothing. It is refitted on every
  other node per drive and measured at the nodes left out (``"grid-leave-out"``). This is an
  honest but pessimistic estimate: the returned twin, fitted on all nodes, has half that node
  spacing, and cubic splines converge like ``h**4``.
- With ``true_device`` given, both kinds are instead measured against the device at
  ``n_check`` scrambled Sobol points of the domain (``"device-sobol"``), the most direct check.

``kind="auto"`` fits every applicable kind and keeps the one with the smallest pooled NRMSE
(skipping the MLP when a spline twin already meets ``good_enough``).

Failed points (status not OK, or outputs NaN/inf even where the table says OK) are never fitted.
The twin carries a validity mask of the region it was fitted on (``twin.valid(u)``):

- grid sweep: the mask's cells are the grid's cells; a cell is valid when all its ``2**n_in``
  corner points succeeded (a spline's values inside a cell come from its corners, and near a
  failed node from the filled-in value).
- scattered points: the domain is cut into ``m`` equal bins per drive, ``m`` about half the
  points per drive (at least 2, at most 64, and at most 65536 cells in all); a bin is invalid
  when a failed point lies in it. Bins without any point stay valid: nothing says the device
  fails there. Above 16 drives (2**17 cells) no mask is kept and the twin is valid on its
  whole domain.

Repeated sweeps (``sweep(..., repeats=k)``): rows with identical drives are one point; the twin
is fitted on the mean of its successful repeats, a point fails only when all its repeats
failed, and the report gives the noise floor (pooled within-point standard deviation).
"""

from __future__ import annotations

import math
import operator
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

import numpy as np
import torch
from scipy.interpolate import RBFInterpolator
from scipy.stats import qmc

from quasineuron.devices.base import AbstractDevice, Box
from quasineuron.surrogate.base import AbstractSurrogate, DomainPolicy, check_policy
from quasineuron.surrogate.mlp import check_activation, train_mlp
from quasineuron.surrogate.report import FitReport, fidelity
from quasineuron.surrogate.spline import MAX_SPLINE_DRIVES, SplineSurrogate
from quasineuron.sweep.store import PointStatus, SweepTable

__all__ = ["FitResult", "SweepTableLike", "fit_surrogate", "refine_surrogate", "spline_grid"]

Kind = Literal["auto", "mlp", "spline"]
_KINDS = ("auto", "mlp", "spline")


class SweepTableLike(Protocol):
    """What fitting reads from a :class:`~quasineuron.sweep.SweepTable`.

    The members are read-only properties, so frozen tables (``SweepTable``) satisfy it.
    """

    @property
    def u(self) -> np.ndarray:
        """Drives, float64 (n_points, n_in)."""

    @property
    def y(self) -> np.ndarray:
        """Outputs, float64 (n_points, n_out)."""

    @property
    def status(self) -> np.ndarray:
        """Per-point status, int8 (n_points,); 0 = ok."""

    @property
    def domain(self) -> Box:
        """The box the points were drawn from."""

    @property
    def device(self) -> dict[str, Any]:
        """The device's ``describe()``."""


@dataclass(frozen=True)
class FitResult:
    """A fitted twin and its fidelity.

    Attributes:
        model: The twin, an :class:`AbstractSurrogate` (itself a device).
        report: Its held-out fidelity.
        alternatives: Reports of the other kinds tried by ``kind="auto"`` and not kept.
        history: Pooled held-out NRMSE after each round of :func:`refine_surrogate` (else empty).
    """

    model: AbstractSurrogate
    report: FitReport
    alternatives: tuple[FitReport, ...] = ()
    history: tuple[float, ...] = ()


@dataclass(frozen=True)
class _Grid:
    nodes: list[np.ndarray]  # per drive, strictly increasing
    index: np.ndarray  # (n_points, n_in) int node index of every table row


def spline_grid(table: SweepTableLike) -> tuple[list[np.ndarray] | None, str]:
    """Whether a spline twin can be fitted to ``table``, and on which grid.

    Returns:
        ``(nodes, "")`` with the per-drive node arrays when the drives form a full tensor grid
        with at least 4 nodes per drive and at most :data:`MAX_SPLINE_DRIVES` drives, else
        ``(None, reason)``.
    """
    grid, reason = _detect_grid(np.asarray(table.u, dtype=np.float64))
    return (grid.nodes if grid is not None else None), reason


def _detect_grid(u: np.ndarray) -> tuple[_Grid | None, str]:
    n, d = u.shape
    if d > MAX_SPLINE_DRIVES:
        return None, f"a spline twin supports at most {MAX_SPLINE_DRIVES} drives, got {d}"
    nodes, index = [], np.empty((n, d), dtype=np.int64)
    for k in range(d):
        x, inv = np.unique(u[:, k], return_inverse=True)
        nodes.append(x)
        index[:, k] = inv.reshape(-1)
    shape = tuple(len(x) for x in nodes)
    if min(shape) < 4:
        return None, f"a spline twin needs at least 4 grid nodes per drive, got {shape}"
    flat = np.ravel_multi_index(index.T, shape)
    if n != math.prod(shape) or len(np.unique(flat)) != n:
        return None, (
            f"the {n} sweep points do not form a full tensor grid (distinct values per drive "
            f"{shape}); sweep with a Grid sampler, or use kind='mlp' for scattered points"
        )
    return _Grid(nodes, index), ""


def _check_int(value: Any, name: str, minimum: int) -> int:
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {value!r}") from None
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


def fit_surrogate(
    table: SweepTableLike,
    *,
    kind: Kind = "auto",
    hidden: Sequence[int] = (64, 64),
    activation: str = "silu",
    max_steps: int = 800,
    lr: float = 3e-3,
    batch_size: int | None = None,
    patience: int = 20,
    lbfgs_steps: int = 500,
    val_fraction: float = 0.2,
    seed: int = 0,
    true_device: AbstractDevice | None = None,
    n_check: int = 1024,
    policy: DomainPolicy = "warn",
    dtype: torch.dtype = torch.float64,
    good_enough: float = 1e-4,
    timeout: float | None = None,
) -> FitResult:
    """Fit a differentiable twin of the device behind ``table``.

    Points with a non-zero status, or with a non-finite output even where the status is OK,
    are excluded and counted in the report (``failed_fraction``, ``sweep_failures``). The
    returned twin's ``domain`` is ``table.domain`` and its validity mask (``twin.valid(u)``)
    marks the region fitted on successful points (see the module docstring). Rows with
    identical drives (``sweep(..., repeats=k)``) are one point: the twin fits the mean of its
    successful repeats and the report gives the noise floor.

    Args:
        table: A sweep table (``u`` (n, n_in), ``y`` (n, n_out), ``status`` (n,), ``domain``,
            ``device``).
        kind: ``"mlp"``, ``"spline"`` (grid sweeps with 1 to 3 drives), or ``"auto"``: fit
            every applicable kind and keep the smallest held-out pooled NRMSE.
        hidden: MLP hidden layer widths.
        activation: MLP hidden activation (``"silu"``, ``"tanh"``, ``"gelu"``, ``"softplus"``).
        max_steps: Maximum Adam steps of the MLP.
        lr: Initial Adam learning rate.
        batch_size: MLP mini-batch size; ``None`` trains full-batch.
        patience: MLP validation evaluations (every 25 steps) without improvement before stopping.
        lbfgs_steps: L-BFGS polish iterations after Adam; 0 skips it.
        val_fraction: Fraction of successful points held out from MLP training, in [0, 1).
        seed: Seed for the split, initial weights, mini-batches and Sobol check points.
        true_device: If given, measure the held-out error against it at ``n_check`` Sobol
            points (``"device-sobol"``) instead of the table-based estimates.
        n_check: Number of Sobol check points with ``true_device``.
        policy: Out-of-domain policy of the twin.
        dtype: Floating dtype of MLP training and weights.
        good_enough: With ``kind="auto"``, a spline twin whose held-out pooled NRMSE is at or
            below this is kept without also training an MLP (the spline is both more accurate
            and far cheaper per call whenever it applies; the MLP costs seconds to minutes).
        timeout: Seconds a ``true_device`` check point may take (see ``sweep``); a hung
            point is left out like a failed one.

    Returns:
        The twin and its :class:`FitReport` (plus the reports of the kinds not kept).

    Raises:
        ValueError: If an option is invalid, the table has too few successful points, or
            ``kind="spline"`` does not fit the table (the message says why).
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    check_policy(policy)
    check_activation(activation)
    hidden = tuple(_check_int(h, "hidden[i]", 1) for h in hidden)
    max_steps = _check_int(max_steps, "max_steps", 1)
    patience = _check_int(patience, "patience", 1)
    lbfgs_steps = _check_int(lbfgs_steps, "lbfgs_steps", 0)
    seed = _check_int(seed, "seed", 0)
    n_check = _check_int(n_check, "n_check", 1)
    if batch_size is not None:
        batch_size = _check_int(batch_size, "batch_size", 1)
    if not (0.0 <= float(val_fraction) < 1.0):
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    if not (math.isfinite(float(lr)) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
    u_rows = np.asarray(table.u, dtype=np.float64)
    y_rows = np.asarray(table.y, dtype=np.float64)
    status = np.asarray(table.status)
    if true_device is not None and true_device.n_in != u_rows.shape[1]:
        raise ValueError(
            f"true_device has n_in={true_device.n_in} but the table has {u_rows.shape[1]} drives"
        )
    points = _pool_repeats(u_rows, y_rows, status)
    u_all, y_all, ok = points.u, points.y, points.ok
    n_ok = int(ok.sum())
    if n_ok < 2:
        raise ValueError(
            f"the table has {n_ok} successful points out of {len(ok)} (outputs finite and "
            "status OK); a twin needs at least 2 (check the sweep's errors)"
        )
    y_ok = y_all[ok]
    output_range = y_ok.max(axis=0) - y_ok.min(axis=0)
    failures = _failure_counts(status, y_rows)
    common = {
        "domain": table.domain,
        "policy": policy,
        "source": dict(table.device),
        "output_range": output_range,
        "n_failed": int(len(ok) - n_ok),
        "context": {
            "sweep_failures": failures,
            "n_sweep": len(status),
            "noise_floor": points.noise_floor,
            "repeats": points.repeats,
            "domain": table.domain,
        },
    }
    check = (
        _device_check_points(true_device, table.domain, n_check, seed, timeout)
        if true_device
        else None
    )

    grid, reason = _detect_grid(u_all)
    kinds: list[str]
    if kind == "spline":
        if grid is None:
            raise ValueError(f"cannot fit kind='spline': {reason}")
        kinds = ["spline"]
    elif kind == "mlp":
        kinds = ["mlp"]
    else:
        kinds = (["spline"] if grid is not None else []) + ["mlp"]

    results: list[FitResult] = []
    for k in kinds:
        if k == "mlp" and results and results[0].report.nrmse <= good_enough:
            break  # the spline twin is already excellent; skip the slow MLP fit
        if k == "spline":
            assert grid is not None
            results.append(_fit_spline(u_all, y_all, ok, grid, check=check, **common))
        else:
            settings = {
                "hidden": list(hidden),
                "activation": activation,
                "max_steps": max_steps,
                "lr": float(lr),
                "batch_size": batch_size,
                "patience": patience,
                "lbfgs_steps": lbfgs_steps,
                "val_fraction": float(val_fraction),
                "seed": seed,
                "dtype": str(dtype).removeprefix("torch."),
            }
            results.append(_fit_mlp(u_all[ok], y_all[ok], check=check, settings=settings, **common))
    results.sort(key=lambda r: r.report.nrmse)
    best = results[0]
    best.model.fit_report = best.report
    mask = _validity_mask(u_all, ok, grid, table.domain)
    if mask is not None:
        best.model.set_validity(*mask)
    return FitResult(best.model, best.report, alternatives=tuple(r.report for r in results[1:]))


@dataclass(frozen=True)
class _Points:
    u: np.ndarray  # (n, n_in) distinct drives
    y: np.ndarray  # (n, n_out) mean of the successful repeats; NaN where none succeeded
    ok: np.ndarray  # (n,) bool: some repeat succeeded with finite outputs
    noise_floor: np.ndarray | None  # (n_out,) pooled within-point std, None without repeats
    repeats: int


def _good_rows(status: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Rows usable for fitting: status OK *and* every output finite."""
    return (status == PointStatus.OK) & np.isfinite(y).all(axis=1)


def _pool_repeats(u: np.ndarray, y: np.ndarray, status: np.ndarray) -> _Points:
    """Merge rows with identical drives into one point: the mean of its good repeats."""
    good = _good_rows(status, y)
    uniq, inv, counts = np.unique(u, axis=0, return_inverse=True, return_counts=True)
    if len(uniq) == len(u):  # no repeats: keep the table's row order (seeded splits rely on it)
        return _Points(u, np.where(good[:, None], y, np.nan), good, None, 1)
    inv = inv.reshape(-1)
    n, n_out = len(uniq), y.shape[1]
    n_good = np.bincount(inv, weights=good, minlength=n)
    y0 = np.where(good[:, None], y, 0.0)
    total = np.stack([np.bincount(inv, weights=y0[:, o], minlength=n) for o in range(n_out)], 1)
    ok = n_good > 0
    mean = np.where(ok[:, None], total / np.maximum(n_good, 1)[:, None], np.nan)
    # pooled within-point variance: squared deviations from each point's mean, over the
    # degrees of freedom sum(n_g - 1) of the points with at least two good repeats
    dev = np.where(good[:, None], y - np.nan_to_num(mean[inv]), 0.0)
    ss = np.stack([np.bincount(inv, weights=dev[:, o] ** 2, minlength=n) for o in range(n_out)])
    dof = float(np.maximum(n_good - 1, 0).sum())
    noise = np.sqrt(ss.sum(axis=1) / dof) if dof > 0 else None
    return _Points(uniq, mean, ok, noise, int(counts.max()))


def _failure_counts(status: np.ndarray, y: np.ndarray) -> dict[str, int]:
    """Failed rows by reason; OK rows with non-finite outputs count as non-finite."""
    ok_nonfinite = (status == PointStatus.OK) & ~np.isfinite(y).all(axis=1)
    return {
        "device failed": int((status == PointStatus.ERROR).sum()),
        "non-finite": int((status == PointStatus.NONFINITE).sum() + ok_nonfinite.sum()),
        "timed out": int((status == PointStatus.TIMEOUT).sum()),
        "pending": int((status == PointStatus.PENDING).sum()),
    }


# At most this many cells in a scattered-point validity mask (a uint8 each in the twin file).
_MAX_MASK_CELLS = 2**16


def _validity_mask(
    u: np.ndarray, ok: np.ndarray, grid: _Grid | None, domain: Box
) -> tuple[list[torch.Tensor], torch.Tensor] | None:
    """Edges per drive and cells of the region fitted on successful points."""
    d = u.shape[1]
    if grid is not None:
        shape = tuple(len(x) for x in grid.nodes)
        known = np.zeros(shape, dtype=bool)
        known[tuple(grid.index.T)] = ok
        cells = np.ones(tuple(n - 1 for n in shape), dtype=bool)
        for corner in np.ndindex(*(2,) * d):  # a cell is valid when all its corners are
            cells &= known[tuple(slice(c, n - 1 + c) for c, n in zip(corner, shape, strict=True))]
        return [torch.as_tensor(x) for x in grid.nodes], torch.as_tensor(cells)
    if 2**d > _MAX_MASK_CELLS:
        return None  # too many drives for even two bins each: no mask (valid everywhere)
    per_drive = max(2, min(64, int(len(u) ** (1 / d) / 2)))
    while per_drive > 2 and per_drive**d > _MAX_MASK_CELLS:
        per_drive -= 1
    low, high = np.asarray(domain.low, np.float64), np.asarray(domain.high, np.float64)
    edges = [np.linspace(lo, hi, per_drive + 1) for lo, hi in zip(low, high, strict=True)]
    cells = np.ones((per_drive,) * d, dtype=bool)
    bad = u[~ok]
    if len(bad):
        idx = np.stack(
            [
                np.clip(np.searchsorted(e, bad[:, k], side="right") - 1, 0, per_drive - 1)
                for k, e in enumerate(edges)
            ],
            axis=1,
        )
        cells[tuple(idx.T)] = False
    return [torch.as_tensor(e) for e in edges], torch.as_tensor(cells)


_REASONS = {
    PointStatus.ERROR: "device failed",
    PointStatus.NONFINITE: "non-finite",
    PointStatus.TIMEOUT: "timed out",
    PointStatus.PENDING: "pending",
}


def _check_table_points(tab: Any) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """The good rows of an evaluated check table and the others counted by reason."""
    status = np.asarray(tab.status)
    y = np.asarray(tab.y)
    good = _good_rows(status, y)
    excluded = {reason: int((status == code).sum()) for code, reason in _REASONS.items()}
    excluded["non-finite"] += int(((status == PointStatus.OK) & ~good).sum())
    return np.asarray(tab.u)[good], y[good], {k: v for k, v in excluded.items() if v}


def _device_check_points(
    device: AbstractDevice, domain: Box, n: int, seed: int, timeout: float | None
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Scrambled Sobol points of ``domain``, the device's good outputs, and the rest counted."""
    from quasineuron.sweep import evaluate_points

    u = _sobol(domain, n, seed)
    tab = evaluate_points(device, u, timeout=timeout)
    u_ok, y_ok, excluded = _check_table_points(tab)
    if not len(u_ok):
        raise ValueError(
            f"true_device failed at all {n} check points ({excluded}); see evaluate_points"
        )
    return u_ok, y_ok, excluded


def _sobol(domain: Box, n: int, seed: int) -> np.ndarray:
    sampler = qmc.Sobol(d=domain.dim, scramble=True, seed=np.random.default_rng(seed))
    # Draw a power of two (Sobol's balance properties; scipy warns otherwise) and keep n.
    unit = sampler.random_base2(max(0, math.ceil(math.log2(n))))[:n]
    low, high = np.asarray(domain.low), np.asarray(domain.high)
    return low + (high - low) * unit


def _predict(model: AbstractSurrogate, u: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(u, dtype=torch.float64)).numpy()


def _fit_spline(
    u: np.ndarray,
    y: np.ndarray,
    ok: np.ndarray,
    grid: _Grid,
    *,
    domain: Box,
    policy: DomainPolicy,
    source: dict[str, Any],
    output_range: np.ndarray,
    n_failed: int,
    check: tuple[np.ndarray, np.ndarray, dict[str, int]] | None,
    context: dict[str, Any],
) -> FitResult:
    t0 = time.perf_counter()
    shape = tuple(len(x) for x in grid.nodes)
    values = np.full(shape + (y.shape[1],), np.nan)
    values[tuple(grid.index.T)] = y
    known = np.zeros(shape, dtype=bool)
    known[tuple(grid.index.T)] = ok
    n_filled = int((~known).sum())
    if n_filled:
        values = _fill(grid.nodes, values, known, domain)
    model = SplineSurrogate.from_grid(
        grid.nodes, values, domain=domain, policy=policy, source=source
    )
    if check is not None:
        u_val, y_val, excluded = check
        y_hat = _predict(model, u_val)
        validation = "device-sobol"
    else:
        excluded = context["sweep_failures"]
        # Refit on every other node (keeping the last) and test at the nodes left out.
        keep = [np.unique(np.r_[np.arange(0, len(x), 2), len(x) - 1]) for x in grid.nodes]
        coarse = SplineSurrogate.from_grid(
            [x[kk] for x, kk in zip(grid.nodes, keep, strict=True)],
            values[np.ix_(*keep)],
            domain=domain,
            policy=policy,
        )
        on_coarse = np.ones(shape, dtype=bool)
        for k, kk in enumerate(keep):
            mask = np.zeros(shape[k], dtype=bool)
            mask[kk] = True
            on_coarse &= mask.reshape((1,) * k + (-1,) + (1,) * (len(shape) - k - 1))
        held = known & ~on_coarse
        idx = np.nonzero(held)
        u_val = np.stack([x[i] for x, i in zip(grid.nodes, idx, strict=True)], axis=1)
        y_val = values[idx]
        y_hat = _predict(coarse, u_val)
        validation = "grid-leave-out"
    report = fidelity(
        y_val,
        y_hat,
        output_range,
        kind="spline",
        validation=validation,
        n_train=int(ok.sum()),
        n_failed=n_failed,
        n_filled=n_filled,
        fit_time_s=time.perf_counter() - t0,
        settings={"grid": list(shape), "boundary": "not-a-knot"},
        u=u_val,
        excluded=excluded,
        **context,
    )
    return FitResult(model, report)


def _fill(
    nodes: list[np.ndarray], values: np.ndarray, known: np.ndarray, domain: Box
) -> np.ndarray:
    """Fill unknown grid nodes by thin-plate RBF interpolation of their known neighbours."""
    low, high = np.asarray(domain.low), np.asarray(domain.high)
    mesh = np.stack(np.meshgrid(*nodes, indexing="ij"), axis=-1)
    scaled = (mesh - low) / (high - low)  # equal footing for every drive
    n_known = int(known.sum())
    if n_known < len(nodes) + 2:
        raise ValueError(
            f"only {n_known} grid nodes succeeded; too few to fill the failed ones for a spline"
        )
    rbf = RBFInterpolator(scaled[known], values[known], neighbors=min(50, n_known))
    out = values.copy()
    out[~known] = rbf(scaled[~known])
    return out


def _fit_mlp(
    u: np.ndarray,
    y: np.ndarray,
    *,
    domain: Box,
    policy: DomainPolicy,
    source: dict[str, Any],
    output_range: np.ndarray,
    n_failed: int,
    check: tuple[np.ndarray, np.ndarray, dict[str, int]] | None,
    settings: dict[str, Any],
    context: dict[str, Any],
) -> FitResult:
    t0 = time.perf_counter()
    dtype = torch.float64 if settings["dtype"] == "float64" else torch.float32
    gen = torch.Generator().manual_seed(settings["seed"])
    n = len(u)
    n_val = int(round(settings["val_fraction"] * n))
    n_val = min(max(n_val, 1 if settings["val_fraction"] > 0 else 0), n - 1)
    perm = torch.randperm(n, generator=gen).numpy()
    val, train = perm[:n_val], perm[n_val:]
    ut, yt = torch.as_tensor(u, dtype=dtype), torch.as_tensor(y, dtype=dtype)
    model = train_mlp(
        ut[train],
        yt[train],
        ut[val],
        yt[val],
        domain=domain,
        hidden=settings["hidden"],
        activation=settings["activation"],
        max_steps=settings["max_steps"],
        lr=settings["lr"],
        batch_size=settings["batch_size"],
        patience=settings["patience"],
        lbfgs_steps=settings["lbfgs_steps"],
        generator=gen,
        policy=policy,
        source=source,
    )
    if check is not None:
        u_val, y_val, excluded = check
        validation = "device-sobol"
    elif n_val > 0:
        u_val, y_val = u[val], y[val]
        validation = "random-split"
        excluded = context["sweep_failures"]
    else:
        raise ValueError(
            "val_fraction=0 leaves no held-out points; give val_fraction > 0 or true_device"
        )
    report = fidelity(
        y_val,
        _predict(model, u_val),
        output_range,
        kind="mlp",
        validation=validation,
        n_train=len(train),
        n_failed=n_failed,
        fit_time_s=time.perf_counter() - t0,
        settings=settings,
        u=u_val,
        excluded=excluded,
        **context,
    )
    return FitResult(model, report)


def refine_surrogate(
    device: AbstractDevice,
    table: SweepTable,
    *,
    target_nrmse: float,
    max_rounds: int = 5,
    points_per_round: int = 64,
    n_check: int = 512,
    seed: int = 0,
    batch_size: int = 256,
    **fit_options: Any,
) -> tuple[FitResult, Any]:
    """Fit, measure against the device, add sweep points where the twin is worst, refit.

    Every round draws ``n_check`` fresh scrambled Sobol points, evaluates the device there
    (``evaluate_points``) and measures the twin's pooled NRMSE: that honest device-based error
    is the stopping criterion and the returned report (``"device-sobol"``). If it is above
    ``target_nrmse``:

    - MLP twin: the ``points_per_round`` check points with the largest error (already evaluated)
      join the table.
    - Spline twin (grid table): along every drive, the grid intervals holding the
      ``points_per_round`` worst check points are split at their midpoints, the device is
      evaluated at the new grid nodes, and the table stays a full grid.

    Args:
        device: The true device.
        table: The initial sweep table of ``device``.
        target_nrmse: Stop once the pooled held-out NRMSE is at or below this.
        max_rounds: Maximum number of refinement rounds (fits = rounds + 1 at most).
        points_per_round: Worst check points used per round.
        n_check: Sobol check points evaluated per round.
        seed: Seed of the fits and of the Sobol scrambling (round ``r`` uses ``seed + r + 1``).
        batch_size: Points per device call.
        **fit_options: Passed to :func:`fit_surrogate` (``kind``, ``hidden``, ...).

    Returns:
        The last fit (its report measured against the device, ``history`` the NRMSE per
        round) and the enlarged table.

    Raises:
        ValueError: If an option is invalid.
    """
    from quasineuron.sweep import evaluate_points

    if not (math.isfinite(float(target_nrmse)) and target_nrmse > 0):
        raise ValueError(f"target_nrmse must be a positive number, got {target_nrmse!r}")
    max_rounds = _check_int(max_rounds, "max_rounds", 0)
    points_per_round = _check_int(points_per_round, "points_per_round", 1)
    n_check = _check_int(n_check, "n_check", 1)
    seed = _check_int(seed, "seed", 0)
    if "true_device" in fit_options:
        raise ValueError("refine_surrogate measures against `device`; do not pass true_device")
    history: list[float] = []
    for r in range(max_rounds + 1):
        t0 = time.perf_counter()
        fit = fit_surrogate(table, seed=seed, **fit_options)
        u_check = _sobol(table.domain, n_check, seed + r + 1)
        check = evaluate_points(device, u_check, batch_size=batch_size)
        ok = _good_rows(np.asarray(check.status), np.asarray(check.y))
        u_c, y_c, excluded = _check_table_points(check)
        y_hat = _predict(fit.model, u_c)
        report = fidelity(
            y_c,
            y_hat,
            np.asarray(fit.report.output_range),
            kind=fit.report.kind,
            validation="device-sobol",
            n_train=fit.report.n_train,
            n_failed=fit.report.n_failed,
            n_filled=fit.report.n_filled,
            fit_time_s=time.perf_counter() - t0,
            settings={**fit.report.settings, "refine_round": r},
            u=u_c,
            domain=table.domain,
            excluded=excluded,
            sweep_failures=fit.report.sweep_failures,
            n_sweep=int(np.asarray(table.status).size),
            noise_floor=np.asarray(fit.report.noise_floor) if fit.report.noise_floor else None,
            repeats=fit.report.repeats,
        )
        history.append(report.nrmse)
        fit.model.fit_report = report
        result = replace(fit, report=report, history=tuple(history))
        if report.nrmse <= target_nrmse or r == max_rounds:
            return result, table
        rng = np.where(np.asarray(report.output_range) > 0, report.output_range, 1.0)
        err = np.sqrt(np.mean(((y_hat - y_c) / rng) ** 2, axis=1))
        worst = u_c[np.argsort(err)[::-1][:points_per_round]]
        if fit.report.kind == "spline":
            new_u = _refined_grid_points(table, worst)
            if len(new_u):
                table = table.concat(evaluate_points(device, new_u, batch_size=batch_size))
        else:
            keep = np.zeros(len(check.status), dtype=bool)
            keep[np.nonzero(ok)[0][np.argsort(err)[::-1][:points_per_round]]] = True
            table = table.concat(_subset(check, keep))
    raise AssertionError("unreachable")  # pragma: no cover


def _refined_grid_points(table: SweepTableLike, worst: np.ndarray) -> np.ndarray:
    """New nodes of the grid refined at the intervals that hold ``worst`` (m, n_in) points."""
    # repeated rows are one grid node
    grid, _ = _detect_grid(np.unique(np.asarray(table.u, dtype=np.float64), axis=0))
    assert grid is not None
    new_axes, old_sets = [], []
    for k, x in enumerate(grid.nodes):
        i = np.clip(np.searchsorted(x, worst[:, k], side="right") - 1, 0, len(x) - 2)
        i = np.unique(i)
        new_axes.append(np.union1d(x, 0.5 * (x[i] + x[i + 1])))
        old_sets.append(x)
    mesh = np.stack(np.meshgrid(*new_axes, indexing="ij"), axis=-1).reshape(-1, len(new_axes))
    is_old = np.ones(len(mesh), dtype=bool)
    for k, x in enumerate(old_sets):
        is_old &= np.isin(mesh[:, k], x)
    return mesh[~is_old]


def _subset(table: Any, mask: np.ndarray) -> Any:
    """Rows ``mask`` of a sweep table, as a table of the same class."""
    errors = getattr(table, "errors", {})
    rows = np.nonzero(mask)[0]
    remap = {int(old): new for new, old in enumerate(rows)}
    return replace(
        table,
        u=np.asarray(table.u)[mask],
        y=np.asarray(table.y)[mask],
        status=np.asarray(table.status)[mask],
        errors={remap[k]: v for k, v in errors.items() if k in remap},
    )
