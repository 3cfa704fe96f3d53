"""Connections: the trainable, exact part of a neuron that turns inputs into device drives.

A connection is a typed frozen dataclass (the *spec*). :meth:`AbstractConnection.build` turns it
into a small ``torch.nn.Module`` (the *map*) that owns the weights and the wiring mask and maps
``x`` (batch, n_in) to drives ``u`` (batch, n_neurons, n_drives), where ``n_drives`` is the
device's ``n_in``.

Initialisation puts typical drives inside the device's domain: with ``c`` the centre and ``h``
the half-width of the domain along a drive, biases start at ``c`` and weights are drawn with
standard deviation ``init_gain / sqrt(fan_in)`` (LeCun's rule: inputs of unit scale give drives of
unit scale around ``c``, the regime where a neuron-like device responds; scaling by the domain
width instead saturates devices characterised on wide domains).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from quasineuron._names import ALIASES, canonical
from quasineuron.devices.base import Box
from quasineuron.network.wiring import fan_in

__all__ = [
    "AbstractConnection",
    "Linear",
    "Quadratic",
    "Raw",
    "TwoDrive",
    "connection_from_dict",
    "default_connection",
]


def _centre_half(domain: Box, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    low, high = domain.tensors(dtype=dtype)
    return (low + high) / 2, (high - low) / 2


def _gather_index(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per column, the rows of its links in increasing order, padded to the largest fan-in.

    Args:
        mask: Boolean mask (n_in, n_cols).

    Returns:
        ``idx`` (n_cols, k) long and ``valid`` (n_cols, k) bool, with ``k = max(1, max fan-in)``.
    """
    k = max(1, int(fan_in(mask).max()))
    vals, idx = torch.sort(mask.T.to(torch.int8), dim=1, descending=True, stable=True)
    return idx[:, :k].contiguous(), vals[:, :k].bool().contiguous()


class ConnectionMap(torch.nn.Module):
    """Base of the modules connections build: x (batch, n_in) → u (batch, n_neurons, n_drives).

    It adds no behaviour; it declares what every map holds, so code that reads a layer's
    weights or wiring mask is type-checked.

    Attributes:
        weight: Trainable weights (a parameter); its shape depends on the connection.
        mask: Boolean wiring mask (n_in, n_columns), a buffer.
    """

    weight: torch.Tensor
    mask: torch.Tensor


