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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quasineuron._atomic import atomic_write_json
from quasineuron.errors import NotReproducibleError, RunFolderError

__all__ = [
    "REPRODUCE_FILE",
    "SCORES_FILE",
    "ReproduceEntry",
    "grid_folder",
    "grid_metrics",
    "TestReadRefused",
    "record_test_read",
    "reproduce_commands",
    "reproduce_config",
    "reproduce_entry",
    "repository_root",
    "run_reproduce",
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
        seeds) for every mode that all seeds scored, ``per_seed`` numbers (with each seed's
        chemistry agreement when the runs scored a compiled chemistry, and the family's
        ``chemistry_agreement_min``), ``twin`` (the twin's fidelity record when every seed
        fitted the same twin, as the sweep and the twin do not take the family's seed; each
        seed's own otherwise, in ``per_seed``), and ``test_reads`` (the family's total).
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
    family: dict[str, Any] = {}
    if all("chemistry" in per_seed[s] for s in seeds):  # evaluation.chemistry
        family["chemistry_agreement_min"] = min(
            float(per_seed[s]["chemistry"]["agreement"]) for s in seeds
        )
    twins = [per_seed[s].get("twin") for s in seeds]
    shared_twin = twins[0] is not None and all(t == twins[0] for t in twins)
    if shared_twin:
        family["twin"] = twins[0]
    return {
        "name": name,
        "seeds": seeds,
        "accuracy": accuracy,
        **family,
        "per_seed": {str(s): _seed_entry(s, per_seed[s], twin=not shared_twin) for s in seeds},
        "test_reads": sum(int(per_seed[s].get("test_reads", 0)) for s in seeds),
        "std": "sample standard deviation over seeds (n - 1)",
        "config": dict(config),
    }


#: Per-seed numbers of a run's ``chemistry`` record that a family's metrics carry.
_CHEMISTRY_KEYS = ("agreement", "max_abs_output_difference", "accuracy_closed_form", "n_test")


def _seed_entry(seed: int, metrics: Mapping[str, Any], *, twin: bool) -> dict[str, Any]:
    """One seed's line in a family's ``per_seed``.

    Accuracy, folder, chemistry agreement, and the seed's twin record when ``twin`` (the
    seeds fitted different twins).
    """
    entry: dict[str, Any] = {"accuracy": metrics["accuracy"], "folder": f"seed-{seed}"}
    if twin and metrics.get("twin") is not None:
        entry["twin"] = metrics["twin"]
    if "chemistry" in metrics:
        entry["chemistry"] = {k: metrics["chemistry"][k] for k in _CHEMISTRY_KEYS}
    return entry


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
#: ``--quick``: the most sweep points. An MLP twin's fit costs in proportion to the points (a
#: 128-128 twin on 16,384 points takes many minutes on 2 cores), and a smoke run only has to
#: fit one; a sweep left at its default size (``points = 0``) is kept.
QUICK_SWEEP_POINTS = 512


