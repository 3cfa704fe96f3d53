"""Import characterisation data a lab already measured as a :class:`SweepTable`.

A device known only from measurements has no ``forward`` to sweep, but everything downstream
(``fit_surrogate``, the fidelity report, training on the twin) takes a :class:`SweepTable`.
:func:`load_measurements` builds that table from a file:

- CSV (read with the standard library, no extra dependency): one header row naming the columns,
  then one measurement per row. Lines starting with ``#`` before the header are comments.
- HDF5 (``.h5``, ``.hdf5``; needs ``h5py``) and NetCDF (``.nc``, ``.nc4``, ``.cdf``; needs
  ``xarray`` with a NetCDF engine): each drive and output is a dataset/variable of the same
  number of elements, flattened in C order.

Rows map onto the table as a sweep would have produced them:

- drive columns become ``u`` (n_points, n_in), output columns ``y`` (n_points, n_out);
- a row with a missing (empty, ``nan``, ``NA``) or non-finite output gets status ``NONFINITE``
  and stays in the table, so the fit report counts it and the twin's validity mask marks it;
- rows with identical drive values are repeats of one point. When every point was measured
  the same number of times ``k >= 2``, the rows are reordered into the layout of
  ``sweep(..., repeats=k)`` (row ``r * n + i`` is repeat ``r`` of point ``i``, in file order)
  and the sampler description records ``"repeats": k``. ``fit_surrogate`` fits the mean of the
  repeats and reports the noise floor either way (it groups rows by identical drives);
- units and the file's SHA-256 are kept in the table's ``device`` description.
"""

from __future__ import annotations

import csv
import difflib
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from quasineuron._atomic import sha256_hex
from quasineuron.devices.base import AbstractDevice, Box
from quasineuron.errors import NoTrueDeviceError
from quasineuron.sweep.store import PointStatus, SweepTable

__all__ = ["MeasuredOnly", "load_measurements"]

_CSV_SUFFIXES = (".csv", ".tsv", ".txt")
_HDF5_SUFFIXES = (".h5", ".hdf5", ".he5")
_NETCDF_SUFFIXES = (".nc", ".nc4", ".cdf")
# Spellings of a missing value in lab exports; they read as NaN and mark the row NONFINITE.
_MISSING = frozenset({"", "nan", "na", "n/a", "null", "none", "-"})
# Spellings accepted in a status column, besides the integer codes of PointStatus.
_STATUS_NAMES = {s.name.lower(): s for s in PointStatus if s is not PointStatus.PENDING}


