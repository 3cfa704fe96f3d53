"""The one training loop: seeded batches, a budget, validation, model selection, checkpoints.

:func:`fit` runs every kind of training; what changes between kinds is the strategy (see
:mod:`quasineuron.training.strategy`). :func:`train` is :func:`fit` with a
:class:`~quasineuron.training.gradient.Gradient` strategy.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from quasineuron._atomic import atomic_write_json
from quasineuron.data.dataset import ArrayDataset
from quasineuron.training.callbacks import Callback, FunctionCallback, LoopState
from quasineuron.training.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from quasineuron.training.config import AbstractLoss, AbstractOptimizer, Cosine
from quasineuron.training.gradient import Gradient
from quasineuron.training.strategy import AbstractStrategy, Plan

__all__ = ["EpochMetrics", "TrainResult", "fit", "train"]

_KEEP = ("last", "best", "best-or-start")


@dataclass(frozen=True)
class EpochMetrics:
    """What one epoch did.

    Args:
        epoch: Epoch number, starting at 1.
        train_loss: Mean training loss over the epoch's batches (weighted by batch size).
        train_accuracy: Fraction of training samples classified right during the epoch
            (while the weights moved), or None for regression targets or a strategy that
            does not count right answers.
        val_loss: Validation loss at the end of the epoch, or None.
        val_accuracy: Validation accuracy, or None (no validation data, or regression).
        lr: Step size of the epoch's last step (None for strategies without one).
        seconds: Wall time of the epoch, validation included.
        extras: What callbacks recorded for the epoch (e.g. ``"out_of_domain"``).
    """

    epoch: int
    train_loss: float
    train_accuracy: float | None
    val_loss: float | None
    val_accuracy: float | None
    lr: float | None
    seconds: float
    extras: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass(frozen=True)
class TrainResult:
    """The trained network and how it got there; every way of training returns one.

    Args:
        network: The trained module (the object that was passed in, trained in place, holding
            the kept weights: the best epoch's with ``keep="best"``, averaged ones with
            :class:`~quasineuron.training.callbacks.WeightAveraging`).
        history: One entry per epoch run so far, including epochs restored from a checkpoint.
        best_epoch: Epoch (1-based) that validation ranks best (highest accuracy, ties to the
            lower loss, then the earlier epoch; lowest loss for regression), or None without
            validation scores.
        stopped_early: True if patience ran out or a callback asked to stop.
        resumed_from_epoch: Epochs already done in the checkpoint this run resumed from (0 for
            a fresh run).
        samples_seen: Training samples processed (all epochs, restored ones included).
        seconds: Wall time of this call's epochs.
        extras: What the strategy and callbacks added (e.g. ``"weight_averaging"``).
    """

    network: torch.nn.Module
    history: tuple[EpochMetrics, ...]
    best_epoch: int | None
    stopped_early: bool
    resumed_from_epoch: int = 0
    samples_seen: int = 0
    seconds: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> EpochMetrics | None:
        """Metrics of the last epoch run, or None if no epoch ran."""
        return self.history[-1] if self.history else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (without the network and the extras)."""
        return {
            "history": [m.to_dict() for m in self.history],
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
            "resumed_from_epoch": self.resumed_from_epoch,
            "samples_seen": self.samples_seen,
        }


