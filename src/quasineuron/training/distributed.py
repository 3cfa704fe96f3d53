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

import math
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from quasineuron.data.dataset import ArrayDataset
from quasineuron.training.config import (
    AbstractLoss,
    AbstractOptimizer,
    Cosine,
    as_loss,
    as_optimizer,
)
from quasineuron.training.loop import (
    EpochMetrics,
    TrainResult,
    _check_options,
    _check_output,
    _forward,
    _on,
    _score,
)

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
    loss: str | AbstractLoss = "cross_entropy",
    seed: int = 0,
    val_data: ArrayDataset | None = None,
    device: str | torch.device | None = None,
    backend: str | None = None,
) -> TrainResult:
    """Train ``net`` data-parallel across the ranks of a ``torch.distributed`` job.

    Call it in every rank (e.g. a script started by ``torchrun``). If no process group is
    initialised yet, one is created from the ``torchrun`` environment (``RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) and destroyed at the end.

    Each step, the global batch ``perm[b * batch_size : (b + 1) * batch_size]`` is split into
    ``world_size`` near-equal shards; rank ``r`` computes
    ``loss_r = mean_loss(shard_r) * len(shard_r) * world_size / len(batch)`` so that the
    gradient average DDP forms is ``∇ (1 / len(batch)) Σ_i loss_i``, as in :func:`train`.

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
        loss: ``"cross_entropy"``, ``"mse"`` or a typed loss.
        seed: Seed of the batch-shuffling generator (the same on every rank).
        val_data: Validation data, scored on every rank after each epoch.
        device: Where this rank computes; default ``cuda:LOCAL_RANK`` when CUDA is available,
            else the CPU.
        backend: Process-group backend when one is created; default ``"nccl"`` on CUDA,
            ``"gloo"`` otherwise.

    Returns:
        The same :class:`TrainResult` on every rank; ``history`` holds global metrics
        (losses and accuracies summed over all ranks' shards).

    Raises:
        ValueError: For bad options, or if ``batch_size`` is smaller than the world size.
        RuntimeError: If no process group exists and the ``torchrun`` variables are missing.
        FloatingPointError: If the training loss becomes NaN or infinite.
    """
    opt_cfg = as_optimizer(optimizer, lr)
    loss_fn = as_loss(loss)
    _check_options(net, train_data, val_data, epochs, batch_size, None, 0.0, schedule)
    created = _init_process_group(device, backend)
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        if batch_size < world:
            raise ValueError(
                f"batch_size is the global batch and must be >= the world size {world}, got "
                f"{batch_size}"
            )
        dev = _rank_device(device)
        net.to(dev)
        first = next(net.parameters())
        dtype = first.dtype if first.is_floating_point() else torch.float32
        ddp = DistributedDataParallel(net, device_ids=[dev] if dev.type == "cuda" else None)
        x, y = _on(train_data, dev, dtype)
        val = _on(val_data, dev, dtype) if val_data is not None else None
        classify = train_data.is_classification
        n = len(train_data)
        n_batches = math.ceil(n / batch_size)
        total_steps = epochs * n_batches
        opt = opt_cfg.build([p for p in net.parameters() if p.requires_grad])
        gen = torch.Generator().manual_seed(int(seed))
        history: list[EpochMetrics] = []
        best: tuple[int | None, float] = (None, math.inf)
        for epoch in range(epochs):
            t0 = time.perf_counter()
            ddp.train()
            step_lr = opt_cfg.lr
            perm = torch.randperm(n, generator=gen).to(dev)
            sums = torch.zeros(2, dtype=torch.float64, device=dev)  # loss sum, n correct
            for b in range(n_batches):
                idx = perm[b * batch_size : (b + 1) * batch_size]
                shard = torch.tensor_split(idx, world)[rank]
                xb, yb = x[shard], y[shard]
                if schedule is not None:
                    step_lr = schedule.lr_at(opt_cfg.lr, epoch * n_batches + b, total_steps)
                    for group in opt.param_groups:
                        group["lr"] = step_lr
                opt.zero_grad(set_to_none=True)
                out = _forward(ddp, xb, mode)
                if epoch == 0 and b == 0:
                    _check_output(out, train_data)
                if len(shard):
                    shard_loss = loss_fn(out, yb)
                    (shard_loss * (len(shard) * world / len(idx))).backward()
                    sums[0] += shard_loss.detach().double() * len(shard)
                    if classify:
                        sums[1] += (out.detach().argmax(dim=1) == yb).sum()
                else:  # a short last batch: this rank still joins the gradient all-reduce
                    (out.sum() * 0.0).backward()
                opt.step()
            dist.all_reduce(sums)
            train_loss = sums[0].item() / n
            if not math.isfinite(train_loss):
                raise FloatingPointError(
                    f"training loss became {train_loss} in epoch {epoch + 1}; lower the "
                    f"learning rate (now {opt_cfg.lr!r}) or check the network's outputs"
                )
            val_loss = val_acc = None
            if val is not None:  # identical weights on every rank: no communication needed
                val_loss, val_acc = _score(net, *val, mode, loss_fn, batch_size, classify)
                if val_loss < best[1]:
                    best = (epoch + 1, val_loss)
            history.append(
                EpochMetrics(
                    epoch=epoch + 1,
                    train_loss=train_loss,
                    train_accuracy=sums[1].item() / n if classify else None,
                    val_loss=val_loss,
                    val_accuracy=val_acc,
                    lr=float(step_lr),
                    seconds=time.perf_counter() - t0,
                )
            )
        net.train()
    finally:
        if created:
            dist.destroy_process_group()
    return TrainResult(network=net, history=tuple(history), best_epoch=best[0], stopped_early=False)


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
