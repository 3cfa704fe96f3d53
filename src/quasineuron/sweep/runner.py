"""The sweep runner: evaluate a device on many points in batches, resumably.

One batch is one chunk of the store. Each batch is evaluated as a whole; if that raises, the
batch is evaluated point by point so that only the failing points are marked ERROR (with their
exception text), and points with NaN or inf outputs are marked NONFINITE. The sweep goes on,
unless ``strict=True``, which raises :class:`~quasineuron.errors.SimulationError` at the first
failing point instead.

With ``timeout=SECONDS`` the device runs in worker processes (see :class:`KillablePool`), also
for the default serial executor, because a call that hangs can only be interrupted from another
process. A batch of ``b`` points gets ``b * timeout`` seconds; if it runs past that, its worker
is killed and replaced and the batch is evaluated again point by point, each point with
``timeout`` seconds, so that only the points that hang are lost. They get status TIMEOUT and the
error text ``"TimeoutError: timed out after <timeout> s"``; the sweep goes on.
"""

from __future__ import annotations

import functools
import math
import numbers
import operator
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.std import tqdm

from quasineuron.devices.base import Box
from quasineuron.errors import DeviceContractError, SimulationError
from quasineuron.sweep.executors import (
    AbstractExecutor,
    KillablePool,
    ProcessExecutor,
    SerialExecutor,
    TimedOut,
    WorkerDied,
)
from quasineuron.sweep.sampling import AbstractSampler, Repeated
from quasineuron.sweep.store import PointStatus, SweepStore, SweepTable, make_manifest

__all__ = ["evaluate_points", "sweep"]


@dataclass(frozen=True)
class _BatchResult:
    """Outcome of one batch: y (b, n_out) float64, status (b,) int8, errors by point index."""

    y: np.ndarray
    status: np.ndarray
    errors: dict[int, str]


def _call(device: Any, u: torch.Tensor) -> np.ndarray:
    y = device(u)
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != (u.shape[0], device.n_out):
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise DeviceContractError(
            f"device {device.name!r} returned {got} for drives of shape {tuple(u.shape)}; "
            f"expected a tensor of shape ({u.shape[0]}, {device.n_out})"
        )
    if y.dtype != u.dtype:
        raise DeviceContractError(
            f"device {device.name!r} returned dtype {y.dtype} for drives of dtype {u.dtype}; "
            "a device must keep the dtype of its drives"
        )
    return y.detach().to(device="cpu", dtype=torch.float64).numpy()


def _point_error(device: Any, index: int, u: np.ndarray, what: str) -> SimulationError:
    return SimulationError(
        f"device {device.name!r} {what} at point {index} (u={u.tolist()}); pass strict=False "
        "to record failed points and go on"
    )


def _evaluate_batch(
    device: Any, dtype: torch.dtype, strict: bool, job: tuple[int, np.ndarray]
) -> _BatchResult:
    """Evaluate one batch; module-level so that worker processes can unpickle it.

    Args:
        device: The device.
        dtype: Floating dtype of the drives fed to the device.
        strict: Raise SimulationError at the first failing point.
        job: ``(start, u)``: global index of the first point and drives (b, n_in) float64.
    """
    start, u_np = job
    u = torch.as_tensor(u_np, dtype=dtype)
    b = u.shape[0]
    status = np.full(b, PointStatus.OK, dtype=np.int8)
    errors: dict[int, str] = {}
    with torch.no_grad():
        try:
            y = _call(device, u)
        except DeviceContractError:
            raise
        except Exception:
            # Isolate the failing points; this per-point loop runs only for failed batches.
            y = np.full((b, device.n_out), np.nan)
            for i in range(b):
                try:
                    y[i] = _call(device, u[i : i + 1])[0]
                except DeviceContractError:
                    raise
                except Exception as exc:
                    if strict:
                        raise _point_error(
                            device, start + i, u_np[i], f"raised {type(exc).__name__}: {exc}"
                        ) from exc
                    status[i] = PointStatus.ERROR
                    errors[start + i] = f"{type(exc).__name__}: {exc}"
    nonfinite = ~np.isfinite(y).all(axis=1) & (status == PointStatus.OK)
    if strict and nonfinite.any():
        i = int(np.flatnonzero(nonfinite)[0])
        raise _point_error(device, start + i, u_np[i], f"returned non-finite {y[i].tolist()}")
    status[nonfinite] = PointStatus.NONFINITE
    return _BatchResult(y=y, status=status, errors=errors)


