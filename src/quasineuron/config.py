"""The run configuration: a TOML file validated once, at the edge.

Unknown keys are rejected with their name; every value is checked for type and range. The rest of
the library receives typed objects built from this model, never the raw dict.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "RunConfig",
    "StageConfig",
    "WindowConfig",
    "config_hash",
    "varied_config",
    "load_config",
    "parse_config",
]


class ConfigError(ValueError):
    """A configuration file is malformed; the message names the offending key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: A layer width: a positive number of neurons.
Width = Annotated[int, Field(gt=0)]

#: Old spellings that still parse, with a DeprecationWarning naming the new one.
_OLD_SPELLINGS: dict[str, str] = {
    "two_drive": "two-drive",
    "fan_in": "fan-in",
    "physics_aware": "physics-aware",
    "cross_entropy": "cross-entropy",
    "one_to_one": "one-to-one",
}

#: Old spellings of ``training.validate_on`` (a Wuxing network's time window or steady state).
_OLD_SIMULATION: dict[str, str] = {"steady": "steady-state", "time": "window"}


def _respell_config(data: dict[str, Any]) -> dict[str, Any]:
    """The config with old spellings of names replaced (each with a DeprecationWarning)."""
    data = dict(data)
    data["network"] = _respell(data.get("network"), ("connection", "wiring"), "network")
    training = _respell(data.get("training"), ("mode", "loss"), "training")
    training = _respell(training, ("validate_on",), "training", _OLD_SIMULATION)
    if isinstance(training, dict) and isinstance(training.get("stages"), list):
        training["stages"] = [
            _respell(st, ("method",), f"training.stages[{i}]")
            for i, st in enumerate(training["stages"])
        ]
    data["training"] = training
    return {k: v for k, v in data.items() if v is not None}


def _respell(
    table: Any, keys: tuple[str, ...], where: str, spellings: dict[str, str] = _OLD_SPELLINGS
) -> Any:
    """Replace old spellings of the values under ``keys`` (with a warning)."""
    if not isinstance(table, dict):
        return table
    out = dict(table)
    for key in keys:
        value = out.get(key)
        if isinstance(value, str) and value in spellings:
            new = spellings[value]
            warnings.warn(
                f"{where}.{key} = {value!r} is an old spelling; write {new!r} (the old one will "
                "stop parsing in a later version)",
                DeprecationWarning,
                stacklevel=5,  # the caller of load_config / parse_config
            )
            out[key] = new
    return out


class MeasurementsConfig(_Strict):
    """A device known only from a file of measurements (see ``load_measurements``).

    ``path`` is relative to the config file's folder; the run copies the file into its folder
    and records its SHA-256, so the run folder alone reproduces the run.
    """

    path: str = Field(description="CSV, HDF5 or NetCDF file of measurements")
    drives: tuple[str, ...] = Field(min_length=1, description="columns holding the drives")
    outputs: tuple[str, ...] = Field(min_length=1, description="columns holding the outputs")
    status: str | None = Field(None, description="optional column flagging each measurement")
    repeat: str | None = Field(None, description="optional column numbering repeated measurements")
    units: dict[str, str] = Field(default_factory=dict, description="column -> unit, e.g. 'V'")
    low: tuple[float, ...] | None = Field(
        None, description="lower corner of the domain; default the measured drives' bounding box"
    )
    high: tuple[float, ...] | None = Field(None, description="upper corner of the domain")
    delimiter: str | None = Field(None, description="CSV separator; default by suffix")

    @model_validator(mode="after")
    def _check(self) -> MeasurementsConfig:
        if (self.low is None) != (self.high is None):
            raise ValueError("give both low and high for the domain of the drives, or neither")
        if self.low is not None and self.high is not None:
            if len(self.low) != len(self.drives) or len(self.high) != len(self.drives):
                raise ValueError(
                    f"low and high need one bound per drive ({len(self.drives)}: "
                    f"{list(self.drives)}), got {list(self.low)} and {list(self.high)}"
                )
        return self


