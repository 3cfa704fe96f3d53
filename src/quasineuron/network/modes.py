"""Execution modes: how a network evaluates its devices, chosen per call.

Pass one of these as ``mode=`` to :meth:`DeviceNetwork.forward`; there is no global switch.

| mode | forward | backward |
|---|---|---|
| :class:`Surrogate` | twin | autograd through the twin |
| :class:`TrueDevice` | true device | autograd through it if ``differentiable``, else none |
| :class:`PhysicsAware` | true device | twin's vector-Jacobian product at the applied drives |
| :class:`Direct` | true device | autograd through it; needs ``differentiable`` |

Physics-aware training: Wright et al., "Deep physical neural networks trained with
backpropagation", Nature 601, 549-555 (2022).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

__all__ = ["AbstractMode", "Direct", "PhysicsAware", "Surrogate", "TrueDevice"]


class AbstractMode(abc.ABC):  # noqa: B024 - a marker base for the closed set of modes
    """Base of the execution modes."""

    uses_true_device: bool
    needs_twin: bool


@dataclass(frozen=True)
class Surrogate(AbstractMode):
    """Run the twin (the differentiable digital model) instead of the device."""

    uses_true_device = False
    needs_twin = True


@dataclass(frozen=True)
class TrueDevice(AbstractMode):
    """Run the true device; autograd through it only if it is ``differentiable``.

    For a non-differentiable device the call runs under ``torch.no_grad()``, so its output
    carries no graph: use it for evaluation.
    """

    uses_true_device = True
    needs_twin = False


@dataclass(frozen=True)
class PhysicsAware(AbstractMode):
    """True device forward; backward = the twin's vector-Jacobian product at the applied drives.

    The loss is that of the true device, and only the local Jacobian comes from the twin, so a
    twin with a systematic error still gives a useful descent direction.
    """

    uses_true_device = True
    needs_twin = True


@dataclass(frozen=True)
class Direct(AbstractMode):
    """Autograd through the true device.

    Args:
        adjoint: Ask for adjoint (constant-memory) gradients. A device decides how it
            differentiates when it is built, so this only checks that the device was built for
            it (its ``adjoint`` attribute is True) and says so otherwise.

    Raises:
        NotDifferentiableError: At call time, if the device is not ``differentiable``.
    """

    adjoint: bool = False
    uses_true_device = True
    needs_twin = False

    def __post_init__(self) -> None:
        if not isinstance(self.adjoint, bool):
            raise TypeError(f"Direct.adjoint must be a bool, got {self.adjoint!r}")
