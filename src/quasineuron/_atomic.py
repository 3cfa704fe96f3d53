"""Safe file writes and checked reads: atomic replacement, the user's umask, checksums.

Every file quasineuron writes and later trusts goes through here:

- :func:`atomic_write_bytes` / :func:`atomic_write_json`: a reader sees the old file or the new
  one, never a part of it; the file gets the permissions the user's umask gives a new file.
- :func:`save_safetensors_checked` / :func:`load_safetensors_checked`: a safetensors file whose
  header carries a SHA-256 digest of its tensors and metadata, verified on every read, so a
  flipped byte or a truncated file is an :class:`~quasineuron.errors.IntegrityError` naming
  the file, never silently different numbers.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

__all__ = [
    "CHECKSUM_KEY",
    "atomic_write_bytes",
    "atomic_write_json",
    "file_mode",
    "jsonable",
    "load_safetensors_checked",
    "save_safetensors_checked",
    "sha256_hex",
    "tensors_digest",
]

#: Metadata key of the digest in files written by :func:`save_safetensors_checked`.
CHECKSUM_KEY = "quasineuron.sha256"

_umask_lock = threading.Lock()


def file_mode() -> int:
    """Permission bits of a new regular file under the process's umask (``0o666 & ~umask``)."""
    with _umask_lock:  # reading the umask means setting it; keep that window closed
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    The temporary file is fsynced before ``os.replace``, so a crash leaves either the previous
    file or the complete new one. The file gets the user's umask (not the 0600 of a temporary
    file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), file_mode())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


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


def atomic_write_json(
    path: str | Path, obj: Any, *, indent: int | None = 2, sort_keys: bool = False
) -> None:
    """Write ``obj`` as strict JSON (see :func:`jsonable`), atomically: the one JSON writer."""
    text = json.dumps(jsonable(obj), indent=indent, sort_keys=sort_keys, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode())


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def tensors_digest(tensors: dict[str, Any], metadata: dict[str, str]) -> str:
    """SHA-256 over every tensor (name, dtype, shape, raw bytes) and the metadata, sorted.

    The metadata entry :data:`CHECKSUM_KEY` itself is left out.
    """
    import torch

    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    for key in sorted(metadata):
        if key != CHECKSUM_KEY:
            h.update(f"{key}\0{metadata[key]}\0".encode())
    return h.hexdigest()


def save_safetensors_checked(
    path: str | Path, tensors: dict[str, Any], metadata: dict[str, str] | None = None
) -> None:
    """Write ``tensors`` and string ``metadata`` as one safetensors file, atomically.

    The header gains :data:`CHECKSUM_KEY`, the :func:`tensors_digest` of the content, which
    :func:`load_safetensors_checked` verifies.
    """
    from safetensors.torch import save as st_save

    meta = dict(metadata or {})
    meta[CHECKSUM_KEY] = tensors_digest(tensors, meta)
    atomic_write_bytes(path, st_save(tensors, metadata=meta))


def load_safetensors_checked(
    path: str | Path, *, what: str = "file", fix: str = "write it again"
) -> tuple[dict[str, Any], dict[str, str]]:
    """Read a safetensors file and verify its checksum.

    Files written before checksums existed (no :data:`CHECKSUM_KEY`) are read unchecked.

    Args:
        path: The file.
        what: What the file is, for messages (``"twin"``, ``"checkpoint"``).
        fix: What the user should do when it is damaged.

    Returns:
        The tensors (on the CPU) and the header metadata.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        IntegrityError: If the file cannot be parsed or its content does not match its digest.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    from quasineuron.errors import IntegrityError

    path = Path(path)
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist") from None
    try:
        tensors = st_load(blob)
        header_len = int.from_bytes(blob[:8], "little")
        header = json.loads(blob[8 : 8 + header_len])
        meta = dict(header.get("__metadata__") or {})
    except (SafetensorError, ValueError, UnicodeDecodeError) as exc:
        raise IntegrityError(
            f"{what} {str(path)!r} is damaged (not a readable safetensors file: {exc}); {fix}"
        ) from None
    expected = meta.get(CHECKSUM_KEY)
    if expected is not None and tensors_digest(tensors, meta) != expected:
        raise IntegrityError(
            f"{what} {str(path)!r} is damaged: its content does not match the checksum written "
            f"with it; {fix}"
        )
    return tensors, meta
