"""Atomic writes, so that a crash never leaves a half-written report or checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from quasineuron._atomic import atomic_write_bytes, atomic_write_json, jsonable

__all__ = ["atomic_write_bytes", "jsonable", "write_json"]


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented strict JSON, atomically (:func:`atomic_write_json`)."""
    atomic_write_json(path, obj)
