"""``load_network`` reads a saved network of either kind, dispatching on its ``kind``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import quasineuron as qn
from quasineuron.network import load_network, save_network
from quasineuron.wuxing import SimConfig, WuxingNetwork, one_to_one_wiring
from quasineuron.wuxing.io import save_wuxing_network


def _wuxing(tmp_path: Path) -> tuple[WuxingNetwork, Path]:
    wiring = one_to_one_wiring((4, 3, 2), links=(6, 3), seed=0)
    net = WuxingNetwork(wiring, config=SimConfig(T=1.5))
    with torch.no_grad():
        net.c.uniform_(-1.0, 1.0, generator=torch.Generator().manual_seed(1))
    return net, save_wuxing_network(net, tmp_path / "wx")


def test_a_saved_wuxing_network_loads_without_a_device(tmp_path: Path) -> None:
    net, folder = _wuxing(tmp_path)
    back = load_network(folder)
    assert isinstance(back, WuxingNetwork)
    assert torch.equal(back.c, net.c) and back.config.T == 1.5  # the window comes back too
    x = torch.rand(3, 4)
    assert torch.equal(back.simulate(x).score, net.simulate(x).score)


def test_a_device_given_to_a_wuxing_network_is_refused(tmp_path: Path) -> None:
    _, folder = _wuxing(tmp_path)
    with pytest.raises(ValueError, match="Wuxing network.*takes no device"):
        load_network(folder, device=qn.make_device("tanh"))


def test_a_device_network_still_needs_its_device(tmp_path: Path) -> None:
    dev = qn.make_device("tanh")
    net = qn.DeviceNetwork(dev, sizes=(3, 2), seed=0)
    folder = save_network(net, tmp_path / "dev")
    with pytest.raises(ValueError, match="device network.*pass them again"):
        load_network(folder)
    back = load_network(folder, device=dev)
    assert isinstance(back, qn.DeviceNetwork)
