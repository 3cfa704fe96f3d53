"""Gradient training as a strategy of the one loop: a mode, an optimiser, a loss, a schedule."""

from __future__ import annotations

import math
from typing import Any

import torch

from quasineuron.data.dataset import ArrayDataset
from quasineuron.training.checkpoint import restore_optimizer_state
from quasineuron.training.config import (
    AbstractLoss,
    AbstractOptimizer,
    Cosine,
    as_loss,
    as_optimizer,
)
from quasineuron.training.strategy import AbstractStrategy, Plan, StepOutput

__all__ = ["Gradient", "forward", "nonfinite_message"]


class Gradient(AbstractStrategy):
    """Mini-batch gradient descent with a typed optimiser, loss and learning-rate schedule.

    Args:
        mode: Forward mode passed to ``net(x, mode=mode)`` (e.g. ``Surrogate()``,
            ``PhysicsAware()``, ``Direct()``); None calls ``net(x)``.
        optimizer: ``"adam"``, ``"sgd"`` or a typed ``Adam(...)`` / ``SGD(...)``.
        lr: Learning rate for an optimiser given by name; None with a typed optimiser.
        loss: ``"cross-entropy"``, ``"mse"`` or a typed loss.
        schedule: ``Cosine(...)`` stepped every batch over the planned steps, or None.

    Raises:
        ValueError: For an unknown optimiser or loss name, or ``lr`` given twice.
        TypeError: For a schedule that is not ``Cosine``.
    """

    def __init__(
        self,
        mode: Any = None,
        *,
        optimizer: str | AbstractOptimizer = "adam",
        lr: float | None = None,
        loss: str | AbstractLoss = "cross-entropy",
        schedule: Cosine | None = None,
    ) -> None:
        if schedule is not None and not isinstance(schedule, Cosine):
            raise TypeError(f"schedule must be None or Cosine(...), got {schedule!r}")
        self.mode = mode
        self.optimizer = as_optimizer(optimizer, lr)
        self.loss = as_loss(loss)
        self.schedule = schedule
        self._opt: torch.optim.Optimizer | None = None
        self._plan: Plan | None = None
        self._checked = False
        self._lr = self.optimizer.lr

    def __repr__(self) -> str:
        return (
            f"Gradient(mode={self.mode!r}, optimizer={self.optimizer!r}, loss={self.loss!r}, "
            f"schedule={self.schedule!r})"
        )

    def config(self) -> dict[str, Any]:
        """The settings a resumed run must share (called after :meth:`setup`)."""
        config: dict[str, Any] = {
            "optimizer": repr(self.optimizer),
            "loss": repr(self.loss),
            "schedule": repr(self.schedule),
            "mode": repr(self.mode),
        }
        if self.schedule is not None and self._plan is not None:
            # the schedule spans the planned epochs: changing them would bend it
            config["epochs"] = self._plan.epochs
        return config

    def setup(self, net: torch.nn.Module, plan: Plan) -> None:
        """Check the mode against the network and build the optimiser."""
        check_mode = getattr(net, "check_mode", None)
        if self.mode is not None and callable(check_mode):
            check_mode(self.mode, training=True)  # refuse an impossible mode before any step
        self._plan = plan
        self._opt = self.optimizer.build([p for p in net.parameters() if p.requires_grad])
        self._lr = self.optimizer.lr
        self._checked = False

    def step(
        self,
        net: torch.nn.Module,
        xb: torch.Tensor,
        yb: torch.Tensor,
        step_index: int,
        *,
        loss_scale: float = 1.0,
    ) -> StepOutput:
        """One optimiser step on the batch's mean loss (times ``loss_scale``)."""
        assert self._opt is not None and self._plan is not None, "setup() was not called"
        plan = self._plan
        if self.schedule is not None:
            self._lr = self.schedule.lr_at(self.optimizer.lr, step_index, plan.total_steps)
            for group in self._opt.param_groups:
                group["lr"] = self._lr
        self._opt.zero_grad(set_to_none=True)
        out = forward(net, xb, self.mode)
        if not self._checked:
            _check_output(out, yb, plan.classify)
            self._checked = True
        batch_loss = self.loss(out, yb)
        # On the CPU a check costs no device sync, so a non-finite loss stops the step that
        # made it, while the weights that made it are intact and the network can say which
        # device failed (elsewhere the loop checks once an epoch).
        if plan.device.type == "cpu" and not bool(torch.isfinite(batch_loss)):
            epoch, b = divmod(step_index, plan.steps_per_epoch)
            raise FloatingPointError(
                nonfinite_message(
                    net, xb, self.mode, float(batch_loss.detach()), epoch, b, self.optimizer.lr
                )
            )
        (batch_loss * loss_scale if loss_scale != 1.0 else batch_loss).backward()
        self._opt.step()
        n_correct = (out.detach().argmax(dim=1) == yb).sum() if plan.classify else None
        return StepOutput(loss=batch_loss.detach(), n_correct=n_correct)

    def score(
        self, net: torch.nn.Module, data: ArrayDataset, batch_size: int
    ) -> tuple[float | None, float | None]:
        """Mean loss and accuracy of ``net`` in eval mode (the caller restores train mode)."""
        p = next(net.parameters())
        dtype = p.dtype if p.is_floating_point() else torch.float32
        x = data.x.to(p.device, dtype)
        y = data.y.to(p.device)
        y = y.to(dtype) if y.is_floating_point() else y
        classify = data.is_classification
        net.eval()
        total = torch.zeros((), dtype=torch.float64, device=x.device)
        correct = torch.zeros((), dtype=torch.int64, device=x.device)
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                xb, yb = x[start : start + batch_size], y[start : start + batch_size]
                out = forward(net, xb, self.mode)
                total += self.loss(out, yb).double() * len(xb)
                if classify:
                    correct += (out.argmax(dim=1) == yb).sum()
        return total.item() / len(x), (correct.item() / len(x) if classify else None)

    def state_dict(self) -> dict[str, Any]:
        """The optimiser's state."""
        return {"optimizer": self._opt.state_dict() if self._opt is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the optimiser's state."""
        if self._opt is not None and state.get("optimizer") is not None:
            restore_optimizer_state(self._opt, state["optimizer"])

    def current_lr(self) -> float | None:
        """Learning rate of the latest step."""
        return float(self._lr)

    def explain(self, net: torch.nn.Module, xb: torch.Tensor, value: float, epoch: int) -> str:
        """Why the epoch's loss became ``value`` (see :func:`nonfinite_message`)."""
        return nonfinite_message(net, xb, self.mode, value, epoch, None, self.optimizer.lr)


def forward(net: torch.nn.Module, x: torch.Tensor, mode: Any) -> torch.Tensor:
    """``net(x)``, or ``net(x, mode=mode)`` when a mode is given."""
    return net(x) if mode is None else net(x, mode=mode)


def nonfinite_message(
    net: torch.nn.Module,
    xb: torch.Tensor,
    mode: Any,
    value: float,
    epoch: int,
    step: int | None,
    lr: float,
) -> str:
    """Why the training loss became ``value``: the device that failed, else the learning rate.

    A network that can explain non-finite values (``explain_nonfinite``, e.g. a
    ``DeviceNetwork``: which layer's device returned them, for which drives) is asked on the
    batch ``xb``.
    """
    where = f"in epoch {epoch + 1}" if step is None else f"at step {step + 1} of epoch {epoch + 1}"
    head = f"training loss became {value} {where}"
    explain = getattr(net, "explain_nonfinite", None)
    reason = None
    if callable(explain):
        with torch.no_grad():
            reason = explain(xb, mode=mode) if mode is not None else explain(xb)
    if reason:
        return f"{head}: {reason}"
    if not math.isfinite(lr):  # pragma: no cover - typed optimisers refuse such rates
        return head
    return (
        f"{head}; lower the learning rate (now {lr!r}) or check the network's outputs and the loss"
    )


def _check_output(out: torch.Tensor, y: torch.Tensor, classify: bool) -> None:
    if out.ndim != 2:
        raise ValueError(f"net must return outputs of shape (batch, k), got {tuple(out.shape)}")
    if classify and len(y) and out.shape[1] <= int(y.max()):
        raise ValueError(
            f"net has {out.shape[1]} outputs but the labels need {int(y.max()) + 1} classes; "
            f"make the last layer {int(y.max()) + 1} wide"
        )
    if not classify and out.shape[1] != y.shape[1]:
        raise ValueError(
            f"net has {out.shape[1]} outputs but the targets have {y.shape[1]} columns"
        )
