"""The realism suite: devices as they really are, and which training route copes with each.

Each :class:`Scenario` is a device with one flaw a real device has (noise, a region where it
fails, a steep threshold, instance-to-instance spread, a twin fitted on few points, a useful
range so narrow that drives escape it), plus an exact-twin control. Each :class:`Route` is one
way to train through it: the twin only, physics-aware (device forward, twin gradients), each
with or without the domain tools (a penalty on drives outside the twin's domain, output drives
squashed into the domain, non-finite samples masked), and physics-aware with one round of
active characterisation halfway through. :func:`run_realism` trains every scenario × route ×
seed on the same data, scores on the true device, and sets each beside an ideal-neuron network
of the same shape (an ordinary tanh MLP).

All devices are one-drive formula devices, so the suite runs on a CPU in minutes; what it
shows is how the routes rank, not what a particular lab device does.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from quasineuron.data import ArrayDataset
from quasineuron.devices.base import AbstractDevice, Box
from quasineuron.devices.formula import FormulaDevice
from quasineuron.devices.wrappers import Noisy
from quasineuron.network.network import DeviceNetwork
from quasineuron.network.variability import Variability

__all__ = ["ROUTES", "Route", "Scenario", "default_scenarios", "run_realism", "run_one"]


@dataclass(frozen=True)
class Route:
    """One way to train a device network.

    Args:
        name: Name in the results.
        mode: ``"surrogate"`` (the twin only) or ``"physics-aware"`` (device forward, twin
            gradients).
        domain_penalty: Weight of the out-of-domain drive penalty (0: off).
        bounded_drives: ``"none"``, ``"output"`` or ``"all"`` (see ``DeviceNetwork``).
        nonfinite: ``"error"`` or ``"mask"`` for non-finite device outputs in training.
        recharacterize: New device points swept where the drives landed, halfway through
            training (0: none).
    """

    name: str
    mode: str = "surrogate"
    domain_penalty: float = 0.0
    bounded_drives: str = "none"
    nonfinite: str = "mask"
    recharacterize: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("surrogate", "physics-aware"):
            raise ValueError(
                f"Route.mode must be 'surrogate' or 'physics-aware', got {self.mode!r}"
            )
        if self.recharacterize < 0:
            raise ValueError(f"Route.recharacterize must be >= 0, got {self.recharacterize!r}")


#: The domain tools: a penalty on drives outside the twin's domain and the output layer's drives
#: squashed into it (every route masks non-finite samples). On the escaping-drives device the
#: drive rows left outside at evaluation (one seed) were 9 % with λ = 1, 2 % with λ = 10 and
#: under 1 % with λ = 100, without costing accuracy: the penalty is zero inside the box, so a
#: large λ only acts on drives that leave it.
_TOOLS = {"domain_penalty": 100.0, "bounded_drives": "output"}

ROUTES: tuple[Route, ...] = (
    Route("twin"),
    Route("twin+domain", **_TOOLS),  # type: ignore[arg-type]
    Route("physics-aware", mode="physics-aware"),
    Route("physics-aware+domain", mode="physics-aware", **_TOOLS),  # type: ignore[arg-type]
    Route("physics-aware+recharacterize", mode="physics-aware", recharacterize=256),
)


@dataclass(frozen=True)
class Scenario:
    """A device with one flaw, its characterisation and the routes worth trying on it.

    Args:
        name: Name in the results.
        description: One sentence for the docs.
        make_device: ``make_device(seed)`` → the true device (a seed for its noise).
        grid: Sweep grid points over the device's domain (the twin's data).
        repeats: Sweep repeats per point (noise floor).
        variability: Instance-to-instance spread of the true devices (None: identical).
        routes: Names of the routes run on it (see :data:`ROUTES`).
        recommended: The route the docs recommend for it.
    """

    name: str
    description: str
    make_device: Callable[[int], AbstractDevice]
    grid: int = 201
    repeats: int = 1
    variability: Variability | None = None
    routes: tuple[str, ...] = ("twin", "twin+domain", "physics-aware", "physics-aware+domain")
    recommended: str = "physics-aware"


def _formula(fn: Callable[[torch.Tensor], torch.Tensor], name: str, low: float, high: float) -> Any:
    return FormulaDevice(
        fn, n_in=1, n_out=1, domain=Box(low=(low,), high=(high,)), name=name, probe=False
    )


def _tanh(u: torch.Tensor) -> torch.Tensor:
    return torch.tanh(u)


def _nan_region(u: torch.Tensor) -> torch.Tensor:
    # a device that breaks down (returns NaN) above u = 2.2, inside its declared domain
    y = torch.tanh(u)
    return torch.where(u > 2.2, torch.full_like(y, math.nan), y)


def _steep(u: torch.Tensor) -> torch.Tensor:
    # a threshold about 0.6 wide, off centre: a 9-point grid (spacing 0.75) cannot resolve it.
    # (Steeper thresholds, tanh(5 u) and tanh(10 u), left even an exact twin's network near
    # chance on some seeds in 20 epochs: the suite would then measure the neuron, not the twin.)
    return torch.tanh(3.0 * (u - 0.3))


def _wavy(u: torch.Tensor) -> torch.Tensor:
    return torch.tanh(u) + 0.3 * torch.sin(3.0 * u)


def _narrow(u: torch.Tensor) -> torch.Tensor:
    # monotone on its declared domain [-1, 1] (peak 1 at |u| = 1), falling back to 0 at
    # |u| = 2 and changing sign beyond: a twin that clamps at the box says "saturated" where
    # the device says "off" or "reversed"
    return torch.sin(0.5 * math.pi * u)


def default_scenarios() -> tuple[Scenario, ...]:
    """The suite's scenarios: an exact-twin control and six flawed devices."""
    tanh = _formula(_tanh, "tanh", -3.0, 3.0)
    return (
        Scenario(
            "exact-twin",
            "control: a tanh device and a twin within 1e-5 of it",
            lambda seed: tanh,
            grid=401,
            routes=("twin", "physics-aware"),
            recommended="twin",
        ),
        Scenario(
            "noisy",
            "tanh with Gaussian output noise of std 0.05 on every call",
            lambda seed: Noisy(tanh, std=0.05, seed=seed),
            repeats=4,
        ),
        Scenario(
            "nan-region",
            "tanh that returns NaN above u = 2.2 (inside its domain [-3, 3]), with noise 0.02",
            lambda seed: Noisy(_formula(_nan_region, "tanh-nan", -3.0, 3.0), std=0.02, seed=seed),
            repeats=2,
            recommended="physics-aware+domain",
        ),
        Scenario(
            "steep-threshold",
            "tanh(3 (u - 0.3)), twin fitted on a 9-point grid that misses the threshold",
            lambda seed: _formula(_steep, "steep", -3.0, 3.0),
            grid=9,
            routes=("twin", "physics-aware", "physics-aware+recharacterize"),
            recommended="physics-aware+recharacterize",
        ),
        Scenario(
            "variability",
            "tanh instances with 30 % gain and drive-gain spread and 0.2 offset spread; the "
            "twin is fitted to the nominal device",
            lambda seed: tanh,
            grid=401,
            variability=Variability(gain_std=0.3, offset_std=0.2, input_gain_std=0.3, seed=7),
            recommended="physics-aware+domain",
        ),
        Scenario(
            "few-points",
            "tanh(u) + 0.3 sin(3u), twin fitted on 7 grid points",
            lambda seed: _formula(_wavy, "wavy", -3.0, 3.0),
            grid=7,
            routes=("twin", "physics-aware", "physics-aware+recharacterize"),
            recommended="physics-aware+recharacterize",
        ),
        Scenario(
            "escaping-drives",
            "sin(pi u / 2): useful range [-1, 1]; beyond it the device falls back to 0 and "
            "reverses while the clamping twin stays saturated",
            lambda seed: _formula(_narrow, "narrow", -1.0, 1.0),
            routes=(
                "twin",
                "twin+domain",
                "physics-aware",
                "physics-aware+domain",
                "physics-aware+recharacterize",
            ),
            recommended="physics-aware+domain",
        ),
    )


