"""Samplers: typed strategies that expand a device's domain into sweep points.

Each sampler is a frozen dataclass validated at construction. ``sampler.points(domain)``
returns a float64 array of shape ``(n_points, domain.dim)`` inside the box, always the same
array for the same sampler and domain (randomness comes only from ``seed``), which is what
makes an interrupted sweep resumable.

Example:
    >>> from quasineuron.devices.base import Box
    >>> Grid(n=3).points(Box(low=(0.0,), high=(1.0,))).ravel().tolist()
    [0.0, 0.5, 1.0]
"""

from __future__ import annotations

import abc
import math
import operator
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import qmc

from quasineuron.devices.base import Box

__all__ = ["AbstractSampler", "Grid", "LatinHypercube", "Random", "Repeated", "Sobol"]


class AbstractSampler(abc.ABC):
    """A rule that expands a :class:`Box` into points ``(n_points, dim)``."""

    @abc.abstractmethod
    def points(self, domain: Box) -> np.ndarray:
        """Expand ``domain`` into points.

        Args:
            domain: The box of drives, of dimension ``dim``.

        Returns:
            Float64 array of shape ``(n_points, dim)``; every row lies in ``domain``.

        Raises:
            ValueError: If the sampler does not fit the dimension of ``domain``.
        """

    @abc.abstractmethod
    def n_points(self, dim: int) -> int:
        """Number of points :meth:`points` returns for a domain of dimension ``dim``."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """JSON-ready description, stored in sweep manifests."""


def _check_count(value: Any, what: str, *, minimum: int) -> int:
    try:
        n = operator.index(value)
    except TypeError:
        raise TypeError(f"{what} must be an int, got {value!r}") from None
    if n < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {n}")
    return n


def _check_seed(seed: Any, cls: str) -> int:
    try:
        s = operator.index(seed)
    except TypeError:
        raise TypeError(
            f"{cls}.seed must be a non-negative int, got {seed!r}; e.g. {cls}(n=256, seed=0)"
        ) from None
    if s < 0:
        raise ValueError(f"{cls}.seed must be a non-negative int, got {s}")
    return s


def _scale(unit: np.ndarray, domain: Box) -> np.ndarray:
    """Map points of the unit cube (n, dim) affinely onto ``domain``."""
    low = np.asarray(domain.low, dtype=np.float64)
    high = np.asarray(domain.high, dtype=np.float64)
    # Clip guards the last ulp: low + (high - low) * 1.0 can round above high.
    return np.clip(low + (high - low) * unit, low, high)


@dataclass(frozen=True)
class Grid(AbstractSampler):
    """A regular grid including the endpoints of every axis.

    Axis ``i`` has ``n[i]`` equally spaced values from ``low[i]`` to ``high[i]`` (a count of 1
    gives the midpoint). Points are in C order: the last drive varies fastest.

    Args:
        n: Points per axis; one int for every axis or a tuple with one count per drive.
    """

    n: int | tuple[int, ...]

    def __post_init__(self) -> None:
        if isinstance(self.n, (tuple, list)):
            if not self.n:
                raise ValueError("Grid.n must not be empty; give one count per drive, e.g. (11, 5)")
            counts = tuple(_check_count(v, f"Grid.n[{i}]", minimum=1) for i, v in enumerate(self.n))
            object.__setattr__(self, "n", counts)
        else:
            object.__setattr__(self, "n", _check_count(self.n, "Grid.n", minimum=1))

    def _counts(self, dim: int) -> tuple[int, ...]:
        if isinstance(self.n, int):
            return (self.n,) * dim
        if len(self.n) != dim:
            raise ValueError(
                f"Grid.n has {len(self.n)} counts {self.n} but the domain has {dim} drives; "
                f"give one count per drive or a single int"
            )
        return self.n

    def n_points(self, dim: int) -> int:  # noqa: D102 (documented on the base class)
        return math.prod(self._counts(dim))

    def points(self, domain: Box) -> np.ndarray:  # noqa: D102
        counts = self._counts(domain.dim)
        axes = [
            np.linspace(lo, hi, c) if c > 1 else np.array([(lo + hi) / 2.0])
            for lo, hi, c in zip(domain.low, domain.high, counts, strict=True)
        ]
        mesh = np.meshgrid(*axes, indexing="ij")
        return np.stack([m.ravel() for m in mesh], axis=-1).astype(np.float64)

    def describe(self) -> dict[str, Any]:  # noqa: D102
        return {"kind": "Grid", "n": list(self.n) if isinstance(self.n, tuple) else self.n}


@dataclass(frozen=True)
class _Seeded(AbstractSampler):
    n: int
    seed: int = 0

    def __post_init__(self) -> None:
        cls = type(self).__name__
        object.__setattr__(self, "n", _check_count(self.n, f"{cls}.n", minimum=1))
        object.__setattr__(self, "seed", _check_seed(self.seed, cls))

    def n_points(self, dim: int) -> int:
        return self.n

    def points(self, domain: Box) -> np.ndarray:
        return _scale(self._unit(domain.dim, np.random.default_rng(self.seed)), domain)

    @abc.abstractmethod
    def _unit(self, dim: int, rng: np.random.Generator) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]:
        return {"kind": type(self).__name__, "n": self.n, "seed": self.seed}


@dataclass(frozen=True)
class Random(_Seeded):
    """Independent uniform points in the domain.

    Args:
        n: Number of points.
        seed: Seed of the numpy ``PCG64`` generator.
    """

    def _unit(self, dim: int, rng: np.random.Generator) -> np.ndarray:
        return rng.random((self.n, dim))


@dataclass(frozen=True)
class Sobol(_Seeded):
    """A scrambled Sobol' low-discrepancy sequence (scipy.stats.qmc.Sobol).

    The first ``n`` points of the sequence are used. Its balance properties hold exactly when
    ``n`` is a power of two, so prefer ``n = 2**m``.

    Reference: Sobol', "On the distribution of points in a cube and the approximate
    evaluation of integrals" (1967); Owen scrambling as implemented by scipy.

    Args:
        n: Number of points.
        seed: Seed of the scrambling.
    """

    def _unit(self, dim: int, rng: np.random.Generator) -> np.ndarray:
        engine = qmc.Sobol(dim, scramble=True, rng=rng)
        # random_base2 avoids scipy's warning for n that is not a power of two; the first n
        # points of a longer sequence are the same points random(n) would give.
        m = max(0, math.ceil(math.log2(self.n)))
        return engine.random_base2(m)[: self.n]


@dataclass(frozen=True)
class LatinHypercube(_Seeded):
    """A Latin hypercube design (scipy.stats.qmc.LatinHypercube).

    Every axis is cut into ``n`` equal strata and each stratum holds exactly one point.

    Reference: McKay, Beckman and Conover, Technometrics 21 (1979).

    Args:
        n: Number of points.
        seed: Seed of the design.
    """

    def _unit(self, dim: int, rng: np.random.Generator) -> np.ndarray:
        return qmc.LatinHypercube(dim, rng=rng).random(self.n)


@dataclass(frozen=True)
class Repeated(AbstractSampler):
    """Every point of ``base`` evaluated ``repeats`` times, to measure the device's noise.

    The points are ``repeats`` copies of ``base.points(domain)`` one after the other: row
    ``r * n + i`` is repeat ``r`` of base point ``i`` (``n = base.n_points(dim)``), so each copy
    of a point lands in a different batch (noise that is correlated within a batch still shows
    up between repeats). The description adds ``"repeats"`` to the base sampler's, so a sweep
    store records it and a resume with another number of repeats is refused.

    ``sweep(device, sampler, repeats=k)`` wraps the sampler in this for you.

    Args:
        base: The sampler that draws the distinct points.
        repeats: Evaluations per point, >= 2 (1 would be ``base`` itself).
    """

    base: AbstractSampler
    repeats: int

    def __post_init__(self) -> None:
        if not isinstance(self.base, AbstractSampler) or isinstance(self.base, Repeated):
            raise TypeError(
                f"Repeated.base must be a sampler such as Grid(n=11) (not itself Repeated), "
                f"got {self.base!r}"
            )
        object.__setattr__(self, "repeats", _check_count(self.repeats, "repeats", minimum=2))

    def n_points(self, dim: int) -> int:  # noqa: D102
        return self.repeats * self.base.n_points(dim)

    def points(self, domain: Box) -> np.ndarray:  # noqa: D102
        return np.tile(self.base.points(domain), (self.repeats, 1))

    def describe(self) -> dict[str, Any]:  # noqa: D102
        return {**self.base.describe(), "repeats": self.repeats}


def repeat_index(sampler: dict[str, Any], n_points: int) -> np.ndarray:
    """Repeat number of every row of a table swept with ``sampler`` (its ``describe()``).

    Args:
        sampler: The table's sampler description; ``"repeats"`` absent means 1.
        n_points: Rows of the table.

    Returns:
        Int array (n_points,): 0 for the first evaluation of a point, 1 for the second, ...
    """
    repeats = int(sampler.get("repeats", 1)) if isinstance(sampler, dict) else 1
    if repeats <= 1 or n_points % repeats:
        return np.zeros(n_points, dtype=np.int64)
    return np.arange(n_points, dtype=np.int64) // (n_points // repeats)
