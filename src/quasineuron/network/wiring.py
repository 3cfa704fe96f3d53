"""Wirings: which inputs of a layer reach which columns of its connection.

A wiring is a boolean mask of shape ``(n_in, n_out)``: ``mask[i, j]`` is True when input feature
``i`` feeds column ``j``. A column is one neuron for connections that produce all of a neuron's
drives from one weight column (``TwoDrive``, ``Quadratic``, ``Raw``), and one device port (drive)
of one neuron for ``Linear`` (columns ordered neuron-major: ``j = neuron * n_drives + port``).

The mask is applied by multiplying the weights in the forward pass, so masked weights get zero
gradient and stay exactly zero through training. Every mask is drawn from its own
``torch.Generator(seed)``, never from the global random state.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from quasineuron._names import ALIASES, canonical

__all__ = ["AbstractWiring", "Dense", "FanIn", "Ports", "Sparse", "fan_in"]


def _check_sizes(n_in: int, n_out: int) -> None:
    if not (isinstance(n_in, int) and isinstance(n_out, int) and n_in >= 1 and n_out >= 1):
        raise ValueError(f"mask sizes must be positive ints, got n_in={n_in!r}, n_out={n_out!r}")


def fan_in(mask: torch.Tensor) -> torch.Tensor:
    """Number of inputs feeding each column.

    Args:
        mask: Boolean wiring mask, shape (n_in, n_out).

    Returns:
        Integer counts, shape (n_out,).
    """
    return mask.sum(dim=0)


class AbstractWiring(abc.ABC):
    """A rule that draws a boolean wiring mask ``(n_in, n_out)``."""

    kind: ClassVar[str]

    @abc.abstractmethod
    def mask(self, n_in: int, n_out: int, *, seed: int = 0) -> torch.Tensor:
        """Draw the mask.

        Args:
            n_in: Number of input features.
            n_out: Number of columns (neurons, or neuron ports for ``Linear``).
            seed: Seed of the generator the mask is drawn from.

        Returns:
            Boolean tensor of shape (n_in, n_out).
        """

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: the kind and the dataclass fields."""
        # every concrete subclass is a dataclass; this abstract base is not, so the checker
        # cannot know __dataclass_fields__ exists
        return {"kind": self.kind, **{k: getattr(self, k) for k in self.__dataclass_fields__}}  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Dense(AbstractWiring):
    """Every input feeds every column."""

    kind: ClassVar[str] = "dense"

    def mask(self, n_in: int, n_out: int, *, seed: int = 0) -> torch.Tensor:
        """All-True mask of shape (n_in, n_out); ``seed`` is unused."""
        _check_sizes(n_in, n_out)
        return torch.ones(n_in, n_out, dtype=torch.bool)


@dataclass(frozen=True)
class Sparse(AbstractWiring):
    """Random links with an exact link ratio.

    The mask has exactly ``round(link_ratio * n_in * n_out)`` links (at least one), drawn
    uniformly without replacement, as the link ratio ``LR = links / (n_in * n_out)`` of the
    Wuxing papers. A column may receive no link; its neuron then sees only its bias.

    Args:
        link_ratio: Fraction of links kept, in (0, 1].
    """

    link_ratio: float
    kind: ClassVar[str] = "sparse"

    def __post_init__(self) -> None:
        r = self.link_ratio
        if not isinstance(r, (int, float)) or isinstance(r, bool) or not (0.0 < r <= 1.0):
            raise ValueError(
                f"link_ratio must be in (0, 1], got {r!r}; use wiring=Dense() for full connectivity"
            )
        object.__setattr__(self, "link_ratio", float(r))

    def n_links(self, n_in: int, n_out: int) -> int:
        """Number of links in a mask of shape (n_in, n_out)."""
        return max(1, round(self.link_ratio * n_in * n_out))

    def mask(self, n_in: int, n_out: int, *, seed: int = 0) -> torch.Tensor:
        """Boolean mask (n_in, n_out) with exactly :meth:`n_links` True entries."""
        _check_sizes(n_in, n_out)
        gen = torch.Generator().manual_seed(int(seed))
        flat = torch.zeros(n_in * n_out, dtype=torch.bool)
        flat[torch.randperm(n_in * n_out, generator=gen)[: self.n_links(n_in, n_out)]] = True
        return flat.view(n_in, n_out)


