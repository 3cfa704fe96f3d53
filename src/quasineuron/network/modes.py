"""Execution modes: which model of a device runs, and how gradients flow through it.

Pass one of these as ``mode=`` to :meth:`DeviceNetwork.forward`, ``train`` or ``evaluate``; there
is no global switch. A mode *is* its behaviour: :meth:`AbstractMode.evaluate` runs the device
model on a layer's drives and :meth:`AbstractMode.check` says, with the alternatives, when the
mode cannot work on a layer. :class:`~quasineuron.network.layer.DeviceLayer` calls these two
methods and never asks which mode it has, so a new mode is one class in its own module.

| mode | ``name`` | forward | backward |
|---|---|---|---|
| :class:`Surrogate` | ``surrogate`` | twin | autograd through the twin |
| :class:`TrueDevice` | ``device`` | true device | autograd if ``differentiable``, else refused |
| :class:`PhysicsAware` | ``physics-aware`` | true device | twin's VJP at the applied drives |
| :class:`Direct` | ``direct`` | true device | autograd; needs ``differentiable`` |

``name`` is the one spelling of a mode in reports, saved files and configs;
:func:`mode_from_name` turns it back into a mode (the older ``"physics_aware"`` still reads,
with a ``DeprecationWarning``).

Physics-aware training: Wright et al., "Deep physical neural networks trained with
backpropagation", Nature 601, 549-555 (2022).
"""

from __future__ import annotations

import abc
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from quasineuron._names import ALIASES, canonical
from quasineuron.errors import NotDifferentiableError

if TYPE_CHECKING:
    from quasineuron.network.layer import DeviceLayer

__all__ = [
    "MODES",
    "AbstractMode",
    "Direct",
    "PhysicsAware",
    "Surrogate",
    "TrueDevice",
    "mode_from_name",
    "physics_aware",
]


# one vocabulary: a mode name is lower-case letters and digits joined by single '-'
_KEBAB = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


class AbstractMode(abc.ABC):
    """An execution mode: which model of the device runs and how gradients flow through it.

    A mode is a frozen dataclass that sets three class attributes and implements
    :meth:`evaluate`; :meth:`check` refuses impossible combinations. The layer applies the
    connection before the mode and device variability (for modes with ``uses_true_device``)
    around it, so a mode only maps drives to device outputs.

    Attributes:
        name: The mode's one spelling in configs, reports and saved files (e.g. ``"device"``).
        uses_true_device: Whether the forward value comes from the true device, which is what
            device variability perturbs and what costs device evaluations.
        needs_twin: Whether the mode needs the layer's twin; the default :meth:`check` refuses
            a layer without one.
    """

    name: ClassVar[str]
    uses_true_device: ClassVar[bool]
    needs_twin: ClassVar[bool]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Checked when the class is defined, so a mode missing one fails at import, not mid-run.
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(
                f"mode class {cls.__name__} must set a class attribute name = '...' (its "
                f"spelling in configs and reports, e.g. {_kebab(cls.__name__)!r})"
            )
        if not _KEBAB.match(name):
            # one vocabulary: every user-visible name is lower-case kebab-case
            raise TypeError(
                f"mode class {cls.__name__} has name = {name!r}; a mode name is lower-case "
                f"kebab-case (letters and digits joined by '-'), e.g. {_kebab(cls.__name__)!r}"
            )
        for flag in ("uses_true_device", "needs_twin"):
            if not isinstance(getattr(cls, flag, None), bool):
                raise TypeError(
                    f"mode class {cls.__name__} must set a class attribute {flag} = True or False"
                )

    def check(self, layer: DeviceLayer, *, training: bool) -> None:
        """Raise if this mode cannot run on ``layer``; return None if it can.

        Called by the layer on every forward pass with ``training=False`` (so keep it cheap),
        and by :meth:`DeviceNetwork.check_mode` before training with ``training=True`` for every
        layer that gradients must pass through.

        Args:
            layer: The layer, with its ``device`` and ``twin`` (None if it has none).
            training: Whether gradients must flow back through ``layer``'s device.

        Raises:
            ValueError: If the mode needs a twin and the layer has none. Subclasses raise
                ``NotDifferentiableError`` if they need gradients the device cannot give.
        """
        if self.needs_twin and layer.twin is None:
            raise ValueError(
                f"{self!r} needs a twin of device {layer.device.name!r}, but this layer has "
                f"none.\n{_alternatives(layer, refused=type(self))}"
            )

    @abc.abstractmethod
    def evaluate(self, layer: DeviceLayer, u: torch.Tensor) -> torch.Tensor:
        """Device outputs for drives ``u``, with this mode's forward value and gradient.

        Args:
            layer: The layer whose ``device`` / ``twin`` to run; :meth:`check` has passed.
            u: Drives of all neurons, shape (batch * n_neurons, n_drives).

        Returns:
            Outputs, shape (batch * n_neurons, device.n_out), same dtype as ``u``.
        """


