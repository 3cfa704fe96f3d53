"""Black-box devices: a numpy callable with no gradient (a circuit simulator, an instrument)."""

from __future__ import annotations

from collections.abc import Callable
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
    ) -> None:
        super().__init__()
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        if on_error not in ("raise", "nan"):
            raise ValueError(f"on_error must be 'raise' or 'nan', got {on_error!r}")
        self.fn = fn
        self.n_in = int(n_in)
        self.n_out = int(n_out)
        self.domain = domain
        self.vectorized = bool(vectorized)
        self.on_error = on_error
        self.name = name
        self.params = dict(params or {})
        self.n_evaluations = 0

    def _point(self, row: np.ndarray) -> np.ndarray:
        out = np.asarray(self.fn(row), dtype=np.float64)
        if out.ndim == 0 and self.n_out == 1:
            out = out.reshape(1)
        if out.shape != (self.n_out,):
            raise DeviceContractError(
                f"black-box function returned shape {out.shape} for one point; expected "
                f"({self.n_out},). Pass vectorized=True if it takes a whole batch."
            )
        return out

    def evaluate_numpy(self, u: np.ndarray) -> np.ndarray:
        """Evaluate on a float64 array (batch, n_in) → (batch, n_out), honouring ``on_error``."""
        u = np.ascontiguousarray(u, dtype=np.float64)
        self.n_evaluations += len(u)
        if self.vectorized:
            out = np.asarray(self.fn(u), dtype=np.float64)
            if out.shape == (len(u),) and self.n_out == 1:
                out = out[:, None]
            if out.shape != (len(u), self.n_out):
                raise DeviceContractError(
                    f"black-box function returned shape {out.shape} for {len(u)} points; "
                    f"expected ({len(u)}, {self.n_out})"
                )
            return out
        out = np.empty((len(u), self.n_out), dtype=np.float64)
        for i, row in enumerate(u):  # a black box is evaluated point by point by definition
            try:
                out[i] = self._point(row)
            except DeviceContractError:
                raise
            except Exception as exc:
                if self.on_error == "raise":
                    raise SimulationError(
                        f"black-box device {self.name!r} failed at u={row.tolist()}: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
                out[i] = np.nan
        return out

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
