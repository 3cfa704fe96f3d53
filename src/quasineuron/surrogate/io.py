"""Save and load twins: one ``.safetensors`` file, tensors plus a JSON header.

The JSON (stored in the safetensors metadata under ``"quasineuron"``) holds the format version,
the twin kind, its settings (sizes, activation, grid), the common fields (characterised domain,
domain policy, source device description, name) and the fit report. Loading reads tensors with
``safetensors`` only, so it never unpickles or runs stored code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import save_file

from quasineuron.surrogate.base import AbstractSurrogate
from quasineuron.surrogate.fit import FitResult
from quasineuron.surrogate.mlp import MLPSurrogate
from quasineuron.surrogate.report import FitReport
from quasineuron.surrogate.spline import SplineSurrogate

__all__ = ["load_surrogate", "save_surrogate"]

_FORMAT = 1
_KEY = "quasineuron"
_KINDS: dict[str, type[AbstractSurrogate]] = {"mlp": MLPSurrogate, "spline": SplineSurrogate}


def save_surrogate(model: AbstractSurrogate | FitResult, path: str | os.PathLike[str]) -> Path:
    """Write a twin (and its fit report, if any) to one safetensors file.

    Args:
        model: The twin, or a :class:`FitResult` holding it.
        path: Target file, conventionally ``*.safetensors``; parent folders are created.

    Returns:
        The path written.

    Raises:
        TypeError: If ``model`` is not a twin made by this package.
    """
    if isinstance(model, FitResult):
        model = model.model
    if not isinstance(model, AbstractSurrogate) or model.kind not in _KINDS:
        raise TypeError(
            f"save_surrogate needs an MLPSurrogate or SplineSurrogate (or a FitResult), got "
            f"{type(model).__name__}"
        )
    report = model.fit_report
    meta = {
        "format": _FORMAT,
        "kind": model.kind,
        "config": model.config(),
        "common": model.common(),
        "report": report.to_dict() if isinstance(report, FitReport) else None,
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.tensors().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={_KEY: json.dumps(meta)})
    return path


def load_surrogate(path: str | os.PathLike[str]) -> AbstractSurrogate:
    """Read a twin written by :func:`save_surrogate`.

    Args:
        path: The ``.safetensors`` file.

    Returns:
        The twin on the CPU, with ``fit_report`` restored; outputs equal the saved twin's.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is not a quasineuron twin or has an unknown format or kind.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no saved twin at {path}")
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iter)
    if _KEY not in header:
        raise ValueError(
            f"{path} is a safetensors file without quasineuron metadata; save twins with "
            "save_surrogate"
        )
    meta: dict[str, Any] = json.loads(header[_KEY])
    if meta.get("format") != _FORMAT:
        raise ValueError(
            f"{path} has twin format {meta.get('format')!r}; this version reads {_FORMAT}"
        )
    cls = _KINDS.get(meta.get("kind", ""))
    if cls is None:
        raise ValueError(f"{path} holds an unknown twin kind {meta.get('kind')!r}")
    model = cls.from_saved(meta["config"], tensors, meta["common"])
    if meta.get("report") is not None:
        model.fit_report = FitReport.from_dict(meta["report"])
    return model