class DeviceConfig(_Strict):
    """Which device to build: a built-in name or ``module:function``, with its options.

    Or ``measurements``: a device known only from a file of measurements, which replaces the
    sweep; it has no true device, so it cannot be combined with a name or options.
    """

    name: str = "almost-neuron"
    options: dict[str, Any] = Field(default_factory=dict)
    input_clip: bool = Field(
        False, description="clip drives into the device's domain before they reach it (a limiter)"
    )
    measurements: MeasurementsConfig | None = Field(
        None, description="build the twin from measured data instead of sweeping a device"
    )

    @model_validator(mode="after")
    def _check_measurements(self) -> DeviceConfig:
        if self.measurements is None:
            return self
        # A resolved config (run.json) spells out the default name: only a changed one clashes.
        both = _changed(self, ("name", "options", "input_clip"))
        if both:
            raise ValueError(
                f"[device] gives both measurements and {both[0]} = {getattr(self, both[0])!r}; "
                "a device is either built (name, options) and swept, or known only from "
                "measurements: remove one of them"
            )
        return self


class SweepConfig(_Strict):
    """How to characterise the device."""

    sampler: Literal["auto", "grid", "sobol", "random", "lhs"] = "auto"
    points: int = Field(0, ge=0, description="0 picks a default for the device's n_in")
    batch_size: int = Field(4096, ge=1)
    workers: int = Field(0, ge=0, description="worker processes; 0 evaluates in-process")
    timeout: float | None = Field(None, gt=0, description="seconds per point; None: no limit")
    seed: int = 0
    repeats: int = Field(
        1, ge=1, description="evaluations per point; > 1 measures the device's noise floor"
    )


class TwinConfig(_Strict):
    """How to fit the surrogate."""

    kind: Literal["auto", "mlp", "spline"] = "auto"
    hidden: tuple[Width, ...] = (64, 64)
    seed: int = 0
    policy: Literal["warn", "clamp", "raise"] = Field(
        "warn", description="what the twin does with drives outside its characterised domain"
    )
    compile: bool = Field(False, description="torch.compile the twin (faster on large runs)")


class DataConfig(_Strict):
    """Which data set to train on."""

    name: Literal["mnist", "digits", "xor"] = "digits"
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    limit_train: int | None = Field(None, ge=10)
    limit_test: int | None = Field(
        None, ge=10, description="score on a stratified subset of this many test rows (smoke runs)"
    )
    seed: int = 0


def _changed(model: BaseModel, names: tuple[str, ...]) -> list[str]:
    """Which of ``names`` hold a value other than their default.

    A resolved config (every default written out, as in ``run.json``) parses again: a key
    that only repeats its default is not an option the other network kind would misread.
    """
    fields = type(model).model_fields
    return [
        n for n in names if getattr(model, n) != fields[n].get_default(call_default_factory=True)
    ]


class WindowConfig(_Strict):
    """The simulation window of a time-coupled network: part of the saved model.

    A network trained with one window and scored with another is another model, so the window
    is stored with the weights and every score uses it.
    """

    T: float = Field(30.0, gt=0.0, description="length of the window [0, T]")
    dt: float = Field(0.05, gt=0.0, description="fixed solver step")
    solver: Literal["heun", "rk4", "euler"] = "heun"
    readout: Literal["mean", "final"] = Field(
        "mean", description="score: time-mean of the read-out over the window, or its end value"
    )
    input_scale: float = Field(1.0, description="pixel drive u = input_scale * x")

    @model_validator(mode="after")
    def _check(self) -> WindowConfig:
        if self.dt > self.T:
            raise ValueError(f"dt = {self.dt} is longer than the window T = {self.T}")
        return self


#: Fields of ``[network]`` that only a device network reads, and those only a Wuxing one reads.
_DEVICE_ONLY = ("hidden", "connection", "link_ratio", "readout_affine", "bounded_drives")
_WUXING_ONLY = ("model", "sizes", "receiving", "c0", "window")


