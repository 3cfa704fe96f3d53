r"""Compile a feed-forward smoothed-ReLU network into one mass-action reaction network.

One species per neuron; for neuron X of layer ℓ with inputs Y_j of layer ℓ−1 (docs/models.md §B.2):

| term | reaction | rate constant |
|---|---|---|
| weight w_j > 0 | ``Y_j + X → Y_j + 2X`` | w_j |
| weight w_j < 0 | ``Y_j + X → Y_j`` | \\|w_j\\| |
| bias b > 0 | ``X → 2X`` | b |
| bias b < 0 | ``X → ∅`` | \\|b\\| |
| smoothing | ``∅ → X`` | ε |
| self-limitation | ``2X → X`` | 1 |

so ``dx/dt = ε + z·x − x²`` with ``z = Σ_j w_j y_j + b`` and the steady state is
``σ_ε(z) = (z + √(z² + 4ε))/2``. Inputs are catalysts, never consumed, so layers do not load
each other. The input species (layer 0) are **boundary species**: held constant at the pixel
values (SBML ``boundaryCondition="true"``), not clamped by fast inflow/outflow.

Other activations of the general construction (``activation="sigmoid"`` or ``"saturating"``,
docs/reaction-networks.md) use the same species and the same catalytic inputs; each drive term
w·y·x becomes w·y·x(1 − x), so every weight and bias comes as a pair of reactions
(``Y + X → Y + 2X`` with ``Y + 2X → Y + X`` for w > 0; ``Y + X → Y`` with ``Y + 2X → Y + 3X``
for w < 0), and the neuron's own reactions are ``∅ → X`` (ε) with ``X → ∅`` (2ε) for the
sigmoid, ``∅ → X`` (ε), ``X → ∅`` (ε) and ``2X → X`` (1) for the saturating neuron. Those
networks have positive second-order self-terms, so simulate them with :func:`ode_steady_state`
(the semi-implicit :func:`steady_state` refuses them); :func:`read_weights` reads ReLU
networks only.

Species are named ``x{ℓ}_{i}`` (layer ℓ, neuron i; ℓ = 0 are inputs); zero weights and
biases produce no reaction.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import torch

from quasineuron.chemistry.network import Reaction, ReactionNetwork, Species
from quasineuron.devices.base import Box
from quasineuron.devices.formula import FormulaDevice
from quasineuron.devices.reaction import ACTIVATIONS, smoothed_relu
from quasineuron.network.connections import LinearMap

if TYPE_CHECKING:
    from quasineuron.network.network import DeviceNetwork

__all__ = [
    "CompiledNetwork",
    "closed_form",
    "compile_network",
    "network_weights",
    "reaction_activation_device",
    "read_weights",
    "smoothed_relu_device",
]

_NAME = re.compile(r"^x(\d+)_(\d+)$")


def species_name(layer: int, i: int) -> str:
    """Name of neuron ``i`` of layer ``layer`` (0 = inputs)."""
    return f"x{layer}_{i}"


@dataclass(frozen=True)
class CompiledNetwork:
    """A compiled network: the reaction network and where each layer's species are.

    Args:
        network: The reaction network.
        sizes: Layer widths, inputs first.
        eps: Smoothing inflow ε.
        activation: ``"relu"``, ``"sigmoid"`` or ``"saturating"``.
    """

    network: ReactionNetwork
    sizes: tuple[int, ...]
    eps: float
    activation: str = "relu"

    def layer_slice(self, layer: int) -> slice:
        """Positions of layer ``layer``'s species in the state vector (species are layer-major)."""
        start = sum(self.sizes[:layer])
        return slice(start, start + self.sizes[layer])

    def initial_state(
        self,
        u: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        low: float = 0.01,
        high: float = 1.0,
    ) -> torch.Tensor:
        """States with inputs ``u`` clamped and every other species random in [low, high].

        Args:
            u: Inputs ≥ 0, shape (batch, sizes[0]).
            generator: Source of the random initial concentrations (None: all ``high``).
            low: Lowest initial concentration (> 0).
            high: Highest initial concentration.

        Returns:
            States, shape (batch, n_species), dtype of ``u``.
        """
        if u.dim() != 2 or u.shape[1] != self.sizes[0]:
            raise ValueError(f"u must have shape (batch, {self.sizes[0]}), got {tuple(u.shape)}")
        if bool((u < 0).any()):
            raise ValueError("inputs are concentrations and must be >= 0")
        n = self.network.n_species
        if generator is None:
            x = torch.full((u.shape[0], n), high, dtype=u.dtype)
        else:
            x = low + (high - low) * torch.rand(u.shape[0], n, generator=generator, dtype=u.dtype)
        x[:, self.layer_slice(0)] = u
        return x

    def with_inputs(self, u: torch.Tensor) -> ReactionNetwork:
        """The reaction network with input species' initial values set to ``u`` (n_0,)."""
        if tuple(u.shape) != (self.sizes[0],):
            raise ValueError(f"u must have shape ({self.sizes[0]},), got {tuple(u.shape)}")
        vals = u.tolist()
        species = tuple(
            dataclasses.replace(s, initial=float(vals[i])) if i < len(vals) else s
            for i, s in enumerate(self.network.species)
        )
        return dataclasses.replace(self.network, species=species)

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Output-layer concentrations (the class scores), shape (batch, sizes[-1])."""
        return x[:, self.layer_slice(len(self.sizes) - 1)]


def _as_f64(t: torch.Tensor | Sequence[float], shape: tuple[int, ...], what: str) -> torch.Tensor:
    t = torch.as_tensor(t).detach().to("cpu", torch.float64)
    if tuple(t.shape) != shape:
        raise ValueError(f"{what} must have shape {shape}, got {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{what} has non-finite entries")
    return t


def compile_network(
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor],
    *,
    eps: float,
    name: str = "smoothed_relu_network",
    activation: str = "relu",
) -> CompiledNetwork:
    """Compile ``x^ℓ = σ_ε(W^ℓ x^{ℓ−1} + b^ℓ)`` into a reaction network (table above).

    Args:
        weights: ``W^ℓ`` of shape (n_ℓ, n_{ℓ−1}), one per layer.
        biases: ``b^ℓ`` of shape (n_ℓ,), one per layer.
        eps: Smoothing inflow ε > 0 (rate of ``∅ → X``).
        name: Model identifier.
        activation: ``"relu"`` (the table above), ``"sigmoid"`` or ``"saturating"``.

    Returns:
        The compiled network; hidden and output species start at ``√ε`` (ReLU) or 1/2,
        inputs at 0.

    Raises:
        ValueError: If the shapes do not chain, ε ≤ 0 or the activation is unknown.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)}"
        )
    if len(weights) != len(biases) or not weights:
        raise ValueError(
            f"need one bias per weight matrix and at least one layer, got {len(weights)} "
            f"weights and {len(biases)} biases"
        )
    if not (isinstance(eps, (int, float)) and eps > 0):
        raise ValueError(f"eps must be a float > 0, got {eps!r}")
    sizes = [int(torch.as_tensor(weights[0]).shape[-1])]
    for w, b in zip(weights, biases, strict=True):
        n_out = int(torch.as_tensor(w).shape[0])
        _as_f64(w, (n_out, sizes[-1]), f"weights[{len(sizes) - 1}]")
        _as_f64(b, (n_out,), f"biases[{len(sizes) - 1}]")
        sizes.append(n_out)
    root = float(eps) ** 0.5 if activation == "relu" else 0.5
    bounded = activation != "relu"
    species = [Species(species_name(0, j), 0.0, boundary=True) for j in range(sizes[0])]
    reactions: list[Reaction] = []
    for layer, (w, b) in enumerate(zip(weights, biases, strict=True), start=1):
        w64 = _as_f64(w, (sizes[layer], sizes[layer - 1]), f"weights[{layer - 1}]")
        b64 = _as_f64(b, (sizes[layer],), f"biases[{layer - 1}]")
        for i in range(sizes[layer]):
            x = species_name(layer, i)
            species.append(Species(x, root))
            row = w64[i]
            for j in torch.nonzero(row).flatten().tolist():
                y, wj = species_name(layer - 1, j), float(row[j])
                if wj > 0:
                    reactions.append(
                        Reaction(((y, 1), (x, 1)), ((y, 1), (x, 2)), wj, f"wp_{x}_{y}")
                    )
                    if bounded:  # − w·y·x²: the drive vanishes at x = 1
                        reactions.append(
                            Reaction(((y, 1), (x, 2)), ((y, 1), (x, 1)), wj, f"wq_{x}_{y}")
                        )
                else:
                    reactions.append(Reaction(((y, 1), (x, 1)), ((y, 1),), -wj, f"wn_{x}_{y}"))
                    if bounded:  # + |w|·y·x²
                        reactions.append(
                            Reaction(((y, 1), (x, 2)), ((y, 1), (x, 3)), -wj, f"wm_{x}_{y}")
                        )
            bi = float(b64[i])
            if bi > 0:
                reactions.append(Reaction(((x, 1),), ((x, 2),), bi, f"bp_{x}"))
                if bounded:
                    reactions.append(Reaction(((x, 2),), ((x, 1),), bi, f"bq_{x}"))
            elif bi < 0:
                reactions.append(Reaction(((x, 1),), (), -bi, f"bn_{x}"))
                if bounded:
                    reactions.append(Reaction(((x, 2),), ((x, 3),), -bi, f"bm_{x}"))
            reactions.append(Reaction((), ((x, 1),), float(eps), f"eps_{x}"))
            if activation == "sigmoid":
                reactions.append(Reaction(((x, 1),), (), 2.0 * float(eps), f"out_{x}"))
            else:
                if activation == "saturating":
                    reactions.append(Reaction(((x, 1),), (), float(eps), f"out_{x}"))
                reactions.append(Reaction(((x, 2),), ((x, 1),), 1.0, f"lim_{x}"))
    return CompiledNetwork(
        ReactionNetwork(tuple(species), tuple(reactions), name),
        tuple(sizes),
        float(eps),
        activation,
    )