class _Sink(Protocol):
    n_points: int
    batch_size: int
    n_chunks: int

    def chunk_slice(self, chunk: int) -> slice: ...

    def done(self) -> dict[int, int]: ...

    def write(self, chunk: int, result: _BatchResult, u: np.ndarray) -> None: ...

    def table(self) -> SweepTable: ...


class _StoreSink:
    """Writes batch results into a :class:`SweepStore`."""

    def __init__(self, store: SweepStore) -> None:
        self.store = store
        self.n_points, self.batch_size, self.n_chunks = (
            store.n_points,
            store.batch_size,
            store.n_chunks,
        )
        self.chunk_slice = store.chunk_slice

    def done(self) -> dict[int, int]:
        """Committed chunk → number of failed points in it."""
        return {
            c: (self.chunk_slice(c).stop - self.chunk_slice(c).start) - rec["n_ok"]
            for c, rec in self.store.read_commits().items()
        }

    def write(self, chunk: int, result: _BatchResult, u: np.ndarray) -> None:
        self.store.write_chunk(chunk, result.y, result.status, result.errors, u=u)

    def table(self) -> SweepTable:
        return self.store.read_table()


class _MemorySink:
    """Collects batch results in memory."""

    def __init__(self, u: np.ndarray, n_out: int, batch_size: int, meta: dict[str, Any]) -> None:
        self.u = u
        self.n_points, self.batch_size = len(u), batch_size
        self.n_chunks = -(-self.n_points // batch_size)
        self.y = np.full((self.n_points, n_out), np.nan)
        self.status = np.full(self.n_points, PointStatus.PENDING, dtype=np.int8)
        self.errors: dict[int, str] = {}
        self.meta = meta

    def chunk_slice(self, chunk: int) -> slice:
        return slice(chunk * self.batch_size, min((chunk + 1) * self.batch_size, self.n_points))

    def done(self) -> dict[int, int]:
        return {}

    def write(self, chunk: int, result: _BatchResult, u: np.ndarray) -> None:
        sl = self.chunk_slice(chunk)
        self.y[sl], self.status[sl] = result.y, result.status
        self.errors.update(result.errors)

    def table(self) -> SweepTable:
        return SweepTable(u=self.u, y=self.y, status=self.status, errors=self.errors, **self.meta)


def _check_device(device: Any) -> None:
    name = type(device).__name__
    for attr in ("n_in", "n_out"):
        val = getattr(device, attr, None)
        if not isinstance(val, int) or val < 1:
            raise DeviceContractError(f"{name}.{attr} must be a positive int, got {val!r}")
    domain = getattr(device, "domain", None)
    if not isinstance(domain, Box) or domain.dim != device.n_in:
        raise DeviceContractError(
            f"{name}.domain must be a Box with {device.n_in} bounds, got {domain!r}"
        )
    if not callable(device) or not callable(getattr(device, "describe", None)):
        raise DeviceContractError(
            f"{name} must be callable and have describe(); subclass quasineuron.AbstractDevice"
        )


def _check_timeout(timeout: Any, executor: AbstractExecutor) -> float | None:
    if timeout is None:
        return None
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, numbers.Real)
        or not (0 < float(timeout) < math.inf)
    ):
        raise ValueError(
            f"timeout must be a positive number of seconds per point, or None for no limit, "
            f"got {timeout!r}"
        )
    if not isinstance(executor, (SerialExecutor, ProcessExecutor)):
        raise ValueError(
            f"timeout works with SerialExecutor or ProcessExecutor (whose worker processes can "
            f"be killed), not {type(executor).__name__}; pass timeout=None or use "
            "ProcessExecutor(n_workers=...)"
        )
    return float(timeout)


def _check_options(batch_size: Any, dtype: Any, executor: Any) -> AbstractExecutor:
    try:
        bs = operator.index(batch_size)
    except TypeError:
        raise TypeError(f"batch_size must be a positive int, got {batch_size!r}") from None
    if bs < 1:
        raise ValueError(f"batch_size must be >= 1, got {bs}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(
            f"dtype must be a floating torch.dtype such as torch.float64, got {dtype!r}"
        )
    if executor is None:
        return SerialExecutor()
    if not isinstance(executor, AbstractExecutor):
        raise TypeError(
            f"executor must be an AbstractExecutor such as SerialExecutor() or "
            f"ProcessExecutor(n_workers=2), got {executor!r}"
        )
    return executor


