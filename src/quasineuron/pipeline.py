"""The pipeline as plain stage calls: device → sweep → surrogate (→ network → train → evaluate).

The CLI is this module with arguments; each function here only passes values between stages and
writes the run folder.
"""

from __future__ import annotations

import json
import os
import pickle
import platform
import shutil
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from quasineuron._atomic import atomic_write_bytes, atomic_write_json
from quasineuron._messages import error_line as _error_line
from quasineuron._version import __version__
from quasineuron.config import RunConfig, config_hash, parse_config
from quasineuron.data import ArrayDataset, load_digits, load_mnist, xor
from quasineuron.devices.base import AbstractDevice
from quasineuron.devices.library import make_device
from quasineuron.devices.wrappers import InputClip
from quasineuron.errors import DeviceContractError, OutOfDomainWarning, RunFolderError
from quasineuron.evaluation import evaluate, is_stochastic
from quasineuron.network import (
    AbstractMode,
    Dense,
    DeviceNetwork,
    Direct,
    FanIn,
    Linear,
    PhysicsAware,
    Quadratic,
    Raw,
    Sparse,
    Surrogate,
    TrueDevice,
    TwoDrive,
    Variability,
    save_network,
)
from quasineuron.network.connections import AbstractConnection, default_connection
from quasineuron.network.wiring import AbstractWiring
from quasineuron.report.plots import plot_accuracy_per_mode, plot_confusion, plot_training_curves
from quasineuron.surrogate import FitResult, fit_surrogate, plot_fit, save_surrogate
from quasineuron.surrogate.base import DomainPolicy
from quasineuron.surrogate.fit import Kind
from quasineuron.sweep import (
    AbstractExecutor,
    AbstractSampler,
    Grid,
    LatinHypercube,
    PointStatus,
    ProcessExecutor,
    Random,
    SerialExecutor,
    Sobol,
    SweepTable,
    sweep,
)
from quasineuron.sweep.executors import AutoExecutor
from quasineuron.training import Cosine, TrainResult, train

__all__ = [
    "RUN_FILE",
    "STATUS_FILE",
    "CharacterizeResult",
    "characterize",
    "default_sampler",
    "demo_config",
    "estimate_memory_bytes",
    "make_sampler",
    "memory_limit_bytes",
    "prepare_output_folder",
    "run_pipeline",
]

#: The run record: the resolved config and its hash, written when a run starts.
RUN_FILE = "run.json"
#: The run's state: ``running`` (with its stage), ``failed`` (with the error) or ``complete``.
STATUS_FILE = "status.json"
#: Everything a run writes into its folder; ``overwrite=True`` removes exactly these.
_RUN_OUTPUTS = (
    "metrics.json",
    "summary.md",
    "report.json",
    "response.png",
    "error.png",
    "training.png",
    "accuracy.png",
    "confusion.png",
    "twin.safetensors",
    "sweep.zarr",
    "checkpoints",
    "network",
    RUN_FILE,
    STATUS_FILE,
)


def default_sampler(n_in: int, *, points: int = 0, seed: int = 0) -> AbstractSampler:
    """The sampler ``characterize`` uses when none is given.

    A regular grid for one to two drives (so the tabulated spline twin applies: 401 points on a
    line, 101 × 101 on a square); a Sobol sequence of 4096 points (or ``points``) above that.
    """
    if n_in == 1:
        return Grid(points or 401)
    if n_in == 2:
        return Grid(round((points or 101 * 101) ** 0.5))
    return Sobol(points or 4096, seed=seed)


def make_sampler(kind: str, n_in: int, *, points: int = 0, seed: int = 0) -> AbstractSampler:
    """Build a sampler from its CLI/config name: auto, grid, sobol, random or lhs.

    Raises:
        ValueError: If ``kind`` is unknown.
    """
    if kind == "auto":
        return default_sampler(n_in, points=points, seed=seed)
    if kind == "grid":
        per_axis = (
            round((points or 101**n_in) ** (1.0 / n_in))
            if points
            else (401, 101, 21)[min(n_in, 3) - 1]
        )
        return Grid(max(per_axis, 2))
    n = points or 4096
    samplers: dict[str, Callable[..., AbstractSampler]] = {
        "sobol": Sobol,
        "random": Random,
        "lhs": LatinHypercube,
    }
    if kind not in samplers:
        raise ValueError(
            f"unknown sampler {kind!r}; choose one of ['auto', 'grid', 'sobol', 'random', 'lhs']"
        )
    return samplers[kind](n, seed=seed)


