"""Interface wiring of a layered Wuxing network (docs/models.md §A.4, §A.8).

Every neuron has five interfaces, one per element (interface k = element k). A *slot* is one
(neuron, element) pair, numbered ``5 * neuron + element`` with neurons numbered layer after
layer. A link carries ``c · D`` from a sending slot of layer ℓ to a receiving slot of layer
ℓ+1. An interface either receives or sends, never both.

- :func:`one_to_one_wiring`: every interface takes part in at most one link (the paper's
  MODEL1/MODEL2). Input neurons reserve one interface for their pixel, output neurons one for
  the read-out.
- :func:`adder_wiring`: an adder in front of each receiving interface sums up to ``fan_in``
  links, so the link ratio can be chosen freely (paper §3, proposed but not tried there).
- :func:`model_wiring`: MODEL1 ``(784, 839, 283, 96, 32, 10)`` or MODEL2
  ``(784, 1048, 353, 119, 40, 10)``, both with 4711 links (per layer 3136, 1055, 360, 120,
  40; pooled link ratio 0.509 % and 0.380 %).

Which elements play which role is random (per neuron), which matters: the gain from an input
element to an output element of one neuron depends on their distance on the ring and can be
negative (docs/models.md §A.3).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

__all__ = [
    "MODEL1_SIZES",
    "MODEL2_SIZES",
    "MODEL_LINKS",
    "WuxingWiring",
    "adder_wiring",
    "model_wiring",
    "one_to_one_wiring",
]

N_ELEMENTS = 5

#: Layer sizes of MODEL1 (paper §3).
MODEL1_SIZES: tuple[int, ...] = (784, 839, 283, 96, 32, 10)
#: Layer sizes of MODEL2 (paper §3).
MODEL2_SIZES: tuple[int, ...] = (784, 1048, 353, 119, 40, 10)
#: Links per layer pair shared by MODEL1 and MODEL2 (4711 in all; docs/models.md §A.8).
MODEL_LINKS: tuple[int, ...] = (3136, 1055, 360, 120, 40)


@dataclass(frozen=True, eq=False)
class WuxingWiring:
    """Links, pixel slots and read-out slots of a layered Wuxing network.

    Attributes:
        sizes: Neurons per layer, input layer first.
        src: Sending slot of each link, shape (n_links,), int64.
        dst: Receiving slot of each link, shape (n_links,), int64.
        layer: Layer pair ℓ (link from layer ℓ to ℓ+1) of each link, shape (n_links,).
        input_slots: Slot driven by each pixel, shape (n_in,) (one per input neuron).
        output_slots: Read-out slot of each class score, shape (n_out,).
        kind: ``"one-to-one"`` or ``"adder"``.
    """

    sizes: tuple[int, ...]
    src: torch.Tensor
    dst: torch.Tensor
    layer: torch.Tensor
    input_slots: torch.Tensor
    output_slots: torch.Tensor
    kind: str = "one-to-one"

    @property
    def n_neurons(self) -> int:
        """Total number of neurons."""
        return sum(self.sizes)

    @property
    def n_slots(self) -> int:
        """Total number of (neuron, element) slots, ``5 * n_neurons``."""
        return N_ELEMENTS * self.n_neurons

    @property
    def n_links(self) -> int:
        """Number of links."""
        return int(self.src.numel())

    @property
    def links_per_layer(self) -> tuple[int, ...]:
        """Links between layer ℓ and ℓ+1, for each ℓ."""
        counts = torch.bincount(self.layer, minlength=len(self.sizes) - 1)
        return tuple(int(v) for v in counts)

    @property
    def link_ratios(self) -> tuple[float, ...]:
        """Per-layer link ratio ``links_ℓ / (n_ℓ n_{ℓ+1})`` (paper §3)."""
        return tuple(
            n / (a * b)
            for n, a, b in zip(self.links_per_layer, self.sizes[:-1], self.sizes[1:], strict=True)
        )

    @property
    def pooled_link_ratio(self) -> float:
        """Total links / total possible links: the paper's "average LR" (docs/models.md §A.8)."""
        possible = sum(a * b for a, b in zip(self.sizes[:-1], self.sizes[1:], strict=True))
        return self.n_links / possible

    def describe(self) -> dict:
        """JSON-ready summary: sizes, link counts and ratios."""
        return {
            "kind": self.kind,
            "sizes": list(self.sizes),
            "n_links": self.n_links,
            "links_per_layer": list(self.links_per_layer),
            "link_ratios": list(self.link_ratios),
            "pooled_link_ratio": self.pooled_link_ratio,
        }


def _check_sizes(sizes: Sequence[int]) -> tuple[int, ...]:
    out = tuple(sizes)
    if len(out) < 2 or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in out):
        raise ValueError(f"sizes must be >= 2 positive ints (input layer first), got {sizes!r}")
    return out


def _generator(seed: int | torch.Generator) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    return torch.Generator().manual_seed(int(seed))


