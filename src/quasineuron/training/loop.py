"""The mini-batch training loop: seeded shuffling, checkpoint/resume and early stopping."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from quasineuron._atomic import atomic_write_json
from quasineuron.data.dataset import ArrayDataset
from quasineuron.training.checkpoint import (
    CHECKPOINT_NAME,
    load_checkpoint,
    restore_optimizer_state,
    save_checkpoint,
)
from quasineuron.training.config import (
    AbstractLoss,
    AbstractOptimizer,
    Cosine,
    as_loss,
    as_optimizer,
)

__all__ = ["EpochMetrics", "TrainResult", "train"]

#: A callback gets each epoch's metrics; a truthy return value stops training.
Callback = Callable[["EpochMetrics"], bool | None]


@dataclass(frozen=True)
class EpochMetrics:
    """What one epoch did.

    Args:
        epoch: Epoch number, starting at 1.
        train_loss: Mean training loss over the epoch's batches (weighted by batch size).
        train_accuracy: Fraction of training samples classified right during the epoch
            (while the weights moved), or None for regression targets.
        val_loss: Mean loss on the validation data at the end of the epoch, or None.
        val_accuracy: Validation accuracy, or None (no validation data, or regression).
        lr: Learning rate of the epoch's last step.
        seconds: Wall time of the epoch, validation included.
    """

    epoch: int
    train_loss: float
    train_accuracy: float | None
    val_loss: float | None
    val_accuracy: float | None
    lr: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass(frozen=True)
class TrainResult:
    """The trained network and how it got there.

    Args:
        network: The trained module (the same object that was passed in, trained in place;
            holding the best weights when early stopping was on).
        history: One entry per epoch run so far, including epochs restored from a checkpoint.
        best_epoch: Epoch (1-based) with the lowest validation loss, or None without
            validation data.
        stopped_early: True if patience ran out or a callback asked to stop.
        resumed_from_epoch: Epochs already done in the checkpoint this run resumed from (0 for
            a fresh run).
    """

    network: torch.nn.Module
    history: tuple[EpochMetrics, ...]
    best_epoch: int | None
    stopped_early: bool
    resumed_from_epoch: int = 0

    @property
    def final(self) -> EpochMetrics | None:
        """Metrics of the last epoch run, or None if no epoch ran."""
        return self.history[-1] if self.history else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (without the network)."""
        return {
            "history": [m.to_dict() for m in self.history],
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
            "resumed_from_epoch": self.resumed_from_epoch,
        }