class NetworkConfig(_Strict):
    """The network: device instances behind connections, or a Wuxing network.

    ``kind = "device"``: device instances behind trainable connections; ``kind = "wuxing"``:
    a layered Wuxing network simulated in time.
    Input and output sizes of a device network come from the data; a Wuxing network's layer
    sizes come from ``model`` (``MODEL1``/``MODEL2``) or ``sizes``, and must match the data.
    """

    kind: Literal["device", "wuxing"] = "device"
    # device networks
    hidden: tuple[Width, ...] = (100,)
    connection: Literal["auto", "linear", "two-drive", "quadratic", "raw"] = "auto"
    wiring: Literal["dense", "sparse", "fan-in", "one-to-one", "adder"] = "dense"
    link_ratio: float = Field(1.0, gt=0.0, le=1.0)
    fan_in: int = Field(4, ge=1)
    readout_affine: bool = True
    bounded_drives: Literal["none", "output", "all"] = Field(
        "none",
        description="layers whose drives are squashed smoothly into the characterised domain",
    )
    # Wuxing networks
    model: Literal["MODEL1", "MODEL2"] | None = None
    sizes: tuple[Width, ...] = Field((), description="layer sizes, input first (or model)")
    receiving: int = Field(3, ge=1, le=4)
    c0: float = 1.0
    window: WindowConfig | None = None
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> NetworkConfig:
        if self.kind == "device":
            stray = _changed(self, _WUXING_ONLY)
            if stray:
                raise ValueError(
                    f"network.{stray[0]} is an option of a Wuxing network; set "
                    "network.kind = 'wuxing', or remove it for a device network"
                )
            if self.wiring in ("one-to-one", "adder"):
                raise ValueError(
                    f"wiring={self.wiring!r} is a Wuxing wiring; a device network takes "
                    "'dense', 'sparse' or 'fan-in'"
                )
            if self.wiring == "sparse" and self.link_ratio == 1.0:
                raise ValueError("wiring='sparse' needs link_ratio < 1; use wiring='dense' for 1.0")
            return self
        if "wiring" not in self.model_fields_set:
            # a Wuxing network's default wiring is the paper's (frozen model: set once, here)
            object.__setattr__(self, "wiring", "one-to-one")
        stray = _changed(self, _DEVICE_ONLY)
        if stray:
            raise ValueError(
                f"network.{stray[0]} is an option of a device network; a Wuxing network is "
                "described by model (or sizes), wiring, fan_in, receiving, c0 and [network.window]"
            )
        if (self.model is None) == (not self.sizes):
            raise ValueError(
                "a Wuxing network needs exactly one of model = 'MODEL1' | 'MODEL2' or sizes = "
                "[n_in, ..., n_out]"
            )
        if self.sizes and len(self.sizes) < 2:
            raise ValueError(f"network.sizes needs at least 2 layers, got {list(self.sizes)}")
        if self.wiring not in ("one-to-one", "adder"):
            raise ValueError(
                f"wiring={self.wiring!r} is a device-network wiring; a Wuxing network takes "
                "'one-to-one' (the paper's) or 'adder' (with fan_in)"
            )
        if self.wiring == "one-to-one" and _changed(self, ("fan_in",)):
            raise ValueError("network.fan_in needs wiring = 'adder'")
        return self

    @property
    def resolved_window(self) -> WindowConfig:
        """The window (the default one when none is given)."""
        return self.window if self.window is not None else WindowConfig()


#: Wuxing training methods: the paper's methods 1 and 2, method 2 with each reversed neuron
#: linearised about its operating point, mixed, backprop through time and through the steady
#: state.
WUXING_METHODS = ("method1", "method2", "method2-operating", "mixed", "bptt", "backprop-steady")


#: Options of a ``method = "recharacterize"`` stage: new device evaluations, training samples
#: whose drives are drawn from, and the refit twin's MLP settings.
RECHARACTERIZE_OPTIONS = ("points", "n_samples", "hidden", "max_steps")


class StageConfig(_Strict):
    """One stage of training, started from where the previous stage ended.

    The budget is ``epochs`` or ``samples`` (exactly one; never wall-clock time).
    """

    method: (
        Literal[
            "surrogate",
            "physics-aware",
            "direct",
            "device",
            "method1",
            "method2",
            "method2-operating",
            "mixed",
            "bptt",
            "backprop-steady",
            "recharacterize",
        ]
        | None
    ) = Field(None, description="training method; default: training.mode / bptt")
    epochs: int | None = Field(None, ge=1)
    samples: int | None = Field(None, ge=1)
    keep: Literal["best", "last", "best-or-start"] = Field(
        "best",
        description="the stage's weights: its best epoch on validation, its last, or its best "
        "epoch unless the network it started from scores higher (then the stage is undone)",
    )
    average_last: int = Field(
        1, ge=1, description="average the weights of the last k epochs (1: no averaging)"
    )
    batch_size: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0.0)
    options: dict[str, Any] = Field(
        default_factory=dict, description="options of the method (e.g. eta, kt, estimate)"
    )

    @model_validator(mode="after")
    def _check(self) -> StageConfig:
        if self.method == "recharacterize":
            # not a training stage: its budget is device evaluations (options.points)
            if self.epochs is not None or self.samples is not None:
                raise ValueError(
                    "a recharacterize stage sweeps the device and refits the twin; it takes no "
                    "epochs or samples: give the number of new device evaluations as "
                    "options = { points = N }"
                )
            unknown = sorted(set(self.options) - set(RECHARACTERIZE_OPTIONS))
            if unknown:
                raise ValueError(
                    f"unknown option(s) {unknown} of a recharacterize stage; it takes "
                    f"{list(RECHARACTERIZE_OPTIONS)}"
                )
            return self
        if (self.epochs is None) == (self.samples is None):
            raise ValueError(
                "a stage needs exactly one budget: epochs = N or samples = N (never wall-clock "
                "time)"
            )
        if self.epochs is not None and self.average_last > self.epochs:
            raise ValueError(
                f"average_last = {self.average_last} needs at least that many epochs, got "
                f"epochs = {self.epochs}"
            )
        return self