def load_measurements(
    path: str | os.PathLike[str],
    *,
    drives: Sequence[str],
    outputs: Sequence[str],
    status: str | None = None,
    repeat: str | None = None,
    units: Mapping[str, str] | None = None,
    domain: Box | None = None,
    name: str | None = None,
    delimiter: str | None = None,
) -> SweepTable:
    """Read measured drive/output data into the table a sweep produces.

    Args:
        path: A CSV file (``.csv``, ``.tsv``, ``.txt``), an HDF5 file (``.h5``, ``.hdf5``)
            or a NetCDF file (``.nc``, ``.nc4``, ``.cdf``).
        drives: Columns (CSV) or variables (HDF5/NetCDF) holding the drives, in the order of
            the device's inputs; gives ``u`` of shape (n_points, len(drives)).
        outputs: Columns or variables holding the outputs; gives ``y`` of shape
            (n_points, len(outputs)).
        status: Optional column flagging each measurement: a :class:`PointStatus` code
            (0 ok, 1 non-finite, 2 error, 3 timeout) or its name (``ok``, ``error``, ...).
            Without it every row with finite outputs is OK. A row flagged OK whose outputs are
            missing or non-finite is NONFINITE all the same.
        repeat: Optional column numbering the repeated measurements of a point (any integers,
            e.g. 0, 1, 2 or 1, 2, 3). It is checked against the drives: every repeat number
            must cover the same set of drive values. Without it, rows with identical drive
            values are repeats.
        units: Column → unit, e.g. ``{"V_gate": "V", "I_drain": "A"}``; kept in
            ``table.device["units"]``. Every key must be one of ``drives`` or ``outputs``.
        domain: Box of the drives. Defaults to the bounding box of the measured drives; a
            given box must contain every measured drive.
        name: The device's name in the table; defaults to the file's stem.
        delimiter: CSV field separator; defaults to a tab for ``.tsv`` and a comma otherwise.

    Returns:
        A :class:`SweepTable` with ``u`` (n_points, n_in), ``y`` (n_points, n_out), a status
        per row, ``device`` = ``{"name", "kind": "measured", "source", "sha256", "drives",
        "outputs", "units"}`` and ``sampler`` = ``{"kind": "measured", ...}`` (with
        ``"repeats": k`` when every point was measured ``k >= 2`` times).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ImportError: If an HDF5/NetCDF file is given and ``h5py``/``xarray`` is not installed.
        ValueError: If a column is unknown, used twice, holds a value that is not a number,
            a drive is missing or non-finite, the status or repeat column is malformed, the
            drives do not fit ``domain``, or the file holds no rows; the message names the
            column and row and says what to do.
    """
    path = Path(path)
    drives = _check_names(drives, "drives")
    outputs = _check_names(outputs, "outputs")
    both = set(drives) & set(outputs)
    if both:
        raise ValueError(
            f"columns {sorted(both)} are listed in both drives and outputs; each column is "
            "either a drive or an output"
        )
    extra: list[str] = []
    for role, named in (("status", status), ("repeat", repeat)):
        if named is None:
            continue
        if named in drives or named in outputs or named in extra:
            raise ValueError(
                f"the {role} column {named!r} is already used as a drive, an output or the status "
                "column; give each role its own column"
            )
        extra.append(named)
    units = dict(units or {})
    for key, value in units.items():
        if key not in drives and key not in outputs:
            raise ValueError(
                f"units names column {key!r}, which is neither a drive {list(drives)} nor an "
                f"output {list(outputs)}; give units only for those columns"
            )
        if not isinstance(value, str):
            raise TypeError(f"units[{key!r}] must be a string such as 'V', got {value!r}")
    if domain is not None and not isinstance(domain, Box):
        raise TypeError(f"domain must be a Box, e.g. Box(low=(-1.0,), high=(1.0,)), got {domain!r}")
    if not path.is_file():
        raise FileNotFoundError(f"measurement file {path} does not exist (or is not a file)")

    wanted = [*drives, *outputs, *extra]
    suffix = path.suffix.lower()
    raw = path.read_bytes()
    if suffix in _HDF5_SUFFIXES:
        columns = _read_hdf5(path, wanted)
    elif suffix in _NETCDF_SUFFIXES:
        columns = _read_netcdf(path, wanted)
    elif suffix in _CSV_SUFFIXES:
        sep = delimiter if delimiter is not None else ("\t" if suffix == ".tsv" else ",")
        columns = _read_csv(path, raw, wanted, sep)
    else:
        raise ValueError(
            f"cannot tell the format of {path} from its suffix {path.suffix!r}; use one of "
            f"{_CSV_SUFFIXES + _HDF5_SUFFIXES + _NETCDF_SUFFIXES} (rename the file)"
        )
    n = len(next(iter(columns.values())))
    if n == 0:
        raise ValueError(f"{path} holds no measurements (no data rows)")

    u = np.stack([_numbers(columns[c], c, path) for c in drives], axis=1)
    y = np.stack([_numbers(columns[c], c, path) for c in outputs], axis=1)
    bad_u = ~np.isfinite(u)
    if bad_u.any():
        row, col = (int(v) for v in np.argwhere(bad_u)[0])
        raise ValueError(
            f"{path}: drive {drives[col]!r} is missing or non-finite in data row {row + 1} "
            f"({_show(columns[drives[col]][row])!r}); a point needs all its drives. Fix or "
            "delete that row (failed outputs are fine: they are kept as NONFINITE)"
        )
    codes = _statuses(columns[status], status, path) if status is not None else None
    st = np.full(n, PointStatus.OK, dtype=np.int8) if codes is None else codes
    st[(st == PointStatus.OK) & ~np.isfinite(y).all(axis=1)] = PointStatus.NONFINITE

    rep = _numbers(columns[repeat], repeat, path) if repeat is not None else None
    order, k = _repeat_layout(u, rep, repeat, path)
    u, y, st = u[order], y[order], st[order]
    # rows the lab flagged as failed get an error text, as a sweep's failed points do
    errors = {
        i: f"MeasurementError: flagged {PointStatus(int(st[i])).name.lower()} in column "
        f"{status!r} (data row {int(order[i]) + 1})"
        for i in np.nonzero(np.isin(st, (PointStatus.ERROR, PointStatus.TIMEOUT)))[0].tolist()
    }

    if domain is None:
        domain = _bounding_box(u, drives, path)
    else:
        if domain.dim != len(drives):
            raise ValueError(
                f"domain has {domain.dim} drives but {len(drives)} drive columns were given "
                f"({list(drives)}); give one bound per drive"
            )
        low, high = np.asarray(domain.low), np.asarray(domain.high)
        outside = ((u < low) | (u > high)).any(axis=1)
        if outside.any():
            i = int(np.argmax(outside))
            raise ValueError(
                f"{path}: drives {u[i].tolist()} of a measurement lie outside domain {domain}; "
                "widen the domain, or leave domain=None for the data's bounding box"
            )
    sampler: dict[str, Any] = {"kind": "measured"}
    if k:
        sampler["repeats"] = k  # the layout of Repeated: repeat_index() reads it
    device = {
        "name": name if name is not None else path.stem,
        "kind": "measured",
        "source": path.name,
        "sha256": sha256_hex(raw),
        "drives": list(drives),
        "outputs": list(outputs),
        "units": {c: units[c] for c in (*drives, *outputs) if c in units},
    }
    return SweepTable(
        u=u, y=y, status=st, errors=errors, domain=domain, device=device, sampler=sampler
    )