@dataclass(frozen=True)
class Surrogate(AbstractMode):
    """Run the twin (the differentiable digital model) instead of the device."""

    name = "surrogate"
    uses_true_device = False
    needs_twin = True

    def evaluate(self, layer: DeviceLayer, u: torch.Tensor) -> torch.Tensor:
        """The twin's outputs, shape (batch * n_neurons, n_out); autograd through the twin."""
        # check() refused layers without a twin (needs_twin), which the checker cannot follow
        return layer.twin(u)  # type: ignore[misc]


@dataclass(frozen=True)
class TrueDevice(AbstractMode):
    """Run the true device; autograd through it only if it is ``differentiable``.

    On a device that is not differentiable this mode evaluates (with or without
    ``torch.no_grad()``), but it cannot train: gradients would stop at the device, and only what
    comes after it (the readout) would learn. So :meth:`check` refuses ``training=True``, and a
    backward pass that reaches the device raises :class:`NotDifferentiableError`; both name the
    alternatives.
    """

    name = "device"
    uses_true_device = True
    needs_twin = False

    def check(self, layer: DeviceLayer, *, training: bool) -> None:
        """Refuse training through a device that is not differentiable.

        Raises:
            NotDifferentiableError: If ``training`` and the device is not differentiable.
        """
        if training and not layer.device.differentiable:
            raise NotDifferentiableError(_cannot_train(self, layer))

    def evaluate(self, layer: DeviceLayer, u: torch.Tensor) -> torch.Tensor:
        """The true device's outputs, shape (batch * n_neurons, n_out)."""
        if layer.device.differentiable:
            return layer.device(u)
        if u.requires_grad and torch.is_grad_enabled():
            # the value as usual, but a backward pass that reaches the device raises
            return _Refused.apply(u, layer, self)
        with torch.no_grad():
            return layer.device(u)


@dataclass(frozen=True)
class PhysicsAware(AbstractMode):
    """True device forward; backward = the twin's vector-Jacobian product at the applied drives.

    The loss is that of the true device, and only the local Jacobian comes from the twin, so a
    twin with a systematic error still gives a useful descent direction. Works on devices that
    are not differentiable.
    """

    name = "physics-aware"
    uses_true_device = True
    needs_twin = True

    def evaluate(self, layer: DeviceLayer, u: torch.Tensor) -> torch.Tensor:
        """``device(u)`` whose gradient w.r.t. ``u`` is the twin's, (batch * n_neurons, n_out)."""
        # check() refused layers without a twin (needs_twin), which the checker cannot follow
        return physics_aware(u, layer.device, layer.twin)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Direct(AbstractMode):
    """Autograd through the true device.

    Args:
        adjoint: Ask for adjoint (constant-memory) gradients. A device decides how it
            differentiates when it is built, so this only checks that the device was built for
            it (its ``adjoint`` attribute is True) and says so otherwise.

    Raises:
        NotDifferentiableError: When run on a device that is not ``differentiable``.
    """

    adjoint: bool = False
    name = "direct"
    uses_true_device = True
    needs_twin = False

    def __post_init__(self) -> None:
        if not isinstance(self.adjoint, bool):
            raise TypeError(f"Direct.adjoint must be a bool, got {self.adjoint!r}")

    def check(self, layer: DeviceLayer, *, training: bool) -> None:
        """Refuse a device that is not differentiable (or not built for adjoint gradients).

        Raises:
            NotDifferentiableError: If the device is not differentiable, training or not:
                this mode exists to backpropagate through the device.
            ValueError: If ``adjoint=True`` and the device was not built for it.
        """
        if not layer.device.differentiable:
            raise NotDifferentiableError(_cannot_train(self, layer))
        if self.adjoint and not getattr(layer.device, "adjoint", False):
            raise ValueError(
                f"Direct(adjoint=True) needs a device built for adjoint gradients (its "
                f"`adjoint` attribute True), but {layer.device.name!r} is not; build the "
                "device with its adjoint option, or use Direct()"
            )

    def evaluate(self, layer: DeviceLayer, u: torch.Tensor) -> torch.Tensor:
        """The true device's outputs with autograd through it, (batch * n_neurons, n_out)."""
        return layer.device(u)


#: The built-in modes by :attr:`AbstractMode.name`, read-only. Configs name a mode by these keys.
MODES: Mapping[str, type[AbstractMode]] = MappingProxyType(
    {cls.name: cls for cls in (Surrogate, TrueDevice, PhysicsAware, Direct)}
)


