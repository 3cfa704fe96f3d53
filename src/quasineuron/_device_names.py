"""Device names without importing torch: what ``quasineuron devices`` lists.

The factories live in :mod:`quasineuron.devices.library`, whose import pulls in torch (about
1.7 s on 2 cores). Listing names needs none of that, so the built-in names are kept here too,
and a test checks that they equal the library's registry.
"""

from __future__ import annotations

import importlib.metadata

__all__ = ["BUILTIN_NAMES", "ENTRY_POINT_GROUP", "device_names"]

#: Names of the built-in devices (the keys of the library's registry).
BUILTIN_NAMES: tuple[str, ...] = (
    "almost-neuron",
    "raw-almost-neuron",
    "reaction-relu",
    "reaction-saturating",
    "reaction-sigmoid",
    "relu",
    "sigmoid",
    "spice-diffpair",
    "spice-inverter",
    "tanh",
    "wuxing",
    "wuxing-steady",
)

#: Entry-point group through which an installed package registers its devices.
ENTRY_POINT_GROUP = "quasineuron.devices"


def device_names() -> list[str]:
    """Sorted names of the built-in devices and of those registered by installed packages.

    Reads the entry points on every call, as ``available_devices`` does, and loads none of
    them (loading would import the registering package).
    """
    found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    return sorted({*BUILTIN_NAMES, *(ep.name for ep in found)})
