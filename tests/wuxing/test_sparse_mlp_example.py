"""The sparse-MLP baseline script (examples/wuxing_sparse_mlp.py) runs end to end with --quick."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch


@pytest.fixture(scope="module")
def script(example: Callable[[str], ModuleType]) -> ModuleType:
    """The example script imported as a module."""
    return example("wuxing_sparse_mlp")


def test_masks_have_exact_link_counts_and_are_nested(script: ModuleType) -> None:
    dense = script.build_mlp(1.0, seed=0)
    sparse = script.build_mlp(0.05, seed=0)
    possible = [a * b for a, b in zip(script.SIZES[:-1], script.SIZES[1:], strict=True)]
    assert script.link_counts(dense) == possible
    assert script.link_counts(sparse) == [max(1, round(0.05 * n)) for n in possible]
    for small, big in zip(sparse.layers, dense.layers, strict=True):
        assert bool((small.mask <= big.mask).all())
    assert script.MODEL1_POSSIBLE == 925_773
    assert math.isclose(100 * script.MODEL1_POOLED_LR, 0.509, abs_tol=5e-4)


def test_masked_weights_get_no_gradient(script: ModuleType) -> None:
    net = script.build_mlp(0.02, seed=1)
    x = torch.rand(4, 784, generator=torch.Generator().manual_seed(0))
    net(x, mode=script.Direct()).square().sum().backward()
    for layer in net.layers:
        grad = layer.map.weight.grad
        assert grad is not None
        assert bool((grad[~layer.mask] == 0).all())


@pytest.mark.slow
def test_quick_sweep_writes_sane_metrics(
    script: ModuleType, tmp_path: Path, mnist_dir: Path
) -> None:
    returned = script.main(["--data-dir", str(mnist_dir), "--out", str(tmp_path), "--quick"])
    run_dir = tmp_path / "wuxing-sparse-mlp"
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    assert (run_dir / "accuracy_vs_link_ratio.png").stat().st_size > 1000
    assert metrics["runs"] == json.loads(json.dumps(returned["runs"]))
    assert metrics["quick"] is True and metrics["seeds"] == [0]
    assert metrics["torch_version"] == torch.__version__
    assert "--quick" in metrics["command"]
    assert [r["link_ratio"] for r in metrics["runs"]] == [1.0, 0.05]
    for run in metrics["runs"]:
        possible = run["possible_per_layer"]
        assert run["links_per_layer"] == [max(1, round(run["link_ratio"] * n)) for n in possible]
        assert math.isclose(run["pooled_link_ratio"], sum(run["links_per_layer"]) / sum(possible))
        assert len(run["val_accuracy_per_epoch"]) == metrics["epochs"] == 2
        assert 1 <= run["chosen_epoch"] <= 2
        assert run["val_accuracy"] == max(run["val_accuracy_per_epoch"])
        assert run["chosen_lr"] in metrics["candidate_lrs"]
        assert 0.0 <= run["test_accuracy"] <= 1.0
    # even on 1800 digits and one or two epochs the dense MLP is far above chance
    assert metrics["runs"][0]["test_accuracy"] > 0.6


def test_summary_is_mean_and_std_over_seeds(script: ModuleType) -> None:
    runs = [
        {"seed": s, "link_ratio": r, "pooled_link_ratio": r, "test_accuracy": a, "val_accuracy": v}
        for s, r, a, v in [(0, 1.0, 0.9, 0.8), (1, 1.0, 0.7, 0.6), (0, 0.1, 0.5, 0.5)]
    ]
    rows = script.summarise(runs, (1.0, 0.1))
    assert rows[0]["seeds"] == [0, 1] and rows[0]["test_accuracy_per_seed"] == [0.9, 0.7]
    assert math.isclose(rows[0]["test_accuracy_mean"], 0.8)
    assert math.isclose(rows[0]["test_accuracy_std"], math.sqrt(0.02))
    assert rows[1]["test_accuracy_std"] is None and rows[1]["val_accuracy_mean"] == 0.5
