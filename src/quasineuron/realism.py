"""The realism suite: devices as they really are, and which training route copes with each.

Each :class:`Scenario` is a device with one flaw a real device has (noise, a region where it
fails, a steep threshold, instance-to-instance spread, a twin fitted on few points, a useful
range so narrow that drives escape it, a slow device whose evaluations are charged against a
budget), plus an exact-twin control. Each :class:`Route` is one way to train through it: the
twin only, physics-aware (device forward, twin gradients), direct (autograd through the true
device, where it has gradients), each with or without the domain tools (a penalty on drives
outside the twin's domain, output drives squashed into the domain, non-finite samples masked)
or with every layer's drives squashed into the domain, physics-aware or the twin with one round
of active characterisation halfway through (optionally bounded, with the learning rate matched
to the twin's slope), and derivative-free (CMA-ES on the true device, on a smaller network).
:func:`run_realism` trains every scenario × route × seed on the same data, scores on the true
device, and sets each beside an ideal-neuron network of the same shape (an ordinary tanh MLP).

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
from typing import Any, Literal

import torch

from quasineuron.data import ArrayDataset
from quasineuron.devices.base import AbstractDevice, Box
from quasineuron.devices.formula import FormulaDevice
from quasineuron.devices.wrappers import Noisy
from quasineuron.network.network import DeviceNetwork
from quasineuron.network.variability import Variability

__all__ = [
    "ROUTES",
    "Route",
    "Scenario",
    "default_scenarios",
    "markdown_table",
    "peak_slope",
    "run_one",
    "run_realism",
    "validation_split",
]


#: ``surrogate``: the twin only; ``physics-aware``: device forward, twin gradients;
#: ``direct``: autograd through the true device (only where it is differentiable);
#: ``derivative-free``: CMA-ES on the true device, no gradients and no twin in training.
_ROUTE_MODES = ("surrogate", "physics-aware", "direct", "derivative-free")


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
        hidden: Hidden neurons of this route's network (None: the suite's).
        candidates: ``"derivative-free"`` only: the optimiser's budget in candidate
            evaluations (a scenario's device budget may cut it further).
        candidate_batch: ``"derivative-free"`` only: training samples each generation of
            candidates is scored on.
        match_slope: Divide the learning rate by the twin's steepest slope over its domain
            when that slope exceeds 1 (see :func:`peak_slope`): Adam moves each weight by
            about ``lr`` whatever the gradient's scale, so a neuron k times steeper than tanh
            moves its output k times further per step; this gives every device the step a
            tanh neuron (the ideal network's) takes.
    """

    name: str
    mode: str = "surrogate"
    domain_penalty: float = 0.0
    bounded_drives: str = "none"
    nonfinite: str = "mask"
    recharacterize: int = 0
    hidden: int | None = None
    candidates: int = 3000
    candidate_batch: int = 256
    match_slope: bool = False

    def __post_init__(self) -> None:
        if self.mode not in _ROUTE_MODES:
            raise ValueError(
                f"Route.mode must be one of {', '.join(map(repr, _ROUTE_MODES))}, got {self.mode!r}"
            )
        if self.recharacterize < 0:
            raise ValueError(f"Route.recharacterize must be >= 0, got {self.recharacterize!r}")
        for name in ("candidates", "candidate_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Route.{name} must be an int >= 1, got {value!r}")
        if self.hidden is not None and (
            isinstance(self.hidden, bool) or not isinstance(self.hidden, int) or self.hidden < 1
        ):
            raise ValueError(f"Route.hidden must be None or an int >= 1, got {self.hidden!r}")
        if self.mode == "derivative-free" and (
            self.domain_penalty or self.recharacterize or self.nonfinite != "mask"
        ):
            raise ValueError(
                f"Route {self.name!r}: a derivative-free route takes no domain_penalty, "
                "recharacterize or nonfinite (a candidate whose outputs are not finite simply "
                "loses); drop those options"
            )
        if self.bounded_drives not in ("none", "output", "all"):
            raise ValueError(
                f"Route.bounded_drives must be 'none', 'output' or 'all', got "
                f"{self.bounded_drives!r}"
            )


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
    Route("direct", mode="direct"),
    Route("direct+domain", mode="direct", **_TOOLS),  # type: ignore[arg-type]
    # CMA-ES needs its evaluations per weight: a 64-8-10 network has 610 weights against
    # 2410 for 64-32-10. sigma0 = 0.1 and popsize 32 are the settings docs/derivative-free.md
    # chose on a validation split for the same data; 3000 candidates on batches of 256 are
    # 3000 * 256 * 18 = 13.8 million device evaluations, about ten times physics-aware's.
    Route("derivative-free", mode="derivative-free", hidden=8),
    Route("twin+recharacterize", recharacterize=256),
    # Every layer's drives squashed into the characterised box: on MNIST the penalty left 1-5 %
    # of the hidden drive rows outside at evaluation (it is a soft term on training batches),
    # and a single hidden drive in a failing region makes the whole prediction NaN. Bounding
    # every layer leaves none outside by construction; the penalty is then zero, so it is off.
    Route("twin+bounded", bounded_drives="all"),
    Route("physics-aware+bounded", mode="physics-aware", bounded_drives="all"),
    Route(
        "physics-aware+recharacterize+bounded",
        mode="physics-aware",
        bounded_drives="all",
        recharacterize=256,
        match_slope=True,
    ),
    # its twin-only counterpart: the same settings with the device never in the forward pass
    # (it runs only for the 256 new points), so the pair measures what physics-aware adds
    Route(
        "twin+recharacterize+bounded", bounded_drives="all", recharacterize=256, match_slope=True
    ),
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
        budget: Device evaluations (drive rows) each route may spend on characterisation,
            training and active characterisation together (None: no limit). Routes that run
            the device in training stop when their share is spent; scoring is not counted.
        seconds_per_evaluation: The time one device evaluation is charged (a slow simulator
            or instrument) in the results' ``charged_seconds``; the device itself runs at
            full speed so that the suite stays fast.
        twin_kind: ``fit_surrogate`` kind of the twin: ``"spline"`` interpolates every sweep
            point, ``"mlp"`` smooths (use it for a noisy device: a spline through noisy
            points has slopes made of noise, and training follows those slopes).
    """

    name: str
    description: str
    make_device: Callable[[int], AbstractDevice]
    grid: int = 201
    repeats: int = 1
    variability: Variability | None = None
    routes: tuple[str, ...] = ("twin", "twin+domain", "physics-aware", "physics-aware+domain")
    recommended: str = "physics-aware"
    budget: int | None = None
    seconds_per_evaluation: float = 0.0
    twin_kind: Literal["spline", "mlp", "auto"] = "spline"

    def __post_init__(self) -> None:
        if self.budget is not None and (
            isinstance(self.budget, bool) or not isinstance(self.budget, int) or self.budget < 1
        ):
            raise ValueError(
                f"Scenario {self.name!r}: budget must be None or an int >= 1 (device "
                f"evaluations), got {self.budget!r}"
            )
        cost = self.seconds_per_evaluation
        if isinstance(cost, bool) or not isinstance(cost, int | float) or not cost >= 0:
            raise ValueError(
                f"Scenario {self.name!r}: seconds_per_evaluation must be a number >= 0, got "
                f"{cost!r}"
            )
        if self.twin_kind not in ("spline", "mlp", "auto"):
            raise ValueError(
                f"Scenario.twin_kind must be 'spline', 'mlp' or 'auto' (a fit_surrogate kind), "
                f"got {self.twin_kind!r}"
            )


def peak_slope(twin: AbstractDevice, points: int = 1001) -> float:
    """The steepest slope of a one-drive twin over its domain (finite differences).

    Args:
        twin: A device with one drive and a bounded ``domain``.
        points: Evaluation points across the domain.

    Returns:
        ``max |dy/du|`` over the domain, output 0 (NaN outputs are ignored).

    Raises:
        ValueError: If the twin has more than one drive or no bounded domain.
    """
    box = getattr(twin, "domain", None)
    if twin.n_in != 1 or box is None:
        raise ValueError(
            f"peak_slope needs a one-drive twin with a domain, got n_in={twin.n_in}, "
            f"domain={box!r}; use Route(match_slope=False) for this device"
        )
    u = torch.linspace(float(box.low[0]), float(box.high[0]), points, dtype=torch.float64)
    dtype = next((p.dtype for p in twin.buffers() if p.is_floating_point()), torch.float64)
    with torch.no_grad():
        y = twin(u[:, None].to(dtype))[:, 0].double()
    slope = (y[1:] - y[:-1]).abs() / (u[1:] - u[:-1])
    slope = slope[torch.isfinite(slope)]
    return float(slope.max()) if len(slope) else 1.0


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


def _wavy_numpy(u: Any) -> Any:
    # the few-points device as a simulator would give it: numpy in and out, no gradients
    import numpy as np

    return np.tanh(u) + 0.3 * np.sin(3.0 * u)


#: The slow device: every evaluation is charged 10 ms (a circuit simulation or a measurement),
#: and each route may spend 100 000 evaluations (about 17 minutes of device time) in all.
#: Physics-aware training of 64-32-10 spends 42 evaluations per training sample, so the budget
#: buys it under two epochs of the 1438 images; the twin routes spend a few hundred.
SLOW_SECONDS_PER_EVALUATION = 0.01
SLOW_BUDGET = 100_000


def _slow_device(seed: int) -> AbstractDevice:
    from quasineuron.devices.blackbox import BlackBoxDevice

    return BlackBoxDevice(
        _wavy_numpy,
        n_in=1,
        n_out=1,
        domain=Box(low=(-3.0,), high=(3.0,)),
        vectorized=True,
        name="slow-wavy",
    )


def _narrow(u: torch.Tensor) -> torch.Tensor:
    # monotone on its declared domain [-1, 1] (peak 1 at |u| = 1), falling back to 0 at
    # |u| = 2 and changing sign beyond: a twin that clamps at the box says "saturated" where
    # the device says "off" or "reversed"
    return torch.sin(0.5 * math.pi * u)


_DEFAULT_ROUTES = ("twin", "twin+domain", "physics-aware", "physics-aware+domain")
_TRUE_DEVICE_ROUTES = ("direct", "direct+domain", "derivative-free")
#: every layer's drives squashed into the characterised box
_BOUNDED_ROUTES = ("twin+bounded", "physics-aware+bounded")
#: a twin wrong between its sweep points (steep threshold, few points)
_TWIN_WRONG_ROUTES = (
    "twin",
    "physics-aware",
    "physics-aware+recharacterize",
    "physics-aware+recharacterize+bounded",
    "twin+recharacterize+bounded",
    "direct",
    "derivative-free",
)


def default_scenarios() -> tuple[Scenario, ...]:
    """The suite's scenarios: an exact-twin control, six flawed devices and a slow one."""
    tanh = _formula(_tanh, "tanh", -3.0, 3.0)
    return (
        Scenario(
            "exact-twin",
            "control: a tanh device and a twin within 1e-5 of it",
            lambda seed: tanh,
            grid=401,
            routes=("twin", "physics-aware", "direct", "derivative-free"),
            recommended="twin",
        ),
        Scenario(
            "noisy",
            "tanh with Gaussian output noise of std 0.05 on every call",
            lambda seed: Noisy(tanh, std=0.05, seed=seed),
            repeats=4,
            twin_kind="mlp",
            routes=_DEFAULT_ROUTES + _BOUNDED_ROUTES + _TRUE_DEVICE_ROUTES,
            recommended="twin",
        ),
        Scenario(
            "nan-region",
            "tanh that returns NaN above u = 2.2 (inside its domain [-3, 3]), with noise 0.02",
            lambda seed: Noisy(_formula(_nan_region, "tanh-nan", -3.0, 3.0), std=0.02, seed=seed),
            repeats=2,
            twin_kind="mlp",
            routes=_DEFAULT_ROUTES + _BOUNDED_ROUTES + _TRUE_DEVICE_ROUTES,
            recommended="twin+bounded",
        ),
        Scenario(
            "steep-threshold",
            "tanh(3 (u - 0.3)), twin fitted on a 9-point grid that misses the threshold",
            lambda seed: _formula(_steep, "steep", -3.0, 3.0),
            grid=9,
            routes=_TWIN_WRONG_ROUTES,
            recommended="physics-aware+recharacterize+bounded",
        ),
        Scenario(
            "variability",
            "tanh instances with 30 % gain and drive-gain spread and 0.2 offset spread; the "
            "twin is fitted to the nominal device",
            lambda seed: tanh,
            grid=401,
            variability=Variability(gain_std=0.3, offset_std=0.2, input_gain_std=0.3, seed=7),
            routes=_DEFAULT_ROUTES + ("physics-aware+bounded",) + _TRUE_DEVICE_ROUTES,
            recommended="physics-aware",
        ),
        Scenario(
            "few-points",
            "tanh(u) + 0.3 sin(3u), twin fitted on 7 grid points",
            lambda seed: _formula(_wavy, "wavy", -3.0, 3.0),
            grid=7,
            routes=_TWIN_WRONG_ROUTES,
            recommended="physics-aware",
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
                "twin+bounded",
                "physics-aware+bounded",
                *_TRUE_DEVICE_ROUTES,
            ),
            recommended="twin+bounded",
        ),
        Scenario(
            "slow-device",
            "the few-points device as a black-box simulator (no gradients) whose every "
            f"evaluation is charged {1000 * SLOW_SECONDS_PER_EVALUATION:g} ms, twin on 9 "
            f"points, {SLOW_BUDGET} device evaluations per route",
            _slow_device,
            grid=9,
            routes=(
                "twin",
                "twin+recharacterize",
                "twin+recharacterize+bounded",
                "physics-aware",
                "physics-aware+recharacterize",
                "direct",
                "derivative-free",
            ),
            # chosen on the MNIST validation split (seeds 0-2, `--validation`): the best route
            # there and the cheapest within its spread, 265 evaluations of the 100 000
            recommended="twin+recharacterize+bounded",
            budget=SLOW_BUDGET,
            seconds_per_evaluation=SLOW_SECONDS_PER_EVALUATION,
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
    fit = fit_surrogate(table, kind=scenario.twin_kind, policy="clamp", seed=0)
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
        (sweep, training forward passes and active characterisation), ``seconds``; with a
        scenario budget or cost also ``budget`` and ``charged_seconds`` (device evaluations
        times the cost of one). A route that cannot run on the scenario (``direct`` on a device
        without gradients, a budget too small for it) returns ``{"seed", "skipped": reason}``.
    """
    from quasineuron.devices.counting import DeviceCallCounter
    from quasineuron.evaluation import evaluate, is_stochastic
    from quasineuron.network.modes import Direct, PhysicsAware, Surrogate, TrueDevice
    from quasineuron.surrogate.active import recharacterize
    from quasineuron.training import Cosine, fit
    from quasineuron.training.callbacks import DomainMonitor
    from quasineuron.training.gradient import Gradient

    s = settings or _Settings()
    t0 = time.perf_counter()
    device = scenario.make_device(seed)
    if route.mode == "direct" and not device.differentiable:
        return {
            "seed": seed,
            "skipped": f"device {device.name!r} gives no gradients (differentiable=False): "
            "there is no direct route; physics-aware and derivative-free train it",
        }
    twin, info = _twin(device, scenario)
    hidden = route.hidden if route.hidden is not None else s.hidden
    sizes = (train.x.shape[1], hidden, int(train.n_classes or 10))
    net = DeviceNetwork(device, sizes, twin=twin, seed=seed, bounded_drives=route.bounded_drives)
    view = net.with_variability(scenario.variability) if scenario.variability else net
    # the routes that run the true device in training see its real instances (variability)
    on_device = route.mode in ("physics-aware", "direct", "derivative-free")
    mode = {"physics-aware": PhysicsAware(), "direct": Direct()}.get(route.mode, Surrogate())
    trained_on = view if on_device else net
    n_neurons = sum(sizes[1:])
    # what the budget leaves for training once the sweep and the new points are paid
    left = None if scenario.budget is None else scenario.budget - info["n_points"]
    if left is not None:
        left -= route.recharacterize
    # one training batch, or one CMA-ES generation of 32 candidates on 8 samples each
    least = n_neurons * (32 * 8 if route.mode == "derivative-free" else s.batch_size)
    if left is not None and left < (least if on_device else 0):
        return {
            "seed": seed,
            "skipped": f"the budget of {scenario.budget} device evaluations does not cover "
            f"the sweep ({info['n_points']}), the new points ({route.recharacterize}) and one "
            "training batch (or CMA-ES generation)",
        }
    counter = DeviceCallCounter().attach(device)  # rows really sent, beside the formula
    # The monitor runs the training mode on 512 samples per epoch: on a device-forward route
    # that is device evaluations too, which a budgeted (slow) device cannot spare; the
    # outside fraction at evaluation is measured either way.
    monitor = () if scenario.budget is not None else (DomainMonitor(threshold=1.0),)

    # the twin in use when training starts (recharacterize keeps the rate it started with)
    lr = s.lr / max(1.0, peak_slope(twin)) if route.match_slope else s.lr

    def stage(epochs: int, stage_seed: int, max_samples: int | None = None) -> Any:
        strategy = Gradient(
            mode,
            lr=lr,
            schedule=Cosine(),
            domain_penalty=route.domain_penalty,
            nonfinite=route.nonfinite,
        )
        result = fit(
            trained_on,
            train,
            strategy,
            epochs=epochs,
            max_samples=max_samples,
            batch_size=s.batch_size,
            seed=stage_seed,
            progress=False,
            callbacks=monitor,
        )
        return result, strategy

    # training samples the budget buys a device-forward route, in whole batches (the loop
    # would round a partial batch up and overspend)
    allowed = None
    if left is not None and on_device:
        allowed = left // n_neurons // s.batch_size * s.batch_size

    device_evals = info["n_points"]  # the sweep's rows, repeats included
    masked = 0
    active: dict[str, Any] | None = None
    extra: dict[str, Any] = {}
    if route.mode == "derivative-free":
        extra = _derivative_free(trained_on, train, route, seed, left, n_neurons)
        device_evals += extra["optimizer"]["device_evaluations"]
    elif route.recharacterize:
        # each stage trains at least one epoch, so a one-epoch smoke run (--quick) trains two
        first = max(1, s.epochs // 2)
        half = None if allowed is None else max(allowed // 2 // s.batch_size, 1) * s.batch_size
        result, strategy = stage(first, seed, half)
        masked += strategy.masked_rows
        device_evals += result.samples_seen * n_neurons if on_device else 0
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
        rest = None if allowed is None or half is None else max(allowed - half, s.batch_size)
        result, strategy = stage(max(1, s.epochs - first), seed + 1, rest)
    else:
        result, strategy = stage(s.epochs, seed, allowed)
    if route.mode != "derivative-free":
        masked += strategy.masked_rows
        if on_device:
            device_evals += result.samples_seen * n_neurons
    counter.detach()
    counted = info["n_points"] + counter.summary()["total"]

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
        # the sweep plus every row that reached the device in training (masked batches run
        # again, so this can exceed the formula above on a device that fails)
        "device_evaluations_counted": int(counted),
        "twin_nrmse": info["nrmse"],
        "twin_failed_fraction": info["failed_fraction"],
        "noise_floor": info["noise_floor"],
        "seconds": time.perf_counter() - t0,
        "lr": lr,
    }
    if hidden != s.hidden:
        out["sizes"] = list(sizes)
    if scenario.budget is not None or scenario.seconds_per_evaluation:
        out["budget"] = scenario.budget
        out["charged_seconds"] = int(counted) * scenario.seconds_per_evaluation
        out["within_budget"] = scenario.budget is None or int(counted) <= scenario.budget
    if active is not None:
        out["recharacterize"] = active
    out.update(extra)
    return out


#: Fewest CMA-ES generations a budget-cut derivative-free route keeps (by scoring each
#: candidate on fewer samples).
_MIN_GENERATIONS = 10


def _derivative_free(
    net: DeviceNetwork,
    train: ArrayDataset,
    route: Route,
    seed: int,
    left: int | None,
    n_neurons: int,
) -> dict[str, Any]:
    """Train ``net`` in place by CMA-ES on the true device; the optimiser's record.

    Each candidate is scored on ``route.candidate_batch`` training samples, i.e.
    ``candidate_batch * n_neurons`` device evaluations; ``left`` (device evaluations the
    budget leaves, None: no limit) cuts the candidates. Where that leaves fewer than
    :data:`_MIN_GENERATIONS` generations, each candidate is scored on fewer samples instead
    (down to 8), since CMA-ES learns nothing from a handful of generations.
    """
    from quasineuron.network.modes import TrueDevice
    from quasineuron.training.derivative_free import CMAES, optimize_weights

    popsize = 32
    batch = route.candidate_batch
    candidates = route.candidates
    if left is not None:
        want = min(candidates, _MIN_GENERATIONS * popsize)
        batch = min(batch, max(left // (want * n_neurons), 8))
        candidates = min(candidates, left // (batch * n_neurons) // popsize * popsize)
    res = optimize_weights(
        net,
        train,
        optimizer=CMAES(sigma0=0.1, popsize=popsize, budget=candidates),
        mode=TrueDevice(),
        seed=seed,
        budget=candidates,
        batch_size=batch,
        progress=False,
    )
    return {
        "optimizer": {
            "name": "CMA-ES",
            "sigma0": 0.1,
            "popsize": popsize,
            "candidates": int(res.n_evaluations),
            "candidate_batch": batch,
            "device_evaluations": int(res.device_evaluations),
        }
    }


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    vals = [float(v) for v in values]
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def _skipped_entry(name: str, reason: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A route that could not run on a scenario: the documented keys, empty, and the reason."""
    return {
        "name": name,
        "skipped": reason,
        "accuracy_device_mean": None,
        "accuracy_device_std": None,
        "accuracy_twin_mean": None,
        "gap_mean": None,
        "gap_std": None,
        "outside_fraction_mean": None,
        "device_evaluations_mean": None,
        "seconds_mean": None,
        "seeds": runs,
    }


def _add_route_extras(
    entry: dict[str, Any],
    runs: list[dict[str, Any]],
    train: ArrayDataset,
    test: ArrayDataset,
    seeds: Sequence[int],
    s: _Settings,
    ideal_by_hidden: dict[int, list[float]],
) -> None:
    """Charged time for a costly device; the ideal network of the route's own shape."""
    if "charged_seconds" in runs[0]:
        entry["charged_seconds_mean"] = statistics.fmean(r["charged_seconds"] for r in runs)
        entry["budget"] = runs[0]["budget"]
    entry["device_evaluations_counted_mean"] = statistics.fmean(
        r["device_evaluations_counted"] for r in runs
    )
    if "sizes" in runs[0]:
        sizes = tuple(runs[0]["sizes"])
        if sizes[1] not in ideal_by_hidden:
            ideal_by_hidden[sizes[1]] = [_ideal(train, test, sizes, seed, s) for seed in seeds]
        m, sd = _mean_std(ideal_by_hidden[sizes[1]])
        entry["sizes"] = list(sizes)
        entry["ideal_same_shape"] = {
            "accuracy_mean": m,
            "accuracy_std": sd,
            "seeds": ideal_by_hidden[sizes[1]],
        }


def _cheapest_within_spread(entries: Sequence[dict[str, Any]]) -> str:
    """The route with the fewest device evaluations among those as accurate as the best.

    "As accurate" is within the best route's spread: a mean device accuracy at least the best
    mean minus the best route's standard deviation over seeds. (Not the larger of the two
    spreads: a route that is unreliable over seeds would then count as reaching the best.)
    The 1e-12 absorbs rounding, so that equal accuracies on the test set compare equal.
    """
    best = max(entries, key=lambda e: float(e["accuracy_device_mean"]))
    least = float(best["accuracy_device_mean"]) - float(best["accuracy_device_std"]) - 1e-12
    close = [e for e in entries if float(e["accuracy_device_mean"]) >= least]
    return str(min(close, key=lambda e: float(e["device_evaluations_mean"]))["name"])


def validation_split(train: ArrayDataset) -> tuple[ArrayDataset, ArrayDataset, tuple[int, int]]:
    """The suite's validation split: held-out training images to choose routes on.

    The held-out part starts where the last sixth of the training set starts and holds at most
    5000 images: on MNIST images 50,000-54,999, on the 1438 digits training images the last
    239. Training uses only the images before the held-out part.

    Returns:
        The training part, the held-out part and the held-out index range ``(start, stop)``.
    """
    n = len(train)
    start = n - n // 6
    stop = start + min(n // 6, 5000)
    name = train.name
    return (
        ArrayDataset(train.x[:start], train.y[:start], name=name),
        ArrayDataset(train.x[start:stop], train.y[start:stop], name=f"{name} (validation)"),
        (start, stop),
    )


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
    validation: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the suite and (with ``out``) write ``out/metrics.json``.

    Choosing a route (or any setting) for a scenario is done with ``validation=True``: the
    networks are then scored on held-out training images (see :func:`validation_split`)
    instead of the test set, which is kept for the final tables.

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
        validation: Score on the validation split of the training set, not on the test set
            (``metrics["scored_on"]`` says which).
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
    scored_on = "test"
    if validation:
        train, test, held_out = validation_split(train)
        scored_on = f"validation (training images {held_out[0]}-{held_out[1] - 1})"
    if max_train is not None:
        train = ArrayDataset(train.x[:max_train], train.y[:max_train], name=train.name)
    s = _Settings(hidden=hidden, epochs=epochs)
    sizes = (train.x.shape[1], hidden, int(train.n_classes or 10))
    ideal = [_ideal(train, test, sizes, seed, s) for seed in seeds]
    ideal_mean, ideal_std = _mean_std(ideal)
    # ideal networks of the other shapes some routes train (derivative-free: a small hidden layer)
    ideal_by_hidden: dict[int, list[float]] = {hidden: ideal}
    results = []
    for sc in chosen:
        entries = []
        for rname in sc.routes:
            runs = [run_one(sc, by_name[rname], seed, train, test, settings=s) for seed in seeds]
            skipped = [r for r in runs if "skipped" in r]
            if skipped:
                # recorded, not dropped: the reason is the result (e.g. no gradients)
                entries.append(_skipped_entry(rname, skipped[0]["skipped"], runs))
                if log is not None:
                    log(f"{sc.name:16s} {rname:30s} skipped: {skipped[0]['skipped']}")
                continue
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
            _add_route_extras(entries[-1], runs, train, test, seeds, s, ideal_by_hidden)
            if log is not None:
                log(
                    f"{sc.name:16s} {rname:30s} device {100 * acc_m:6.2f} ± {100 * acc_s:4.2f} % "
                    f"gap {gap_m:+6.2f} pp outside {entries[-1]['outside_fraction_mean']}"
                )
        ran = [e for e in entries if "skipped" not in e]
        best = max(ran, key=lambda e: float(e["accuracy_device_mean"]))
        results.append(
            {
                "name": sc.name,
                "description": sc.description,
                "recommended": sc.recommended,
                "best_route": best["name"],
                "cheapest_within_spread": _cheapest_within_spread(ran),
                **({"budget": sc.budget} if sc.budget is not None else {}),
                **(
                    {"seconds_per_evaluation": sc.seconds_per_evaluation}
                    if sc.seconds_per_evaluation
                    else {}
                ),
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
        "scored_on": scored_on,
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


def _signed(value: float, digits: int = 2) -> str:
    # a typographic minus, as in the guide's tables
    text = f"{value:+.{digits}f}"
    return text.replace("-", "\N{MINUS SIGN}")


def _evaluations(value: float) -> str:
    # counts a reader compares at a glance: exact up to 100 000, then two significant digits
    if value < 100_000:
        return f"{round(value):,}"
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _charged(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def markdown_table(metrics: dict[str, Any]) -> str:
    """The suite's results as one Markdown table, the numbers exactly as ``metrics.json`` has them.

    One row per scenario × route: device accuracy (mean ± std over seeds, %), twin accuracy,
    gap (twin minus device, pp), drive rows outside the characterised box at evaluation, device
    evaluations (with the charged time on a scenario whose evaluations are charged) and wall
    seconds per run. ★ marks the best route by mean device accuracy, ◆ the cheapest route within
    the best one's spread (``cheapest_within_spread``), *(recommended)* the scenario's
    recommended route; a route with its own network shape (derivative-free) shows the ideal
    network of that shape in brackets; a skipped route shows its reason.

    Args:
        metrics: What :func:`run_realism` returns (or its ``metrics.json``, loaded).

    Returns:
        A legend line, a blank line and the table, ending in a newline.

    Raises:
        ValueError: If ``metrics`` has no ``scenarios`` (not a realism suite's metrics).
    """
    scenarios = metrics.get("scenarios") if isinstance(metrics, dict) else None
    if not scenarios:
        raise ValueError(
            "markdown_table needs the realism suite's metrics (a dict with 'scenarios', as "
            "run_realism returns it or metrics.json holds it); got "
            f"{sorted(metrics) if isinstance(metrics, dict) else type(metrics).__name__}"
        )
    sizes = "-".join(str(n) for n in metrics.get("network", {}).get("sizes", []))
    ideals = {
        (round(100 * sc["ideal"]["accuracy_mean"], 2), round(100 * sc["ideal"]["accuracy_std"], 2))
        for sc in scenarios
    }
    if len(ideals) == 1:
        (m, sd) = next(iter(ideals))
        ideal_text = f"the ideal {sizes} MLP reached {m:.2f} ± {sd:.2f} % on every scenario"
    else:
        ideal_text = "the ideal network of each scenario is in its metrics.json entry"
    lines = [
        f"★ best route by mean device accuracy; ◆ cheapest route within the best one's spread; "
        f"{ideal_text}; a bracketed figure is the ideal network of that route's own shape.",
        "",
        "| scenario | route | device acc. (%) | twin acc. (%) | gap (pp) | outside | device evals "
        "| wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for sc in scenarios:
        first = True
        for r in sc["routes"]:
            marks = ""
            if r["name"] == sc.get("best_route"):
                marks += " ★"
            if r["name"] == sc.get("cheapest_within_spread"):
                marks += " ◆"
            if r["name"] == sc.get("recommended"):
                marks += " (recommended)"
            head = f"| {sc['name'] if first else ''} | {r['name']}{marks} |"
            first = False
            if "skipped" in r:
                # the reason up to its first colon: "device ... gives no gradients"
                lines.append(f"{head} skipped: {r['skipped'].split(':')[0]} | | | | | |")
                continue
            acc = f"{100 * r['accuracy_device_mean']:.2f} ± {100 * r['accuracy_device_std']:.2f}"
            same = r.get("ideal_same_shape")
            if same is not None and list(r.get("sizes", [])) != list(
                metrics.get("network", {}).get("sizes", [])
            ):
                acc += f" (ideal {100 * same['accuracy_mean']:.2f})"
            outside = r.get("outside_fraction_mean")
            evals = _evaluations(float(r["device_evaluations_mean"]))
            if r.get("charged_seconds_mean") is not None:
                evals += f" ({_charged(float(r['charged_seconds_mean']))})"
            lines.append(
                f"{head} {acc} | {100 * r['accuracy_twin_mean']:.2f} | "
                f"{_signed(r['gap_mean'])} ± {r['gap_std']:.2f} | "
                f"{'–' if outside is None else f'{100 * outside:.2f} %'} | {evals} | "
                f"{r['seconds_mean']:.1f} |"
            )
    return "\n".join(lines) + "\n"
