"""The same-wiring baseline: an MLP whose units see exactly the inputs of the device neurons."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from quasineuron.cli import main
from quasineuron.config import ConfigError, parse_config
from quasineuron.network.wiring import FanIn
from quasineuron.pipeline import _PlainMLP

CONFIG = """
name = "same-wiring-tiny"
[device]
name = "almost-neuron"
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
hidden = [6]
connection = "two-drive"
wiring = "fan-in"
fan_in = 3
[training]
epochs = 1
batch_size = 20
lr = 0.003
[evaluation]
modes = ["device"]
baseline = "both"
"""


def test_a_masked_unit_ignores_the_inputs_it_is_not_wired_to() -> None:
    torch.manual_seed(0)
    masks = [FanIn(3).mask(8, 5, seed=1), FanIn(2).mask(5, 4, seed=2)]
    mlp = _PlainMLP((8, 5, 4), seed=0, masks=masks).double()
    hidden = mlp.body[:2]  # first layer and its tanh
    x = torch.rand(16, 8, dtype=torch.float64)
    for i in range(8):
        moved = x.clone()
        moved[:, i] += 1.0
        changed = (hidden(moved) - hidden(x)).abs().amax(0) > 0
        # unit j moves exactly when input i is wired to it
        assert torch.equal(changed, masks[0][i])
    # and the unwired weights get no gradient, so training cannot wire them in
    mlp(x).sum().backward()
    grad = mlp.body[0].weight.grad
    assert torch.all(grad[~masks[0].T] == 0) and torch.any(grad[masks[0].T] != 0)


def test_a_run_with_the_same_wiring_baseline_records_it(tmp_path: Path) -> None:
    cfg = tmp_path / "run.toml"
    cfg.write_text(CONFIG, encoding="utf-8")
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert 0.0 <= metrics["accuracy"]["baseline_same_wiring"] <= 1.0
    assert 0.0 <= metrics["accuracy"]["baseline_mlp"] <= 1.0


def test_an_unknown_baseline_is_refused() -> None:
    with pytest.raises(ConfigError, match="evaluation.baseline"):
        parse_config({"evaluation": {"baseline": "same_wiring_mlp"}})