@dataclass(frozen=True)
class CharacterizeResult:
    """What ``characterize`` produced.

    Attributes:
        table: The sweep table.
        fit: The fitted twin and its fidelity report.
        report: The JSON-ready content of ``report.json``.
        folder: The output folder.
    """

    table: SweepTable
    fit: FitResult
    report: dict[str, Any]
    folder: Path


def characterize(
    device: AbstractDevice,
    out: str | Path,
    *,
    sampler: AbstractSampler | None = None,
    batch_size: int = 4096,
    executor: AbstractExecutor | None = None,
    workers: int = 0,
    force_workers: bool = False,
    timeout: float | None = None,
    twin_kind: Kind = "auto",
    hidden: tuple[int, ...] = (64, 64),
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
    strict: bool = False,
    policy: DomainPolicy = "warn",
    repair: bool = False,
    repeats: int = 1,
) -> CharacterizeResult:
    """Sweep ``device`` over its domain, fit a twin, and write the report folder.

    Writes ``out/sweep.zarr`` (resumable), ``out/twin.safetensors`` (tensors, with JSON metadata
    in its header), ``out/report.json`` and ``out/response.png`` / ``out/error.png``.

    Args:
        device: The device to characterise.
        out: Output folder, created if missing.
        sampler: Points to evaluate; default :func:`default_sampler`.
        batch_size: Points per device call (and per stored chunk).
        executor: Where batches run; overrides ``workers``.
        workers: Local worker processes (0: in this process). They start only once the sweep
            has run in this process for longer than starting them costs (about 2 s); a
            shorter sweep stays here and says so in one line on stderr and in
            ``report.json`` (``sweep.workers``). See :class:`AutoExecutor`.
        force_workers: Start the ``workers`` processes up front, however cheap the device.
            A ``timeout`` always runs in worker processes.
        timeout: Seconds a point may take before it is marked TIMEOUT (see ``sweep``).
        twin_kind: ``"auto"``, ``"mlp"`` or ``"spline"``.
        hidden: MLP twin hidden sizes.
        seed: Seed of the sampler (where random), the fit and the check points.
        progress: Show progress bars.
        overwrite: Replace a store made for another sweep instead of refusing it.
        strict: Raise at the first failing point.
        policy: The twin's out-of-domain policy (saved with it): warn, clamp or raise.
        repair: Recompute the chunks of a damaged store instead of refusing it (see ``sweep``).
        repeats: Evaluations per sweep point; above 1 the report gives ``twin.noise_floor``.

    Returns:
        The table, the fit and the report.

    Raises:
        DeviceContractError: If the device breaks the contract (attributes, output shape or
            dtype). A device that raises or gives non-finite values at some points does not
            stop the sweep: those points are recorded as failed (unless ``strict``).
        MemoryError: If the sweep's table would not fit in half of this machine's memory.
        OSError: If ``out`` cannot be created or written.
    """
    out = Path(out)
    # No probe call here: the sweep checks the contract on every batch (a broken one stops it
    # with DeviceContractError) and records points where the device raises, returns
    # non-finite values or hangs. A probe in this process could hang with no timeout.
    if workers > 0 or timeout is not None or not isinstance(executor, SerialExecutor | None):
        _check_picklable(device)
    sampler = sampler or default_sampler(device.n_in, seed=seed)
    _check_memory(
        estimate_memory_bytes(n_points=repeats * sampler.n_points(device.n_in), device=device)
    )
    prepare_output_folder(out)
    choice: dict[str, Any] = {}
    if executor is None and workers > 0:
        if force_workers or timeout is not None:
            # only another process can interrupt a hung call, so a timeout needs workers
            why = "forced" if force_workers else "timeout"
            executor = ProcessExecutor(workers)
            choice.update(mode="processes", n_workers=workers, reason=why)
        else:

            def note(line: str, info: dict[str, Any]) -> None:
                choice.update(info)
                if info["mode"] == "serial":  # the user asked for workers: say why there were none
                    print(f"{device.name}: {line}", file=sys.stderr)

            executor = AutoExecutor(workers, on_decision=note)
    t0 = time.perf_counter()
    table = sweep(
        device,
        sampler,
        store=out / "sweep.zarr",
        batch_size=batch_size,
        executor=executor,
        progress=progress,
        overwrite=overwrite,
        strict=strict,
        timeout=timeout,
        repair=repair,
        repeats=repeats,
    )
    t_sweep = time.perf_counter() - t0
    # A device that hung in the sweep is not called again for the twin's check points and the
    # plots' dense mesh: every hung point costs a timeout and a fresh worker process. The
    # twin's fidelity then comes from held-out sweep points (the report says which).
    n_timeout = int((np.asarray(table.status) == PointStatus.TIMEOUT).sum())
    truth = None if n_timeout else device
    t0 = time.perf_counter()
    fit = fit_surrogate(
        table,
        kind=twin_kind,
        hidden=hidden,
        seed=seed,
        true_device=truth,
        policy=policy,
        timeout=timeout,
    )
    t_fit = time.perf_counter() - t0
    save_surrogate(fit, out / "twin.safetensors")
    plots = plot_fit(fit.model, table, out, true_device=truth, timeout=timeout)
    rep = fit.report
    report: dict[str, Any] = {
        "device": device.describe(),
        "sweep": {
            "n_points": table.n_points,
            "n_failed": table.n_failed,
            "n_timeout": n_timeout,
            "sampler": table.sampler,
            "store": "sweep.zarr",
            "time_s": t_sweep,
            **({"workers": choice} if choice else {}),
        },
        "twin": {
            "kind": rep.kind,
            "validation": rep.validation,
            "rmse": rep.rmse,
            "nrmse": rep.nrmse,
            "max_abs": rep.max_abs,
            "r2": rep.r2,
            "n_train": rep.n_train,
            "n_val": rep.n_val,
            "time_s": t_fit,
            "path": "twin.safetensors",
            "details": rep.to_dict(),
            "alternatives": [a.to_dict() for a in fit.alternatives],
        },
        "plots": [p.name for p in plots],
    }
    # Where the twin is worst and what the device's noise is, next to the pooled figures.
    report["sweep"].update(repeats=repeats, failed_fraction=rep.failed_fraction)
    report["twin"].update(
        worst_u=rep.worst_u, worst_error=rep.worst_error, worst_region=rep.worst_region
    )
    if rep.suggestion:
        report["twin"]["suggestion"] = rep.suggestion
    if rep.noise_floor:
        report["twin"].update(noise_floor=rep.noise_floor, error_to_noise=rep.error_to_noise)
    atomic_write_json(out / "report.json", report)
    return CharacterizeResult(table=table, fit=fit, report=report, folder=out)


