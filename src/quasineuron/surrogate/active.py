"""Active characterisation: sweep the device where a network's drives landed, refit the twin.

A twin is fitted on a sweep of the device's declared domain. Training then moves the drives
wherever the loss pulls them, and a twin is only worth its gradients where it was fitted:
outside the swept box it clamps or extrapolates. :func:`recharacterize` closes the loop. It
runs the network on training inputs, draws drive rows from where they actually landed,
evaluates the true device there, fits a new twin on the old sweep plus the new points (over
the box that holds both) and installs it in every layer that used the old twin. Training
then continues on a twin that is right where the network works.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from quasineuron.devices.base import Box
from quasineuron.errors import QuasineuronWarning
from quasineuron.surrogate.fit import FitResult, fit_surrogate

__all__ = ["RecharacterizeResult", "recharacterize"]


@dataclass(frozen=True)
class RecharacterizeResult:
    """What :func:`recharacterize` did.

    Attributes:
        fit: The new twin and its fit report.
        table: The sweep table the new twin was fitted on (old rows, then the new ones).
        n_new: Device evaluations made (new sweep points).
        n_new_failed: New points whose device output was not finite (left out of the fit).
        outside_before: Fraction of the drawn drive rows outside the old twin's domain.
        domain_before: The old twin's domain.
        domain_after: The new twin's domain.
        layers: Indices of the layers whose twin was replaced.
        error_before: Mean absolute difference between the old twin (its drives clamped
            into its domain, as ``policy="clamp"`` does) and the device at the new points
            that did not fail (None when every new point failed).
        error_after: The same for the new twin. A refit no closer to the device than the
            old twin (``error_after >= error_before``) is warned about.
    """

    fit: FitResult
    table: Any
    n_new: int
    n_new_failed: int
    outside_before: float
    domain_before: Box
    domain_after: Box
    layers: tuple[int, ...] = field(default=())
    error_before: float | None = None
    error_after: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no tensors)."""
        return {
            "n_new": self.n_new,
            "n_new_failed": self.n_new_failed,
            "outside_before": self.outside_before,
            "domain_before": {
                "low": list(self.domain_before.low),
                "high": list(self.domain_before.high),
            },
            "domain_after": {
                "low": list(self.domain_after.low),
                "high": list(self.domain_after.high),
            },
            "layers": list(self.layers),
            "error_before": self.error_before,
            "error_after": self.error_after,
            "twin_nrmse": self.fit.report.nrmse,
            "n_sweep": int(np.asarray(self.table.status).size),
        }


def _box(box: Box) -> dict[str, list[float]]:
    return {"low": list(box.low), "high": list(box.high)}


