"""Save and load device networks: safetensors for the tensors, JSON for the architecture.

A saved network is a folder holding ``network.json`` (sizes, connection and wiring kinds and
parameters, each layer's ``device.describe()``) and ``weights.safetensors`` (connection weights,
masks, readout). Nothing is pickled. The devices themselves are code, so they are passed again
to :func:`load_network`, which checks them against the saved descriptions. The same
:func:`load_network` reads a saved Wuxing network (``kind = "wuxing"`` in its ``network.json``),
which needs no devices.

Integrity: the weights file's header holds a SHA-256 digest of its tensors and of the exact
bytes of ``network.json``, both verified on load. Each file is replaced atomically, the
weights first; so a save interrupted between the two files leaves new weights beside an old
``network.json``, whose digest then does not match, and loading refuses the folder instead of
combining the two. Folders written before digests existed load unchecked.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import torch

from quasineuron._atomic import atomic_write_bytes, sha256_hex
from quasineuron._checked import read_document_checked, write_document_checked
from quasineuron.devices.base import AbstractDevice
from quasineuron.errors import IntegrityError
from quasineuron.network.connections import connection_from_dict
from quasineuron.network.network import DeviceNetwork, _per_layer
from quasineuron.network.wiring import wiring_from_dict

if TYPE_CHECKING:
    from quasineuron.wuxing.network import WuxingNetwork

__all__ = ["load_network", "save_network"]

FORMAT = "quasineuron.network"
VERSION = 1
ARCH_FILE = "network.json"
WEIGHTS_FILE = "weights.safetensors"
_WEIGHTS_FORMAT = "quasineuron.network.weights"
_ARCH_DIGEST = "network_json_sha256"
_FIX = "save the network again with save_network (or restore the folder from a backup)"


def save_network(net: DeviceNetwork, path: str | Path) -> Path:
    """Write ``net`` to the folder ``path`` (created if missing).

    Variability views are saved as their nominal network; the devices' own state is not saved.
    Both files are written atomically, the weights (which carry the digest of the new
    ``network.json``) first, so an interrupted save never leaves a folder that loads.

    Args:
        net: The network to save.
        path: Folder that receives ``network.json`` and ``weights.safetensors``.

    Returns:
        The folder.
    """
    if not isinstance(net, DeviceNetwork):
        raise TypeError(f"save_network expects a DeviceNetwork, got {type(net).__name__}")
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    arch = {"format": FORMAT, "version": VERSION, **net.describe()}
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.connection_state_dict().items()}
    # default=str keeps odd entries of a device's describe() readable instead of failing.
    text = (json.dumps(arch, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8")
    document = {"format": _WEIGHTS_FORMAT, "version": VERSION, _ARCH_DIGEST: sha256_hex(text)}
    write_document_checked(folder / WEIGHTS_FILE, tensors, document)
    atomic_write_bytes(folder / ARCH_FILE, text)
    return folder


def _check_matches(got: AbstractDevice, saved: dict[str, Any], what: str, layer: int) -> None:
    for key in ("n_in", "n_out", "name"):
        if getattr(got, key) != saved.get(key):
            raise ValueError(
                f"layer {layer}: the network was saved with a {what} whose {key} is "
                f"{saved.get(key)!r}, but the given {what} has {key}={getattr(got, key)!r}; pass "
                f"the {what} the network was trained with (saved description: {saved})"
            )


@overload
def load_network(
    path: str | Path,
    *,
    device: AbstractDevice | Sequence[AbstractDevice],
    twin: AbstractDevice | Sequence[AbstractDevice | None] | None = None,
) -> DeviceNetwork: ...


@overload
def load_network(path: str | Path, *, device: None = None, twin: None = None) -> WuxingNetwork: ...


def load_network(
    path: str | Path,
    *,
    device: AbstractDevice | Sequence[AbstractDevice] | None = None,
    twin: AbstractDevice | Sequence[AbstractDevice | None] | None = None,
) -> DeviceNetwork | WuxingNetwork:
    """Read a saved network of any kind: the ``kind`` in its ``network.json`` decides.

    A device network (written by :func:`save_network`) needs its devices again, because they
    are code; a Wuxing network (written by
    :func:`~quasineuron.wuxing.io.save_wuxing_network`) simulates its own neurons and takes
    none.

    Args:
        path: The folder given to :func:`save_network` or ``save_wuxing_network``.
        device: A device network's true device, or one per layer; must match the saved
            descriptions (``n_in``, ``n_out`` and ``name``). None for a Wuxing network.
        twin: Twin(s) for ``Surrogate()``/``PhysicsAware()`` modes; ``n_in`` and ``n_out`` must
            match the device. None for a Wuxing network.

    Returns:
        The network, with the saved weights and masks; it reproduces the saved predictions.

    Raises:
        FileNotFoundError: If the folder lacks either file.
        ValueError: If the file is not a saved network, the devices do not match it, a device
            network is loaded without ``device`` or a Wuxing network with one.
        IntegrityError: If either file is damaged or the two come from different saves; the
            message names the file.
    """
    from quasineuron.wuxing.io import KIND as WUXING_KIND
    from quasineuron.wuxing.io import load_wuxing_network, read_kind

    folder = Path(path)
    if read_kind(folder) == WUXING_KIND:
        if device is not None or twin is not None:
            raise ValueError(
                f"{folder} holds a Wuxing network, which simulates its own neurons: it takes no "
                "device or twin; call load_network(path) without them"
            )
        return load_wuxing_network(folder)
    if device is None:
        raise ValueError(
            f"{folder} holds a device network: its devices are code and are not saved, so "
            "pass them again, e.g. load_network(path, device=make_device('tanh'), twin=twin)"
        )
    for name in (ARCH_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"{folder / name} not found; expected a folder written by save_network"
            )
    tensors, document = read_document_checked(
        folder / WEIGHTS_FILE, what="network weights", fix=_FIX
    )
    text = (folder / ARCH_FILE).read_bytes()
    if document is not None:
        digest = document.get(_ARCH_DIGEST)
        if not isinstance(digest, str) or sha256_hex(text) != digest:
            raise IntegrityError(
                f"network file {str(folder / ARCH_FILE)!r} does not match the checksum stored "
                f"for it in {WEIGHTS_FILE}: it was damaged or edited, or the folder mixes files "
                f"of two saves (e.g. a save interrupted between its two files); {_FIX}"
            )
    try:
        arch = json.loads(text.decode("utf-8"))
    except ValueError as exc:  # a digest-less (older) folder whose JSON was damaged
        raise IntegrityError(
            f"network file {str(folder / ARCH_FILE)!r} is damaged (not valid JSON: {exc}); {_FIX}"
        ) from None
    if not isinstance(arch, dict):
        raise IntegrityError(
            f"network file {str(folder / ARCH_FILE)!r} is damaged (not a JSON object); {_FIX}"
        )
    if arch.get("format") != FORMAT or arch.get("version") != VERSION:
        raise ValueError(
            f"{folder / ARCH_FILE} is not a {FORMAT} v{VERSION} file (format="
            f"{arch.get('format')!r}, version={arch.get('version')!r})"
        )
    layers = arch["layers"]
    n = len(layers)
    devices = _per_layer(device, n, "device", AbstractDevice)
    for i, (dev, spec) in enumerate(zip(devices, layers, strict=True)):
        _check_matches(dev, spec["device"], "device", i)
    dtype = getattr(torch, arch["dtype"], None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {arch['dtype']!r} in {folder / ARCH_FILE}")
    net = DeviceNetwork(
        devices,
        arch["sizes"],
        twin=twin,
        connection=[connection_from_dict(s["connection"]) for s in layers],
        wiring=[wiring_from_dict(s["wiring"]) for s in layers],
        output=[int(s["output"][0]) for s in layers],
        readout_affine=arch["readout_affine"],
        seed=arch["seed"],
        dtype=dtype,
        init_gain=arch["init_gain"],
        masks=[tensors[f"layers.{i}.map.mask"] for i in range(n)],
        bounded_drives=arch.get("bounded_drives", "none"),
    )
    expected = set(net.connection_state_dict())
    if set(tensors) != expected:
        raise ValueError(
            f"{folder / WEIGHTS_FILE} holds tensors {sorted(set(tensors) ^ expected)} that do not "
            "match the saved architecture; the folder may mix files of two networks"
        )
    net.load_state_dict(tensors, strict=False)
    return net