def _as_evaluated(u: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    """The drives as the device sees them: rounded to ``dtype``, then held as float64."""
    return torch.as_tensor(u, dtype=torch.float64).to(dtype).to(torch.float64).numpy()


def _failed_point(
    device: Any, index: int, u: np.ndarray, outcome: Any, timeout: float, strict: bool
) -> tuple[int, str]:
    """Status and error text of a point whose worker timed out or died."""
    if isinstance(outcome, TimedOut):
        status, text = PointStatus.TIMEOUT, f"TimeoutError: timed out after {timeout:g} s"
    else:
        status, text = PointStatus.ERROR, f"{type(outcome).__name__}: {outcome}"
    if strict:
        raise _point_error(device, index, u, text.removeprefix("TimeoutError: "))
    return status, text


def _map_with_timeout(
    device: Any,
    fn: Any,
    jobs: Iterator[tuple[int, tuple[int, np.ndarray]]],
    *,
    timeout: float,
    executor: AbstractExecutor,
    strict: bool,
) -> Iterator[tuple[int, _BatchResult]]:
    """Like ``executor.map_unordered(fn, jobs)``, killing calls that run past their budget.

    A batch that times out (or whose worker dies) is evaluated again point by point, each
    point with ``timeout`` seconds, so only the points that hang (or crash) fail.
    """
    if isinstance(executor, ProcessExecutor):
        n_workers, threads = executor.n_workers, executor.threads_per_worker
        limit = executor.max_in_flight or 2 * n_workers
    else:  # serial: one worker, with torch's default threads as in this process
        n_workers, threads, limit = 1, None, 2
    pool = KillablePool(fn, n_workers, threads)
    args: dict[int, tuple[int, np.ndarray]] = {}  # chunk -> (start, u) while in flight
    parts: dict[int, tuple[_BatchResult, list[int]]] = {}  # chunk -> (partial, points left)
    it = iter(jobs)
    exhausted = False
    try:
        while True:
            while not exhausted and pool.n_busy < limit:
                nxt = next(it, None)
                if nxt is None:
                    exhausted = True
                    break
                chunk, (start, u_c) = nxt
                args[chunk] = (start, u_c)
                pool.submit((chunk, -1), (start, u_c), timeout * len(u_c))
            finished = pool.wait()
            if not finished:
                return
            for (chunk, i), outcome in finished:
                start, u_c = args[chunk]
                if isinstance(outcome, Exception) and not isinstance(outcome, WorkerDied):
                    raise outcome  # the device broke the contract, or strict mode
                if i < 0 and isinstance(outcome, _BatchResult):
                    del args[chunk]
                    yield chunk, outcome
                elif i < 0 and len(u_c) > 1:  # isolate the points that hang
                    b = len(u_c)
                    partial = _BatchResult(
                        y=np.full((b, device.n_out), np.nan),
                        status=np.full(b, PointStatus.OK, dtype=np.int8),
                        errors={},
                    )
                    parts[chunk] = (partial, [b])
                    for j in range(b):
                        pool.submit((chunk, j), (start + j, u_c[j : j + 1]), timeout)
                else:
                    j = max(i, 0)
                    if i < 0:  # a one-point batch: nothing to isolate
                        parts[chunk] = (
                            _BatchResult(
                                y=np.full((1, device.n_out), np.nan),
                                status=np.full(1, PointStatus.OK, dtype=np.int8),
                                errors={},
                            ),
                            [1],
                        )
                    partial, left = parts[chunk]
                    if isinstance(outcome, _BatchResult):
                        partial.y[j] = outcome.y[0]
                        partial.status[j] = outcome.status[0]
                        partial.errors.update(outcome.errors)
                    else:
                        code, text = _failed_point(
                            device, start + j, u_c[j], outcome, timeout, strict
                        )
                        partial.status[j] = code
                        partial.errors[start + j] = text
                    left[0] -= 1
                    if left[0] == 0:
                        del parts[chunk], args[chunk]
                        yield chunk, partial
    finally:
        pool.close()


def _run(
    device: Any,
    u: np.ndarray,
    sink: _Sink,
    *,
    executor: AbstractExecutor,
    strict: bool,
    progress: bool,
    dtype: torch.dtype,
    timeout: float | None = None,
) -> SweepTable:
    done = sink.done()
    todo = [c for c in range(sink.n_chunks) if c not in done]
    n_done = sum(sink.chunk_slice(c).stop - sink.chunk_slice(c).start for c in done)
    failed = sum(done.values())
    fn = functools.partial(_evaluate_batch, device, dtype, strict)

    def jobs() -> Iterator[tuple[int, tuple[int, np.ndarray]]]:
        for c in todo:
            sl = sink.chunk_slice(c)
            yield c, (sl.start, u[sl])

    if timeout is None:
        results = executor.map_unordered(fn, jobs())
    else:
        results = _map_with_timeout(
            device, fn, jobs(), timeout=timeout, executor=executor, strict=strict
        )
    with tqdm(
        total=sink.n_points,
        initial=n_done,
        unit="pt",
        desc=f"sweep {getattr(device, 'name', 'device')}",
        disable=not progress,
        dynamic_ncols=True,
    ) as bar:
        bar.set_postfix(failed=failed)
        for chunk, result in results:
            sink.write(chunk, result, u[sink.chunk_slice(chunk)])
            failed += int((result.status != PointStatus.OK).sum())
            bar.update(len(result.status))
            bar.set_postfix(failed=failed)
    return sink.table()


def sweep(
    device: Any,
    sampler: AbstractSampler,
    *,
    store: str | os.PathLike[str] | None = None,
    batch_size: int = 256,
    executor: AbstractExecutor | None = None,
    strict: bool = False,
    progress: bool = True,
    dtype: torch.dtype = torch.float64,
    overwrite: bool = False,
    timeout: float | None = None,
    repair: bool = False,
    repeats: int = 1,
) -> SweepTable:
    """Evaluate ``device`` at every point ``sampler`` draws from ``device.domain``.

    With a ``store``, every batch is written to its own chunk as soon as it completes and then
    committed, so a sweep that is interrupted (even by SIGKILL) and called again with the same
    arguments skips the committed chunks and ends with exactly the uninterrupted result.

    Args:
        device: The device (an ``AbstractDevice``): u (batch, n_in) → y (batch, n_out).
        sampler: Expands ``device.domain`` into points (n_points, n_in).
        store: Folder for the on-disk table (created if missing, resumed if it holds this
            sweep); ``None`` evaluates in memory.
        batch_size: Points per device call, and per chunk of the store.
        executor: Where batches run; default :class:`SerialExecutor`.
        strict: Raise at the first failing point instead of recording it.
        progress: Show a tqdm progress bar (points done / total, failures).
        dtype: Floating dtype of the drives fed to the device; results are stored as float64.
        overwrite: Replace a store at ``store`` that was made for another sweep (or is
            corrupt) instead of refusing it.
        timeout: Seconds one point may take (a batch of ``b`` points gets ``b * timeout``);
            None (the default) for no limit. Points past it get status TIMEOUT and the sweep
            goes on. With a timeout the device always runs in worker processes (one for the
            serial executor), since only another process can interrupt a hung call.
        repair: Before resuming, drop the commit records of committed chunks whose files are
            missing or damaged, so that they are recomputed (a warning names each), instead
            of raising IntegrityError.
        repeats: Evaluations of every sampler point (>= 1). With ``k > 1`` the table holds
            ``k`` copies of the sampler's points one after the other (row ``r * n + i`` is
            repeat ``r`` of point ``i``; see :class:`Repeated`), its ``sampler`` description
            records ``"repeats": k``, and a store made with another ``repeats`` is refused
            on resume. ``fit_surrogate`` fits the mean of the repeats and reports the
            device's noise floor from their spread.

    Returns:
        The table: drives (n_points, n_in), outputs (n_points, n_out), per-point status.

    Raises:
        DeviceContractError: If the device lacks the contract's attributes or returns the
            wrong shape or dtype.
        SimulationError: With ``strict=True``, at the first point that raises or gives
            non-finite outputs; committed chunks stay in the store.
        StoreMismatchError: If ``store`` holds a sweep of another device, domain, sampler,
            dtype or batch size and ``overwrite`` is false.
        IntegrityError: If a committed chunk of ``store`` (or its manifest) is missing or
            damaged and ``repair`` is false; the message names the file.
        StoreCorruptError: If ``store`` cannot be read consistently.
        ValueError: If ``timeout`` is not positive, or is given with an executor other
            than SerialExecutor or ProcessExecutor, or ``repeats`` is not an int >= 1.
    """
    _check_device(device)
    executor = _check_options(batch_size, dtype, executor)
    timeout = _check_timeout(timeout, executor)
    if not isinstance(sampler, AbstractSampler):
        raise TypeError(
            f"sampler must be an AbstractSampler such as Grid(n=11) or Sobol(n=256, seed=0), "
            f"got {sampler!r}"
        )
    if isinstance(repeats, bool) or not isinstance(repeats, numbers.Integral) or repeats < 1:
        raise ValueError(
            f"repeats must be an int >= 1 (evaluations per point), got {repeats!r}; use "
            "repeats=1 for one evaluation per point"
        )
    if repeats > 1:
        if isinstance(sampler, Repeated):
            raise ValueError(
                f"the sampler is already Repeated({sampler.repeats}); pass repeats only once"
            )
        sampler = Repeated(sampler, int(repeats))
    u = _as_evaluated(sampler.points(device.domain), dtype)
    description = device.describe()
    sink: _Sink
    if store is None:
        meta = {"domain": device.domain, "device": description, "sampler": sampler.describe()}
        sink = _MemorySink(u, device.n_out, batch_size, meta)
    else:
        manifest = make_manifest(
            device=description,
            domain=device.domain,
            sampler=sampler.describe(),
            dtype=dtype,
            n_points=len(u),
            n_in=device.n_in,
            n_out=device.n_out,
            batch_size=batch_size,
        )
        opened = SweepStore.open_or_create(store, manifest, u, overwrite=overwrite, repair=repair)
        try:
            return _run(
                device,
                u,
                _StoreSink(opened),
                executor=executor,
                strict=strict,
                progress=progress,
                dtype=dtype,
                timeout=timeout,
            )
        finally:
            opened.close()
    return _run(
        device,
        u,
        sink,
        executor=executor,
        strict=strict,
        progress=progress,
        dtype=dtype,
        timeout=timeout,
    )


def evaluate_points(
    device: Any,
    u: np.ndarray,
    *,
    batch_size: int = 256,
    executor: AbstractExecutor | None = None,
    strict: bool = False,
    progress: bool = False,
    dtype: torch.dtype = torch.float64,
    timeout: float | None = None,
) -> SweepTable:
    """Evaluate ``device`` at given drives, in memory (e.g. to refine a surrogate).

    Args:
        device: The device: u (batch, n_in) → y (batch, n_out).
        u: Drives, array of shape (n_points, n_in).
        batch_size: Points per device call.
        executor: Where batches run; default :class:`SerialExecutor`.
        strict: Raise at the first failing point instead of recording it.
        progress: Show a tqdm progress bar.
        dtype: Floating dtype of the drives fed to the device.
        timeout: Seconds one point may take, as for :func:`sweep`; None for no limit.

    Returns:
        The table of ``u`` (rounded to ``dtype``), outputs and per-point status.

    Raises:
        ValueError: If ``u`` is not a finite array of shape (n_points, device.n_in).
    """
    _check_device(device)
    executor = _check_options(batch_size, dtype, executor)
    timeout = _check_timeout(timeout, executor)
    arr = np.asarray(u.detach().cpu() if isinstance(u, torch.Tensor) else u, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != device.n_in:
        raise ValueError(
            f"u must have shape (n_points, {device.n_in}) for device {device.name!r}, got "
            f"{arr.shape}"
        )
    if not np.isfinite(arr).all():
        raise ValueError("u must be finite; drop or replace the NaN/inf rows")
    arr = _as_evaluated(arr, dtype)
    meta = {
        "domain": device.domain,
        "device": device.describe(),
        "sampler": {"kind": "points", "n": len(arr)},
    }
    sink = _MemorySink(arr, device.n_out, batch_size, meta)
    return _run(
        device,
        arr,
        sink,
        executor=executor,
        strict=strict,
        progress=progress,
        dtype=dtype,
        timeout=timeout,
    )