class AbstractConnection(abc.ABC):
    """Spec of a trainable connection; see the module docstring."""

    kind: ClassVar[str]

    @abc.abstractmethod
    def n_drives(self, device_n_in: int) -> int:
        """Drives per neuron for a device with ``device_n_in`` drives.

        Raises:
            ValueError: If this connection cannot feed such a device.
        """

    def n_columns(self, n_neurons: int, n_drives: int) -> int:
        """Columns of the wiring mask: one per neuron unless overridden."""
        return n_neurons

    @abc.abstractmethod
    def build(
        self,
        mask: torch.Tensor,
        *,
        n_neurons: int,
        n_drives: int,
        domain: Box,
        generator: torch.Generator,
        dtype: torch.dtype,
        init_gain: float,
    ) -> ConnectionMap:
        """Make the map module, with weights initialised from ``generator``.

        Args:
            mask: Boolean wiring mask (n_in, n_columns).
            n_neurons: Number of neurons of the layer.
            n_drives: Drives per neuron (the device's ``n_in``).
            domain: Domain of the device's drives, used to scale the initial weights.
            generator: Source of the initial weights.
            dtype: Floating dtype of the weights.
            init_gain: Typical drive spread as a fraction of the domain half-width.

        Returns:
            A module mapping x (batch, n_in) to u (batch, n_neurons, n_drives).
        """

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: the kind and the dataclass fields."""
        # every concrete subclass is a dataclass; this abstract base is not, so the checker
        # cannot know __dataclass_fields__ exists
        return {"kind": self.kind, **{k: getattr(self, k) for k in self.__dataclass_fields__}}  # type: ignore[attr-defined]


def _check_bool(name: str, v: Any) -> None:
    if not isinstance(v, bool):
        raise TypeError(f"{name} must be a bool, got {v!r}")


# --------------------------------------------------------------------------------------------
# Linear


@dataclass(frozen=True)
class Linear(AbstractConnection):
    """One weighted sum per drive: ``u[n, p] = sum_i x_i w[i, (n, p)] + b[n, p]``.

    For a one-drive device this is the ordinary neuron pre-activation ``u = x·w + b``. For a
    device with several drives (ports) each port gets its own weighted sum, so the wiring's
    columns are ports (``column = neuron * n_drives + port``); ``Ports()`` wires them one-to-one.

    Args:
        bias: Whether each drive has a trainable bias.
    """

    bias: bool = True
    kind: ClassVar[str] = "linear"

    def __post_init__(self) -> None:
        _check_bool("Linear.bias", self.bias)

    def n_drives(self, device_n_in: int) -> int:
        """One weighted sum per device drive."""
        return device_n_in

    def n_columns(self, n_neurons: int, n_drives: int) -> int:
        """One mask column per (neuron, port)."""
        return n_neurons * n_drives

    def build(
        self,
        mask: torch.Tensor,
        *,
        n_neurons: int,
        n_drives: int,
        domain: Box,
        generator: torch.Generator,
        dtype: torch.dtype,
        init_gain: float,
    ) -> ConnectionMap:
        """Make a :class:`LinearMap`; see :meth:`AbstractConnection.build`."""
        centre, half = _centre_half(domain, dtype)
        n_in = mask.shape[0]
        std = init_gain / fan_in(mask).clamp_min(1).to(dtype).sqrt()
        w = torch.randn(n_in, n_neurons * n_drives, generator=generator, dtype=dtype) * std
        b = centre.expand(n_neurons, n_drives).clone() if self.bias else None
        return LinearMap(w * mask, b, mask, n_neurons=n_neurons, n_drives=n_drives)


class LinearMap(ConnectionMap):
    """Masked dense map; x (batch, n_in) → u (batch, n_neurons, n_drives)."""

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        mask: torch.Tensor,
        *,
        n_neurons: int,
        n_drives: int,
    ) -> None:
        super().__init__()
        self.n_neurons, self.n_drives = n_neurons, n_drives
        self.weight = torch.nn.Parameter(weight)  # (n_in, n_neurons * n_drives)
        self.bias = None if bias is None else torch.nn.Parameter(bias)  # (n_neurons, n_drives)
        self.register_buffer("mask", mask)
        self.dense = bool(mask.all())  # a full mask needs no multiply in the hot path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map inputs x (batch, n_in) to drives u (batch, n_neurons, n_drives)."""
        w = self.weight if self.dense else self.weight * self.mask
        if self.bias is None:
            return (x @ w).view(x.shape[0], self.n_neurons, self.n_drives)
        # the bias added inside the GEMM: one operation (and one autograd node) fewer per step
        u = torch.addmm(self.bias.reshape(-1), x, w)
        return u.view(x.shape[0], self.n_neurons, self.n_drives)


# --------------------------------------------------------------------------------------------
# TwoDrive


