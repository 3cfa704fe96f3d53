"""A sweep executor that runs batches on a Dask cluster (local, remote, SLURM/PBS via jobqueue).

The executor only maps; the runner still writes every batch to its own chunk of the store, so
resuming, per-point status and the final table are the same as with any other executor.

The device is sent to every worker once (``client.scatter(fn, broadcast=True)``), each batch is
one task, and results are yielded as they complete (``distributed.as_completed``). When a worker
dies mid-sweep, the scheduler re-runs its unfinished tasks on the remaining workers; each batch
index is still yielded exactly once. When the last worker holding the device dies, the
scheduler forgets the device and cancels every task that needs it; the executor then waits for
a worker, scatters the device again and resubmits those batches (at most ``MAX_RESCATTERS``
times per sweep), so the sweep goes on instead of aborting.

Needs the optional dependency ``dask[distributed]`` (``pip install "quasineuron[dask]"``).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import CancelledError
from typing import Any, TypeVar

from quasineuron.sweep.executors import AbstractExecutor

__all__ = ["DaskExecutor"]

#: Times one sweep re-sends its device after every worker holding it died; past that the
#: cluster is taken to be failing and the sweep raises (committed chunks stay in the store).
MAX_RESCATTERS = 3
# Seconds to wait for a worker to (re)join after all of them died, e.g. restarted by a nanny.
_WORKER_WAIT_S = 120

T = TypeVar("T")
R = TypeVar("R")


def _apply(fn: Callable[[Any], Any], arg: Any) -> Any:
    """Run on a worker: ``fn`` arrives as the scattered (already resolved) device function."""
    return fn(arg)


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise ImportError(
            "DaskExecutor needs dask.distributed; install it with "
            '`pip install "dask[distributed]"` (or `pip install "quasineuron[dask]"`), '
            "or use ProcessExecutor(n_workers=...) on one machine"
        ) from None
    return distributed


class DaskExecutor(AbstractExecutor):
    """Evaluate sweep batches on a Dask cluster.

    Exactly one of three ways to reach a cluster:

    - ``client``: an existing ``distributed.Client``; it is used as is and left open.
    - ``address``: a scheduler address such as ``"tcp://10.0.0.5:8786"``; a client is opened
      for each sweep and closed after it.
    - neither: a ``LocalCluster`` of ``local_workers`` processes (one thread each, loopback
      only) is started for each sweep and shut down after it.

    Example:
        >>> table = qn.sweep(dev, qn.Sobol(n=4096, seed=0), store="runs/dev",
        ...                  executor=DaskExecutor("tcp://scheduler:8786"))

    Args:
        address: Scheduler address, or None.
        client: An open ``distributed.Client``, or None.
        local_workers: Worker processes of the local cluster started when neither ``address``
            nor ``client`` is given (default 2).
        max_in_flight: Batches submitted ahead of completion; default 4 per worker at the time
            of submission (at least 4), so a long sweep never floods the scheduler.
        retries: Times a task is re-submitted when its own function call fails on a worker
            (worker deaths are handled by the scheduler and do not count).

    Raises:
        ValueError: If both ``address`` and ``client`` are given, or ``local_workers`` is
            given with either of them, or a count is not a positive int.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        client: Any = None,
        local_workers: int | None = None,
        max_in_flight: int | None = None,
        retries: int = 0,
    ) -> None:
        if address is not None and client is not None:
            raise ValueError(
                "pass either address='tcp://host:port' or client=Client(...), not both"
            )
        if local_workers is not None and (address is not None or client is not None):
            raise ValueError(
                "local_workers starts a local cluster; it cannot be combined with address= or "
                "client= (size that cluster where it is created)"
            )
        if address is not None and not isinstance(address, str):
            raise TypeError(f"address must be a str such as 'tcp://host:8786', got {address!r}")
        self.address = address
        self.client = client
        self.local_workers = _positive("local_workers", local_workers, allow_none=True)
        self.max_in_flight = _positive("max_in_flight", max_in_flight, allow_none=True)
        self.retries = _positive("retries", retries, allow_none=False, minimum=0)

    def __repr__(self) -> str:
        where = (
            f"client={self.client!r}"
            if self.client is not None
            else f"address={self.address!r}"
            if self.address is not None
            else f"local_workers={self.local_workers or 2}"
        )
        return f"DaskExecutor({where})"

    def map_unordered(
        self, fn: Callable[[T], R], items: Iterable[tuple[int, T]]
    ) -> Iterator[tuple[int, R]]:
        """Apply ``fn`` on the cluster's workers; see :meth:`AbstractExecutor.map_unordered`.

        ``fn`` must be picklable by cloudpickle, and every module it refers to (the device's)
        must be importable on the workers.
        """
        distributed = _import_distributed()
        owned: list[Any] = []
        try:
            if self.client is not None:
                client = self.client
            elif self.address is not None:
                client = distributed.Client(self.address, set_as_default=False)
                owned.append(client)
            else:
                cluster = distributed.LocalCluster(
                    n_workers=self.local_workers or 2,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                )
                owned.append(cluster)
                client = distributed.Client(cluster, set_as_default=False)
                owned.append(client)
            yield from self._map(distributed, client, fn, items)
        finally:
            for obj in reversed(owned):
                obj.close()

    def _map(
        self, distributed: Any, client: Any, fn: Callable[[T], R], items: Iterable[tuple[int, T]]
    ) -> Iterator[tuple[int, R]]:
        # Once per sweep, not per batch: a device (with its weights, tables) can be large.
        fn_future = client.scatter(fn, broadcast=True, hash=False)
        generation = 0  # bumped each time the device is scattered again
        rescatters = 0
        n_workers = max(1, len(client.scheduler_info(n_workers=-1).get("workers", {})))
        limit = self.max_in_flight or max(4, 4 * n_workers)
        # future -> (index, arg, tries left, generation of the device it was submitted with)
        pending: dict[Any, tuple[int, T, int, int]] = {}
        seen: set[int] = set()
        it = iter(items)
        ac = distributed.as_completed(loop=client.loop)
        exhausted = False

        def submit(index: int, arg: T, tries: int) -> None:
            # pure=False: two identical batches are still two tasks with their own results.
            fut = client.submit(_apply, fn_future, arg, pure=False)
            pending[fut] = (index, arg, tries, generation)
            ac.add(fut)

        try:
            while True:
                while not exhausted and len(pending) < limit:
                    nxt = next(it, None)
                    if nxt is None:
                        exhausted = True
                        break
                    submit(nxt[0], nxt[1], self.retries)
                if not pending:
                    return
                fut = next(ac)
                index, arg, tries, gen = pending.pop(fut)
                if fut.status == "error" and tries > 0:
                    submit(index, arg, tries - 1)
                    continue
                try:
                    if fut.status == "cancelled":
                        raise CancelledError(fut.key)
                    result = fut.result()  # raises the task's exception, as other executors do
                except CancelledError:  # distributed raises FutureCancelledError, a subclass
                    # The device was lost with the last worker holding it (the scheduler
                    # cancels what depends on it): send it again once per loss, then resubmit.
                    if gen == generation:
                        if rescatters >= MAX_RESCATTERS:
                            raise RuntimeError(
                                f"the Dask workers holding the device died {rescatters + 1} "
                                "times in one sweep; check the cluster (memory, crashes). "
                                "Committed chunks are kept: run the sweep again to resume."
                            ) from None
                        rescatters += 1
                        client.wait_for_workers(1, timeout=_WORKER_WAIT_S)
                        fn_future.release()
                        fn_future = client.scatter(fn, broadcast=True, hash=False)
                        generation += 1
                    submit(index, arg, tries)
                    continue
                fut.release()
                if index in seen:  # pragma: no cover - the scheduler reports a task once
                    continue
                seen.add(index)
                yield index, result
        finally:
            for fut in pending:
                fut.cancel()
            fn_future.release()

    def describe(self) -> dict[str, Any]:
        """JSON-ready description."""
        out: dict[str, Any] = {"kind": "DaskExecutor"}
        if self.address is not None:
            out["address"] = self.address
        elif self.client is None:
            out["local_workers"] = self.local_workers or 2
        return out


def _positive(name: str, value: Any, *, allow_none: bool, minimum: int = 1) -> Any:
    if value is None and allow_none:
        return None
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"DaskExecutor.{name} must be an int, got {value!r}") from None
    if isinstance(value, bool) or v < minimum:
        raise ValueError(f"DaskExecutor.{name} must be an int >= {minimum}, got {value!r}")
    return v
