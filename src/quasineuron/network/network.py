"""A feed-forward network of device layers."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, TypeVar

import torch

from quasineuron.devices.base import AbstractDevice
from quasineuron.network.connections import AbstractConnection, Linear
from quasineuron.network.layer import DeviceLayer
from quasineuron.network.modes import AbstractMode, Surrogate
from quasineuron.network.variability import Deviation, Variability
from quasineuron.network.wiring import AbstractWiring, Dense

__all__ = ["BOUNDED_DRIVES", "DeviceNetwork"]

#: Choices of ``DeviceNetwork(bounded_drives=...)``.
BOUNDED_DRIVES = ("none", "output", "all")

T = TypeVar("T")


def _per_layer(value: T | Sequence[T], n_layers: int, name: str, single: type | tuple) -> list[T]:
    """Repeat a single value per layer, or check a per-layer sequence's length."""
    if value is None or isinstance(value, single):
        # value is one T here (an isinstance check against a runtime type the checker cannot
        # relate to T)
        return [value] * n_layers  # type: ignore[list-item]
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != n_layers:
            raise ValueError(
                f"{name} has {len(value)} entries but the network has {n_layers} layers; give "
                "one value for all layers or one per layer"
            )
        return list(value)
    raise TypeError(f"{name} must be one value or a sequence of one per layer, got {value!r}")


