"""Data-parallel training with ``torch.distributed``: one process per CPU group or GPU.

Launch a script that calls :func:`train_distributed` with ``torchrun``::

    torchrun --nproc_per_node 2 train_ddp.py          # gloo on CPU, nccl on GPUs

Every rank builds the same network (same ``seed``), draws the same shuffling permutation, and
takes its share of each *global* batch of ``batch_size`` samples. The loss on a shard is scaled
so that the gradients DistributedDataParallel averages equal the gradient of the mean loss over
the whole global batch: training matches single-process :func:`quasineuron.train` with the same
``seed`` and ``batch_size`` up to floating-point summation order.

For a quick local run without ``torchrun`` (tests, notebooks), :func:`launch_local` spawns the
ranks on loopback with a free port.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from quasineuron.data.dataset import ArrayDataset
from quasineuron.training.callbacks import Callback
from quasineuron.training.config import AbstractLoss, AbstractOptimizer, Cosine
from quasineuron.training.gradient import Gradient
from quasineuron.training.loop import EpochMetrics, TrainResult, fit
from quasineuron.training.strategy import StepOutput

__all__ = ["launch_local", "train_distributed"]


def train_distributed(
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
    device: str | torch.device | None = None,
    backend: str | None = None,
    max_samples: int | None = None,
    keep: str = "last",
    patience: int | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    callbacks: Sequence[Callback | Callable[[EpochMetrics], bool | None]] = (),
) -> TrainResult:
    """Train ``net`` data-parallel across the ranks of a ``torch.distributed`` job.

    The same loop as :func:`quasineuron.train` (:func:`~quasineuron.training.fit`), with the
    network wrapped in ``DistributedDataParallel`` and each rank taking its shard of every
    batch. Call it in every rank (e.g. a script started by ``torchrun``). If no process group
    is initialised yet, one is created from the ``torchrun`` environment (``RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) and destroyed at the end.

    Each step, the global batch is split into ``world_size`` near-equal shards; rank ``r``
    computes ``loss_r = mean_loss(shard_r) * len(shard_r) * world_size / len(batch)`` so that
    the gradient average DDP forms is ``∇ (1 / len(batch)) Σ_i loss_i``, as in :func:`train`.

    Args:
        net: A module mapping x (batch, n_features) to outputs (batch, k); identical on
            every rank (build it with the same seed). Trained in place and moved to ``device``.
        train_data: Training data, the full set on every rank (each rank reads its shards).
        mode: Forward mode passed to ``net(x, mode=mode)``, or None for ``net(x)``.
        epochs: Number of epochs.
        batch_size: Global samples per step, summed over all ranks.
        lr: Learning rate for an optimiser given by name.
        optimizer: ``"adam"``, ``"sgd"`` or a typed optimiser.
        schedule: Learning-rate schedule stepped every batch, or None.
        loss: ``"cross-entropy"``, ``"mse"`` or a typed loss.
        seed: Seed of the batch-shuffling generator (the same on every rank).
        val_data: Validation data, scored on every rank after each epoch.
        device: Where this rank computes; default ``cuda:LOCAL_RANK`` when CUDA is available,
            else the CPU.
        backend: Process-group backend when one is created; default ``"nccl"`` on CUDA,
            ``"gloo"`` otherwise.
        max_samples: Sample budget (see :func:`~quasineuron.training.fit`).
        keep: ``"last"`` or ``"best"`` (see :func:`~quasineuron.training.fit`).
        patience: Early stopping (see :func:`~quasineuron.training.fit`).
        checkpoint_dir: Checkpoint folder; give each rank its own (e.g. ``run/rank0``).
        resume: Continue from the checkpoint in ``checkpoint_dir``.
        callbacks: Callbacks (see :func:`~quasineuron.training.fit`).

    Returns:
        The same :class:`TrainResult` on every rank; ``history`` holds global metrics
        (losses and accuracies over all ranks' shards).

    Raises:
        ValueError: For bad options, or if ``batch_size`` is smaller than the world size.
        RuntimeError: If no process group exists and the ``torchrun`` variables are missing.
        FloatingPointError: If the training loss becomes NaN or infinite.
    """
    strategy = _Sharded(mode, optimizer=optimizer, lr=lr, loss=loss, schedule=schedule)
    created = _init_process_group(device, backend)
    try:
        world = dist.get_world_size()
        if batch_size < world:
            raise ValueError(
                f"batch_size is the global batch and must be >= the world size {world}, got "
                f"{batch_size}"
            )
        dev = _rank_device(device)
        net.to(dev)
        ddp = DistributedDataParallel(net, device_ids=[dev] if dev.type == "cuda" else None)
        result = fit(
            ddp,
            train_data,
            strategy,
            epochs=epochs,
            max_samples=max_samples,
            batch_size=batch_size,
            seed=seed,
            val_data=val_data,
            keep=keep,
            patience=patience,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            progress=False,
            callbacks=callbacks,
        )
    finally:
        if created:
            dist.destroy_process_group()
    return replace(result, network=net)


class _Sharded(Gradient):
    """:class:`Gradient` on this rank's shard of every global batch, loss scaled for DDP."""

    def step(
        self,
        net: torch.nn.Module,
        xb: torch.Tensor,
        yb: torch.Tensor,
        step_index: int,
        *,
        loss_scale: float = 1.0,
    ) -> StepOutput:
        """One step on this rank's shard; the returned loss and count are global."""
        rank, world = dist.get_rank(), dist.get_world_size()
        shard = torch.tensor_split(torch.arange(len(xb), device=xb.device), world)[rank]
        scale = loss_scale * len(shard) * world / len(xb)
        if len(shard):
            out = super().step(net, xb[shard], yb[shard], step_index, loss_scale=scale)
            loss_sum = torch.as_tensor(out.loss, dtype=torch.float64) * len(shard)
            right = out.n_correct if out.n_correct is not None else 0
        else:  # a short last batch: this rank still joins the gradient all-reduce
            out = super().step(net, xb[:1], yb[:1], step_index, loss_scale=0.0)
            loss_sum, right = torch.zeros((), dtype=torch.float64), 0
        sums = torch.stack(
            [loss_sum.to(xb.device).double(), torch.as_tensor(right).to(xb.device).double()]
        )
        dist.all_reduce(sums)
        n_correct = int(sums[1].item()) if out.n_correct is not None else None
        return StepOutput(loss=sums[0] / len(xb), n_correct=n_correct)


def _rank_device(device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def _init_process_group(device: str | torch.device | None, backend: str | None) -> bool:
    """Create the default process group from the torchrun environment; True if created here."""
    if dist.is_initialized():
        return False
    missing = [
        k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ
    ]
    if missing:
        raise RuntimeError(
            f"no torch.distributed process group and the environment lacks {missing}; start "
            "the script with `torchrun --nproc_per_node N script.py`, call launch_local(...), "
            "or call torch.distributed.init_process_group first"
        )
    dev = _rank_device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(backend=backend or ("nccl" if dev.type == "cuda" else "gloo"))
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank_main(
    local_rank: int,
    fn: Callable[..., Any],
    nprocs: int,
    port: int,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> None:
    os.environ.update(
        RANK=str(local_rank),
        LOCAL_RANK=str(local_rank),
        WORLD_SIZE=str(nprocs),
        LOCAL_WORLD_SIZE=str(nprocs),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    fn(*args, **kwargs)


def launch_local(
    fn: Callable[..., Any],
    *args: Any,
    nprocs: int = 2,
    timeout: float | None = None,
    **kwargs: Any,
) -> None:
    """Run ``fn(*args, **kwargs)`` in ``nprocs`` spawned ranks on this machine (loopback).

    Each rank gets the ``torchrun`` environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR=127.0.0.1``, a free ``MASTER_PORT``), so ``fn`` may call
    :func:`train_distributed`. ``fn`` must be importable (a module-level function).

    Args:
        fn: The per-rank entry point; its return value is discarded (save results to files).
        *args: Positional arguments for ``fn``.
        nprocs: Number of ranks.
        timeout: Seconds to wait for all ranks before terminating them, or None.
        **kwargs: Keyword arguments for ``fn``.

    Raises:
        ValueError: If ``nprocs`` < 1.
        TimeoutError: If the ranks did not finish within ``timeout``.
        torch.multiprocessing.ProcessRaisedException: If a rank raised.
    """
    if isinstance(nprocs, bool) or not isinstance(nprocs, int) or nprocs < 1:
        raise ValueError(f"nprocs must be an int >= 1, got {nprocs!r}")
    ctx = torch.multiprocessing.start_processes(
        _rank_main,
        args=(fn, nprocs, _free_port(), args, kwargs),
        nprocs=nprocs,
        join=False,
        start_method="spawn",
    )
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while not ctx.join(timeout=0.5):
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"ranks did not finish within {timeout} s; terminated them")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.terminate()
            p.join()