def recharacterize(
    net: torch.nn.Module,
    x: torch.Tensor,
    table: Any,
    *,
    points: int = 512,
    mode: Any = None,
    seed: int = 0,
    batch_size: int = 256,
    **fit_options: Any,
) -> RecharacterizeResult:
    """Sweep the device at drives the network produces on ``x``, refit the twin, install it.

    Every layer of ``net`` that shares the twin of layer 0 (the usual case: one device, one
    twin) contributes its drive rows; ``points`` of them are drawn without replacement
    (``Generator(seed)``), the device is evaluated there and the twin is refitted on
    ``table`` plus the new points. The new twin's domain is the smallest box holding the old
    domain and the new points, so its validity and the domain statistics follow the drives.

    Args:
        net: A ``DeviceNetwork`` (its layers need ``twin``, ``device`` and ``drives``);
            updated in place (the twins are replaced; the weights are not touched).
        x: Training inputs, shape (n, n_features), in the network's dtype.
        table: The sweep table the current twin was fitted on (``u``, ``y``, ``status``,
            ``domain``, ``device``), e.g. ``characterize(...).table``.
        points: New device evaluations to make (fewer if there are fewer drive rows).
        mode: Forward mode whose drives are sampled (None: ``Surrogate()``).
        seed: Seed of the draw and of the refit.
        batch_size: Points per device call.
        **fit_options: Passed to :func:`~quasineuron.surrogate.fit_surrogate` (``kind``,
            ``hidden``, ``max_steps``...); the policy defaults to the old twin's.

    Returns:
        The new fit, the enlarged table and counts (see :class:`RecharacterizeResult`).

    Raises:
        ValueError: If ``points`` is not a positive int, the network has no twin, or the
            table does not match the device's drives.
    """
    from quasineuron.network.modes import Surrogate
    from quasineuron.sweep import SweepTable, evaluate_points

    if isinstance(points, bool) or not isinstance(points, int) or points < 1:
        raise ValueError(f"points must be a positive int, got {points!r}")
    layers: Any = getattr(net, "layers", None)
    if layers is None or len(layers) == 0 or getattr(layers[0], "twin", None) is None:
        raise ValueError(
            "recharacterize needs a DeviceNetwork whose layers have a twin (fit one with "
            "characterize or fit_surrogate and pass twin=... to the network)"
        )
    old_twin = layers[0].twin
    device = layers[0].device
    u_old = np.asarray(table.u, dtype=np.float64)
    if u_old.ndim != 2 or u_old.shape[1] != device.n_in:
        raise ValueError(
            f"table has drives of shape {u_old.shape} but the device takes {device.n_in} drives; "
            "pass the sweep table the twin was fitted on"
        )
    chosen = tuple(i for i, layer in enumerate(layers) if layer.twin is old_twin)
    mode = Surrogate() if mode is None else mode
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            drives = net.drives(x, mode=mode)  # type: ignore[operator]
    finally:
        net.train(was_training)
    rows = torch.cat([drives[i].reshape(-1, device.n_in) for i in chosen]).double()
    rows = rows[torch.isfinite(rows).all(dim=1)]
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(rows), generator=gen)[: min(points, len(rows))]
    u_new = rows[pick].numpy()

    before: Box = old_twin.domain
    low_b, high_b = np.asarray(before.low), np.asarray(before.high)
    outside = float(((u_new < low_b) | (u_new > high_b)).any(axis=1).mean()) if len(u_new) else 0.0
    low = np.minimum(low_b, u_new.min(axis=0)) if len(u_new) else low_b
    high = np.maximum(high_b, u_new.max(axis=0)) if len(u_new) else high_b
    after = Box(low=tuple(low.tolist()), high=tuple(high.tolist()))

    new = evaluate_points(device, u_new, batch_size=batch_size)
    y_new = np.asarray(new.y, dtype=np.float64)
    status_new = np.asarray(new.status)
    n_failed = int((~(np.isfinite(y_new).all(axis=1) & (status_new == 0))).sum())
    merged = SweepTable(
        u=np.concatenate([u_old, np.asarray(new.u, dtype=np.float64)]),
        y=np.concatenate([np.asarray(table.y, dtype=np.float64), y_new]),
        status=np.concatenate([np.asarray(table.status), status_new]),
        errors={},
        domain=after,
        device=dict(table.device),
        sampler={"kind": "active", "points": int(len(u_new)), "seed": seed},
    )
    fit_options.setdefault("policy", getattr(old_twin, "policy", "warn"))
    fit_options.setdefault("seed", seed)
    fit = fit_surrogate(merged, **fit_options)
    dtype = layers[chosen[0]].map.weight.dtype
    twin = fit.model.to(dtype).requires_grad_(False).eval()
    if hasattr(old_twin, "compiled"):
        twin.compiled = old_twin.compiled
    for i in chosen:
        layers[i].twin = twin
    error_before, error_after = _errors_at(old_twin, twin, new.u, y_new, status_new)
    if error_before is not None and error_after is not None and error_after >= error_before:
        warnings.warn(
            f"recharacterize: the refitted twin is no closer to the device at the "
            f"{len(u_new) - n_failed} new points than the old one (mean |twin - device| "
            f"{error_after:.3g} against {error_before:.3g}); the network now trains through "
            "it. Fit it with more points, more steps (max_steps) or another kind, or keep "
            "the old twin",
            QuasineuronWarning,
            stacklevel=2,
        )
    return RecharacterizeResult(
        fit=fit,
        table=merged,
        n_new=int(len(u_new)),
        n_new_failed=n_failed,
        outside_before=outside,
        domain_before=before,
        domain_after=after,
        layers=chosen,
        error_before=error_before,
        error_after=error_after,
    )


def _errors_at(
    old: Any, new: Any, u: Any, y: np.ndarray, status: np.ndarray
) -> tuple[float | None, float | None]:
    """Mean |twin − device| of the old twin (drives clamped into its box) and the new one.

    Evaluated through the twins' own formulas (``_evaluate``), so the old twin's domain policy
    neither counts, warns about nor refuses the new points outside its box.
    """
    good = np.isfinite(y).all(axis=1) & (status == 0)
    if not good.any():
        return None, None
    y_good = y[good]
    errors = []
    for twin in (old, new):
        tensors = [*twin.parameters(), *twin.buffers()]
        dtype = next((t.dtype for t in tensors if t.is_floating_point()), torch.float64)
        u_t = torch.as_tensor(np.asarray(u, dtype=np.float64)[good], dtype=dtype)
        low, high = twin.domain.tensors(dtype=dtype)
        with torch.no_grad():
            out = twin._evaluate(torch.clamp(u_t, low, high)).double().numpy()
        errors.append(float(np.abs(out - y_good).mean()))
    return errors[0], errors[1]
