"""The shared part of every twin: a device with a characterised domain and a domain policy.

A surrogate ("digital twin") is itself an :class:`~quasineuron.devices.base.AbstractDevice`:
drives ``u`` (batch, n_in) → outputs (batch, n_out) on the dtype and torch device of ``u``,
always differentiable. Its ``domain`` is the box its sweep characterised; drives outside it are
counted at every call and handled by ``policy``:

- ``"warn"`` (default): evaluate anyway (the twin extrapolates) and emit an
  :class:`~quasineuron.errors.OutOfDomainWarning` saying how many rows fell outside and where.
- ``"clamp"``: clip every drive into the domain first (zero gradient across the clip).
- ``"raise"``: raise :class:`~quasineuron.errors.OutOfDomainError`.

The check costs one host synchronisation per call (a single ``.any()``); the count and the
message are only computed when some drive is outside.

Inside the domain a device may still fail (raise, return NaN or hang) in some region. The twin
is fitted on the successful points only and carries a *validity mask* of the region it was
fitted on: a boolean per cell of a grid over the domain (cell edges per drive, saved with the
twin). :meth:`AbstractSurrogate.valid` looks drives up in it; what marks a cell valid is decided
by :func:`~quasineuron.surrogate.fit.fit_surrogate` (a cell of a grid sweep is valid when all
its corner points succeeded; for scattered points a cell is invalid when a failed point lies in
it). A twin without a mask (built by hand) is valid on its whole domain.
"""

from __future__ import annotations

import abc
import math
import os
import sys
import warnings
from collections.abc import Sequence
from types import FrameType
from typing import Any, ClassVar, Literal, cast

import torch

from quasineuron.devices.base import AbstractDevice, Box
from quasineuron.errors import OutOfDomainError, OutOfDomainWarning

__all__ = ["POLICIES", "AbstractSurrogate", "DomainPolicy"]

DomainPolicy = Literal["warn", "clamp", "raise"]
POLICIES: tuple[str, ...] = ("warn", "clamp", "raise")

# Frames in these folders (all of quasineuron, all of torch) are skipped when pointing a warning
# at the user's call site, so that it shows once per line of user code, not once per layer.
_INTERNAL_FILES = (
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,
    os.path.dirname(os.path.abspath(torch.__file__)) + os.sep,
)


def _user_stacklevel() -> int:
    """Stack level of the first frame outside quasineuron and torch."""
    level = 2  # relative to the caller of this function, as warnings.warn counts
    frame: FrameType | None = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(_INTERNAL_FILES):
        frame = frame.f_back
        level += 1
    return level


def check_policy(policy: str) -> DomainPolicy:
    """Validate a domain policy name.

    Raises:
        ValueError: If ``policy`` is not one of ``"warn"``, ``"clamp"``, ``"raise"``.
    """
    if policy not in POLICIES:
        raise ValueError(
            f"policy must be one of {POLICIES}, got {policy!r}; 'warn' evaluates and warns, "
            "'clamp' clips drives into the domain, 'raise' refuses out-of-domain drives"
        )
    return cast(DomainPolicy, policy)  # one of POLICIES, checked above


