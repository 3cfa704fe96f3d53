"""Reaction networks as plain data, and their mass-action kinetics as batched tensors.

A :class:`ReactionNetwork` is a tuple of :class:`Species` and a tuple of :class:`Reaction`
(reactants and products with stoichiometry, one rate constant). Under mass action the rate of
reaction r is ``v_r = k_r ∏_j x_j^{O_rj}`` (``O`` = reactant orders) and

    dx/dt = S v,      S_ir = (products − reactants)_ir,

with the rows of boundary species set to zero: a boundary species is held constant (as in SBML's
``boundaryCondition="true"``); this is how inputs are clamped.

:class:`MassAction` turns a network into index tensors once, so every evaluation is a gather, a
product and a sparse matrix product over the whole batch, with no Python loop over reactions.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch

__all__ = ["MassAction", "Reaction", "ReactionNetwork", "Species"]

_SID = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
Stoich = tuple[tuple[str, int], ...]


def _check_sid(name: Any, what: str) -> None:
    if not isinstance(name, str) or not _SID.match(name):
        raise ValueError(
            f"{what} must be an identifier (a letter or '_' then letters, digits or '_'; SBML "
            f"SId), got {name!r}"
        )


def _normalise(side: Mapping[str, int] | Stoich, what: str) -> Stoich:
    items = side.items() if isinstance(side, Mapping) else side
    out: dict[str, int] = {}
    for name, coeff in items:
        _check_sid(name, f"{what} species name")
        if isinstance(coeff, bool) or not isinstance(coeff, (int, np.integer)) or coeff < 1:
            raise ValueError(f"{what} stoichiometry of {name!r} must be an int >= 1, got {coeff!r}")
        out[name] = out.get(name, 0) + int(coeff)
    return tuple(sorted(out.items()))


@dataclass(frozen=True)
class Species:
    """A chemical species.

    Args:
        name: Identifier, e.g. ``"x1_3"``.
        initial: Initial concentration ≥ 0.
        boundary: Held constant (never changed by reactions), e.g. a clamped input.
    """

    name: str
    initial: float = 0.0
    boundary: bool = False

    def __post_init__(self) -> None:
        _check_sid(self.name, "Species.name")
        if not (isinstance(self.initial, (int, float)) and math.isfinite(self.initial)):
            raise ValueError(f"Species {self.name!r}: initial must be a finite float")
        if self.initial < 0:
            raise ValueError(
                f"Species {self.name!r}: initial concentration must be >= 0, got {self.initial!r}"
            )
        if not isinstance(self.boundary, bool):
            raise TypeError(f"Species {self.name!r}: boundary must be a bool")


@dataclass(frozen=True)
class Reaction:
    """An irreversible mass-action reaction ``Σ a_j A_j → Σ b_j B_j`` with rate constant k.

    ``reactants``/``products`` may be given as a mapping ``{name: stoichiometry}``; they are
    stored as sorted ``((name, coefficient), ...)`` tuples so equal reactions compare equal.

    Args:
        reactants: Species consumed (and their mass-action orders).
        products: Species produced.
        rate: Rate constant k ≥ 0 (units: concentration^(1−order)/time).
        name: Identifier of the reaction (optional; SBML export numbers unnamed ones).
    """

    reactants: Stoich
    products: Stoich
    rate: float
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "reactants", _normalise(self.reactants, "reactant"))
        object.__setattr__(self, "products", _normalise(self.products, "product"))
        if self.name:
            _check_sid(self.name, "Reaction.name")
        if isinstance(self.rate, bool) or not isinstance(self.rate, (int, float)):
            raise TypeError(f"Reaction {self.name!r}: rate must be a float, got {self.rate!r}")
        if not (math.isfinite(self.rate) and self.rate >= 0):
            raise ValueError(
                f"Reaction {self.name!r}: rate constant must be finite and >= 0, got "
                f"{self.rate!r}; encode a negative weight by the reaction type, not the rate"
            )
        object.__setattr__(self, "rate", float(self.rate))

    @property
    def order(self) -> int:
        """Total reaction order (sum of reactant stoichiometries)."""
        return sum(c for _, c in self.reactants)


@dataclass(frozen=True)
class ReactionNetwork:
    """Species and mass-action reactions.

    Args:
        species: The species, in state-vector order.
        reactions: The reactions, in column order of the stoichiometry matrix.
        name: Model identifier.

    Raises:
        ValueError: On duplicate species names, or a reaction naming an unknown species.
    """

    species: tuple[Species, ...]
    reactions: tuple[Reaction, ...]
    name: str = "reaction_network"
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "species", tuple(self.species))
        object.__setattr__(self, "reactions", tuple(self.reactions))
        _check_sid(self.name, "ReactionNetwork.name")
        index: dict[str, int] = {}
        for i, s in enumerate(self.species):
            if not isinstance(s, Species):
                raise TypeError(f"species[{i}] must be a Species, got {type(s).__name__}")
            if s.name in index:
                raise ValueError(f"species name {s.name!r} appears twice; names must be unique")
            index[s.name] = i
        object.__setattr__(self, "_index", index)
        for r_i, r in enumerate(self.reactions):
            if not isinstance(r, Reaction):
                raise TypeError(f"reactions[{r_i}] must be a Reaction, got {type(r).__name__}")
            for name, _ in r.reactants + r.products:
                if name not in index:
                    raise ValueError(
                        f"reaction {r.name or r_i!r} uses species {name!r}, which is not in "
                        "species; add Species({name!r}) to the network"
                    )

    @property
    def n_species(self) -> int:
        """Number of species."""
        return len(self.species)

    @property
    def n_reactions(self) -> int:
        """Number of reactions."""
        return len(self.reactions)

    def index(self, name: str) -> int:
        """Position of species ``name`` in the state vector."""
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(f"no species named {name!r}") from None

    @cached_property
    def boundary_mask(self) -> np.ndarray:
        """Bool (n_species,): True for species held constant."""
        return np.array([s.boundary for s in self.species], dtype=bool)

    @cached_property
    def _coo(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(S rows, S cols, S values) with boundary rows dropped, and reactant (rows, cols)."""
        s_r, s_c, s_v, o_r, o_c = [], [], [], [], []
        bnd = self.boundary_mask
        for r, rxn in enumerate(self.reactions):
            net: dict[int, int] = {}
            for name, c in rxn.reactants:
                i = self._index[name]
                net[i] = net.get(i, 0) - c
                o_r.extend([r] * c)
                o_c.extend([i] * c)
            for name, c in rxn.products:
                i = self._index[name]
                net[i] = net.get(i, 0) + c
            for i, v in net.items():
                if v != 0 and not bnd[i]:
                    s_r.append(i)
                    s_c.append(r)
                    s_v.append(v)
        return (
            np.asarray(s_r, dtype=np.int64),
            np.asarray(s_c, dtype=np.int64),
            np.asarray(s_v, dtype=np.float64),
            np.asarray(o_r, dtype=np.int64),
            np.asarray(o_c, dtype=np.int64),
        )

    def stoichiometry(self, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Net stoichiometry matrix ``S``, sparse COO of shape (n_species, n_reactions).

        Rows of boundary species are zero (they are held constant).
        """
        r, c, v, _, _ = self._coo
        idx = torch.from_numpy(np.stack([r, c]))
        return torch.sparse_coo_tensor(
            idx,
            torch.from_numpy(v).to(dtype),
            (self.n_species, self.n_reactions),
            check_invariants=True,
        ).coalesce()

    def reactant_orders(self) -> torch.Tensor:
        """Reactant-order matrix ``O``, dense int64 (n_reactions, n_species)."""
        _, _, _, o_r, o_c = self._coo
        out = torch.zeros(self.n_reactions, self.n_species, dtype=torch.int64)
        out.index_put_(
            (torch.from_numpy(o_r), torch.from_numpy(o_c)),
            torch.ones(1, dtype=torch.int64),
            accumulate=True,
        )
        return out

    def rate_constants(self, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Rate constants k, shape (n_reactions,)."""
        return torch.tensor([r.rate for r in self.reactions], dtype=dtype)

    def initial_state(self, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The species' initial concentrations, shape (n_species,)."""
        return torch.tensor([s.initial for s in self.species], dtype=dtype)

    def conservation_laws(self, *, tol: float = 1e-10) -> np.ndarray:
        """Basis of the left null space of ``S``: vectors c with ``cᵀ S = 0``.

        Each row c gives a conserved quantity ``c·x`` of the dynamics. Boundary species are
        constant by definition and get zero weight. Duplicate columns of ``S`` are merged
        first, so large networks with few distinct reaction vectors stay cheap.

        Args:
            tol: Relative singular-value cut-off.

        Returns:
            Array (n_laws, n_species), orthonormal rows; (0, n_species) when nothing is
            conserved.
        """
        import scipy.linalg

        r, c, v, _, _ = self._coo
        dyn = np.flatnonzero(~self.boundary_mask)
        cols: dict[int, list[tuple[int, float]]] = {}
        for i, j, val in zip(r.tolist(), c.tolist(), v.tolist(), strict=True):
            cols.setdefault(j, []).append((i, val))
        unique = {tuple(sorted(entries)) for entries in cols.values()}
        pos = {int(i): k for k, i in enumerate(dyn)}
        mat = np.zeros((len(dyn), max(len(unique), 1)))
        for k, entries in enumerate(unique):
            for i, val in entries:
                mat[pos[i], k] = val
        null = scipy.linalg.null_space(mat.T, rcond=tol)  # (n_dyn, n_laws)
        out = np.zeros((null.shape[1], self.n_species))
        out[:, dyn] = null.T
        return out

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary: sizes, orders and the number of conservation laws."""
        return {
            "name": self.name,
            "n_species": self.n_species,
            "n_boundary": int(self.boundary_mask.sum()),
            "n_reactions": self.n_reactions,
            "max_order": max((r.order for r in self.reactions), default=0),
        }


class MassAction:
    """Batched mass-action kinetics of a :class:`ReactionNetwork`, built once.

    ``rates``/``rhs`` implement ``v = k ∏ x^O`` and ``dx/dt = S v`` with one gather-product over
    reactions and one sparse product. ``self_coefficients`` gives the same right-hand side split
    species by species as ``f_i = a_i + b_i x_i + c_i x_i²`` (the other species frozen), which
    is exact whenever no species enters a reaction with order > 2; the semi-implicit solver in
    :mod:`quasineuron.chemistry.simulate` uses it.

    Args:
        network: The reaction network.
        dtype: Floating dtype of all tensors.
    """

    def __init__(self, network: ReactionNetwork, *, dtype: torch.dtype = torch.float64) -> None:
        if not isinstance(network, ReactionNetwork):
            raise TypeError(f"network must be a ReactionNetwork, got {type(network).__name__}")
        self.network = network
        self.dtype = dtype
        n, n_r = network.n_species, network.n_reactions
        self.n_species = n
        one = n  # index of a constant 1 appended to the state
        self.k = network.rate_constants(dtype=dtype)
        # reactant slots: each reactant repeated by its stoichiometry, padded with the constant
        max_order = max((r.order for r in network.reactions), default=1)
        slots = torch.full((n_r, max(max_order, 1)), one, dtype=torch.int64)
        _, _, _, o_r, o_c = network._coo
        if len(o_r):
            first = np.searchsorted(o_r, o_r)  # o_r is sorted by reaction
            slots[torch.from_numpy(o_r), torch.from_numpy(np.arange(len(o_r)) - first)] = (
                torch.from_numpy(o_c)
            )
        self.slots = slots
        self.S = network.stoichiometry(dtype=dtype)
        self.dynamic = torch.from_numpy(~network.boundary_mask)
        self._build_self_split(slots)

    def _build_self_split(self, slots: torch.Tensor) -> None:
        """Precompute f_i = a_i + b_i x_i + c_i x_i² as a sparse map from monomials."""
        n = self.n_species
        s_r, s_c, s_v, _, _ = self.network._coo
        slot_np = slots.numpy()
        monomials: dict[tuple[int, ...], int] = {}
        rows, cols, vals = [], [], []
        self.split_exact = True
        self.concave = True
        k = self.k.numpy().astype(np.float64)
        for i, r, v in zip(s_r.tolist(), s_c.tolist(), s_v.tolist(), strict=True):
            row = slot_np[r]
            order = int((row == i).sum())
            if order > 2:
                self.split_exact = False
                continue
            others = tuple(sorted(int(j) for j in row if j != i and j != n))
            m = monomials.setdefault(others, len(monomials))
            coeff = k[r] * v
            if order == 2 and coeff > 0:
                self.concave = False
            rows.append(order * n + i)
            cols.append(m)
            vals.append(coeff)
        width = max((len(key) for key in monomials), default=0)
        mono = torch.full((max(len(monomials), 1), max(width, 1)), n, dtype=torch.int64)
        for key, idx in monomials.items():
            if key:
                mono[idx, : len(key)] = torch.tensor(key)
        self.monomials = mono
        coo = torch.sparse_coo_tensor(
            torch.tensor([rows, cols], dtype=torch.int64).reshape(2, -1),
            torch.tensor(vals, dtype=self.dtype),
            (3 * n, mono.shape[0]),
            check_invariants=True,
        )
        self.C = coo.coalesce()

    def _ext(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.n_species:
            raise ValueError(f"x must have shape (batch, {self.n_species}), got {tuple(x.shape)}")
        if x.dtype != self.dtype:
            raise TypeError(f"x has dtype {x.dtype}, the kinetics were built for {self.dtype}")
        return torch.cat([x, torch.ones_like(x[:, :1])], dim=1)

    def rates(self, x: torch.Tensor) -> torch.Tensor:
        """Reaction rates ``v = k ∏ x^O``, shape (batch, n_reactions), for x (batch, n_species)."""
        return self._rates_t(x).T

    def _rates_t(self, x: torch.Tensor) -> torch.Tensor:
        # species-major layout: each gather copies whole rows of the batch
        ext_t = self._ext(x).T.contiguous()  # (n_species + 1, batch)
        return self.k[:, None] * ext_t[self.slots].prod(1)  # (n_reactions, batch)

    def rhs(self, x: torch.Tensor) -> torch.Tensor:
        """``dx/dt = S v``, shape (batch, n_species); zero for boundary species."""
        return (self.S @ self._rates_t(x)).T

    def self_coefficients(self, x: torch.Tensor) -> torch.Tensor:
        """Coefficients (a, b, c) of ``f_i = a_i + b_i x_i + c_i x_i²``, shape (3, batch, n).

        Raises:
            ValueError: If a species enters a reaction with order > 2 (no quadratic split).
        """
        if not self.split_exact:
            raise ValueError(
                "a species enters some reaction with order > 2, so dx_i/dt is not quadratic in "
                "x_i; simulate this network with scipy (simulate.scipy_steady_state)"
            )
        ext = self._ext(x)
        mono = ext[:, self.monomials].prod(-1)  # (batch, n_monomials)
        coeffs = (self.C @ mono.T).T  # (batch, 3n)
        return coeffs.view(x.shape[0], 3, self.n_species).permute(1, 0, 2)