# --------------------------------------------------------------------------------------------
# The whole pipeline: characterise → twin → network → train → evaluate → report
# --------------------------------------------------------------------------------------------


def _check_picklable(device: AbstractDevice) -> None:
    """Refuse, before any work, a device that cannot go to worker processes."""
    try:
        pickle.dumps(device)
    except Exception as exc:  # pickle raises many kinds
        raise DeviceContractError(
            f"device {device.name!r} cannot be pickled ({type(exc).__name__}: {exc}), so it "
            "cannot go to worker processes (workers > 0 or a timeout); build it from "
            "module-level functions, functools.partial or callable classes instead of lambdas "
            "and nested functions, or sweep with workers=0 and no timeout"
        ) from None


def demo_config() -> RunConfig:
    """The configuration of ``quasineuron demo``: the almost-neuron (ε = 0.1) on 8×8 digits."""
    return parse_config(
        {
            "name": "demo-almost-neuron-digits",
            "device": {"name": "almost-neuron", "options": {"eps": 0.1}},
            "twin": {"kind": "spline"},
            "data": {"name": "digits"},
            "network": {"hidden": [32], "connection": "two-drive"},
            "training": {"mode": "surrogate", "epochs": 20, "batch_size": 32, "lr": 3e-3},
            "evaluation": {"modes": ["surrogate", "device", "physics-aware"]},
        },
        source="demo",
    )


_MODES: dict[str, Callable[[], AbstractMode]] = {
    "surrogate": Surrogate,
    "device": TrueDevice,
    "physics-aware": PhysicsAware,
    "direct": Direct,
}


def _load_data(cfg: RunConfig, data_dir: str | Path | None) -> tuple[ArrayDataset, ArrayDataset]:
    name = cfg.data.name
    if name == "mnist":
        return load_mnist(data_dir)
    if name == "digits":
        return load_digits(seed=cfg.data.seed)
    data = xor(n_per_corner=25, noise=0.1, seed=cfg.data.seed)
    return data, xor(n_per_corner=25, noise=0.1, seed=cfg.data.seed + 1)


def _connection(cfg: RunConfig, device: AbstractDevice) -> AbstractConnection:
    kind = cfg.network.connection
    if kind == "auto":
        # The device's declared connection (the almost-neuron's TwoDrive), else Linear: one
        # weighted sum per drive, which assumes nothing about what a device's drives mean.
        return default_connection(device)
    return {"linear": Linear, "two-drive": TwoDrive, "quadratic": Quadratic, "raw": Raw}[kind]()


