"""Saving and loading Wuxing networks, with their wiring and simulation window.

A saved network is a folder holding ``network.json`` (``kind = "wuxing"``, layer sizes, wiring
kind and the simulation window) and ``weights.safetensors`` (connection coefficients ``c``,
neuron parameters ``K`` and the wiring's index tensors), whose header carries a SHA-256 digest
of its tensors and of ``network.json``; a damaged or mixed folder is refused on load.

The window is part of the model: a network is scored with the window it was trained with.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from quasineuron._atomic import (
    atomic_write_bytes,
    load_safetensors_checked,
    save_safetensors_checked,
    sha256_hex,
)
from quasineuron.devices.ode import RK4, Euler, Heun
from quasineuron.errors import IntegrityError
from quasineuron.wuxing.network import SimConfig, WuxingNetwork
from quasineuron.wuxing.wiring import WuxingWiring

if TYPE_CHECKING:
    from quasineuron.wuxing.twin import NeuronTwin

__all__ = [
    "KIND",
    "load_neuron_twin",
    "load_wuxing_network",
    "read_kind",
    "save_wuxing_network",
    "window_config",
    "window_dict",
]

#: The ``kind`` field of ``network.json`` that marks a Wuxing network.
KIND = "wuxing"
FORMAT = "quasineuron-wuxing-network"
VERSION = 1
ARCH_FILE = "network.json"
WEIGHTS_FILE = "weights.safetensors"
_WIRING_TENSORS = ("src", "dst", "layer", "input_slots", "output_slots")
_FIX = "save the network again (or restore the folder from a copy)"
#: The files of a neuron twin that a run's stage fitted, in ``checkpoints/stage-N/``.
NEURON_TWIN_FILE = "neuron-twin.safetensors"
NEURON_TWIN_INFO = "neuron-twin.json"
_SOLVERS: dict[str, type[Heun] | type[RK4] | type[Euler]] = {
    "heun": Heun,
    "rk4": RK4,
    "euler": Euler,
}


def window_config(window: dict[str, Any]) -> SimConfig:
    """The :class:`SimConfig` of a window given as ``{T, dt, solver, readout, input_scale}``.

    Raises:
        ValueError: For an unknown solver name or a bad value.
    """
    name = window.get("solver", "heun")
    if name not in _SOLVERS:
        raise ValueError(f"unknown solver {name!r} in the window; choose one of {list(_SOLVERS)}")
    return SimConfig(
        T=float(window["T"]),
        solver=_SOLVERS[name](dt=float(window["dt"])),
        readout=window.get("readout", "mean"),
        input_scale=float(window.get("input_scale", 1.0)),
    )


def window_dict(config: SimConfig) -> dict[str, Any]:
    """The inverse of :func:`window_config`: the window as JSON-ready values."""
    names: dict[type, str] = {cls: name for name, cls in _SOLVERS.items()}
    solver = names[type(config.solver)]
    return {
        "T": config.T,
        "dt": config.solver.dt,
        "solver": solver,
        "readout": config.readout,
        "input_scale": config.input_scale,
    }


def save_wuxing_network(net: WuxingNetwork, path: str | Path) -> Path:
    """Write ``net`` (coefficients, neuron parameters, wiring, window) to the folder ``path``.

    The weights (whose header carries the digest of the new ``network.json``) are written
    first, both atomically, so an interrupted save never leaves a folder that loads.

    Args:
        net: The network.
        path: Folder that receives ``network.json`` and ``weights.safetensors``.

    Returns:
        The folder.
    """
    if not isinstance(net, WuxingNetwork):
        raise TypeError(f"save_wuxing_network expects a WuxingNetwork, got {type(net).__name__}")
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    w = net.wiring
    arch = {
        "format": FORMAT,
        "version": VERSION,
        "kind": KIND,
        "sizes": list(w.sizes),
        "wiring": w.kind,
        "n_links": w.n_links,
        "window": window_dict(net.config),
        "dtype": str(net.c.dtype).removeprefix("torch."),
    }
    text = (json.dumps(arch, indent=2, sort_keys=True) + "\n").encode("utf-8")
    tensors = {
        "c": net.c.detach().cpu().contiguous(),
        "K": net.K.detach().cpu().contiguous(),
        **{f"wiring.{k}": getattr(w, k).detach().cpu().contiguous() for k in _WIRING_TENSORS},
    }
    save_safetensors_checked(folder / WEIGHTS_FILE, tensors, {"arch_sha256": sha256_hex(text)})
    atomic_write_bytes(folder / ARCH_FILE, text)
    return folder


def read_kind(path: str | Path) -> str | None:
    """The ``kind`` recorded in a saved network's ``network.json`` (None when absent)."""
    try:
        arch = json.loads((Path(path) / ARCH_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return arch.get("kind") if isinstance(arch, dict) else None


def load_wuxing_network(path: str | Path) -> WuxingNetwork:
    """Read a network written by :func:`save_wuxing_network`.

    Returns:
        The network with its saved wiring, window, coefficients and neuron parameters; it
        reproduces the saved network's predictions.

    Raises:
        FileNotFoundError: If the folder lacks either file.
        ValueError: If the folder holds another kind of file.
        IntegrityError: If either file is damaged or they come from different saves.
    """
    folder = Path(path)
    for name in (ARCH_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"{folder / name} not found; expected a folder written by save_wuxing_network"
            )
    tensors, meta = load_safetensors_checked(
        folder / WEIGHTS_FILE, what="Wuxing network weights", fix=_FIX
    )
    text = (folder / ARCH_FILE).read_bytes()
    if meta.get("arch_sha256") != sha256_hex(text):
        raise IntegrityError(
            f"network file {str(folder / ARCH_FILE)!r} does not match the checksum stored for it "
            f"in {WEIGHTS_FILE}: it was damaged or edited, or the folder mixes two saves; {_FIX}"
        )
    arch = json.loads(text.decode("utf-8"))
    if arch.get("format") != FORMAT or arch.get("version") != VERSION:
        raise ValueError(
            f"{folder / ARCH_FILE} is not a {FORMAT} v{VERSION} file (format="
            f"{arch.get('format')!r}, version={arch.get('version')!r})"
        )
    wiring = WuxingWiring(
        sizes=tuple(arch["sizes"]),
        **{k: tensors[f"wiring.{k}"] for k in _WIRING_TENSORS},
        kind=arch["wiring"],
    )
    dtype = getattr(torch, arch["dtype"])
    net = WuxingNetwork(wiring, config=window_config(arch["window"]), dtype=dtype)
    with torch.no_grad():
        net.c.copy_(tensors["c"])
        net.K.copy_(tensors["K"])
    net.update_rest_states()
    return net


def load_neuron_twin(folder: str | Path) -> NeuronTwin:
    """Read the neuron twin a stage of ``quasineuron run`` fitted (``checkpoints/stage-N/``).

    Args:
        folder: The stage's checkpoint folder, holding ``neuron-twin.json`` (the gain ``G``,
            the fit options and report) and ``neuron-twin.safetensors`` (the correction MLP).

    Returns:
        The twin, ``u (batch, 5) → D* (batch, 5)``.

    Raises:
        FileNotFoundError: If the folder holds no neuron twin.
        IntegrityError: If the twin's file is damaged.
    """
    from quasineuron.surrogate import load_surrogate
    from quasineuron.surrogate.mlp import MLPSurrogate
    from quasineuron.wuxing.twin import NeuronTwin

    folder = Path(folder)
    info_path, weights = folder / NEURON_TWIN_INFO, folder / NEURON_TWIN_FILE
    for path in (info_path, weights):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found; a neuron twin is written by a stage with "
                "options.neuron_twin (e.g. backprop-steady) into checkpoints/stage-N/"
            )
    info = json.loads(info_path.read_text(encoding="utf-8"))
    correction = load_surrogate(weights)
    if not isinstance(correction, MLPSurrogate):
        raise ValueError(f"{weights} holds a {type(correction).__name__}, not a neuron twin's MLP")
    return NeuronTwin(torch.tensor(info["gain"], dtype=torch.float32), correction)
