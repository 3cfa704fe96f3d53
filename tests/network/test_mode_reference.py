"""Outputs and gradients of every built-in execution mode, pinned to recorded numbers.

``mode_reference.json`` holds the values computed by the implementation that chose the device
model with an ``isinstance`` chain inside ``DeviceLayer`` (before modes carried their own
behaviour), in float64 on tiny networks. Any change in what a built-in mode computes, forward or
backward, makes these tests fail. Regenerate the file only for a deliberate change of meaning:
``python tests/network/test_mode_reference.py --record``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # network_devices, also when run as a script
from network_devices import almost_neuron, tanh_device, wrong_twin

from quasineuron.network import (
    DeviceNetwork,
    Direct,
    PhysicsAware,
    Surrogate,
    TrueDevice,
    TwoDrive,
    Variability,
)

F64 = torch.float64
REFERENCE = Path(__file__).with_name("mode_reference.json")


def _tanh_net(differentiable: bool = True) -> DeviceNetwork:
    return DeviceNetwork(
        tanh_device(differentiable=differentiable), (2, 3, 2), twin=wrong_twin(), dtype=F64
    )


def _almost_net() -> DeviceNetwork:
    # the twin is the device at another eps: a deliberate, smooth mismatch
    return DeviceNetwork(
        almost_neuron(0.2), (2, 3, 2), twin=almost_neuron(0.3), connection=TwoDrive(), dtype=F64
    )


def _varied_net() -> DeviceNetwork:
    v = Variability(gain_std=0.1, offset_std=0.05, input_gain_std=0.1, seed=3)
    return _tanh_net().with_variability(v)


# name: (network factory, mode, whether gradients are recorded)
CASES: dict[str, tuple[Callable[[], DeviceNetwork], object, bool]] = {
    "tanh/surrogate": (_tanh_net, Surrogate(), True),
    "tanh/device": (_tanh_net, TrueDevice(), True),
    "tanh/physics-aware": (_tanh_net, PhysicsAware(), True),
    "tanh/direct": (_tanh_net, Direct(), True),
    "black-box/device": (lambda: _tanh_net(differentiable=False), TrueDevice(), False),
    "black-box/physics-aware": (lambda: _tanh_net(differentiable=False), PhysicsAware(), True),
    "black-box/surrogate": (lambda: _tanh_net(differentiable=False), Surrogate(), True),
    "two-drive/surrogate": (_almost_net, Surrogate(), True),
    "two-drive/physics-aware": (_almost_net, PhysicsAware(), True),
    "two-drive/direct": (_almost_net, Direct(), True),
    "varied/device": (_varied_net, TrueDevice(), True),
    "varied/physics-aware": (_varied_net, PhysicsAware(), True),
    "varied/surrogate": (_varied_net, Surrogate(), True),
}


def _compute(case: str) -> dict[str, list]:
    make, mode, with_grad = CASES[case]
    net = make()
    gen = torch.Generator().manual_seed(1234)
    x = torch.randn(4, 2, generator=gen, dtype=F64)
    r = torch.randn(4, 2, generator=gen, dtype=F64)
    if not with_grad:
        with torch.no_grad():
            return {"output": net(x, mode=mode).tolist()}
    out = net(x, mode=mode)
    (out * r).sum().backward()
    grads = {n: p.grad.flatten().tolist() for n, p in net.named_parameters() if p.requires_grad}
    return {"output": out.tolist(), **{f"grad:{n}": g for n, g in grads.items()}}


@pytest.mark.parametrize("case", sorted(CASES))
def test_built_in_modes_compute_what_they_computed_before(case):
    expected = json.loads(REFERENCE.read_text())[case]
    got = _compute(case)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(
            torch.tensor(got[key], dtype=F64), torch.tensor(value, dtype=F64), msg=key
        )


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        raise SystemExit("usage: python tests/network/test_mode_reference.py --record")
    torch.set_num_threads(1)
    REFERENCE.write_text(json.dumps({c: _compute(c) for c in sorted(CASES)}, indent=1) + "\n")
    print(f"wrote {REFERENCE}")