@dataclass(frozen=True)
class _Settings:
    hidden: int = 32
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-2
    n_stochastic_passes: int = 3
    extra: dict[str, Any] = field(default_factory=dict)


def _twin(device: AbstractDevice, scenario: Scenario) -> tuple[Any, dict[str, Any]]:
    from quasineuron.surrogate import fit_surrogate
    from quasineuron.sweep import Grid, sweep

    table = sweep(device, Grid(scenario.grid), progress=False, repeats=scenario.repeats)
    # clamp: the policy the guide uses, and the one under which escaping drives go unseen
    fit = fit_surrogate(table, kind="spline", policy="clamp", seed=0)
    rep = fit.report
    return fit.model.to(torch.float32), {
        "table": table,
        "nrmse": rep.nrmse,
        "max_abs": rep.max_abs,
        "failed_fraction": rep.failed_fraction,
        "noise_floor": None if rep.noise_floor is None else list(rep.noise_floor),
        "n_points": int(table.n_points),
    }


def _ideal(
    train: ArrayDataset, test: ArrayDataset, sizes: Sequence[int], seed: int, s: _Settings
) -> float:
    """Accuracy of an ordinary tanh MLP of the same shape, trained the same way."""
    from quasineuron.training import Cosine
    from quasineuron.training import train as train_net

    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(torch.nn.Tanh())
    net = torch.nn.Sequential(*layers)
    train_net(
        net,
        train,
        epochs=s.epochs,
        batch_size=s.batch_size,
        lr=s.lr,
        schedule=Cosine(),
        seed=seed,
        progress=False,
    )
    with torch.no_grad():
        return float((net(test.x.float()).argmax(1) == test.y).double().mean())


