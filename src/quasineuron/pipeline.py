"""The pipeline as plain stage calls: device → sweep → surrogate (→ network → train → evaluate).

The CLI is this module with arguments; each function here only passes values between stages and
writes the run folder.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import platform
import shutil
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from quasineuron._atomic import atomic_write_bytes, atomic_write_json, sha256_hex
from quasineuron._messages import error_line as _error_line
from quasineuron._version import __version__
from quasineuron.config import RunConfig, StageConfig, config_hash, parse_config
from quasineuron.data import ArrayDataset, load_digits, load_mnist, xor
from quasineuron.devices.base import AbstractDevice, Box
from quasineuron.devices.counting import DeviceCallCounter, device_phase
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
from quasineuron.surrogate import (
    FitResult,
    fit_surrogate,
    load_surrogate,
    plot_fit,
    save_surrogate,
)
from quasineuron.surrogate.base import AbstractSurrogate, DomainPolicy
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
from quasineuron.sweep.measured import MeasuredOnly, load_measurements
from quasineuron.training import Cosine, TrainResult, train

if TYPE_CHECKING:
    from quasineuron.wuxing import WuxingNetwork

__all__ = [
    "RUN_FILE",
    "STATUS_FILE",
    "score_network",
    "with_seed",
    "CharacterizeResult",
    "characterize_measured",
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
#: Everything a run writes into its folder; ``overwrite=True`` removes exactly these. Not
#: ``scores.json``: the count of test reads of the folder carries on across runs made in it.
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
    # the twin's check points and the plots' mesh also reach the device: counted apart
    with device_phase("twin_check"):
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
    with device_phase("twin_check"):
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
        "twin": _twin_report(fit, t_fit),
        "plots": [p.name for p in plots],
    }
    report["sweep"].update(repeats=repeats, failed_fraction=rep.failed_fraction)
    atomic_write_json(out / "report.json", report)
    return CharacterizeResult(table=table, fit=fit, report=report, folder=out)


def _twin_report(fit: FitResult, t_fit: float) -> dict[str, Any]:
    """The ``twin`` part of ``report.json``.

    The pooled fidelity figures, where the twin is worst, and the device's noise floor where
    repeats measured one.
    """
    rep = fit.report
    twin: dict[str, Any] = {
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
        "worst_u": rep.worst_u,
        "worst_error": rep.worst_error,
        "worst_region": rep.worst_region,
    }
    if rep.suggestion:
        twin["suggestion"] = rep.suggestion
    if rep.noise_floor:
        twin.update(noise_floor=rep.noise_floor, error_to_noise=rep.error_to_noise)
    return twin


MEASUREMENTS_DIR = "measurements"


def _measured_table(config: RunConfig) -> SweepTable:
    """The table of ``[device] measurements``, read as ``load_measurements`` reads it."""
    m = config.device.measurements
    assert m is not None
    domain = None
    if m.low is not None and m.high is not None:
        domain = Box(low=m.low, high=m.high)
    return load_measurements(
        m.path,
        drives=m.drives,
        outputs=m.outputs,
        status=m.status,
        repeat=m.repeat,
        units=m.units,
        domain=domain,
        delimiter=m.delimiter,
    )


def characterize_measured(
    config: RunConfig, out: str | Path, *, progress: bool = True
) -> CharacterizeResult:
    """The sweep stage of a run whose device is known only from measurements.

    Reads ``[device] measurements`` into the table a sweep produces, copies the file into
    ``out/measurements/`` (with its SHA-256 in ``report.json``, so the run folder alone holds
    what the run was built from), fits the twin on the table and writes ``report.json``,
    ``twin.safetensors`` and the plots as :func:`characterize` does. There is no true device:
    the twin's fidelity is estimated on held-out measurements, and with repeated measurements
    the report gives the noise floor.

    Args:
        config: A run config with ``device.measurements`` set.
        out: The run folder.
        progress: Unused (reading a file shows no progress bar); kept for symmetry.

    Returns:
        The table, the fit and the report.

    Raises:
        FileNotFoundError: If the measurement file is missing.
        ValueError: If a column or value of the file is bad (see ``load_measurements``).
    """
    del progress
    out = Path(out)
    m = config.device.measurements
    assert m is not None
    t0 = time.perf_counter()
    table = _measured_table(config)
    source = Path(m.path)
    raw = source.read_bytes()
    digest = sha256_hex(raw)
    if digest != table.device["sha256"]:
        raise RuntimeError(f"{source} changed while it was read; run again")
    copy = Path(MEASUREMENTS_DIR) / source.name
    (out / MEASUREMENTS_DIR).mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / copy, raw)
    t_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    fit = fit_surrogate(
        table,
        kind=config.twin.kind,
        hidden=config.twin.hidden,
        seed=config.twin.seed,
        true_device=None,
        policy=config.twin.policy,
    )
    t_fit = time.perf_counter() - t0
    save_surrogate(fit, out / "twin.safetensors")
    plots = plot_fit(fit.model, table, out, true_device=None)
    rep = fit.report
    repeats = int(table.sampler.get("repeats", 1))
    report: dict[str, Any] = {
        "device": MeasuredOnly(table).describe(),
        "measurements": {
            "file": copy.as_posix(),
            "sha256": digest,
            "drives": list(m.drives),
            "outputs": list(m.outputs),
            "units": dict(table.device.get("units", {})),
        },
        "sweep": {
            "n_points": table.n_points,
            "n_failed": table.n_failed,
            "n_timeout": 0,
            "sampler": table.sampler,
            "store": None,
            "time_s": t_read,
            "repeats": repeats,
            "failed_fraction": rep.failed_fraction,
        },
        "twin": _twin_report(fit, t_fit),
        "plots": [p.name for p in plots],
    }
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
        train_full, test = load_mnist(data_dir)
    elif name == "digits":
        train_full, test = load_digits(seed=cfg.data.seed)
    else:
        train_full = xor(n_per_corner=25, noise=0.1, seed=cfg.data.seed)
        test = xor(n_per_corner=25, noise=0.1, seed=cfg.data.seed + 1)
    limit = cfg.data.limit_test
    if limit is not None and limit < len(test.y):
        test = test.sample(limit, seed=cfg.data.seed)
    return train_full, test


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
        "loss": _LOSS_NAMES[t.loss],
        "seed": t.seed,
        "patience": t.patience,
    }


class _MaskedLinear(torch.nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 wiring mask (out, in)."""

    def __init__(self, n_in: int, n_out: int, mask: torch.Tensor) -> None:
        super().__init__(n_in, n_out)
        self.mask: torch.Tensor
        self.register_buffer("mask", mask.to(torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.weight * self.mask, self.bias)


class _PlainMLP(torch.nn.Module):
    """The baseline: an ordinary MLP of the same shape (tanh hidden units).

    With ``masks`` (one bool ``(n_in, n_out)`` mask per layer, e.g. a device network's fan-in
    wiring) each unit sees only the inputs its mask gives it: the same-wiring baseline, which
    separates what the wiring costs from what the device costs. Its weights start with the
    bound of the unit's real fan-in, as ``nn.Linear`` does for a dense layer.
    """

    def __init__(
        self, sizes: Sequence[int], *, seed: int, masks: Sequence[torch.Tensor] | None = None
    ) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        layers: list[torch.nn.Module] = []
        for i in range(len(sizes) - 1):
            if masks is None:
                lin = torch.nn.Linear(sizes[i], sizes[i + 1])
                bound = 1.0 / sizes[i] ** 0.5
            else:
                lin = _MaskedLinear(sizes[i], sizes[i + 1], masks[i].T)
                bound = 1.0 / max(1.0, float(masks[i].sum(0).float().mean())) ** 0.5
            with torch.no_grad():
                lin.weight.uniform_(-bound, bound, generator=gen)
                lin.bias.uniform_(-bound, bound, generator=gen)
            layers.append(lin)
            if i < len(sizes) - 2:
                layers.append(torch.nn.Tanh())
        self.body = torch.nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, *, mode: Any = None) -> torch.Tensor:
        return self.body(x)