def quick_config(config: Any) -> Any:
    """``config`` shrunk into a smoke run (``run --quick`` and ``reproduce --quick``).

    At most :data:`QUICK_TRAIN` training and :data:`QUICK_TEST` test images, one epoch per
    stage (or at most :data:`QUICK_SAMPLES` samples), a sweep of at most
    :data:`QUICK_SWEEP_POINTS` points, no weight averaging, a neuron twin fitted
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
    data["sweep"]["points"] = min(data["sweep"]["points"], QUICK_SWEEP_POINTS)
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


# --------------------------------------------------------------------------------------------
# Reproduce entries: how each committed result runs again, in full and as a smoke run
# --------------------------------------------------------------------------------------------

#: The file beside a result's ``metrics.json`` that says how to run it again (see
#: :func:`reproduce_entry`); a result made by ``quasineuron run`` needs none.
REPRODUCE_FILE = "reproduce.json"

_ENTRY_KEYS = {"command", "quick", "metrics", "expect", "needs", "not_in_ci", "not_reproducible"}
#: What a command may need beyond the package: the MNIST files (``--data-dir``) or ngspice.
NEEDS = ("mnist", "ngspice")


@dataclass(frozen=True)
class ReproduceEntry:
    """How a committed result runs again.

    Either ``config`` (a run of the run protocol: :func:`reproduce_config` and
    ``run_pipeline``) or ``command``/``quick`` (command lines run in order from the repository
    root), or neither, with ``not_reproducible`` saying why.

    Attributes:
        folder: The result folder.
        config: The result's run config (None for a result made by a script).
        command: The full form: command lines with ``{out}`` and ``{data_dir}`` placeholders.
        quick: The smoke form (same placeholders), or None.
        metrics: Where the run writes its ``metrics.json``, relative to ``{out}``.
        expect: Dotted keys the quick form's ``metrics.json`` must hold.
        needs: What it needs beyond the package (:data:`NEEDS`).
        not_in_ci: Why the quick form is not run in CI (a timing, a GPU), or None.
        not_reproducible: Why the result cannot be run again, or None.
    """

    folder: Path
    config: Any = None
    command: tuple[str, ...] = ()
    quick: tuple[str, ...] | None = None
    metrics: str = "metrics.json"
    expect: tuple[str, ...] = ("accuracy",)
    needs: tuple[str, ...] = ()
    not_in_ci: str | None = None
    not_reproducible: str | None = None


def _lines(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise RunFolderError(f"{what} must be a command line or a list of them, got {value!r}")
    return tuple(value)


def reproduce_entry(result: str | Path) -> ReproduceEntry:
    """How the committed result in ``result`` runs again.

    ``reproduce.json`` when the folder has one: ``command`` (a command line or a list, run in
    order from the repository root, with ``{out}`` and ``{data_dir}`` placeholders), ``quick``
    (the smoke form, or null), ``metrics`` (where the run writes its metrics, relative to
    ``{out}``; default ``metrics.json``), ``expect`` (keys the smoke form's metrics must hold;
    default ``["accuracy"]``), ``needs`` (``mnist``, ``ngspice``), ``not_in_ci`` (why the
    smoke form is not run in CI) or, instead of the commands, ``not_reproducible`` (why the
    result cannot be run again). Without the file, the config stored with the result (see
    :func:`reproduce_config`).

    Args:
        result: The result folder.

    Returns:
        The folder's :class:`ReproduceEntry`.

    Raises:
        RunFolderError: If ``reproduce.json`` is malformed, or the folder has neither it nor a
            config.
    """
    from quasineuron.config import ConfigError

    folder = Path(result)
    path = folder / REPRODUCE_FILE
    if not path.is_file():
        try:
            config = reproduce_config(folder)
        except ConfigError:
            raise RunFolderError(
                f"{folder} holds no {REPRODUCE_FILE} and no config; add a {REPRODUCE_FILE} "
                'with "command" and "quick" (the command lines that made it), or '
                '"not_reproducible" with the reason'
            ) from None
        needs = ["mnist"] if config.data.name == "mnist" else []
        if config.network.kind == "device" and config.device.name.startswith("spice-"):
            needs.append("ngspice")
        expect: tuple[str, ...] = ("accuracy",)
        if config.experiment.vary:  # a grid: one point per value
            expect = ("accuracy", "vary", "per_value")
        elif config.experiment.seeds:
            expect = ("accuracy", "seeds")
        return ReproduceEntry(folder, config=config, needs=tuple(needs), expect=expect)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise RunFolderError(f"{path} is not valid JSON ({exc}); fix the file") from None
    if not isinstance(doc, dict) or set(doc) - _ENTRY_KEYS:
        extra = sorted(set(doc) - _ENTRY_KEYS) if isinstance(doc, dict) else doc
        raise RunFolderError(
            f"{path}: unknown keys {extra}; a reproduce entry takes {sorted(_ENTRY_KEYS)}"
        )
    reason = doc.get("not_reproducible")
    if reason is not None:
        if not isinstance(reason, str) or not reason.strip() or "command" in doc:
            raise RunFolderError(
                f"{path}: not_reproducible must be a non-empty reason and comes without a "
                "command; give one or the other"
            )
        return ReproduceEntry(folder, not_reproducible=reason, expect=())
    if "command" not in doc:
        raise RunFolderError(
            f"{path} gives neither command nor not_reproducible; give the command lines that "
            "made the result, or the reason it cannot be run again"
        )
    needed = tuple(doc.get("needs", ()))
    if not set(needed) <= set(NEEDS):
        raise RunFolderError(f"{path}: needs {list(needed)}; known needs are {list(NEEDS)}")
    quick = doc.get("quick")
    not_in_ci = doc.get("not_in_ci")
    if quick is None and not not_in_ci:
        raise RunFolderError(
            f'{path} has no quick form; give "quick" (a smoke run of the same command) or '
            '"not_in_ci" with the reason it cannot have one'
        )
    return ReproduceEntry(
        folder,
        command=_lines(doc["command"], f"{path}: command"),
        quick=None if quick is None else _lines(quick, f"{path}: quick"),
        metrics=str(doc.get("metrics", "metrics.json")),
        expect=tuple(doc.get("expect", ("accuracy",))),
        needs=needed,
        not_in_ci=not_in_ci,
    )


def reproduce_commands(
    entry: ReproduceEntry,
    *,
    out: str | Path,
    quick: bool = False,
    data_dir: str | Path | None = None,
) -> list[tuple[dict[str, str], list[str]]]:
    """The argument lists that run a command entry again, placeholders filled in.

    ``python`` becomes this interpreter and ``quasineuron`` this package's command line, so
    the commands run the installed code; leading ``NAME=value`` words are environment
    variables for the command.

    Args:
        entry: A command entry (:func:`reproduce_entry`).
        out: The folder for the new run (``{out}``).
        quick: The smoke form instead of the full one.
        data_dir: The MNIST folder (``{data_dir}``).

    Returns:
        ``(environment additions, argv)`` per command line, in order.

    Raises:
        NotReproducibleError: If the entry cannot be run again, or has no quick form.
        RunFolderError: If a command needs ``--data-dir`` and none was given.
    """
    import shlex
    import sys

    if entry.not_reproducible:
        raise NotReproducibleError(f"{entry.folder} cannot be run again: {entry.not_reproducible}")
    lines = entry.quick if quick else entry.command
    if lines is None:
        raise NotReproducibleError(
            f"{entry.folder} has no quick form ({entry.not_in_ci}); run it in full without --quick"
        )
    out_path = str(Path(out).resolve())
    runs = []
    for line in lines:
        if "{data_dir}" in line and data_dir is None:
            raise RunFolderError(
                f"{entry.folder} reads the MNIST files: give --data-dir PATH/TO/MNIST"
            )
        words = shlex.split(line)
        env: dict[str, str] = {}
        while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
            key, _, value = words.pop(0).partition("=")
            env[key] = value
        data = str(Path(data_dir).resolve()) if data_dir is not None else ""
        words = [w.replace("{out}", out_path).replace("{data_dir}", data) for w in words]
        if words[0] == "python":
            words[0] = sys.executable
        elif words[0] == "quasineuron":
            code = "import sys; from quasineuron.cli import main; sys.exit(main(sys.argv[1:]))"
            words = [sys.executable, "-c", code, *words[1:]]
        runs.append((env, words))
    return runs


def repository_root(folder: str | Path) -> Path:
    """The repository a result folder ``ROOT/docs/results/NAME`` belongs to (ROOT)."""
    folder = Path(folder).resolve()
    if folder.parent.name == "results" and folder.parent.parent.name == "docs":
        return folder.parents[2]
    return Path.cwd()


def run_reproduce(
    result: str | Path,
    *,
    out: str | Path,
    quick: bool = False,
    data_dir: str | Path | None = None,
    progress: bool = False,
) -> Path:
    """Run a committed result again (in full or as a smoke run) into ``out``.

    Args:
        result: The result folder.
        out: The folder for the new run.
        quick: The smoke form.
        data_dir: The MNIST folder.
        progress: Show progress bars (run-protocol results).

    Returns:
        The path of the new run's ``metrics.json``.

    Raises:
        NotReproducibleError: If the result records why it cannot be run again.
        subprocess.CalledProcessError: If a command of the entry fails.
    """
    import os
    import subprocess

    entry = reproduce_entry(result)
    if entry.config is not None:
        from quasineuron.pipeline import run_pipeline

        config = quick_config(entry.config) if quick else entry.config
        run_pipeline(config, out, data_dir=data_dir, progress=progress)
        return Path(out) / "metrics.json"
    root = repository_root(entry.folder)
    for env, argv in reproduce_commands(entry, out=out, quick=quick, data_dir=data_dir):
        subprocess.run(argv, cwd=root, env={**os.environ, **env}, check=True)
    return Path(out) / entry.metrics
