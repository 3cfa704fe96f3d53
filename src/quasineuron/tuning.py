"""Hyperparameter search with Optuna: layer sizes, learning rate and the device's ε.

Needs the optional extra ``[tune]`` (``pip install optuna``). The study is stored in a SQLite
file, ``<store>/study.db``, so a search can be resumed, extended or inspected later
(``optuna-dashboard sqlite:///<store>/study.db``).

Akiba et al., "Optuna: a next-generation hyperparameter optimization framework", KDD 2019.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from quasineuron.data.dataset import ArrayDataset
from quasineuron.devices.base import AbstractDevice
from quasineuron.network.connections import AbstractConnection, Linear
from quasineuron.network.modes import AbstractMode, Direct
from quasineuron.network.network import DeviceNetwork
from quasineuron.training.config import Adam
from quasineuron.training.loop import train

__all__ = ["SearchSpace", "TuneResult", "tune"]


@dataclass(frozen=True)
class SearchSpace:
    """What a search varies.

    Args:
        widths: Choices of hidden-layer width.
        n_hidden: Smallest and largest number of hidden layers (0 allowed).
        lr: Learning-rate range, searched on a log scale.
        eps: Range of the device parameter ε passed to the device factory, or None to keep
            the factory's default (then a fixed device may be given instead of a factory).
    """

    widths: tuple[int, ...] = (8, 16, 32, 64)
    n_hidden: tuple[int, int] = (1, 2)
    lr: tuple[float, float] = (1e-3, 1e-1)
    eps: tuple[float, float] | None = (0.0, 0.5)

    def __post_init__(self) -> None:
        if not self.widths or any(not isinstance(w, int) or w < 1 for w in self.widths):
            raise ValueError(f"SearchSpace.widths must be positive ints, got {self.widths!r}")
        lo, hi = self.n_hidden
        if not (isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi):
            raise ValueError(
                "SearchSpace.n_hidden must be (low, high) with 0 <= low <= high, got "
                f"{self.n_hidden!r}"
            )
        if not (0 < self.lr[0] <= self.lr[1] and math.isfinite(self.lr[1])):
            raise ValueError(
                f"SearchSpace.lr must be (low, high) with 0 < low <= high, got {self.lr!r}"
            )
        if self.eps is not None and not (math.isfinite(self.eps[0]) and self.eps[0] <= self.eps[1]):
            raise ValueError(f"SearchSpace.eps must be None or (low, high), got {self.eps!r}")


@dataclass(frozen=True)
class TuneResult:
    """The best trial of a study.

    Args:
        best_params: Parameters of the best trial (``lr``, ``n_hidden``, ``width_<i>``, ``eps``).
        best_value: Its validation accuracy.
        n_trials: Trials finished in the study (including earlier runs of the same study).
        storage: The study's SQLite URL.
        study_name: The study's name inside the storage.
    """

    best_params: dict[str, Any]
    best_value: float
    n_trials: int
    storage: str
    study_name: str


def tune(
    device: AbstractDevice | Callable[[float], AbstractDevice],
    train_data: ArrayDataset,
    val_data: ArrayDataset,
    *,
    store: str | Path,
    space: SearchSpace = SearchSpace(),
    n_trials: int = 20,
    epochs: int = 5,
    batch_size: int = 64,
    mode: AbstractMode = Direct(),  # noqa: B008 - frozen dataclass
    connection: AbstractConnection = Linear(),  # noqa: B008 - frozen dataclass
    seed: int = 0,
    study_name: str = "quasineuron",
    timeout: float | None = None,
) -> TuneResult:
    """Search sizes, learning rate and device ε for the best validation accuracy.

    Each trial builds ``DeviceNetwork(device(eps), (n_features, *hidden, n_classes))``, trains
    it with Adam for ``epochs`` in ``mode`` and scores ``val_data`` in the same mode. Trials
    are sampled by Optuna's TPE sampler seeded with ``seed``; the study lives in
    ``<store>/study.db`` and a second call with the same ``store`` and ``study_name`` adds
    trials to it.

    Args:
        device: A factory ``eps -> device`` (e.g. ``lambda eps: almost_neuron(eps)``), or a
            fixed device when ``space.eps`` is None.
        train_data: Training data (labels).
        val_data: Validation data scored after training.
        store: Folder of the SQLite study file, created if missing.
        space: The search space.
        n_trials: Trials to run in this call.
        epochs: Training epochs per trial.
        batch_size: Training batch size.
        mode: Training and scoring mode. Modes that need a twin use the device itself as its
            twin, so they suit differentiable devices; for a black box, train a twin first.
        connection: Connection of every layer, e.g. ``TwoDrive()`` for ``almost_neuron``.
        seed: Seed of the sampler, of the networks' weights and of the batch order.
        study_name: Name of the study inside the storage.
        timeout: Stop starting new trials after this many seconds.

    Returns:
        The best trial and where the study is stored.

    Raises:
        ImportError: If Optuna is not installed.
        ValueError: If ``space.eps`` is set but ``device`` is not a factory.
    """
    try:
        import optuna
    except ImportError as exc:
        raise ImportError(
            "tune() needs Optuna: pip install 'quasineuron[tune]' (or pip install optuna)"
        ) from exc
    if isinstance(device, AbstractDevice):
        if space.eps is not None:
            raise ValueError(
                "space.eps is searched but device is a fixed device; pass a factory "
                "eps -> device, or SearchSpace(eps=None)"
            )
        factory: Callable[[float], AbstractDevice] = lambda _eps: device  # noqa: E731
    elif callable(device):
        factory = device
    else:
        raise TypeError(f"device must be a device or a factory eps -> device, got {device!r}")
    if not (train_data.is_classification and val_data.is_classification):
        raise ValueError("tune() maximises accuracy and needs labelled data (integer y)")
    n_classes = int(max(train_data.y.max(), val_data.y.max())) + 1

    folder = Path(store)
    folder.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{(folder / 'study.db').resolve()}"

    def objective(trial: Any) -> float:
        lr = trial.suggest_float("lr", *space.lr, log=True)
        n_hidden = trial.suggest_int("n_hidden", *space.n_hidden)
        hidden = [
            trial.suggest_categorical(f"width_{i}", list(space.widths)) for i in range(n_hidden)
        ]
        eps = trial.suggest_float("eps", *space.eps) if space.eps is not None else None
        dev = factory(eps) if eps is not None else factory(0.0)
        sizes = (train_data.n_features, *hidden, n_classes)
        twin = dev if mode.needs_twin else None
        net = DeviceNetwork(dev, sizes, twin=twin, connection=connection, seed=seed + trial.number)
        train(
            net,
            train_data,
            mode=mode,
            epochs=epochs,
            batch_size=batch_size,
            optimizer=Adam(lr=lr),
            seed=seed,
            progress=False,
        )
        with torch.no_grad():
            out = net(val_data.x.to(net.dtype), mode=mode)
        return (out.argmax(dim=1) == val_data.y).double().mean().item()

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=study_name,
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=seed),
            load_if_exists=True,
        )
        study.optimize(objective, n_trials=n_trials, timeout=timeout)
    finally:
        optuna.logging.set_verbosity(verbosity)
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    return TuneResult(
        best_params=dict(study.best_params),
        best_value=float(study.best_value),
        n_trials=len(finished),
        storage=storage,
        study_name=study_name,
    )