@dataclass(frozen=True)
class TwoDrive(AbstractConnection):
    """The two drives of the seed's almost-neuron: ``(s1, s2) = (x·A + b, (x**2)·A)``.

    One weight matrix ``A`` (n_in, n_neurons) feeds both drives, so a device
    ``f(s1, s2) = f_nl(s1 - eps * s2)`` gives the neuron ``f_nl(x·A - eps·A·x²)``; with
    ``eps = 0`` it is an ordinary MLP layer with weights ``A``. Needs a device with 2 drives.

    Args:
        bias: Whether ``s1`` has a trainable bias.
    """

    bias: bool = True
    kind: ClassVar[str] = "two-drive"

    def __post_init__(self) -> None:
        _check_bool("TwoDrive.bias", self.bias)

    def n_drives(self, device_n_in: int) -> int:
        """Always 2."""
        if device_n_in != 2:
            raise ValueError(
                f"TwoDrive() produces 2 drives (x·A, A·x²) but the device has n_in={device_n_in}; "
                "use a device with two drives, or Linear() for a one-drive device"
            )
        return 2

    def build(
        self,
        mask: torch.Tensor,
        *,
        n_neurons: int,
        n_drives: int,
        domain: Box,
        generator: torch.Generator,
        dtype: torch.dtype,
        init_gain: float,
    ) -> ConnectionMap:
        """Make a :class:`TwoDriveMap`; see :meth:`AbstractConnection.build`."""
        centre, half = _centre_half(domain, dtype)
        std = init_gain / fan_in(mask).clamp_min(1).to(dtype).sqrt()
        a = torch.randn(mask.shape[0], n_neurons, generator=generator, dtype=dtype) * std
        b = centre[0].expand(n_neurons).clone() if self.bias else None
        return TwoDriveMap(a * mask, b, mask)


class TwoDriveMap(ConnectionMap):
    """x (batch, n_in) → (x·A + b, (x**2)·A) of shape (batch, n_neurons, 2).

    The drives come drive-major: a view of one (2, batch, n_neurons) block, the rows of the
    GEMM as they are, so that neither the forward nor the backward pass copies them into
    pairs (a spline twin reads them in place).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, mask: torch.Tensor):
        super().__init__()
        self.weight = torch.nn.Parameter(weight)  # A, (n_in, n_neurons)
        self.bias = None if bias is None else torch.nn.Parameter(bias)  # (n_neurons,)
        self.register_buffer("mask", mask)
        self.dense = bool(mask.all())  # a full mask needs no multiply in the hot path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map inputs x (batch, n_in) to drives u (batch, n_neurons, 2)."""
        a = self.weight if self.dense else self.weight * self.mask
        batch = x.shape[0]
        s = (torch.cat((x, x * x)) @ a).view(2, batch, -1)  # one GEMM: rows [x·A; x²·A]
        if self.bias is not None:
            # (b, 0) added to the two drives in one pass; its backward passes the gradient
            # of s through as it is
            s = s + torch.stack((self.bias, torch.zeros_like(self.bias))).unsqueeze(1)
        return s.permute(1, 2, 0)


# --------------------------------------------------------------------------------------------
# Quadratic


