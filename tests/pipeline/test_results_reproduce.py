"""Every result indexed in docs/results/README.md says how it runs again, and its smoke form runs.

A result made by ``quasineuron run`` reproduces from the config stored with it; any other
result carries a ``reproduce.json`` (its commands, their ``--quick`` form, or the reason it
cannot be run again). The slow test runs each smoke form, as ``quasineuron reproduce NAME
--quick`` does, and checks the metrics it writes.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from quasineuron.cli import main
from quasineuron.errors import NotReproducibleError, RunFolderError
from quasineuron.protocol import (
    REPRODUCE_FILE,
    reproduce_commands,
    reproduce_entry,
    run_reproduce,
)

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results"
MNIST_DIR = ROOT.parent / "shared" / "data" / "mnist"
# a row of the index: | [name](name/) | claim | ...
ROW = re.compile(r"^\| \[([^\]]+)\]\(([^)]+)\) \|", re.MULTILINE)


def _indexed() -> list[str]:
    """The result folders the index links to, in its order (figures linked directly excluded)."""
    names = [m.group(2).rstrip("/") for m in ROW.finditer((RESULTS / "README.md").read_text())]
    return [n for n in names if (RESULTS / n).is_dir()]


INDEXED = _indexed()
# configs recorded before the vocabulary was unified parse with a DeprecationWarning
OLD_SPELLINGS = pytest.mark.filterwarnings("ignore:.*old spelling:DeprecationWarning")


def _get(doc: dict, dotted: str) -> object:
    node: object = doc
    for part in dotted.split("."):
        assert isinstance(node, dict) and part in node, f"metrics.json lacks {dotted!r}"
        node = node[part]
    return node


def test_the_index_links_every_result_folder() -> None:
    assert len(INDEXED) >= 30
    assert set(INDEXED) == {p.name for p in RESULTS.iterdir() if p.is_dir()}


@OLD_SPELLINGS
@pytest.mark.parametrize("name", INDEXED)
def test_every_indexed_result_has_a_reproduce_entry(name: str) -> None:
    entry = reproduce_entry(RESULTS / name)
    if entry.not_reproducible:
        assert len(entry.not_reproducible) > 20  # a reason, not a placeholder
        return
    assert entry.config is not None or entry.command
    # without a smoke form, the entry says why it is not run in CI
    assert entry.config is not None or entry.quick is not None or entry.not_in_ci


#: The output folder of each script command's smoke run in this test session.
_QUICK_RUNS: dict[tuple[str, ...], Path] = {}


@pytest.mark.slow
@OLD_SPELLINGS
# a smoke run (one epoch on 200 images) may drive a twin out of its domain: the run says so
# with this warning, which is the library working, not the smoke test failing
@pytest.mark.filterwarnings("ignore::quasineuron.errors.OutOfDomainWarning")
@pytest.mark.parametrize("name", INDEXED)
def test_the_quick_form_of_every_indexed_result_runs(name: str, tmp_path: Path) -> None:
    entry = reproduce_entry(RESULTS / name)
    if entry.not_reproducible:
        pytest.skip(f"not reproducible: {entry.not_reproducible}")
    if entry.not_in_ci:
        pytest.skip(f"not in CI: {entry.not_in_ci}")
    if "mnist" in entry.needs and not (MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"needs real MNIST at {MNIST_DIR}")
    if "ngspice" in entry.needs and shutil.which("ngspice") is None:
        pytest.skip("needs ngspice (apt-get install -y ngspice libngspice0)")
    data_dir = MNIST_DIR if "mnist" in entry.needs else None
    if entry.quick is not None and entry.quick in _QUICK_RUNS:
        # one script run makes several results (blackbox_digits.py: three folders)
        path = _QUICK_RUNS[entry.quick] / entry.metrics
    else:
        path = run_reproduce(RESULTS / name, out=tmp_path / "again", quick=True, data_dir=data_dir)
        if entry.quick is not None:
            _QUICK_RUNS[entry.quick] = tmp_path / "again"
    metrics = json.loads(path.read_text(encoding="utf-8"))
    for key in entry.expect:
        _get(metrics, key)
    if entry.config is not None and entry.config.experiment.vary:
        # a grid's smoke run keeps the first and last of its values
        (values,) = entry.config.experiment.vary.values()
        ends = [values[0], values[-1]] if len(values) > 1 else [values[0]]
        assert metrics["values"] == ends
    elif entry.config is not None and entry.config.experiment.seeds:
        # a seed family's smoke run keeps two seeds, with each mode's mean and spread
        assert len(metrics["seeds"]) == min(2, len(entry.config.experiment.seeds))
        assert any(k.endswith("_mean") for k in metrics["accuracy"])


def test_a_command_entry_fills_its_placeholders_and_runs_this_interpreter(tmp_path: Path) -> None:
    folder = tmp_path / "docs" / "results" / "made-by-script"
    folder.mkdir(parents=True)
    (folder / REPRODUCE_FILE).write_text(
        json.dumps(
            {
                "command": ["PYTHONPATH=examples python examples/x.py --out {out}"],
                "quick": "quasineuron run c.toml --quick --data-dir {data_dir} --out {out}",
            }
        )
    )
    entry = reproduce_entry(folder)
    ((env, argv),) = reproduce_commands(entry, out=tmp_path / "o", quick=False)
    assert env == {"PYTHONPATH": "examples"}
    assert argv[1:] == ["examples/x.py", "--out", str((tmp_path / "o").resolve())]
    ((_, argv),) = reproduce_commands(entry, out="o", quick=True, data_dir=tmp_path)
    assert argv[1] == "-c" and argv[3:6] == ["run", "c.toml", "--quick"]
    assert str(tmp_path.resolve()) in argv
    with pytest.raises(RunFolderError, match="--data-dir"):
        reproduce_commands(entry, out="o", quick=True)


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({"command": "python x.py"}, "no quick form"),
        ({"quick": "python x.py --quick"}, "neither command nor not_reproducible"),
        ({"command": "python x.py", "quick": None, "not_in_ci": "t", "why": 1}, "unknown keys"),
        ({"command": "python x.py", "not_reproducible": "deleted"}, "one or the other"),
        ({"command": "python x.py", "quick": "python x.py", "needs": ["gpu"]}, "known needs"),
    ],
)
def test_a_malformed_reproduce_entry_is_refused_with_the_fix(
    doc: dict, match: str, tmp_path: Path
) -> None:
    (tmp_path / REPRODUCE_FILE).write_text(json.dumps(doc))
    with pytest.raises(RunFolderError, match=match):
        reproduce_entry(tmp_path)


def test_a_folder_without_entry_or_config_is_refused(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(RunFolderError, match=REPRODUCE_FILE):
        reproduce_entry(tmp_path)


def test_reproducing_a_result_that_cannot_run_again_gives_its_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / REPRODUCE_FILE).write_text(
        json.dumps({"not_reproducible": "made by a lost script, since deleted"})
    )
    with pytest.raises(NotReproducibleError, match="lost script"):
        run_reproduce(tmp_path, out=tmp_path / "o", quick=True)
    assert main(["reproduce", str(tmp_path), "--quick", "--out", str(tmp_path / "o")]) == 2
    assert "lost script" in capsys.readouterr().err


def test_reproduce_takes_a_results_name_from_the_repository_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "docs" / "results" / "old-result"
    folder.mkdir(parents=True)
    reason = "made by the earlier script x.py, since deleted"
    (folder / REPRODUCE_FILE).write_text(json.dumps({"not_reproducible": reason}))
    monkeypatch.chdir(tmp_path)
    assert main(["reproduce", "old-result", "--quick", "--out", str(tmp_path / "o")]) == 2
    assert reason in capsys.readouterr().err


def test_a_quick_run_caps_a_large_sweep_and_keeps_a_default_one() -> None:
    from quasineuron.protocol import QUICK_SWEEP_POINTS, reproduce_config

    big = reproduce_config(ROOT / "examples" / "raw-almost-neuron-digits.toml", quick=True)
    assert big.sweep.points == QUICK_SWEEP_POINTS
    default = reproduce_config(ROOT / "examples" / "spice-mnist.toml", quick=True)
    assert default.sweep.points == 0  # the device's own default size