class AbstractSurrogate(AbstractDevice):
    """A differentiable twin of a device, valid on the box its sweep characterised.

    Subclasses implement :meth:`_evaluate` (the twin on drives already checked against the
    domain) and the save/load hooks :meth:`config`, :meth:`tensors` and :meth:`from_saved`.

    Args:
        n_in: Number of drives.
        n_out: Number of outputs.
        domain: The characterised domain.
        policy: What to do with drives outside ``domain``: ``"warn"``, ``"clamp"`` or ``"raise"``.
        source: JSON-ready description of the device the twin imitates (``device.describe()``).
        name: Name used in reports; defaults to ``"twin(<source name>)"``.

    Attributes:
        n_out_of_domain: Running count of drive rows seen outside ``domain`` (all policies).
        fit_report: The :class:`~quasineuron.surrogate.report.FitReport` of the fit that made
            this twin, or ``None``; saved and loaded with the twin.
        validity: ``(edges, cells)`` of the validity mask (see :meth:`set_validity`), or
            ``None`` when the twin is valid on its whole domain; saved and loaded with it.
    """

    # buffers are declared here so the type checker knows them (nn.Module's __getattr__ is untyped)
    _low: torch.Tensor
    _high: torch.Tensor

    differentiable = True
    kind: ClassVar[str] = "abstract"

    def __init__(
        self,
        *,
        n_in: int,
        n_out: int,
        domain: Box,
        policy: DomainPolicy = "warn",
        source: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(domain, Box) or domain.dim != n_in:
            raise ValueError(f"domain must be a Box with {n_in} bounds, got {domain!r}")
        self.n_in = int(n_in)
        self.n_out = int(n_out)
        self.domain = domain
        self.policy = policy
        self.source: dict[str, Any] = dict(source or {})
        self.name = name or f"twin({self.source.get('name', 'device')})"
        self.n_out_of_domain = 0
        self.fit_report: Any = None
        self.validity: tuple[tuple[torch.Tensor, ...], torch.Tensor] | None = None
        low, high = domain.tensors(dtype=torch.float64)
        self.register_buffer("_low", low, persistent=False)
        self.register_buffer("_high", high, persistent=False)

    @property
    def policy(self) -> DomainPolicy:
        """Out-of-domain policy: ``"warn"``, ``"clamp"`` or ``"raise"``."""
        return self._policy

    @policy.setter
    def policy(self, value: str) -> None:
        self._policy = check_policy(value)

    @property
    def compiled(self) -> bool:
        """Whether evaluation runs through ``torch.compile`` (faster per call, seconds to build)."""
        return getattr(self, "_compiled_evaluate", None) is not None

    @compiled.setter
    def compiled(self, value: bool) -> None:
        self._compiled_evaluate = torch.compile(self._evaluate, dynamic=True) if value else None

    def set_validity(self, edges: Sequence[torch.Tensor], cells: torch.Tensor) -> None:
        """Record the region the twin was fitted on as a mask over grid cells.

        Args:
            edges: Per drive, strictly increasing cell edges, ``n_in`` tensors of shape
                (m_k + 1,), spanning the domain.
            cells: Boolean tensor of shape (m_1, ..., m_d): True where the twin was fitted
                on successful device points.

        Raises:
            ValueError: If the shapes disagree or the edges are not increasing.
        """
        edges = tuple(torch.as_tensor(e, dtype=torch.float64).reshape(-1) for e in edges)
        cells = torch.as_tensor(cells).to(torch.bool)
        shape = tuple(len(e) - 1 for e in edges)
        if len(edges) != self.n_in or tuple(cells.shape) != shape or min(shape, default=0) < 1:
            raise ValueError(
                f"a validity mask needs {self.n_in} edge arrays of length >= 2 and cells of "
                f"their shape minus one, got edges of lengths {[len(e) for e in edges]} and "
                f"cells of shape {tuple(cells.shape)}"
            )
        if not all(bool((e[1:] > e[:-1]).all()) for e in edges):
            raise ValueError("validity mask edges must be strictly increasing per drive")
        self.validity = (edges, cells.clone())

    def valid(self, u: torch.Tensor) -> torch.Tensor:
        """Whether drives lie in the region the twin was fitted on.

        A row is valid when it lies in the domain and its cell of the validity mask holds no
        failed device point (see the module docstring for the rule).

        Args:
            u: Drives, shape (batch, n_in).

        Returns:
            Boolean tensor of shape (batch,) on the torch device of ``u``.

        Raises:
            ValueError: If ``u`` is not of shape (batch, n_in).
        """
        self._check_drives(u)
        x = u.detach().to(device="cpu", dtype=torch.float64)
        ok = ((x >= self._low.cpu()) & (x <= self._high.cpu())).all(dim=1) & ~x.isnan().any(1)
        if self.validity is not None:
            edges, cells = self.validity
            flat = torch.zeros(len(x), dtype=torch.long)
            for k, e in enumerate(edges):
                # Cell i holds [e[i], e[i+1]); the last cell also holds its upper edge.
                i = torch.searchsorted(e, x[:, k].contiguous(), right=True) - 1
                flat = flat * (len(e) - 1) + i.clamp(0, len(e) - 2)
            ok &= cells.reshape(-1)[flat]
        return ok.to(u.device)

    def reset_domain_count(self) -> None:
        """Set :attr:`n_out_of_domain` back to zero."""
        self.n_out_of_domain = 0

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """Evaluate the twin.

        Args:
            u: Drives, shape (batch, n_in), any floating dtype and torch device.

        Returns:
            Outputs, shape (batch, n_out), same dtype and torch device as ``u``.

        Raises:
            ValueError: If ``u`` has the wrong shape or is not floating point.
            OutOfDomainError: Under ``policy="raise"``, if a drive is outside the domain.
        """
        low = self._low.to(dtype=u.dtype, device=u.device)
        high = self._high.to(dtype=u.dtype, device=u.device)
        if u.shape[0]:
            # one pass over the drives (per-column extrema), then a tiny comparison: the one
            # host sync per call; the elementwise mask is only built when something is outside.
            # A NaN drive makes its column's extrema NaN, which compare false, and would hide
            # every other row's excursion (an infinite drive went through unclamped): a NaN
            # extremum builds the mask too.
            u_min, u_max = torch.aminmax(u.detach(), dim=0)
            if bool(((u_min < low) | (u_max > high) | u_min.isnan()).any()):
                outside = (u < low) | (u > high)
                if bool(outside.any()):  # not when the extrema were NaN alone
                    u = self._out_of_domain(u, outside, low, high)
        evaluate = getattr(self, "_compiled_evaluate", None) or self._evaluate
        return evaluate(u)

    def _out_of_domain(
        self, u: torch.Tensor, outside: torch.Tensor, low: torch.Tensor, high: torch.Tensor
    ) -> torch.Tensor:
        rows = outside.any(dim=1)
        n = int(rows.sum())
        self.n_out_of_domain += n
        if self._policy == "clamp":
            return torch.clamp(u, low, high)
        self._refuse_or_warn(u, n)
        return u

    def _refuse_or_warn(self, u: torch.Tensor, n: int) -> None:
        """Under ``"raise"`` raise, under ``"warn"`` warn, that ``n`` rows of ``u`` are outside."""
        x = u.detach()
        nan = x.isnan()
        # the span of the drives that are numbers: a NaN drive would make every extremum NaN
        seen_lo = torch.where(nan, math.inf, x).amin(dim=0).tolist()
        seen_hi = torch.where(nan, -math.inf, x).amax(dim=0).tolist()
        n_nan = int(nan.any(dim=1).sum())
        msg = (
            f"{n} of {u.shape[0]} drive rows lie outside the characterised domain of "
            f"{self.name} (low={list(self.domain.low)}, high={list(self.domain.high)}); drives "
            f"seen span low={[round(v, 6) for v in seen_lo]}, "
            f"high={[round(v, 6) for v in seen_hi]}"
            + (f" ({_rows_hold(n_nan)} NaN drives, not counted as outside)." if n_nan else ".")
        )
        if self._policy == "raise":
            raise OutOfDomainError(
                msg + " Rescale the connections, use policy='clamp', or sweep a wider domain."
            )
        warnings.warn(
            msg + " The twin extrapolates there; use policy='clamp' to clip the drives or sweep "
            "a wider domain.",
            OutOfDomainWarning,
            stacklevel=_user_stacklevel(),
        )

    @abc.abstractmethod
    def _evaluate(self, u: torch.Tensor) -> torch.Tensor:
        """The twin on drives ``u`` (batch, n_in) → (batch, n_out), dtype/device of ``u``."""

    @abc.abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-ready settings that, with :meth:`tensors`, rebuild the twin."""

    @abc.abstractmethod
    def tensors(self) -> dict[str, torch.Tensor]:
        """Named tensors that, with :meth:`config`, rebuild the twin."""

    @classmethod
    @abc.abstractmethod
    def from_saved(
        cls, config: dict[str, Any], tensors: dict[str, torch.Tensor], common: dict[str, Any]
    ) -> AbstractSurrogate:
        """Rebuild a twin from :meth:`config`, :meth:`tensors` and the common fields.

        Args:
            config: What :meth:`config` returned.
            tensors: What :meth:`tensors` returned.
            common: Keyword arguments of :class:`AbstractSurrogate` (domain, policy, source, name).
        """

    def common(self) -> dict[str, Any]:
        """The :class:`AbstractSurrogate` keyword arguments, JSON-ready."""
        return {
            "n_in": self.n_in,
            "n_out": self.n_out,
            "domain": self.domain.to_dict(),
            "policy": self._policy,
            "source": self.source,
            "name": self.name,
        }

    def describe(self) -> dict[str, Any]:
        """JSON-ready description: the device fields plus the twin's kind and source device."""
        d = super().describe()
        d["twin"] = {"kind": self.kind, "policy": self._policy, "source": self.source}
        return d

    def extra_repr(self) -> str:
        """Shown by ``repr``: the device fields and the domain policy."""
        return f"{super().extra_repr()}, policy={self._policy!r}"


def _rows_hold(n: int) -> str:
    """``"1 row holds"`` or ``"n rows hold"``."""
    return "1 row holds" if n == 1 else f"{n} rows hold"
