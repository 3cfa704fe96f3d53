"""Formula devices: any torch function of the drives."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, final

import torch

from quasineuron.devices.base import AbstractDevice, Box, check_contract

__all__ = ["FormulaDevice"]


@final
class FormulaDevice(AbstractDevice):
    """A device given by a closed-form torch function.

    Example:
        >>> box = Box((-4.0,), (4.0,))
        >>> dev = FormulaDevice(torch.tanh, n_in=1, n_out=1, domain=box)

    Args:
        fn: Maps drives ``u`` (batch, n_in) to outputs (batch, n_out); must keep dtype and device.
        n_in: Number of drives.
        n_out: Number of outputs.
        domain: Box of drives to characterise the device on.
        differentiable: Whether autograd through ``fn`` is meaningful.
        name: Name used in reports.
        params: JSON-ready parameters of ``fn`` recorded in :meth:`describe` (e.g.
            ``{"eps": 0.1}``), so that stores and saved networks can tell two settings apart.
        probe: Call ``fn`` once at construction to check shape, dtype and device.

    Raises:
        DeviceContractError: If the probe call returns the wrong shape, dtype or device.
    """

    def __init__(
        self,
        fn: Callable[[torch.Tensor], torch.Tensor],
        *,
        n_in: int,
        n_out: int,
        domain: Box,
        differentiable: bool = True,
        name: str = "formula",
        params: dict[str, Any] | None = None,
        probe: bool = True,
    ) -> None:
        super().__init__()
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.n_in = int(n_in)
        self.n_out = int(n_out)
        self.domain = domain
        self.differentiable = bool(differentiable)
        self.name = name
        self.params = dict(params or {})
        if probe:
            check_contract(self)
            check_contract(self, dtype=torch.float64)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """Evaluate ``fn``; u (batch, n_in) → (batch, n_out)."""
        return self.fn(u)

    def describe(self) -> dict[str, Any]:
        """JSON-ready description, including ``params``."""
        d = super().describe()
        d["params"] = self.params
        return d