def _default_links(sizes: tuple[int, ...]) -> tuple[int, ...]:
    """Fill every interface, working back from the output (reproduces MODEL1's counts)."""
    need = (N_ELEMENTS - 1) * sizes[-1]  # output neurons: 4 receiving + 1 read-out
    links = []
    for ell in range(len(sizes) - 2, -1, -1):
        cap = (N_ELEMENTS - 1 if ell == 0 else N_ELEMENTS) * sizes[ell]
        n = min(need, cap)
        links.append(n)
        need = N_ELEMENTS * sizes[ell] - n
    return tuple(reversed(links))


def _roles(
    n: int, n_recv: int, n_send: int, reserved: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Assign interface roles in one layer of ``n`` neurons, balanced over neurons.

    Returns local slots (``5 * neuron + element``) of the reserved, receiving and sending
    interfaces. Each neuron gets ``floor`` or ``ceil`` of ``n_recv / n`` receiving and of
    ``n_send / n`` sending interfaces; the extra ones go to different neurons, so that
    ``recv + send <= 5 - reserved`` holds whenever the totals fit.
    """
    rank = torch.randperm(n, generator=gen)
    r_i = n_recv // n + (rank < n_recv % n).long()
    s_i = n_send // n + (rank >= n - n_send % n).long()
    perm = torch.argsort(torch.rand(n, N_ELEMENTS, generator=gen), dim=1)
    pos = torch.arange(N_ELEMENTS).expand(n, -1)
    slots = torch.arange(n)[:, None] * N_ELEMENTS + perm
    is_res = pos < reserved
    is_recv = (pos >= reserved) & (pos < reserved + r_i[:, None])
    is_send = (pos >= reserved + r_i[:, None]) & (pos < reserved + (r_i + s_i)[:, None])
    return slots[is_res], slots[is_recv], slots[is_send]


def _check_links(sizes: tuple[int, ...], links: Sequence[int]) -> tuple[int, ...]:
    links = tuple(links)
    if len(links) != len(sizes) - 1 or any(
        isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in links
    ):
        raise ValueError(
            f"links must give one positive int per layer pair ({len(sizes) - 1} for sizes "
            f"{sizes}), got {links!r}"
        )
    for ell, n in enumerate(sizes):
        reserved = 1 if ell in (0, len(sizes) - 1) else 0
        recv = links[ell - 1] if ell > 0 else 0
        send = links[ell] if ell < len(sizes) - 1 else 0
        if recv + send > (N_ELEMENTS - reserved) * n:
            raise ValueError(
                f"layer {ell} has {n} neurons with {(N_ELEMENTS - reserved) * n} free interfaces "
                f"but links ask for {recv} receiving + {send} sending; lower links or use "
                "adder_wiring(...) for fan-in > 1"
            )
    return links


def one_to_one_wiring(
    sizes: Sequence[int],
    *,
    links: Sequence[int] | None = None,
    seed: int | torch.Generator = 0,
) -> WuxingWiring:
    """Random one-to-one interface wiring (docs/models.md §A.8, reconstruction).

    Input neurons: one pixel interface and up to 4 sending ones. Output neurons: one read-out
    interface and up to 4 receiving ones. Hidden neurons split their 5 interfaces into
    receiving, sending and idle ones. For each layer pair the sending slots of ℓ and the
    receiving slots of ℓ+1 are shuffled and zipped, so every interface has at most one link.

    Args:
        sizes: Neurons per layer, input layer first.
        links: Links per layer pair. Default: use every interface, working back from the output
            (for MODEL1 this gives 3136, 1055, 360, 120, 40).
        seed: Seed or generator for the random roles and pairing.

    Returns:
        The wiring.

    Raises:
        ValueError: For bad sizes, or link counts that need more interfaces than a layer has.
    """
    sizes = _check_sizes(sizes)
    links = _default_links(sizes) if links is None else _check_links(sizes, links)
    gen = _generator(seed)
    offsets = [0]
    for n in sizes:
        offsets.append(offsets[-1] + N_ELEMENTS * n)
    recv_slots, send_slots, reserved_slots = [], [], []
    last = len(sizes) - 1
    for ell, n in enumerate(sizes):
        reserved = 1 if ell in (0, last) else 0
        recv = links[ell - 1] if ell > 0 else 0
        send = links[ell] if ell < last else 0
        res, r, s = _roles(n, recv, send, reserved, gen)
        reserved_slots.append(res + offsets[ell])
        recv_slots.append(r + offsets[ell])
        send_slots.append(s + offsets[ell])
    src, dst, lay = [], [], []
    for ell in range(last):
        s = send_slots[ell][torch.randperm(links[ell], generator=gen)]
        r = recv_slots[ell + 1][torch.randperm(links[ell], generator=gen)]
        src.append(s)
        dst.append(r)
        lay.append(torch.full((links[ell],), ell, dtype=torch.long))
    return WuxingWiring(
        sizes=sizes,
        src=torch.cat(src),
        dst=torch.cat(dst),
        layer=torch.cat(lay),
        input_slots=torch.sort(reserved_slots[0]).values,
        output_slots=torch.sort(reserved_slots[-1]).values,
        kind="one-to-one",
    )


def model_wiring(
    model: Literal["MODEL1", "MODEL2"] = "MODEL1", *, seed: int | torch.Generator = 0
) -> WuxingWiring:
    """MODEL1 or MODEL2 of the paper with 4711 random one-to-one links (docs/models.md §A.8).

    Args:
        model: ``"MODEL1"`` (sizes 784, 839, 283, 96, 32, 10) or ``"MODEL2"`` (784, 1048,
            353, 119, 40, 10). Both use links 3136, 1055, 360, 120, 40 per layer pair.
        seed: Seed or generator of the random wiring.

    Returns:
        The wiring (pooled link ratio 0.509 % for MODEL1, 0.380 % for MODEL2).
    """
    table = {"MODEL1": MODEL1_SIZES, "MODEL2": MODEL2_SIZES}
    if model not in table:
        raise ValueError(f"model must be 'MODEL1' or 'MODEL2', got {model!r}")
    return one_to_one_wiring(table[model], links=MODEL_LINKS, seed=seed)


def adder_wiring(
    sizes: Sequence[int],
    *,
    link_ratio: float | Sequence[float],
    fan_in: int,
    receiving: int = 3,
    seed: int | torch.Generator = 0,
) -> WuxingWiring:
    """Wiring with an adder in front of each receiving interface (paper §3, proposed there).

    Each receiving interface sums up to ``fan_in`` incoming links; a sending interface may
    feed several links (its signal branches). Input neurons keep 1 pixel + 4 sending
    interfaces, output neurons 4 receiving + 1 read-out, hidden neurons ``receiving``
    receiving and ``5 - receiving`` sending ones. Links are spread evenly over the receiving
    and over the sending interfaces, then paired at random (two links may join the same pair of
    neurons through different elements).

    Args:
        sizes: Neurons per layer, input layer first.
        link_ratio: Per layer pair (or one for all): links ``= round(LR · n_ℓ · n_{ℓ+1})``.
        fan_in: Largest number of links summed by one receiving interface.
        receiving: Receiving interfaces of each hidden neuron (1..4).
        seed: Seed or generator.

    Returns:
        The wiring (``kind="adder"``).

    Raises:
        ValueError: For a bad ratio or fan-in, or a ratio that needs more than ``fan_in``
            links per receiving interface.
    """
    sizes = _check_sizes(sizes)
    n_pairs = len(sizes) - 1
    ratios = (link_ratio,) * n_pairs if isinstance(link_ratio, (int, float)) else link_ratio
    ratios = tuple(float(v) for v in ratios)
    if len(ratios) != n_pairs or not all(0 < v <= 1 for v in ratios):
        raise ValueError(
            f"link_ratio must be in (0, 1], one value or {n_pairs} values, got {link_ratio!r}"
        )
    if isinstance(fan_in, bool) or not isinstance(fan_in, int) or fan_in < 1:
        raise ValueError(f"fan_in must be an int >= 1, got {fan_in!r}")
    if isinstance(receiving, bool) or not isinstance(receiving, int) or not 1 <= receiving <= 4:
        raise ValueError(f"receiving must be an int in 1..4, got {receiving!r}")
    gen = _generator(seed)
    last = len(sizes) - 1
    offsets = [0]
    for n in sizes:
        offsets.append(offsets[-1] + N_ELEMENTS * n)
    recv_slots, send_slots, reserved_slots = [], [], []
    for ell, n in enumerate(sizes):
        reserved = 1 if ell in (0, last) else 0
        n_recv = 0 if ell == 0 else (4 if ell == last else receiving) * n
        n_send = (N_ELEMENTS - reserved) * n - n_recv if ell < last else 0
        res, r, s = _roles(n, n_recv, n_send, reserved, gen)
        reserved_slots.append(res + offsets[ell])
        recv_slots.append(r + offsets[ell])
        send_slots.append(s + offsets[ell])
    src, dst, lay = [], [], []
    for ell in range(last):
        n_links = max(1, round(ratios[ell] * sizes[ell] * sizes[ell + 1]))
        r_all, s_all = recv_slots[ell + 1], send_slots[ell]
        if n_links > fan_in * r_all.numel():
            raise ValueError(
                f"link_ratio {ratios[ell]} between layers {ell} and {ell + 1} needs {n_links} "
                f"links but {r_all.numel()} receiving interfaces with fan_in={fan_in} take at "
                f"most {fan_in * r_all.numel()}; raise fan_in or lower link_ratio"
            )
        # even spread: link j goes to receiver j mod r (shuffled), from sender j mod s (shuffled)
        j = torch.arange(n_links)
        r = r_all[torch.randperm(r_all.numel(), generator=gen)][j % r_all.numel()]
        s = s_all[torch.randperm(s_all.numel(), generator=gen)][j % s_all.numel()]
        s = s[torch.randperm(n_links, generator=gen)]
        src.append(s)
        dst.append(r)
        lay.append(torch.full((n_links,), ell, dtype=torch.long))
    return WuxingWiring(
        sizes=sizes,
        src=torch.cat(src),
        dst=torch.cat(dst),
        layer=torch.cat(lay),
        input_slots=torch.sort(reserved_slots[0]).values,
        output_slots=torch.sort(reserved_slots[-1]).values,
        kind="adder",
    )
