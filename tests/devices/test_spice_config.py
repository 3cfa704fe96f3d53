"""A circuit device's transient readout chosen in a config file, through ``make_device``."""

from __future__ import annotations

import shutil
import tomllib

import numpy as np
import pytest

from quasineuron.config import parse_config
from quasineuron.devices.library import make_device
from quasineuron.devices.spice import SpiceDevice, Transient, readout_from_options

needs_ngspice = pytest.mark.skipif(
    shutil.which("ngspice") is None,
    reason="ngspice is not installed (apt-get install -y ngspice libngspice0)",
)

CONFIG = """
name = "circuit"
[device]
name = "spice-diffpair"
options = { readout = { kind = "transient", t_stop = 2e-6, t_step = 1e-8, at = "final" } }
"""


def test_a_config_table_builds_the_transient_readout() -> None:
    config = parse_config(tomllib.loads(CONFIG))
    dev = make_device(config.device.name, **config.device.options)
    assert isinstance(dev, SpiceDevice)
    assert dev.readout == Transient(t_stop=2e-6, t_step=1e-8, at="final")
    assert dev.describe()["readout"]["t_stop"] == 2e-6


@pytest.mark.parametrize("name", ["spice-diffpair", "spice-inverter"])
def test_both_builtins_take_the_table_and_kind_op(name: str) -> None:
    mean = {"kind": "transient", "t_stop": 1e-6, "t_step": 1e-8, "at": "mean", "t_from": 5e-7}
    assert make_device(name, readout=mean).readout == Transient(1e-6, 1e-8, at="mean", t_from=5e-7)
    assert make_device(name, readout={"kind": "op"}).readout == "op"
    assert make_device(name).readout == "op"


@pytest.mark.parametrize(
    ("readout", "words"),
    [
        ({"kind": "ac", "t_stop": 1e-6}, "kind must be one of"),
        ({"t_stop": 1e-6, "t_step": 1e-8}, "kind must be one of"),
        ({"kind": "transient", "t_stop": 1e-6}, "needs ['t_step']"),
        ({"kind": "transient", "t_stop": 1e-6, "t_step": 1e-8, "tstop": 1}, "does not know"),
        ({"kind": "transient", "t_stop": "1us", "t_step": 1e-8}, "t_stop must be a number"),
        ({"kind": "transient", "t_stop": 1e-6, "t_step": 1e-8, "at": "last"}, "'final' or 'mean'"),
        ({"kind": "transient", "t_stop": 1e-6, "t_step": 1e-5}, "t_step must be in"),
        ({"kind": "op", "t_stop": 1e-6}, "takes no options"),
        ("transient", "needs its window"),
        (3, "readout must be"),
    ],
)
def test_bad_readout_options_say_what_to_write(readout: object, words: str) -> None:
    with pytest.raises(ValueError, match="readout|Transient") as info:
        make_device("spice-diffpair", readout=readout)
    assert words in str(info.value)


def test_readout_from_options_passes_objects_through() -> None:
    tr = Transient(t_stop=1e-6, t_step=1e-8)
    assert readout_from_options(tr) is tr
    assert readout_from_options("op") == "op"


@needs_ngspice
def test_transient_from_a_config_settles_on_the_operating_point() -> None:
    # the diff pair has no capacitors: held at its drive, its transient stays at the DC point
    config = parse_config(tomllib.loads(CONFIG))
    transient = make_device(config.device.name, **config.device.options)
    op = make_device("spice-diffpair")
    u = np.array([[-1.0], [-0.2], [0.0], [0.3], [1.2]])
    np.testing.assert_allclose(transient.evaluate_numpy(u), op.evaluate_numpy(u), atol=1e-6)
    assert transient.n_runs >= 1