def run_one(
    scenario: Scenario,
    route: Route,
    seed: int,
    train: ArrayDataset,
    test: ArrayDataset,
    *,
    settings: _Settings | None = None,
) -> dict[str, Any]:
    """Train one network of ``scenario`` by ``route`` and score it on the true device.

    Returns:
        ``accuracy_device`` (mean over passes for a noisy device), ``accuracy_twin``, ``gap``
        (twin minus device, percentage points), ``outside_fraction`` (device mode, test set),
        ``nonfinite_rows`` (device mode), ``masked_rows`` (training), ``device_evaluations``
        (sweep, training forward passes and active characterisation), ``seconds``.
    """
    from quasineuron.evaluation import evaluate, is_stochastic
    from quasineuron.network.modes import PhysicsAware, Surrogate, TrueDevice
    from quasineuron.surrogate.active import recharacterize
    from quasineuron.training import Cosine, fit
    from quasineuron.training.callbacks import DomainMonitor
    from quasineuron.training.gradient import Gradient

    s = settings or _Settings()
    t0 = time.perf_counter()
    device = scenario.make_device(seed)
    twin, info = _twin(device, scenario)
    sizes = (train.x.shape[1], s.hidden, int(train.n_classes or 10))
    net = DeviceNetwork(device, sizes, twin=twin, seed=seed, bounded_drives=route.bounded_drives)
    view = net.with_variability(scenario.variability) if scenario.variability else net
    mode = PhysicsAware() if route.mode == "physics-aware" else Surrogate()
    trained_on = view if route.mode == "physics-aware" else net

    def stage(epochs: int, stage_seed: int) -> Any:
        strategy = Gradient(
            mode,
            lr=s.lr,
            schedule=Cosine(),
            domain_penalty=route.domain_penalty,
            nonfinite=route.nonfinite,
        )
        result = fit(
            trained_on,
            train,
            strategy,
            epochs=epochs,
            batch_size=s.batch_size,
            seed=stage_seed,
            progress=False,
            callbacks=(DomainMonitor(threshold=1.0),),
        )
        return result, strategy

    device_evals = info["n_points"]  # the sweep's rows, repeats included
    masked = 0
    active: dict[str, Any] | None = None
    n_neurons = sum(sizes[1:])
    if route.recharacterize:
        # each stage trains at least one epoch, so a one-epoch smoke run (--quick) trains two
        first = max(1, s.epochs // 2)
        result, strategy = stage(first, seed)
        masked += strategy.masked_rows
        device_evals += result.samples_seen * n_neurons if route.mode == "physics-aware" else 0
        rc = recharacterize(
            net,
            train.x.float(),
            info["table"],
            points=route.recharacterize,
            seed=seed,
            kind="mlp",
            hidden=(32, 32),
            max_steps=400,
            lbfgs_steps=100,
        )
        device_evals += rc.n_new
        active = rc.to_dict()
        result, strategy = stage(max(1, s.epochs - first), seed + 1)
    else:
        result, strategy = stage(s.epochs, seed)
    masked += strategy.masked_rows
    if route.mode == "physics-aware":
        device_evals += result.samples_seen * n_neurons

    passes = s.n_stochastic_passes if is_stochastic(net) else 1
    rep = evaluate(view, test, modes=(Surrogate(), TrueDevice()), passes=passes)
    acc_dev = rep.accuracy["device"]
    acc_twin = rep.accuracy["surrogate"]
    out = {
        "seed": seed,
        "accuracy_device": acc_dev,
        "accuracy_device_std_passes": rep.accuracy_std.get("device", 0.0),
        "accuracy_twin": acc_twin,
        "gap": 100.0 * (acc_twin - acc_dev),
        "outside_fraction": rep.domain.get("device", {}).get("outside_fraction"),
        "nonfinite_rows": rep.nonfinite_rows.get("device", 0),
        "masked_rows": masked,
        "device_evaluations": int(device_evals),
        "twin_nrmse": info["nrmse"],
        "twin_failed_fraction": info["failed_fraction"],
        "noise_floor": info["noise_floor"],
        "seconds": time.perf_counter() - t0,
    }
    if active is not None:
        out["recharacterize"] = active
    return out


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    vals = [float(v) for v in values]
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def run_realism(
    out: str | Path | None = None,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    data: str = "digits",
    scenarios: Sequence[Scenario] | None = None,
    routes: Sequence[Route] = ROUTES,
    epochs: int = 20,
    hidden: int = 32,
    data_dir: str | Path | None = None,
    max_train: int | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the suite and (with ``out``) write ``out/metrics.json``.

    Args:
        out: Folder for ``metrics.json``; None writes nothing.
        seeds: Seeds of each scenario × route (network weights, batches, device noise).
        data: ``"digits"`` (scikit-learn's 8x8 digits) or ``"mnist"`` (read from
            ``data_dir``).
        scenarios: Scenarios to run (default :func:`default_scenarios`).
        routes: The routes known by name (each scenario picks its own from them).
        epochs: Training epochs per network.
        hidden: Hidden neurons.
        data_dir: MNIST folder.
        max_train: Use only the first this many training samples (None: all).
        log: Called with one line per finished run.

    Returns:
        ``{"data", "settings", "seeds", "scenarios": [{"name", "description", "recommended",
        "ideal": {...}, "routes": [{"name", "accuracy_device_mean", "accuracy_device_std",
        "accuracy_twin_mean", "gap_mean", "gap_std", "outside_fraction_mean", "seeds": [...]}]}]}``.

    Raises:
        ValueError: For an unknown data set or a scenario naming an unknown route.
    """
    from quasineuron._atomic import atomic_write_json
    from quasineuron.data import load_digits, load_mnist

    by_name = {r.name: r for r in routes}
    chosen = tuple(scenarios) if scenarios is not None else default_scenarios()
    for sc in chosen:
        unknown = [r for r in sc.routes if r not in by_name]
        if unknown:
            raise ValueError(
                f"scenario {sc.name!r} names unknown routes {unknown}; known: {sorted(by_name)}"
            )
    if data == "digits":
        train, test = load_digits(seed=0)
    elif data == "mnist":
        train, test = load_mnist(data_dir, download=False)
    else:
        raise ValueError(f"data must be 'digits' or 'mnist', got {data!r}")
    if max_train is not None:
        train = ArrayDataset(train.x[:max_train], train.y[:max_train], name=train.name)
    s = _Settings(hidden=hidden, epochs=epochs)
    sizes = (train.x.shape[1], hidden, int(train.n_classes or 10))
    ideal = [_ideal(train, test, sizes, seed, s) for seed in seeds]
    ideal_mean, ideal_std = _mean_std(ideal)
    results = []
    for sc in chosen:
        entries = []
        for rname in sc.routes:
            runs = [run_one(sc, by_name[rname], seed, train, test, settings=s) for seed in seeds]
            acc_m, acc_s = _mean_std([r["accuracy_device"] for r in runs])
            gap_m, gap_s = _mean_std([r["gap"] for r in runs])
            twin_m, _ = _mean_std([r["accuracy_twin"] for r in runs])
            outside = [r["outside_fraction"] for r in runs if r["outside_fraction"] is not None]
            entries.append(
                {
                    "name": rname,
                    "accuracy_device_mean": acc_m,
                    "accuracy_device_std": acc_s,
                    "accuracy_twin_mean": twin_m,
                    "gap_mean": gap_m,
                    "gap_std": gap_s,
                    "outside_fraction_mean": statistics.fmean(outside) if outside else None,
                    "device_evaluations_mean": statistics.fmean(
                        r["device_evaluations"] for r in runs
                    ),
                    "seconds_mean": statistics.fmean(r["seconds"] for r in runs),
                    "seeds": runs,
                }
            )
            if log is not None:
                log(
                    f"{sc.name:16s} {rname:30s} device {100 * acc_m:6.2f} ± {100 * acc_s:4.2f} % "
                    f"gap {gap_m:+6.2f} pp outside {entries[-1]['outside_fraction_mean']}"
                )
        best = max(entries, key=lambda e: float(e["accuracy_device_mean"]))  # type: ignore[arg-type]
        results.append(
            {
                "name": sc.name,
                "description": sc.description,
                "recommended": sc.recommended,
                "best_route": best["name"],
                "ideal": {
                    "accuracy_mean": ideal_mean,
                    "accuracy_std": ideal_std,
                    "seeds": ideal,
                },
                "routes": entries,
            }
        )
    metrics = {
        "data": data,
        "n_train": len(train),
        "n_test": len(test),
        "network": {"sizes": list(sizes)},
        "settings": {"epochs": s.epochs, "batch_size": s.batch_size, "lr": s.lr},
        "seeds": list(seeds),
        "units": {"accuracy": "fraction", "gap": "percentage points (twin minus device)"},
        "scenarios": results,
    }
    if out is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(folder / "metrics.json", metrics)
    return metrics
