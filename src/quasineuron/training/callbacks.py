"""Hooks into the one training loop, per step and per epoch.

A callback sees a :class:`LoopState` (the network, the strategy, the plan, where the run is)
and may stop the run from :meth:`Callback.on_epoch`. Callbacks that remember something between
epochs (:class:`WeightAveraging`) save it in the checkpoint through ``state_dict`` /
``load_state_dict``, so that a resumed run ends as an uninterrupted one.
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from quasineuron.errors import OutOfDomainWarning

if TYPE_CHECKING:
    from quasineuron.data.dataset import ArrayDataset
    from quasineuron.training.loop import EpochMetrics
    from quasineuron.training.strategy import AbstractStrategy, Plan, StepOutput

__all__ = [
    "Callback",
    "DomainMonitor",
    "FunctionCallback",
    "LoopState",
    "NonfiniteCounter",
    "WeightAveraging",
]


@dataclass
class LoopState:
    """Where a run of :func:`~quasineuron.training.fit` is; handed to every callback.

    Attributes:
        net: The network being trained.
        strategy: The training strategy.
        plan: The run's plan.
        train_data: The training data.
        keep: ``"last"`` or ``"best"``.
        epoch: Epochs completed (0 before the first).
        step: Steps taken over the whole run.
        samples_seen: Training samples processed.
        batch_index: Indices into the training data of the latest batch (in visiting order).
        stop_requested: True once a callback or patience asked to stop.
        epoch_extras: Filled by callbacks during an epoch; becomes ``EpochMetrics.extras``.
        result_extras: Filled by callbacks; becomes ``TrainResult.extras``.
    """

    net: torch.nn.Module
    strategy: AbstractStrategy
    plan: Plan
    train_data: ArrayDataset
    keep: str
    epoch: int = 0
    step: int = 0
    samples_seen: int = 0
    batch_index: torch.Tensor | None = None
    stop_requested: bool = False
    epoch_extras: dict[str, Any] = field(default_factory=dict)
    result_extras: dict[str, Any] = field(default_factory=dict)


class Callback:
    """Base class of the loop's hooks; override the ones you need (all do nothing here)."""

    def on_train_begin(self, state: LoopState) -> None:
        """Before the first step (after a resume restored the run)."""

    def on_step(self, state: LoopState, output: StepOutput) -> bool | None:
        """After every step; a truthy return stops training after this step.

        The epoch in progress is then validated and counted as the last one.
        """
        return None

    def on_epoch(self, state: LoopState, metrics: EpochMetrics) -> bool | None:
        """After every epoch's validation; a truthy return stops training."""
        return None

    def on_train_end(self, state: LoopState) -> None:
        """After the last epoch, once the kept weights are in the network."""

    def state_dict(self) -> dict[str, Any]:
        """Memory between epochs, saved in checkpoints (tensors and JSON values)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


class FunctionCallback(Callback):
    """A plain function of each epoch's metrics (a truthy return stops training).

    Args:
        fn: Called as ``fn(metrics)`` after every epoch.
    """

    def __init__(self, fn: Callable[[EpochMetrics], bool | None]) -> None:
        self.fn = fn

    def on_epoch(self, state: LoopState, metrics: EpochMetrics) -> bool | None:
        """Call the function."""
        return self.fn(metrics)


class WeightAveraging(Callback):
    """Install the mean of the weights at the end of the last ``last`` epochs.

    Averaging the end points of the last epochs smooths out the step-to-step noise of the
    final weights (Izmailov et al., 2018, arXiv:1803.05407, with one snapshot per epoch).
    Integer buffers (counters) keep their last value. The epochs averaged are recorded in
    ``TrainResult.extras["weight_averaging"]``. It replaces the last weights, so it cannot be
    combined with ``keep="best"`` (or ``patience``), which pick one epoch instead.

    Args:
        last: Number of final epochs to average (fewer if the run is shorter).
    """

    def __init__(self, last: int) -> None:
        if isinstance(last, bool) or not isinstance(last, int) or last < 1:
            raise ValueError(f"WeightAveraging.last must be an int >= 1, got {last!r}")
        self.last = last
        self._snaps: deque[tuple[int, dict[str, torch.Tensor]]] = deque(maxlen=last)

    def on_train_begin(self, state: LoopState) -> None:
        """Refuse any ``keep`` but ``"last"``: the two choose the final weights differently."""
        if state.keep != "last":
            raise ValueError(
                f"WeightAveraging installs averaged weights at the end, keep={state.keep!r} the "
                "weights of one epoch; use keep='last' (and no patience) with WeightAveraging"
            )

    def on_epoch(self, state: LoopState, metrics: EpochMetrics) -> bool | None:
        """Keep a copy of this epoch's weights."""
        snap = {k: v.detach().clone() for k, v in state.net.state_dict().items()}
        self._snaps.append((metrics.epoch, snap))
        return None

    def on_train_end(self, state: LoopState) -> None:
        """Load the mean of the kept snapshots into the network."""
        if not self._snaps:
            return
        epochs = [e for e, _ in self._snaps]
        last = self._snaps[-1][1]
        mean = {}
        for k, v in last.items():
            if v.is_floating_point():
                # summed in float64 so the mean does not depend on the order of rounding
                total = torch.stack([s[k].double() for _, s in self._snaps]).sum(0)
                mean[k] = (total / len(self._snaps)).to(v.dtype)
            else:
                mean[k] = v
        state.net.load_state_dict(mean)
        state.strategy.weights_loaded(state.net)
        state.result_extras["weight_averaging"] = {"epochs": epochs}

    def state_dict(self) -> dict[str, Any]:
        """The snapshots kept so far."""
        return {"epochs": [e for e, _ in self._snaps], "snapshots": [s for _, s in self._snaps]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the snapshots."""
        self._snaps.clear()
        for e, s in zip(state.get("epochs", []), state.get("snapshots", []), strict=True):
            self._snaps.append((int(e), dict(s)))


class DomainMonitor(Callback):
    """Record, each epoch, how many drive rows fall outside each layer's characterised domain.

    After every epoch the network's drives (``net.drives(x, mode=...)``, a ``DeviceNetwork``)
    are computed on the first ``n_samples`` training samples; a row is one neuron's drives
    for one sample, outside when any drive leaves the layer's characterised box (the twin's
    domain, else the device's). The fraction per layer goes to
    ``EpochMetrics.extras["out_of_domain"]`` (a list, one float per layer).
    The first epoch where some layer's fraction exceeds ``threshold`` warns once with
    :class:`~quasineuron.errors.OutOfDomainWarning`: a twin there extrapolates, so its
    gradients and outputs stop meaning what the device does.

    Args:
        threshold: Fraction of rows above which to warn, in [0, 1].
        n_samples: Training samples used for the check (the first ones, so every epoch looks
            at the same inputs).
        mode: Forward mode for the drives; None uses the strategy's ``mode`` (if any).
    """

    def __init__(self, threshold: float = 0.05, n_samples: int = 512, mode: Any = None) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"DomainMonitor.threshold must be in [0, 1], got {threshold!r}")
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"DomainMonitor.n_samples must be an int >= 1, got {n_samples!r}")
        self.threshold = float(threshold)
        self.n_samples = n_samples
        self.mode = mode
        self._warned = False

    def on_train_begin(self, state: LoopState) -> None:
        """Check the network can report its drives."""
        if not callable(getattr(state.net, "drives", None)):
            raise TypeError(
                f"DomainMonitor needs a network with drives(x, mode=...) and layers with a "
                f"device domain (a DeviceNetwork), got {type(state.net).__name__}"
            )

    def fractions(self, net: torch.nn.Module, x: torch.Tensor, mode: Any) -> list[float]:
        """Fraction of drive rows outside each layer's domain.

        Args:
            net: A ``DeviceNetwork``.
            x: Inputs, shape (batch, n_features).
            mode: Forward mode (None: the network's default).

        Returns:
            One fraction per layer.
        """
        network: Any = net  # a DeviceNetwork; nn.Module's attributes are untyped
        with torch.no_grad():
            drives = network.drives(x) if mode is None else network.drives(x, mode=mode)
        out = []
        for layer, u in zip(network.layers, drives, strict=True):  # u: (batch, neurons, drives)
            box = layer.characterised_box() if hasattr(layer, "characterised_box") else None
            low, high = (box or layer.device.domain).tensors(dtype=u.dtype)
            low, high = low.to(u.device), high.to(u.device)
            outside = ((u < low) | (u > high)).any(dim=-1)  # (batch, neurons)
            out.append(float(outside.double().mean()))
        return out

    def on_epoch(self, state: LoopState, metrics: EpochMetrics) -> bool | None:
        """Measure the fractions and warn once above the threshold."""
        mode = self.mode if self.mode is not None else getattr(state.strategy, "mode", None)
        p = next(state.net.parameters())
        x = state.train_data.x[: self.n_samples].to(p.device, p.dtype)
        was_training = state.net.training
        state.net.eval()
        try:
            fr = self.fractions(state.net, x, mode)
        finally:
            state.net.train(was_training)
        state.epoch_extras["out_of_domain"] = fr
        worst = max(fr) if fr else 0.0
        if worst > self.threshold and not self._warned:
            self._warned = True
            layer = fr.index(worst)
            warnings.warn(
                f"after epoch {metrics.epoch}, {worst:.1%} of the drive rows of layer {layer} "
                f"lie outside its device's characterised domain (threshold "
                f"{self.threshold:.1%}); the twin extrapolates there: widen the sweep, wrap the "
                f"device in InputClip, or lower init_gain / the learning rate",
                OutOfDomainWarning,
                stacklevel=2,
            )
        return None

    def state_dict(self) -> dict[str, Any]:
        """Whether the warning was given."""
        return {"warned": self._warned}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore whether the warning was given."""
        self._warned = bool(state.get("warned", False))


class NonfiniteCounter(Callback):
    """Count the samples a strategy left out for non-finite outputs, per epoch and in all.

    Reads ``StepOutput.extras["nonfinite_rows"]`` (``Gradient(nonfinite="mask")`` sets it) and
    writes the epoch's count to ``EpochMetrics.extras["nonfinite_rows"]`` and the run's to
    ``TrainResult.extras["nonfinite_rows"]``.
    """

    def __init__(self) -> None:
        self.total = 0
        self._epoch = 0

    def on_step(self, state: LoopState, output: StepOutput) -> bool | None:
        """Add the step's count."""
        n = int(output.extras.get("nonfinite_rows", 0))
        self._epoch += n
        self.total += n
        return None

    def on_epoch(self, state: LoopState, metrics: EpochMetrics) -> bool | None:
        """Record the epoch's count."""
        state.epoch_extras["nonfinite_rows"] = self._epoch
        self._epoch = 0
        return None

    def on_train_end(self, state: LoopState) -> None:
        """Record the run's count."""
        state.result_extras["nonfinite_rows"] = self.total

    def state_dict(self) -> dict[str, Any]:
        """The count so far."""
        return {"total": self.total}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the count."""
        self.total = int(state.get("total", 0))
