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
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F

from quasineuron.data.dataset import ArrayDataset
from quasineuron.network.connections import LinearMap
from quasineuron.network.layer import DeviceLayer
from quasineuron.network.modes import AbstractMode, TrueDevice
from quasineuron.training.callbacks import Callback, LoopState
from quasineuron.training.loop import EpochMetrics, TrainResult, fit
from quasineuron.training.strategy import AbstractStrategy, Plan, StepOutput

__all__ = [
    "AbstractLocalRule",
    "AbstractRate",
    "Constant",
    "Delta",
    "ErrorPolynomial",
    "LocalRule",
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


class LocalRule(AbstractStrategy):
    """A local learning rule as a strategy of :func:`~quasineuron.training.fit`.

    With ``batch_size=1`` this is the online rule of the lecture notes, one sample at a time;
    a larger batch sums the per-sample updates of the batch (all computed with the weights at
    the batch's start). No gradient of the device is taken.

    Args:
        rule: ``Perceptron(...)`` or ``Delta(...)``.
        mode: How the devices run: ``TrueDevice()`` (the default) or ``Surrogate()``.
        target_scale: Value of the "hot" entry of one-hot/label targets (e.g. a device's
            output swing for the delta rule).

    Raises:
        TypeError: If ``rule`` is not a local rule.
    """

    def __init__(
        self,
        rule: AbstractLocalRule,
        *,
        mode: AbstractMode = TrueDevice(),  # noqa: B008 - frozen dataclass
        target_scale: float = 1.0,
    ) -> None:
        if not isinstance(rule, AbstractLocalRule):
            raise TypeError(f"rule must be Perceptron(...) or Delta(...), got {rule!r}")
        self.rule = rule
        self.mode = mode
        self.target_scale = float(target_scale)
        self._layer: DeviceLayer | None = None

    def __repr__(self) -> str:
        return (
            f"LocalRule(rule={self.rule!r}, mode={self.mode!r}, target_scale={self.target_scale!r})"
        )

    def setup(self, net: torch.nn.Module, plan: Plan) -> None:
        """Find the one linear layer the rule trains."""
        self._layer = _single_layer(net)

    def targets(self, yb: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Targets (batch, n_neurons) of labels (one-hot, or 0/1 for one neuron) or values.

        Args:
            yb: Labels (batch,) or targets (batch, n_neurons).
            dtype: Floating dtype of the result.

        Returns:
            The desired outputs, shape (batch, n_neurons).
        """
        assert self._layer is not None, "setup() was not called"
        n_neurons = self._layer.n_neurons
        if yb.is_floating_point():
            return yb.to(dtype)
        d = yb.to(dtype).unsqueeze(1) if n_neurons == 1 else F.one_hot(yb, n_neurons).to(dtype)
        return d * self.target_scale

    def step(
        self, net: torch.nn.Module, xb: torch.Tensor, yb: torch.Tensor, step_index: int
    ) -> StepOutput:
        """Apply the rule's summed update for the batch.

        ``extras`` holds ``n_updates`` (samples whose error was non-zero) and ``mse``.
        """
        layer = self._layer
        assert layer is not None, "setup() was not called"
        w = layer.map.weight  # (n_in, n_neurons)
        # (n_neurons, 1) or None; a map attribute, which nn.Module's __getattr__ leaves untyped
        bias = cast("torch.Tensor | None", layer.map.bias)
        mask = layer.map.mask.to(w.dtype)
        with torch.no_grad():
            db = self.targets(yb, w.dtype)
            y = layer(xb, mode=self.mode)  # (b, n_neurons)
            e = self.rule.error(y, db)
            a = self.rule.rate(e, xb)
            ae = a * e  # (b, n_neurons)
            w += (xb.T @ ae) * mask
            if bias is not None:
                bias += ae.sum(0).unsqueeze(1)
            mse = float((e * e).mean())
            n_correct = None
            if not yb.is_floating_point():
                level = getattr(self.rule, "level", 0.5 * self.target_scale)
                n_correct = int(((y > level) == (db > 0.5 * self.target_scale)).all(1).sum())
        n_updates = int((e != 0).any(dim=1).sum())
        return StepOutput(
            loss=mse, n_correct=n_correct, extras={"n_updates": n_updates, "mse": mse}
        )


def _check_targets(layer: DeviceLayer, data: ArrayDataset) -> None:
    n_neurons = layer.n_neurons
    if data.is_classification:
        labels = data.y
        if n_neurons == 1:
            if bool(((labels != 0) & (labels != 1)).any()):
                raise ValueError(
                    "a single neuron learns labels in {0, 1}; use one neuron per class"
                )
        elif int(labels.max()) >= n_neurons:
            raise ValueError(
                f"labels go up to {int(labels.max())} but the layer has {n_neurons} neurons"
            )
    elif data.y.shape[1] != n_neurons:
        raise ValueError(
            f"targets have {data.y.shape[1]} columns but the layer has {n_neurons} neurons"
        )


class _UntilNoUpdate(Callback):
    """Stops after an epoch that changed nothing, and passes each update to plain callbacks."""

    def __init__(self, fns: Sequence[Callable[[LocalStep], bool | None]]) -> None:
        self.fns = list(fns)
        self.n_updates = 0
        self.converged = False

    def on_step(self, state: LoopState, output: StepOutput) -> bool | None:
        self.n_updates += int(output.extras["n_updates"])
        stop = False
        if self.fns:
            idx = state.batch_index
            info = LocalStep(
                epoch=state.epoch + 1,
                step=state.step,
                samples=() if idx is None else tuple(int(i) for i in idx),
                mse=float(output.extras["mse"]),
            )
            for fn in self.fns:
                stop = bool(fn(info)) or stop
        return stop

    def on_epoch(self, state: LoopState, metrics: EpochMetrics) -> bool | None:
        n_updates, self.n_updates = self.n_updates, 0
        state.epoch_extras["n_updates"] = n_updates
        if n_updates == 0 and not state.stop_requested:
            self.converged = True
            state.result_extras["converged"] = True
            return True
        state.result_extras["converged"] = False
        return None


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
) -> TrainResult:
    """Train a layer of device neurons with a local rule, in place.

    :func:`~quasineuron.training.fit` with a :class:`LocalRule` strategy. Samples are visited
    in a seeded random order (``shuffle``), or in the data set's own order with
    ``shuffle=False``.

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
        target_scale: Value of the "hot" entry of one-hot/label targets.
        shuffle: Visit the samples in a random order each epoch; False keeps the data
            set's order (to replay a given sequence of samples, put it in the data set).
        seed: Seed of the order.
        callbacks: Called with a :class:`LocalStep` after every update (the layer then holds
            the updated weights); a truthy return stops training.

    Returns:
        The loop's :class:`~quasineuron.training.TrainResult`: ``history[i].train_loss`` is
        the epoch's mean squared error (measured before each update), ``train_accuracy`` the
        fraction of samples whose hard-limited outputs all matched (classification), and
        ``extras["converged"]`` is True if an epoch made no update.

    Raises:
        TypeError: If the network is not one linear layer of one-drive neurons.
        ValueError: For targets that do not fit the layer or bad options.
    """
    strategy = LocalRule(rule, mode=mode, target_scale=target_scale)
    if not isinstance(data, ArrayDataset):
        raise TypeError(f"data must be an ArrayDataset, got {type(data).__name__}")
    _check_targets(_single_layer(net), data)
    watcher = _UntilNoUpdate(callbacks)
    return fit(
        net,
        data,
        strategy,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        shuffle=shuffle,
        progress=False,
        callbacks=[watcher],
    )