def fit(
    net: torch.nn.Module,
    train_data: ArrayDataset,
    strategy: AbstractStrategy,
    *,
    epochs: int = 10,
    max_samples: int | None = None,
    batch_size: int = 128,
    seed: int = 0,
    val_data: ArrayDataset | None = None,
    keep: str = "last",
    patience: int | None = None,
    min_delta: float = 0.0,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    callbacks: Sequence[Callback | Callable[[EpochMetrics], bool | None]] = (),
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    shuffle: bool = True,
) -> TrainResult:
    """Train ``net`` on ``train_data`` with ``strategy``: the one training loop.

    Each epoch draws a permutation from a ``torch.Generator`` seeded with ``seed`` (the global
    RNG is never touched), hands every batch to ``strategy.step``, scores ``val_data`` with
    ``strategy.score``, calls the callbacks and, with ``checkpoint_dir``, writes a checkpoint
    atomically. On CPU, a run resumed from the checkpoint of epoch ``k`` ends bit-identical to
    an uninterrupted run.

    Args:
        net: The module to train, in place; batches are moved to the device and dtype of its
            first parameter.
        train_data: Training data.
        strategy: How a batch changes the network, e.g. ``Gradient(mode=Surrogate())``.
        epochs: Total number of epochs, counting those restored by ``resume``.
        max_samples: Sample budget: the run ends after ``ceil(max_samples / batch_size)``
            whole batches (at most ``epochs`` epochs); the epoch in progress is validated and
            counted as the last one. None: ``epochs`` full epochs.
        batch_size: Samples per step; the last batch of an epoch may be smaller.
        seed: Seed of the batch-shuffling generator (``augment`` gets its own, ``seed + 1``).
        val_data: Validation data scored after every epoch.
        keep: ``"last"``: the weights of the last epoch. ``"best"``: those of the epoch with
            the highest validation accuracy (ties: lower validation loss, then earlier; for
            regression the lowest validation loss). ``"best-or-start"``: the same, with the
            network as it came in scored first as epoch 0, so a run that makes it worse on
            validation returns it unchanged (``best_epoch == 0``; its score is in
            ``extras["start_val_accuracy"]``); the way to chain fine-tuning stages that
            each keep only an improvement.
        patience: Stop after this many epochs without improvement (by ``keep="best"``'s
            ranking; ``min_delta`` on accuracy, or on the loss for regression); implies
            ``keep="best"``. None never stops.
        min_delta: Smallest improvement that resets ``patience``.
        checkpoint_dir: Folder for ``checkpoint.safetensors`` (written after every epoch) and
            a readable ``history.json``; None saves nothing.
        resume: Continue from the checkpoint in ``checkpoint_dir`` if there is one (a fresh
            run otherwise). Without ``resume`` an existing checkpoint is overwritten.
        progress: Show a tqdm bar per epoch with the running loss and accuracy.
        callbacks: :class:`~quasineuron.training.callbacks.Callback` objects, or functions of
            each epoch's :class:`EpochMetrics` (a truthy return stops training).
        augment: Applied to every training batch as ``augment(xb, generator)``.
        shuffle: Visit the samples in a new random order each epoch; False keeps the data
            set's order (e.g. to replay a given sequence of samples with a local rule).

    Returns:
        The trained network, per-epoch history, best epoch, and what the run did.

    Raises:
        ValueError: For bad options, data that does not fit the network, or a checkpoint made
            by a different configuration or network.
        FloatingPointError: If the training loss becomes NaN or infinite.
    """
    if not isinstance(strategy, AbstractStrategy):
        raise TypeError(
            f"strategy must be an AbstractStrategy such as Gradient(mode=Surrogate()), got "
            f"{type(strategy).__name__}"
        )
    if keep not in _KEEP:
        raise ValueError(f"keep must be one of {_KEEP}, got {keep!r}")
    if keep == "best-or-start" and val_data is None:
        raise ValueError(
            "keep='best-or-start' scores the incoming network on val_data and keeps it unless "
            "an epoch beats it there; pass val_data (e.g. train_data.split(0.1, seed=0))"
        )
    _check_options(net, train_data, val_data, epochs, batch_size, patience, min_delta)
    if max_samples is not None and (
        isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1
    ):
        raise ValueError(f"max_samples must be None or an int >= 1, got {max_samples!r}")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir=<folder of the run to continue>")
    if patience is not None:
        keep = "best"
    cbs = [c if isinstance(c, Callback) else FunctionCallback(c) for c in callbacks]
    first = next(net.parameters())
    device, dtype = first.device, first.dtype if first.is_floating_point() else torch.float32
    x, y = _on(train_data, device, dtype)
    classify = train_data.is_classification
    n = len(train_data)
    n_batches = math.ceil(n / batch_size)
    max_steps = epochs * n_batches
    planned = epochs
    if max_samples is not None:
        max_steps = min(math.ceil(max_samples / batch_size), max_steps)
        planned = math.ceil(max_steps / n_batches)
    plan = Plan(
        epochs=planned,
        steps_per_epoch=n_batches,
        total_steps=max_steps,
        batch_size=int(batch_size),
        n_train=n,
        sample_budget=max_samples is not None,
        device=device,
        dtype=dtype,
        classify=classify,
    )
    gen = torch.Generator().manual_seed(int(seed))
    aug_gen = torch.Generator().manual_seed(int(seed) + 1)
    history: list[EpochMetrics] = []
    best: dict[str, Any] = {"epoch": None, "val_loss": None, "val_accuracy": None, "bad": 0}
    best_state: dict[str, torch.Tensor] | None = None
    stopped = False
    start_epoch = step = seen = 0
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    was_training = net.training
    strategy.setup(net, plan)
    try:
        config = {
            "batch_size": int(batch_size),
            "seed": int(seed),
            "n_train": n,
            "n_features": train_data.n_features,
            **strategy.config(),
        }
        if max_samples is not None:
            config["max_samples"] = int(max_samples)
        if not shuffle:
            config["shuffle"] = False
        if resume and ckpt_path is not None and ckpt_path.exists():
            ckpt = load_checkpoint(ckpt_path)
            _check_config(ckpt.meta["config"], config, ckpt_path)
            try:
                net.load_state_dict(ckpt.model_state)
            except RuntimeError as exc:
                raise ValueError(
                    f"checkpoint {str(ckpt_path)!r} was written for a different network: "
                    f"{exc}; use a new checkpoint_dir or resume=False"
                ) from exc
            extra = ckpt.extra_tensors or {}
            sstate = _decode(ckpt.meta.get("strategy_state", {}), extra)
            if ckpt.optimizer_state["param_groups"]:
                sstate["optimizer"] = ckpt.optimizer_state
            strategy.load_state_dict(sstate)
            for i, cb in enumerate(cbs):
                saved = ckpt.meta.get("callbacks_state", [])
                if i < len(saved):
                    cb.load_state_dict(_decode(saved[i], extra))
            strategy.weights_loaded(net)
            gen.set_state(ckpt.generator_state)
            if "augment_generator" in extra:
                aug_gen.set_state(extra["augment_generator"])
            history = [EpochMetrics(**m) for m in ckpt.meta["history"]]
            best = dict(ckpt.meta["best"])
            best.setdefault("val_accuracy", None)
            best.setdefault("bad", best.pop("bad_epochs", 0))
            best_state = ckpt.best_model_state
            stopped = bool(ckpt.meta["stopped_early"])
            start_epoch = int(ckpt.meta["epoch"])
            step = int(ckpt.meta.get("step", start_epoch * n_batches))
            seen = int(ckpt.meta.get("samples_seen", 0))
        resumed_from = start_epoch
        state = LoopState(net=net, strategy=strategy, plan=plan, train_data=train_data, keep=keep)
        state.epoch, state.step, state.samples_seen = start_epoch, step, seen
        if keep == "best-or-start" and val_data is not None and start_epoch == 0:
            # the incoming network is the candidate to beat (a resumed run restores it from
            # the checkpoint's best, so it is scored once)
            start_loss, start_acc = strategy.score(net, val_data, batch_size)
            net.train()
            best.update(epoch=0, val_loss=start_loss, val_accuracy=start_acc)
            best["start_val_accuracy"] = start_acc  # kept in the checkpoint with the best
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        if "start_val_accuracy" in best:
            state.result_extras["start_val_accuracy"] = best["start_val_accuracy"]
        for cb in cbs:
            cb.on_train_begin(state)
        t_run = time.perf_counter()
        with torch.enable_grad():
            for epoch in range(start_epoch, planned):
                if stopped or step >= max_steps:
                    break
                t0 = time.perf_counter()
                net.train()
                state.epoch_extras = {}
                perm = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
                perm = perm.to(device)
                sum_loss = torch.zeros((), dtype=torch.float64, device=device)
                n_correct = torch.zeros((), dtype=torch.int64, device=device)
                counted = True  # every step reported right answers
                epoch_seen = 0
                bar = tqdm(
                    total=min(n_batches, max_steps - step),
                    desc=f"epoch {epoch + 1}/{planned}",
                    disable=not progress,
                    leave=True,  # one line per epoch, with its final metrics
                    dynamic_ncols=True,
                )
                with bar:
                    xb = x[:0]
                    for b in range(n_batches):
                        if step >= max_steps or stopped:
                            break
                        idx = perm[b * batch_size : (b + 1) * batch_size]
                        xb, yb = x[idx], y[idx]
                        if augment is not None:
                            xb = augment(xb, aug_gen)
                        out = strategy.step(net, xb, yb, step)
                        step += 1
                        epoch_seen += len(idx)
                        sum_loss += torch.as_tensor(out.loss, dtype=torch.float64).to(device) * len(
                            idx
                        )
                        if out.n_correct is None:
                            counted = False
                        else:
                            n_correct += torch.as_tensor(out.n_correct).to(device)
                        state.step, state.samples_seen = step, seen + epoch_seen
                        state.batch_index = idx
                        for cb in cbs:
                            if cb.on_step(state, out):
                                stopped = state.stop_requested = True
                        bar.update()
                        if progress and b % 10 == 0:  # .item() syncs: not on every batch
                            right = n_correct if classify and counted else None
                            post = _postfix(sum_loss, right, epoch_seen)
                            bar.set_postfix(post, refresh=False)
                    seen += epoch_seen
                    train_loss = sum_loss.item() / max(epoch_seen, 1)
                    if strategy.finite_loss_required and not math.isfinite(train_loss):
                        explain = getattr(strategy, "explain", None)
                        raise FloatingPointError(
                            explain(net, xb, train_loss, epoch)
                            if callable(explain)
                            else f"training loss became {train_loss} in epoch {epoch + 1}; "
                            f"lower the step size or check the network's outputs"
                        )
                    val_loss = val_acc = None
                    if val_data is not None:
                        val_loss, val_acc = strategy.score(net, val_data, batch_size)
                        net.train()
                    if progress:
                        right = n_correct if classify and counted else None
                        post = _postfix(sum_loss, right, epoch_seen)
                        if val_loss is not None:
                            post["val_loss"] = f"{val_loss:.4f}"
                        if val_acc is not None:
                            post["val_acc"] = f"{val_acc:.3f}"
                        bar.set_postfix(post)
                lr = strategy.current_lr()
                metrics = EpochMetrics(
                    epoch=epoch + 1,
                    train_loss=train_loss,
                    train_accuracy=(
                        n_correct.item() / max(epoch_seen, 1) if classify and counted else None
                    ),
                    val_loss=val_loss,
                    val_accuracy=val_acc,
                    lr=None if lr is None else float(lr),
                    seconds=time.perf_counter() - t0,
                )
                state.epoch = epoch + 1
                if val_loss is not None or val_acc is not None:
                    if _better(val_acc, val_loss, best, 0.0):
                        if not _better(val_acc, val_loss, best, min_delta):
                            best["bad"] += 1  # better, but not by min_delta: no patience reset
                        else:
                            best["bad"] = 0
                        best.update(epoch=epoch + 1, val_loss=val_loss, val_accuracy=val_acc)
                        best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
                    else:
                        best["bad"] += 1
                    if patience is not None and best["bad"] >= patience:
                        stopped = state.stop_requested = True
                for cb in cbs:
                    if cb.on_epoch(state, metrics):
                        stopped = state.stop_requested = True
                if state.epoch_extras:
                    metrics = replace(metrics, extras=dict(state.epoch_extras))
                history.append(metrics)
                if ckpt_path is not None:
                    _save(
                        ckpt_path,
                        net,
                        strategy,
                        cbs,
                        gen,
                        aug_gen,
                        config,
                        history,
                        best,
                        best_state,
                        stopped,
                        step,
                        seen,
                    )
        if keep != "last" and best_state is not None and best["epoch"] != len(history):
            net.load_state_dict(best_state)
            strategy.weights_loaded(net)
        for cb in cbs:
            cb.on_train_end(state)
    finally:
        net.train(was_training)
        strategy.teardown(net)
    return TrainResult(
        network=net,
        history=tuple(history),
        best_epoch=best["epoch"],
        stopped_early=stopped,
        resumed_from_epoch=resumed_from,
        samples_seen=seen,
        seconds=time.perf_counter() - t_run,
        extras=dict(state.result_extras),
    )


