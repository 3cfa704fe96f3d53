"""Circuit devices: SpiceDevice and the built-in circuit neurons, simulated by ngspice."""

from __future__ import annotations

import pickle
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import quasineuron as qn
from quasineuron.devices.base import Box
from quasineuron.devices.spice import SpiceDevice, spice_diffpair, spice_inverter
from quasineuron.errors import SimulationError, SimulatorNotFoundError

needs_ngspice = pytest.mark.skipif(
    shutil.which("ngspice") is None,
    reason="ngspice is not installed (apt-get install -y ngspice libngspice0)",
)

# v(out) = (a + b) / 3 exactly: three equal resistors meeting at out
DIVIDER = "r1 a out 1k\nr2 b out 1k\nr3 out 0 1k\n"


def _divider(**kw: object) -> SpiceDevice:
    return SpiceDevice(
        DIVIDER,
        drives=("a", "b"),
        outputs=("v(out)", "v(a,out)"),
        domain=Box((-1.0, -1.0), (1.0, 1.0)),
        **kw,  # type: ignore[arg-type]
    )


@needs_ngspice
def test_batched_sweep_gives_each_row_its_own_operating_point() -> None:
    # unsorted rows with repeats, two drives, split over several runs: each row must come back
    # in its place, exactly the linear circuit's answer
    rng = np.random.default_rng(0)
    u = rng.uniform(-1, 1, (37, 2))
    u[5] = u[20]
    dev = _divider(chunk=10)
    y = dev.evaluate_numpy(u)
    expected_out = (u[:, 0] + u[:, 1]) / 3
    np.testing.assert_allclose(y[:, 0], expected_out, atol=1e-9)
    np.testing.assert_allclose(y[:, 1], u[:, 0] - expected_out, atol=1e-9)
    assert dev.n_runs == 4  # 37 rows in chunks of 10


@needs_ngspice
def test_a_batch_agrees_with_one_hand_written_operating_point(tmp_path: Path) -> None:
    # an independent path: ngspice's own .op on the inverter with a plain voltage source
    dev = spice_inverter()
    u = np.array([[0.3], [0.75], [0.8], [1.2]])
    y = dev.evaluate_numpy(u)[:, 0]
    from quasineuron.devices.spice import INVERTER_NETLIST

    for ui, yi in zip(u[:, 0], y, strict=True):
        cir = tmp_path / "one.cir"
        cir.write_text(
            f"* one point\nvin in 0 dc {ui}\n{INVERTER_NETLIST}.control\nop\n"
            "print v(out)\nquit\n.endc\n.end\n"
        )
        out = subprocess.run(["ngspice", "-b", str(cir)], capture_output=True, text=True).stdout
        line = next(x for x in out.splitlines() if x.strip().startswith("v(out)"))
        assert yi == pytest.approx(float(line.split("=")[1]), rel=1e-5, abs=1e-6)


@needs_ngspice
def test_builtin_circuit_neurons_have_their_shapes() -> None:
    dp = qn.make_device("spice-diffpair")
    u = torch.linspace(-1.5, 1.5, 61, dtype=torch.float64)[:, None]
    y = dp(u)[:, 0]
    assert torch.all(torch.diff(y) > 0)  # increasing
    torch.testing.assert_close(y, -y.flip(0), atol=1e-6, rtol=0)  # odd, as tanh
    assert 0.9 < float(y[-1]) < 1.1  # saturates near I_tail * R_L = 1 V
    inv = qn.make_device("spice-inverter")
    v = torch.linspace(0.0, 1.8, 181, dtype=torch.float64)[:, None]
    z = inv(v)[:, 0]
    assert torch.all(torch.diff(z) <= 1e-9)  # falling
    threshold = float(v[int(torch.argmin((z - 0.9).abs()))])
    assert threshold < 0.85  # the weaker PMOS pulls the switching point below VDD/2


@needs_ngspice
def test_spice_devices_pass_check_device_and_pickle() -> None:
    # the inverter is nonlinear: with ngspice's default tolerances a row's answer moved with
    # its batch neighbours (each solve starts from the previous one) and "rows" failed
    for dev in (_divider(), spice_inverter()):
        assert qn.check_device(dev).ok
    copy = pickle.loads(pickle.dumps(spice_diffpair()))
    u = torch.tensor([[0.2]], dtype=torch.float64)
    torch.testing.assert_close(copy(u), spice_diffpair()(u))


@needs_ngspice
def test_a_failing_run_is_split_and_its_points_recorded_as_nan() -> None:
    # a model that does not exist: every run fails, so every point ends alone and NaN
    bad = SpiceDevice(
        "m1 out in 0 0 nosuchmodel\nr1 out 0 1k\n",
        drives=("in",),
        outputs=("v(out)",),
        domain=Box((0.0,), (1.0,)),
        on_error="nan",
    )
    y = bad.evaluate_numpy(np.array([[0.1], [0.2], [0.3]]))
    assert np.isnan(y).all()
    assert bad.n_runs == 5  # 3 points, then halves 1 + 2, then 1 + 1
    raising = SpiceDevice(
        "m1 out in 0 0 nosuchmodel\nr1 out 0 1k\n",
        drives=("in",),
        outputs=("v(out)",),
        domain=Box((0.0,), (1.0,)),
    )
    with pytest.raises(SimulationError, match=r"no operating point .* u=\[0.1\]"):
        raising.evaluate_numpy(np.array([[0.1]]))


def test_missing_ngspice_names_the_install_command() -> None:
    dev = spice_inverter(ngspice="/nonexistent/ngspice")
    with pytest.raises(SimulatorNotFoundError, match="apt-get install -y ngspice libngspice0"):
        dev(torch.zeros(2, 1))


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"netlist": "r1 a 0 1k\n.end\n"}, "remove its '.end' line"),
        ({"outputs": ("i(r1)",)}, r"must be 'v\(node\)'"),
        ({"drives": ("0",)}, "not ground"),
        ({"chunk": 0}, "chunk must be an int >= 1"),
        ({"readout": "tran"}, "readout must be 'op'"),
    ],
)
def test_bad_arguments_say_what_was_expected(kw: dict[str, object], match: str) -> None:
    args: dict[str, object] = {
        "netlist": "r1 a 0 1k\n",
        "drives": ("a",),
        "outputs": ("v(a)",),
        "domain": Box((0.0,), (1.0,)),
    }
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        SpiceDevice(**args)  # type: ignore[arg-type]