@dataclass(frozen=True)
class Quadratic(AbstractConnection):
    """Quadratic combiner: ``u = sum_i w_i x_i + sum_{i<=j} q_ij x_i x_j + b`` (one drive).

    Pairwise terms cost ``fan_in**2`` weights per neuron, so the fan-in (links per neuron) is
    limited to ``max_fan_in``; limit it with ``wiring=FanIn(k)`` or ``Sparse(...)``.

    Args:
        max_fan_in: Largest number of inputs per neuron accepted.
        bias: Whether the drive has a trainable bias.
    """

    max_fan_in: int = 16
    bias: bool = True
    kind: ClassVar[str] = "quadratic"

    def __post_init__(self) -> None:
        if not isinstance(self.max_fan_in, int) or self.max_fan_in < 1:
            raise ValueError(
                f"Quadratic.max_fan_in must be a positive int, got {self.max_fan_in!r}"
            )
        _check_bool("Quadratic.bias", self.bias)

    def n_drives(self, device_n_in: int) -> int:
        """Always 1."""
        if device_n_in != 1:
            raise ValueError(
                f"Quadratic() produces one drive but the device has n_in={device_n_in}; use a "
                "one-drive device, or Linear() to give every drive its own weighted sum"
            )
        return 1

    def build(
        self,
        mask: torch.Tensor,
        *,
        n_neurons: int,
        n_drives: int,
        domain: Box,
        generator: torch.Generator,
        dtype: torch.dtype,
        init_gain: float,
    ) -> ConnectionMap:
        """Make a :class:`QuadraticMap`; see :meth:`AbstractConnection.build`."""
        f = int(fan_in(mask).max())
        if f > self.max_fan_in:
            raise ValueError(
                f"Quadratic(max_fan_in={self.max_fan_in}) got a wiring with up to {f} inputs per "
                f"neuron ({mask.shape[0]} input features); pairwise terms need fan_in**2 weights. "
                f"Use wiring=FanIn(k) with k <= {self.max_fan_in} or a Sparse(link_ratio) wiring, "
                "or raise max_fan_in"
            )
        centre, half = _centre_half(domain, dtype)
        idx, valid = _gather_index(mask)
        k = idx.shape[1]
        qmask = valid.unsqueeze(2) & valid.unsqueeze(1) & torch.ones(k, k).triu().bool()
        fi = fan_in(mask).clamp_min(1).to(dtype)
        w = torch.randn(mask.shape[0], n_neurons, generator=generator, dtype=dtype)
        w = w * (init_gain / fi.sqrt())
        # About fan_in**2 / 2 pair terms; x_i x_j is smaller than x_i for inputs in [-1, 1].
        q = torch.randn(n_neurons, k, k, generator=generator, dtype=dtype)
        q = q * (init_gain / fi).view(-1, 1, 1)
        b = centre[0].expand(n_neurons).clone() if self.bias else None
        return QuadraticMap(w * mask, q * qmask, b, mask, idx, qmask)


class QuadraticMap(ConnectionMap):
    """x (batch, n_in) → one quadratic drive per neuron, shape (batch, n_neurons, 1)."""

    index: torch.Tensor  # buffers, declared for the type checker
    quad_mask: torch.Tensor

    def __init__(
        self,
        weight: torch.Tensor,
        quad: torch.Tensor,
        bias: torch.Tensor | None,
        mask: torch.Tensor,
        index: torch.Tensor,
        quad_mask: torch.Tensor,
    ) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(weight)  # (n_in, n_neurons)
        self.quad = torch.nn.Parameter(quad)  # (n_neurons, k, k), upper triangle used
        self.bias = None if bias is None else torch.nn.Parameter(bias)  # (n_neurons,)
        self.register_buffer("mask", mask)
        self.register_buffer("index", index)  # (n_neurons, k): inputs of each neuron
        self.register_buffer("quad_mask", quad_mask)  # (n_neurons, k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map inputs x (batch, n_in) to drives u (batch, n_neurons, 1)."""
        xs = x[:, self.index]  # (batch, n_neurons, k)
        quad = torch.einsum("bni,nij,bnj->bn", xs, self.quad * self.quad_mask, xs)
        u = x @ (self.weight * self.mask) + quad
        if self.bias is not None:
            u = u + self.bias
        return u.unsqueeze(-1)


# --------------------------------------------------------------------------------------------
# Raw


