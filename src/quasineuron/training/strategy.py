"""What the one training loop asks of a training strategy.

:func:`quasineuron.training.fit` owns everything a training run has in common: the seeded
shuffling, the batches, the budget, validation, model selection, checkpoints and callbacks. A
*strategy* owns how one batch changes the network. Gradient descent through a twin or the
device, a local learning rule, one generation of a population optimiser and the Wuxing rules
are all strategies; the loop never asks which one it has.

A new strategy is one subclass of :class:`AbstractStrategy` with a :meth:`~AbstractStrategy.step`
(and, where it has memory between steps, :meth:`~AbstractStrategy.state_dict` /
:meth:`~AbstractStrategy.load_state_dict` so that a resumed run stays bit-identical).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from quasineuron.data.dataset import ArrayDataset

__all__ = ["AbstractStrategy", "Plan", "StepOutput"]


@dataclass(frozen=True)
class Plan:
    """What the loop will do, given to :meth:`AbstractStrategy.setup` before the first step.

    Args:
        epochs: Epochs the run is planned over (fewer than asked for when a sample budget
            ends it earlier).
        steps_per_epoch: Batches per epoch.
        total_steps: Steps of the whole run (the span of a learning-rate schedule).
        batch_size: Samples per step (the last batch of an epoch may be smaller).
        n_train: Training samples.
        sample_budget: True when ``max_samples`` set the budget (then ``total_steps`` is
            ``ceil(max_samples / batch_size)`` and may end inside an epoch).
        device: Where the network's parameters live.
        dtype: Floating dtype of the network's parameters (inputs are cast to it).
        classify: True for integer class labels, False for regression targets.
    """

    epochs: int
    steps_per_epoch: int
    total_steps: int
    batch_size: int
    n_train: int
    sample_budget: bool
    device: torch.device
    dtype: torch.dtype
    classify: bool


@dataclass(frozen=True)
class StepOutput:
    """What one step did.

    Args:
        loss: Mean loss of the batch (before or while the update was made), a float or a
            0-dim tensor (a tensor avoids a device sync per step).
        n_correct: Samples of the batch classified right, or None (regression, or a strategy
            that does not classify).
        extras: Anything else worth keeping per step (JSON-ready values); callbacks see it.
    """

    loss: float | torch.Tensor
    n_correct: int | torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)


class AbstractStrategy(abc.ABC):
    """How one batch changes the network; the loop calls these methods and nothing else.

    Order of calls: :meth:`setup` once (after the loop checked the data), then for a resumed
    run :meth:`load_state_dict` and :meth:`weights_loaded`, then :meth:`step` per batch and
    :meth:`score` after every epoch when there is validation data, :meth:`state_dict` at every
    checkpoint, :meth:`teardown` at the end (also after an error).

    Attributes:
        finite_loss_required: The loop raises ``FloatingPointError`` when an epoch's mean
            training loss is not finite. A strategy whose loss may be undefined for a batch
            (e.g. every sample of it diverged and was left out) sets this to False.
    """

    finite_loss_required: ClassVar[bool] = True

    def setup(self, net: torch.nn.Module, plan: Plan) -> None:  # noqa: B027 - optional hook
        """Prepare for a run (build optimisers, check the network); called once."""

    @abc.abstractmethod
    def step(
        self, net: torch.nn.Module, xb: torch.Tensor, yb: torch.Tensor, step_index: int
    ) -> StepOutput:
        """Update ``net`` in place from one batch.

        Args:
            net: The network being trained.
            xb: Inputs, shape (batch, n_features), on the network's device and dtype.
            yb: Labels (batch,) or targets (batch, k).
            step_index: Steps taken before this one over the whole run (0-based; it
                continues across a resume).

        Returns:
            The batch's loss and number of right answers.
        """

    def score(
        self, net: torch.nn.Module, data: ArrayDataset, batch_size: int
    ) -> tuple[float | None, float | None]:
        """Validation loss and accuracy of ``net`` on ``data`` (None where not defined).

        The default scores nothing (the loop then keeps the last epoch).
        """
        return None, None

    def state_dict(self) -> dict[str, Any]:
        """Memory between steps (optimiser moments, integral terms): tensors and JSON values."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Restore what :meth:`state_dict` returned."""

    def config(self) -> dict[str, Any]:
        """Settings a resumed run must share with the run that wrote the checkpoint."""
        return {"strategy": repr(self)}

    def weights_loaded(self, net: torch.nn.Module) -> None:  # noqa: B027 - optional hook
        """Called after the loop put saved weights into ``net`` (resume, best epoch)."""

    def current_lr(self) -> float | None:
        """Step size of the latest step, for the epoch metrics; None if it has none."""
        return None

    def teardown(self, net: torch.nn.Module) -> None:  # noqa: B027 - optional hook
        """Undo temporary changes to ``net`` made by :meth:`setup` (runs even after errors)."""