#: Passes over the test set for each true-device mode when the device is stochastic: enough
#: for a first estimate of the spread that noise causes, at five times the scoring cost.
STOCHASTIC_PASSES = 5
#: Above this fraction of drive rows outside the characterised domain, the summary and the
#: console say so in words: the twin's result there is a clamp or an extrapolation.
DOMAIN_NOTE_FRACTION = 0.01


def _wiring(cfg: RunConfig) -> AbstractWiring:
    net = cfg.network
    if net.wiring == "sparse":
        return Sparse(net.link_ratio)
    if net.wiring == "fan-in":
        return FanIn(net.fan_in)
    return Dense()


def _train_kwargs(cfg: RunConfig) -> dict[str, Any]:
    t = cfg.training
    return {
        "epochs": t.epochs,
        "batch_size": t.batch_size,
        "lr": t.lr,
        "optimizer": t.optimizer,
        "schedule": Cosine() if t.schedule == "cosine" else None,
        "loss": t.loss,
        "seed": t.seed,
        "patience": t.patience,
    }


class _PlainMLP(torch.nn.Module):
    """The baseline: an ordinary MLP of the same shape (tanh hidden units)."""

    def __init__(self, sizes: Sequence[int], *, seed: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        layers: list[torch.nn.Module] = []
        for i in range(len(sizes) - 1):
            lin = torch.nn.Linear(sizes[i], sizes[i + 1])
            bound = 1.0 / sizes[i] ** 0.5
            with torch.no_grad():
                lin.weight.uniform_(-bound, bound, generator=gen)
                lin.bias.uniform_(-bound, bound, generator=gen)
            layers.append(lin)
            if i < len(sizes) - 2:
                layers.append(torch.nn.Tanh())
        self.body = torch.nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, *, mode: Any = None) -> torch.Tensor:
        return self.body(x)


def _accuracy(net: torch.nn.Module, data: ArrayDataset) -> float:
    with torch.no_grad():
        return float((net(data.x).argmax(-1) == data.y).float().mean())