@dataclass(frozen=True)
class Raw(AbstractConnection):
    """Hand the device its inputs and weights themselves: the seed's general ``f(x, A)``.

    For a device with ``n_in = 2k`` drives and a wiring with exactly ``k`` inputs per neuron
    (``FanIn(k)``, or ``Dense()`` with ``k`` input features), neuron ``n`` gets the drives

        ``u[n] = (x[i_1], ..., x[i_k], w[n, 1], ..., w[n, k])``,

    its ``k`` inputs in increasing feature index ``i_1 < ... < i_k``, then its ``k`` trainable
    weights in the same order. Weights start spread over the domain of the weight drives
    (drives ``k..2k-1``): ``w = c + init_gain * h/2 * U(-1, 1)``.
    """

    kind: ClassVar[str] = "raw"

    def n_drives(self, device_n_in: int) -> int:
        """The device's ``n_in``, which must be even."""
        if device_n_in % 2:
            raise ValueError(
                f"Raw() hands a device k inputs and k weights, so its n_in must be even; got "
                f"n_in={device_n_in}"
            )
        return device_n_in

    def build(
        self,
        mask: torch.Tensor,
        *,
        n_neurons: int,
        n_drives: int,
        domain: Box,
        generator: torch.Generator,
        dtype: torch.dtype,
        init_gain: float,
    ) -> ConnectionMap:
        """Make a :class:`RawMap`; see :meth:`AbstractConnection.build`."""
        k = n_drives // 2
        fi = fan_in(mask)
        if not bool((fi == k).all()):
            raise ValueError(
                f"Raw() needs exactly k={k} inputs per neuron (device n_in={n_drives}), but the "
                f"wiring gives between {int(fi.min())} and {int(fi.max())}; use wiring=FanIn({k})"
            )
        centre, half = _centre_half(domain, dtype)
        idx, _ = _gather_index(mask)
        r = 2 * torch.rand(n_neurons, k, generator=generator, dtype=dtype) - 1
        w = centre[k:] + 0.5 * init_gain * half[k:] * r
        return RawMap(w, mask, idx)


class RawMap(ConnectionMap):
    """x (batch, n_in) → (inputs, weights) of each neuron, shape (batch, n_neurons, 2k)."""

    index: torch.Tensor  # buffers, declared for the type checker

    def __init__(self, weight: torch.Tensor, mask: torch.Tensor, index: torch.Tensor):
        super().__init__()
        self.weight = torch.nn.Parameter(weight)  # (n_neurons, k)
        self.register_buffer("mask", mask)
        self.register_buffer("index", index)  # (n_neurons, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map inputs x (batch, n_in) to drives u (batch, n_neurons, 2k)."""
        xs = x[:, self.index]
        return torch.cat((xs, self.weight.expand(x.shape[0], -1, -1)), dim=-1)


CONNECTIONS: dict[str, type[AbstractConnection]] = {
    c.kind: c for c in (Linear, TwoDrive, Quadratic, Raw)
}


def connection_from_dict(d: dict[str, Any]) -> AbstractConnection:
    """Inverse of :meth:`AbstractConnection.to_dict`; rejects unknown kinds and fields."""
    d = dict(d)
    kind = d.pop("kind", None)
    if isinstance(kind, str) and kind in ALIASES["connection"]:
        kind = canonical("connection", kind, stacklevel=3)  # a file saved before kebab-case
    if kind not in CONNECTIONS:
        raise ValueError(f"unknown connection kind {kind!r}; expected one of {sorted(CONNECTIONS)}")
    return CONNECTIONS[kind](**d)


def default_connection(device: Any) -> AbstractConnection:
    """The connection ``"auto"`` picks for ``device``: the one it declares, else ``Linear()``.

    A device declares the connection it was designed for in ``device.natural_connection`` (a
    kind: ``"two-drive"`` for the almost-neuron, whose drives are ``(x·A, A·x²)``; ``"raw"`` for
    a device that takes inputs and weights as drives). Any other device gets ``Linear()``: one
    weighted sum of the inputs per drive, each drive with its own weights, which makes no
    assumption about what the drives mean.

    Args:
        device: An ``AbstractDevice``.

    Returns:
        A connection spec with default options.

    Raises:
        ValueError: If ``device.natural_connection`` names no connection kind.
    """
    kind = getattr(device, "natural_connection", None)
    if kind is None:
        return Linear()
    if isinstance(kind, str) and kind in ALIASES["connection"]:
        kind = canonical("connection", kind, stacklevel=3)
    if kind not in CONNECTIONS:
        raise ValueError(
            f"device {getattr(device, 'name', device)!r} declares natural_connection={kind!r}, "
            f"which is not a connection kind; expected one of {sorted(CONNECTIONS)} or None "
            "(None means Linear(): one weighted sum per drive)"
        )
    return CONNECTIONS[kind]()
