"""A grid of runs: one config key varied over a list of values, each value a seed family."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from quasineuron.cli import main
from quasineuron.config import ConfigError, load_config, parse_config, varied_config
from quasineuron.protocol import grid_folder, grid_metrics, reproduce_config

# The smallest device run that still trains: the frozen tanh device, a 21-point spline twin,
# 200 digits, one hidden layer of 4, one epoch.
TINY = """
name = "grid-tiny"
[device]
name = "almost-neuron"
options = {{ eps = 0.1 }}
[sweep]
sampler = "grid"
points = 121
[twin]
kind = "spline"
policy = "clamp"
[data]
name = "digits"
limit_train = 200
[network]
hidden = [4]
connection = "two-drive"
[training]
epochs = 1
batch_size = 20
lr = 0.003
[evaluation]
modes = ["device"]
baseline_mlp = false
[experiment]
{experiment}
"""


def _write(tmp_path: Path, experiment: str) -> Path:
    path = tmp_path / "grid.toml"
    path.write_text(TINY.format(experiment=experiment), encoding="utf-8")
    return path


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.slow  # four tiny runs: about 10 s
def test_a_grid_runs_every_value_and_seed_and_summarises_them(tmp_path: Path) -> None:
    cfg = _write(tmp_path, 'seeds = [0, 1]\nvary = { "device.options.eps" = [0, 1.0] }')
    out = tmp_path / "grid"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    grid = _json(out / "metrics.json")
    assert grid["vary"] == "device.options.eps"
    assert grid["eps"] == [0, 1.0] and grid["values"] == [0, 1.0]
    for i, (eps, folder) in enumerate(((0, "eps-0"), (1.0, "eps-1.0"))):
        point = grid["per_value"][i]
        assert point["folder"] == folder and point["value"] == eps and point["seeds"] == [0, 1]
        runs = [_json(out / folder / f"seed-{s}" / "metrics.json") for s in (0, 1)]
        for s, run in zip((0, 1), runs, strict=True):
            # each run is the config at this value and seed, and nothing else changed
            assert run["config"]["device"]["options"] == {"eps": eps}
            assert run["config"]["training"]["seed"] == s
            assert run["config"]["experiment"] == {"seeds": [], "vary": {}}
            assert point["per_seed"][str(s)]["device"] == run["accuracy"]["device"]
        accs = [r["accuracy"]["device"] for r in runs]
        assert grid["accuracy"]["device_mean"][i] == pytest.approx(sum(accs) / 2, abs=1e-12)
        assert grid["accuracy"]["device_std"][i] == pytest.approx(
            abs(accs[0] - accs[1]) / math.sqrt(2), abs=1e-12
        )
        assert point["accuracy"]["device_mean"] == grid["accuracy"]["device_mean"][i]
    assert grid["test_reads"] == 4
    # a complete grid run again is not repeated: same metrics, no further test reads
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    assert _json(out / "metrics.json")["test_reads"] == 4


@pytest.mark.slow  # two tiny runs
def test_a_grid_without_seeds_counts_each_run_as_one_seed(tmp_path: Path) -> None:
    cfg = _write(tmp_path, 'vary = { "network.hidden" = [[3], [5]] }')
    out = tmp_path / "grid"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    grid = _json(out / "metrics.json")
    assert grid["hidden"] == [[3], [5]]
    assert [p["folder"] for p in grid["per_value"]] == ["hidden-_3_", "hidden-_5_"]
    for i, width in enumerate((3, 5)):
        run = _json(out / grid["per_value"][i]["folder"] / "metrics.json")
        assert run["config"]["network"]["hidden"] == [width]
        assert grid["accuracy"]["device_mean"][i] == run["accuracy"]["device"]
        assert grid["accuracy"]["device_std"][i] == 0.0


def test_varied_config_sets_only_the_named_key() -> None:
    base = parse_config({"device": {"name": "almost-neuron", "options": {"eps": 0.1}}})
    point = varied_config(base, "device.options.eps", 2)
    assert point.device.options == {"eps": 2}
    assert point.model_dump(exclude={"device"}) == base.model_dump(exclude={"device"})


@pytest.mark.parametrize(
    ("vary", "expected"),
    [
        ({"device.options.eps": []}, "is empty"),
        ({"device.options.eps": [0.1, 0.1]}, "repeats a value"),
        ({"training.epoch": [1, 2]}, "names no config entry"),
        ({"device.opts.eps": [1, 2]}, "is not a table"),
        ({"training.epochs": [1, "two"]}, "training.epochs"),
        ({"experiment.seeds": [[0], [1]]}, "cannot vary"),
        ({"training.epochs": [1], "training.lr": [0.1]}, "vary one key"),
    ],
)
def test_a_bad_grid_is_refused_before_anything_runs(vary: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        parse_config({"experiment": {"vary": vary}})


def test_grid_folder_names_are_plain() -> None:
    assert grid_folder("device.options.eps", 0.25) == "eps-0.25"
    assert grid_folder("twin.kind", "spline") == "kind-spline"
    assert grid_folder("network.hidden", [64, 32]) == "hidden-_64_32_"


def test_quick_reproduction_keeps_the_two_ends_of_a_grid(tmp_path: Path) -> None:
    cfg = _write(tmp_path, 'seeds = [0, 1, 2]\nvary = { "device.options.eps" = [0, 0.5, 1, 2] }')
    quick = reproduce_config(cfg, quick=True)
    assert quick.experiment.vary == {"device.options.eps": (0, 2)}
    assert quick.experiment.seeds == (0, 1)
    assert load_config(cfg).experiment.vary["device.options.eps"] == (0, 0.5, 1, 2)


def test_grid_metrics_gives_mean_and_spread_per_value_in_the_values_order() -> None:
    def family(accs: list[float]) -> dict[str, Any]:
        mean = sum(accs) / len(accs)
        std = math.sqrt(sum((a - mean) ** 2 for a in accs) / (len(accs) - 1))
        return {
            "seeds": list(range(len(accs))),
            "accuracy": {"device_mean": mean, "device_std": std},
            "per_seed": {str(i): {"accuracy": {"device": a}} for i, a in enumerate(accs)},
            "test_reads": len(accs),
        }

    single = {"accuracy": {"device": 0.5, "device_std": 0.01}, "config": {"training": {"seed": 7}}}
    m = grid_metrics(
        "g",
        "device.options.eps",
        [2, 0, 1],
        ["eps-2", "eps-0", "eps-1"],
        [family([0.9, 0.8]), family([0.97, 0.95, 0.96]), single],
        config={},
    )
    assert m["eps"] == [2, 0, 1] and m["vary"] == "device.options.eps"
    assert m["accuracy"]["device_mean"] == pytest.approx([0.85, 0.96, 0.5], abs=1e-12)
    assert m["accuracy"]["device_std"] == pytest.approx([math.sqrt(0.005), 0.01, 0.0], abs=1e-12)
    assert m["per_value"][2]["seeds"] == [7] and m["per_value"][2]["per_seed"]["7"]["device"] == 0.5
    assert m["per_value"][0]["per_seed"]["1"] == {"device": 0.8}
    assert m["test_reads"] == 5