def _check_names(names: Sequence[str], what: str) -> list[str]:
    if isinstance(names, str) or not all(isinstance(c, str) for c in names):
        raise TypeError(f"{what} must be a list of column names such as ['V_gate'], got {names!r}")
    out = list(names)
    if not out:
        raise ValueError(f"{what} must name at least one column, got an empty list")
    dup = sorted({c for c in out if out.count(c) > 1})
    if dup:
        raise ValueError(f"{what} names columns {dup} more than once; list each column once")
    return out


def _unknown(column: str, available: Sequence[str], path: Path, kind: str) -> ValueError:
    close = difflib.get_close_matches(column, list(available), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ValueError(
        f"{path} has no {kind} {column!r}{hint} It has {list(available)}; pass those names "
        "as drives=/outputs= (names are case-sensitive)"
    )


def _read_csv(path: Path, raw: bytes, wanted: list[str], sep: str) -> dict[str, list[str]]:
    try:
        text = raw.decode("utf-8-sig")  # -sig: drop the byte-order mark spreadsheets write
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text ({exc}); export the CSV as UTF-8") from exc
    lines = text.splitlines()
    start = 0
    while start < len(lines) and (not lines[start].strip() or lines[start].startswith("#")):
        start += 1
    reader = csv.reader(io.StringIO("\n".join(lines[start:])), delimiter=sep)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise ValueError(f"{path} is empty: it needs a header row naming the columns") from None
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise ValueError(f"{path}: the header names columns {dup} more than once; rename them")
    for c in wanted:
        if c not in header:
            raise _unknown(c, header, path, "column")
    index = {c: header.index(c) for c in wanted}
    columns: dict[str, list[str]] = {c: [] for c in wanted}
    for row in reader:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line
        if len(row) != len(header):
            raise ValueError(
                f"{path} line {start + reader.line_num}: {len(row)} fields but the header has "
                f"{len(header)}; fix that line (a delimiter other than {sep!r}? pass delimiter=)"
            )
        for c, i in index.items():
            columns[c].append(row[i])
    return columns


def _read_hdf5(path: Path, wanted: list[str]) -> dict[str, list[Any]]:
    try:
        import h5py
    except ImportError as exc:
        raise ImportError(
            f"reading the HDF5 file {path} needs h5py, which is not installed: pip install "
            "'quasineuron[measured]' (or export the data as CSV, which needs nothing extra)"
        ) from exc
    with h5py.File(path, "r") as f:
        names: list[str] = []
        f.visit(lambda k: names.append(k) if isinstance(f[k], h5py.Dataset) else None)
        out = {}
        for c in wanted:
            if c not in names:
                raise _unknown(c, names, path, "dataset")
            out[c] = list(np.asarray(f[c][()]).reshape(-1))
    return _same_length(out, path)


def _read_netcdf(path: Path, wanted: list[str]) -> dict[str, list[Any]]:
    try:
        import xarray
    except ImportError as exc:
        raise ImportError(
            f"reading the NetCDF file {path} needs xarray and a NetCDF engine, which are not "
            "installed: pip install 'quasineuron[measured]' (or export the data as CSV, "
            "which needs nothing extra)"
        ) from exc
    with xarray.open_dataset(path) as ds:
        names = [str(k) for k in (*ds.data_vars, *ds.coords)]
        out = {}
        for c in wanted:
            if c not in names:
                raise _unknown(c, names, path, "variable")
            out[c] = list(np.asarray(ds[c].values).reshape(-1))
    return _same_length(out, path)


def _same_length(columns: dict[str, list[Any]], path: Path) -> dict[str, list[Any]]:
    sizes = {c: len(v) for c, v in columns.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(
            f"{path}: the variables hold different numbers of values {sizes}; each must hold "
            "one value per measurement"
        )
    return columns


def _numbers(values: Sequence[Any], column: str, path: Path) -> np.ndarray:
    try:  # fast path: plain numbers (and "nan"/"inf" spellings numpy parses itself)
        return np.asarray(values, dtype=np.float64).reshape(len(values))
    except (TypeError, ValueError):
        pass  # missing-value spellings or bad text: parse value by value to name the row
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        if isinstance(v, str):
            s = v.strip()
            if s.lower() in _MISSING:
                out[i] = math.nan
                continue
            try:
                out[i] = float(s)
            except ValueError:
                raise ValueError(
                    f"{path}: column {column!r}, data row {i + 1} holds {v!r}, which is not a "
                    "number; fix the value, or leave it empty to mark a missing measurement"
                ) from None
        else:
            try:
                out[i] = float(v)
            except (TypeError, ValueError):
                raise ValueError(
                    f"{path}: variable {column!r}, element {i} holds {v!r}, which is not a number"
                ) from None
    return out


def _show(v: Any) -> str:
    return v if isinstance(v, str) else repr(v)


def _statuses(values: Sequence[Any], column: str, path: Path) -> np.ndarray:
    codes = {int(s): s for s in PointStatus if s is not PointStatus.PENDING}
    out = np.empty(len(values), dtype=np.int8)
    for i, v in enumerate(values):
        key = v.strip().lower() if isinstance(v, str) else v
        if isinstance(key, str) and key in _STATUS_NAMES:
            out[i] = _STATUS_NAMES[key]
            continue
        try:
            f = float(key)
        except (TypeError, ValueError):
            f = math.nan
        if f in codes:
            out[i] = codes[int(f)]
            continue
        raise ValueError(
            f"{path}: status column {column!r}, data row {i + 1} holds {v!r}; use a PointStatus "
            f"code {sorted(codes)} or name {sorted(_STATUS_NAMES)}"
        )
    return out


def _repeat_layout(
    u: np.ndarray, rep: np.ndarray | None, column: str | None, path: Path
) -> tuple[np.ndarray, int]:
    """Row order that lays repeats out like ``Repeated``, and the repeat count (0: unequal).

    Returns:
        ``order`` (n,) indexing the file's rows, and ``k``: the number of repeats per point
        when it is the same ``k >= 2`` for all points, else 0 (the file order is kept).
    """
    n = len(u)
    keep = np.arange(n)
    if rep is not None:
        if not np.isfinite(rep).all() or (rep != np.round(rep)).any():
            i = int(np.argmax(~np.isfinite(rep) | (rep != np.round(rep))))
            raise ValueError(
                f"{path}: repeat column {column!r}, data row {i + 1} holds {float(rep[i])!r}; "
                "repeat numbers must be integers such as 0, 1, 2"
            )
        passes = np.unique(rep)
        first = {tuple(r) for r in u[rep == passes[0]].tolist()}
        for p in passes:
            rows = u[rep == p]
            got = {tuple(r) for r in rows.tolist()}
            if got != first or len(got) != len(rows):
                raise ValueError(
                    f"{path}: repeat {int(p)} (column {column!r}) does not measure the same "
                    f"drive values, each once, as repeat {int(passes[0])}; every repeat must "
                    "cover the same points (leave repeat=None to group rows by drive values)"
                )
        if len(passes) < 2:
            return keep, 0
        # stable sort: repeat by repeat, each in the order of the first repeat's points
        _, inv = np.unique(u, axis=0, return_inverse=True)
        first_pos = {int(inv[i]): j for j, i in enumerate(np.nonzero(rep == passes[0])[0])}
        key = np.array([first_pos[int(g)] for g in inv.reshape(-1)])
        order = np.lexsort((key, rep))
        return order, len(passes)
    _, inv, counts = np.unique(u, axis=0, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    k = int(counts[0])
    if k < 2 or (counts != k).any():
        return keep, 0
    # occurrence number of each row within its point, in file order
    occurrence = np.empty(n, dtype=np.int64)
    seen = np.zeros(len(counts), dtype=np.int64)
    first_row = np.full(len(counts), -1, dtype=np.int64)
    for i, g in enumerate(inv):
        occurrence[i] = seen[g]
        seen[g] += 1
        if first_row[g] < 0:
            first_row[g] = i
    # points ordered by first appearance, so repeat 0 keeps the file's order of points
    return np.lexsort((first_row[inv], occurrence)), k


def _bounding_box(u: np.ndarray, drives: Sequence[str], path: Path) -> Box:
    low, high = u.min(axis=0), u.max(axis=0)
    for i, c in enumerate(drives):
        if not low[i] < high[i]:
            raise ValueError(
                f"{path}: drive {c!r} takes the single value {float(low[i])!r}, so the data's "
                "bounding box is empty along it; pass domain=Box(...) explicitly, or drop that "
                "drive (a constant is not a drive)"
            )
    return Box(low=tuple(low.tolist()), high=tuple(high.tolist()))


class MeasuredOnly(AbstractDevice):
    """The stand-in for a device known only from measurements: its shape, domain and name.

    A network needs a device for its sizes and domain; a run built from measured data has no
    true device to call, so calling this one raises :class:`NoTrueDeviceError` (train and
    score through the twin instead).

    Args:
        table: The table :func:`load_measurements` returned.
    """

    differentiable = False

    def __init__(self, table: SweepTable) -> None:
        super().__init__()
        self.n_in = int(table.u.shape[1])
        self.n_out = int(table.y.shape[1])
        self.domain = table.domain
        self.name = str(table.device.get("name", "measured"))
        self._source = {
            k: table.device[k]
            for k in ("source", "sha256", "drives", "outputs", "units")
            if k in table.device
        }

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """Refuse: there is no true device behind measured data.

        Args:
            u: Drives, shape (batch, n_in).

        Raises:
            NoTrueDeviceError: Always.
        """
        raise NoTrueDeviceError(
            f"device {self.name!r} is known only from measurements ({self._source.get('source')}); "
            "there is no true device to evaluate: train with mode 'surrogate' and score the twin"
        )

    def describe(self) -> dict[str, Any]:
        """The device fields, ``kind: "measured data only"`` and the measurement file."""
        d = super().describe()
        d.update(kind="measured data only", measurements=dict(self._source))
        return d
