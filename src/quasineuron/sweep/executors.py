"""Executors: where a sweep's batches are evaluated.

An executor maps one function over numbered work items and yields ``(index, result)`` pairs
*as they complete*, in any order. The sweep runner writes each result to its own chunk, so the
order of completion never matters, for the result or for resuming.

- :class:`SerialExecutor` (the default) runs in the calling process, in order.
- :class:`AutoExecutor` starts in the calling process and moves to worker processes only once
  the work has proved long enough to pay for starting them (what ``workers=N`` means in
  ``characterize`` and on the command line).
- :class:`ProcessExecutor` runs in ``n_workers`` fresh processes (``spawn`` start method, so it
  behaves the same on every OS and never forks a process holding torch threads). The function,
  usually a device bound into a ``functools.partial``, is pickled **once per worker** through
  the pool initializer, not once per batch: the device must be picklable, so its code must live
  in an importable module (not in ``__main__`` of an interactive session, nor in a lambda).

A Dask executor fits the same interface as one more class (:mod:`quasineuron.sweep.dask`).

Worker processes started here die with the process that started them: on Linux each worker
asks the kernel for SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``), and on every
OS a watchdog thread in the worker exits once its parent process is gone. So killing a sweep
(even with SIGKILL) leaves no worker running on.

:class:`KillablePool` is what ``sweep(..., timeout=...)`` runs on: one pipe per worker, so a
worker stuck in a device call past its budget can be killed and replaced alone.
"""

from __future__ import annotations

import abc
import concurrent.futures as cf
import contextlib
import ctypes
import math
import multiprocessing
import multiprocessing.connection as mpc
import operator
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = [
    "AbstractExecutor",
    "AutoExecutor",
    "KillablePool",
    "ProcessExecutor",
    "SerialExecutor",
]

T = TypeVar("T")
R = TypeVar("R")


class AbstractExecutor(abc.ABC):
    """Maps a function over numbered items, yielding results as they complete."""

    @abc.abstractmethod
    def map_unordered(
        self, fn: Callable[[T], R], items: Iterable[tuple[int, T]]
    ) -> Iterator[tuple[int, R]]:
        """Apply ``fn`` to every item.

        Args:
            fn: The function; for out-of-process executors it must be picklable.
            items: Pairs ``(index, argument)``; consumed lazily, so a long sweep never holds
                all its arguments at once.

        Yields:
            ``(index, fn(argument))`` for every item, in order of completion. An exception
            raised by ``fn`` propagates out of the iteration.
        """

    def describe(self) -> dict[str, Any]:
        """JSON-ready description (not part of a sweep's identity)."""
        return {"kind": type(self).__name__}


@dataclass(frozen=True)
class SerialExecutor(AbstractExecutor):
    """Evaluate in the calling process, one item after another."""

    def map_unordered(
        self, fn: Callable[[T], R], items: Iterable[tuple[int, T]]
    ) -> Iterator[tuple[int, R]]:
        """Apply ``fn`` to every item in order; see :meth:`AbstractExecutor.map_unordered`."""
        for index, arg in items:
            yield index, fn(arg)


# The function a worker process applies, set once per worker by the pool initializer so the
# (possibly large) device is pickled once per worker instead of once per batch. It only ever
# lives inside the worker processes this module starts.
_WORKER_FN: Callable[[Any], Any] | None = None


_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# How often the fallback watchdog looks for its parent: a worker outlives a killed sweep by
# at most this long where PR_SET_PDEATHSIG is unavailable (macOS, or prctl refused).
_WATCHDOG_PERIOD_S = 0.5