class TrainingConfig(_Strict):
    """How to train the connection weights."""

    mode: Literal["surrogate", "physics-aware", "direct", "device"] = "surrogate"
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    optimizer: Literal["adam", "sgd"] = "adam"
    schedule: Literal["none", "cosine"] = "cosine"
    loss: Literal["cross-entropy", "mse"] = "cross-entropy"
    patience: int | None = Field(None, ge=1)
    seed: int = 0
    validate_on: Literal["steady-state", "window"] = Field(
        "steady-state",
        description="Wuxing networks: validate on the steady state (cheap) or the time "
        "simulation over the window",
    )
    domain_penalty: float = Field(
        0.0, ge=0.0, description="weight of the penalty on drives outside the twin's domain"
    )
    nonfinite: Literal["error", "mask"] = Field(
        "error", description="non-finite device outputs: stop with an error, or mask the samples"
    )
    monitor_domain: bool = Field(
        True, description="record the out-of-domain fraction of the drives every epoch"
    )
    stages: tuple[StageConfig, ...] = ()


class VariabilityConfig(_Strict):
    """Device-to-device spread and output noise applied when scoring on the true device."""

    gain_std: float = Field(0.0, ge=0.0)
    offset_std: float = Field(0.0, ge=0.0)
    input_gain_std: float = Field(0.0, ge=0.0)
    noise_std: float = Field(0.0, ge=0.0)
    seed: int = 0


class EvaluationConfig(_Strict):
    """What to score at the end (the test set is scored once, here)."""

    modes: tuple[Literal["surrogate", "device", "physics-aware", "direct"], ...] = (
        "surrogate",
        "device",
    )
    baseline_mlp: bool = True
    baseline: Literal["mlp", "same-wiring", "both"] = Field(
        "mlp",
        description="the baseline trained beside the network: a dense MLP of the same shape "
        "(baseline_mlp), one whose units see the same inputs as the device network's neurons "
        "(baseline_same_wiring), or both",
    )
    variability: VariabilityConfig | None = None
    batch_size: int = Field(1024, ge=1)
    chemistry: bool = Field(
        False,
        description="also compile the trained network of reaction neurons into one mass-action "
        "network and score it at steady state (accuracy.chemistry, metrics.chemistry)",
    )


class ExperimentConfig(_Strict):
    """Repeats of the whole run: one per seed (each sets the data, network and training seeds).

    The sweep, the twin, the device's options and ``evaluation.variability`` keep their own
    seeds, so the runs of a family share one characterisation (docs/protocol.md).
    """

    seeds: tuple[int, ...] = ()
    vary: dict[str, tuple[Any, ...]] = Field(
        default_factory=dict,
        description="a grid of runs: one dotted config key -> the list of values it takes",
    )

    @model_validator(mode="after")
    def _check(self) -> ExperimentConfig:
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"experiment.seeds repeats a seed: {list(self.seeds)}")
        if len(self.vary) > 1:
            # One key keeps the family's metrics a plain table (value -> mean ± std); a
            # product of keys would need a nested record nobody has asked for yet.
            raise ValueError(
                f"experiment.vary names {len(self.vary)} keys {sorted(self.vary)}; vary one key "
                "per experiment (run a second experiment for a second key)"
            )
        for key, values in self.vary.items():
            if not values:
                raise ValueError(f"experiment.vary[{key!r}] is empty; give at least one value")
            texts = [json.dumps(v, sort_keys=True) for v in values]
            if len(set(texts)) != len(texts):
                raise ValueError(f"experiment.vary[{key!r}] repeats a value: {list(values)}")
            if key.split(".")[0] in ("experiment", "name"):
                raise ValueError(
                    f"experiment.vary cannot vary {key!r}; vary a key of [device], [sweep], "
                    "[twin], [data], [network], [training] or [evaluation] (seeds go in "
                    "experiment.seeds)"
                )
        return self


