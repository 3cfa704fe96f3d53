from __future__ import annotations

import numpy as np
import pytest
import torch

from quasineuron.devices.base import Box
from quasineuron.devices.blackbox import BlackBoxDevice
from quasineuron.devices.formula import FormulaDevice
from quasineuron.devices.library import almost_neuron, available_devices, make_device
from quasineuron.errors import DeviceContractError, SimulationError

BOX1 = Box((-1.0,), (1.0,))


def test_wrong_shape_is_named_by_the_probe() -> None:
    with pytest.raises(DeviceContractError, match=r"shape \(3,\).*expected \(3, 1\)"):
        FormulaDevice(lambda u: u[:, 0], n_in=1, n_out=1, domain=BOX1)


def test_wrong_dtype_is_named_by_the_probe() -> None:
    with pytest.raises(DeviceContractError, match="dtype"):
        FormulaDevice(lambda u: u.double(), n_in=1, n_out=1, domain=BOX1)


def test_every_device_refuses_drives_of_the_wrong_shape_or_dtype() -> None:
    # an elementwise formula would map (batch, 3) drives of a one-drive device to (batch, 3)
    # outputs, and (batch,) to (batch,), without a word
    box = Box(low=(-1.0,), high=(1.0,))
    devices = [
        FormulaDevice(torch.tanh, n_in=1, n_out=1, domain=box),
        BlackBoxDevice(np.tanh, n_in=1, n_out=1, domain=box, vectorized=True),
    ]
    for dev in devices:
        assert dev(torch.zeros(4, 1)).shape == (4, 1)
        for bad in (torch.zeros(4, 3), torch.zeros(4), torch.zeros(2, 4, 1)):
            with pytest.raises(ValueError, match=r"takes drives of shape \(batch, n_in=1\)"):
                dev(bad)
        with pytest.raises(ValueError, match="got list"):
            dev([[0.0]])  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="takes floating drives"):
            dev(torch.zeros(4, 1, dtype=torch.int64))


def test_box_rejects_bad_bounds() -> None:
    with pytest.raises(ValueError, match="low < high"):
        Box((1.0,), (0.0,))
    with pytest.raises(ValueError, match="same non-zero length"):
        Box((0.0, 1.0), (1.0,))


def test_almost_neuron_matches_the_seed_formula() -> None:
    dev = almost_neuron(0.2, activation="sigmoid")
    x = torch.rand(5, 7, dtype=torch.float64)
    a = torch.randn(7, 3, dtype=torch.float64)
    s1, s2 = x @ a, (x**2) @ a
    u = torch.stack([s1, s2], dim=-1).reshape(-1, 2)
    expected = torch.sigmoid(x @ a - 0.2 * (x**2) @ a).reshape(-1, 1)
    torch.testing.assert_close(dev(u), expected)


def test_blackbox_per_point_raise_and_nan() -> None:
    def fn(row: np.ndarray) -> float:
        if row[0] > 0.5:
            raise RuntimeError("solver blew up")
        return float(row[0] ** 2)

    u = torch.tensor([[0.1], [0.9]], dtype=torch.float64)
    strict = BlackBoxDevice(fn, n_in=1, n_out=1, domain=BOX1)
    with pytest.raises(SimulationError, match=r"u=\[0.9\].*solver blew up.*on_error='nan'"):
        strict(u)
    lenient = BlackBoxDevice(fn, n_in=1, n_out=1, domain=BOX1, on_error="nan")
    y = lenient(u)
    assert y[0, 0].item() == pytest.approx(0.01)
    assert torch.isnan(y[1, 0])
    assert lenient.n_evaluations == 2


def test_blackbox_wrong_shape_is_a_contract_error() -> None:
    dev = BlackBoxDevice(lambda u: np.zeros(3), n_in=1, n_out=1, domain=BOX1, vectorized=True)
    with pytest.raises(DeviceContractError, match=r"expected \(2, 1\)"):
        dev(torch.zeros(2, 1))


def test_make_device_names() -> None:
    assert {"almost-neuron", "wuxing", "reaction-relu", "tanh"} <= set(available_devices())
    assert make_device("almost-neuron", eps=0.05).params["eps"] == 0.05
    with pytest.raises(ValueError, match="unknown device 'nope'.*module:function"):
        make_device("nope")
    with pytest.raises(ValueError, match="does not accept options"):
        make_device("almost-neuron", bogus=1)
    with pytest.raises(ValueError, match="cannot import module"):
        make_device("no_such_module_xyz:dev", allow_import=("no_such_module_xyz",))
    dev = make_device(
        "quasineuron.devices.library:almost_neuron", allow_import=("quasineuron",), eps=0.3
    )
    assert dev.params["eps"] == 0.3


@pytest.mark.parametrize("adapter", ["ode", "fixed_point"])
def test_a_callable_initial_state_of_the_wrong_shape_is_named(adapter: str) -> None:
    from quasineuron.devices.fixed_point import FixedPointDevice
    from quasineuron.devices.ode import ODEDevice

    def bad(u: torch.Tensor) -> torch.Tensor:
        return torch.zeros(u.shape[0], 3, dtype=u.dtype)

    if adapter == "ode":
        dev = ODEDevice(lambda t, x, u: -x + u, x0=bad, n_state=1, n_in=1, t_end=1.0, domain=BOX1)
        label = "x0"
    else:
        dev = FixedPointDevice(
            lambda x, u: u - x,
            n_in=1,
            n_state=1,
            n_out=1,
            x_init=bad,
            readout=lambda x: x,
            domain=BOX1,
        )
        label = "x_init"
    with pytest.raises(
        DeviceContractError, match=rf"{label}\(u\) must return shape \(2, n_state=1\)"
    ):
        dev(torch.zeros(2, 1))
