"""MNIST from the four standard IDX files: a user's folder, or a verified download.

The files are checked by the SHA-256 of their *uncompressed* content, so gzip wrappers made
by different tools are all accepted.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from quasineuron.data.dataset import ArrayDataset

__all__ = ["MNIST_FILES", "MNIST_MIRRORS", "default_data_root", "load_mnist", "read_idx"]

#: SHA-256 of each uncompressed IDX file.
MNIST_FILES: dict[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

#: Public mirrors serving ``<name>.gz``, tried in order.
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

_ENV_VAR = "QUASINEURON_DATA"
_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def default_data_root() -> Path:
    """Root folder of cached data sets: ``$QUASINEURON_DATA``, else ``~/.cache/quasineuron``."""
    env = os.environ.get(_ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "quasineuron"


def read_idx(data: bytes, *, source: str = "<bytes>") -> np.ndarray:
    """Parse one IDX file (uncompressed bytes) into an array.

    Format: two zero bytes, a dtype code, the number of dimensions ``d``, ``d`` big-endian
    uint32 sizes, then the values in C order.

    Args:
        data: The file's content.
        source: Name used in error messages.

    Returns:
        An array of the file's shape and dtype (native byte order).

    Raises:
        ValueError: If the header is malformed or the size does not match it.
    """
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{source} is not an IDX file (bad magic number {data[:4]!r})")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int(v) for v in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(
            f"{source} is truncated or padded: header says shape {shape} ({expected} bytes), "
            f"file has {len(data)} bytes; delete it and download it again"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=False)


def load_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    mirrors: Sequence[str] = MNIST_MIRRORS,
    timeout: float = 30.0,
) -> tuple[ArrayDataset, ArrayDataset]:
    """Load MNIST (60,000 training and 10,000 test digits) as flattened [0, 1] pixels.

    Files are looked up as ``<name>`` or ``<name>.gz`` in ``data_dir`` when given (nothing is
    downloaded then), else in ``cache_dir``, where missing files are downloaded from
    ``mirrors`` (temp file, then atomic rename). Every file is verified against
    :data:`MNIST_FILES` before use.

    Args:
        data_dir: A folder holding the four IDX files (gzip or raw).
        cache_dir: Download cache; default ``default_data_root() / "mnist"``, i.e.
            ``$QUASINEURON_DATA/mnist`` or ``~/.cache/quasineuron/mnist``.
        download: Download missing files into ``cache_dir``.
        mirrors: Base URLs serving ``<name>.gz`` (``file://`` URLs work too), tried in order.
        timeout: Seconds to wait on each connection.

    Returns:
        ``(train, test)``: x of shape (60000, 784) and (10000, 784), float32 in [0, 1];
        y int64 labels 0..9.

    Raises:
        FileNotFoundError: If a file is missing from ``data_dir``, or from ``cache_dir`` with
            ``download=False``.
        ConnectionError: If a missing file could not be downloaded from any mirror.
        ValueError: If a file's checksum or format is wrong.
    """
    if data_dir is not None:
        folder = Path(data_dir).expanduser()
        paths = {name: _find(folder, name) for name in MNIST_FILES}
        missing = [name for name, p in paths.items() if p is None]
        if missing:
            raise FileNotFoundError(
                f"data_dir {str(folder)!r} lacks {', '.join(missing)} (as raw or .gz IDX files); "
                "put the four MNIST files there, or leave data_dir=None (no --data-dir) to "
                "download them"
            )
    else:
        folder = Path(cache_dir).expanduser() if cache_dir is not None else default_data_root()
        if cache_dir is None:
            folder = folder / "mnist"
        paths = {name: _find(folder, name) for name in MNIST_FILES}
        for name, path in paths.items():
            if path is not None:
                continue
            if not download:
                raise FileNotFoundError(
                    f"{name} is not in the MNIST cache {str(folder)!r} and download=False; "
                    f"pass download=True, or data_dir=<folder with the IDX files>"
                )
            paths[name] = _download(name, folder, mirrors=mirrors, timeout=timeout)
    # every path is set by now (a missing file raised or was downloaded above)
    arrays = {name: _read_verified(path) for name, path in paths.items()}  # type: ignore[arg-type]
    train = _to_dataset(arrays, "train", "mnist-train")
    test = _to_dataset(arrays, "t10k", "mnist-test")
    return train, test


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file's suffix
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ValueError(
                f"{str(path)!r} is a corrupt gzip file ({exc}); delete it and download it again"
            ) from exc
    return raw


def _read_verified(path: Path) -> np.ndarray:
    data = _read_bytes(path)
    name = path.name.removesuffix(".gz")
    digest = hashlib.sha256(data).hexdigest()
    if digest != MNIST_FILES[name]:
        raise ValueError(
            f"checksum mismatch for {str(path)!r}: SHA-256 of the uncompressed content is "
            f"{digest}, expected {MNIST_FILES[name]}; the file is corrupt or not the standard "
            f"MNIST file. Delete it (it will be downloaded again) or replace it."
        )
    return read_idx(data, source=str(path))


def _download(name: str, folder: Path, *, mirrors: Sequence[str], timeout: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.gz"
    failures = []
    for base in mirrors:
        url = base.rstrip("/") + f"/{name}.gz"
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as src:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            data = _read_bytes(tmp)
            digest = hashlib.sha256(data).hexdigest()
            if digest != MNIST_FILES[name]:
                failures.append(f"{url}: checksum mismatch ({digest})")
                continue
            os.replace(tmp, target)
            return target
        except (urllib.error.URLError, OSError, ValueError) as exc:
            failures.append(f"{url}: {exc}")
        finally:
            tmp.unlink(missing_ok=True)
    raise ConnectionError(
        f"could not download MNIST file {name}.gz from any mirror:\n  "
        + "\n  ".join(failures)
        + "\nIf this machine is offline, copy the four MNIST IDX files (train-images-idx3-ubyte, "
        "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte; raw or .gz) "
        "into a folder and pass load_mnist(data_dir=<folder>) (or --data-dir <folder> on the "
        f"command line), or put them in {str(folder)!r} (the cache; set {_ENV_VAR}=<root> to "
        f"use <root>/mnist instead)."
    )


def _to_dataset(arrays: dict[str, np.ndarray], prefix: str, name: str) -> ArrayDataset:
    images = arrays[f"{prefix}-images-idx3-ubyte"]
    labels = arrays[f"{prefix}-labels-idx1-ubyte"]
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"{prefix} images {images.shape} and labels {labels.shape} do not match; the files "
            f"are not the standard MNIST files"
        )
    x = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / np.float32(255.0))
    y = torch.from_numpy(labels.astype(np.int64))
    return ArrayDataset(x, y, name=name)