class DeviceNetwork(torch.nn.Module):
    """Layers of device instances, ``sizes[0] → sizes[1] → … → sizes[-1]`` features.

    Layer ``i`` has ``sizes[i + 1]`` neurons, each using one device output (``output``), so
    ``sizes`` are both neuron and feature counts. An optional learned per-class scale and offset
    (``readout_affine``) maps the last layer's device outputs to logits:
    ``logits = y * scale + offset``.

    Example:
        >>> net = DeviceNetwork(dev, sizes=(784, 100, 10), twin=twin, wiring=Sparse(0.2))
        >>> logits = net(x, mode=PhysicsAware())

    Args:
        device: The true device, or one per layer.
        sizes: Feature counts, input first; at least two entries.
        twin: Differentiable model(s) of the device(s), one or one per layer (None allowed).
        connection: Connection spec, or one per layer.
        wiring: Wiring spec, or one per layer.
        output: Which device output each neuron passes on, or one index per layer.
        readout_affine: Learn a per-class scale and offset on the output layer.
        readout_scale: Initial readout scale. Device outputs are often O(1) (tanh: ±1), and
            logits in [-1, 1] make the softmax nearly uniform and learning slow; 4 starts the
            logits in a useful range.
        seed: Seed of all masks and initial weights (each layer draws its own seed from it).
        dtype: Floating dtype of the weights.
        init_gain: Weights start with standard deviation ``init_gain / sqrt(fan_in)``.
        masks: Ready masks, one per layer (None entries draw from the wiring), e.g. from a file.
        bounded_drives: Which layers squash their drives smoothly into the characterised box
            (see ``DeviceLayer(bounded=True)``): ``"none"``, ``"output"`` (the last layer,
            whose drives grow largest when training pushes logits apart) or ``"all"``.

    Raises:
        ValueError: If a per-layer sequence has the wrong length or a layer does not fit.
    """

    # a torch.nn.ModuleList at run time (see __init__); declared by what it holds
    layers: Sequence[DeviceLayer]

    def __init__(
        self,
        device: AbstractDevice | Sequence[AbstractDevice],
        sizes: Sequence[int] = (784, 100, 10),
        *,
        twin: AbstractDevice | Sequence[AbstractDevice | None] | None = None,
        connection: AbstractConnection | Sequence[AbstractConnection] = Linear(),  # noqa: B008
        wiring: AbstractWiring | Sequence[AbstractWiring] = Dense(),  # noqa: B008
        output: int | Sequence[int] = 0,
        readout_affine: bool = True,
        readout_scale: float = 4.0,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        init_gain: float = 0.5,
        masks: Sequence[torch.Tensor | None] | None = None,
        bounded_drives: str = "none",
    ) -> None:
        super().__init__()
        if bounded_drives not in BOUNDED_DRIVES:
            raise ValueError(
                f"bounded_drives must be one of {list(BOUNDED_DRIVES)}, got {bounded_drives!r}"
            )
        sizes = tuple(sizes)
        if len(sizes) < 2 or any(not isinstance(s, int) or s < 1 for s in sizes):
            raise ValueError(
                f"sizes must list at least two positive ints (inputs, ..., outputs), got {sizes!r}"
            )
        n = len(sizes) - 1
        devices = _per_layer(device, n, "device", AbstractDevice)
        twins = _per_layer(twin, n, "twin", AbstractDevice)
        connections = _per_layer(connection, n, "connection", AbstractConnection)
        wirings = _per_layer(wiring, n, "wiring", AbstractWiring)
        outputs = _per_layer(output, n, "output", int)
        layer_masks: list[torch.Tensor | None] = _per_layer(masks, n, "masks", torch.Tensor)
        if not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        seeds = torch.randint(
            0, 2**31 - 1, (n,), generator=torch.Generator().manual_seed(seed)
        ).tolist()

        self.sizes = sizes
        self.seed = seed
        self.dtype = dtype
        self.init_gain = float(init_gain)
        self.readout_affine = bool(readout_affine)
        self.bounded_drives = bounded_drives
        # the ModuleList registers the layers as submodules; it holds only DeviceLayer
        self.layers = torch.nn.ModuleList(  # type: ignore[assignment]
            DeviceLayer(
                sizes[i],
                sizes[i + 1],
                device=devices[i],
                twin=twins[i],
                connection=connections[i],
                wiring=wirings[i],
                output=outputs[i],
                seed=seeds[i],
                dtype=dtype,
                init_gain=init_gain,
                mask=layer_masks[i],
                bounded=bounded_drives == "all" or (bounded_drives == "output" and i == n - 1),
            )
            for i in range(n)
        )
        if self.readout_affine:
            self.readout_scale = torch.nn.Parameter(
                torch.full((sizes[-1],), float(readout_scale), dtype=dtype)
            )
            self.readout_offset = torch.nn.Parameter(torch.zeros(sizes[-1], dtype=dtype))
        self._variability: Variability | None = None
        self._deviations: list[Deviation] | None = None
        self._noise: torch.Generator | None = None

    # ----------------------------------------------------------------------------------------
    @property
    def variability(self) -> Variability | None:
        """The variability of this view's true devices, or None for nominal devices."""
        return self._variability

    def with_variability(self, variability: Variability | None) -> DeviceNetwork:
        """A view of this network whose true devices deviate as ``variability`` says.

        The view shares all weights with this network (training one trains the other). Its
        per-neuron deviations are drawn once from ``Generator(variability.seed)``; its output
        noise comes from a second generator seeded the same way, so a fresh view replays the
        same noise sequence.

        Args:
            variability: The spread to apply, or None for the nominal devices.

        Returns:
            A new network view.
        """
        view = copy.copy(self)
        if variability is None:
            view._variability, view._deviations, view._noise = None, None, None
            return view
        if not isinstance(variability, Variability):
            raise TypeError(f"variability must be a Variability, got {variability!r}")
        gen = torch.Generator().manual_seed(variability.seed)
        view._variability = variability
        view._deviations = [
            variability.draw(layer.n_neurons, layer.n_drives, layer.device.n_out, generator=gen)
            for layer in self.layers
        ]
        view._noise = torch.Generator().manual_seed(variability.seed + 1)
        return view

    # ----------------------------------------------------------------------------------------
    def forward(
        self,
        x: torch.Tensor,
        *,
        mode: AbstractMode = Surrogate(),  # noqa: B008 - frozen dataclass
    ) -> torch.Tensor:
        """Logits for a batch of inputs.

        Args:
            x: Inputs, shape (batch, sizes[0]), in the network's dtype.
            mode: An execution mode, e.g. ``Surrogate()``, ``TrueDevice()``,
                ``PhysicsAware()`` or ``Direct()``.

        Returns:
            Logits, shape (batch, sizes[-1]).

        Raises:
            TypeError: If ``mode`` is not an execution mode.
            ValueError, NotDifferentiableError: If ``mode`` cannot run on a layer (a missing
                twin; ``Direct()`` on a device that is not differentiable). A backward pass
                through a device that cannot give gradients in ``mode`` raises
                ``NotDifferentiableError``; :meth:`check_mode` finds both up front.
        """
        return self.run(x, mode=mode)[0]

    def drives(
        self,
        x: torch.Tensor,
        *,
        mode: AbstractMode = Surrogate(),  # noqa: B008 - frozen dataclass
    ) -> list[torch.Tensor]:
        """Drives applied to each layer's devices, e.g. for out-of-domain statistics.

        Args:
            x: Inputs, shape (batch, sizes[0]).
            mode: The mode whose forward pass produces the layers' inputs.

        Returns:
            One tensor per layer, shape (batch, n_neurons, n_drives).
        """
        return self.run(x, mode=mode)[1]

    def run(
        self,
        x: torch.Tensor,
        *,
        mode: AbstractMode = Surrogate(),  # noqa: B008 - frozen dataclass
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits (batch, sizes[-1]) and the per-layer drives (see :meth:`drives`)."""
        applied = []
        h = x
        for i, layer in enumerate(self.layers):
            dev = None if self._deviations is None else self._deviations[i]
            h, u = layer.run(h, mode=mode, deviation=dev, generator=self._noise)
            applied.append(u)
        if self.readout_affine:
            h = h * self.readout_scale + self.readout_offset
        return h, applied

    def check_mode(self, mode: AbstractMode, *, training: bool) -> None:
        """Check up front that ``mode`` can run on every layer, e.g. before training.

        With ``training=True``, gradients must flow back through a layer's device when any
        trainable parameter sits in that layer or an earlier one; those layers are checked as
        training, the others (a frozen front) as evaluation only. The readout comes after all
        devices and needs no gradient through them.

        Args:
            mode: The execution mode to check.
            training: Whether the mode will be used to train the network's weights.

        Raises:
            TypeError: If ``mode`` is not an execution mode.
            NotDifferentiableError: If training needs gradients that a layer's device cannot
                give in this mode; the message names the layer, the device and the
                alternatives.
            ValueError: If the mode needs a twin that a layer lacks (or another combination
                that cannot work); the message names the alternatives.
        """
        if not isinstance(mode, AbstractMode):
            raise TypeError(
                f"mode must be an execution mode such as Surrogate() or TrueDevice(), got "
                f"{mode!r}; for a name from a config use mode_from_name(...)"
            )
        upstream = False  # a trainable weight at or before this layer
        for i, layer in enumerate(self.layers):
            upstream = upstream or any(p.requires_grad for p in layer.parameters())
            try:
                mode.check(layer, training=training and upstream)
            except (TypeError, ValueError) as exc:
                # same class (NotDifferentiableError included), with the layer named first
                raise type(exc)(f"layer {i} of {len(self.layers)}: {exc}") from exc

    @torch.no_grad()
    def explain_nonfinite(
        self,
        x: torch.Tensor,
        *,
        mode: AbstractMode = Surrogate(),  # noqa: B008 - frozen dataclass
    ) -> str | None:
        """Say where a forward pass of ``x`` first turns non-finite, or None if it stays finite.

        Layer by layer: non-finite drives (weights or inputs that overflowed), else a device
        model (the one ``mode`` runs) that returned non-finite outputs for finite drives, named
        with the layer and the range of the drives that failed.

        Args:
            x: Inputs, shape (batch, sizes[0]).
            mode: The mode whose device model is checked.

        Returns:
            One sentence, or None.
        """
        h = x
        n = len(self.layers)
        for i, layer in enumerate(self.layers):
            u = layer.drives(h)
            flat = u.reshape(-1, layer.n_drives)
            if not bool(torch.isfinite(flat).all()):
                return (
                    f"the drives of layer {i} of {n} are non-finite: the weights or the inputs of "
                    "that layer overflowed; lower the learning rate or scale the inputs"
                )
            y = layer.device_outputs(flat, mode=mode)
            bad = ~torch.isfinite(y).reshape(len(flat), -1).all(dim=1)
            if bool(bad.any()):
                failed = flat[bad]
                low = [round(v, 4) for v in failed.amin(0).tolist()]
                high = [round(v, 4) for v in failed.amax(0).tolist()]
                model = "the twin of device" if not mode.uses_true_device else "device"
                return (
                    f"{model} {layer.device.name!r} in layer {i} of {n} returned non-finite "
                    f"outputs for {int(bad.sum())} of {len(flat)} drive rows, with drives from "
                    f"{low} to {high} (its domain: {list(layer.device.domain.low)} to "
                    f"{list(layer.device.domain.high)}); keep the drives where the device works "
                    "(wrap it in InputClip, or narrow its domain and characterise it again), fix "
                    "the device there, or train through its twin (Surrogate())"
                )
            h = layer.run(h, mode=mode)[0]
        return None

    def connection_state_dict(self) -> dict[str, torch.Tensor]:
        """The network's own tensors (weights, masks, readout), without device or twin state."""
        return {
            k: v
            for k, v in self.state_dict().items()
            if not any(
                k.startswith(f"layers.{i}.{m}.")
                for i in range(len(self.layers))
                for m in ("device", "twin")
            )
        }

    def describe(self) -> dict[str, Any]:
        """JSON-ready architecture (no tensors)."""
        return {
            "sizes": list(self.sizes),
            "readout_affine": self.readout_affine,
            "seed": self.seed,
            "dtype": str(self.dtype).removeprefix("torch."),
            "init_gain": self.init_gain,
            "bounded_drives": self.bounded_drives,
            "layers": [layer.describe() for layer in self.layers],
        }
