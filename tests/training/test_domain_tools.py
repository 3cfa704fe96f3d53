"""Domain tools during training: the drive penalty, bounded drives, masking, recharacterisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import quasineuron as qn
from quasineuron.errors import QuasineuronWarning
from quasineuron.network.network import DeviceNetwork
from quasineuron.surrogate.active import recharacterize
from quasineuron.training import Gradient, NonfiniteCounter, fit
from quasineuron.training.callbacks import DomainMonitor
from quasineuron.training.gradient import domain_penalty


def _tanh_device(limit: float) -> qn.FormulaDevice:
    return qn.FormulaDevice(
        torch.tanh, n_in=1, n_out=1, domain=qn.Box((-limit,), (limit,)), name="tanh"
    )


def _twin(dev: qn.FormulaDevice, n: int = 41) -> tuple[object, object]:
    table = qn.sweep(dev, qn.Grid(n), progress=False)
    fit_ = qn.fit_surrogate(table, kind="spline", policy="clamp")
    return fit_.model.to(torch.float64), table


def _data(n: int = 96, features: int = 6, seed: int = 0) -> qn.ArrayDataset:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, features, generator=gen, dtype=torch.float64)
    y = (x[:, 0] > x[:, 1]).long() + 2 * (x[:, 2] > 0.5).long()
    return qn.ArrayDataset(x, y)


def _net(limit: float = 0.5, gain: float = 4.0, **kw: object) -> DeviceNetwork:
    dev = _tanh_device(limit)
    twin, _ = _twin(dev)
    return DeviceNetwork(
        dev, (6, 8, 4), twin=twin, seed=0, dtype=torch.float64, init_gain=gain, **kw
    )


def _outside(net: DeviceNetwork, x: torch.Tensor) -> list[float]:
    return DomainMonitor().fractions(net, x, qn.Surrogate())


# ------------------------------------------------------------------------------ penalty
def test_the_penalty_is_zero_inside_and_grows_outside_in_box_widths() -> None:
    net = _net(limit=1.0)
    inside = [torch.full((2, 8, 1), 0.9, dtype=torch.float64), torch.zeros(2, 4, 1).double()]
    assert float(domain_penalty(net, inside)) == 0.0
    # one box width (2.0) beyond the top on every neuron of layer 0: 1.0 per row
    out = [torch.full((2, 8, 1), 3.0, dtype=torch.float64), torch.zeros(2, 4, 1).double()]
    assert float(domain_penalty(net, out)) == pytest.approx(1.0)
    below = [torch.full((2, 8, 1), -2.0, dtype=torch.float64), torch.zeros(2, 4, 1).double()]
    assert float(domain_penalty(net, below)) == pytest.approx(0.25)


@pytest.mark.slow
def test_the_penalty_keeps_drives_inside_the_domain() -> None:
    data = _data()

    def trained(lam: float) -> list[float]:
        net = _net(limit=0.5, gain=2.0)  # large initial weights: drives far outside ±0.5
        strategy = Gradient(qn.Surrogate(), lr=0.05, domain_penalty=lam)
        fit(net, data, strategy, epochs=20, batch_size=16, seed=0, progress=False)
        return _outside(net, data.x)

    free, held = trained(0.0), trained(100.0)
    assert max(free) > 0.3  # without the penalty the drives stay out
    assert max(held) < 0.12 < 0.5 * max(free)


def test_the_penalty_refuses_bad_weights_and_networks_without_drives() -> None:
    for bad in (-1.0, math.inf, math.nan, True, "1"):
        with pytest.raises(ValueError, match="domain_penalty must be a finite number >= 0"):
            Gradient(qn.Surrogate(), domain_penalty=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="nonfinite must be one of"):
        Gradient(qn.Surrogate(), nonfinite="skip")
    plain = torch.nn.Linear(6, 4).double()
    with pytest.raises(TypeError, match="domain_penalty needs a network whose run"):
        fit(plain, _data(), Gradient(domain_penalty=1.0), epochs=1, progress=False)


# ------------------------------------------------------------------------------ bounded drives
@pytest.mark.parametrize("which", ["output", "all"])
def test_bounded_drives_never_leave_the_box(which: str) -> None:
    net = _net(limit=0.5, gain=50.0, bounded_drives=which)
    fr = _outside(net, _data().x)
    assert fr[-1] == 0.0
    assert (fr[0] == 0.0) == (which == "all")  # the free hidden layer is far outside
    drives = net.drives(_data().x)
    assert float(drives[-1].detach().abs().max()) <= 0.5


def test_bounded_drives_are_the_identity_near_the_centre_and_saved() -> None:
    free, bounded = _net(limit=3.0, gain=0.01), _net(limit=3.0, gain=0.01, bounded_drives="all")
    x = _data().x
    for a, b in zip(free.drives(x), bounded.drives(x), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)  # tiny drives: tanh(u) ≈ u
    assert bounded.describe()["bounded_drives"] == "all"
    with pytest.raises(ValueError, match="bounded_drives must be one of"):
        _net(bounded_drives="hidden")


def test_bounded_drives_survive_save_and_load(tmp_path) -> None:
    from quasineuron.network.io import load_network, save_network

    net = _net(limit=0.5, gain=50.0, bounded_drives="output")
    save_network(net, tmp_path / "net")
    back = load_network(tmp_path / "net", device=net.layers[0].device, twin=net.layers[0].twin)
    assert back.bounded_drives == "output" and back.layers[-1].bounded
    x = _data().x
    torch.testing.assert_close(back(x), net(x))


def test_the_characterised_box_leaves_out_cells_where_the_device_failed() -> None:
    def breaks(u: torch.Tensor) -> torch.Tensor:
        return torch.where(u > 1.0, torch.full_like(u, math.nan), torch.tanh(u))

    dev = qn.FormulaDevice(
        breaks, n_in=1, n_out=1, domain=qn.Box((-2.0,), (2.0,)), name="breaks", probe=False
    )
    table = qn.sweep(dev, qn.Grid(41), progress=False)
    twin = qn.fit_surrogate(table, kind="spline").model
    net = DeviceNetwork(dev, (6, 3), twin=twin, dtype=torch.float64)
    box = net.layers[0].characterised_box()
    assert box.low == (-2.0,) and 0.8 <= box.high[0] <= 1.0


# ------------------------------------------------------------------------------ masking
def _breaking_net(mode_gain: float = 6.0) -> DeviceNetwork:
    def breaks(u: torch.Tensor) -> torch.Tensor:
        return torch.where(u > 1.5, torch.full_like(u, math.nan), torch.tanh(u))

    dev = qn.FormulaDevice(
        breaks, n_in=1, n_out=1, domain=qn.Box((-3.0,), (3.0,)), name="breaks", probe=False
    )
    table = qn.sweep(dev, qn.Grid(61), progress=False)
    twin = qn.fit_surrogate(table, kind="spline", policy="clamp").model
    return DeviceNetwork(
        dev, (6, 8, 4), twin=twin.double(), seed=1, dtype=torch.float64, init_gain=mode_gain
    )


def test_mask_leaves_failing_samples_out_and_counts_them() -> None:
    net = _breaking_net()
    counter = NonfiniteCounter()
    strategy = Gradient(qn.PhysicsAware(), lr=0.01, nonfinite="mask")
    result = fit(
        net, _data(), strategy, epochs=2, batch_size=32, progress=False, callbacks=(counter,)
    )
    assert strategy.masked_rows > 0
    assert result.extras["nonfinite_rows"] == strategy.masked_rows == counter.total
    assert sum(e.extras["nonfinite_rows"] for e in result.history) == strategy.masked_rows
    assert all(torch.isfinite(p).all() for p in net.parameters())
    assert all(math.isfinite(e.train_loss) for e in result.history)


def test_error_is_the_default_and_names_the_device() -> None:
    net = _breaking_net()
    with pytest.raises(FloatingPointError, match="device 'breaks' in layer"):
        fit(net, _data(), Gradient(qn.PhysicsAware(), lr=0.01), epochs=1, progress=False)


def test_the_penalty_sees_masked_samples_through_the_twin() -> None:
    # Every sample fails at the start, so every one is masked: only the twin pass can tell
    # the penalty where the failed drives went, and it must bring most of them back.
    data = _data(n=128)
    net = _breaking_net(mode_gain=3.0)
    assert not bool(torch.isfinite(net(data.x, mode=qn.TrueDevice())).all(dim=1).any())
    strategy = Gradient(qn.PhysicsAware(), lr=0.02, nonfinite="mask", domain_penalty=100.0)
    fit(net, data, strategy, epochs=15, batch_size=16, seed=0, progress=False)
    out = net(data.x, mode=qn.TrueDevice())
    assert float(torch.isfinite(out).all(dim=1).double().mean()) > 0.5


# ------------------------------------------------------------------------------ recharacterize
@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recharacterize_sweeps_where_drives_landed_and_widens_the_twin(seed: int) -> None:
    dev = qn.FormulaDevice(
        lambda u: torch.sin(u), n_in=1, n_out=1, domain=qn.Box((-0.5,), (0.5,)), name="sin"
    )
    twin, table = _twin(dev)
    net = DeviceNetwork(dev, (6, 8, 4), twin=twin, seed=0, dtype=torch.float64, init_gain=4.0)
    x = _data().x
    u = net.drives(x)[0].reshape(-1, 1).detach()
    err_before = float((net.layers[0].twin(u) - dev(u)).abs().mean())
    if seed == 0:
        # a weak draw: 64 points of sin over [-7, 6] and a short MLP fit give a twin no
        # closer to the device than the clamped one; recharacterize says so
        with pytest.warns(QuasineuronWarning, match="no closer to the device"):
            res = recharacterize(net, x, table, points=64, seed=seed, kind="mlp", max_steps=300)
        assert res.error_after is not None and res.error_before is not None
        assert res.error_after >= res.error_before
        return
    res = recharacterize(net, x, table, points=64, seed=seed, kind="mlp", max_steps=300)
    assert res.n_new == 64 and res.outside_before > 0.3
    assert res.domain_before.high == (0.5,) and res.domain_after.high[0] > 3.0
    assert res.table.u.shape[0] == table.u.shape[0] + 64
    assert all(layer.twin is res.fit.model for layer in net.layers)
    err_after = float((net.layers[0].twin(u) - dev(u)).abs().mean())
    assert np.isfinite(res.to_dict()["twin_nrmse"])
    assert err_after < 0.2 * err_before
    assert res.error_after is not None and res.error_after < 0.2 * res.to_dict()["error_before"]


def test_recharacterize_refuses_bad_input() -> None:
    net = _net()
    _, table = _twin(_tanh_device(0.5))
    with pytest.raises(ValueError, match="points must be a positive int"):
        recharacterize(net, _data().x, table, points=0)
    no_twin = DeviceNetwork(_tanh_device(0.5), (6, 4), dtype=torch.float64)
    with pytest.raises(ValueError, match="needs a DeviceNetwork whose layers have a twin"):
        recharacterize(no_twin, _data().x, table)
