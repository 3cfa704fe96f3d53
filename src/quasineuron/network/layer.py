"""One layer of device instances: a trainable connection in front of a frozen device."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from quasineuron.devices.base import AbstractDevice, Box
from quasineuron.network.connections import AbstractConnection, Linear
from quasineuron.network.modes import MODES, AbstractMode, Surrogate, physics_aware
from quasineuron.network.variability import Deviation
from quasineuron.network.wiring import AbstractWiring, Dense

# physics_aware lives with the modes; it is re-exported here, where it used to be defined.
__all__ = ["DeviceLayer", "physics_aware"]

# Weights and masks use separate streams so that changing the wiring's kind keeps the same
# weight draws (and vice versa); the offset is an arbitrary large prime.
_WEIGHT_SEED_OFFSET = 1_000_003


def _check_mode_type(mode: Any) -> None:
    if not isinstance(mode, AbstractMode):
        names = ", ".join(f"{cls.__name__}()" for cls in MODES.values())
        raise TypeError(
            f"mode must be an execution mode such as {names}, got {mode!r}; "
            "for a name from a config use mode_from_name(...)"
        )


def _check_device_like(obj: Any, name: str) -> None:
    if not isinstance(obj, AbstractDevice):
        raise TypeError(
            f"{name} must be a quasineuron AbstractDevice (e.g. FormulaDevice), got "
            f"{type(obj).__name__}"
        )
    if not isinstance(obj.domain, Box) or obj.domain.dim != obj.n_in:
        raise ValueError(f"{name}.domain must be a Box with {obj.n_in} bounds, got {obj.domain!r}")


class DeviceLayer(torch.nn.Module):
    """A layer of ``n_neurons`` instances of one frozen device behind a trainable connection.

    Forward: x (batch, n_in_features) → drives u (batch, n_neurons, n_drives) by the connection;
    the device runs on all neurons at once as (batch * n_neurons, n_drives) → (…, n_out); the
    layer's features are the selected device outputs, (batch, n_neurons * len(outputs)),
    neuron-major.

    Only the connection trains. The device and the twin are kept as frozen submodules (their
    parameters get ``requires_grad=False`` and they stay in eval mode), so ``.to()`` moves them
    with the layer.

    Args:
        n_in_features: Number of input features.
        n_neurons: Number of device instances.
        device: The true device.
        twin: A differentiable model of ``device`` (same ``n_in``/``n_out``), needed by
            ``Surrogate()`` and ``PhysicsAware()`` modes.
        connection: How inputs become drives.
        wiring: Which inputs reach which mask columns (see ``wiring.py``).
        output: Device output(s) that become the layer's features: an index, a sequence of
            indices, or None for all outputs.
        seed: Seed of the mask (``Generator(seed)``) and of the weights
            (``Generator(seed + 1_000_003)``).
        dtype: Floating dtype of the weights.
        init_gain: Weights start with standard deviation ``init_gain / sqrt(fan_in)``.
        mask: A ready mask (n_in_features, n_columns) that replaces ``wiring``'s draw.
        bounded: Squash the drives smoothly into the characterised box
            (:meth:`characterised_box`): ``u = mid + half * tanh((u_raw - mid) / half)``, so no
            drive ever leaves the region the twin was fitted on. Near the centre of the box the
            map is the identity; towards its edges it saturates.

    Raises:
        ValueError: If the sizes, the twin or the mask do not fit the device and connection.
    """

    def __init__(
        self,
        n_in_features: int,
        n_neurons: int,
        *,
        device: AbstractDevice,
        twin: AbstractDevice | None = None,
        connection: AbstractConnection = Linear(),  # noqa: B008 - frozen dataclass
        wiring: AbstractWiring = Dense(),  # noqa: B008 - frozen dataclass
        output: int | Sequence[int] | None = 0,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        init_gain: float = 0.5,
        mask: torch.Tensor | None = None,
        bounded: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(bounded, bool):
            raise TypeError(f"bounded must be True or False, got {bounded!r}")
        for name, v in (("n_in_features", n_in_features), ("n_neurons", n_neurons)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        _check_device_like(device, "device")
        if twin is not None:
            _check_device_like(twin, "twin")
            if (twin.n_in, twin.n_out) != (device.n_in, device.n_out):
                raise ValueError(
                    f"twin maps {twin.n_in} drives to {twin.n_out} outputs but the device maps "
                    f"{device.n_in} to {device.n_out}; fit the twin on a sweep of this device"
                )
        if not isinstance(connection, AbstractConnection):
            raise TypeError(
                f"connection must be a connection spec such as Linear(), got {connection!r}"
            )
        if not isinstance(wiring, AbstractWiring):
            raise TypeError(f"wiring must be a wiring spec such as Dense(), got {wiring!r}")
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        if not (isinstance(init_gain, (int, float)) and init_gain > 0):
            raise ValueError(f"init_gain must be a positive float, got {init_gain!r}")
        if output is None:
            outputs = tuple(range(device.n_out))
        elif isinstance(output, int):
            outputs = (output,)
        else:
            outputs = tuple(output)
        if not outputs or any(not isinstance(o, int) or not 0 <= o < device.n_out for o in outputs):
            raise ValueError(
                f"output must pick device outputs in [0, {device.n_out}), got {output!r}"
            )

        self.n_in_features = n_in_features
        self.n_neurons = n_neurons
        self.n_drives = connection.n_drives(device.n_in)
        self.outputs = outputs
        self.n_features = n_neurons * len(outputs)
        self.connection = connection
        self.wiring = wiring
        self.seed = int(seed)
        self.init_gain = float(init_gain)
        self.bounded = bounded

        n_cols = connection.n_columns(n_neurons, self.n_drives)
        if mask is None:
            mask = wiring.mask(n_in_features, n_cols, seed=self.seed)
        elif tuple(mask.shape) != (n_in_features, n_cols) or mask.dtype != torch.bool:
            raise ValueError(
                f"mask must be a bool tensor of shape ({n_in_features}, {n_cols}) for "
                f"{type(connection).__name__}, got {mask.dtype} {tuple(mask.shape)}"
            )
        gen = torch.Generator().manual_seed(self.seed + _WEIGHT_SEED_OFFSET)
        self.map = connection.build(
            mask.clone(),
            n_neurons=n_neurons,
            n_drives=self.n_drives,
            domain=device.domain,
            generator=gen,
            dtype=dtype,
            init_gain=self.init_gain,
        )
        self.device = device.requires_grad_(False).eval()
        self.twin = None if twin is None else twin.requires_grad_(False).eval()

    @property
    def mask(self) -> torch.Tensor:
        """The wiring mask, bool (n_in_features, n_columns)."""
        return self.map.mask

    def train(self, mode: bool = True) -> DeviceLayer:
        """Set training mode on the connection; the device and twin stay in eval mode."""
        super().train(mode)
        self.device.eval()
        if self.twin is not None:
            self.twin.eval()
        return self

    def drives(self, x: torch.Tensor) -> torch.Tensor:
        """Drives of every neuron, shape (batch, n_neurons, n_drives), for x (batch, n_in)."""
        if x.dim() != 2 or x.shape[1] != self.n_in_features:
            raise ValueError(
                f"expected inputs of shape (batch, {self.n_in_features}), got {tuple(x.shape)}"
            )
        if x.dtype != self.map.weight.dtype:
            raise TypeError(
                f"inputs have dtype {x.dtype} but the layer's weights are "
                f"{self.map.weight.dtype}; convert with x.to({self.map.weight.dtype})"
            )
        u = self.map(x)
        if self.bounded:
            low, high = self.characterised_box().tensors(dtype=u.dtype, device=u.device)
            mid, half = (high + low) / 2, (high - low) / 2
            u = mid + half * torch.tanh((u - mid) / half)
        return u

    def characterised_box(self) -> Box:
        """The box of drives where the layer's device is characterised and works.

        The twin's domain (the region it was fitted on, which active characterisation may
        widen) when the layer has a twin, else the device's declared domain. Where the twin
        carries a validity mask (sweep points failed), the box shrinks to the cells fitted on
        successful points: per drive, from the lowest to the highest such cell. A device that
        fails towards an edge of its domain (breakdown above some drive) is then kept out of
        the failing part; a hole in the middle stays inside the box (mask such samples with
        ``nonfinite="mask"``).
        """
        twin_domain = getattr(self.twin, "domain", None)
        if not isinstance(twin_domain, Box):
            return self.device.domain
        validity = getattr(self.twin, "validity", None)
        if validity is None:
            return twin_domain
        edges, cells = validity
        if not bool(cells.any()):
            return twin_domain
        low, high = [], []
        for k, e in enumerate(edges):
            # cells valid anywhere along the other drives, as a 1-D mask along drive k
            other = tuple(d for d in range(cells.ndim) if d != k)
            along = cells.any(dim=other) if other else cells
            idx = torch.nonzero(along).reshape(-1)
            low.append(float(e[int(idx[0])]))
            high.append(float(e[int(idx[-1]) + 1]))
        return Box(low=tuple(low), high=tuple(high))

    def forward(
        self,
        x: torch.Tensor,
        *,
        mode: AbstractMode = Surrogate(),  # noqa: B008 - frozen dataclass
        deviation: Deviation | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Evaluate the layer.

        Args:
            x: Inputs, shape (batch, n_in_features).
            mode: Which model of the device runs and how gradients flow.
            deviation: Per-neuron deviations of the true devices (ignored in ``Surrogate()``).
            generator: Source of output noise when ``deviation.noise_std > 0``.

        Returns:
            Features, shape (batch, n_features).
        """
        return self.run(x, mode=mode, deviation=deviation, generator=generator)[0]

    def run(
        self,
        x: torch.Tensor,
        *,
        mode: AbstractMode = Surrogate(),  # noqa: B008 - frozen dataclass
        deviation: Deviation | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Like :meth:`forward`, also returning the drives actually applied to the devices.

        Returns:
            Features (batch, n_features) and applied drives (batch, n_neurons, n_drives).
        """
        _check_mode_type(mode)
        u = self.drives(x)
        batch = u.shape[0]
        if mode.uses_true_device and deviation is not None:
            u = u * deviation.input_gain.to(u)
        y = self.device_outputs(u.reshape(batch * self.n_neurons, self.n_drives), mode=mode)
        y = y.view(batch, self.n_neurons, -1)
        if mode.uses_true_device and deviation is not None:
            y = y * deviation.gain.to(y) + deviation.offset.to(y)
            if deviation.noise_std > 0:
                if generator is None:
                    raise ValueError("output noise needs a torch.Generator; pass generator=...")
                noise = torch.randn(y.shape, generator=generator, dtype=torch.float64)
                y = y + deviation.noise_std * noise.to(y)
        if len(self.outputs) != y.shape[-1]:
            y = y[..., list(self.outputs)]
        return y.reshape(batch, self.n_features), u

    def device_outputs(
        self,
        u: torch.Tensor,
        *,
        mode: AbstractMode = Surrogate(),  # noqa: B008 - frozen dataclass
    ) -> torch.Tensor:
        """Run the device model chosen by ``mode`` on drives the caller built.

        No variability and no output selection: the plain device (or twin) outputs.

        Args:
            u: Drives of all neurons, shape (batch * n_neurons, n_drives).
            mode: Which model of the device runs and how gradients flow.

        Returns:
            Device outputs, shape (batch * n_neurons, device.n_out).

        Raises:
            TypeError: If ``mode`` is not an execution mode.
            ValueError, NotDifferentiableError: If the mode cannot run on this layer (see
                :meth:`AbstractMode.check`).
        """
        _check_mode_type(mode)
        # Checked on every call with training=False: what a mode needs even without gradients
        # (a twin; a differentiable device for Direct) fails here, before the device runs; a
        # gradient that a mode cannot give fails when the backward pass reaches the device
        # (TrueDevice). DeviceNetwork.check_mode checks training up front.
        mode.check(self, training=False)
        return mode.evaluate(self, u)

    # Kept for callers that used the private name; use device_outputs.
    def _evaluate(self, u: torch.Tensor, mode: AbstractMode) -> torch.Tensor:
        return self.device_outputs(u, mode=mode)

    def describe(self) -> dict[str, Any]:
        """JSON-ready architecture of the layer (no tensors)."""
        return {
            "n_in_features": self.n_in_features,
            "n_neurons": self.n_neurons,
            "connection": self.connection.to_dict(),
            "wiring": self.wiring.to_dict(),
            "output": list(self.outputs),
            "seed": self.seed,
            "init_gain": self.init_gain,
            "bounded": self.bounded,
            "device": self.device.describe(),
            "twin": None if self.twin is None else self.twin.describe(),
        }

    def extra_repr(self) -> str:
        """One-line summary for ``repr``."""
        return (
            f"n_in_features={self.n_in_features}, n_neurons={self.n_neurons}, "
            f"connection={self.connection}, wiring={self.wiring}"
        )
