"""Local learning rules: the perceptron rule and the delta rule, with an error-dependent rate.

Each neuron learns from its own error and inputs only, with no gradient of the device:

    ``w_i(p+1) = w_i(p) + alpha(e(p), x(p)) * x_i(p) * e(p)``,  ``b(p+1) = b(p) + alpha * e(p)``

where ``e = d - Y`` is the neuron's error on sample ``p``. For the perceptron rule ``Y`` is the
hard-limited output (1 if the device output exceeds ``level``, else 0); for the delta rule
(Widrow & Hoff, 1960) ``Y`` is the device output itself. The learning rate may depend on the
error and the inputs, ``alpha(e, x) >= 0``; the lecture notes' odd-power extension
``sum_j alpha_j e**(2j+1)`` is ``alpha(e) = sum_j alpha_j e**(2j)`` (:class:`ErrorPolynomial`).

Rosenblatt, "The perceptron: a probabilistic model for information storage and organization in
the brain", Psychological Review 65(6), 386-408 (1958).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F

from quasineuron.data.dataset import ArrayDataset
from quasineuron.network.connections import LinearMap
from quasineuron.network.layer import DeviceLayer
from quasineuron.network.modes import AbstractMode, TrueDevice

__all__ = [
    "AbstractLocalRule",
    "AbstractRate",
    "Constant",
    "Delta",
    "ErrorPolynomial",
    "LocalEpoch",
    "LocalResult",
    "LocalStep",
    "Perceptron",
    "train_local",
]

#: alpha(e, x): errors (batch, n_neurons) and inputs (batch, n_in) → rates broadcastable to
#: (batch, n_neurons), all >= 0.
RateFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class AbstractRate(abc.ABC):
    """A learning rate ``alpha(e, x) >= 0`` as a typed object."""

    @abc.abstractmethod
    def __call__(self, e: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Rates for errors e (batch, n_neurons) and inputs x (batch, n_in)."""