@dataclass(frozen=True)
class FanIn(AbstractWiring):
    """Each column receives exactly ``k`` distinct inputs chosen at random.

    Needed by ``Raw`` (fixed number of inputs per neuron) and useful for ``Quadratic``.

    Args:
        k: Inputs per column, at least 1 and at most ``n_in``.
    """

    k: int
    kind: ClassVar[str] = "fan-in"

    def __post_init__(self) -> None:
        if not isinstance(self.k, int) or isinstance(self.k, bool) or self.k < 1:
            raise ValueError(f"FanIn.k must be a positive int, got {self.k!r}")

    def mask(self, n_in: int, n_out: int, *, seed: int = 0) -> torch.Tensor:
        """Boolean mask (n_in, n_out) with exactly ``k`` True entries per column."""
        _check_sizes(n_in, n_out)
        if self.k > n_in:
            raise ValueError(
                f"FanIn(k={self.k}) needs at least k input features, got n_in={n_in}; "
                f"use FanIn(k<={n_in}) or Dense()"
            )
        gen = torch.Generator().manual_seed(int(seed))
        # Per column, the k smallest of n_in uniform keys give a uniform random k-subset.
        rows = torch.rand(n_in, n_out, generator=gen).argsort(dim=0)[: self.k]
        mask = torch.zeros(n_in, n_out, dtype=torch.bool)
        mask.scatter_(0, rows, True)
        return mask


@dataclass(frozen=True)
class Ports(AbstractWiring):
    """Port-to-port wiring: each column (device port) receives ``adder`` inputs, spread evenly.

    With ``adder=1`` every port receives exactly one input, the one-to-one interface wiring of
    the Wuxing network. With ``adder=k > 1`` an adder in front of each port sums ``k`` distinct
    inputs. Inputs are shared out as evenly as possible: each input feeds either
    ``floor(n_out * k / n_in)`` or ``ceil(n_out * k / n_in)`` ports, so when
    ``n_out * k <= n_in`` no input feeds two ports. Use it with ``Linear()``, whose columns are
    device ports.

    Args:
        adder: Inputs summed in front of each port, at least 1 (clipped to ``n_in``).
    """

    adder: int = 1
    kind: ClassVar[str] = "ports"

    def __post_init__(self) -> None:
        if not isinstance(self.adder, int) or isinstance(self.adder, bool) or self.adder < 1:
            raise ValueError(
                f"Ports.adder must be a positive int (inputs per port), got {self.adder!r}"
            )

    def mask(self, n_in: int, n_out: int, *, seed: int = 0) -> torch.Tensor:
        """Boolean mask (n_in, n_out) with ``min(adder, n_in)`` True entries per column."""
        _check_sizes(n_in, n_out)
        k = min(self.adder, n_in)
        gen = torch.Generator().manual_seed(int(seed))
        order = torch.randperm(n_in, generator=gen)  # which input plays which slot
        ports = torch.randperm(n_out, generator=gen)  # which port takes which block of slots
        # Port ports[p] takes inputs order[(p*k + j) mod n_in], j < k: k consecutive slots on a
        # ring of n_in, hence distinct, and every input is used within one of the others.
        slots = (torch.arange(n_out).unsqueeze(1) * k + torch.arange(k)) % n_in  # (n_out, k)
        mask = torch.zeros(n_in, n_out, dtype=torch.bool)
        mask[order[slots], ports.unsqueeze(1).expand(n_out, k)] = True
        return mask


WIRINGS: dict[str, type[AbstractWiring]] = {w.kind: w for w in (Dense, Sparse, FanIn, Ports)}


def wiring_from_dict(d: dict[str, Any]) -> AbstractWiring:
    """Inverse of :meth:`AbstractWiring.to_dict`; rejects unknown kinds and fields."""
    d = dict(d)
    kind = d.pop("kind", None)
    if isinstance(kind, str) and kind in ALIASES["wiring"]:
        kind = canonical("wiring", kind, stacklevel=3)  # a file saved before kebab-case
    if kind not in WIRINGS:
        raise ValueError(f"unknown wiring kind {kind!r}; expected one of {sorted(WIRINGS)}")
    cls = WIRINGS[kind]
    return cls(**d)