def read_weights(network: ReactionNetwork) -> tuple[list[torch.Tensor], list[torch.Tensor], float]:
    """Read weights, biases and ε back from a network built by :func:`compile_network`.

    Reactions are classified by their stoichiometry (not their names), so this also works on
    a network imported from SBML.

    Args:
        network: A compiled network (species named ``x{ℓ}_{i}``).

    Returns:
        ``(weights, biases, eps)`` as float64 tensors, shapes as in :func:`compile_network`.

    Raises:
        ValueError: If a species or reaction does not fit the compiled pattern.
    """
    sizes: dict[int, int] = {}
    for s in network.species:
        m = _NAME.match(s.name)
        if m is None:
            raise ValueError(f"species {s.name!r} is not named x<layer>_<index>")
        layer, i = int(m[1]), int(m[2])
        sizes[layer] = max(sizes.get(layer, 0), i + 1)
    n_layers = max(sizes)
    weights = [
        torch.zeros(sizes[ell], sizes[ell - 1], dtype=torch.float64)
        for ell in range(1, n_layers + 1)
    ]
    biases = [torch.zeros(sizes[ell], dtype=torch.float64) for ell in range(1, n_layers + 1)]
    eps_seen: set[float] = set()

    def pos(name: str) -> tuple[int, int]:
        m = _NAME.match(name)
        assert m is not None  # checked above for every species
        return int(m[1]), int(m[2])

    for r in network.reactions:
        re_, pr = dict(r.reactants), dict(r.products)
        kind = (tuple(sorted(re_.values())), tuple(sorted(pr.values())), len(re_), len(pr))
        if kind == ((1, 1), (1, 2), 2, 2) or kind == ((1, 1), (1,), 2, 1):
            if kind[1] == (1,):
                (y,) = pr
                (x,) = [n for n in re_ if n != y]
                sign = -1.0
            else:
                (x,) = [n for n, c in pr.items() if c == 2]
                (y,) = [n for n in pr if n != x]
                sign = 1.0
            (lx, i), (ly, j) = pos(x), pos(y)
            if ly != lx - 1:
                raise ValueError(f"reaction {r.name!r} links non-adjacent layers {ly} → {lx}")
            weights[lx - 1][i, j] += sign * r.rate
        elif (
            len(re_) == 1
            and len(pr) <= 1
            and list(re_.values()) == [1]
            and (not pr or (list(pr) == list(re_) and list(pr.values()) == [2]))
        ):
            lx, i = pos(next(iter(re_)))
            biases[lx - 1][i] += r.rate if pr else -r.rate
        elif not re_ and list(pr.values()) == [1]:
            eps_seen.add(r.rate)
        elif list(re_.values()) == [2] and list(pr) == list(re_) and list(pr.values()) == [1]:
            if r.rate != 1.0:
                raise ValueError(f"self-limitation {r.name!r} has rate {r.rate}, expected 1")
        else:
            raise ValueError(f"reaction {r.name!r} does not match the compiled neuron pattern")
    if len(eps_seen) != 1:
        raise ValueError(f"expected one smoothing rate ε, found {sorted(eps_seen)}")
    return weights, biases, eps_seen.pop()


