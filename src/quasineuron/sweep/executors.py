"""Executors: where a sweep's batches are evaluated.

An executor maps one function over numbered work items and yields ``(index, result)`` pairs
*as they complete*, in any order. The sweep runner writes each result to its own chunk, so the
order of completion never matters, for the result or for resuming.

- :class:`SerialExecutor` (the default) runs in the calling process, in order.
- :class:`ProcessExecutor` runs in ``n_workers`` fresh processes (``spawn`` start method, so it
  behaves the same on every OS and never forks a process holding torch threads). The function,
  usually a device bound into a ``functools.partial``, is pickled **once per worker** through
  the pool initializer, not once per batch: the device must be picklable, so its code must live
  in an importable module (not in ``__main__`` of an interactive session, nor in a lambda).

A Dask executor fits the same interface as one more class: scatter ``fn`` to the workers once
(``client.scatter(fn, broadcast=True)``), ``client.submit`` each item and iterate
``distributed.as_completed``. It is not implemented here.
"""

from __future__ import annotations

import abc
import concurrent.futures as cf
import multiprocessing
import operator
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["AbstractExecutor", "ProcessExecutor", "SerialExecutor"]

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


def _init_worker(fn: Callable[[Any], Any], threads: int | None) -> None:
    global _WORKER_FN
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
            initargs=(fn, self.threads_per_worker),
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
