"""Device-to-device variability and output noise of the true devices of a network.

Each device instance (neuron ``n``) gets its own deviation, drawn once per network from
``torch.Generator(seed)`` and then fixed:

    ``y_n = (1 + g_n) * f((1 + a_n) * u_n) + o_n + noise``,

with ``g_n ~ N(0, gain_std²)`` (per output), ``o_n ~ N(0, offset_std²)`` (per output),
``a_n ~ N(0, input_gain_std²)`` (per drive), and fresh ``noise ~ N(0, noise_std²)`` on every
call. It applies to the true-device path only (``TrueDevice``, ``PhysicsAware``, ``Direct``);
the twin stays nominal. Get a network with it through ``net.with_variability(Variability(...))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["Deviation", "Variability"]


@dataclass(frozen=True)
class Variability:
    """Spread of device instances around the nominal device.

    Args:
        gain_std: Standard deviation of the per-neuron relative output gain ``g_n``.
        offset_std: Standard deviation of the per-neuron output offset ``o_n``.
        input_gain_std: Standard deviation of the per-neuron relative drive gain ``a_n``.
        noise_std: Standard deviation of the output noise drawn afresh on every call.
        seed: Seed of the per-neuron deviations and of the noise stream.
    """

    gain_std: float = 0.0
    offset_std: float = 0.0
    input_gain_std: float = 0.0
    noise_std: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("gain_std", "offset_std", "input_gain_std", "noise_std"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"Variability.{name} must be a finite float >= 0, got {v!r}")
            object.__setattr__(self, name, float(v))
        if not isinstance(self.seed, int):
            raise TypeError(f"Variability.seed must be an int, got {self.seed!r}")

    def draw(
        self, n_neurons: int, n_drives: int, n_out: int, *, generator: torch.Generator
    ) -> Deviation:
        """Draw the fixed deviations of one layer's device instances.

        Args:
            n_neurons: Number of device instances.
            n_drives: Drives per instance.
            n_out: Outputs per instance.
            generator: Source of the draws.

        Returns:
            The layer's :class:`Deviation` (float64 tensors).
        """
        f64 = torch.float64
        gain = 1 + self.gain_std * torch.randn(n_neurons, n_out, generator=generator, dtype=f64)
        offset = self.offset_std * torch.randn(n_neurons, n_out, generator=generator, dtype=f64)
        in_gain = 1 + self.input_gain_std * torch.randn(
            n_neurons, n_drives, generator=generator, dtype=f64
        )
        return Deviation(gain=gain, offset=offset, input_gain=in_gain, noise_std=self.noise_std)


@dataclass(frozen=True)
class Deviation:
    """Fixed deviations of one layer's device instances.

    Attributes:
        gain: Output gain ``1 + g_n``, shape (n_neurons, n_out).
        offset: Output offset ``o_n``, shape (n_neurons, n_out).
        input_gain: Drive gain ``1 + a_n``, shape (n_neurons, n_drives).
        noise_std: Standard deviation of the fresh output noise.
    """

    gain: torch.Tensor
    offset: torch.Tensor
    input_gain: torch.Tensor
    noise_std: float