def network_weights(net: DeviceNetwork) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Extract ``W^ℓ`` (n_ℓ, n_{ℓ−1}) and ``b^ℓ`` (n_ℓ,) from a :class:`DeviceNetwork`.

    Args:
        net: A network with ``Linear()`` connections and ``readout_affine=False`` (the
            chemistry's class scores are the output concentrations themselves).

    Returns:
        Weights (masked) and biases, detached, in the network's dtype.

    Raises:
        ValueError: If the network has an affine read-out or a non-linear connection.
    """
    if getattr(net, "readout_affine", False):
        raise ValueError(
            "the network has a learned affine read-out, which no species implements; build it "
            "with DeviceNetwork(..., readout_affine=False)"
        )
    weights, biases = [], []
    for i, layer in enumerate(net.layers):
        m = layer.map
        if type(m) is not LinearMap or m.n_drives != 1:
            raise ValueError(f"layer {i}: only Linear() connections with one drive compile")
        weights.append((m.weight * m.mask).detach().T.clone())
        b = torch.zeros(m.n_neurons, dtype=m.weight.dtype) if m.bias is None else m.bias[:, 0]
        biases.append(b.detach().clone())
    return weights, biases


def closed_form(
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor],
    u: torch.Tensor,
    *,
    eps: float,
    activation: str = "relu",
) -> torch.Tensor:
    """The network the chemistry implements, ``x^ℓ = σ_ε(W^ℓ x^{ℓ−1} + b^ℓ)``.

    Args:
        weights: ``W^ℓ`` (n_ℓ, n_{ℓ−1}).
        biases: ``b^ℓ`` (n_ℓ,).
        u: Inputs, shape (batch, n_0).
        eps: Smoothing ε.
        activation: ``"relu"``, ``"sigmoid"`` or ``"saturating"``.

    Returns:
        Output concentrations, shape (batch, n_L), dtype of ``u``.
    """
    sigma = ACTIVATIONS[activation].closed_form
    h = u
    for w, b in zip(weights, biases, strict=True):
        h = sigma(h @ w.to(u).T + b.to(u), eps)
    return h


def smoothed_relu_device(*, eps: float, limit: float = 4.0) -> FormulaDevice:
    """Closed-form twin of ``reaction_relu(eps=eps)``: ``σ_ε(z)`` as a :class:`FormulaDevice`.

    Train with it (fast, exact gradients); the compiled chemistry has it as steady state.

    Args:
        eps: Smoothing ε > 0.
        limit: Half-width of the drive domain ``[-limit, limit]`` (sets the initial weights'
            scale in :class:`DeviceNetwork`; the formula is valid for every z).

    Returns:
        A differentiable device with one drive and one output.
    """

    def fn(z: torch.Tensor) -> torch.Tensor:
        return smoothed_relu(z, eps)

    return FormulaDevice(
        fn,
        n_in=1,
        n_out=1,
        domain=Box((-float(limit),), (float(limit),)),
        name="smoothed_relu",
        params={"eps": float(eps)},
    )


def reaction_activation_device(activation: str, *, eps: float, limit: float = 4.0) -> FormulaDevice:
    """Closed-form twin of a reaction neuron of any built activation, as a :class:`FormulaDevice`.

    Args:
        activation: ``"relu"``, ``"sigmoid"`` or ``"saturating"``.
        eps: Rate ε > 0.
        limit: Half-width of the drive domain ``[-limit, limit]``.

    Returns:
        A differentiable device with one drive and one output.

    Raises:
        ValueError: If the activation is unknown.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)}"
        )
    return FormulaDevice(
        partial(_closed, ACTIVATIONS[activation].closed_form, float(eps)),
        n_in=1,
        n_out=1,
        domain=Box((-float(limit),), (float(limit),)),
        name=f"reaction_{activation}_closed_form",
        params={"eps": float(eps), "activation": activation},
    )


def _closed(
    fn: Callable[[torch.Tensor, float], torch.Tensor], eps: float, z: torch.Tensor
) -> torch.Tensor:
    return fn(z, eps)
