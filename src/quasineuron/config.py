"""The run configuration: a TOML file validated once, at the edge.

Unknown keys are rejected with their name; every value is checked for type and range. The rest of
the library receives typed objects built from this model, never the raw dict.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = ["ConfigError", "RunConfig", "config_hash", "load_config", "parse_config"]


class ConfigError(ValueError):
    """A configuration file is malformed; the message names the offending key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: A layer width: a positive number of neurons.
Width = Annotated[int, Field(gt=0)]


class DeviceConfig(_Strict):
    """Which device to build: a built-in name or ``module:function``, with its options."""

    name: str = "almost-neuron"
    options: dict[str, Any] = Field(default_factory=dict)
    input_clip: bool = Field(
        False, description="clip drives into the device's domain before they reach it (a limiter)"
    )


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
    seed: int = 0


class NetworkConfig(_Strict):
    """The network of device instances (input and output sizes come from the data)."""

    hidden: tuple[Width, ...] = (100,)
    connection: Literal["auto", "linear", "two-drive", "quadratic", "raw"] = "auto"
    wiring: Literal["dense", "sparse", "fan-in"] = "dense"
    link_ratio: float = Field(1.0, gt=0.0, le=1.0)
    fan_in: int = Field(4, ge=1)
    readout_affine: bool = True
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> NetworkConfig:
        if self.wiring == "sparse" and self.link_ratio == 1.0:
            raise ValueError("wiring='sparse' needs link_ratio < 1; use wiring='dense' for 1.0")
        return self


class TrainingConfig(_Strict):
    """How to train the connection weights."""

    mode: Literal["surrogate", "physics-aware", "direct", "device"] = "surrogate"
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    optimizer: Literal["adam", "sgd"] = "adam"
    schedule: Literal["none", "cosine"] = "cosine"
    loss: Literal["cross_entropy", "mse"] = "cross_entropy"
    patience: int | None = Field(None, ge=1)
    seed: int = 0


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
    variability: VariabilityConfig | None = None
    batch_size: int = Field(1024, ge=1)


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


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"  unknown key '{key}': remove it or check its spelling")
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
    written (key order, defaults spelled out or left out).
    """
    text = json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


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
    return parse_config(data, source=str(path))
