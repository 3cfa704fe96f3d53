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

__all__ = ["NONFINITE", "Gradient", "domain_penalty", "forward", "nonfinite_message"]

#: Choices of ``Gradient(nonfinite=...)``: stop with an error, or leave the rows out.
NONFINITE = ("error", "mask")

#: Forward passes ``nonfinite="mask"`` makes on the remaining samples of a batch before it
#: leaves the still-failing ones out of the loss instead.
_MASK_ROUNDS = 3


class Gradient(AbstractStrategy):
    """Mini-batch gradient descent with a typed optimiser, loss and learning-rate schedule.

    Args:
        mode: Forward mode passed to ``net(x, mode=mode)`` (e.g. ``Surrogate()``,
            ``PhysicsAware()``, ``Direct()``); None calls ``net(x)``.
        optimizer: ``"adam"``, ``"sgd"`` or a typed ``Adam(...)`` / ``SGD(...)``.
        lr: Learning rate for an optimiser given by name; None with a typed optimiser.
        loss: ``"cross-entropy"``, ``"mse"`` or a typed loss.
        schedule: ``Cosine(...)`` stepped every batch over the planned steps, or None.
        domain_penalty: Weight λ of a soft penalty that keeps the drives inside each layer's
            characterised box (see :func:`domain_penalty`), added to the loss; 0 turns it off.
            It needs a network whose ``run(x, mode=...)`` also returns the drives (a
            ``DeviceNetwork``).
        nonfinite: What a batch whose network outputs are NaN or infinite for some samples
            does: ``"error"`` stops training with a message naming the device, the layer and
            the drives; ``"mask"`` leaves those samples out of the loss and the update and
            counts them (:attr:`masked_rows`, and ``StepOutput.extras["nonfinite_rows"]``).

    Attributes:
        masked_rows: Samples left out by ``nonfinite="mask"`` so far (over all steps).

    Raises:
        ValueError: For an unknown optimiser or loss name, ``lr`` given twice, a negative or
            non-finite ``domain_penalty`` or an unknown ``nonfinite``.
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
        domain_penalty: float = 0.0,
        nonfinite: str = "error",
    ) -> None:
        if schedule is not None and not isinstance(schedule, Cosine):
            raise TypeError(f"schedule must be None or Cosine(...), got {schedule!r}")
        if (
            isinstance(domain_penalty, bool)
            or not isinstance(domain_penalty, (int, float))
            or not math.isfinite(domain_penalty)
            or domain_penalty < 0
        ):
            raise ValueError(
                f"domain_penalty must be a finite number >= 0 (0 turns it off), got "
                f"{domain_penalty!r}"
            )
        if nonfinite not in NONFINITE:
            raise ValueError(
                f"nonfinite must be one of {list(NONFINITE)} ('error' stops at the first "
                f"non-finite output, 'mask' leaves those samples out), got {nonfinite!r}"
            )
        self.domain_penalty = float(domain_penalty)
        self.nonfinite = nonfinite
        self.masked_rows = 0
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
            f"schedule={self.schedule!r}, domain_penalty={self.domain_penalty!r}, "
            f"nonfinite={self.nonfinite!r})"
        )

    def config(self) -> dict[str, Any]:
        """The settings a resumed run must share (called after :meth:`setup`)."""
        config: dict[str, Any] = {
            "optimizer": repr(self.optimizer),
            "loss": repr(self.loss),
            "schedule": repr(self.schedule),
            "mode": repr(self.mode),
        }
        # only when set, so checkpoints written before these options still resume
        if self.domain_penalty:
            config["domain_penalty"] = self.domain_penalty
        if self.nonfinite != "error":
            config["nonfinite"] = self.nonfinite
        if self.schedule is not None and self._plan is not None:
            # the schedule spans the planned epochs: changing them would bend it
            config["epochs"] = self._plan.epochs
        return config

    def setup(self, net: torch.nn.Module, plan: Plan) -> None:
        """Check the mode against the network and build the optimiser."""
        check_mode = getattr(net, "check_mode", None)
        if self.mode is not None and callable(check_mode):
            check_mode(self.mode, training=True)  # refuse an impossible mode before any step
        if self.domain_penalty and not callable(getattr(net, "run", None)):
            raise TypeError(
                f"domain_penalty needs a network whose run(x, mode=...) returns the outputs and "
                f"the drives of each layer (a DeviceNetwork), got {type(net).__name__}; set "
                "domain_penalty = 0 for this network"
            )
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
        out, penalty = self._forward(net, xb)
        n_masked = 0
        x_all = xb
        if self.nonfinite == "mask":
            # Forward again on the good samples only: indexing the loss alone would leave
            # NaN * 0 = NaN in the weight gradients of the layers after the failure. A noisy
            # device can move a kept sample into the failing region on the next pass, hence
            # a few rounds; what still fails after them is left out of the loss below.
            for _ in range(_MASK_ROUNDS):
                bad = ~torch.isfinite(out).all(dim=1)
                if not bool(bad.any()):
                    break
                n_masked += int(bad.sum())
                xb, yb, out = xb[~bad], yb[~bad], out[~bad]
                if len(xb) == 0:
                    break
                out, penalty = self._forward(net, xb)
            bad = ~torch.isfinite(out).all(dim=1)
            if bool(bad.any()):
                n_masked += int(bad.sum())
                out, yb = out[~bad], yb[~bad]
            self.masked_rows += n_masked
            if n_masked and self.domain_penalty:
                # The samples left out are often the ones whose drives strayed into the
                # failing region; the penalty must still see them, so it is taken on the whole
                # batch through the twin, which stays finite where the device fails.
                penalty = self._twin_penalty(net, x_all)
            if len(out) == 0:
                if penalty is not None:
                    (self.domain_penalty * penalty).backward()
                    self._opt.step()
                return StepOutput(
                    loss=torch.zeros((), dtype=out.dtype),
                    n_correct=0 if plan.classify else None,
                    extras={"nonfinite_rows": n_masked},
                )
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
        total = batch_loss if penalty is None else batch_loss + self.domain_penalty * penalty
        (total * loss_scale if loss_scale != 1.0 else total).backward()
        if n_masked and not _finite_grads(self._opt):
            # rows that failed only on the last round poisoned the gradients: skip the update
            self._opt.zero_grad(set_to_none=True)
        else:
            self._opt.step()
        n_correct = (out.detach().argmax(dim=1) == yb).sum() if plan.classify else None
        extras: dict[str, Any] = {}
        if self.nonfinite == "mask":
            extras["nonfinite_rows"] = n_masked
        return StepOutput(loss=batch_loss.detach(), n_correct=n_correct, extras=extras)

    def _twin_penalty(self, net: torch.nn.Module, xb: torch.Tensor) -> torch.Tensor:
        from quasineuron.network.modes import Surrogate

        run: Any = getattr(net, "run")  # noqa: B009 - checked in setup
        _, drives = run(xb, mode=Surrogate())
        return domain_penalty(net, drives)

    def _forward(
        self, net: torch.nn.Module, xb: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Outputs, and the domain penalty when it is on (else None)."""
        if not self.domain_penalty:
            return forward(net, xb, self.mode), None
        run: Any = getattr(net, "run")  # noqa: B009 - checked in setup
        out, drives = run(xb) if self.mode is None else run(xb, mode=self.mode)
        return out, domain_penalty(net, drives)

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
        n_scored = 0
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                xb, yb = x[start : start + batch_size], y[start : start + batch_size]
                out = forward(net, xb, self.mode)
                if self.nonfinite == "mask":
                    # non-finite samples count as wrong and stay out of the mean loss
                    good = torch.isfinite(out).all(dim=1)
                    out, yb = out[good], yb[good]
                    n_scored += int(good.sum())
                else:
                    n_scored += len(xb)
                if len(out):
                    total += self.loss(out, yb).double() * len(out)
                if classify:
                    correct += (out.argmax(dim=1) == yb).sum()
        loss = total.item() / n_scored if n_scored else math.inf
        return loss, (correct.item() / len(x) if classify else None)

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


