"""Atomic writes, so that a crash never leaves a half-written report or checkpoint."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from quasineuron._atomic import atomic_write_bytes

__all__ = ["atomic_write_bytes", "jsonable", "write_json"]


def jsonable(obj: Any) -> Any:
    """Convert numpy/torch scalars and arrays, tuples and paths to plain JSON values.

    Non-finite floats become ``None`` so that the file stays strict JSON.
    """
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy and torch arrays and scalars
        return jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented strict JSON, atomically."""
    text = json.dumps(jsonable(obj), indent=2, sort_keys=False, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode())