def train(
    net: torch.nn.Module,
    train_data: ArrayDataset,
    *,
    mode: Any = None,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float | None = None,
    optimizer: str | AbstractOptimizer = "adam",
    schedule: Cosine | None = None,
    loss: str | AbstractLoss = "cross_entropy",
    seed: int = 0,
    val_data: ArrayDataset | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    patience: int | None = None,
    min_delta: float = 0.0,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
) -> TrainResult:
    """Train ``net`` on ``train_data`` with shuffled mini-batches.

    Each epoch draws a permutation from a ``torch.Generator`` seeded with ``seed`` (the global
    RNG is never touched), takes a step per batch, scores ``val_data`` and, with
    ``checkpoint_dir``, writes a checkpoint atomically. On CPU, a run resumed from the
    checkpoint of epoch ``k`` ends bit-identical to an uninterrupted run.

    Args:
        net: A module mapping x (batch, n_features) to outputs (batch, k); called as
            ``net(x, mode=mode)``, or ``net(x)`` when ``mode`` is None. Trained in place;
            batches are moved to the device and dtype of its first parameter.
        train_data: Training data.
        mode: Forward mode passed through untouched, e.g. ``Surrogate()`` or ``PhysicsAware()``
            from ``quasineuron.network.modes``.
        epochs: Total number of epochs, counting those restored by ``resume``.
        batch_size: Samples per step; the last batch of an epoch may be smaller.
        lr: Learning rate for an optimiser given by name (default 1e-3 for Adam, 1e-2 for
            SGD); leave None with a typed optimiser, which carries its own rate.
        optimizer: ``"adam"``, ``"sgd"``, or a typed ``Adam(...)`` / ``SGD(...)``.
        schedule: Learning-rate schedule stepped every batch, e.g. ``Cosine()``; None keeps
            the rate constant. It spans ``epochs``, so a run with a schedule can only be
            resumed with the same ``epochs``.
        loss: ``"cross_entropy"``, ``"mse"`` (one-hot targets for labels), or a typed loss.
        seed: Seed of the batch-shuffling generator.
        val_data: Validation data scored after every epoch (needed for ``patience``).
        checkpoint_dir: Folder for ``checkpoint.safetensors`` (written after every epoch) and
            a readable ``history.json``; None saves nothing.
        resume: Continue from the checkpoint in ``checkpoint_dir`` if there is one (a fresh
            run otherwise). Without ``resume`` an existing checkpoint is overwritten.
        patience: Stop after this many epochs without a validation-loss improvement larger
            than ``min_delta``, then restore the weights of the best epoch. None never stops.
        min_delta: Smallest decrease of the validation loss that counts as an improvement.
        progress: Show a tqdm bar with the running loss and accuracy.
        callbacks: Functions called with each epoch's :class:`EpochMetrics`; a truthy return
            value stops training.

    Returns:
        The trained network, per-epoch history, best epoch and whether training stopped early.

    Raises:
        ValueError: For bad options, data that does not fit the network, or a checkpoint made
            by a different configuration or network.
        FloatingPointError: If the training loss becomes NaN or infinite.
    """
    check_mode = getattr(net, "check_mode", None)
    if mode is not None and callable(check_mode):
        check_mode(mode, training=True)  # refuse an impossible mode before the first step
    opt_cfg = as_optimizer(optimizer, lr)
    loss_fn = as_loss(loss)
    _check_options(net, train_data, val_data, epochs, batch_size, patience, min_delta, schedule)
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir=<folder of the run to continue>")
    params = [p for p in net.parameters() if p.requires_grad]
    first = next(net.parameters())
    device, dtype = first.device, first.dtype if first.is_floating_point() else torch.float32

    x, y = _on(train_data, device, dtype)
    val = _on(val_data, device, dtype) if val_data is not None else None
    classify = train_data.is_classification
    n = len(train_data)
    n_batches = math.ceil(n / batch_size)
    total_steps = epochs * n_batches

    opt = opt_cfg.build(params)
    gen = torch.Generator().manual_seed(int(seed))
    config = {
        "batch_size": int(batch_size),
        "seed": int(seed),
        "n_train": n,
        "n_features": train_data.n_features,
        "optimizer": repr(opt_cfg),
        "loss": repr(loss_fn),
        "schedule": repr(schedule),
        "mode": repr(mode),
    }
    if schedule is not None:  # the schedule spans all epochs: changing them would bend it
        config["epochs"] = int(epochs)
    history: list[EpochMetrics] = []
    best: dict[str, Any] = {"epoch": None, "val_loss": math.inf, "bad_epochs": 0}
    best_state: dict[str, torch.Tensor] | None = None
    stopped = False
    start_epoch = 0
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None

    if resume and ckpt_path is not None and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        _check_config(ckpt.meta["config"], config, ckpt_path)
        try:
            net.load_state_dict(ckpt.model_state)
        except RuntimeError as exc:
            raise ValueError(
                f"checkpoint {str(ckpt_path)!r} was written for a different network: {exc}; "
                f"use a new checkpoint_dir or resume=False"
            ) from exc
        restore_optimizer_state(opt, ckpt.optimizer_state)
        gen.set_state(ckpt.generator_state)
        history = [EpochMetrics(**m) for m in ckpt.meta["history"]]
        best = dict(ckpt.meta["best"])
        best["val_loss"] = math.inf if best["val_loss"] is None else best["val_loss"]
        best_state = ckpt.best_model_state
        stopped = bool(ckpt.meta["stopped_early"])
        start_epoch = int(ckpt.meta["epoch"])
    resumed_from = start_epoch

    step_checks = device.type == "cpu"
    was_training = net.training
    try:
        with torch.enable_grad():
            for epoch in range(start_epoch, epochs):
                if stopped:
                    break
                t0 = time.perf_counter()
                net.train()
                step_lr = opt_cfg.lr
                perm = torch.randperm(n, generator=gen).to(device)
                sum_loss = torch.zeros((), dtype=torch.float64, device=device)
                n_correct = torch.zeros((), dtype=torch.int64, device=device)
                bar = tqdm(
                    total=n_batches,
                    desc=f"epoch {epoch + 1}/{epochs}",
                    disable=not progress,
                    leave=True,  # one line per epoch, with its final metrics
                    dynamic_ncols=True,
                )
                with bar:
                    post: dict[str, str] = {}
                    for b in range(n_batches):
                        idx = perm[b * batch_size : (b + 1) * batch_size]
                        xb, yb = x[idx], y[idx]
                        if schedule is not None:
                            step_lr = schedule.lr_at(opt_cfg.lr, epoch * n_batches + b, total_steps)
                            for group in opt.param_groups:
                                group["lr"] = step_lr
                        opt.zero_grad(set_to_none=True)
                        out = _forward(net, xb, mode)
                        if epoch == start_epoch and b == 0:
                            _check_output(out, train_data)
                        batch_loss = loss_fn(out, yb)
                        # On the CPU a check costs no device sync, so a non-finite loss stops the
                        # step that made it, while the weights that made it are intact and the
                        # network can say which device failed (elsewhere: once an epoch).
                        if step_checks and not bool(torch.isfinite(batch_loss)):
                            loss_value = float(batch_loss.detach())
                            raise FloatingPointError(
                                _nonfinite_message(net, xb, mode, loss_value, epoch, b, opt_cfg.lr)
                            )
                        batch_loss.backward()
                        opt.step()
                        sum_loss += batch_loss.detach().double() * len(idx)
                        if classify:
                            n_correct += (out.detach().argmax(dim=1) == yb).sum()
                        bar.update()
                        if progress and b % 10 == 0:  # .item() syncs: not on every batch
                            seen = min((b + 1) * batch_size, n)
                            post = _postfix(sum_loss, n_correct if classify else None, seen)
                            bar.set_postfix(post, refresh=False)
                    train_loss = sum_loss.item() / n
                    if not math.isfinite(train_loss):
                        raise FloatingPointError(
                            _nonfinite_message(net, xb, mode, train_loss, epoch, None, opt_cfg.lr)
                        )
                    val_loss = val_acc = None
                    if val is not None:
                        val_loss, val_acc = _score(net, *val, mode, loss_fn, batch_size, classify)
                        net.train()
                    if progress:
                        post = _postfix(sum_loss, n_correct if classify else None, n)
                        if val_loss is not None:
                            post["val_loss"] = f"{val_loss:.4f}"
                        if val_acc is not None:
                            post["val_acc"] = f"{val_acc:.3f}"
                        bar.set_postfix(post)
                metrics = EpochMetrics(
                    epoch=epoch + 1,
                    train_loss=train_loss,
                    train_accuracy=n_correct.item() / n if classify else None,
                    val_loss=val_loss,
                    val_accuracy=val_acc,
                    lr=float(step_lr),
                    seconds=time.perf_counter() - t0,
                )
                history.append(metrics)
                if val_loss is not None:
                    if val_loss < best["val_loss"] - min_delta:
                        best = {"epoch": epoch + 1, "val_loss": val_loss, "bad_epochs": 0}
                        best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
                    else:
                        best["bad_epochs"] += 1
                    if patience is not None and best["bad_epochs"] >= patience:
                        stopped = True
                for callback in callbacks:
                    if callback(metrics):
                        stopped = True
                if ckpt_path is not None:
                    _save(ckpt_path, net, opt, gen, config, history, best, best_state, stopped)
    finally:
        net.train(was_training)

    if patience is not None and best_state is not None:
        net.load_state_dict(best_state)
    return TrainResult(
        network=net,
        history=tuple(history),
        best_epoch=best["epoch"],
        stopped_early=stopped,
        resumed_from_epoch=resumed_from,
    )