class RunConfig(_Strict):
    """A whole pipeline run: device → sweep → twin → network → training → evaluation → report."""

    name: str = "run"
    device: DeviceConfig = DeviceConfig()
    sweep: SweepConfig = SweepConfig()
    twin: TwinConfig = TwinConfig()
    data: DataConfig = DataConfig()
    network: NetworkConfig = NetworkConfig()
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    experiment: ExperimentConfig = ExperimentConfig()

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        for key, values in self.experiment.vary.items():
            for value in values:
                # each point of the grid must be a valid config itself: a misspelt key or a
                # bad value stops the experiment here, not after the first points have run
                varied_config(self, key, value)
        if self.network.kind == "wuxing":
            stray = _changed(self, ("device", "sweep", "twin"))
            if stray:
                raise ValueError(
                    f"[{stray[0]}] describes a device network's neuron; a Wuxing network has its "
                    "own neurons: remove the section or set network.kind = 'device'"
                )
            for i, st in enumerate(self.training.stages):
                if st.method is not None and st.method not in WUXING_METHODS:
                    raise ValueError(
                        f"training.stages[{i}].method = {st.method!r} is a device-network mode; "
                        f"a Wuxing network trains with one of {list(WUXING_METHODS)}"
                    )
            bad = [m for m in self.evaluation.modes if m not in ("surrogate", "device")]
            if bad:
                raise ValueError(
                    f"evaluation.modes {bad}: a Wuxing network is scored on 'device' (the time "
                    "simulation) and 'surrogate' (the steady state)"
                )
        else:
            if self.device.measurements is not None:
                _check_measured_only(self)
            for i, st in enumerate(self.training.stages):
                if st.method in WUXING_METHODS:
                    raise ValueError(
                        f"training.stages[{i}].method = {st.method!r} trains a Wuxing network; "
                        "a device network trains with surrogate, physics-aware, direct or device"
                    )
                if st.options and st.method != "recharacterize":
                    raise ValueError(
                        f"training.stages[{i}].options are options of a Wuxing method; a device "
                        "network's stage takes method, epochs, keep, average_last, batch_size "
                        "and lr"
                    )
        return self

    @model_validator(mode="after")
    def _check_chemistry(self) -> RunConfig:
        if not self.evaluation.chemistry:
            return self
        from quasineuron.chemistry.score import CHEMISTRY_ACTIVATIONS

        if self.network.kind != "device" or self.device.name not in CHEMISTRY_ACTIVATIONS:
            raise ValueError(
                f"evaluation.chemistry compiles a network of reaction neurons; device "
                f"{self.device.name!r} has no chemistry: use one of "
                f"{sorted(CHEMISTRY_ACTIVATIONS)} or set evaluation.chemistry = false"
            )
        if self.network.readout_affine or self.network.connection not in ("auto", "linear"):
            raise ValueError(
                "evaluation.chemistry needs network.readout_affine = false (the class scores are "
                "the output species' concentrations) and network.connection = 'linear' (each "
                f"neuron's drive is one weighted sum); got readout_affine = "
                f"{self.network.readout_affine} and connection = {self.network.connection!r}"
            )
        if self.data.name == "xor":
            raise ValueError(
                "evaluation.chemistry needs inputs >= 0 (they are concentrations); the xor data "
                "has negative inputs: use data.name = 'digits' or 'mnist'"
            )
        return self

    def stages(self) -> tuple[StageConfig, ...]:
        """The stages to run: the declared ones, or one stage built from ``[training]``."""
        if self.training.stages:
            return self.training.stages
        keep: Literal["best", "last", "best-or-start"] = (
            "best" if self.training.patience else "last"
        )
        if self.network.kind == "wuxing":
            keep = "best"
        return (StageConfig(epochs=self.training.epochs, keep=keep),)


