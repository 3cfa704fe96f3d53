"""Wrappers that change a device without subclassing it."""

from __future__ import annotations

from typing import Any, final

import torch

from quasineuron.devices.base import AbstractDevice, Box

__all__ = ["InputClip"]


@final
class InputClip(AbstractDevice):
    """A limiter in front of a device: drives are clipped into a box before they reach it.

    ``y = device(clamp(u, low, high))``. Use it for devices that diverge or leave their safe
    regime outside a range of drives (the Wuxing neuron diverges for a drive below about −0.75):
    the clipped device is defined for every drive, saturates outside the box like a physical
    limiter, and a twin characterised on the box (with ``policy="clamp"``) matches it everywhere.

    Args:
        device: The device to protect.
        box: The allowed drives; default ``device.domain``.

    Attributes:
        domain: The box, so characterisation sweeps the clipped range.
    """

    # buffers are declared here so the type checker knows them (nn.Module's __getattr__ is untyped)
    _low: torch.Tensor
    _high: torch.Tensor

    def __init__(self, device: AbstractDevice, *, box: Box | None = None) -> None:
        super().__init__()
        box = box or device.domain
        if box.dim != device.n_in:
            raise ValueError(f"box has {box.dim} drives but the device has n_in={device.n_in}")
        self.device = device
        self.n_in, self.n_out = device.n_in, device.n_out
        self.differentiable = device.differentiable
        # clipping changes neither how the device is wired nor whether it is noisy
        self.stochastic = device.stochastic
        self.natural_connection = device.natural_connection
        self.domain = box
        self.name = f"clipped({device.name})"
        low, high = box.tensors(dtype=torch.float64)
        self.register_buffer("_low", low, persistent=False)
        self.register_buffer("_high", high, persistent=False)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """Clip u (batch, n_in) into the box and evaluate the device → (batch, n_out)."""
        low = self._low.to(dtype=u.dtype, device=u.device)
        high = self._high.to(dtype=u.dtype, device=u.device)
        return self.device(torch.clamp(u, low, high))

    def describe(self) -> dict[str, Any]:
        """The wrapped device's description plus the clip box."""
        d = super().describe()
        d["wraps"] = self.device.describe()
        return d
