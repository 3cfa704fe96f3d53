"""The gradient-alignment example (examples/wuxing_gradient_alignment.py), on a tiny network."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import pytest
import torch

from quasineuron.wuxing import SimConfig, TargetCoding, WuxingNetwork, one_to_one_wiring
from quasineuron.wuxing.twin import fit_neuron_twin


def test_the_operating_point_reversal_follows_the_gradient_exactly(
    example: Callable[[str], ModuleType],
) -> None:
    script = example("wuxing_gradient_alignment")
    net = WuxingNetwork(one_to_one_wiring((6, 4, 3), links=(9, 4), seed=0), config=SimConfig())
    with torch.no_grad():
        net.c.uniform_(-1.0, 1.0, generator=torch.Generator().manual_seed(0))
    twin, _ = fit_neuron_twin(net, n_samples=300, max_steps=30, hidden=(8,), seed=0)
    x = torch.rand(16, 6, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 3, (16,), generator=torch.Generator().manual_seed(2))
    out = script.alignment(net, twin, x, y, TargetCoding(kind="softmax", beta=20.0))
    assert set(out) == {"rest", "operating"}
    # the operating-point reversal gives e * ds/dc of the twin's steady state: the gradient
    assert out["operating"]["all_links"] == pytest.approx(1.0, abs=1e-4)
    assert len(out["rest"]["per_layer_pair"]) == 2
    assert all(-1.0 <= c <= 1.0 for c in out["rest"]["per_layer_pair"])
