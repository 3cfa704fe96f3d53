from __future__ import annotations

import json
import os

import pytest
import torch
from network_devices import almost_neuron, ports_device, raw_device, tanh_device, wrong_twin

from quasineuron.network import (
    DeviceNetwork,
    FanIn,
    Linear,
    Ports,
    Quadratic,
    Raw,
    Sparse,
    TrueDevice,
    TwoDrive,
    load_network,
    save_network,
)


def _train_a_little(net, x):
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):
        opt.zero_grad()
        net(x, mode=TrueDevice()).square().mean().backward()
        opt.step()


@pytest.mark.parametrize(
    ("devices", "connection", "wiring"),
    [
        (tanh_device, Linear(), Sparse(0.3)),
        (tanh_device, Quadratic(), Sparse(0.2)),
        (lambda: almost_neuron(0.1), TwoDrive(), FanIn(3)),
        (lambda: raw_device(2), Raw(), FanIn(2)),
        (ports_device, Linear(), Ports()),
    ],
)
def test_save_load_round_trip_reproduces_predictions_exactly(
    devices, connection, wiring, tmp_path, gen
):
    net = DeviceNetwork(devices(), (7, 6, 3), connection=connection, wiring=wiring, seed=4)
    x = torch.rand(5, 7, generator=gen)
    _train_a_little(net, x)
    folder = save_network(net, tmp_path / "net")
    loaded = load_network(folder, device=devices())
    assert torch.equal(loaded(x, mode=TrueDevice()), net(x, mode=TrueDevice()))
    for a, b in zip(loaded.layers, net.layers, strict=True):
        assert torch.equal(a.mask, b.mask)


def test_saved_files_are_json_and_safetensors(tmp_path):
    net = DeviceNetwork(tanh_device(), (4, 3, 2), twin=wrong_twin(), dtype=torch.float64)
    folder = save_network(net, tmp_path / "net")
    arch = json.loads((folder / "network.json").read_text())
    assert arch["sizes"] == [4, 3, 2] and arch["dtype"] == "float64"
    assert arch["layers"][0]["device"]["name"] == "tanh"
    assert arch["layers"][0]["connection"] == {"kind": "linear", "bias": True}
    loaded = load_network(folder, device=tanh_device(), twin=wrong_twin())
    x = torch.rand(3, 4, dtype=torch.float64)
    assert torch.equal(loaded(x), net(x))


def test_loading_with_another_device_is_refused(tmp_path):
    folder = save_network(DeviceNetwork(tanh_device(), (4, 3, 2)), tmp_path / "net")
    with pytest.raises(ValueError, match="name"):
        load_network(folder, device=tanh_device(name="other"))
    with pytest.raises(ValueError, match="n_in"):
        load_network(folder, device=almost_neuron(0.1))


def test_loading_a_missing_folder_says_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="save_network"):
        load_network(tmp_path / "nothing", device=tanh_device())


def test_crash_while_saving_keeps_the_previous_network(tmp_path, monkeypatch, gen):
    old = DeviceNetwork(tanh_device(), (4, 3, 2), seed=0)
    folder = save_network(old, tmp_path / "net")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def crash(src, dst):
        raise OSError("simulated crash during rename")

    with monkeypatch.context() as m:
        m.setattr(os, "replace", crash)
        with pytest.raises(OSError, match="simulated crash"):
            save_network(DeviceNetwork(tanh_device(), (4, 3, 2), seed=1), folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    x = torch.rand(3, 4, generator=gen)
    loaded = load_network(folder, device=tanh_device())
    assert torch.equal(loaded(x, mode=TrueDevice()), old(x, mode=TrueDevice()))
