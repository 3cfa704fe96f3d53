"""The one vocabulary of user-visible names, and the older spellings that still read.

Every name a user sees (in TOML, Python strings, saved files, ``metrics.json`` keys and the
docs) is lower-case kebab-case and spelled one way: the execution mode ``"physics-aware"``, the
connection ``"two-drive"``, the wiring ``"fan-in"``, the loss ``"cross-entropy"``. Files and
configs written before that rule used snake_case (``"physics_aware"``, ``"two_drive"``,
``"fan_in"``, ``"cross_entropy"``); :func:`canonical` still reads them, with a
``DeprecationWarning`` that names the new spelling, so an old file loads and says how to
upgrade it.

Code that turns a user's string into an object calls :func:`canonical` once, where the string
enters, and looks the result up in its own registry.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["ALIASES", "NAMES", "canonical"]

#: The canonical names per kind of choice, read-only.
NAMES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "mode": ("surrogate", "device", "physics-aware", "direct"),
        "connection": ("linear", "two-drive", "quadratic", "raw"),
        "wiring": ("dense", "sparse", "fan-in", "ports"),
        "loss": ("cross-entropy", "mse"),
        # how a time-coupled (Wuxing) network is run: its time simulation over the window,
        # or the steady state that simulation settles to
        "simulation": ("window", "steady-state"),
    }
)

#: Older spellings per kind, mapped to their canonical name, read-only.
ALIASES: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "mode": MappingProxyType({"physics_aware": "physics-aware"}),
        "connection": MappingProxyType({"two_drive": "two-drive"}),
        "wiring": MappingProxyType({"fan_in": "fan-in"}),
        "loss": MappingProxyType({"cross_entropy": "cross-entropy"}),
        "simulation": MappingProxyType({"time": "window", "steady": "steady-state"}),
    }
)


def canonical(kind: str, name: str, *, stacklevel: int = 2) -> str:
    """The one spelling of ``name``, a choice of ``kind``; an older spelling warns.

    Args:
        kind: What is being named: ``"mode"``, ``"connection"``, ``"wiring"``, ``"loss"`` or
            ``"simulation"`` (a Wuxing network's time window or steady state).
        name: The name as the user or an old file spelled it.
        stacklevel: Passed to :func:`warnings.warn`; 2 points at the caller of this function,
            raise it to point at the caller's caller.

    Returns:
        The canonical (kebab-case) name.

    Raises:
        ValueError: If ``kind`` is not one of the kinds above, or ``name`` is neither a
            canonical name nor an older spelling of one; the message lists the names.
        TypeError: If ``name`` is not a string.

    Warns:
        DeprecationWarning: If ``name`` is an older spelling; the message names the new one.

    Example:
        >>> canonical("wiring", "sparse")
        'sparse'
    """
    if kind not in NAMES:
        raise ValueError(f"unknown kind of name {kind!r}; expected one of {sorted(NAMES)}")
    if not isinstance(name, str):
        raise TypeError(f"a {kind} name must be a string such as {NAMES[kind][0]!r}, got {name!r}")
    if name in NAMES[kind]:
        return name
    new = ALIASES[kind].get(name)
    if new is None:
        raise ValueError(
            f"unknown {kind} {name!r}; expected one of {', '.join(map(repr, NAMES[kind]))}"
        )
    warnings.warn(
        f"the {kind} name {name!r} is an old spelling; write {new!r} instead (saved files "
        "are rewritten with the new spelling when saved again)",
        DeprecationWarning,
        stacklevel=stacklevel,
    )
    return new
