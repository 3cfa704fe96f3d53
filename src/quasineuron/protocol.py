"""The experiment protocol: test reads counted, seed families summarised, results reproduced.

A run is chosen on its validation split only. The test set is read by :func:`score_run` (and by
``quasineuron run`` at its end, through :func:`record_test_read`), and every read is recorded
in the run folder's ``scores.json`` with a ``test_reads`` count: a second read of the same run
is refused unless asked for, and then counted, so the record shows how often the test set was
seen. See docs/protocol.md.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from quasineuron._atomic import atomic_write_json
from quasineuron.errors import RunFolderError

__all__ = [
    "SCORES_FILE",
    "grid_folder",
    "grid_metrics",
    "TestReadRefused",
    "record_test_read",
    "reproduce_config",
    "score_run",
    "seed_family_metrics",
    "test_reads",
]

#: Every test-set reading of a run: ``{"test_reads": n, "readings": [...]}``.
SCORES_FILE = "scores.json"


class TestReadRefused(RunFolderError):
    """The run was already scored on the test set and another read was not asked for."""

    __test__ = False  # not a pytest test class, despite its name


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _read_scores(run: Path) -> dict[str, Any]:
    path = run / SCORES_FILE
    if not path.is_file():
        return {"test_reads": 0, "readings": []}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise RunFolderError(
            f"{path} is damaged ({exc}); it is the record of the run's test reads, restore it "
            "from a copy rather than deleting it"
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("readings"), list):
        raise RunFolderError(f"{path} is not a record of test reads; restore it from a copy")
    return doc


def test_reads(run: str | Path) -> int:
    """How many times the run in ``run`` has read the test set (0 for a run never scored)."""
    return int(_read_scores(Path(run)).get("test_reads", 0))


def record_test_read(
    run: str | Path,
    accuracy: Mapping[str, float | None],
    *,
    what: str,
    again: bool = False,
) -> dict[str, Any]:
    """Record one reading of the test set in ``run/scores.json`` (refused if one exists).

    Call it before the accuracy is shown to anyone: the reading counts even if the caller
    stops afterwards.

    Args:
        run: The run folder.
        accuracy: Test accuracy per mode (``device``, ``surrogate``, ...).
        what: What was scored (e.g. ``"network/"``), relative to the run folder.
        again: Allow a further read of a run already scored; it is counted.

    Returns:
        The updated record (``test_reads`` and the list of ``readings``).

    Raises:
        TestReadRefused: If the run was scored before and ``again`` is false.
    """
    run = Path(run)
    doc = _read_scores(run)
    n = int(doc.get("test_reads", 0))
    if n and not again:
        raise TestReadRefused(
            f"run {str(run)!r} was already scored on the test set ({n} read(s), see "
            f"{SCORES_FILE}); choices are made on the validation split, so a second read is "
            "refused: pass --again to read it anyway (the read is counted in the record)"
        )
    reading = {"time": _now(), "what": what, "accuracy": dict(accuracy), "read": n + 1}
    doc = {"test_reads": n + 1, "readings": [*doc["readings"], reading]}
    atomic_write_json(run / SCORES_FILE, doc)
    return doc


def score_run(
    run: str | Path,
    *,
    data_dir: str | Path | None = None,
    again: bool = False,
) -> dict[str, Any]:
    """Score a complete run's saved network on the test set and record the read.

    Args:
        run: A complete run folder (``status.json`` says ``complete``).
        data_dir: Folder with the MNIST files, for MNIST runs.
        again: Read the test set of a run that was scored already (counted).

    Returns:
        The reading: ``accuracy`` per mode, ``test_reads`` after it.

    Raises:
        RunFolderError: If ``run`` is not a complete run folder.
        TestReadRefused: If the run was scored before and ``again`` is false.
    """
    from quasineuron.pipeline import RUN_FILE, STATUS_FILE, score_network

    run = Path(run)
    try:
        status = json.loads((run / STATUS_FILE).read_text(encoding="utf-8")).get("status")
        record = json.loads((run / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, AttributeError):
        raise RunFolderError(
            f"{str(run)!r} is not a run folder (no readable {STATUS_FILE} and {RUN_FILE}); give "
            "the folder that `quasineuron run --out` wrote"
        ) from None
    if status != "complete":
        raise RunFolderError(
            f"run {str(run)!r} is not complete (status {status!r}); finish it with "
            "`quasineuron run CONFIG --out RUN --resume` before scoring"
        )
    if test_reads(run) and not again:  # refuse before the test set is even loaded
        record_test_read(run, {}, what="network/", again=False)
    from quasineuron.config import parse_config

    config = parse_config(record["config"], source=str(run / RUN_FILE))
    accuracy = score_network(config, run, data_dir=data_dir)
    doc = record_test_read(run, accuracy, what="network/", again=again)
    return {"accuracy": accuracy, "test_reads": doc["test_reads"]}


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n − 1; 0 for one value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def seed_family_metrics(
    name: str, per_seed: Mapping[int, Mapping[str, Any]], *, config: Mapping[str, Any]
) -> dict[str, Any]:
    """The metrics of a family of runs that differ only in their seed.

    Args:
        name: The family's name.
        per_seed: Each seed's ``metrics.json`` content.
        config: The resolved config (without the seed override).

    Returns:
        ``seeds``, ``accuracy.<mode>_mean`` and ``accuracy.<mode>_std`` (sample std over
        seeds) for every mode that all seeds scored, ``per_seed`` numbers, and ``test_reads``
        (the family's total).
    """
    seeds = sorted(per_seed)
    modes = [
        k
        for k, v in per_seed[seeds[0]]["accuracy"].items()
        if not k.endswith("_std")
        and v is not None
        and all(per_seed[s]["accuracy"].get(k) is not None for s in seeds)
    ]
    accuracy: dict[str, float] = {}
    for mode in modes:
        mean, std = _mean_std([float(per_seed[s]["accuracy"][mode]) for s in seeds])
        accuracy[f"{mode}_mean"] = mean
        accuracy[f"{mode}_std"] = std
    return {
        "name": name,
        "seeds": seeds,
        "accuracy": accuracy,
        "per_seed": {
            str(s): {"accuracy": per_seed[s]["accuracy"], "folder": f"seed-{s}"} for s in seeds
        },
        "test_reads": sum(int(per_seed[s].get("test_reads", 0)) for s in seeds),
        "std": "sample standard deviation over seeds (n - 1)",
        "config": dict(config),
    }


def grid_folder(key: str, value: Any) -> str:
    """The subfolder of one point of a grid: the key's last part and the value, e.g. ``eps-0.5``.

    Characters other than letters, digits, ``.``, ``_`` and ``-`` become ``_``, so the name is
    a plain folder name on every system.
    """
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return re.sub(r"[^A-Za-z0-9._-]", "_", f"{key.split('.')[-1]}-{text}")


def grid_metrics(
    name: str,
    key: str,
    values: Sequence[Any],
    folders: Sequence[str],
    per_value: Sequence[Mapping[str, Any]],
    *,
    config: Mapping[str, Any],
) -> dict[str, Any]:
    """The metrics of a grid: one config key varied, each value a run or a seed family.

    Args:
        name: The experiment's name.
        key: The varied dotted key (``"device.options.eps"``).
        values: The values, in the config's order.
        folders: Each value's subfolder.
        per_value: Each value's ``metrics.json`` (a seed family's, or a single run's).
        config: The resolved experiment config.

    Returns:
        ``vary`` (the key), the list of values under the key's last part (e.g. ``eps``) and
        under ``values``, ``accuracy.<mode>_mean`` / ``_std`` as lists aligned with the
        values, ``per_value`` (value, folder, seeds, mean/std and per-seed accuracies) and
        ``test_reads`` (the total). A single run counts as one seed with std 0.
    """
    points = []
    for value, folder, metrics in zip(values, folders, per_value, strict=True):
        if "per_seed" in metrics:  # a seed family
            accuracy = dict(metrics["accuracy"])
            seeds = list(metrics["seeds"])
            per_seed = {s: dict(v["accuracy"]) for s, v in metrics["per_seed"].items()}
        else:  # one run: its training seed stands for the family
            seed = int(metrics["config"]["training"]["seed"])
            seeds = [seed]
            per_seed = {str(seed): dict(metrics["accuracy"])}
            accuracy = {}
            for mode, acc in metrics["accuracy"].items():
                if acc is not None and not mode.endswith("_std"):
                    accuracy[f"{mode}_mean"], accuracy[f"{mode}_std"] = float(acc), 0.0
        points.append(
            {
                "value": value,
                "folder": folder,
                "seeds": seeds,
                "accuracy": accuracy,
                "per_seed": per_seed,
                "test_reads": int(metrics.get("test_reads", 0)),
            }
        )
    shared = [k for k in points[0]["accuracy"] if all(k in p["accuracy"] for p in points)]
    return {
        "name": name,
        "vary": key,
        key.split(".")[-1]: list(values),
        "values": list(values),
        "accuracy": {k: [p["accuracy"][k] for p in points] for k in shared},
        "per_value": points,
        "test_reads": sum(p["test_reads"] for p in points),
        "std": "sample standard deviation over seeds (n - 1)",
        "config": dict(config),
    }


#: ``--quick``: the training subset, the test subset and the per-stage budgets of a smoke run.
QUICK_TRAIN = 200
QUICK_TEST = 100
QUICK_SAMPLES = 256
#: ``--quick``: the most a stage's neuron twin may cost (drives sampled, fitting steps).
QUICK_TWIN = {"n_samples": 2000, "max_steps": 50}
#: ``--quick``: the most solver steps of a time-coupled network's simulation window. The time
#: simulation costs in proportion to its steps (400 for a window of 40 at dt = 0.1), and a smoke
#: run only has to go through every part once.
QUICK_WINDOW_STEPS = 10


def quick_config(config: Any) -> Any:
    """``config`` shrunk into a smoke run (``run --quick`` and ``reproduce --quick``).

    At most :data:`QUICK_TRAIN` training and :data:`QUICK_TEST` test images, one epoch per
    stage (or at most :data:`QUICK_SAMPLES` samples), no weight averaging, a neuron twin fitted
    on at most :data:`QUICK_TWIN` drives and steps, a time-coupled network's window cut to at
    most :data:`QUICK_WINDOW_STEPS` solver steps (same step), at most two seeds, and the first
    and last value of a grid. The
    network, its wiring and the training methods stay as they are, so the smoke run goes
    through every part the full run uses; its accuracy means nothing.

    Args:
        config: A :class:`~quasineuron.config.RunConfig`.

    Returns:
        The shrunk :class:`~quasineuron.config.RunConfig` (validated again).
    """
    from quasineuron.config import parse_config

    data = json.loads(json.dumps(config.model_dump(mode="json")))
    for key, most in (("limit_train", QUICK_TRAIN), ("limit_test", QUICK_TEST)):
        limit = data["data"].get(key)
        data["data"][key] = min(limit, most) if limit else most
    data["training"]["epochs"] = 1
    for stage in data["training"]["stages"]:
        if stage.get("method") == "recharacterize":
            continue  # trains nothing: its budget is device points, not epochs
        if stage.get("samples") is not None:
            stage["samples"] = min(stage["samples"], QUICK_SAMPLES)
        else:
            stage["epochs"] = 1
        stage["average_last"] = 1
        twin = (stage.get("options") or {}).get("neuron_twin")
        if isinstance(twin, dict):
            for key, most in QUICK_TWIN.items():
                twin[key] = min(twin.get(key, most), most)
    data["experiment"]["seeds"] = data["experiment"]["seeds"][:2]
    # a grid keeps its first and last value: the two ends are where a sweep breaks
    data["experiment"]["vary"] = {
        k: [v[0], v[-1]] if len(v) > 1 else v for k, v in data["experiment"]["vary"].items()
    }
    if data["network"].get("kind") == "wuxing":
        window = data["network"].get("window") or config.network.resolved_window.model_dump()
        window["T"] = min(window["T"], QUICK_WINDOW_STEPS * window["dt"])
        data["network"]["window"] = window
    return parse_config(data, source="--quick")


def reproduce_config(result: str | Path, *, quick: bool = False) -> Any:
    """The config of a committed result, to run it again.

    ``config.toml`` beside its ``metrics.json``, else the resolved config recorded in
    ``run.json`` or ``metrics.json``.

    Args:
        result: The result folder (or a TOML config file).
        quick: Shrink the run for a smoke test (see :func:`quick_config`; a grid keeps the
            first and last of its values).

    Raises:
        ConfigError: If the folder holds no config.
    """
    from quasineuron.config import ConfigError, load_config, parse_config

    folder = Path(result)
    if folder.is_file() and folder.suffix == ".toml":  # a config itself, e.g. an example's
        config = load_config(folder)
    elif (folder / "config.toml").is_file():
        config = load_config(folder / "config.toml")
    else:
        for name in ("run.json", "metrics.json"):
            path = folder / name
            if path.is_file():
                doc = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(doc, dict) and isinstance(doc.get("config"), dict):
                    config = parse_config(doc["config"], source=str(path))
                    break
        else:
            raise ConfigError(
                f"{folder} holds no config.toml and no run.json or metrics.json with a config; "
                "give a result folder written by `quasineuron run`"
            )
        config = _measurements_in_folder(config, folder)
    return quick_config(config) if quick else config


def _measurements_in_folder(config: Any, folder: Path) -> Any:
    """A run built from measured data reads the copy its folder keeps, when there is one."""
    m = config.device.measurements
    if m is None:
        return config
    copy = folder / "measurements" / Path(m.path).name
    if not copy.is_file():
        return config
    measurements = m.model_copy(update={"path": str(copy.resolve())})
    device = config.device.model_copy(update={"measurements": measurements})
    return config.model_copy(update={"device": device})
