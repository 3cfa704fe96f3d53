"""Wrappers that change a device without subclassing it."""

from __future__ import annotations

from typing import Any, final

import torch

from quasineuron.devices.base import AbstractDevice, Box

__all__ = ["InputClip", "Noisy"]


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


@final
class Noisy(AbstractDevice):
    """Additive Gaussian output noise on a device: ``y = device(u) + std · N(0, 1)``.

    A stand-in for a measured device whose repeated readings scatter. The noise comes from its
    own ``torch.Generator`` seeded with ``seed`` (the global RNG is never touched), so a fresh
    wrapper replays the same noise sequence. The wrapper is ``stochastic``: ``evaluate`` scores
    it over several passes, and ``sweep(..., repeats=k)`` estimates its noise floor.

    Args:
        device: The noiseless device.
        std: Standard deviation of the noise, in output units (> 0).
        seed: Seed of the noise generator.
    """

    def __init__(self, device: AbstractDevice, *, std: float, seed: int = 0) -> None:
        super().__init__()
        if not (isinstance(std, int | float) and not isinstance(std, bool) and std > 0):
            raise ValueError(f"std must be a number > 0, got {std!r}; without noise use the device")
        self.device = device
        self.n_in, self.n_out = device.n_in, device.n_out
        self.differentiable = device.differentiable  # the noise does not depend on u
        self.stochastic = True
        self.natural_connection = device.natural_connection
        self.domain = device.domain
        self.name = f"noisy({device.name})"
        self.std, self.seed = float(std), int(seed)
        self._gen = torch.Generator().manual_seed(self.seed)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """Evaluate the device on u (batch, n_in) and add noise → (batch, n_out)."""
        y = self.device(u)
        noise = torch.randn(y.shape, generator=self._gen, dtype=torch.float64)
        return y + self.std * noise.to(dtype=y.dtype, device=y.device)

    def __getstate__(self) -> dict[str, Any]:
        """Pickles carry the generator's state (a ``torch.Generator`` does not pickle)."""
        state = self.__dict__.copy()
        state["_gen"] = self._gen.get_state()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        gen = torch.Generator()
        gen.set_state(state["_gen"])
        self.__dict__.update({**state, "_gen": gen})

    def describe(self) -> dict[str, Any]:
        """The wrapped device's description plus the noise settings."""
        d = super().describe()
        d.update(wraps=self.device.describe(), std=self.std, seed=self.seed)
        return d
