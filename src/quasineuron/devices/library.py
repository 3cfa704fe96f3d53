"""Built-in devices and the one registry that turns a name into a device.

Built-ins are factories returning a configured adapter (never a subclass of one), so every
built-in goes through the same adapter code as a user's device.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch

from quasineuron.devices.base import AbstractDevice, Box
from quasineuron.devices.formula import FormulaDevice
from quasineuron.errors import UntrustedCodeError

__all__ = [
    "ACTIVATIONS",
    "ENTRY_POINT_GROUP",
    "almost_neuron",
    "available_devices",
    "ideal_neuron",
    "make_device",
    "raw_almost_neuron",
]

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
}


def _activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}"
        ) from None


def _ideal(u: torch.Tensor, *, activation: str) -> torch.Tensor:
    return _activation(activation)(u)


def _almost(u: torch.Tensor, *, eps: float, activation: str) -> torch.Tensor:
    # s1 = x·A and s2 = A·x² come precomputed as the two drives; the device is f_nl(s1 - eps*s2).
    return _activation(activation)(u[:, :1] - eps * u[:, 1:2])


def ideal_neuron(activation: str = "tanh", *, limit: float = 6.0) -> FormulaDevice:
    """An ideal neuron ``f_nl(u)`` with one drive.

    Args:
        activation: ``"tanh"``, ``"sigmoid"`` or ``"relu"``.
        limit: The characterised domain is ``[-limit, limit]``.
    """
    _activation(activation)
    return FormulaDevice(
        partial(_ideal, activation=activation),
        n_in=1,
        n_out=1,
        domain=Box((-limit,), (limit,)),
        name=activation,
        params={"activation": activation},
    )


def almost_neuron(
    eps: float = 0.1, *, activation: str = "tanh", limit: float = 8.0
) -> FormulaDevice:
    """The seed's "almost neuron" ``f_nl(x·A − ε·A·x²)`` as a two-drive device.

    Drives are ``s1 = x·A`` and ``s2 = A·x²`` (the ``TwoDrive`` connection computes them), so
    ``y = f_nl(s1 − ε·s2)``; ε = 0 is an ideal neuron.

    Args:
        eps: Deviation ε from an ideal neuron.
        activation: ``"tanh"``, ``"sigmoid"`` or ``"relu"``.
        limit: The characterised domain is ``[-limit, limit]²``.
    """
    _activation(activation)
    eps = float(eps)
    dev = FormulaDevice(
        partial(_almost, eps=eps, activation=activation),
        n_in=2,
        n_out=1,
        domain=Box((-limit, -limit), (limit, limit)),
        name="almost-neuron",
        params={"eps": eps, "activation": activation},
    )
    # Its drives are (x·A, A·x²) from one weight matrix, which is what TwoDrive computes; two
    # independent weighted sums (Linear) would not make the device an almost-neuron.
    dev.natural_connection = "two-drive"
    return dev


def _raw_almost(u: torch.Tensor, *, fan_in: int, eps: float, activation: str) -> torch.Tensor:
    x, a = u[:, :fan_in], u[:, fan_in:]
    return _activation(activation)((x * a).sum(1, keepdim=True) - eps * (a * x * x).sum(1, True))


def raw_almost_neuron(
    fan_in: int = 4,
    eps: float = 0.1,
    *,
    activation: str = "tanh",
    x_limit: float = 1.0,
    a_limit: float = 2.0,
) -> FormulaDevice:
    """The seed's general ``f(x, A)``: a device that takes its inputs and weights as drives.

    ``y = f_nl(Σ_i x_i·a_i − ε·Σ_i a_i·x_i²)`` for a small fan-in; drives are
    ``(x_1..x_k, a_1..a_k)`` (the ``Raw`` connection supplies them), so a twin learns a function of
    ``2·fan_in`` drives, as in the seed's plan.

    Args:
        fan_in: Number of inputs ``k`` (the device has ``2k`` drives).
        eps: Deviation ε from an ideal neuron.
        activation: ``"tanh"``, ``"sigmoid"`` or ``"relu"``.
        x_limit: Inputs are characterised on ``[-x_limit, x_limit]``.
        a_limit: Weights are characterised on ``[-a_limit, a_limit]``.
    """
    _activation(activation)
    if not isinstance(fan_in, int) or fan_in < 1:
        raise ValueError(f"fan_in must be a positive int, got {fan_in!r}")
    dev = FormulaDevice(
        partial(_raw_almost, fan_in=fan_in, eps=float(eps), activation=activation),
        n_in=2 * fan_in,
        n_out=1,
        domain=Box(
            (-x_limit,) * fan_in + (-a_limit,) * fan_in, (x_limit,) * fan_in + (a_limit,) * fan_in
        ),
        name="raw-almost-neuron",
        params={"fan_in": fan_in, "eps": float(eps), "activation": activation},
    )
    # Its drives are the inputs and the weights themselves, which is what Raw hands over.
    dev.natural_connection = "raw"
    return dev


def _wuxing(**kw: Any) -> AbstractDevice:
    from quasineuron.devices.wuxing import wuxing_neuron

    return wuxing_neuron(**kw)


def _wuxing_steady(**kw: Any) -> AbstractDevice:
    from quasineuron.devices.wuxing import wuxing_neuron

    return wuxing_neuron(readout="steady-state", **kw)


def _spice_diffpair(**kw: Any) -> AbstractDevice:
    from quasineuron.devices.spice import spice_diffpair

    return spice_diffpair(**kw)


def _spice_inverter(**kw: Any) -> AbstractDevice:
    from quasineuron.devices.spice import spice_inverter

    return spice_inverter(**kw)


def _reaction_relu(**kw: Any) -> AbstractDevice:
    from quasineuron.devices.reaction import reaction_relu

    return reaction_relu(**kw)


def _reaction_sigmoid(**kw: Any) -> AbstractDevice:
    from quasineuron.devices.reaction import reaction_sigmoid

    return reaction_sigmoid(**kw)


def _reaction_saturating(**kw: Any) -> AbstractDevice:
    from quasineuron.devices.reaction import reaction_saturating

    return reaction_saturating(**kw)


_BUILTINS: dict[str, Callable[..., AbstractDevice]] = {
    "tanh": partial(ideal_neuron, "tanh"),
    "sigmoid": partial(ideal_neuron, "sigmoid"),
    "relu": partial(ideal_neuron, "relu"),
    "almost-neuron": almost_neuron,
    "raw-almost-neuron": raw_almost_neuron,
    "wuxing": _wuxing,
    "wuxing-steady": _wuxing_steady,
    "reaction-relu": _reaction_relu,
    "reaction-saturating": _reaction_saturating,
    "reaction-sigmoid": _reaction_sigmoid,
    # circuit neurons simulated by ngspice, which must be installed to evaluate them
    "spice-diffpair": _spice_diffpair,
    "spice-inverter": _spice_inverter,
}


#: Entry-point group through which an installed package registers its devices.
ENTRY_POINT_GROUP = "quasineuron.devices"


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    # Read on every call (not cached at import) so that a package installed while Python
    # runs, or a folder added to sys.path, is seen; built-in names always win.
    found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    return {ep.name: ep for ep in found if ep.name not in _BUILTINS}


def available_devices() -> list[str]:
    """Names of the built-in devices and of those registered by installed packages.

    A package registers a device under the entry-point group ``quasineuron.devices``
    (``[project.entry-points."quasineuron.devices"]`` in its ``pyproject.toml``).
    """
    return sorted({*_BUILTINS, *_entry_points()})


def _top_package(module_name: str) -> str:
    return module_name.strip().split(".", 1)[0]


def make_device(spec: str, *, allow_import: Sequence[str] = (), **options: Any) -> AbstractDevice:
    """Turn a device name into a device, running only code the user trusts.

    Three kinds of spec are accepted, in this order:

    1. a built-in name (see :func:`available_devices`);
    2. a name registered by an installed package under the entry-point group
       ``quasineuron.devices`` (installing a package is already trusting its code);
    3. ``"package.module:attribute"``, only when ``package`` (the top-level package) is listed
       in ``allow_import``. A config file alone can therefore never make quasineuron import a
       module and call one of its functions (``"os:system"`` would run a shell command).

    Args:
        spec: The device's name.
        allow_import: Top-level packages whose ``module:attribute`` specs may be imported and
            called (the CLI's ``--allow-import PKG``).
        **options: Keyword options passed to the factory (e.g. ``eps=0.05``).

    Returns:
        The device. The attribute (or entry point) must be an :class:`AbstractDevice` instance
        (then no options are accepted) or a factory returning one.

    Raises:
        UntrustedCodeError: If ``spec`` is ``module:attribute`` and its package is not allowed.
        ValueError: If the name is unknown or the options are not accepted.
        TypeError: If the spec does not give a device.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a device spec must be a non-empty string, got {spec!r}")
    allowed = {_top_package(p) for p in allow_import}
    if spec in _BUILTINS:
        return _call_factory(spec, _BUILTINS[spec], options)
    registered = _entry_points()
    if spec in registered:
        try:
            obj = registered[spec].load()
        except Exception as exc:  # a broken plug-in: name it instead of a traceback
            raise ValueError(
                f"device {spec!r} is registered by an installed package as "
                f"{registered[spec].value!r}, but loading it failed: {exc}"
            ) from exc
        return _device_from(spec, obj, options)
    if ":" not in spec:
        raise ValueError(
            f"unknown device {spec!r}; use one of {available_devices()}, register your device "
            f"under the entry-point group {ENTRY_POINT_GROUP!r}, or give 'module:function' "
            "for your own device, with --allow-import PKG for its package"
        )
    module_name, _, attr = spec.partition(":")
    package = _top_package(module_name)
    if package not in allowed:
        raise UntrustedCodeError(
            f"device {spec!r} would import module {module_name!r} and call its attribute "
            f"{attr!r}; quasineuron runs such code only when you allow its package: add "
            f"'--allow-import {package}' on the command line (allow_import=({package!r},) in "
            "Python), or register the device as an entry point of an installed package"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(
            f"cannot import module {module_name!r} for device {spec!r}: {exc}. Is it on "
            "PYTHONPATH (or installed)?"
        ) from exc
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise ValueError(f"module {module_name!r} has no attribute {attr!r}") from None
    return _device_from(spec, obj, options)


def _device_from(spec: str, obj: Any, options: dict[str, Any]) -> AbstractDevice:
    if isinstance(obj, AbstractDevice):
        if options:
            raise ValueError(
                f"{spec!r} is a device instance; it takes no options, got {sorted(options)}"
            )
        return obj
    if not callable(obj):
        raise TypeError(f"{spec!r} is neither a device nor a factory returning one")
    return _call_factory(spec, obj, options)


def _call_factory(
    spec: str, factory: Callable[..., Any], options: dict[str, Any]
) -> AbstractDevice:
    try:
        dev = factory(**options)
    except TypeError as exc:
        raise ValueError(
            f"device {spec!r} does not accept options {sorted(options)}: {exc}"
        ) from exc
    if not isinstance(dev, AbstractDevice):
        raise TypeError(
            f"{spec!r} returned {type(dev).__name__}; a device factory must return an "
            "AbstractDevice (wrap a plain function in FormulaDevice or BlackBoxDevice)"
        )
    return dev
