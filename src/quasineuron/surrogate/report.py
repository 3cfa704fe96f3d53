"""Fidelity of a twin: held-out error metrics, per output and pooled.

For targets ``y`` (n, n_out) and twin predictions ``ŷ``, per output ``o``:
``rmse_o = sqrt(mean((ŷ − y)²))``, ``nrmse_o = rmse_o / range_o``, ``max_abs_o = max|ŷ − y|`` and
``r2_o = 1 − Σ(ŷ − y)² / Σ(y − ȳ)²``. ``range_o`` is ``max − min`` of output ``o`` over all
successful sweep points (1 where that is zero). Pooled values: ``rmse`` over all entries,
``nrmse = sqrt(mean_o nrmse_o²)`` (RMS of the range-normalised errors), ``max_abs`` the maximum,
``r2`` the mean over outputs.

Beyond the means, so that a steep device cannot hide behind a small NRMSE: every held-out point
``i`` gets the error ``e_i = sqrt(mean_o ((ŷ_io − y_io) / range_o)²)`` (its range-normalised
RMS over outputs). The report gives the worst point (its drive and error), the 95th and 99th
percentiles of ``e_i``, and the worst region: the domain is cut into ``b`` equal bins per drive
(``b = clip(floor((n_val / 8) ** (1 / n_in)), 1, 8)``, so a bin holds about 8 points or more)
and the bin with the largest RMS of ``e_i`` is reported. When the worst point is off by more
than :data:`SUGGEST_REFINE_ABOVE` of the output range, ``suggestion`` names the
``refine_surrogate`` call that adds points where the error is largest.

Held-out points whose device output is not finite are left out of the errors and counted in
``excluded`` (never dropped silently), with the reason. With repeated sweeps the report also
gives ``noise_floor``, the pooled within-point standard deviation of the repeats per output,
``sqrt(Σ_g Σ_r (y_gr − ȳ_g)² / Σ_g (n_g − 1))``, and ``error_to_noise = rmse_o / noise_floor_o``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from quasineuron.devices.base import Box

__all__ = ["SUGGEST_REFINE_ABOVE", "VALIDATIONS", "FitReport", "fidelity", "pooled_nrmse"]

#: A worst-point error above this fraction of the output range adds a ``refine_surrogate``
#: suggestion to the report: 5 % is far above the error of a twin that resolves the device
#: (typically < 1 %), and a threshold or other steep spot is what typically produces it.
SUGGEST_REFINE_ABOVE = 0.05

#: Why a check point can be left out of the errors (keys of ``FitReport.excluded``).
EXCLUSION_REASONS = ("device failed", "non-finite", "timed out", "pending")

#: How the held-out error was measured.
VALIDATIONS: dict[str, str] = {
    "random-split": "twin trained without a random val_fraction of the successful sweep points, "
    "measured at those points",
    "grid-leave-out": "spline fitted on every other grid node per drive, measured at the nodes "
    "left out (pessimistic: that spline has twice the node spacing of the returned twin, so for "
    "smooth devices the returned twin is roughly 2**4 = 16 times more accurate)",
    "device-sobol": "returned twin measured against the true device at scrambled Sobol points of "
    "the domain, evaluated with evaluate_points",
}


@dataclass(frozen=True)
class FitReport:
    """Held-out fidelity of a fitted twin.

    Attributes:
        kind: Twin kind, ``"mlp"`` or ``"spline"``.
        validation: How the held-out error was measured, a key of :data:`VALIDATIONS`.
        rmse: Pooled root-mean-square error.
        nrmse: Pooled RMSE relative to the output range.
        max_abs: Largest absolute error.
        r2: Mean coefficient of determination over outputs.
        rmse_per_output: RMSE per output, length n_out.
        nrmse_per_output: RMSE / range per output.
        max_abs_per_output: Largest absolute error per output.
        r2_per_output: Coefficient of determination per output.
        output_range: ``max − min`` per output over the successful sweep points.
        n_train: Sweep points the returned twin was fitted on.
        n_val: Held-out points the errors were measured on.
        n_failed: Sweep points with a non-zero status, excluded from fitting.
        n_filled: Failed grid nodes the spline filled by interpolating their neighbours.
        fit_time_s: Wall time of the fit in seconds (including validation).
        settings: JSON-ready fit settings (hidden sizes, steps, seed, ...).
        failed_fraction: Fraction of the sweep's rows (repeats counted) that failed or gave
            non-finite outputs; the twin is fitted without them.
        sweep_failures: Failed sweep rows by reason (``"device failed"``, ``"non-finite"``,
            ``"timed out"``, ``"pending"``); ``"non-finite"`` includes points the table marks
            OK whose outputs are NaN or inf.
        excluded: Check points left out of the errors, by reason. For ``"device-sobol"`` these
            are the Sobol points where the device failed; for the table-based validations the
            failed sweep points, which cannot be held out.
        worst_u: Drive of the held-out point with the largest error, length n_in.
        worst_error: Its error ``e_i`` (range-normalised RMS over outputs).
        worst_abs: Its largest absolute error over outputs.
        error_p95: 95th percentile of the per-point errors ``e_i``.
        error_p99: 99th percentile of the per-point errors ``e_i``.
        worst_region: The bin of the domain with the largest RMS of ``e_i``: ``low``,
            ``high`` (its box), ``rms_error``, ``n_points`` and ``bins_per_drive``.
        suggestion: What to do when the worst error exceeds :data:`SUGGEST_REFINE_ABOVE`
            of the output range (a ``refine_surrogate`` call), else ``""``.
        repeats: Evaluations per sweep point, the most any point got (1 without repeats).
        noise_floor: Pooled within-point standard deviation of repeated outputs, per output
            (empty without repeats).
        error_to_noise: ``rmse_per_output / noise_floor`` (empty without repeats). Targets
            are themselves noisy, so a twin at the noise floor scores about 1 against single
            evaluations (``"device-sobol"``) and ``1/sqrt(repeats)`` against held-out means.
    """

    kind: str
    validation: str
    rmse: float
    nrmse: float
    max_abs: float
    r2: float
    rmse_per_output: tuple[float, ...]
    nrmse_per_output: tuple[float, ...]
    max_abs_per_output: tuple[float, ...]
    r2_per_output: tuple[float, ...]
    output_range: tuple[float, ...]
    n_train: int
    n_val: int
    n_failed: int = 0
    n_filled: int = 0
    fit_time_s: float = 0.0
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    failed_fraction: float = 0.0
    sweep_failures: dict[str, int] = dataclasses.field(default_factory=dict)
    excluded: dict[str, int] = dataclasses.field(default_factory=dict)
    worst_u: tuple[float, ...] = ()
    worst_error: float = 0.0
    worst_abs: float = 0.0
    error_p95: float = 0.0
    error_p99: float = 0.0
    worst_region: dict[str, Any] = dataclasses.field(default_factory=dict)
    suggestion: str = ""
    repeats: int = 1
    noise_floor: tuple[float, ...] = ()
    error_to_noise: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (tuples become lists)."""
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FitReport:
        """Inverse of :meth:`to_dict`; unknown keys are rejected."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(
                f"unknown FitReport fields {sorted(unknown)}; expected {sorted(names)}"
            )
        kwargs: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**kwargs)

    def summary(self) -> str:
        """Lines for logs: pooled errors and sizes, then worst point, exclusions, noise, advice."""
        lines = [
            f"{self.kind} twin: nrmse={self.nrmse:.3g} rmse={self.rmse:.3g} "
            f"max_abs={self.max_abs:.3g} r2={self.r2:.6f} ({self.validation}, n_train="
            f"{self.n_train}, n_val={self.n_val}, n_failed={self.n_failed}, "
            f"{self.fit_time_s:.2f} s)"
        ]
        if self.worst_u:
            lines.append(
                f"  worst point u={[round(v, 6) for v in self.worst_u]}: error "
                f"{self.worst_error:.3g} of the output range (abs {self.worst_abs:.3g}); "
                f"p95={self.error_p95:.3g} p99={self.error_p99:.3g}"
            )
        if self.failed_fraction:
            lines.append(
                f"  {100 * self.failed_fraction:.3g}% of the sweep's readings failed "
                f"({_counts(self.sweep_failures)}); where every reading of a point failed the "
                "twin is not fitted there (see valid())"
                + (
                    "; a point with some readings left is fitted on those"
                    if self.repeats > 1
                    else ""
                )
            )
        if self.excluded:
            lines.append(
                f"  {sum(self.excluded.values())} check points excluded from the errors "
                f"({_counts(self.excluded)})"
            )
        if self.noise_floor:
            lines.append(
                f"  noise floor {[float(f'{v:.3g}') for v in self.noise_floor]} from "
                f"{self.repeats} repeats; error/noise "
                f"{[float(f'{v:.3g}') for v in self.error_to_noise]}"
            )
        if self.suggestion:
            lines.append(f"  suggestion: {self.suggestion}")
        return "\n".join(lines)


def _counts(d: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in d.items() if v)


def _output_scale(output_range: np.ndarray) -> np.ndarray:
    """``range_o`` as the errors are divided by it: a zero or non-finite range counts as 1."""
    rng = np.asarray(output_range, dtype=np.float64).reshape(-1)
    return np.where(np.isfinite(rng) & (rng > 0), rng, 1.0)


def pooled_nrmse(err: np.ndarray, output_range: np.ndarray) -> float:
    """``sqrt(mean_o (rmse_o / range_o)²)``: the pooled NRMSE of every fidelity figure.

    Args:
        err: Prediction minus target, shape (n, n_out).
        output_range: ``max − min`` per output, shape (n_out,); zeros are replaced by 1.

    Returns:
        The RMS over outputs of each output's RMSE divided by its range.
    """
    e = np.asarray(err, dtype=np.float64)
    nrmse_o = np.sqrt(np.mean(e**2, axis=0)) / _output_scale(output_range)
    return float(np.sqrt(np.mean(nrmse_o**2)))


def fidelity(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    output_range: np.ndarray,
    *,
    kind: str,
    validation: str,
    n_train: int,
    n_failed: int = 0,
    n_filled: int = 0,
    fit_time_s: float = 0.0,
    settings: dict[str, Any] | None = None,
    u: np.ndarray | None = None,
    domain: Box | None = None,
    excluded: dict[str, int] | None = None,
    sweep_failures: dict[str, int] | None = None,
    n_sweep: int = 0,
    noise_floor: np.ndarray | None = None,
    repeats: int = 1,
) -> FitReport:
    """Compute a :class:`FitReport` from held-out targets and twin predictions.

    Args:
        y_true: Held-out device outputs, shape (n_val, n_out).
        y_pred: Twin outputs at the same drives, shape (n_val, n_out).
        output_range: ``max − min`` per output, shape (n_out,); zeros are replaced by 1.
        kind: Twin kind.
        validation: A key of :data:`VALIDATIONS`.
        n_train: Points the twin was fitted on.
        n_failed: Failed sweep points.
        n_filled: Filled grid nodes.
        fit_time_s: Fit wall time.
        settings: Fit settings to record.
        u: Drives of the held-out points, shape (n_val, n_in); gives the worst point, the
            worst region and the suggestion.
        domain: The characterised box, binned for the worst region (default: the bounding
            box of ``u``).
        excluded: Check points already left out, by reason; rows of ``y_true`` that are not
            finite are left out here too and added under ``"non-finite"``.
        sweep_failures: Failed sweep rows by reason.
        n_sweep: Rows of the sweep (for ``failed_fraction``).
        noise_floor: Pooled within-point standard deviation per output, shape (n_out,).
        repeats: Evaluations per sweep point.

    Returns:
        The report.

    Raises:
        ValueError: If shapes differ, there are no held-out points or ``validation`` is unknown.
    """
    if validation not in VALIDATIONS:
        raise ValueError(f"validation must be one of {sorted(VALIDATIONS)}, got {validation!r}")
    yt = np.asarray(y_true, dtype=np.float64)
    yp = np.asarray(y_pred, dtype=np.float64)
    if yt.shape != yp.shape or yt.ndim != 2 or yt.shape[0] == 0:
        raise ValueError(
            f"need held-out targets and predictions of the same shape (n_val > 0, n_out), got "
            f"{yt.shape} and {yp.shape}"
        )
    excluded = {k: int(v) for k, v in (excluded or {}).items() if v}
    finite = np.isfinite(yt).all(axis=1)
    if not finite.all():
        # a device output that is NaN/inf cannot score the twin; count it instead of
        # letting it turn every figure into NaN (or inf/inf warnings)
        excluded["non-finite"] = excluded.get("non-finite", 0) + int((~finite).sum())
        yt, yp = yt[finite], yp[finite]
        u = None if u is None else np.asarray(u, dtype=np.float64)[finite]
        if len(yt) == 0:
            raise ValueError("every held-out target is non-finite; no error can be measured")
    rng = _output_scale(output_range)
    err = yp - yt
    rmse_o = np.sqrt(np.mean(err**2, axis=0))
    nrmse_o = rmse_o / rng
    max_o = np.max(np.abs(err), axis=0)
    sst = np.sum((yt - yt.mean(axis=0)) ** 2, axis=0)
    sse = np.sum(err**2, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2_o = np.where(
            sst > 0, 1.0 - sse / np.where(sst > 0, sst, 1.0), np.where(sse > 0, 0.0, 1.0)
        )
    extra: dict[str, Any] = {}
    if u is not None:
        extra = _worst(np.asarray(u, dtype=np.float64), err, rng, domain, kind)
    failures = {k: int(v) for k, v in (sweep_failures or {}).items() if v}
    if noise_floor is not None and len(noise_floor):
        noise = np.asarray(noise_floor, dtype=np.float64).reshape(-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(noise > 0, rmse_o / np.where(noise > 0, noise, 1.0), np.inf)
        extra["noise_floor"] = tuple(float(v) for v in noise)
        extra["error_to_noise"] = tuple(float(v) for v in ratio)
    return FitReport(
        kind=kind,
        validation=validation,
        rmse=float(np.sqrt(np.mean(err**2))),
        nrmse=pooled_nrmse(err, rng),
        max_abs=float(np.max(max_o)),
        r2=float(np.mean(r2_o)),
        rmse_per_output=tuple(float(v) for v in rmse_o),
        nrmse_per_output=tuple(float(v) for v in nrmse_o),
        max_abs_per_output=tuple(float(v) for v in max_o),
        r2_per_output=tuple(float(v) for v in r2_o),
        output_range=tuple(float(v) for v in rng),
        n_train=int(n_train),
        n_val=int(yt.shape[0]),
        n_failed=int(n_failed),
        n_filled=int(n_filled),
        fit_time_s=float(fit_time_s),
        settings=dict(settings or {}),
        failed_fraction=sum(failures.values()) / n_sweep if n_sweep else 0.0,
        sweep_failures=failures,
        excluded=excluded,
        repeats=int(repeats),
        **extra,
    )


def _worst(
    u: np.ndarray, err: np.ndarray, rng: np.ndarray, domain: Box | None, kind: str
) -> dict[str, Any]:
    """Worst point, error percentiles, worst bin and the refine suggestion."""
    e = np.sqrt(np.mean((err / rng) ** 2, axis=1))  # (n_val,) range-normalised RMS per point
    i = int(np.argmax(e))
    n, d = u.shape
    if domain is not None:
        low, high = np.asarray(domain.low, dtype=np.float64), np.asarray(domain.high, np.float64)
    else:
        low, high = u.min(axis=0), u.max(axis=0)
    width = np.where(high > low, high - low, 1.0)
    bins = int(np.clip(math.floor((n / 8) ** (1 / d)), 1, 8))
    idx = np.clip(np.floor((u - low) / width * bins).astype(np.int64), 0, bins - 1)
    flat = np.ravel_multi_index(idx.T, (bins,) * d)
    count = np.bincount(flat, minlength=bins**d)
    sq = np.bincount(flat, weights=e**2, minlength=bins**d)
    with np.errstate(divide="ignore", invalid="ignore"):
        rms = np.where(count > 0, np.sqrt(sq / np.maximum(count, 1)), -1.0)
    b = int(np.argmax(rms))
    cell = np.array(np.unravel_index(b, (bins,) * d))
    step = (high - low) / bins
    worst_error = float(e[i])
    out: dict[str, Any] = {
        "worst_u": tuple(float(v) for v in u[i]),
        "worst_error": worst_error,
        "worst_abs": float(np.max(np.abs(err[i]))),
        "error_p95": float(np.percentile(e, 95)),
        "error_p99": float(np.percentile(e, 99)),
        "worst_region": {
            "low": [float(v) for v in low + cell * step],
            "high": [float(v) for v in low + (cell + 1) * step],
            "rms_error": float(rms[b]),
            "n_points": int(count[b]),
            "bins_per_drive": bins,
        },
    }
    if worst_error > SUGGEST_REFINE_ABOVE:
        nrmse = float(np.sqrt(np.mean(e**2)))
        target = float(f"{max(nrmse / 2, 1e-6):.2g}")
        out["suggestion"] = (
            f"the twin is off by {100 * worst_error:.3g}% of the output range at "
            f"u={[round(float(v), 6) for v in u[i]]} (worst region low={out['worst_region']['low']}"
            f", high={out['worst_region']['high']}); "
            f"refine_surrogate(device, table, target_nrmse={target}, kind={kind!r}) adds points "
            "where the error is largest"
        )
    return out
