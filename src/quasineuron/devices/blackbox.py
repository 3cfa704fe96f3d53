"""Black-box devices: a numpy callable with no gradient (a circuit simulator, an instrument)."""

from __future__ import annotations

import pickle
import weakref
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any, Literal, final

import numpy as np
import torch

from quasineuron.devices.base import AbstractDevice, Box
from quasineuron.errors import DeviceContractError, SimulationError

__all__ = ["BlackBoxDevice"]


@final
class BlackBoxDevice(AbstractDevice):
    """A device given by a numpy function, evaluated on the CPU; not differentiable.

    The function may raise or return NaN at some points. In a sweep each failing point is recorded
    with its status and the sweep goes on; in a direct call, ``on_error`` decides.

    Args:
        fn: If ``vectorized``, maps an array (batch, n_in) to (batch, n_out); otherwise maps one
            point (n_in,) to (n_out,) (a scalar is accepted when ``n_out == 1``). float64 arrays.
        n_in: Number of drives.
        n_out: Number of outputs.
        domain: Box of drives to characterise the device on.
        vectorized: Whether ``fn`` takes a whole batch at once.
        on_error: ``"raise"`` raises :class:`SimulationError` naming the first failing point;
            ``"nan"`` returns NaN for the points that raised.
        name: Name used in reports.
        params: JSON-ready parameters recorded in :meth:`describe`.
        workers: Evaluate large batches in a persistent pool of this many worker processes
            (0, the default, evaluates in this process). The batch is split into ``workers``
            contiguous chunks, so the result is identical to a serial call. ``fn`` must then
            be picklable (a module-level function). The pool starts on first use; call
            :meth:`close` (or use the device as a context manager) to stop it early.
        min_parallel_batch: Smallest batch sent to the pool; smaller batches run here,
            where the transfer would cost more than the evaluation.
        start_method: How workers start: ``"spawn"`` (safe with torch in the parent, about a
            second per worker), ``"forkserver"`` or ``"fork"`` (fast, but do not run torch
            code inside ``fn``).

    Attributes:
        n_evaluations: Number of points evaluated by this instance so far (this process only).
    """

    differentiable = False

    def __init__(
        self,
        fn: Callable[[np.ndarray], Any],
        *,
        n_in: int,
        n_out: int,
        domain: Box,
        vectorized: bool = False,
        on_error: Literal["raise", "nan"] = "raise",
        name: str = "blackbox",
        params: dict[str, Any] | None = None,
        workers: int = 0,
        min_parallel_batch: int = 4096,
        start_method: Literal["spawn", "forkserver", "fork"] = "spawn",
    ) -> None:
        super().__init__()
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        if on_error not in ("raise", "nan"):
            raise ValueError(f"on_error must be 'raise' or 'nan', got {on_error!r}")
        for opt, value, low in (
            ("workers", workers, 0),
            ("min_parallel_batch", min_parallel_batch, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{opt} must be an int >= {low}, got {value!r}")
        if start_method not in ("spawn", "forkserver", "fork"):
            raise ValueError(
                f"start_method must be 'spawn', 'forkserver' or 'fork', got {start_method!r}"
            )
        if workers > 0:
            try:
                pickle.dumps(fn)
            except Exception as exc:
                raise TypeError(
                    f"workers={workers} sends fn to worker processes, but it cannot be pickled "
                    f"({type(exc).__name__}: {exc}); define it at module level (not a lambda or "
                    "a closure), or use workers=0"
                ) from exc
        self.fn = fn
        self.n_in = int(n_in)
        self.n_out = int(n_out)
        self.domain = domain
        self.vectorized = bool(vectorized)
        self.on_error = on_error
        self.name = name
        self.params = dict(params or {})
        self.workers = workers
        self.min_parallel_batch = min_parallel_batch
        self.start_method = start_method
        self.n_evaluations = 0
        self._pool: ProcessPoolExecutor | None = None

    def evaluate_numpy(self, u: np.ndarray) -> np.ndarray:
        """Evaluate on a float64 array (batch, n_in) → (batch, n_out), honouring ``on_error``.

        With ``workers > 0`` and at least ``min_parallel_batch`` rows, the rows are split into
        ``workers`` contiguous chunks evaluated in the worker pool.
        """
        u = np.ascontiguousarray(u, dtype=np.float64)
        self.n_evaluations += len(u)
        spec = (self.fn, self.vectorized, self.n_out, self.on_error, self.name)
        if self.workers == 0 or len(u) < self.min_parallel_batch:
            return _evaluate(spec, u)
        chunks = np.array_split(u, self.workers)
        return np.concatenate(list(self._get_pool().map(_evaluate, [spec] * len(chunks), chunks)))

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=get_context(self.start_method)
            )
            # Stop the workers when the device is garbage-collected or at interpreter exit.
            self._finalizer = weakref.finalize(self, self._pool.shutdown, wait=False)
        return self._pool

    def close(self) -> None:
        """Stop the worker pool, if one is running; a later large batch starts a new one."""
        if self._pool is not None:
            self._finalizer.detach()
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> BlackBoxDevice:
        """Use as ``with device:`` to stop the worker pool on exit."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop the worker pool."""
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the worker pool (a copy starts its own when it needs one)."""
        state = self.__dict__.copy()
        state["_pool"] = None
        state.pop("_finalizer", None)
        return state

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """Evaluate on the CPU; u (batch, n_in) → (batch, n_out) on u's dtype and device."""
        y = self.evaluate_numpy(u.detach().cpu().double().numpy())
        return torch.from_numpy(y).to(dtype=u.dtype, device=u.device)

    def describe(self) -> dict[str, Any]:
        """JSON-ready description, including ``params``."""
        d = super().describe()
        d["params"] = self.params
        d["vectorized"] = self.vectorized
        return d


_Spec = tuple[Callable[[np.ndarray], Any], bool, int, str, str]


def _point(spec: _Spec, row: np.ndarray) -> np.ndarray:
    fn, _, n_out, _, _ = spec
    out = np.asarray(fn(row), dtype=np.float64)
    if out.ndim == 0 and n_out == 1:
        out = out.reshape(1)
    if out.shape != (n_out,):
        raise DeviceContractError(
            f"black-box function returned shape {out.shape} for one point; expected "
            f"({n_out},). Pass vectorized=True if it takes a whole batch."
        )
    return out


def _evaluate(spec: _Spec, u: np.ndarray) -> np.ndarray:
    """Evaluate ``fn`` on u (batch, n_in); module-level so that worker processes can run it."""
    fn, vectorized, n_out, on_error, name = spec
    if vectorized:
        out = np.asarray(fn(u), dtype=np.float64)
        if out.shape == (len(u),) and n_out == 1:
            out = out[:, None]
        if out.shape != (len(u), n_out):
            raise DeviceContractError(
                f"black-box function returned shape {out.shape} for {len(u)} points; "
                f"expected ({len(u)}, {n_out})"
            )
        return out
    out = np.empty((len(u), n_out), dtype=np.float64)
    for i, row in enumerate(u):  # a black box is evaluated point by point by definition
        try:
            out[i] = _point(spec, row)
        except DeviceContractError:
            raise
        except Exception as exc:
            if on_error == "raise":
                raise SimulationError(
                    f"black-box device {name!r} failed at u={row.tolist()}: "
                    f"{type(exc).__name__}: {exc}. If the device fails in part of its domain, "
                    "pass on_error='nan': failed rows become NaN, which sweeps record and "
                    "training stops on or masks (training.nonfinite)"
                ) from exc
            out[i] = np.nan
    return out