def die_with_parent(parent_pid: int) -> None:
    """Make this (worker) process end when the process ``parent_pid`` that started it dies.

    On Linux the kernel sends SIGKILL on the parent's death (``PR_SET_PDEATHSIG``); a daemon
    thread also exits the process once ``os.getppid()`` no longer is ``parent_pid`` (the worker
    was re-parented to init or a subreaper), which covers other systems and the race of a
    parent dying before the ``prctl`` call.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(_WATCHDOG_PERIOD_S)
        os._exit(1)

    threading.Thread(target=watch, name="quasineuron-parent-watchdog", daemon=True).start()


def _init_worker(fn: Callable[[Any], Any], threads: int | None, parent_pid: int) -> None:
    global _WORKER_FN
    die_with_parent(parent_pid)
    _WORKER_FN = fn
    if threads is not None:
        import torch

        # n_workers processes each using every core would oversubscribe the machine.
        torch.set_num_threads(threads)


def _call_worker_fn(arg: Any) -> Any:
    if _WORKER_FN is None:  # pragma: no cover - initializer always runs first
        raise RuntimeError("worker function was not initialised")
    return _WORKER_FN(arg)


@dataclass(frozen=True)
class ProcessExecutor(AbstractExecutor):
    """Evaluate in a pool of ``n_workers`` spawned processes.

    Starting a worker costs an interpreter plus ``import torch`` (about a second); use it for
    devices whose batches take clearly longer than that.

    Args:
        n_workers: Number of worker processes.
        threads_per_worker: ``torch.set_num_threads`` in each worker; ``None`` leaves
            torch's default (all cores per worker).
        max_in_flight: Items submitted ahead of completion; default ``2 * n_workers``.
    """

    n_workers: int
    threads_per_worker: int | None = 1
    max_in_flight: int | None = None

    def __post_init__(self) -> None:
        for name in ("n_workers", "threads_per_worker", "max_in_flight"):
            value = getattr(self, name)
            if value is None and name != "n_workers":
                continue
            try:
                v = operator.index(value)
            except TypeError:
                raise TypeError(
                    f"ProcessExecutor.{name} must be a positive int, got {value!r}"
                ) from None
            if v < 1:
                raise ValueError(
                    f"ProcessExecutor.{name} must be >= 1, got {v}; use SerialExecutor() to "
                    "evaluate in this process"
                )

    def map_unordered(
        self, fn: Callable[[T], R], items: Iterable[tuple[int, T]]
    ) -> Iterator[tuple[int, R]]:
        """Apply ``fn`` in worker processes; see :meth:`AbstractExecutor.map_unordered`."""
        limit = self.max_in_flight or 2 * self.n_workers
        pool = cf.ProcessPoolExecutor(
            max_workers=self.n_workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(fn, self.threads_per_worker, os.getpid()),
        )
        pending: dict[cf.Future[Any], int] = {}
        it = iter(items)
        try:
            exhausted = False
            while True:
                while not exhausted and len(pending) < limit:
                    nxt = next(it, None)
                    if nxt is None:
                        exhausted = True
                        break
                    pending[pool.submit(_call_worker_fn, nxt[1])] = nxt[0]
                if not pending:
                    return
                done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    index = pending.pop(fut)
                    yield index, fut.result()
        finally:
            # Every yielded result is already in hand; not waiting for the workers' interpreter
            # teardown (seconds with torch loaded) lets the sweep return at once.
            pool.shutdown(wait=False, cancel_futures=True)

    def describe(self) -> dict[str, Any]:
        """JSON-ready description."""
        return {
            "kind": "ProcessExecutor",
            "n_workers": self.n_workers,
            "threads_per_worker": self.threads_per_worker,
        }


#: CPU seconds one worker needs to start: a spawned interpreter, ``import torch`` and the
#: unpickled device's modules (``import torch`` alone is ~1.7 s on 2 quiet cores). Measured
#: with bench/bench_workers.py: 2 workers took 7.2 s to their first result on 2 cores with a
#: load average of 6, i.e. ~1.8 s each once the sharing of the cores is divided out.
PROCESS_START_S = 2.0
#: Mean seconds per batch below which workers never start: pickling a 4096-point batch and its
#: result, the pipe and waking the pool cost ~23 ms per batch on 2 loaded cores (same bench),
#: and 2 workers only save half of a batch's time.
MIN_BATCH_S = 0.05


def estimate_start_s(n_workers: int) -> float:
    """Seconds until ``n_workers`` fresh workers answer, on this machine as loaded now.

    Each worker needs about :data:`PROCESS_START_S` of CPU; the workers share the cores with
    each other and with what else runs: the 1-minute load average less this busy process,
    so ``PROCESS_START_S * max(1, (n_workers + load - 1) / cores)``. This matched 2.6 s
    against 2.15 s measured at load 1.6, and 7.0 s against 7.2 s at load 6.
    """
    cores = os.cpu_count() or 1
    try:
        others = max(0.0, os.getloadavg()[0] - 1.0)
    except (OSError, AttributeError):  # not available on Windows
        others = 0.0
    return PROCESS_START_S * max(1.0, (n_workers + others) / cores)


@dataclass(frozen=True)
class AutoExecutor(AbstractExecutor):
    """Worker processes only where they pay: start here, move out once the work proves long.

    Batches first run in the calling process, timed. When the time spent here reaches twice
    the cost of starting the workers (``start_cost_s``, by default estimated from this
    machine's cores and load, see :func:`estimate_start_s`) and a batch takes longer than
    ``min_batch_s``, the remaining batches go to a :class:`ProcessExecutor`.

    Why twice: 2 workers only halve the remaining time, so they pay once a sweep's serial time
    W exceeds start + W / 2, i.e. W > 2 * start. A sweep shorter than that never starts a
    process (``workers=2`` on a cheap formula device is otherwise ~50x slower), and switching at
    2 * start costs at most 1.5x the better of the two choices made in hindsight (the
    rent-or-buy argument; 2x with a switch at 1 * start). Results and the store are the same
    either way: every batch is written to its own chunk, whichever process computed it.

    Args:
        n_workers: Worker processes once the work has proved long.
        threads_per_worker: ``torch.set_num_threads`` in each worker (see ``ProcessExecutor``).
        start_cost_s: Seconds the workers take to start; ``None`` estimates it when the sweep
            starts. Workers start after ``2 * start_cost_s`` in this process (0: after the
            first batch).
        min_batch_s: Mean seconds per batch below which workers never start.
        on_decision: Called once, at the end or at the switch, with a one-line account and a
            JSON-ready dict (``mode``: ``"serial"`` or ``"processes"``, with the timings).
    """

    n_workers: int
    threads_per_worker: int | None = 1
    start_cost_s: float | None = None
    min_batch_s: float = MIN_BATCH_S
    on_decision: Callable[[str, dict[str, Any]], None] | None = field(
        default=None, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        ProcessExecutor(self.n_workers, self.threads_per_worker)  # same checks, same messages
        for name in ("start_cost_s", "min_batch_s"):
            value = getattr(self, name)
            if value is None and name == "start_cost_s":
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not (0 <= value < math.inf)
            ):
                raise ValueError(
                    f"AutoExecutor.{name} must be a finite number of seconds >= 0, got "
                    f"{value!r}; 0 starts the workers after the first batch"
                )

    def map_unordered(
        self, fn: Callable[[T], R], items: Iterable[tuple[int, T]]
    ) -> Iterator[tuple[int, R]]:
        """Apply ``fn`` here, then in workers once it pays; see ``AbstractExecutor``."""
        start = self.start_cost_s
        if start is None:
            start = estimate_start_s(self.n_workers)
        it = iter(items)
        n_done, spent = 0, 0.0
        for index, arg in it:
            t0 = time.perf_counter()
            out = fn(arg)
            spent += time.perf_counter() - t0
            n_done += 1
            yield index, out
            if spent >= 2 * start and spent / n_done > self.min_batch_s:
                self._decide("processes", n_done, spent, start)
                yield from ProcessExecutor(self.n_workers, self.threads_per_worker).map_unordered(
                    fn, it
                )
                return
        self._decide("serial", n_done, spent, start)

    def _decide(self, mode: str, n_done: int, spent: float, start: float) -> None:
        if self.on_decision is None:
            return
        per = spent / n_done if n_done else 0.0
        info: dict[str, Any] = {
            "mode": mode,
            "n_workers": self.n_workers,
            "batches_in_process": n_done,
            "in_process_s": spent,
            "batch_s": per,
            "start_cost_s": start,
        }
        if mode == "serial":
            line = (
                f"ran serially in this process: {n_done} batches took {spent:.3g} s, too short "
                f"to gain from {self.n_workers} worker processes that take ~{start:.2g} s to "
                "start (force them with --force-workers / force_workers=True)"
            )
        else:
            line = (
                f"moved to {self.n_workers} worker processes after {n_done} batches took "
                f"{spent:.3g} s in this process ({per:.3g} s per batch)"
            )
        self.on_decision(line, info)

    def describe(self) -> dict[str, Any]:
        """JSON-ready description."""
        return {
            "kind": "AutoExecutor",
            "n_workers": self.n_workers,
            "threads_per_worker": self.threads_per_worker,
            "start_cost_s": self.start_cost_s,
            "min_batch_s": self.min_batch_s,
        }


# -- a pool whose workers can be killed one at a time -------------------------------------------


def _killable_worker(
    conn: mpc.Connection, fn: Callable[[Any], Any], threads: int | None, parent_pid: int
) -> None:
    """Worker loop: announce readiness, then answer ``(key, arg)`` with ``(key, ok, value)``."""
    die_with_parent(parent_pid)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    conn.send(("ready", True, None))
    while True:
        try:
            key, arg = conn.recv()
        except EOFError:  # the parent closed the pipe: the pool is shutting down
            return
        try:
            out: tuple[Any, bool, Any] = (key, True, fn(arg))
        except Exception as exc:
            out = (key, False, exc)
        try:
            conn.send(out)
        except Exception as exc:  # an unpicklable result or exception: send its text
            conn.send((key, False, RuntimeError(f"{type(exc).__name__}: {exc}")))


class TimedOut:
    """Outcome of a job that ran past its budget; its worker was killed."""

    def __repr__(self) -> str:
        return "TimedOut()"


class WorkerDied(RuntimeError):
    """A worker process ended while running a job (a crash, or killed from outside)."""


class _Worker:
    def __init__(self, ctx: Any, fn: Any, threads: int | None) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(
            target=_killable_worker, args=(child, fn, threads, os.getpid()), daemon=True
        )
        self.proc.start()
        child.close()
        self.ready = False
        self.job: tuple[Any, float] | None = None  # (key, deadline)

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.proc.kill()
            self.proc.join(5)
        self.conn.close()


class KillablePool:
    """``n_workers`` spawned processes, each running ``fn`` on one job at a time, with budgets.

    Unlike a ``ProcessPoolExecutor``, a worker that runs past its job's budget is killed and
    replaced on its own, and the others go on. A budget starts when the job is handed to a
    ready worker, so a worker's start (an interpreter and ``import torch``) never counts.

    Args:
        fn: Picklable function applied to each job's argument; pickled once per worker.
        n_workers: Number of worker processes.
        threads_per_worker: ``torch.set_num_threads`` in each worker; None leaves the default.
    """

    def __init__(
        self, fn: Callable[[Any], Any], n_workers: int, threads_per_worker: int | None = 1
    ) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self._fn, self._threads = fn, threads_per_worker
        self._workers = [_Worker(self._ctx, fn, threads_per_worker) for _ in range(n_workers)]
        self._queue: list[tuple[Any, Any, float]] = []  # (key, arg, budget) not yet handed out

    def submit(self, key: Any, arg: Any, budget: float | None) -> None:
        """Queue ``fn(arg)``, to be killed after ``budget`` seconds (None: no limit)."""
        self._queue.append((key, arg, math.inf if budget is None else budget))

    @property
    def n_busy(self) -> int:
        """Jobs queued or running."""
        return len(self._queue) + sum(w.job is not None for w in self._workers)

    def _dispatch(self) -> None:
        for w in self._workers:
            if self._queue and w.ready and w.job is None:
                key, arg, budget = self._queue.pop(0)
                w.conn.send((key, arg))
                w.job = (key, time.monotonic() + budget)

    def _replace(self, w: _Worker) -> None:
        w.kill()
        self._workers[self._workers.index(w)] = _Worker(self._ctx, self._fn, self._threads)

    def wait(self) -> list[tuple[Any, Any]]:
        """Block until at least one job finishes; return ``(key, outcome)`` pairs.

        The outcome is the function's value, the exception it raised (an instance of
        ``Exception``), :class:`TimedOut`, or :class:`WorkerDied`.
        """
        out: list[tuple[Any, Any]] = []
        while not out:
            self._dispatch()
            if not self._queue and all(w.job is None for w in self._workers):
                return out
            now = time.monotonic()
            deadlines = [w.job[1] for w in self._workers if w.job is not None]
            wait_s = max(0.0, min(deadlines) - now) if deadlines else None
            if wait_s is not None and not math.isfinite(wait_s):
                wait_s = None
            objs: list[Any] = [w.conn for w in self._workers]
            objs += [w.proc.sentinel for w in self._workers]
            ready = set(mpc.wait(objs, timeout=wait_s))
            now = time.monotonic()
            for w in list(self._workers):
                if w.conn in ready:
                    try:
                        key, ok, value = w.conn.recv()
                    except (EOFError, OSError):
                        pass  # it died; handled through its sentinel below
                    else:
                        if key == "ready":
                            w.ready = True
                        else:
                            w.job = None
                            out.append((key, value))
                            continue
                if w.proc.sentinel in ready and not w.proc.is_alive():
                    if w.job is not None:
                        out.append(
                            (
                                w.job[0],
                                WorkerDied(
                                    f"worker process ended with exit code {w.proc.exitcode} while "
                                    "evaluating; the device crashed it or it was killed"
                                ),
                            )
                        )
                    elif not w.ready:
                        self.close()
                        raise WorkerDied(
                            f"a worker process ended with exit code {w.proc.exitcode} before it "
                            "was ready; the device could not be unpickled in a fresh process "
                            "(define it in an importable module, not in __main__ or a lambda)"
                        )
                    self._replace(w)
                elif w.job is not None and now >= w.job[1]:
                    out.append((w.job[0], TimedOut()))
                    self._replace(w)
        return out

    def close(self) -> None:
        """Kill every worker (results in hand are kept by the caller)."""
        for w in self._workers:
            w.kill()
        self._workers = []