def _nonfinite_message(
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
    return (
        f"{head}; lower the learning rate (now {lr!r}) or check the network's outputs and the loss"
    )


def _postfix(sum_loss: torch.Tensor, n_correct: torch.Tensor | None, seen: int) -> dict[str, str]:
    post = {"loss": f"{sum_loss.item() / seen:.4f}"}
    if n_correct is not None:
        post["acc"] = f"{n_correct.item() / seen:.3f}"
    return post


def _forward(net: torch.nn.Module, x: torch.Tensor, mode: Any) -> torch.Tensor:
    return net(x) if mode is None else net(x, mode=mode)


def _on(
    data: ArrayDataset, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    y = data.y.to(device)
    return data.x.to(device, dtype), (y.to(dtype) if y.is_floating_point() else y)


@torch.no_grad()
def _score(
    net: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    mode: Any,
    loss_fn: AbstractLoss,
    batch_size: int,
    classify: bool,
) -> tuple[float, float | None]:
    """Mean loss and accuracy of ``net`` in eval mode over (x, y)."""
    net.eval()
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        out = _forward(net, xb, mode)
        total += loss_fn(out, yb).double() * len(xb)
        if classify:
            correct += (out.argmax(dim=1) == yb).sum()
    return total.item() / len(x), (correct.item() / len(x) if classify else None)


def _save(
    path: Path,
    net: torch.nn.Module,
    opt: torch.optim.Optimizer,
    gen: torch.Generator,
    config: dict[str, Any],
    history: list[EpochMetrics],
    best: dict[str, Any],
    best_state: dict[str, torch.Tensor] | None,
    stopped: bool,
) -> None:
    hist = [m.to_dict() for m in history]
    meta = {
        "epoch": len(history),
        "config": config,
        "history": hist,
        "best": {**best, "val_loss": None if math.isinf(best["val_loss"]) else best["val_loss"]},
        "stopped_early": stopped,
    }
    save_checkpoint(
        path,
        model_state=net.state_dict(),
        optimizer_state=opt.state_dict(),
        generator_state=gen.get_state(),
        meta=meta,
        best_model_state=best_state,
    )
    # A readable copy of the history; the checkpoint above is what resuming reads.
    atomic_write_json(path.parent / "history.json", hist, indent=1)


def _check_config(saved: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    diffs = [
        f"{k}: checkpoint {saved.get(k)!r}, now {current[k]!r}"
        for k in current
        if saved.get(k) != current[k]
    ]
    if diffs:
        raise ValueError(
            f"cannot resume from {str(path)!r}: it was made with other settings ("
            + "; ".join(diffs)
            + "); use the same settings, a new checkpoint_dir, or resume=False"
        )


def _check_options(
    net: Any,
    train_data: Any,
    val_data: Any,
    epochs: int,
    batch_size: int,
    patience: int | None,
    min_delta: float,
    schedule: Any,
) -> None:
    if not isinstance(net, torch.nn.Module):
        raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}")
    if not any(p.requires_grad for p in net.parameters()):
        raise ValueError("net has no trainable parameters; nothing to train")
    for name, data in (("train_data", train_data), ("val_data", val_data)):
        if data is not None and not isinstance(data, ArrayDataset):
            raise TypeError(
                f"{name} must be an ArrayDataset, got {type(data).__name__}; wrap tensors as "
                f"ArrayDataset(x, y)"
            )
    if len(train_data) == 0:
        raise ValueError("train_data is empty")
    if val_data is not None:
        if len(val_data) == 0:
            raise ValueError("val_data is empty; pass val_data=None to skip validation")
        if val_data.n_features != train_data.n_features:
            raise ValueError(
                f"val_data has {val_data.n_features} features, train_data {train_data.n_features}"
            )
        if val_data.is_classification != train_data.is_classification:
            raise ValueError("val_data and train_data must both hold labels, or both targets")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if patience is not None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be None or an int >= 1, got {patience!r}")
        if val_data is None:
            raise ValueError("patience needs val_data to watch; e.g. train_data.split(0.1, seed=0)")
    if not (math.isfinite(min_delta) and min_delta >= 0):
        raise ValueError(f"min_delta must be a finite number >= 0, got {min_delta!r}")
    if schedule is not None and not isinstance(schedule, Cosine):
        raise TypeError(f"schedule must be None or Cosine(...), got {schedule!r}")


def _check_output(out: torch.Tensor, data: ArrayDataset) -> None:
    if out.ndim != 2:
        raise ValueError(f"net must return outputs of shape (batch, k), got {tuple(out.shape)}")
    if data.is_classification and out.shape[1] < (data.n_classes or 0):
        raise ValueError(
            f"net has {out.shape[1]} outputs but the labels need {data.n_classes} classes; "
            f"make the last layer {data.n_classes} wide"
        )
    if not data.is_classification and out.shape[1] != data.y.shape[1]:
        raise ValueError(
            f"net has {out.shape[1]} outputs but the targets have {data.y.shape[1]} columns"
        )