def varied_config(config: RunConfig, key: str, value: Any) -> RunConfig:
    """``config`` with the dotted ``key`` set to ``value`` (and no ``experiment.vary``).

    Args:
        config: The experiment's config.
        key: A dotted key such as ``"device.options.eps"``; every part but the last must
            exist, and the last must exist unless its parent is a free table (``options``).
        value: The value the key takes.

    Raises:
        ValueError: If the key does not name a config entry, or the value is not valid there.
    """
    data = json.loads(json.dumps(config.model_dump(mode="json")))
    data["experiment"]["vary"] = {}
    parts = key.split(".")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node, dict) or part not in node or not isinstance(node[part], dict):
            raise ValueError(
                f"experiment.vary key {key!r}: {'.'.join(parts[: i + 1])!r} is not a table of "
                "the config; write the full dotted path, e.g. 'device.options.eps'"
            )
        node = node[part]
    free = len(parts) >= 2 and parts[-2] == "options"
    if parts[-1] not in node and not free:
        raise ValueError(
            f"experiment.vary key {key!r} names no config entry; check its spelling (known in "
            f"this table: {sorted(node)})"
        )
    node[parts[-1]] = value
    try:
        return parse_config(data, source=f"experiment.vary {key} = {value!r}")
    except ConfigError as exc:
        raise ValueError(str(exc).replace("\n", "; ")) from None


def _check_measured_only(config: RunConfig) -> None:
    """Measured data has no true device: only the twin can train or be scored."""
    methods = [config.training.mode] + [
        st.method for st in config.training.stages if st.method is not None
    ]
    bad = [m for m in methods if m != "surrogate"]
    if bad:
        raise ValueError(
            f"training uses {bad[0]!r}, which needs the true device, but [device] is known only "
            "from measurements; train with mode = 'surrogate' (through the twin)"
        )
    if config.evaluation.variability is not None:
        raise ValueError(
            "evaluation.variability perturbs the true device, but [device] is known only from "
            "measurements; remove [evaluation.variability]"
        )


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"  unknown key '{key}': remove it or check its spelling")
        elif err["type"] == "value_error":
            msg = str(err["msg"]).removeprefix("Value error, ")
            lines.append(f"  {key or '(top level)'}: {msg}")
        else:
            lines.append(f"  {key}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def parse_config(data: dict[str, Any], *, source: str = "<dict>") -> RunConfig:
    """Validate a config dict.

    Raises:
        ConfigError: Naming every unknown key and every bad value.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"invalid configuration in {source}: expected a table, got {data!r}")
    data = _respell_config(data)
    try:
        text = json.dumps(data, allow_nan=True)
    except (TypeError, ValueError) as exc:  # e.g. a TOML date, which no field accepts
        raise ConfigError(f"invalid configuration in {source}: {exc}") from None
    try:
        # Strict: no silent coercion ("2" is not an int, true is not an int). Validated as
        # JSON on purpose: there strict mode still accepts an int for a float field and an
        # array for a tuple, as a TOML file writes them.
        return RunConfig.model_validate_json(text, strict=True)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None


def config_hash(config: RunConfig) -> str:
    """SHA-256 of the resolved configuration (every default filled in), as hex.

    Two configs that run the same pipeline have the same hash, however their files were
    written (key order, defaults spelled out or left out). A file of measurements counts by
    its content (its SHA-256), not by where it lies, so a run moved to another folder or
    machine hashes the same, and an edited file does not.
    """
    data = config.model_dump(mode="json")
    m = config.device.measurements
    if m is not None:
        data["device"]["measurements"]["path"] = _measurements_digest(m.path)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _measurements_digest(path: str) -> str:
    """``sha256:<hex>`` of the measurements file, or its name when it cannot be read."""
    try:
        return "sha256:" + hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest()
    except OSError:
        # a missing file stops the run when it is read, with its own message; here only the
        # name is left to tell two configs apart
        return "missing:" + Path(path).name


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a TOML run configuration.

    Raises:
        ConfigError: If the file is missing, not TOML, or fails validation.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a folder; give the TOML file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text (UTF-8 TOML) file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    config = parse_config(data, source=str(path))
    m = config.device.measurements
    if m is not None and not Path(m.path).expanduser().is_absolute():
        # relative to the config file's folder, not to where the command runs
        where = str((path.parent / Path(m.path).expanduser()).resolve())
        device = config.device.model_copy(
            update={"measurements": m.model_copy(update={"path": where})}
        )
        config = config.model_copy(update={"device": device})
    return config