@dataclass(frozen=True)
class Constant(AbstractRate):
    """A constant rate ``alpha``.

    Args:
        alpha: The learning rate, > 0.
    """

    alpha: float = 0.1

    def __post_init__(self) -> None:
        if not (
            isinstance(self.alpha, int | float) and math.isfinite(self.alpha) and self.alpha > 0
        ):
            raise ValueError(f"Constant.alpha must be a finite number > 0, got {self.alpha!r}")

    def __call__(self, e: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``alpha`` everywhere, shape (batch, n_neurons)."""
        return torch.full_like(e, float(self.alpha))


@dataclass(frozen=True)
class ErrorPolynomial(AbstractRate):
    """The error-dependent rate ``alpha(e) = sum_j alpha_j e**(2j)``.

    The update ``alpha(e) x e = x sum_j alpha_j e**(2j+1)`` is then a non-decreasing odd
    function of the error: large errors move the weights faster than the linear rule does.

    Args:
        coefficients: ``(alpha_0, alpha_1, ...)``, all >= 0 and not all 0.
    """

    coefficients: tuple[float, ...] = (0.1,)

    def __post_init__(self) -> None:
        c = tuple(float(v) for v in self.coefficients)
        if not c or any(not math.isfinite(v) or v < 0 for v in c) or not any(c):
            raise ValueError(
                "ErrorPolynomial.coefficients must be finite numbers >= 0, not all zero (so that "
                f"alpha(e) >= 0), got {self.coefficients!r}; e.g. ErrorPolynomial((0.1, 0.5))"
            )
        object.__setattr__(self, "coefficients", c)

    def __call__(self, e: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``sum_j alpha_j e**(2j)``, shape (batch, n_neurons)."""
        e2 = e * e
        out = torch.zeros_like(e)
        for c in reversed(self.coefficients):  # Horner in e**2
            out = out * e2 + c
        return out


def _as_rate(alpha: Any, owner: str) -> AbstractRate | RateFn:
    if isinstance(alpha, bool):
        raise TypeError(
            f"{owner}.alpha must be a number, a rate object or a callable, got {alpha!r}"
        )
    if isinstance(alpha, int | float):
        return Constant(float(alpha))
    if isinstance(alpha, AbstractRate) or callable(alpha):
        return alpha
    raise TypeError(
        f"{owner}.alpha must be a number, Constant(...), ErrorPolynomial(...) or a callable "
        f"alpha(e, x), got {alpha!r}"
    )


class AbstractLocalRule(abc.ABC):
    """A local rule: how a neuron's output becomes the error ``e`` that drives its update."""

    alpha: float | AbstractRate | RateFn

    @abc.abstractmethod
    def error(self, y: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """Errors (batch, n_neurons) of device outputs y against targets d, same shape."""

    def rate(self, e: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Learning rates alpha(e, x) (batch, n_neurons), checked to be >= 0."""
        a = torch.as_tensor(_as_rate(self.alpha, type(self).__name__)(e, x), dtype=e.dtype)
        a = a.expand_as(e)
        if bool((a < 0).any()) or not bool(torch.isfinite(a).all()):
            raise ValueError(
                f"{type(self).__name__}.alpha(e, x) must be finite and >= 0, got values in "
                f"[{a.min().item()}, {a.max().item()}]"
            )
        return a


@dataclass(frozen=True)
class Perceptron(AbstractLocalRule):
    """Rosenblatt's perceptron rule on the hard-limited device output.

    ``Y = 1 if device_output > level else 0`` and ``e = d - Y`` with targets ``d`` in {0, 1}:
    weights move only on misclassified samples.

    Args:
        alpha: Learning rate: a number, :class:`Constant`, :class:`ErrorPolynomial` or a
            callable ``alpha(e, x)``.
        level: Device output above which the neuron says 1 (e.g. 0.5 for outputs in [0, 1],
            0 for a tanh).
    """

    alpha: float | AbstractRate | RateFn = 0.1
    level: float = 0.5

    def __post_init__(self) -> None:
        _as_rate(self.alpha, "Perceptron")
        if not math.isfinite(self.level):
            raise ValueError(f"Perceptron.level must be finite, got {self.level!r}")

    def error(self, y: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """``d - step(y - level)``."""
        return d - (y > self.level).to(y.dtype)


@dataclass(frozen=True)
class Delta(AbstractLocalRule):
    """The delta (Widrow–Hoff, LMS) rule on the device output: ``e = d - y``.

    For an identity device this is gradient descent on ``e**2 / 2`` per sample; for other
    devices it ignores the device's slope, which a black box does not give.

    Args:
        alpha: Learning rate: a number, :class:`Constant`, :class:`ErrorPolynomial` or a
            callable ``alpha(e, x)``.
    """

    alpha: float | AbstractRate | RateFn = 0.05

    def __post_init__(self) -> None:
        _as_rate(self.alpha, "Delta")

    def error(self, y: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """``d - y``."""
        return d - y


@dataclass(frozen=True)
class LocalStep:
    """One update: the samples it used and their error before it.

    Callbacks get it right after the update, so the layer already holds the new weights.

    Args:
        epoch: Epoch number, from 1.
        step: Update number over the whole run, from 1.
        samples: Indices into the data set of the samples of this update, in visiting order.
        mse: Mean squared error ``mean(e**2)`` of those samples before the update.
    """

    epoch: int
    step: int
    samples: tuple[int, ...]
    mse: float


@dataclass(frozen=True)
class LocalEpoch:
    """One pass over the data.

    Args:
        epoch: Epoch number, from 1.
        n_updates: Samples whose error was non-zero (weights moved).
        mse: Mean squared error ``mean(e**2)`` over the epoch's samples, measured before each
            update (over the samples seen, if a callback stopped the epoch).
        accuracy: Fraction of samples whose hard-limited outputs all matched, for
            classification targets, else None.
    """

    epoch: int
    n_updates: int
    mse: float
    accuracy: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass(frozen=True)
class LocalResult:
    """The trained layer (trained in place) and its per-epoch history.

    Args:
        network: The module that was passed in.
        history: One entry per epoch.
        converged: True if an epoch made no update (every sample right, perceptron rule).
        stopped_early: True if a callback stopped the run.
    """

    network: torch.nn.Module
    history: tuple[LocalEpoch, ...]
    converged: bool
    stopped_early: bool = False


def _single_layer(net: torch.nn.Module) -> DeviceLayer:
    layers = getattr(net, "layers", None)
    if isinstance(net, DeviceLayer):
        layer = net
    elif layers is not None and len(layers) == 1:
        if getattr(net, "readout_affine", False):
            raise ValueError(
                "local rules train the neurons' own outputs; build the network with "
                "readout_affine=False"
            )
        layer = layers[0]
    else:
        raise TypeError(
            "local rules train one layer of neurons: pass a DeviceLayer or a one-layer "
            f"DeviceNetwork (sizes=(n_in, n_neurons)), got {type(net).__name__}"
            + (f" with {len(layers)} layers" if layers is not None else "")
        )
    if not isinstance(layer.map, LinearMap) or layer.n_drives != 1:
        raise TypeError(
            f"local rules update a linear combiner u = x·w + b of one drive; got "
            f"{type(layer.connection).__name__} with {layer.n_drives} drives. Use "
            "connection=Linear() with a one-drive device"
        )
    if len(layer.outputs) != 1:
        raise ValueError(f"each neuron must pass on one device output, got {layer.outputs!r}")
    return layer


def train_local(
    net: torch.nn.Module,
    data: ArrayDataset,
    *,
    rule: AbstractLocalRule,
    epochs: int = 10,
    batch_size: int = 1,
    mode: AbstractMode = TrueDevice(),  # noqa: B008 - frozen dataclass
    target_scale: float = 1.0,
    shuffle: bool = True,
    seed: int = 0,
    callbacks: Sequence[Callable[[LocalStep], bool | None]] = (),
) -> LocalResult:
    """Train a layer of device neurons with a local rule, in place.

    Samples are visited in a seeded random order (``shuffle``), or in the data set's own
    order with ``shuffle=False``. With ``batch_size=1`` this is the online rule of the lecture
    notes, one sample ``p`` at a time; a larger batch sums the per-sample updates of the
    batch (all computed with the weights at the batch's start).

    Args:
        net: A ``DeviceLayer``, or a one-layer ``DeviceNetwork`` built with
            ``readout_affine=False``, with a ``Linear()`` connection and one-drive devices.
        data: Inputs (n, n_in) and targets: labels (n,) (one neuron per class, one-hot
            targets; a single neuron takes labels in {0, 1} directly) or values (n, n_neurons).
        rule: ``Perceptron(...)`` or ``Delta(...)``.
        epochs: Passes over the data; training stops early after an epoch with no update.
        batch_size: Samples per update.
        mode: How the devices run: ``TrueDevice()`` (the default; no gradient needed) or
            ``Surrogate()``.
        target_scale: Value of the "hot" entry of one-hot/label targets (e.g. a device's
            output swing for the delta rule).
        shuffle: Visit the samples in a random order each epoch; False keeps the data
            set's order (to replay a given sequence of samples, put it in the data set).
        seed: Seed of the order.
        callbacks: Called with a :class:`LocalStep` after every update (the layer then holds
            the updated weights); a truthy return stops training.

    Returns:
        The layer and its per-epoch history.

    Raises:
        TypeError: If the network is not one linear layer of one-drive neurons.
        ValueError: For targets that do not fit the layer or bad options.
    """
    if not isinstance(rule, AbstractLocalRule):
        raise TypeError(f"rule must be Perceptron(...) or Delta(...), got {rule!r}")
    if not isinstance(data, ArrayDataset):
        raise TypeError(f"data must be an ArrayDataset, got {type(data).__name__}")
    for name, v in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    layer = _single_layer(net)
    w = layer.map.weight  # (n_in, n_neurons)
    # (n_neurons, 1) or None; a map attribute, which nn.Module's __getattr__ leaves untyped
    bias = cast("torch.Tensor | None", layer.map.bias)
    mask = layer.map.mask.to(w.dtype)
    x = data.x.to(w.dtype)
    n_neurons = layer.n_neurons
    classify = data.is_classification
    if classify:
        labels = data.y
        if n_neurons == 1:
            if bool(((labels != 0) & (labels != 1)).any()):
                raise ValueError(
                    "a single neuron learns labels in {0, 1}; use one neuron per class"
                )
            d = labels.to(w.dtype).unsqueeze(1)
        else:
            if int(labels.max()) >= n_neurons:
                raise ValueError(
                    f"labels go up to {int(labels.max())} but the layer has {n_neurons} neurons"
                )
            d = F.one_hot(labels, n_neurons).to(w.dtype)
        d = d * float(target_scale)
    else:
        d = data.y.to(w.dtype)
        if d.shape[1] != n_neurons:
            raise ValueError(
                f"targets have {d.shape[1]} columns but the layer has {n_neurons} neurons"
            )
    gen = torch.Generator().manual_seed(int(seed))
    n = len(x)
    history: list[LocalEpoch] = []
    converged = stopped = False
    step = 0
    with torch.no_grad():
        for epoch in range(epochs):
            if stopped:
                break
            order = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
            n_updates, sq, right, seen = 0, 0.0, 0, 0
            for start in range(0, n, batch_size):  # online learning is sequential by nature
                if stopped:
                    break
                idx = order[start : start + batch_size]
                xb, db = x[idx], d[idx]
                y = layer(xb, mode=mode)  # (b, n_neurons)
                e = rule.error(y, db)
                a = rule.rate(e, xb)
                ae = a * e  # (b, n_neurons)
                w += (xb.T @ ae) * mask
                if bias is not None:
                    bias += ae.sum(0).unsqueeze(1)
                seen += len(idx)
                moved = (e != 0).any(dim=1)
                n_updates += int(moved.sum())
                sq += float((e * e).sum())
                if classify:
                    level = getattr(rule, "level", 0.5 * float(target_scale))
                    right += int(((y > level) == (db > 0.5 * float(target_scale))).all(1).sum())
                step += 1
                if callbacks:
                    info = LocalStep(
                        epoch=epoch + 1,
                        step=step,
                        samples=tuple(int(i) for i in idx),
                        mse=float((e * e).mean()),
                    )
                    for callback in callbacks:
                        stopped = bool(callback(info)) or stopped
            history.append(
                LocalEpoch(
                    epoch=epoch + 1,
                    n_updates=n_updates,
                    mse=sq / (seen * n_neurons),  # seen < n if a callback stopped the epoch
                    accuracy=right / seen if classify else None,
                )
            )
            if n_updates == 0 and not stopped:
                converged = True
                break
    return LocalResult(
        network=net, history=tuple(history), converged=converged, stopped_early=stopped
    )
