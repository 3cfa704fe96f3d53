"""Circuit devices: transient readout and branch-current outputs, checked against closed forms."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from quasineuron.devices.base import Box
from quasineuron.devices.spice import SpiceDevice, Transient

needs_ngspice = pytest.mark.skipif(
    shutil.which("ngspice") is None,
    reason="ngspice is not installed (apt-get install -y ngspice libngspice0)",
)

RC = 1e-3  # 1 kOhm * 1 uF
# an RC low-pass: drive a, output v(out); vsense measures the current into the resistor
LOWPASS = "vsense a m 0\nr1 m out 1k\nc1 out 0 1u\n"


def _lowpass(readout: Transient, **kw: object) -> SpiceDevice:
    return SpiceDevice(
        LOWPASS,
        drives=("a",),
        outputs=("v(out)", "i(vsense)"),
        domain=Box((-1.0,), (1.0,)),
        readout=readout,
        **kw,  # type: ignore[arg-type]
    )


@needs_ngspice
def test_transient_step_response_of_an_rc_low_pass_matches_its_closed_form() -> None:
    # v(t) = V (1 - exp(-t/RC)), i(t) = V/R exp(-t/RC), read at t_stop for several V in one run
    t_stop = 1.5 * RC
    dev = _lowpass(Transient(t_stop=t_stop, t_step=1e-5, start="step"), chunk=4)
    volts = np.array([[-1.0], [0.25], [0.5], [1.0], [0.8]])
    y = dev.evaluate_numpy(volts)
    decay = math.exp(-t_stop / RC)
    np.testing.assert_allclose(y[:, 0], volts[:, 0] * (1 - decay), atol=1e-3 * 1.0)
    np.testing.assert_allclose(y[:, 1], volts[:, 0] / 1e3 * decay, atol=1e-3 / 1e3)
    assert dev.n_runs == 2  # 5 rows, 4 instances per run


@needs_ngspice
def test_transient_mean_is_the_time_average_of_the_closed_form() -> None:
    # mean of V (1 - exp(-t/RC)) over [t0, t1] = V (1 - RC (e^{-t0/RC} - e^{-t1/RC}) / (t1 - t0))
    t0, t1 = 0.3 * RC, 2 * RC
    dev = _lowpass(Transient(t_stop=t1, t_step=1e-5, at="mean", t_from=t0, start="step"))
    volts = np.array([[1.0], [-0.6]])
    y = dev.evaluate_numpy(volts)[:, 0]
    expected = volts[:, 0] * (1 - RC * (math.exp(-t0 / RC) - math.exp(-t1 / RC)) / (t1 - t0))
    np.testing.assert_allclose(y, expected, atol=1e-3)


@needs_ngspice
def test_transient_hold_starts_from_the_operating_point() -> None:
    # drives held from before t = 0: the capacitor is already charged, nothing moves
    dev = _lowpass(Transient(t_stop=RC, t_step=1e-5))
    y = dev.evaluate_numpy(np.array([[0.7], [-0.2]]))
    np.testing.assert_allclose(y[:, 0], [0.7, -0.2], atol=1e-9)
    np.testing.assert_allclose(y[:, 1], 0.0, atol=1e-12)


@needs_ngspice
@pytest.mark.parametrize("readout", ["op", Transient(t_stop=1e-6, t_step=1e-7)])
def test_branch_current_of_a_resistor_obeys_ohms_law(readout: object) -> None:
    # i(vsense) = (v(a) - v(b)) / 2.2k through the resistor; b is the second drive
    dev = SpiceDevice(
        "vsense a m 0\nr1 m b 2.2k\n",
        drives=("a", "b"),
        outputs=("i(vsense)", "v(a,b)"),
        domain=Box((-1.0, -1.0), (1.0, 1.0)),
        readout=readout,  # type: ignore[arg-type]
    )
    u = np.random.default_rng(1).uniform(-1, 1, (7, 2))
    y = dev.evaluate_numpy(u)
    np.testing.assert_allclose(y[:, 0], (u[:, 0] - u[:, 1]) / 2.2e3, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(y[:, 1], u[:, 0] - u[:, 1], atol=1e-9)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"t_stop": 0.0, "t_step": 1e-6}, "t_stop must be > 0"),
        ({"t_stop": 1e-3, "t_step": 2e-3}, r"t_step must be in \(0, t_stop"),
        ({"t_stop": 1e-3, "t_step": 1e-6, "at": "max"}, "at must be 'final' or 'mean'"),
        ({"t_stop": 1e-3, "t_step": 1e-6, "t_from": 1e-3}, r"t_from must be in \[0, t_stop"),
        ({"t_stop": 1e-3, "t_step": 1e-6, "start": "ramp"}, "start must be 'hold' or 'step'"),
    ],
)
def test_bad_transient_options_say_what_was_expected(kw: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Transient(**kw)  # type: ignore[arg-type]


def test_a_current_output_must_name_a_source_of_the_netlist() -> None:
    with pytest.raises(ValueError, match="no element of that name"):
        SpiceDevice(
            "r1 a 0 1k\n", drives=("a",), outputs=("i(vsense)",), domain=Box((0.0,), (1.0,))
        )


@needs_ngspice
@pytest.mark.parametrize("n_rows", [3, 29])
def test_lanes_give_each_row_the_answer_of_the_one_copy_sweep(n_rows: int) -> None:
    # 3 rows in 8 lanes: one row per lane (a two-entry table); 29 rows: the last lane padded.
    # Rows must come back in their places; the inverter is nonlinear, so a mix-up shows.
    from quasineuron.devices.spice import spice_inverter

    u = np.random.default_rng(2).uniform(0.0, 1.8, (n_rows, 1))
    one = spice_inverter(lanes=1).evaluate_numpy(u)
    dev = spice_inverter(lanes=8)
    np.testing.assert_allclose(dev.evaluate_numpy(u), one, atol=1e-6)
    assert "in 3 lanes" in dev.batch_netlist(u[:3], "out.raw")


def test_results_that_stop_short_are_reported_not_read() -> None:
    # a transient that ended before t_stop, or a sweep with fewer steps than rows per lane,
    # must raise rather than return a truncated answer (fake results, no ngspice needed)
    from quasineuron.errors import SimulationError

    dev = _lowpass(Transient(t_stop=1e-3, t_step=1e-5))
    values = {
        "time": np.array([0.0, 5e-4]),
        "v(xqn0.out)": np.zeros(2),
        "i(v.xqn0.vsense)": np.zeros(2),
    }
    with pytest.raises(SimulationError, match="transient stopped"):
        dev._transient_outputs(values, 1)
    sweep = SpiceDevice(
        "r1 a out 1k\nr2 out 0 1k\n",
        drives=("a",),
        outputs=("v(out)",),
        domain=Box((0.0,), (1.0,)),
        lanes=2,
    )
    with pytest.raises(SimulationError, match="sweep stopped"):
        sweep._lanes_outputs({"v(xqn0.out)": np.zeros(1), "v(xqn1.out)": np.zeros(1)}, 4)


@needs_ngspice
def test_a_transient_device_passes_check_device_and_pickles() -> None:
    # instances share one time axis: a row's answer must still not depend on its batch-mates
    import pickle

    import quasineuron as qn

    dev = _lowpass(Transient(t_stop=RC, t_step=1e-5, at="mean", start="step"))
    assert qn.check_device(dev).ok
    u = np.array([[0.4]])
    np.testing.assert_allclose(
        pickle.loads(pickle.dumps(dev)).evaluate_numpy(u), dev.evaluate_numpy(u)
    )
    assert dev.describe()["readout"]["at"] == "mean"