def run_pipeline(
    config: RunConfig,
    out: str | Path,
    *,
    data_dir: str | Path | None = None,
    progress: bool = True,
    allow_import: Sequence[str] = (),
    overwrite: bool = False,
    resume: bool = False,
) -> dict[str, Any]:
    """Run the whole pipeline and write the run folder.

    Hyperparameters come from ``config`` (chosen on a validation split); the test set is scored
    once, at the end.

    Everything that can be checked is checked before any work: the device spec, the data
    (MNIST files present and verified), the memory the network needs, and the output folder.
    The folder is a record: ``run.json`` holds the resolved config and its hash, and
    ``status.json`` says ``running`` (with the stage), ``failed`` (with the error) or
    ``complete``. A folder holding another run, or other files, is refused unless
    ``overwrite`` (start afresh) is given. The same config into its own folder continues it
    (``resume`` only makes that explicit): the sweep store resumes, the twin is refitted
    deterministically from it and training continues from its last checkpoint, so the run
    ends bit-identical to an uninterrupted one. A complete run is not repeated.

    A stochastic network (:func:`~quasineuron.evaluation.is_stochastic`) is scored with
    :data:`STOCHASTIC_PASSES` passes per true-device mode, and ``accuracy.device_std`` records
    the spread. When more than 1 % of a layer's test drives fell outside the characterised
    domain, ``summary.md`` says so in words, and so does one
    :class:`~quasineuron.errors.OutOfDomainWarning` at the end of the run, which under
    ``policy="clamp"`` also gives the count of drive rows the twin clamped.

    Writes ``metrics.json`` (``accuracy.surrogate``, ``accuracy.device``, ``gap`` = surrogate −
    device as a fraction, the twin's held-out error, ``domain.outside_fraction`` per split, mode
    and layer, timings, the config), ``summary.md``, the
    characterisation (``report.json``, ``response.png``, ``error.png``, ``sweep.zarr``,
    ``twin.safetensors``), ``training.png``, ``accuracy.png``, ``confusion.png``,
    ``checkpoints/`` and ``network/``; ``metrics.json`` is written last, so it exists only in a
    complete run folder.

    Args:
        config: The validated run configuration.
        out: Run folder, created if missing.
        data_dir: Folder with the MNIST files (else the download cache).
        progress: Show progress bars.
        allow_import: Top-level packages whose ``module:attribute`` device specs may run
            (see :func:`quasineuron.make_device`).
        overwrite: Remove a previous run's files from ``out`` and start afresh.
        resume: Continue the run in ``out``; refused if ``out`` holds another run.

    Returns:
        The content of ``metrics.json``.

    Raises:
        RunFolderError: If ``out`` holds another run or files that are not a run, or both
            ``overwrite`` and ``resume`` are given.
        MemoryError: If the network and one batch would need more than half this machine's
            memory.
        OSError: If ``out`` cannot be created or written.
        FileNotFoundError: If the MNIST files are missing.
    """
    out = Path(out)
    if overwrite and resume:
        raise RunFolderError("overwrite and resume exclude each other; choose one")
    digest = config_hash(config)
    prepare_output_folder(out)
    state = _run_folder_state(out, digest, overwrite=overwrite)
    if state == "complete":
        return json.loads((out / "metrics.json").read_text(encoding="utf-8"))

    device = make_device(config.device.name, allow_import=allow_import, **config.device.options)
    if config.device.input_clip:
        device = InputClip(device)
    sampler = make_sampler(
        config.sweep.sampler, device.n_in, points=config.sweep.points, seed=config.sweep.seed
    )
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    # The data is loaded before any work, so that missing or corrupt files stop the run before
    # the sweep and the twin fit rather than after them.
    train_full, test = _load_data(config, data_dir)
    if config.data.limit_train is not None and config.data.limit_train < len(train_full.y):
        train_full = train_full.sample(config.data.limit_train, seed=config.data.seed)
    train_set, val_set = train_full.split(config.data.val_fraction, seed=config.data.seed)
    timings["data_s"] = time.perf_counter() - t_start
    n_classes = int(train_full.n_classes or 0)
    sizes = (train_full.n_features, *config.network.hidden, n_classes)
    _check_memory(
        estimate_memory_bytes(
            sizes=sizes,
            device=device,
            batch_size=max(config.training.batch_size, config.evaluation.batch_size),
            n_points=sampler.n_points(device.n_in),
        )
    )

    # Built once before any work (and thrown away), so that a connection that does not fit
    # the device or a wiring that does not fit the sizes stops the run here, not after the
    # sweep and the twin fit.
    DeviceNetwork(
        device,
        sizes,
        connection=_connection(config, device),
        wiring=_wiring(config),
        readout_affine=config.network.readout_affine,
        seed=config.network.seed,
    )

    if state == "fresh":
        if overwrite:
            _remove_run_outputs(out)
        atomic_write_json(
            out / RUN_FILE,
            {
                "config_hash": digest,
                "config": config.model_dump(mode="json"),
                "quasineuron": __version__,
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
        )
    else:
        # continuing: the folder is not complete until the run ends (metrics.json is the mark)
        (out / "metrics.json").unlink(missing_ok=True)

    def status(stage: str) -> None:
        _write_status(out, "running", stage=stage, config_hash=digest)

    try:
        status("characterize")
        metrics = _run_stages(
            config,
            out,
            device,
            sampler,
            status,
            train_set,
            val_set,
            test,
            sizes,
            timings=timings,
            t_start=t_start,
            progress=progress,
        )
        atomic_write_bytes(out / "summary.md", _summary(metrics).encode("utf-8"))
        _write_status(out, "complete", config_hash=digest)
    except BaseException as exc:
        _write_status(out, "failed", error=_error_line(exc), config_hash=digest)
        raise
    # last: metrics.json exists only in a complete run folder
    atomic_write_json(out / "metrics.json", metrics)
    _warn_domain(metrics)
    return metrics


def _run_stages(
    config: RunConfig,
    out: Path,
    device: AbstractDevice,
    sampler: AbstractSampler,
    status: Callable[[str], None],
    train_set: ArrayDataset,
    val_set: ArrayDataset,
    test: ArrayDataset,
    sizes: tuple[int, ...],
    *,
    timings: dict[str, float],
    t_start: float,
    progress: bool,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    char = characterize(
        device,
        out,
        sampler=sampler,
        batch_size=config.sweep.batch_size,
        workers=config.sweep.workers,
        timeout=config.sweep.timeout,
        twin_kind=config.twin.kind,
        hidden=config.twin.hidden,
        seed=config.twin.seed,
        progress=progress,
        policy=config.twin.policy,
        repeats=config.sweep.repeats,
    )
    twin = char.fit.model.to(torch.float32)
    twin.compiled = config.twin.compile
    timings["characterize_s"] = time.perf_counter() - t0

    net = DeviceNetwork(
        device,
        sizes,
        twin=twin,
        connection=_connection(config, device),
        wiring=_wiring(config),
        readout_affine=config.network.readout_affine,
        seed=config.network.seed,
    )
    status("train")
    t0 = time.perf_counter()
    result = train(
        net,
        train_set,
        mode=_MODES[config.training.mode](),
        val_data=val_set,
        checkpoint_dir=out / "checkpoints",
        # Resuming from the checkpoint of an interrupted run of this config; a fresh folder
        # has none, and overwrite=True removed any, so this is a fresh start there.
        resume=True,
        progress=progress,
        **_train_kwargs(config),
    )
    timings["train_s"] = time.perf_counter() - t0

    baseline: TrainResult | None = None
    if config.evaluation.baseline_mlp:
        status("baseline")
        t0 = time.perf_counter()
        baseline = train(
            _PlainMLP(sizes, seed=config.network.seed),
            train_set,
            val_data=val_set,
            progress=False,
            **_train_kwargs(config),
        )
        timings["baseline_train_s"] = time.perf_counter() - t0

    status("evaluate")
    # The test set is scored once, here, after every choice was made on the validation split.
    ood_training = twin.n_out_of_domain
    twin.reset_domain_count()
    t0 = time.perf_counter()
    variability = None
    if config.evaluation.variability is not None:
        variability = Variability(**config.evaluation.variability.model_dump())
    modes = [_MODES[m]() for m in config.evaluation.modes]
    passes = STOCHASTIC_PASSES if is_stochastic(result.network) else 1
    report = evaluate(
        result.network,
        test,
        modes=modes,
        batch_size=config.evaluation.batch_size,
        variability=variability,
        passes=passes,
    )
    timings["evaluate_s"] = time.perf_counter() - t0
    accuracy: dict[str, float | None] = dict(report.accuracy)
    for name, accs in report.accuracy_passes.items():
        if len(accs) > 1:  # e.g. accuracy.device_std: the spread over passes of a noisy device
            accuracy[f"{name}_std"] = report.accuracy_std[name]
    if baseline is not None:
        accuracy["baseline_mlp"] = _accuracy(baseline.network, test)

    status("report")
    save_network(net, out / "network")  # train updated net in place (result.network is net)
    plot_training_curves(
        [e.to_dict() if hasattr(e, "to_dict") else vars(e) for e in result.history],
        out / "training.png",
        title=f"{config.name}: {device.name}, mode={config.training.mode}",
        baseline=[vars(e) for e in baseline.history] if baseline else None,
    )
    plot_accuracy_per_mode(
        {k: v for k, v in accuracy.items() if v is not None and not k.endswith("_std")},
        out / "accuracy.png",
    )
    cm_mode = "device" if "device" in report.confusion else next(iter(report.confusion))
    plot_confusion(report.confusion[cm_mode], out / "confusion.png", title=f"confusion ({cm_mode})")
    timings["total_s"] = time.perf_counter() - t_start

    twin_rep = char.fit.report
    metrics: dict[str, Any] = {
        "name": config.name,
        "accuracy": accuracy,
        "gap": report.gap,
        "twin": {
            "kind": twin_rep.kind,
            "rmse": twin_rep.rmse,
            "nrmse": twin_rep.nrmse,
            "max_abs": twin_rep.max_abs,
            "r2": twin_rep.r2,
            "validation": twin_rep.validation,
            "policy": config.twin.policy,
            # drive rows (one per neuron and sample) outside the characterised domain
            "out_of_domain_rows": {"training": ood_training, "test": twin.n_out_of_domain},
        },
        "domain": _domain_metrics(report.domain, config.twin.policy),
        "passes": passes,
        "sweep": {"n_points": char.table.n_points, "n_failed": char.table.n_failed},
        "training": {
            "mode": config.training.mode,
            "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early,
            # epochs restored from the checkpoint of an interrupted run (0: trained in one go)
            "resumed_from_epoch": result.resumed_from_epoch,
            "history": [vars(e) for e in result.history],
        },
        "evaluation": report.to_dict(),
        "network": {"sizes": list(sizes), "describe": net.describe()},
        "device": device.describe(),
        "timings": timings,
        "environment": {
            "quasineuron": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
        },
        "config": config.model_dump(mode="json"),
    }
    return metrics


def _write_status(out: Path, status: str, **fields: Any) -> None:
    atomic_write_json(
        out / STATUS_FILE,
        {
            "status": status,
            **fields,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )


def prepare_output_folder(out: str | Path) -> Path:
    """Create ``out`` if needed and check that files can be written into it.

    Raises:
        OSError: If ``out`` is a file, cannot be created, or is not writable; the message
            names the folder and what to do.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(
            f"output folder {str(out)!r} is a file; give a folder path (it is created if missing)"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        # os.access is not enough (root, ACLs, read-only mounts): write and remove a file
        probe = out / f".write-test-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise PermissionError(
            f"cannot write into output folder {str(out)!r}: {exc.strerror or exc}; choose a "
            "folder you can write"
        ) from exc
    return out


def _run_folder_state(out: Path, digest: str, *, overwrite: bool) -> str:
    """Whether ``out`` starts a ``fresh`` run, ``continue``s this one, or holds it ``complete``."""
    entries = [p.name for p in out.iterdir()]
    if not entries or overwrite:
        return "fresh"
    record: dict[str, Any] | None = None
    try:
        loaded = json.loads((out / RUN_FILE).read_text(encoding="utf-8"))
        record = loaded if isinstance(loaded, dict) else None
    except (OSError, ValueError):
        record = None
    if record is not None and record.get("config_hash") == digest:
        try:
            status = json.loads((out / STATUS_FILE).read_text(encoding="utf-8")).get("status")
        except (OSError, ValueError, AttributeError):
            status = None
        if status == "complete" and (out / "metrics.json").is_file():
            return "complete"
        return "continue"
    if record is None:
        what = f"files that are not a quasineuron run ({', '.join(sorted(entries)[:3])}, ...)"
    else:
        what = f"another run ({record.get('config', {}).get('name', '?')!r}, another config)"
    raise RunFolderError(
        f"output folder {str(out)!r} holds {what}; choose a new --out, or pass --overwrite to "
        "replace its run files and start afresh (--resume continues only a run of the same "
        "config)"
    )


def _remove_run_outputs(out: Path) -> None:
    for name in _RUN_OUTPUTS:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def memory_limit_bytes() -> int | None:
    """Half of this machine's physical memory, or None where it cannot be read."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (AttributeError, ValueError, OSError):
        return None


def estimate_memory_bytes(
    *,
    device: AbstractDevice,
    sizes: Sequence[int] = (),
    batch_size: int = 0,
    n_points: int = 0,
) -> int:
    """A rough upper estimate of the memory a run needs, in bytes.

    Counts the connection weights (each neuron gets ``device.n_in`` drives from every input,
    an upper bound for the built-in connections) four times in float32 (weights, gradients
    and two Adam moments), one batch of drives and activations eight times (autograd keeps
    several tensors per layer), and the sweep table in float64 (drives and outputs, twice
    for the sampler's copy). Data sets are not counted.

    Args:
        device: The device (its ``n_in``, ``n_out``).
        sizes: Layer widths ``(n_features, *hidden, n_classes)``.
        batch_size: The largest batch of the run.
        n_points: Points in the sweep.
    """
    n_in, n_out = int(device.n_in), int(device.n_out)
    weights = sum(a * b for a, b in zip(sizes, sizes[1:], strict=False)) * max(n_in, 1)
    activations = batch_size * sum(sizes) * (n_in + n_out + 1)
    table = n_points * (n_in + n_out) * 2
    return 4 * 4 * weights + 8 * 4 * activations + 8 * table


def _check_memory(estimate: int) -> None:
    limit = memory_limit_bytes()
    if limit is not None and estimate > limit:
        gib = 1024**3
        raise MemoryError(
            f"this run needs about {estimate / gib:.3g} GiB (network weights, one batch and the "
            f"sweep table), more than the limit of {limit / gib:.3g} GiB (half this machine's "
            "memory); use smaller hidden sizes, batch sizes or sweep points"
        )


def _summary(m: dict[str, Any]) -> str:
    acc = m["accuracy"]
    lines = [
        f"# {m['name']}",
        "",
        f"Device `{m['device']['name']}` ({m['device'].get('params', {})}), network "
        f"{' → '.join(map(str, m['network']['sizes']))}, trained in mode "
        f"`{m['training']['mode']}`; the test set was scored once, at the end.",
        "",
        "| scored on | test accuracy |",
        "|---|---|",
    ]
    for k, v in acc.items():
        if v is None or k.endswith("_std"):
            continue
        std = acc.get(f"{k}_std")
        passes = m.get("passes", 1)
        spread = f" ± {100 * std:.2f} pp (std over {passes} passes)" if std is not None else ""
        lines.append(f"| {k} | {100 * v:.2f} %{spread} |")
    gap = m["gap"]
    lines += [
        "",
        f"Gap (twin − true device): {100 * gap:+.2f} pp." if gap is not None else "",
        f"Twin: {m['twin']['kind']}, held-out NRMSE {m['twin']['nrmse']:.2e}, "
        f"max |error| {m['twin']['max_abs']:.2e} ({m['twin']['validation']}).",
        f"Sweep: {m['sweep']['n_points']} points, {m['sweep']['n_failed']} failed.",
        *_domain_sentences(m),
        f"Total time {m['timings']['total_s']:.1f} s.",
        "",
        "Files: metrics.json, report.json, response.png, error.png, training.png, "
        "accuracy.png, confusion.png, network/, twin.safetensors, sweep.zarr.",
        "",
    ]
    return "\n".join(lines)


def _domain_metrics(domain: dict[str, Any], policy: str) -> dict[str, Any]:
    """``metrics["domain"]``: the fraction of drive rows outside the characterised domain.

    ``outside_fraction[split][mode]`` holds ``all`` (every layer) and ``layers`` (one fraction
    per layer); ``boxes`` are the layers' domains and ``extremes[split][mode]`` the drives'
    extremes per layer. The full record is in ``evaluation.domain``.
    """
    first = next(iter(domain.values()), None)
    return {
        "policy": policy,
        "boxes": (
            [] if first is None else [{"low": e["low"], "high": e["high"]} for e in first["layers"]]
        ),
        "outside_fraction": {
            "test": {
                mode: {
                    "all": d["outside_fraction"],
                    "layers": [e["outside_fraction"] for e in d["layers"]],
                }
                for mode, d in domain.items()
            }
        },
        "extremes": {
            "test": {
                mode: [{"min": e["min"], "max": e["max"]} for e in d["layers"]]
                for mode, d in domain.items()
            }
        },
    }


def _interval(lo: float, hi: float) -> str:
    return f"[{lo:.3g}, {hi:.3g}]"


def _domain_sentences(m: dict[str, Any]) -> list[str]:
    """One sentence per layer whose drives fell outside the domain above the note level.

    For each layer, the mode with the largest outside fraction of the test evaluation speaks.
    """
    dom = m.get("domain") or {}
    test = (dom.get("outside_fraction") or {}).get("test") or {}
    boxes = dom.get("boxes") or []
    if not test or not boxes:
        return []
    policy = dom.get("policy", "warn")
    effect = {
        "clamp": "the twin clamped them into the domain",
        "warn": "the twin extrapolated there",
        "raise": "the twin refuses such drives",
    }.get(policy, "the twin was not characterised there")
    n_layers = len(boxes)
    sentences = []
    for i, box in enumerate(boxes):
        mode, frac = max(((k, v["layers"][i]) for k, v in test.items()), key=lambda kv: kv[1])
        if frac <= DOMAIN_NOTE_FRACTION:
            continue
        if i == n_layers - 1:
            where = "output-layer"
        elif n_layers > 2:
            where = f"hidden-layer-{i + 1}"
        else:
            where = "hidden-layer"
        ext = dom["extremes"]["test"][mode][i]
        seen = " × ".join(_interval(a, b) for a, b in zip(ext["min"], ext["max"], strict=True))
        box_text = " × ".join(_interval(a, b) for a, b in zip(box["low"], box["high"], strict=True))
        sentences.append(
            f"{100 * frac:.1f} % of {where} drives (mode `{mode}`) fell outside the "
            f"characterised domain {box_text} (drives seen: {seen}); {effect}: the device "
            "result may differ from the twin's — see `domain` in metrics.json, and rescale the "
            "connections or sweep a wider domain."
        )
    return sentences


def _warn_domain(m: dict[str, Any]) -> None:
    """Say once, on the console, what the summary says about the domain, with the counts."""
    sentences = _domain_sentences(m)
    rows = m["twin"]["out_of_domain_rows"]
    clamped = m["domain"]["policy"] == "clamp" and (rows["training"] or rows["test"])
    if not sentences and not clamped:
        return
    head = (
        f"the twin clamped {rows['training'] + rows['test']} drive rows into its domain "
        f"({rows['training']} in training, {rows['test']} in the test evaluation). "
        if clamped
        else ""
    )
    warnings.warn(
        head + " ".join(sentences) if sentences else head + "See `domain` in metrics.json.",
        OutOfDomainWarning,
        stacklevel=3,  # the caller of run_pipeline
    )
