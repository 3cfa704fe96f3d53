"""Save and load twins: one ``.safetensors`` file, tensors plus a JSON header.

The JSON (stored in the safetensors metadata under ``"quasineuron"``) holds the format version,
the twin kind, its settings (sizes, activation, grid), the common fields (characterised domain,
domain policy, source device description, name) and the fit report. The twin's validity mask,
if any, is stored as tensors ``validity.edges<k>`` (float64 cell edges of drive ``k``) and
``validity.cells`` (uint8, 1 where the twin was fitted on successful points). The header also
holds a SHA-256 digest of the tensors and the JSON, verified on every load, and the file is replaced
atomically. Loading reads tensors with ``safetensors`` only, so it never unpickles or runs
stored code.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from quasineuron._checked import read_document_checked, write_document_checked
from quasineuron.surrogate.base import AbstractSurrogate
from quasineuron.surrogate.fit import FitResult
from quasineuron.surrogate.mlp import MLPSurrogate
from quasineuron.surrogate.report import FitReport
from quasineuron.surrogate.spline import SplineSurrogate

__all__ = ["load_surrogate", "save_surrogate"]

_FORMAT = 1
_KINDS: dict[str, type[AbstractSurrogate]] = {"mlp": MLPSurrogate, "spline": SplineSurrogate}
_FIX = (
    "fit the twin again (fit_surrogate, or rerun the characterise step that wrote it) and save "
    "it again"
)
# The fidelity figures of a FitReport that must be finite for a twin to be worth saving.
_FIGURES = ("rmse", "nrmse", "max_abs", "r2", "output_range")


def save_surrogate(
    model: AbstractSurrogate | FitResult,
    path: str | os.PathLike[str],
    *,
    allow_nonfinite: bool = False,
) -> Path:
    """Write a twin (and its fit report, if any) to one safetensors file, atomically.

    A twin whose fit report has a non-finite fidelity figure (NRMSE, RMSE, max error, R² or
    output range is inf or NaN) or whose tensors are not finite is refused: such a twin was
    fitted on device outputs that are inf/NaN at points the sweep marked successful, or its
    training blew up, and its predictions cannot be trusted.

    Args:
        model: The twin, or a :class:`FitResult` holding it.
        path: Target file, conventionally ``*.safetensors``; parent folders are created.
        allow_nonfinite: Save such a twin anyway (to inspect it); its report keeps the
            non-finite figures, so whoever loads it can see them.

    Returns:
        The path written.

    Raises:
        TypeError: If ``model`` is not a twin made by this package.
        ValueError: If the twin's fidelity figures or tensors are not finite and
            ``allow_nonfinite`` is False.
    """
    if isinstance(model, FitResult):
        model = model.model
    if not isinstance(model, AbstractSurrogate) or model.kind not in _KINDS:
        raise TypeError(
            f"save_surrogate needs an MLPSurrogate or SplineSurrogate (or a FitResult), got "
            f"{type(model).__name__}"
        )
    report = model.fit_report
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.tensors().items()}
    tensors.update(_validity_tensors(model))
    if not allow_nonfinite:
        _check_finite(report if isinstance(report, FitReport) else None, tensors, path)
    meta = {
        "format": _FORMAT,
        "kind": model.kind,
        "config": model.config(),
        "common": model.common(),
        "report": report.to_dict() if isinstance(report, FitReport) else None,
    }
    path = Path(path)
    write_document_checked(path, tensors, meta)
    return path


_VALIDITY = "validity."


def _validity_tensors(model: AbstractSurrogate) -> dict[str, torch.Tensor]:
    if model.validity is None:
        return {}
    edges, cells = model.validity
    # copies: a spline's mask edges are its nodes, and safetensors refuses shared memory
    out = {f"{_VALIDITY}edges{k}": e.clone() for k, e in enumerate(edges)}
    out[f"{_VALIDITY}cells"] = cells.to(torch.uint8).contiguous()
    return out


def _check_finite(
    report: FitReport | None, tensors: dict[str, torch.Tensor], path: str | os.PathLike[str]
) -> None:
    bad_tensors = sorted(
        k for k, v in tensors.items() if v.is_floating_point() and not bool(v.isfinite().all())
    )
    bad_figures = []
    if report is not None:
        for name in _FIGURES:
            value = getattr(report, name)
            values = value if isinstance(value, tuple) else (value,)
            if not all(math.isfinite(float(v)) for v in values):
                bad_figures.append(f"{name}={value!r}")
    if not bad_tensors and not bad_figures:
        return
    found = ", ".join(bad_figures + [f"tensor {k!r}" for k in bad_tensors])
    raise ValueError(
        f"refusing to save the twin to {str(path)!r}: it is not finite ({found}). Either the "
        f"sweep it was fitted on has inf/NaN device outputs at points marked successful (check "
        f"the device's numerics and the sweep's outputs), or its fit blew up (refit with a "
        f"smaller lr). Fit it again, or pass allow_nonfinite=True to save it anyway"
    )


def load_surrogate(path: str | os.PathLike[str]) -> AbstractSurrogate:
    """Read a twin written by :func:`save_surrogate`.

    Args:
        path: The ``.safetensors`` file.

    Returns:
        The twin on the CPU, with ``fit_report`` restored; outputs equal the saved twin's.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is not a quasineuron twin or has an unknown format or kind.
        IntegrityError: If the file is damaged (unreadable, truncated or not matching the
            checksum written with it); the message names the file and says to refit.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no saved twin at {path}")
    tensors, meta = read_document_checked(path, what="twin", fix=_FIX)
    if meta is None:
        raise ValueError(
            f"{path} is a safetensors file without quasineuron metadata; save twins with "
            "save_surrogate"
        )
    if meta.get("format") != _FORMAT:
        raise ValueError(
            f"{path} has twin format {meta.get('format')!r}; this version reads {_FORMAT}"
        )
    cls = _KINDS.get(meta.get("kind", ""))
    if cls is None:
        raise ValueError(f"{path} holds an unknown twin kind {meta.get('kind')!r}")
    # Twins saved before validity masks existed have none and stay valid on their domain.
    n_in = int(meta["common"]["n_in"])
    edges = [tensors.pop(f"{_VALIDITY}edges{k}", None) for k in range(n_in)]
    cells = tensors.pop(f"{_VALIDITY}cells", None)
    model = cls.from_saved(meta["config"], tensors, meta["common"])
    if cells is not None and all(e is not None for e in edges):
        model.set_validity(edges, cells.to(torch.bool))
    if meta.get("report") is not None:
        model.fit_report = FitReport.from_dict(meta["report"])
    return model
