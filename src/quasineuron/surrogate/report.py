"""Fidelity of a twin: held-out error metrics, per output and pooled.

For targets ``y`` (n, n_out) and twin predictions ``ŷ``, per output ``o``:
``rmse_o = sqrt(mean((ŷ − y)²))``, ``nrmse_o = rmse_o / range_o``, ``max_abs_o = max|ŷ − y|`` and
``r2_o = 1 − Σ(ŷ − y)² / Σ(y − ȳ)²``. ``range_o`` is ``max − min`` of output ``o`` over all
successful sweep points (1 where that is zero). Pooled values: ``rmse`` over all entries,
``nrmse = sqrt(mean_o nrmse_o²)`` (RMS of the range-normalised errors), ``max_abs`` the maximum,
``r2`` the mean over outputs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["VALIDATIONS", "FitReport", "fidelity"]

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
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def summary(self) -> str:
        """One line for logs: kind, validation, pooled errors and sizes."""
        return (
            f"{self.kind} twin: nrmse={self.nrmse:.3g} rmse={self.rmse:.3g} "
            f"max_abs={self.max_abs:.3g} r2={self.r2:.6f} ({self.validation}, n_train="
            f"{self.n_train}, n_val={self.n_val}, n_failed={self.n_failed}, "
            f"{self.fit_time_s:.2f} s)"
        )


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
    rng = np.asarray(output_range, dtype=np.float64).reshape(-1)
    rng = np.where(rng > 0, rng, 1.0)
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
    return FitReport(
        kind=kind,
        validation=validation,
        rmse=float(np.sqrt(np.mean(err**2))),
        nrmse=float(np.sqrt(np.mean(nrmse_o**2))),
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
    )