def _better(acc: float | None, loss: float | None, best: dict[str, Any], delta: float) -> bool:
    """Does an epoch with (acc, loss) beat ``best`` (by more than ``delta`` on its main score)?

    Classification ranks by accuracy, ties by the lower loss (then the earlier epoch wins,
    so equal scores are not better); regression by the loss. NaN scores never win.
    """
    if best["epoch"] is None:
        return True
    if acc is not None and best["val_accuracy"] is not None:
        if acc > best["val_accuracy"] + delta:
            return True
        if delta > 0 or acc != best["val_accuracy"]:
            return False
    if loss is None or best["val_loss"] is None:
        return loss is not None and best["val_loss"] is None and math.isfinite(loss)
    return loss < best["val_loss"] - delta


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
    loss: str | AbstractLoss = "cross-entropy",
    seed: int = 0,
    val_data: ArrayDataset | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    patience: int | None = None,
    min_delta: float = 0.0,
    progress: bool = True,
    callbacks: Sequence[Callback | Callable[[EpochMetrics], bool | None]] = (),
    keep: str = "last",
    max_samples: int | None = None,
    domain_penalty: float = 0.0,
    nonfinite: str = "error",
) -> TrainResult:
    """Train ``net`` by gradient descent: :func:`fit` with a :class:`Gradient` strategy.

    Args:
        net: A module mapping x (batch, n_features) to outputs (batch, k); called as
            ``net(x, mode=mode)``, or ``net(x)`` when ``mode`` is None. Trained in place.
        train_data: Training data.
        mode: Forward mode passed through untouched, e.g. ``Surrogate()`` or ``PhysicsAware()``
            from ``quasineuron.network.modes``.
        epochs: Total number of epochs, counting those restored by ``resume``.
        batch_size: Samples per step; the last batch of an epoch may be smaller.
        lr: Learning rate for an optimiser given by name (default 1e-3 for Adam, 1e-2 for
            SGD); leave None with a typed optimiser, which carries its own rate.
        optimizer: ``"adam"``, ``"sgd"``, or a typed ``Adam(...)`` / ``SGD(...)``.
        schedule: Learning-rate schedule stepped every batch, e.g. ``Cosine()``; None keeps
            the rate constant. It spans the run, so a run with a schedule can only be
            resumed with the same ``epochs``.
        loss: ``"cross-entropy"``, ``"mse"`` (one-hot targets for labels), or a typed loss.
        seed: Seed of the batch-shuffling generator.
        val_data: Validation data scored after every epoch (needed for ``patience``).
        checkpoint_dir: Folder for the checkpoint and ``history.json`` (see :func:`fit`).
        resume: Continue from the checkpoint in ``checkpoint_dir`` if there is one.
        patience: Stop after this many epochs without improvement, keeping the best epoch.
        min_delta: Smallest improvement that counts.
        progress: Show a tqdm bar with the running loss and accuracy.
        callbacks: Callbacks, or functions of each epoch's :class:`EpochMetrics`.
        keep: ``"last"`` or ``"best"`` (see :func:`fit`).
        max_samples: Sample budget (see :func:`fit`).
        domain_penalty: Weight of the soft penalty on drives outside the characterised
            domain (see :class:`Gradient`); 0 turns it off.
        nonfinite: ``"error"`` or ``"mask"``: what non-finite network outputs do (see
            :class:`Gradient`).

    Returns:
        The trained network and its history (see :class:`TrainResult`).

    Raises:
        ValueError: For bad options, data that does not fit the network, or a checkpoint made
            by a different configuration or network.
        FloatingPointError: If the training loss becomes NaN or infinite.
    """
    strategy = Gradient(
        mode,
        optimizer=optimizer,
        lr=lr,
        loss=loss,
        schedule=schedule,
        domain_penalty=domain_penalty,
        nonfinite=nonfinite,
    )
    return fit(
        net,
        train_data,
        strategy,
        epochs=epochs,
        max_samples=max_samples,
        batch_size=batch_size,
        seed=seed,
        val_data=val_data,
        keep=keep,
        patience=patience,
        min_delta=min_delta,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        progress=progress,
        callbacks=callbacks,
    )


