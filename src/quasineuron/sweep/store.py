"""The sweep table and its crash-safe on-disk store.

Format
------
A sweep store is a folder::

    <store>/
      manifest.json        what was swept: device, domain, sampler, dtype, sizes, version, time,
                           and the SHA-256 of all that (``manifest_sha256``)
      table.zarr/          a Zarr v3 group (its attributes repeat the manifest)
        u/                 float64 (n_points, n_in), the drives actually fed to the device
        y/                 float64 (n_points, n_out), outputs (NaN where a point raised)
        status/            int8 (n_points,), a PointStatus code per point
      commits/<chunk>.json one commit record per finished chunk: its error texts and the
                           SHA-256 of the chunk's file in each of u, y and status
    <parent>/.<store>.lock the writers' lock (``fcntl.flock``), beside the store

Every array is chunked along points with the sweep's ``batch_size``, so one batch is exactly
one chunk of each array.

Why Zarr (and not HDF5): Zarr stores each chunk as its own file, so writing a chunk touches
no other chunk and no shared index; an HDF5 file is a single B-tree-indexed file that a
process killed mid-write can leave unreadable as a whole. Zarr's stores are pluggable (local
folder, zip, object storage), its chunks are what Dask reads natively, and a chunk can be
written from whichever process finishes it.

Crash safety (SIGKILL at any instant)
-------------------------------------
* Zarr's ``LocalStore`` (zarr 3.1, ``zarr/storage/_local.py``) writes every chunk and metadata
  document to a uniquely named ``*.partial`` file in the same folder and then renames it over
  the target (``Path.replace``, atomic on POSIX). A reader therefore sees either the old or the
  new chunk, never a torn one; a kill can at most leave a stray ``*.partial`` file, which Zarr
  never reads. ``LocalStore`` does *not* fsync.
* A chunk counts as done only once its commit record ``commits/<chunk>.json`` exists. The
  runner writes the chunk of ``y`` and ``status`` first, fsyncs those chunk files, and only
  then writes the commit record (temporary file, fsync, ``os.replace``, fsync of the folder).
  So a commit record always describes data that is completely on disk, also after a power
  loss; without a commit record a chunk is recomputed from scratch on resume and its chunk
  files are overwritten.
* A new store is built in a hidden sibling folder and renamed into place when complete, so a
  store folder either does not exist or holds a complete manifest and a complete ``u``.

Consequently a sweep killed and restarted with the same arguments ends with exactly the table
of an uninterrupted run: committed chunks are never recomputed and uncommitted chunks are
computed once more from the start.

Integrity
---------
Reading a store (open, resume, table) checks the manifest against its digest and reads every
committed chunk's files once, checking them against the digests of its commit record. A missing
file or a mismatch is an :class:`~quasineuron.errors.IntegrityError` naming the chunk, the file
and the fix (delete that commit record, or ``repair=True``, and the chunk is recomputed); a
committed chunk never reads back as NaN or silently changed values. Version-1 stores (before
digests) are read with their committed chunk files checked for presence only.

One writer
----------
:meth:`SweepStore.open_or_create` takes an exclusive ``flock`` on ``.<store>.lock`` next to the
store and the runner holds it until the sweep returns, so concurrent sweeps into one store run
one after the other (the second resumes the first's results). The kernel drops the lock of a
killed process. A store killed during creation by an older version (a table without manifest
or commits) holds no results and is created afresh.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import enum
import fcntl
import json
import os
import re
import shutil
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import zarr
from zarr.storage import LocalStore

from quasineuron._atomic import atomic_write_json, jsonable, sha256_hex
from quasineuron.devices.base import Box
from quasineuron.errors import (
    IntegrityError,
    QuasineuronWarning,
    StoreCorruptError,
    StoreMismatchError,
)

__all__ = ["PointStatus", "SweepStore", "SweepTable"]

FORMAT = "quasineuron.sweep"
# Version 2 adds the manifest digest and the chunk digests of commit records; version 1
# stores (without them) are still read, their chunks checked for presence only.
FORMAT_VERSION = 2
# Manifest keys that define what a store holds; a resumed sweep must agree on all of them.
IDENTITY_KEYS = ("device", "domain", "sampler", "dtype", "n_points", "n_in", "n_out", "batch_size")
_MANIFEST = "manifest.json"
_TABLE = "table.zarr"
_COMMITS = "commits"
_ARRAYS = ("u", "y", "status")
#: Manifest key holding the SHA-256 of the manifest's other keys (canonical JSON).
MANIFEST_DIGEST_KEY = "manifest_sha256"


class PointStatus(enum.IntEnum):
    """Per-point outcome codes stored in ``SweepTable.status`` (int8)."""

    PENDING = -1  #: not evaluated yet (or its chunk was not committed)
    OK = 0  #: finite outputs
    NONFINITE = 1  #: the device returned NaN or inf in some output
    ERROR = 2  #: the device raised; the text is in ``SweepTable.errors``
    TIMEOUT = 3  #: the device ran past ``sweep(timeout=...)``; its worker was killed


@dataclass(frozen=True, eq=False)
class SweepTable:
    """Inputs, outputs and per-point status of a characterisation sweep.

    Attributes:
        u: Drives, float64 array (n_points, n_in).
        y: Outputs, float64 array (n_points, n_out); NaN rows where the device raised.
        status: int8 array (n_points,) of :class:`PointStatus` codes.
        errors: Point index → ``"ExceptionType: message"`` for points with status ERROR
            or TIMEOUT (``"TimeoutError: timed out after 2 s"``).
        domain: The box the points were drawn from.
        device: The device's ``describe()``.
        sampler: The sampler's ``describe()`` (``{"kind": "points"}`` for given points).
    """

    u: np.ndarray
    y: np.ndarray
    status: np.ndarray
    errors: dict[int, str]
    domain: Box
    device: dict[str, Any]
    sampler: dict[str, Any] = field(default_factory=lambda: {"kind": "points"})

    def __post_init__(self) -> None:
        u = np.asarray(self.u, dtype=np.float64)
        y = np.asarray(self.y, dtype=np.float64)
        status = np.asarray(self.status, dtype=np.int8)
        if u.ndim != 2 or y.ndim != 2 or status.ndim != 1:
            raise ValueError(
                f"SweepTable needs u (n, n_in), y (n, n_out) and status (n,), got shapes "
                f"{u.shape}, {y.shape} and {status.shape}"
            )
        if not (len(u) == len(y) == len(status)):
            raise ValueError(
                f"SweepTable arrays disagree on n_points: u {u.shape}, y {y.shape}, "
                f"status {status.shape}"
            )
        if u.shape[1] != self.domain.dim:
            raise ValueError(
                f"SweepTable.u has {u.shape[1]} drives but the domain has {self.domain.dim}"
            )
        object.__setattr__(self, "u", u)
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "status", status)
        object.__setattr__(self, "errors", {int(k): str(v) for k, v in self.errors.items()})

    @property
    def n_points(self) -> int:
        """Number of points, including failed and pending ones."""
        return len(self.status)

    @property
    def ok(self) -> np.ndarray:
        """Boolean mask (n_points,) of points with finite outputs."""
        return self.status == PointStatus.OK

    @property
    def n_failed(self) -> int:
        """Number of points that raised, timed out or gave non-finite outputs."""
        failed = (PointStatus.ERROR, PointStatus.NONFINITE, PointStatus.TIMEOUT)
        return int(np.isin(self.status, failed).sum())

    @property
    def n_pending(self) -> int:
        """Number of points not evaluated yet (only non-zero for an unfinished store)."""
        return int((self.status == PointStatus.PENDING).sum())

    def ok_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(u, y)`` restricted to OK points: (n_ok, n_in) and (n_ok, n_out)."""
        mask = self.ok
        return self.u[mask], self.y[mask]

    def to_torch(
        self, *, dtype: torch.dtype = torch.float64, only_ok: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(u, y)`` as new tensors of ``dtype``, by default only the OK points.

        Returns:
            ``u`` (n, n_in) and ``y`` (n, n_out), ``n`` = OK points or all points.
        """
        u, y = self.ok_arrays() if only_ok else (self.u, self.y)
        return torch.tensor(u, dtype=dtype), torch.tensor(y, dtype=dtype)

    def concat(self, other: SweepTable) -> SweepTable:
        """Append the rows of ``other`` (e.g. refinement points) after these rows.

        Raises:
            ValueError: If the tables describe different devices or domains.
        """
        if _normalise(self.device) != _normalise(other.device) or self.domain != other.domain:
            raise ValueError(
                "cannot concatenate sweep tables of different devices or domains: "
                f"{self.device} on {self.domain} vs {other.device} on {other.domain}"
            )
        offset = self.n_points
        errors = dict(self.errors)
        errors.update({k + offset: v for k, v in other.errors.items()})
        return SweepTable(
            u=np.concatenate([self.u, other.u]),
            y=np.concatenate([self.y, other.y]),
            status=np.concatenate([self.status, other.status]),
            errors=errors,
            domain=self.domain,
            device=self.device,
            sampler={"kind": "concat", "parts": _parts(self.sampler) + _parts(other.sampler)},
        )

    def summary(self) -> str:
        """One line: counts of OK, failed and pending points."""
        n_ok = int(self.ok.sum())
        return (
            f"{self.n_points} points of {self.device.get('name', 'device')!r}: {n_ok} ok, "
            f"{self.n_failed} failed, {self.n_pending} pending"
        )

    def __repr__(self) -> str:
        return f"SweepTable({self.summary()})"

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> SweepTable:
        """Read the table of a sweep store (points of uncommitted chunks are PENDING).

        Every committed chunk is verified against the digests of its commit record.

        Raises:
            FileNotFoundError: If ``path`` holds no sweep store.
            IntegrityError: If a committed chunk file is missing or damaged, or the manifest
                fails its digest; the message names the file and how to repair the store.
            StoreCorruptError: If the store cannot be read back consistently.
        """
        return SweepStore.open(path).read_table()


def _parts(sampler: dict[str, Any]) -> list[dict[str, Any]]:
    return list(sampler["parts"]) if sampler.get("kind") == "concat" else [sampler]


def _json_default(obj: Any) -> Any:
    """JSON form of values a ``describe()`` may hold that json cannot encode."""
    if isinstance(obj, (torch.Tensor, np.ndarray, np.generic)):
        return obj.tolist()
    if callable(obj) and hasattr(obj, "__qualname__"):
        return f"{getattr(obj, '__module__', '?')}.{obj.__qualname__}"
    # A memory address would differ in every process and make a resume look like a mismatch.
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(obj))


def _normalise(obj: Any) -> Any:
    """JSON round trip: tuples become lists, so descriptions compare as stored."""
    return json.loads(json.dumps(obj, sort_keys=True, default=_json_default))


def _diff(stored: Any, new: Any, where: str) -> list[str]:
    if isinstance(stored, Mapping) and isinstance(new, Mapping):
        out: list[str] = []
        for key in sorted(set(stored) | set(new), key=str):
            sub = f"{where}.{key}" if where else str(key)
            if key not in stored:
                out.append(f"{sub}: not in the store, requested {new[key]!r}")
            elif key not in new:
                out.append(f"{sub}: stored {stored[key]!r}, not in the request")
            else:
                out.extend(_diff(stored[key], new[key], sub))
        return out
    return [] if stored == new else [f"{where}: stored {stored!r}, requested {new!r}"]


def _fsync_path(path: Path) -> None:
    # Best effort: some file systems refuse fsync on folders; missing files have nothing to sync.
    with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError, OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (the one writer), then fsync the folder so the rename lasts."""
    atomic_write_json(path, obj, indent=1, sort_keys=True)
    _fsync_path(path.parent)


def manifest_digest(manifest: Mapping[str, Any]) -> str:
    """SHA-256 of a manifest's canonical JSON, leaving out :data:`MANIFEST_DIGEST_KEY`."""
    body = {k: v for k, v in manifest.items() if k != MANIFEST_DIGEST_KEY}
    return sha256_hex(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


class _Lock:
    """An exclusive ``fcntl.flock`` on ``<parent>/.<store name>.lock``, held by one writer.

    The lock file sits next to the store (not inside it) because a new store is renamed into
    place. The kernel drops the lock when its holder dies, so a killed sweep never leaves a
    stale lock behind.
    """

    def __init__(self, store: Path) -> None:
        store.parent.mkdir(parents=True, exist_ok=True)
        self.path = store.parent / f".{store.name}.lock"
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                warnings.warn(
                    f"sweep store {store} is being written by another process; waiting for it "
                    "to finish (its results are then resumed, not recomputed)",
                    QuasineuronWarning,
                    stacklevel=4,
                )
                fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:  # e.g. Ctrl-C while waiting, or the warning raised as an error
            self.release()
            raise

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def make_manifest(
    *,
    device: dict[str, Any],
    domain: Box,
    sampler: dict[str, Any],
    dtype: torch.dtype,
    n_points: int,
    n_in: int,
    n_out: int,
    batch_size: int,
) -> dict[str, Any]:
    """Build the JSON manifest of a sweep (identity keys plus version and creation time)."""
    from quasineuron import __version__

    return _normalise(
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "device": device,
            "domain": domain.to_dict(),
            "sampler": sampler,
            "seed": sampler.get("seed"),
            "dtype": str(dtype).removeprefix("torch."),
            "n_points": n_points,
            "n_in": n_in,
            "n_out": n_out,
            "batch_size": batch_size,
            "quasineuron_version": __version__,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }
    )


def _array(group: zarr.Group, name: str) -> zarr.Array:
    """The array ``name`` of ``group``.

    Raises:
        StoreCorruptError: If ``name`` is a group, not an array.
    """
    arr = group[name]
    if not isinstance(arr, zarr.Array):
        raise StoreCorruptError(f"{name!r} in {group.store} is a group, expected an array")
    return arr


class SweepStore:
    """A sweep store folder (see the module docstring for its layout and guarantees).

    Use :meth:`create`, :meth:`open` or :meth:`open_or_create`; the runner is the only writer.
    """

    def __init__(self, path: Path, group: zarr.Group, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest
        self._group = group
        self._lock: _Lock | None = None
        self._encoders: dict[str, Any] | None = None
        self.n_points: int = manifest["n_points"]
        self.batch_size: int = manifest["batch_size"]
        self.n_chunks = -(-self.n_points // self.batch_size)

    # -- opening -----------------------------------------------------------------------------

    @classmethod
    def create(
        cls, path: str | os.PathLike[str], manifest: dict[str, Any], u: np.ndarray
    ) -> SweepStore:
        """Create a new store at ``path`` (absent or an empty folder) holding drives ``u``.

        The store is built in a hidden sibling folder and renamed into place when complete.
        Callers that may race with another process use :meth:`open_or_create`, which holds
        the store's lock.
        """
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise FileExistsError(f"{path} exists and is not an empty folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.parent / f".{path.name}.creating"
        if staging.exists():  # left over by a creation that was killed; it holds no results
            shutil.rmtree(staging)
        staging.mkdir()
        # As written (non-finite floats become null), so that the digest matches on reading.
        manifest = jsonable({k: v for k, v in manifest.items() if k != MANIFEST_DIGEST_KEY})
        manifest["format_version"] = FORMAT_VERSION
        manifest[MANIFEST_DIGEST_KEY] = manifest_digest(manifest)
        n, bs = manifest["n_points"], manifest["batch_size"]
        group = zarr.open_group(
            LocalStore(staging / _TABLE), mode="w-", attributes={"quasineuron_sweep": manifest}
        )
        arr_u = group.create_array(
            "u",
            shape=(n, manifest["n_in"]),
            chunks=(bs, manifest["n_in"]),
            dtype="float64",
            fill_value=np.nan,
            config={"write_empty_chunks": True},
            dimension_names=("point", "drive"),
        )
        group.create_array(
            "y",
            shape=(n, manifest["n_out"]),
            chunks=(bs, manifest["n_out"]),
            dtype="float64",
            fill_value=np.nan,
            config={"write_empty_chunks": True},
            dimension_names=("point", "output"),
        )
        group.create_array(
            "status",
            shape=(n,),
            chunks=(bs,),
            dtype="int8",
            fill_value=int(PointStatus.PENDING),
            config={"write_empty_chunks": True},
            dimension_names=("point",),
        )
        arr_u[:] = u
        (staging / _COMMITS).mkdir()
        for chunk in range(-(-n // bs)):
            _fsync_path(staging / _TABLE / "u" / arr_u.metadata.encode_chunk_key((chunk, 0)))
        _write_json(staging / _MANIFEST, manifest)
        if path.exists():
            path.rmdir()  # empty, checked above; rename over a folder is not portable
        os.replace(staging, path)
        _fsync_path(path.parent)
        return cls.open(path, mode="r+")

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, mode: Literal["r", "r+"] = "r") -> SweepStore:
        """Open an existing store, checking that its parts agree with its manifest.

        The manifest is checked against its own digest here; the committed chunks are
        verified by :meth:`read_commits` (so by every resume and :meth:`read_table`).

        Args:
            path: The store folder.
            mode: ``"r"`` to read, ``"r+"`` to write chunks.

        Raises:
            FileNotFoundError: If ``path`` holds no sweep store.
            IntegrityError: If the manifest does not match its digest.
            StoreCorruptError: If the manifest or the arrays cannot be read consistently.
        """
        path = Path(path)
        mpath = path / _MANIFEST
        if not mpath.is_file():
            if (path / _TABLE).exists():
                raise StoreCorruptError(
                    f"sweep store {path} has a table but no {_MANIFEST}; it cannot be resumed. "
                    "Delete the folder, or rerun with overwrite=True (--overwrite)."
                )
            raise FileNotFoundError(f"no sweep store at {path} (no {_MANIFEST})")
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
            if manifest.get("format") != FORMAT:
                raise ValueError(f"format is {manifest.get('format')!r}, expected {FORMAT!r}")
            missing = [k for k in IDENTITY_KEYS if k not in manifest]
            if missing:
                raise ValueError(f"keys {missing} are missing")
        except (OSError, ValueError, AttributeError) as exc:
            raise IntegrityError(
                f"the manifest {mpath} is unreadable ({type(exc).__name__}: {exc}); the store "
                "cannot be trusted. Delete the folder, or rerun with overwrite=True (--overwrite)."
            ) from exc
        version = manifest.get("format_version", 0)
        if not isinstance(version, int):
            raise IntegrityError(
                f"the manifest {mpath} has format_version {version!r}, not an int; the store "
                "cannot be trusted. Delete the folder, or rerun with overwrite=True (--overwrite)."
            )
        if version > FORMAT_VERSION:
            raise StoreCorruptError(
                f"sweep store {path} has format version {manifest['format_version']}, newer "
                f"than this quasineuron understands ({FORMAT_VERSION}); upgrade quasineuron"
            )
        # From version 2 on the digest is required, so a damaged key name cannot hide it.
        if version >= 2 and manifest.get(MANIFEST_DIGEST_KEY) != manifest_digest(manifest):
            raise IntegrityError(
                f"the manifest {mpath} does not match its digest ({MANIFEST_DIGEST_KEY}): it was "
                "changed or damaged after it was written, so the store cannot be trusted. "
                "Delete the folder, or rerun with overwrite=True (--overwrite)."
            )
        try:
            group = zarr.open_group(LocalStore(path / _TABLE, read_only=mode == "r"), mode=mode)
            arrays = {name: _array(group, name) for name in _ARRAYS}
        except Exception as exc:
            raise StoreCorruptError(
                f"the zarr table of sweep store {path} is unreadable ({type(exc).__name__}: "
                f"{exc}). Delete the folder, or rerun with overwrite=True (--overwrite)."
            ) from exc
        n, bs = manifest["n_points"], manifest["batch_size"]
        expected = {
            "u": ((n, manifest["n_in"]), (bs, manifest["n_in"]), np.float64),
            "y": ((n, manifest["n_out"]), (bs, manifest["n_out"]), np.float64),
            "status": ((n,), (bs,), np.int8),
        }
        for name, (shape, chunks, dtype) in expected.items():
            arr = arrays[name]
            got = (tuple(arr.shape), tuple(arr.chunks), np.dtype(arr.dtype))
            if got != (shape, chunks, np.dtype(dtype)):
                raise StoreCorruptError(
                    f"array {name!r} of sweep store {path} has shape {got[0]}, chunks {got[1]}, "
                    f"dtype {got[2]}, but its manifest requires {shape}, {chunks}, "
                    f"{np.dtype(dtype)}. Delete the folder, or rerun with overwrite=True "
                    "(--overwrite)."
                )
        return cls(path, group, manifest)

    @classmethod
    def open_or_create(
        cls,
        path: str | os.PathLike[str],
        manifest: dict[str, Any],
        u: np.ndarray,
        *,
        overwrite: bool = False,
        repair: bool = False,
    ) -> SweepStore:
        """Resume the store at ``path`` if it was made for ``manifest``, else create it.

        The returned store holds the store's lock (an ``fcntl.flock`` on a ``.<name>.lock``
        file next to it) until :meth:`close`: a second process opening the same store waits
        for the first to finish, then resumes its results. A store whose creation was killed
        (a table without a manifest or any commit) holds no results and is created afresh.

        Args:
            path: The store folder.
            manifest: The manifest of the requested sweep (see :func:`make_manifest`).
            u: The drives (n_points, n_in), written on creation.
            overwrite: Replace an existing store made for another sweep, or a corrupt one.
            repair: Drop the commit records of damaged chunks (see :meth:`repair`) so that
                this run recomputes them, instead of raising IntegrityError.

        Raises:
            StoreMismatchError: If ``path`` holds a store of another sweep, or is a folder
                with other content.
            IntegrityError: If a committed chunk or the manifest is damaged and ``repair``
                is false.
            StoreCorruptError: If the store at ``path`` cannot be read consistently.
        """
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise StoreMismatchError(f"store {path} is a file, not a folder; choose a folder")
        lock = _Lock(path)
        try:
            store = cls._open_or_create_locked(path, manifest, u, overwrite=overwrite)
            if repair:
                store.repair()
            store.read_commits()  # verifies every committed chunk before any work is done
        except BaseException:
            lock.release()
            raise
        store._lock = lock
        return store

    @classmethod
    def _open_or_create_locked(
        cls, path: Path, manifest: dict[str, Any], u: np.ndarray, *, overwrite: bool
    ) -> SweepStore:
        if path.is_dir() and any(path.iterdir()):
            ours = (path / _MANIFEST).exists() or (path / _TABLE).exists()
            if not ours:
                raise StoreMismatchError(
                    f"{path} is a non-empty folder that holds no sweep store; choose a new or "
                    "empty folder (it is never deleted, not even with overwrite=True)"
                )
            commits = path / _COMMITS
            half_created = not (path / _MANIFEST).exists() and not (
                commits.is_dir() and any(commits.glob("*.json"))
            )
            if overwrite or half_created:
                shutil.rmtree(path)
            else:
                store = cls.open(path, mode="r+")
                problems = _diff(
                    {k: store.manifest[k] for k in IDENTITY_KEYS},
                    {k: manifest[k] for k in IDENTITY_KEYS},
                    "",
                )
                if problems:
                    raise StoreMismatchError(
                        f"sweep store {path} was made for a different sweep:\n  "
                        + "\n  ".join(problems)
                        + "\nUse another folder, or pass --overwrite to replace the stored "
                        "sweep (its results are deleted)."
                    )
                return store
        return cls.create(path, manifest, u)

    def close(self) -> None:
        """Release the store's lock (taken by :meth:`open_or_create`); reading still works."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # -- chunks ------------------------------------------------------------------------------

    def chunk_slice(self, chunk: int) -> slice:
        """Points of ``chunk``: ``[chunk * batch_size, min((chunk + 1) * batch_size, n))``."""
        return slice(chunk * self.batch_size, min((chunk + 1) * self.batch_size, self.n_points))

    def _commit_path(self, chunk: int) -> Path:
        return self.path / _COMMITS / f"{chunk:09d}.json"

    def _chunk_file(self, name: str, chunk: int) -> Path:
        """The file holding ``chunk`` of array ``name`` (``u``, ``y`` or ``status``)."""
        # Looking an array up in the group reads its metadata document: do it once per store,
        # not once per chunk (it dominated the check of a 1e6-point store).
        if self._encoders is None:
            self._encoders = {n: self._group[n].metadata for n in _ARRAYS}
        meta = self._encoders[name]
        key = (chunk,) + (0,) * (len(meta.shape) - 1)
        return self.path / _TABLE / name / meta.encode_chunk_key(key)

    def _check_chunk(self, chunk: int, rec: Mapping[str, Any]) -> str | None:
        """Why the data of a committed chunk is not what its record committed, or None."""
        digests = rec.get("sha256")
        for name in _ARRAYS:
            p = self._chunk_file(name, chunk)
            try:
                data = p.read_bytes()
            except FileNotFoundError:
                # u existed before any commit; version-1 records hold no digests, but a
                # committed y/status file must exist in every version.
                if digests is None and name == "u":
                    continue
                return f"its file {p} is missing"
            if digests is not None and sha256_hex(data) != digests.get(name):
                return f"its file {p} does not match the SHA-256 in its commit record"
        return None

    def verify(self) -> dict[int, str]:
        """Check every committed chunk's files against its commit record.

        Returns:
            Chunk index → what is wrong, for every damaged committed chunk (empty if none).
        """
        return self._problems(self._read_records())

    def _problems(self, records: Mapping[int, Mapping[str, Any]]) -> dict[int, str]:
        out = {}
        for chunk, rec in sorted(records.items()):
            why = self._check_chunk(chunk, rec)
            if why is not None:
                out[chunk] = why
        return out

    def repair(self) -> list[int]:
        """Delete the commit records of damaged chunks, so that a resume recomputes them.

        Unreadable commit records are deleted too. Every result a damaged chunk held is lost
        and recomputed; all others are kept. A warning names each deleted record.

        Returns:
            The chunks whose (readable) commit record was deleted, sorted.
        """
        bad: dict[Path, str] = {}
        problems = self._problems(self._read_records(bad))
        for p, why in bad.items():
            p.unlink(missing_ok=True)
            warnings.warn(
                f"sweep store {self.path}: commit record {p} was unreadable ({why}) and was "
                "deleted, so that its chunk is recomputed",
                QuasineuronWarning,
                stacklevel=3,
            )
        for chunk, why in problems.items():
            self._commit_path(chunk).unlink(missing_ok=True)
            warnings.warn(
                f"sweep store {self.path}: chunk {chunk} was damaged ({why}); its commit "
                "record was deleted so that it is recomputed",
                QuasineuronWarning,
                stacklevel=3,
            )
        _fsync_path(self.path / _COMMITS)
        return sorted(problems)

    def _read_records(self, bad: dict[Path, str] | None = None) -> dict[int, dict[str, Any]]:
        """Parse every commit record; unreadable ones raise, or are collected in ``bad``."""
        out: dict[int, dict[str, Any]] = {}
        folder = self.path / _COMMITS
        if not folder.is_dir():
            raise StoreCorruptError(
                f"sweep store {self.path} lacks its {_COMMITS}/ folder; delete the folder or "
                "pass overwrite=True to start afresh"
            )
        for p in folder.glob("*.json"):
            try:
                chunk = int(p.stem)
                rec = json.loads(p.read_text(encoding="utf-8"))
                if rec["chunk"] != chunk or not 0 <= chunk < self.n_chunks:
                    raise ValueError(f"record names chunk {rec['chunk']}")
                rec["errors"] = {int(k): str(v) for k, v in rec["errors"].items()}
                if "sha256" in rec and not (
                    isinstance(rec["sha256"], dict)
                    and all(isinstance(rec["sha256"].get(a), str) for a in _ARRAYS)
                ):
                    raise ValueError("its sha256 entry is not a digest per array")
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                if bad is not None:
                    bad[p] = f"{type(exc).__name__}: {exc}"
                    continue
                raise IntegrityError(
                    f"commit record {p} is unreadable ({type(exc).__name__}: {exc}). Delete "
                    "this one file, or pass repair=True to sweep() (--repair), to recompute its "
                    "chunk on the next run."
                ) from exc
            out[chunk] = rec
        return out

    def read_commits(self) -> dict[int, dict[str, Any]]:
        """Commit records of the finished chunks, by chunk index, each verified.

        Every committed chunk's files are read once and checked against the SHA-256 digests
        of its commit record (version-1 records, without digests, only for presence).

        Raises:
            IntegrityError: If a commit record is unreadable, or a committed chunk's file is
                missing or damaged; the message names the file, the chunk and the fixes.
            StoreCorruptError: If the store lacks its commits folder.
        """
        records = self._read_records()
        problems = self._problems(records)
        if problems:
            chunk, why = next(iter(problems.items()))
            more = f" (and {len(problems) - 1} more damaged chunks)" if len(problems) > 1 else ""
            raise IntegrityError(
                f"sweep store {self.path}: committed chunk {chunk} is damaged: {why}{more}. "
                f"Its results cannot be trusted. To recompute only the damaged chunks, delete "
                f"their commit records (here {self._commit_path(chunk)}) or pass repair=True "
                "to sweep() (--repair on the command line)."
            )
        return records

    def write_chunk(
        self,
        chunk: int,
        y: np.ndarray,
        status: np.ndarray,
        errors: Mapping[int, str],
        *,
        u: np.ndarray | None = None,
    ) -> None:
        """Write the outputs of one chunk, then commit it with the digests of its files.

        Args:
            chunk: Chunk index.
            y: Outputs (chunk_len, n_out).
            status: Status codes (chunk_len,).
            errors: Global point index → error text, for points of this chunk.
            u: The chunk's drives (chunk_len, n_in), written again so that a repaired chunk
                also gets a sound ``u``; None keeps the stored ones.
        """
        sl = self.chunk_slice(chunk)
        # A reopened array forgets write_empty_chunks; without it an all-NaN chunk of y (every
        # point failed) would not be written, and its file could not be checked.
        arrays = {
            n: _array(self._group, n).with_config({"write_empty_chunks": True}) for n in _ARRAYS
        }
        if u is not None:
            arrays["u"][sl] = u
        arrays["y"][sl] = y
        arrays["status"][sl] = status
        digests = {}
        for name in _ARRAYS:
            p = self._chunk_file(name, chunk)
            digests[name] = sha256_hex(p.read_bytes())
            _fsync_path(p)
        record = {
            "chunk": chunk,
            "start": sl.start,
            "stop": sl.stop,
            "n_ok": int((status == PointStatus.OK).sum()),
            "errors": {str(k): v for k, v in sorted(errors.items())},
            "sha256": digests,
        }
        _write_json(self._commit_path(chunk), record)

    def read_table(self) -> SweepTable:
        """Read the whole table; points of uncommitted chunks get status PENDING.

        Raises:
            IntegrityError: If a committed chunk is missing or damaged (see
                :meth:`read_commits`); never NaN data for a committed chunk.
        """
        commits = self.read_commits()
        try:
            u = np.asarray(_array(self._group, "u")[:], dtype=np.float64)
            y = np.asarray(_array(self._group, "y")[:], dtype=np.float64)
            status = np.asarray(_array(self._group, "status")[:], dtype=np.int8)
        except Exception as exc:
            raise StoreCorruptError(
                f"sweep store {self.path} has an unreadable chunk ({type(exc).__name__}: "
                f"{exc}). Delete the folder, or rerun with overwrite=True (--overwrite)."
            ) from exc
        committed = np.zeros(self.n_points, dtype=bool)
        errors: dict[int, str] = {}
        for chunk, rec in commits.items():
            committed[self.chunk_slice(chunk)] = True
            errors.update(rec["errors"])
        if (status[committed] == PointStatus.PENDING).any():
            raise StoreCorruptError(
                f"sweep store {self.path} has committed chunks without status data; delete "
                "the folder, or rerun with overwrite=True (--overwrite)"
            )
        status[~committed] = PointStatus.PENDING
        y[~committed] = np.nan
        m = self.manifest
        return SweepTable(
            u=u,
            y=y,
            status=status,
            errors=errors,
            domain=Box.from_dict(m["domain"]),
            device=m["device"],
            sampler=m["sampler"],
        )