def mode_from_name(name: str) -> AbstractMode:
    """The built-in mode called ``name``, with its default options.

    Args:
        name: A key of :data:`MODES` (``"surrogate"``, ``"device"``, ``"physics-aware"``,
            ``"direct"``); the older spelling ``"physics_aware"`` reads with a
            ``DeprecationWarning``.

    Returns:
        A new mode, e.g. ``TrueDevice()`` for ``"device"``.

    Raises:
        TypeError: If ``name`` is not a string.
        ValueError: If no built-in mode has that name; the message lists the names.
    """
    if not isinstance(name, str):
        raise TypeError(f"a mode name must be a string such as 'surrogate', got {name!r}")
    if name in ALIASES["mode"]:
        name = canonical("mode", name, stacklevel=3)
    cls = MODES.get(name)
    if cls is None:
        raise ValueError(
            f"unknown mode name {name!r}; expected one of {', '.join(map(repr, MODES))} "
            f"(in Python, pass a mode object such as TrueDevice() instead)"
        )
    return cls()


# --------------------------------------------------------------------------------------------
# Gradient plumbing of the built-in modes


class _PhysicsAwareFunction(torch.autograd.Function):
    """y = device(u) forward; dL/du = J_twin(u)^T dL/dy backward, at the applied u."""

    @staticmethod
    def forward(ctx: Any, u: torch.Tensor, device: torch.nn.Module, twin: torch.nn.Module):
        ctx.save_for_backward(u)
        ctx.twin = twin
        return device(u)  # grad mode is off inside Function.forward

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor):
        (u,) = ctx.saved_tensors
        with torch.enable_grad():
            u_ = u.detach().requires_grad_(True)
            (grad_u,) = torch.autograd.grad(ctx.twin(u_), u_, grad_y)
        return grad_u, None, None


def physics_aware(u: torch.Tensor, device: torch.nn.Module, twin: torch.nn.Module) -> torch.Tensor:
    """Evaluate ``device(u)`` with the twin's vector-Jacobian product as its backward.

    Args:
        u: Drives, shape (batch, n_in).
        device: The true device; it is called without building a graph.
        twin: A differentiable model of the device, evaluated at ``u`` in the backward pass.

    Returns:
        ``device(u)``, shape (batch, n_out), whose gradient w.r.t. ``u`` is
        ``J_twin(u)^T grad_output``.
    """
    return _PhysicsAwareFunction.apply(u, device, twin)


class _Refused(torch.autograd.Function):
    """y = device(u) forward; backward raises NotDifferentiableError (no gradient exists)."""

    @staticmethod
    def forward(ctx: Any, u: torch.Tensor, layer: DeviceLayer, mode: AbstractMode):
        ctx.layer, ctx.mode = layer, mode
        return layer.device(u)  # grad mode is off inside Function.forward

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor):
        raise NotDifferentiableError(_cannot_train(ctx.mode, ctx.layer))


# --------------------------------------------------------------------------------------------
# Messages: what went wrong and every alternative that works for this layer


def _kebab(cls_name: str) -> str:
    return "".join(f"-{c}" if c.isupper() and i else c for i, c in enumerate(cls_name)).lower()


def _cannot_train(mode: AbstractMode, layer: DeviceLayer) -> str:
    return (
        f"{mode!r} needs gradients through device {layer.device.name!r}, which is not "
        "differentiable (differentiable=False): no gradient reaches the weights in front of "
        f"it.\n{_alternatives(layer, refused=type(mode))}"
    )


def _alternatives(layer: DeviceLayer, *, refused: type) -> str:
    """Every other way to run or train this layer, as a list for an error message."""
    twin = "" if layer.twin is not None else " (after fitting a twin, see below)"
    ways = []
    if refused is not PhysicsAware:
        ways.append(f"PhysicsAware(): the true device forward, the twin's gradient backward{twin}")
    if refused is not Surrogate:
        ways.append(f"Surrogate(): the twin forward and backward, then score on the device{twin}")
    if layer.device.differentiable and refused is not Direct:
        ways.append("Direct(): autograd through the device, which is differentiable")
    ways.append(
        "a derivative-free optimiser, which needs no gradient: "
        "optimize_weights(net, data, optimizer=CMAES(...), mode=TrueDevice())"
    )
    ways.append(
        "TrueDevice() to evaluate only: the device itself, no gradient needed (evaluate() "
        "runs it under torch.no_grad())"
    )
    text = "Alternatives:\n" + "\n".join(f"  - {w}" for w in ways)
    if twin:
        text += (
            "\nPhysicsAware() and Surrogate() need a twin: sweep the device, fit one with "
            "fit_surrogate(...) on the sweep, and pass it as twin=... to the network."
        )
    return text