def _postfix(sum_loss: torch.Tensor, n_correct: torch.Tensor | None, seen: int) -> dict[str, str]:
    post = {"loss": f"{sum_loss.item() / max(seen, 1):.4f}"}
    if n_correct is not None:
        post["acc"] = f"{n_correct.item() / max(seen, 1):.3f}"
    return post


def _on(
    data: ArrayDataset, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    y = data.y.to(device)
    return data.x.to(device, dtype), (y.to(dtype) if y.is_floating_point() else y)


def _encode(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON form of a nested state: tensors go to ``tensors`` and are named in their place.

    Tuples and dicts with non-string keys (an optimiser's state is keyed by int) are tagged so
    that :func:`_decode` gives back exactly what was saved.
    """
    if isinstance(obj, torch.Tensor):
        name = f"{prefix}/{len(tensors)}"
        tensors[name] = obj
        return {"__tensor__": name}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _encode(v, prefix, tensors) for k, v in obj.items()}
        return {"__items__": [[k, _encode(v, prefix, tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, prefix, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, prefix, tensors) for v in obj]
    return obj


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__items__" in obj:
            return {k: _decode(v, tensors) for k, v in obj["__items__"]}
        if "__tuple__" in obj:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
        return {k: _decode(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    return obj


def _save(
    path: Path,
    net: torch.nn.Module,
    strategy: AbstractStrategy,
    callbacks: list[Callback],
    gen: torch.Generator,
    aug_gen: torch.Generator,
    config: dict[str, Any],
    history: list[EpochMetrics],
    best: dict[str, Any],
    best_state: dict[str, torch.Tensor] | None,
    stopped: bool,
    step: int,
    seen: int,
) -> None:
    hist = [m.to_dict() for m in history]
    extra: dict[str, torch.Tensor] = {"augment_generator": aug_gen.get_state()}
    sstate = dict(strategy.state_dict())
    # an optimiser's state keeps its place in the checkpoint layout (optimizer/<i>/<name>)
    opt_state = sstate.pop("optimizer", None) or {"state": {}, "param_groups": []}
    meta = {
        "epoch": len(history),
        "step": step,
        "samples_seen": seen,
        "config": config,
        "history": hist,
        # strict JSON: a non-finite validation score is stored as null
        "best": {
            k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in best.items()
        },
        "stopped_early": stopped,
        "strategy_state": _encode(sstate, "strategy", extra),
        "callbacks_state": [
            _encode(cb.state_dict(), f"callback{i}", extra) for i, cb in enumerate(callbacks)
        ],
    }
    save_checkpoint(
        path,
        model_state=net.state_dict(),
        optimizer_state=opt_state,
        generator_state=gen.get_state(),
        meta=meta,
        best_model_state=best_state,
        extra_tensors=extra,
    )
    # A readable copy of the history; the checkpoint above is what resuming reads.
    atomic_write_json(path.parent / "history.json", hist, indent=1)


def _check_config(saved: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    diffs = [
        f"{k}: checkpoint {saved.get(k)!r}, now {current.get(k)!r}"
        for k in current
        if saved.get(k) != current.get(k)
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