def domain_penalty(net: torch.nn.Module, drives: list[torch.Tensor]) -> torch.Tensor:
    """Mean squared distance of the drives outside each layer's characterised box.

    For every layer, each drive's excursion beyond the box is measured in units of the box's
    width along that drive (so drives of different scales weigh alike), squared, summed over
    the drives of a neuron and averaged over neurons and samples; the layers' values are
    summed. Zero while every drive stays inside; it grows smoothly outside, so gradient
    descent pulls escaping drives back rather than being stopped by a hard wall.

    Args:
        net: A network whose ``layers`` each have ``characterised_box()`` (a DeviceNetwork).
        drives: One tensor per layer, shape (batch, n_neurons, n_drives), as ``net.run``
            returns them.

    Returns:
        A scalar tensor (differentiable in the drives).
    """
    layers: Any = getattr(net, "layers")  # noqa: B009 - a DeviceNetwork's layers
    total = drives[0].new_zeros(())
    for layer, u in zip(layers, drives, strict=True):
        low, high = layer.characterised_box().tensors(dtype=u.dtype, device=u.device)
        width = high - low
        over = torch.relu(u - high) / width + torch.relu(low - u) / width
        total = total + over.square().sum(dim=-1).mean()
    return total


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


def _finite_grads(opt: torch.optim.Optimizer) -> bool:
    return all(
        bool(torch.isfinite(p.grad).all())
        for group in opt.param_groups
        for p in group["params"]
        if p.grad is not None
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
