"""The device contract every other stage relies on.

A device maps drives ``u`` of shape ``(batch, n_in)`` to outputs ``(batch, n_out)``, keeping the
dtype and torch device of ``u``. It declares ``n_in``, ``n_out`` and ``differentiable``, and the
box ``domain`` of drives over which it is meant to be characterised.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from quasineuron.errors import DeviceContractError

__all__ = [
    "AbstractDevice",
    "Box",
    "DeviceCheckReport",
    "InitialState",
    "check_contract",
    "check_device",
]


@dataclass(frozen=True)
class Box:
    """An axis-aligned box of drives, ``low[i] <= u[i] <= high[i]``.

    Args:
        low: Lower bound per drive, length ``n_in``.
        high: Upper bound per drive, length ``n_in``.
    """

    low: tuple[float, ...]
    high: tuple[float, ...]

    def __post_init__(self) -> None:
        low = tuple(float(v) for v in _as_seq(self.low, "low"))
        high = tuple(float(v) for v in _as_seq(self.high, "high"))
        if len(low) != len(high) or not low:
            raise ValueError(
                f"Box needs low and high of the same non-zero length, got {len(low)} and "
                f"{len(high)}; e.g. Box(low=(-1.0,), high=(1.0,))"
            )
        for i, (lo, hi) in enumerate(zip(low, high, strict=True)):
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(
                    f"Box bound {i} must satisfy finite low < high, got low={lo!r}, high={hi!r}"
                )
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    @property
    def dim(self) -> int:
        """Number of drives."""
        return len(self.low)

    def tensors(
        self, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(low, high)`` as tensors of shape ``(dim,)``."""
        return (
            torch.tensor(self.low, dtype=dtype, device=device),
            torch.tensor(self.high, dtype=dtype, device=device),
        )

    def contains(self, u: torch.Tensor) -> torch.Tensor:
        """Boolean mask ``(batch,)``: rows of ``u`` (batch, dim) that lie inside the box."""
        low, high = self.tensors(dtype=u.dtype, device=u.device)
        return ((u >= low) & (u <= high)).all(dim=-1)

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-ready form."""
        return {"low": list(self.low), "high": list(self.high)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Box:
        """Inverse of :meth:`to_dict`."""
        return cls(low=tuple(d["low"]), high=tuple(d["high"]))


def _as_seq(v: Any, name: str) -> Sequence[float]:
    if isinstance(v, (int, float)):
        return (v,)
    try:
        return list(v)
    except TypeError as exc:
        raise TypeError(f"Box.{name} must be a sequence of floats, got {v!r}") from exc


class AbstractDevice(torch.nn.Module, abc.ABC):
    """A frozen device: drives ``u`` (batch, n_in) → outputs (batch, n_out).

    Subclasses implement :meth:`forward` and set ``n_in``, ``n_out``, ``differentiable`` and
    ``domain``. Device parameters (``theta``), if any, are buffers, never trainable parameters:
    in a network only the connections train.

    Attributes:
        n_in: Number of drives per device instance.
        n_out: Number of outputs per device instance.
        differentiable: Whether autograd through :meth:`forward` gives correct gradients.
        domain: The box of drives the device is meant to be characterised on.
        name: Short human-readable name used in reports.
        stochastic: Whether two calls on the same drives may give different outputs (shot
            noise, a stochastic simulation). ``evaluate`` scores such a device several times
            and reports the spread; set it on the instance (``dev.stochastic = True``) or the
            class. Default False.
        natural_connection: The connection this device was designed for, by its kind
            (``"two-drive"``, ``"raw"``, ``"linear"``, ``"quadratic"``), or None. A connection
            of ``"auto"`` uses it; None means ``Linear()``, one weighted sum per drive.
    """

    n_in: int
    n_out: int
    differentiable: bool
    domain: Box
    name: str = "device"
    stochastic: bool = False
    natural_connection: str | None = None

    def __init__(self) -> None:
        super().__init__()

    def __call__(self, u: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        """:meth:`forward`, after :meth:`_check_drives`.

        Without the check a drive of the wrong shape would pass through many devices silently
        (an elementwise formula maps (batch, 3) drives of a one-drive device to (batch, 3)).
        """
        self._check_drives(u)
        return super().__call__(u, *args, **kwargs)

    def _check_drives(self, u: torch.Tensor) -> None:
        """Raise unless ``u`` is a floating tensor of shape (batch, n_in).

        Raises:
            ValueError: If ``u`` is not a tensor of shape (batch, n_in).
            TypeError: If ``u`` is not floating point.
        """
        if not isinstance(u, torch.Tensor) or u.ndim != 2 or u.shape[1] != self.n_in:
            got = tuple(u.shape) if isinstance(u, torch.Tensor) else type(u).__name__
            raise ValueError(
                f"{type(self).__name__} {self.name!r} takes drives of shape (batch, "
                f"n_in={self.n_in}), got {got}; reshape them with u.reshape(-1, {self.n_in})"
            )
        if not u.is_floating_point():
            raise TypeError(
                f"{type(self).__name__} {self.name!r} takes floating drives, got dtype {u.dtype}"
            )

    @abc.abstractmethod
    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """Evaluate the device.

        Args:
            u: Drives, shape (batch, n_in).

        Returns:
            Outputs, shape (batch, n_out), same dtype and torch device as ``u``.
        """

    def describe(self) -> dict[str, Any]:
        """JSON-ready description stored in sweep manifests and reports."""
        return {
            "kind": type(self).__name__,
            "name": self.name,
            "n_in": self.n_in,
            "n_out": self.n_out,
            "differentiable": self.differentiable,
            "domain": self.domain.to_dict(),
        }

    def extra_repr(self) -> str:
        """Shown by ``repr``: name and sizes."""
        return f"name={self.name!r}, n_in={self.n_in}, n_out={self.n_out}"


class InitialState(torch.nn.Module):
    """A state that is either fixed or a function of the drives, shared by the ODE adapters.

    Args:
        value: A tensor (n_state,) used for every row, or a callable u (batch, n_in) →
            (batch, n_state).
        n_state: Required with a callable; checked against the tensor otherwise.
        label: The argument's name in error messages (``"x0"``, ``"x_init"``).

    Raises:
        ValueError: If the tensor is not 1-D or disagrees with ``n_state``, or a callable comes
            without a positive ``n_state``.
        TypeError: If ``value`` is neither a tensor nor callable.
    """

    # exactly one of the two is set: a buffer for a fixed state, else the callable
    value: torch.Tensor | None
    fn: Callable[[torch.Tensor], Any] | None

    def __init__(self, value: Any, *, n_state: int | None, label: str) -> None:
        super().__init__()
        self.label = label
        if isinstance(value, torch.Tensor):
            if value.ndim != 1 or value.shape[0] < 1:
                raise ValueError(
                    f"{label} must have shape (n_state,), got {tuple(value.shape)}; for a "
                    "per-row state pass a callable u -> (batch, n_state)"
                )
            if n_state is not None and n_state != value.shape[0]:
                raise ValueError(
                    f"{label} must have shape ({n_state},) to match n_state={n_state}, got "
                    f"{tuple(value.shape)}"
                )
            self.n_state = int(value.shape[0])
            self.register_buffer("value", value.detach().clone(), persistent=False)
            self.fn = None
        elif callable(value):
            if isinstance(n_state, bool) or not isinstance(n_state, int) or n_state < 1:
                raise ValueError(
                    f"n_state must be given as a positive int when {label} is a callable, got "
                    f"{n_state!r}"
                )
            self.n_state = n_state
            self.value = None
            self.fn = value
        else:
            raise TypeError(
                f"{label} must be a tensor (n_state,) or a callable u -> (batch, n_state), got "
                f"{type(value).__name__}"
            )

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """The state for drives u (batch, n_in): (batch, n_state), dtype and device of ``u``.

        Raises:
            DeviceContractError: If the callable returns the wrong shape.
        """
        if self.value is not None:
            return self.value.to(dtype=u.dtype, device=u.device).expand(u.shape[0], -1).clone()
        assert self.fn is not None  # set in __init__ whenever value is None
        x = self.fn(u)
        if not isinstance(x, torch.Tensor) or tuple(x.shape) != (u.shape[0], self.n_state):
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise DeviceContractError(
                f"{self.label}(u) must return shape ({u.shape[0]}, n_state={self.n_state}), "
                f"got {got}"
            )
        return x.to(dtype=u.dtype, device=u.device)


# The checks live in their own module; they are re-exported here, where the contract is
# defined, so ``from quasineuron.devices.base import check_device`` keeps working. The import
# sits at the end because ``checks`` itself imports ``Box`` from this module.
from quasineuron.devices.checks import (  # noqa: E402
    DeviceCheckReport,
    check_contract,
    check_device,
)