def _baseline_mlp(
    kind: str, config: RunConfig, sizes: Sequence[int], net: DeviceNetwork
) -> _PlainMLP:
    """A baseline MLP: dense (``"mlp"``) or wired like ``net`` (``"same-wiring"``)."""
    if kind == "same-wiring":
        masks = [layer.mask for layer in net.layers]
        if any(tuple(m.shape) != (sizes[i], sizes[i + 1]) for i, m in enumerate(masks)):
            raise ValueError(
                "evaluation.baseline = 'same-wiring' needs one mask column per neuron (the "
                "two-drive, quadratic or raw connection); with a per-port connection use "
                "baseline = 'mlp'"
            )
        return _PlainMLP(sizes, seed=config.network.seed, masks=masks)
    return _PlainMLP(sizes, seed=config.network.seed)


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

    Training runs the config's stages in order (:meth:`RunConfig.stages`), each into
    ``checkpoints/stage-N/``; ``run.json`` records every stage's outcome as it ends, with the
    seeds and the versions of quasineuron, torch, numpy and Python. A Wuxing network
    (``network.kind = "wuxing"``) has no sweep and no twin: it is built from its wiring and
    window, trained, saved in ``network/`` and scored from that folder on the time simulation
    (``device``) and the steady state (``surrogate``). The test read is recorded in
    ``scores.json`` (see :mod:`quasineuron.protocol`). With ``experiment.seeds`` the run is
    repeated per seed into ``out/seed-S/`` and ``out/metrics.json`` summarises the family.

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
    if config.experiment.vary:
        return _run_grid(
            config,
            out,
            data_dir=data_dir,
            progress=progress,
            allow_import=allow_import,
            overwrite=overwrite,
        )
    if config.experiment.seeds:
        return _run_seed_family(
            config,
            out,
            data_dir=data_dir,
            progress=progress,
            allow_import=allow_import,
            overwrite=overwrite,
        )
    digest = config_hash(config)
    prepare_output_folder(out)
    state = _run_folder_state(out, digest, overwrite=overwrite)
    if state == "complete":
        return json.loads((out / "metrics.json").read_text(encoding="utf-8"))

    if config.network.kind == "wuxing":
        # Built before any work: a bad wiring, window or method option stops the run here.
        _wuxing_network(config)
        for i, stage in enumerate(config.stages()):
            _wuxing_method(config, stage, i)
        device: AbstractDevice | None = None
        sampler: AbstractSampler | None = None
    elif config.device.measurements is not None:
        # Read before any work: a bad column or value stops the run here. The measured table
        # replaces the sweep, so there is no sampler and no true device.
        device = MeasuredOnly(_measured_table(config))
        sampler = None
    else:
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
    train_set, val_set = _split_data(config, train_full)
    timings["data_s"] = time.perf_counter() - t_start
    n_classes = int(train_full.n_classes or 0)
    if config.network.kind == "wuxing":
        sizes = _wuxing_sizes(config)
        if sizes[0] != train_full.n_features or sizes[-1] != n_classes:
            raise ValueError(
                f"the Wuxing network's layers {list(sizes)} do not fit the data "
                f"{config.data.name!r} ({train_full.n_features} inputs, {n_classes} classes); "
                f"set network.sizes = [{train_full.n_features}, ..., {n_classes}]"
            )
    else:
        assert device is not None
        sizes = (train_full.n_features, *config.network.hidden, n_classes)
        _check_memory(
            estimate_memory_bytes(
                sizes=sizes,
                device=device,
                batch_size=max(config.training.batch_size, config.evaluation.batch_size),
                n_points=sampler.n_points(device.n_in) if sampler is not None else 0,
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
        atomic_write_json(out / RUN_FILE, _run_record(config, digest))
    else:
        # continuing: the folder is not complete until the run ends (metrics.json is the mark)
        (out / "metrics.json").unlink(missing_ok=True)

    def status(stage: str) -> None:
        _write_status(out, "running", stage=stage, config_hash=digest)

    try:
        if config.network.kind == "wuxing":
            status("train")
            metrics = _run_wuxing(
                config,
                out,
                train_set,
                val_set,
                timings=timings,
                t_start=t_start,
                progress=progress,
                data_dir=data_dir,
            )
        else:
            assert device is not None
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
        _update_run_record(out, stages=metrics["training"]["stages"])
        atomic_write_bytes(out / "summary.md", _summary(metrics).encode("utf-8"))
        _write_status(out, "complete", config_hash=digest)
    except BaseException as exc:
        _write_status(out, "failed", error=_error_line(exc), config_hash=digest)
        raise
    # last: metrics.json exists only in a complete run folder
    atomic_write_json(out / "metrics.json", metrics)
    if config.network.kind != "wuxing":
        _warn_domain(metrics)
    return metrics


def _split_data(config: RunConfig, train_full: ArrayDataset) -> tuple[ArrayDataset, ArrayDataset]:
    """The training and validation splits (the test set is never split or looked at here)."""
    if config.data.limit_train is not None and config.data.limit_train < len(train_full.y):
        train_full = train_full.sample(config.data.limit_train, seed=config.data.seed)
    return train_full.split(config.data.val_fraction, seed=config.data.seed)


def _versions() -> dict[str, str]:
    return {
        "quasineuron": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _run_record(config: RunConfig, digest: str) -> dict[str, Any]:
    """``run.json``: everything needed to run this again, with paths relative to the folder."""
    return {
        "config_hash": digest,
        "config": config.model_dump(mode="json"),
        "seeds": {
            "data": config.data.seed,
            "network": config.network.seed,
            "training": config.training.seed,
            "sweep": config.sweep.seed,
            "twin": config.twin.seed,
        },
        "versions": _versions(),
        "quasineuron": __version__,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "stages": [],
    }


def _update_run_record(out: Path, **fields: Any) -> None:
    record = json.loads((out / RUN_FILE).read_text(encoding="utf-8"))
    record.update(fields)
    atomic_write_json(out / RUN_FILE, record)


def _record_read(out: Path, accuracy: dict[str, float | None]) -> int:
    """Record the run's own test read.

    A folder read before (a continued run that had scored already, or a run started afresh
    with ``overwrite`` in a folder that was scored) counts this read on top of those.
    """
    from quasineuron.protocol import record_test_read

    scores = {k: v for k, v in accuracy.items() if not k.endswith("_std")}
    return int(record_test_read(out, scores, what="network/", again=True)["test_reads"])


# --------------------------------------------------------------------------------------------
# Stages: each one trains from where the previous one ended and leaves checkpoints/stage-N/
# --------------------------------------------------------------------------------------------

#: Written into ``checkpoints/stage-N/`` when stage N has ended: the weights it ended with.
_STAGE_STATE = "end.safetensors"
_STAGE_OUTCOME = "outcome.json"


def _stage_dir(out: Path, index: int) -> Path:
    return out / "checkpoints" / f"stage-{index + 1}"


def _trained_state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors training changes (a device network's connections, not its twin's tables)."""
    own = getattr(net, "connection_state_dict", None)
    state = own() if own is not None else net.state_dict()
    return {k: v.detach().cpu().clone().contiguous() for k, v in state.items()}


def _load_trained_state(net: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    missing, unexpected = net.load_state_dict(state, strict=False)
    if unexpected or any(k in state for k in missing):
        raise ValueError(f"stage checkpoint does not fit the network: {unexpected or missing}")
    after = getattr(net, "update_rest_states", None)
    if after is not None:  # a Wuxing network's rest states follow its parameters K
        after()


def _finished_stage(net: torch.nn.Module, folder: Path) -> dict[str, Any] | None:
    """Load the end state of a stage that finished in an earlier attempt (None if it did not)."""
    from quasineuron._atomic import load_safetensors_checked

    if not (folder / _STAGE_OUTCOME).is_file() or not (folder / _STAGE_STATE).is_file():
        return None
    tensors, _ = load_safetensors_checked(
        folder / _STAGE_STATE, what="stage checkpoint", fix="rerun with --overwrite"
    )
    _load_trained_state(net, tensors)
    outcome: dict[str, Any] = json.loads((folder / _STAGE_OUTCOME).read_text(encoding="utf-8"))
    return outcome


def _finish_stage(net: torch.nn.Module, folder: Path, outcome: dict[str, Any]) -> None:
    from quasineuron._atomic import save_safetensors_checked

    folder.mkdir(parents=True, exist_ok=True)
    save_safetensors_checked(folder / _STAGE_STATE, _trained_state(net))
    atomic_write_json(folder / _STAGE_OUTCOME, outcome)  # last: the stage's end mark


def _train_stages(
    config: RunConfig,
    out: Path,
    net: torch.nn.Module,
    train_set: ArrayDataset,
    val_set: ArrayDataset,
    *,
    progress: bool,
) -> tuple[Any, list[dict[str, Any]]]:
    """Run every stage of the config in order.

    A stage that ended in an earlier attempt is loaded from its checkpoint folder instead of
    being trained again; one that was interrupted continues from its checkpoint.

    Returns:
        The last stage's training result (None when every stage was loaded) and one outcome
        per stage.
    """
    outcomes: list[dict[str, Any]] = []
    result = None
    for index, stage in enumerate(config.stages()):
        folder = _stage_dir(out, index)
        done = _finished_stage(net, folder)
        if done is not None:
            if stage.method == "recharacterize":
                _install_recharacterized_twin(net, folder)
            outcomes.append(done)
            continue
        stage_result, outcome = _train_stage(
            config, stage, index, net, train_set, val_set, folder, progress=progress
        )
        _mark_regression(outcome, outcomes)
        # a recharacterize stage trains nothing: the last training stage's result stands
        result = stage_result if stage_result is not None else result
        _finish_stage(net, folder, outcome)
        _update_run_record(out, stages=[*outcomes, outcome])
        outcomes.append(outcome)
    return result, outcomes


def _kept_val_accuracy(outcome: dict[str, Any]) -> float | None:
    """The validation accuracy of the weights a training stage kept (None if not scored)."""
    history = outcome.get("val_accuracy") or []
    if outcome.get("keep") == "average" or not history:
        return None  # averaged weights are not scored on validation
    if outcome.get("best_epoch") == 0:  # keep = "best-or-start" undid the stage
        return outcome.get("start_val_accuracy")
    if outcome.get("keep") == "last" or outcome.get("best_epoch") is None:
        return history[-1]
    return history[outcome["best_epoch"] - 1]


def _mark_regression(outcome: dict[str, Any], before: Sequence[dict[str, Any]]) -> None:
    """Record, and say, when a stage leaves the network worse on validation than it found it.

    Compared with the last earlier training stage validated the same way (the same
    ``validated_on`` for a Wuxing network, the same method otherwise). A stage kept with
    ``keep = "best"`` returns its best epoch, not the network it started from, so a stage
    whose every epoch is worse (a step size too large for a trained network) would otherwise
    pass in silence; ``keep = "best-or-start"`` undoes such a stage.
    """
    kept = _kept_val_accuracy(outcome)
    way = outcome.get("validated_on", outcome.get("method"))
    previous = next(
        (
            o
            for o in reversed(before)
            if _kept_val_accuracy(o) is not None and o.get("validated_on", o.get("method")) == way
        ),
        None,
    )
    if kept is None or previous is None:
        return
    start = _kept_val_accuracy(previous)
    assert start is not None
    if kept < start:
        outcome["below_previous_stage"] = {
            "previous_stage": previous["stage"],
            "val_accuracy": start,
        }
        print(
            f"note: stage {outcome['stage']} ({outcome['method']}) ends at "
            f"{100 * kept:.2f} % on validation, below the {100 * start:.2f} % stage "
            f'{previous["stage"]} ended at; keep = "best-or-start" undoes such a stage',
            file=sys.stderr,
            flush=True,
        )


def _train_stage(
    config: RunConfig,
    stage: StageConfig,
    index: int,
    net: torch.nn.Module,
    train_set: ArrayDataset,
    val_set: ArrayDataset,
    folder: Path,
    *,
    progress: bool,
) -> tuple[Any, dict[str, Any]]:
    """Train ``net`` in place for one stage: the one place the pipeline calls a training loop.

    Both network kinds go through :func:`quasineuron.training.fit`: a device network with a
    :class:`~quasineuron.training.Gradient` strategy, a Wuxing network with its method
    (method 1, method 2, mixed, backprop). The loop checkpoints every epoch into ``folder``, so
    a stage killed part-way continues from its last finished epoch.

    Returns:
        The loop's result and the stage's outcome (JSON-ready, paths relative to the run).
    """
    from quasineuron.training import Gradient, WeightAveraging, fit

    if stage.method == "recharacterize":
        return None, _recharacterize_stage(stage, index, net, train_set, folder)
    t = config.training
    batch_size = stage.batch_size or t.batch_size
    schedule = Cosine() if t.schedule == "cosine" else None
    extra: dict[str, Any] = {}
    strategy: Any
    if config.network.kind == "wuxing":
        method = _wuxing_method(config, stage, index)
        # fitted on the network as this stage starts (its neurons' parameters K as they are
        # now), deterministically from its seed: a resumed stage refits the same twin
        twin, twin_info = _neuron_twin(stage, net, folder, say=progress)
        strategy = method.bound(neuron=twin, schedule=schedule, val_mode=t.validate_on)
        name = stage.method or "bptt"
        extra = {"method_settings": repr(method), "validated_on": t.validate_on}
        if twin_info is not None:
            extra["neuron_twin"] = twin_info
    else:
        name = stage.method or t.mode
        strategy = Gradient(
            _MODES[name](),
            optimizer=t.optimizer,
            lr=stage.lr or t.lr,
            loss=_LOSS_NAMES[t.loss],
            schedule=schedule,
            domain_penalty=t.domain_penalty,
            nonfinite=t.nonfinite,
        )
    if stage.samples is not None:
        # enough epochs to hold the budget's ceil(samples / batch_size) whole batches
        steps = math.ceil(stage.samples / batch_size)
        epochs = math.ceil(steps / math.ceil(len(train_set) / batch_size))
    else:
        assert stage.epochs is not None  # validated: exactly one budget
        epochs = stage.epochs
    averaging = stage.average_last > 1
    # Averaging installs the mean of the last epochs, keep="best" one epoch: they exclude
    # each other (and so does patience, which implies "best").
    keep = "last" if averaging else stage.keep
    result = fit(
        net,
        train_set,
        strategy,
        epochs=epochs,
        max_samples=stage.samples,
        batch_size=batch_size,
        seed=t.seed + index,
        val_data=val_set,
        keep=keep,
        patience=None if averaging else t.patience,
        checkpoint_dir=folder,
        # Resuming from the checkpoint of an interrupted attempt at this stage; a fresh
        # folder has none, so this is a fresh start there.
        resume=True,
        progress=progress,
        callbacks=[
            *([WeightAveraging(stage.average_last)] if averaging else []),
            *(_domain_callbacks(config) if config.network.kind != "wuxing" else []),
        ],
    )
    averaged = list(result.extras.get("weight_averaging", {}).get("epochs", []))
    outcome = {
        "stage": index + 1,
        "method": name,
        **({"method_settings": extra.pop("method_settings")} if "method_settings" in extra else {}),
        "budget": {"epochs": stage.epochs} if stage.samples is None else {"samples": stage.samples},
        "keep": stage.keep if not averaging else "average",
        "averaged_epochs": averaged,
        "best_epoch": result.best_epoch,
        # keep = "best-or-start": the score to beat, and whether the stage was undone
        **(
            {
                "start_val_accuracy": result.extras["start_val_accuracy"],
                "undone": result.best_epoch == 0,
            }
            if "start_val_accuracy" in result.extras
            else {}
        ),
        "stopped_early": result.stopped_early,
        "resumed_from_epoch": result.resumed_from_epoch,
        "epochs_run": len(result.history),
        "samples_seen": result.samples_seen,
        **extra,
        "val_accuracy": [e.val_accuracy for e in result.history],
        "checkpoints": f"checkpoints/stage-{index + 1}",
    }
    return result, outcome


def _domain_callbacks(config: RunConfig) -> tuple[Any, ...]:
    """The domain tools' callbacks of a device stage.

    The monitor (on by default) and the count of masked non-finite samples (with
    ``nonfinite = "mask"``).
    """
    from quasineuron.training.callbacks import DomainMonitor, NonfiniteCounter

    t = config.training
    # Records the fractions only (threshold 1: no warning of its own): the run says it once,
    # with the counts, when it ends (see _warn_domain and the summary).
    cbs: list[Any] = [DomainMonitor(threshold=1.0)] if t.monitor_domain else []
    if t.nonfinite == "mask":
        cbs.append(NonfiniteCounter())
    return tuple(cbs)


def _recharacterize_stage(
    stage: StageConfig,
    index: int,
    net: torch.nn.Module,
    train_set: ArrayDataset,
    folder: Path,
) -> dict[str, Any]:
    """Active characterisation as a stage: sweep where the drives landed, refit, install.

    The sweep table the current twin was fitted on is the run's ``sweep.zarr`` plus the
    points of earlier recharacterize stages (each stage saves its whole table as
    ``table.npz`` and its twin as ``twin.safetensors`` in its checkpoint folder, so a resumed
    run installs the same twin).
    """
    from quasineuron.surrogate.active import recharacterize

    run_dir = folder.parent.parent
    table: Any = None
    for earlier in range(index - 1, -1, -1):
        saved = _stage_dir(run_dir, earlier) / "table.npz"
        if saved.is_file():
            table = _load_table_npz(saved, net)
            break
    if table is None:
        table = SweepTable.open(run_dir / "sweep.zarr")
    opts = stage.options
    p = next(net.parameters())
    n_samples = int(opts.get("n_samples", 2048))
    x = train_set.x[:n_samples].to(p.device, p.dtype)
    fit_options: dict[str, Any] = {"kind": "mlp"}
    if "hidden" in opts:
        fit_options["hidden"] = tuple(int(h) for h in opts["hidden"])
    if "max_steps" in opts:
        fit_options["max_steps"] = int(opts["max_steps"])
    t0 = time.perf_counter()
    result = recharacterize(
        net, x, table, points=int(opts.get("points", 512)), seed=index, **fit_options
    )
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    merged = result.table
    np.savez(buf, u=merged.u, y=merged.y, status=merged.status)
    atomic_write_bytes(folder / "table.npz", buf.getvalue())
    save_surrogate(result.fit, folder / "twin.safetensors")
    return {
        "stage": index + 1,
        "method": "recharacterize",
        "budget": {"points": result.n_new},
        "recharacterize": result.to_dict(),
        "seconds": time.perf_counter() - t0,
        "checkpoints": f"checkpoints/stage-{index + 1}",
    }


def _load_table_npz(path: Path, net: torch.nn.Module) -> SweepTable:
    """A table saved by a recharacterize stage; its domain is the twin's of that stage."""
    from quasineuron.surrogate import load_surrogate

    with np.load(path) as f:
        u, y, status = f["u"], f["y"], f["status"]
    twin = load_surrogate(path.parent / "twin.safetensors")
    layer: Any = net.layers[0]  # type: ignore[index]
    return SweepTable(
        u=u, y=y, status=status, errors={}, domain=twin.domain, device=layer.device.describe()
    )


def _install_recharacterized_twin(net: torch.nn.Module, folder: Path) -> None:
    """Put the twin a finished recharacterize stage saved into the layers that used layer 0's."""
    from quasineuron.surrogate import load_surrogate

    layers: Any = getattr(net, "layers")  # noqa: B009 - a DeviceNetwork's layers
    old = layers[0].twin
    twin = load_surrogate(folder / "twin.safetensors")
    twin = twin.to(layers[0].map.weight.dtype).requires_grad_(False).eval()
    for layer in layers:
        if layer.twin is old:
            layer.twin = twin


def _install_stage_twins(config: RunConfig, run: Path, net: torch.nn.Module) -> None:
    """Install, in stage order, the twins the run's recharacterize stages saved.

    A reloaded network carries the run's original twin (``twin.safetensors``); the run itself
    trained its last stages and scored its test set with the twin of its last recharacterize
    stage, so scoring the saved network again must use that one too.
    """
    for index, stage in enumerate(config.stages()):
        if stage.method == "recharacterize":
            _install_recharacterized_twin(net, _stage_dir(run, index))


#: Config spelling → the spelling today's training loop takes.
_LOSS_NAMES = {"cross-entropy": "cross-entropy", "mse": "mse"}


# --------------------------------------------------------------------------------------------
# Wuxing networks: no sweep and no twin; the network is its own simulation
# --------------------------------------------------------------------------------------------


def _wuxing_sizes(config: RunConfig) -> tuple[int, ...]:
    from quasineuron.wuxing import MODEL1_SIZES, MODEL2_SIZES

    n = config.network
    if n.sizes:
        return tuple(n.sizes)
    return MODEL1_SIZES if n.model == "MODEL1" else MODEL2_SIZES


def _wuxing_network(config: RunConfig) -> WuxingNetwork:
    """The Wuxing network of the config (wiring seeded by ``network.seed``)."""
    from quasineuron.wuxing import WuxingNetwork, adder_wiring, model_wiring, one_to_one_wiring
    from quasineuron.wuxing.io import window_config

    n = config.network
    sizes = _wuxing_sizes(config)
    if n.wiring == "adder":
        # fill every adder: a receiving interface sums up to fan_in links
        ratios = [min(1.0, 0.999 * n.fan_in * n.receiving / k) for k in sizes[:-1]]
        wiring = adder_wiring(
            sizes, link_ratio=ratios, fan_in=n.fan_in, receiving=n.receiving, seed=n.seed
        )
    elif n.model is not None:
        wiring = model_wiring(n.model, seed=n.seed)
    else:
        wiring = one_to_one_wiring(sizes, seed=n.seed)
    window = window_config(n.resolved_window.model_dump())
    return WuxingNetwork(wiring, config=window, c0=n.c0)


def _tuples(value: Any) -> Any:
    """TOML arrays → tuples (the methods' ranges are tuples), recursively in tables."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def _wuxing_method(config: RunConfig, stage: StageConfig, index: int) -> Any:
    """The training method of a Wuxing stage, built from its name and options.

    Raises:
        ConfigError: Naming the stage and the option the method does not take.
    """
    from dataclasses import fields

    from quasineuron.config import ConfigError
    from quasineuron.wuxing import Backprop, Method1, Method2, Mixed, TargetCoding

    name = stage.method or "bptt"
    opts = _tuples(dict(stage.options))
    twin_opts = opts.pop("neuron_twin", None)
    if twin_opts is not None:
        _check_neuron_twin(name, opts, twin_opts, index)
    if "target" in opts:
        opts["target"] = TargetCoding(**opts["target"])
    preset: dict[str, Any]
    cls: type
    if name == "method1":
        cls, preset = Method1, {}
    elif name == "method2":
        cls, preset = Method2, {}
    elif name == "method2-operating":
        cls, preset = Method2, {"estimate": "steady-state", "reversal": "operating"}
    elif name == "mixed":
        cls, preset = Mixed, {}
        for sub, sub_cls in (("method1", Method1), ("method2", Method2)):
            if sub in opts:
                opts[sub] = sub_cls(**opts[sub])
    else:
        cls = Backprop
        preset = {"through": "window" if name == "bptt" else "steady-state"}
        if stage.lr is not None:
            preset["lr"] = stage.lr
    allowed = {f.name for f in fields(cls)}
    unknown = sorted(set(opts) - allowed)
    if unknown:
        raise ConfigError(
            f"training.stages[{index}].options: {name} takes no option {unknown[0]!r}; its "
            f"options are {sorted(allowed - set(preset))}"
        )
    try:
        return cls(**{**preset, **opts})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"training.stages[{index}].options ({name}): {exc}") from None


#: What ``options.neuron_twin`` of a stage may set (see ``fit_neuron_twin``).
_NEURON_TWIN_KEYS = ("n_samples", "drive_range", "density", "hidden", "max_steps", "seed")


def _check_neuron_twin(name: str, opts: dict[str, Any], twin: Any, index: int) -> None:
    """Refuse a neuron twin where the method does not use one, or with unknown options."""
    from quasineuron.config import ConfigError

    where = f"training.stages[{index}].options.neuron_twin"
    steady = name in ("backprop-steady", "method2-operating") or (
        name == "method2" and opts.get("estimate") in ("steady-state", "steady")
    )
    if not steady:
        raise ConfigError(
            f"{where}: {name} does not use steady states, so it has no use for a neuron twin; "
            "use it with backprop-steady, method2-operating or method2 with "
            "estimate = 'steady-state'"
        )
    if not isinstance(twin, dict):
        raise ConfigError(f"{where} must be a table of fit options, e.g. {{ max_steps = 2000 }}")
    unknown = sorted(set(twin) - set(_NEURON_TWIN_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown option {unknown[0]!r}; use {list(_NEURON_TWIN_KEYS)}")


def _neuron_twin(
    stage: StageConfig, net: Any, folder: Path, *, say: bool = False
) -> tuple[Any, dict[str, Any] | None]:
    """The stage's neuron twin, fitted (deterministically, from its seed) into ``folder``.

    With ``say``, a line on the console before the fit (it shows no progress bar and takes a
    minute or two) and one after it, with its held-out error.
    """
    spec = _tuples(dict(stage.options)).get("neuron_twin")
    if spec is None:
        return None, None
    from dataclasses import asdict

    from quasineuron.wuxing.twin import fit_neuron_twin

    if say:
        print(f"{folder.name}: fitting the neuron twin {spec} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    twin, report = fit_neuron_twin(net, **spec)
    if say:
        print(
            f"{folder.name}: neuron twin fitted in {time.perf_counter() - t0:.0f} s, held-out "
            f"NRMSE {report.nrmse:.2e}, RMSE {report.rmse:.3g} "
            f"(signal RMS {report.signal_rms:.3g})",
            file=sys.stderr,
        )
    folder.mkdir(parents=True, exist_ok=True)
    save_surrogate(twin.correction, folder / "neuron-twin.safetensors")
    info = {
        "gain": twin.gain.tolist(),
        "options": spec,
        "report": asdict(report),
        "path": f"{folder.parent.name}/{folder.name}/neuron-twin.safetensors",
    }
    atomic_write_json(folder / "neuron-twin.json", info)
    return twin, info


#: A Wuxing network's score modes: the device is its time simulation over the window, the
#: surrogate its steady state.
_WUXING_SCORE_MODES: dict[str, Literal["window", "steady-state"]] = {
    "device": "window",
    "surrogate": "steady-state",
}


def _score_test(
    config: RunConfig, net: DeviceNetwork, test: ArrayDataset, *, measured: bool
) -> tuple[Any, int]:
    """The test read of a device network: the config's modes, variability and passes.

    One place for what a score is, so that ``run`` and ``quasineuron score`` read the test set
    the same way: a device with noise or device-to-device variability is scored
    :data:`STOCHASTIC_PASSES` times per true-device mode. Returns the report and the passes.
    """
    variability = None
    if config.evaluation.variability is not None:
        variability = Variability(**config.evaluation.variability.model_dump())
    modes = [_MODES[m]() for m in config.evaluation.modes if not measured or m == "surrogate"]
    if not modes:  # measured data only: the twin network is what there is to score
        modes = [_MODES["surrogate"]()]
    passes = STOCHASTIC_PASSES if is_stochastic(net) else 1
    report = evaluate(
        net,
        test,
        modes=modes,
        batch_size=config.evaluation.batch_size,
        variability=variability,
        passes=passes,
    )
    return report, passes


def _report_accuracy(report: Any, *, measured: bool) -> dict[str, float | None]:
    """Accuracy per mode of a test read, with the spreads it measured.

    ``<mode>_std`` over passes where there were several; ``<mode>_instances`` and
    ``<mode>_instances_std`` over the drawn instances of ``evaluation.variability``.
    """
    accuracy: dict[str, float | None] = dict(report.accuracy)
    if measured:  # no true device: say so rather than leave the key out
        accuracy["device"] = None
    for name, accs in report.accuracy_passes.items():
        if len(accs) > 1:  # e.g. accuracy.device_std: the spread over passes of a noisy device
            accuracy[f"{name}_std"] = report.accuracy_std[name]
    if report.variability is not None:
        # evaluation.variability: the same network on drawn device instances, mean and spread
        for name, spread in report.variability["modes"].items():
            accuracy[f"{name}_instances"] = spread["mean"]
            accuracy[f"{name}_instances_std"] = spread["std"]
    return accuracy


def score_network(
    config: RunConfig, run: Path, *, data_dir: str | Path | None = None
) -> dict[str, float | None]:
    """Test accuracy per mode of the network saved in ``run/network``.

    This reads the test set; record the read with
    :func:`quasineuron.protocol.record_test_read` (``quasineuron score`` does).
    """
    _, test = _load_data(config, data_dir)
    if config.network.kind == "wuxing":
        from quasineuron.network import load_network as load_any_network
        from quasineuron.wuxing import evaluate as wuxing_evaluate

        net = load_any_network(run / "network")  # a Wuxing network needs no device
        x, y = torch.as_tensor(test.x), torch.as_tensor(test.y)
        return {
            mode: wuxing_evaluate(
                net, x, y, batch_size=config.evaluation.batch_size, mode=_WUXING_SCORE_MODES[mode]
            )
            for mode in config.evaluation.modes
        }
    from quasineuron.network import load_network
    from quasineuron.surrogate import load_surrogate

    m = config.device.measurements
    if m is not None:
        # the run folder's copy of the measurements: the folder alone scores the run
        copy = run / MEASUREMENTS_DIR / Path(m.path).name
        measured = config.model_copy(
            update={
                "device": config.device.model_copy(
                    update={"measurements": m.model_copy(update={"path": str(copy)})}
                )
            }
        )
        twin = load_surrogate(run / "twin.safetensors").to(torch.float32)
        device_net = load_network(
            run / "network", device=MeasuredOnly(_measured_table(measured)), twin=twin
        )
        _install_stage_twins(config, run, device_net)
        report, _ = _score_test(config, device_net, test, measured=True)
        return _report_accuracy(report, measured=True)
    device = make_device(config.device.name, **config.device.options)
    if config.device.input_clip:
        device = InputClip(device)
    twin = load_surrogate(run / "twin.safetensors").to(torch.float32)
    device_net = load_network(run / "network", device=device, twin=twin)
    _install_stage_twins(config, run, device_net)
    report, _ = _score_test(config, device_net, test, measured=False)
    accuracy = _report_accuracy(report, measured=False)
    if config.evaluation.chemistry:  # the compiled chemistry is part of the run's score too
        accuracy["chemistry"] = _score_chemistry(config, device_net, test)["accuracy"]
    return accuracy


def _run_wuxing(
    config: RunConfig,
    out: Path,
    train_set: ArrayDataset,
    val_set: ArrayDataset,
    *,
    timings: dict[str, float],
    t_start: float,
    progress: bool,
    data_dir: str | Path | None,
) -> dict[str, Any]:
    from quasineuron.wuxing.io import save_wuxing_network, window_dict

    net = _wuxing_network(config)
    t0 = time.perf_counter()
    _, outcomes = _train_stages(config, out, net, train_set, val_set, progress=progress)
    timings["train_s"] = time.perf_counter() - t0
    save_wuxing_network(net, out / "network")
    t0 = time.perf_counter()
    # Scored from the saved folder, exactly as `quasineuron score` would score it.
    accuracy = score_network(config, out, data_dir=data_dir)
    timings["evaluate_s"] = time.perf_counter() - t0
    reads = _record_read(out, accuracy)
    timings["total_s"] = time.perf_counter() - t_start
    acc = {k: v for k, v in accuracy.items() if v is not None}
    gap = acc["surrogate"] - acc["device"] if {"surrogate", "device"} <= set(acc) else None
    return {
        "name": config.name,
        "kind": "wuxing",
        "accuracy": accuracy,
        "gap": gap,
        "test_reads": reads,
        "training": {"stages": outcomes},
        "network": {
            "sizes": list(net.wiring.sizes),
            "wiring": net.wiring.kind,
            "n_links": net.wiring.n_links,
            "window": window_dict(net.config),
        },
        "timings": timings,
        "environment": {**_versions(), "machine": platform.machine(), "cpus": os.cpu_count()},
        "config": config.model_dump(mode="json"),
    }


# --------------------------------------------------------------------------------------------
# Families of seeds
# --------------------------------------------------------------------------------------------


def with_seed(config: RunConfig, seed: int) -> RunConfig:
    """``config`` with ``seed`` as its data, network and training seed (and no seed list)."""
    data = {**config.model_dump(mode="json"), "experiment": {"seeds": []}}
    for section in ("data", "network", "training"):
        data[section]["seed"] = seed
    return parse_config(data, source=f"seed {seed}")


def _claim_folder(out: Path, digest: str, *, overwrite: bool, what: str) -> Path:
    """Prepare the top folder of a seed family or a grid; return the path of its record.

    Refused unless the folder is new, holds the same experiment (its record has ``digest``),
    or ``overwrite`` is given.

    Raises:
        RunFolderError: If the folder holds another ``what`` or files that are not a run.
    """
    prepare_output_folder(out)
    record_path = out / RUN_FILE
    if record_path.is_file():
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if record.get("config_hash") != digest and not overwrite:
            raise RunFolderError(
                f"output folder {str(out)!r} holds another {what}; choose a new --out or "
                "pass --overwrite"
            )
    elif any(out.iterdir()) and not overwrite:
        raise RunFolderError(
            f"output folder {str(out)!r} holds files that are not a quasineuron run; choose a "
            "new --out, or pass --overwrite"
        )
    return record_path


def _run_seed_family(
    config: RunConfig,
    out: Path,
    *,
    data_dir: str | Path | None,
    progress: bool,
    allow_import: Sequence[str],
    overwrite: bool,
) -> dict[str, Any]:
    from quasineuron.protocol import seed_family_metrics

    digest = config_hash(config)
    record_path = _claim_folder(out, digest, overwrite=overwrite, what="family of runs")
    atomic_write_json(
        record_path,
        {**_run_record(config, digest), "family": [f"seed-{s}" for s in config.experiment.seeds]},
    )
    per_seed = {}
    with _shared_characterizations():
        for seed in config.experiment.seeds:
            per_seed[seed] = run_pipeline(
                with_seed(config, seed),
                out / f"seed-{seed}",
                data_dir=data_dir,
                progress=progress,
                allow_import=allow_import,
                overwrite=overwrite,
            )
    metrics = seed_family_metrics(config.name, per_seed, config=config.model_dump(mode="json"))
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


# --------------------------------------------------------------------------------------------
# Grids: one config key varied over a list of values (each value a run or a family of seeds)
# --------------------------------------------------------------------------------------------


def _run_grid(
    config: RunConfig,
    out: Path,
    *,
    data_dir: str | Path | None,
    progress: bool,
    allow_import: Sequence[str],
    overwrite: bool,
) -> dict[str, Any]:
    from quasineuron.config import varied_config
    from quasineuron.protocol import grid_folder, grid_metrics

    ((key, values),) = config.experiment.vary.items()
    folders = [grid_folder(key, v) for v in values]
    if len(set(folders)) != len(folders):
        raise RunFolderError(
            f"experiment.vary[{key!r}] values {list(values)} give the same folder name twice "
            f"({folders}); give values that differ in their text"
        )
    digest = config_hash(config)
    record_path = _claim_folder(out, digest, overwrite=overwrite, what="experiment")
    atomic_write_json(record_path, {**_run_record(config, digest), "grid": folders})
    per_value = []
    with _shared_characterizations():
        for value, folder in zip(values, folders, strict=True):
            point = varied_config(config, key, value)
            # each point is a run of its own (or a seed family), resumable on its own
            metrics = run_pipeline(
                point,
                out / folder,
                data_dir=data_dir,
                progress=progress,
                allow_import=allow_import,
                overwrite=overwrite,
            )
            per_value.append(metrics)
    result = grid_metrics(
        config.name, key, values, folders, per_value, config=config.model_dump(mode="json")
    )
    atomic_write_json(out / "metrics.json", result)
    return result


def _run_stages(
    config: RunConfig,
    out: Path,
    device: AbstractDevice,
    sampler: AbstractSampler | None,
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
    measured = sampler is None  # the table comes from a file of measurements
    # every drive row sent to the device, by stage: metrics["device_evaluations"]
    counter = DeviceCallCounter().attach(device)
    with device_phase("sweep"):
        char = _characterize_stage(config, out, device, sampler, measured, progress=progress)
    twin = char.fit.model.to(torch.float32)
    twin.compiled = config.twin.compile
    timings["characterize_s"] = time.perf_counter() - t0
    try:
        return _run_stages_counted(
            config,
            out,
            device,
            status,
            train_set,
            val_set,
            test,
            sizes,
            char,
            twin,
            counter,
            measured=measured,
            timings=timings,
            t_start=t_start,
            progress=progress,
        )
    finally:
        counter.detach()


#: Characterisations made by the runs of the grid or seed family in progress, by the sections
#: of the config they depend on (None outside one): its runs that share device, sweep and twin
#: copy the first one's folder instead of sweeping and fitting again.
_SHARED: ContextVar[dict[str, CharacterizeResult] | None] = ContextVar("_SHARED", default=None)

#: What a characterisation writes into a run folder.
_CHARACTERIZATION_FILES = (
    "sweep.zarr",
    "twin.safetensors",
    "report.json",
    "response.png",
    "error.png",
)


@contextmanager
def _shared_characterizations() -> Iterator[None]:
    """Within the block, runs that share device, sweep and twin characterise once."""
    if _SHARED.get() is not None:  # a family inside a grid: the grid's store serves both
        yield
        return
    token = _SHARED.set({})
    try:
        yield
    finally:
        _SHARED.reset(token)


def _characterization_key(config: RunConfig) -> str:
    return json.dumps(
        config.model_dump(mode="json", include={"device", "sweep", "twin"}), sort_keys=True
    )


def _reuse_characterization(done: CharacterizeResult, out: Path) -> CharacterizeResult:
    """Copy a characterisation of the same device, sweep and twin into the run folder ``out``.

    The sweep and the fit are deterministic in their own seeds (``sweep.seed``, ``twin.seed``,
    which a seed family does not vary), so the copy is what this run would have made; the
    report says where it came from (``sweep.reused_from``) and the run sends no sweep rows to
    the device (``device_evaluations.sweep`` is 0).
    """
    import copy
    import dataclasses

    for name in _CHARACTERIZATION_FILES:
        src = done.folder / name
        if src.is_dir():
            shutil.copytree(src, out / name)
        elif src.is_file():
            shutil.copy2(src, out / name)
    report = copy.deepcopy(done.report)
    report["sweep"]["reused_from"] = os.path.relpath(done.folder, out)
    atomic_write_json(out / "report.json", report)
    # the twin from its file (outputs equal the saved twin's), not the first run's object,
    # which that run has used and converted
    fit = dataclasses.replace(done.fit, model=load_surrogate(out / "twin.safetensors"))
    return CharacterizeResult(
        table=SweepTable.open(out / "sweep.zarr"), fit=fit, report=report, folder=out
    )


def _characterize_stage(
    config: RunConfig,
    out: Path,
    device: AbstractDevice,
    sampler: AbstractSampler | None,
    measured: bool,
    *,
    progress: bool,
) -> CharacterizeResult:
    shared = _SHARED.get()
    key = _characterization_key(config) if shared is not None and not measured else None
    if (
        key is not None
        and shared is not None
        and key in shared
        and not (out / "sweep.zarr").exists()
    ):
        return _reuse_characterization(shared[key], out)
    char = (
        characterize_measured(config, out, progress=progress)
        if measured
        else characterize(
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
    )
    if key is not None and shared is not None:
        shared.setdefault(key, char)
    return char


def _run_stages_counted(
    config: RunConfig,
    out: Path,
    device: AbstractDevice,
    status: Callable[[str], None],
    train_set: ArrayDataset,
    val_set: ArrayDataset,
    test: ArrayDataset,
    sizes: tuple[int, ...],
    char: CharacterizeResult,
    twin: Any,
    counter: DeviceCallCounter,
    *,
    measured: bool,
    timings: dict[str, float],
    t_start: float,
    progress: bool,
) -> dict[str, Any]:
    net = DeviceNetwork(
        device,
        sizes,
        twin=twin,
        connection=_connection(config, device),
        wiring=_wiring(config),
        readout_affine=config.network.readout_affine,
        seed=config.network.seed,
        bounded_drives=config.network.bounded_drives,
    )
    if config.evaluation.baseline_mlp and config.evaluation.baseline != "mlp":
        _baseline_mlp("same-wiring", config, sizes, net)  # a wiring it cannot copy stops here
    status("train")
    t0 = time.perf_counter()
    with device_phase("training"):
        result, stage_outcomes = _train_stages(
            config, out, net, train_set, val_set, progress=progress
        )
    # every stage loaded from an earlier attempt: the last stage's record stands for the loop's
    history = list(result.history) if result is not None else []
    last = stage_outcomes[-1]
    timings["train_s"] = time.perf_counter() - t0

    baselines: dict[str, TrainResult] = {}
    if config.evaluation.baseline_mlp:
        status("baseline")
        t0 = time.perf_counter()
        kinds = ("mlp", "same-wiring") if config.evaluation.baseline == "both" else None
        for kind in kinds or (config.evaluation.baseline,):
            baselines[kind] = train(
                _baseline_mlp(kind, config, sizes, net),
                train_set,
                val_data=val_set,
                progress=False,
                **_train_kwargs(config),
            )
        timings["baseline_train_s"] = time.perf_counter() - t0
    baseline = next(iter(baselines.values()), None)  # the one drawn beside the training curves
    # The network as it leaves training is saved before the test set is read: the saved
    # network is what was scored, and what `quasineuron score` reads later.
    save_network(net, out / "network")  # training updated net in place

    status("evaluate")
    # The test set is scored once, here, after every choice was made on the validation split.
    ood_training = twin.n_out_of_domain
    installed = net.layers[0].twin
    if installed is not twin:  # a recharacterize stage installed a new twin
        assert isinstance(installed, AbstractSurrogate)
        twin = installed
        ood_training += twin.n_out_of_domain
    twin.reset_domain_count()
    t0 = time.perf_counter()
    report, passes = _score_test(config, net, test, measured=measured)
    timings["evaluate_s"] = time.perf_counter() - t0
    accuracy = _report_accuracy(report, measured=measured)
    for kind, fitted in baselines.items():  # baseline_mlp, baseline_same_wiring
        accuracy[f"baseline_{kind.replace('-', '_')}"] = _accuracy(fitted.network, test)
    chemistry = None
    if config.evaluation.chemistry:  # part of the same test read, so recorded with it
        t0 = time.perf_counter()
        chemistry = _score_chemistry(config, net, test)
        accuracy["chemistry"] = chemistry["accuracy"]
        timings["chemistry_s"] = time.perf_counter() - t0

    reads = _record_read(out, accuracy)
    status("report")
    plot_training_curves(
        [e.to_dict() if hasattr(e, "to_dict") else vars(e) for e in history],
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
            # of the sweep's rows, failed or non-finite (the twin is fitted without them), and
            # the within-point spread of repeated rows (empty without sweep.repeats > 1)
            "failed_fraction": twin_rep.failed_fraction,
            "noise_floor": list(twin_rep.noise_floor),
        },
        "domain": _domain_metrics(report.domain, config.twin.policy),
        "passes": passes,
        "sweep": {
            "n_points": char.table.n_points,
            "n_failed": char.table.n_failed,
            **(
                {"reused_from": char.report["sweep"]["reused_from"]}
                if "reused_from" in char.report.get("sweep", {})
                else {}
            ),
        },
        # drive rows sent to the true device in this run, by stage (rows of a resumed sweep
        # or of reloaded training stages were sent by an earlier attempt and are not counted)
        "device_evaluations": counter.summary(list(report.accuracy)),
        **({"measurements": char.report["measurements"]} if measured else {}),
        **({"chemistry": chemistry} if chemistry is not None else {}),
        "training": {
            "mode": config.training.mode,
            "best_epoch": last.get("best_epoch"),
            "stopped_early": last.get("stopped_early"),
            # epochs restored from the checkpoint of an interrupted run (0: trained in one go)
            "resumed_from_epoch": last.get("resumed_from_epoch"),
            "history": [vars(e) for e in history],
            "stages": stage_outcomes,
        },
        "test_reads": reads,
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


def _score_chemistry(config: RunConfig, net: DeviceNetwork, test: ArrayDataset) -> dict[str, Any]:
    """``evaluation.chemistry``: the trained network compiled into one reaction network."""
    from quasineuron.chemistry.score import score_chemistry

    # the neuron's ε as the device was built (its default when the config gives none)
    eps = make_device(config.device.name, **config.device.options).params["eps"]  # type: ignore[index]
    return score_chemistry(
        net,
        torch.as_tensor(test.x),
        torch.as_tensor(test.y),
        device_name=config.device.name,
        eps=float(eps),
        seed=config.training.seed,
        name=config.name.replace("-", "_"),
    )


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


def _wuxing_summary(m: dict[str, Any]) -> str:
    w = m["network"]["window"]
    lines = [
        f"# {m['name']}",
        "",
        f"Wuxing network {' → '.join(map(str, m['network']['sizes']))} "
        f"({m['network']['wiring']} wiring, {m['network']['n_links']} links), simulated over "
        f"T = {w['T']:g} with dt = {w['dt']:g} ({w['solver']}, readout {w['readout']}).",
        f"Trained in {len(m['training']['stages'])} stage(s): "
        + ", ".join(
            f"{s['method']} ({', '.join(f'{k} {v}' for k, v in s['budget'].items())}, "
            f"keep {s['keep']})"
            for s in m["training"]["stages"]
        )
        + f"; the test set was read {m['test_reads']} time(s).",
        "",
        "| scored on | test accuracy |",
        "|---|---|",
    ]
    names = {"device": "device (time simulation)", "surrogate": "surrogate (steady state)"}
    for k, v in m["accuracy"].items():
        if v is not None:
            lines.append(f"| {names.get(k, k)} | {100 * v:.2f} % |")
    lines += ["", f"Total time {m['timings']['total_s']:.1f} s.", ""]
    return "\n".join(lines)


def _summary(m: dict[str, Any]) -> str:
    if m.get("kind") == "wuxing":
        return _wuxing_summary(m)
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
        *_measured_sentences(m),
        *_domain_sentences(m),
        f"Total time {m['timings']['total_s']:.1f} s.",
        "",
        "Files: metrics.json, report.json, response.png, error.png, training.png, "
        "accuracy.png, confusion.png, network/, twin.safetensors, "
        + ("measurements/." if m.get("measurements") else "sweep.zarr."),
        "",
    ]
    return "\n".join(lines)


def _measured_sentences(m: dict[str, Any]) -> list[str]:
    """What a run built from measured data can and cannot say."""
    meas = m.get("measurements")
    if not meas:
        return []
    return [
        f"Device: measured data only ({meas['file']}, SHA-256 {meas['sha256'][:12]}…): the "
        "sweep above is the file's rows. There is no true device, so accuracy.device is null: "
        "the network was trained and scored through its twin, and the twin's error is measured "
        "on held-out measurements, not on the device."
        + (
            f" Noise floor of the repeated readings: {m['twin']['noise_floor']}."
            if m["twin"].get("noise_floor")
            else ""
        ),
    ]


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
