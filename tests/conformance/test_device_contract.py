"""Conformance: every device kind passes the public ``check_device``, the check users run.

A new device kind is one module in ``devices/`` plus one line in ``FACTORIES``. The second half
of this file holds tiny devices that each break one check, so that every check is seen to fail.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import pytest
import torch

import quasineuron as qn
from quasineuron.devices.base import AbstractDevice, Box
from quasineuron.devices.blackbox import BlackBoxDevice
from quasineuron.devices.formula import FormulaDevice
from quasineuron.devices.library import available_devices, make_device
from quasineuron.devices.ode import RK4, FinalState, ODEDevice
from quasineuron.errors import DeviceContractError

BOX1 = Box((-1.0,), (1.0,))


# --------------------------------------------------------------------------------------------
# a user's own devices, written as a user would: module-level functions and a subclass
# --------------------------------------------------------------------------------------------


def relax_rhs(t: torch.Tensor, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """dx/dt = tanh(u) - x: relaxes towards tanh(u)."""
    return torch.tanh(u) - x


class UserDiode(AbstractDevice):
    """A user's subclass of the contract: a soft diode with a gain."""

    def __init__(self, gain: float = 4.0) -> None:
        super().__init__()
        self.gain = gain
        self.n_in, self.n_out, self.differentiable = 1, 1, True
        self.domain = Box((-2.0,), (2.0,))
        self.name = "user-diode"

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.softplus(self.gain * u) / self.gain - 0.1 * u


def _user_ode() -> AbstractDevice:
    return ODEDevice(
        relax_rhs,
        x0=torch.zeros(1),
        n_in=1,
        t_end=1.0,
        readout=FinalState(),
        solver=RK4(dt=0.05),
        domain=Box((-2.0,), (2.0,)),
        name="user-relax",
    )


def _blackbox() -> AbstractDevice:
    return BlackBoxDevice(np.tanh, n_in=1, n_out=1, domain=Box((-3.0,), (3.0,)), vectorized=True)


def _clipped_wuxing_steady() -> AbstractDevice:
    return qn.InputClip(make_device("wuxing-steady"))


# every built-in name, plus the adapters and wrappers no built-in name covers, plus user devices
FACTORIES: dict[str, Callable[[], AbstractDevice]] = {
    **{name: partial(make_device, name) for name in available_devices()},
    "blackbox": _blackbox,
    "input-clip": _clipped_wuxing_steady,
    "user-subclass": UserDiode,
    "user-ode": _user_ode,
}


def test_every_builtin_name_is_checked() -> None:
    assert set(available_devices()) <= set(FACTORIES)


@pytest.mark.parametrize("kind", sorted(FACTORIES))
def test_every_device_kind_passes_check_device(kind: str) -> None:
    if kind.startswith("spice-") and shutil.which("ngspice") is None:
        pytest.skip("circuit devices need ngspice: apt-get install -y ngspice libngspice0")
    dev = FACTORIES[kind]()
    report = qn.check_device(dev)
    assert isinstance(report, qn.DeviceCheckReport)
    assert report.ok and not report.failed
    expected = {"contract", "rows", "pickle", "domain"}
    if dev.differentiable:
        expected.add("gradients")
    assert set(report.passed) == expected
    # the built-in domains are chosen so that the whole domain is well behaved
    assert report.nonfinite_fraction == 0.0
    json.dumps(report.to_dict())


def test_the_old_probe_signature_still_works() -> None:
    dev = UserDiode()
    assert qn.check_device(dev, dtype=torch.float64, batch=2, seed=1).ok


def test_unknown_check_names_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"unknown checks in skip: \['speed'\]"):
        qn.check_device(UserDiode(), skip=("speed",))


# --------------------------------------------------------------------------------------------
# each check fails on a device that violates it
# --------------------------------------------------------------------------------------------


class _Bad(AbstractDevice):
    """A one-drive device on [-1, 1] whose output is ``fn(u)``."""

    def __init__(self, fn: Callable[[torch.Tensor], Any], *, differentiable: bool = True) -> None:
        super().__init__()
        self.fn = fn
        self.n_in, self.n_out, self.differentiable = 1, 1, differentiable
        self.domain = BOX1
        self.name = "bad"

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.fn(u)


def _drops_batch(u: torch.Tensor) -> torch.Tensor:
    return u[:, 0]


def _always_float64(u: torch.Tensor) -> torch.Tensor:
    return torch.tanh(u).double()


def _on_meta(u: torch.Tensor) -> torch.Tensor:
    # a tensor on another torch device: "meta" exists on every machine
    return torch.empty(u.shape, dtype=u.dtype, device="meta")


def _batch_statistic(u: torch.Tensor) -> torch.Tensor:
    return u - u.mean(dim=0, keepdim=True)


def _wrong_gradient(u: torch.Tensor) -> torch.Tensor:
    # value u², gradient 3 instead of 2u
    return u.detach() ** 2 + 3.0 * (u - u.detach())


def _nan_below_zero(u: torch.Tensor) -> torch.Tensor:
    return torch.where(u < 0, torch.full_like(u, math.nan), torch.sqrt(u.clamp(min=0) + 1))


class _ForgetsOnPickle(UserDiode):
    """Pickles without its gain: the copy computes something else."""

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["gain"] = 1.0
        return state


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (_drops_batch, r"shape \(3,\).*expected \(3, 1\)"),
        (_always_float64, "keep the dtype"),
        (_on_meta, "keep the torch device"),
    ],
    ids=["shape", "dtype", "torch-device"],
)
def test_contract_violations_fail_the_contract(fn: Callable, message: str) -> None:
    with pytest.raises(DeviceContractError, match=message):
        qn.check_device(_Bad(fn))
    report = qn.check_device(_Bad(fn), strict=False)
    assert report.failed == ("contract",)
    assert set(report.skipped) == {"rows", "gradients", "pickle", "domain"}


def test_bad_declarations_fail_the_contract() -> None:
    dev = UserDiode()
    dev.n_out = 0
    assert qn.check_device(dev, strict=False).failed == ("contract",)
    dev = UserDiode()
    dev.domain = Box((-1.0, -1.0), (1.0, 1.0))
    with pytest.raises(DeviceContractError, match="domain must be a Box with 1 bounds"):
        qn.check_device(dev)


def test_coupled_rows_fail_the_rows_check() -> None:
    with pytest.raises(DeviceContractError, match="rows of a batch must not affect each other"):
        qn.check_device(_Bad(_batch_statistic))
    assert qn.check_device(_Bad(_batch_statistic), strict=False).failed == ("rows",)


def test_a_wrong_backward_fails_the_gradient_check() -> None:
    with pytest.raises(DeviceContractError, match="autograd disagrees with finite differences"):
        qn.check_device(_Bad(_wrong_gradient))
    # a device that declares no gradient is not held to one
    report = qn.check_device(_Bad(_wrong_gradient, differentiable=False))
    assert "gradients" in report.skipped and report.ok


def test_a_lambda_device_fails_the_pickle_check() -> None:
    dev = FormulaDevice(lambda u: torch.tanh(u), n_in=1, n_out=1, domain=BOX1)
    with pytest.raises(DeviceContractError, match="cannot be pickled.*module-level functions"):
        qn.check_device(dev)
    report = qn.check_device(dev, skip=("pickle",))
    assert report.ok and "pickle" in report.skipped


def test_a_device_that_changes_when_pickled_fails_the_pickle_check() -> None:
    report = qn.check_device(_ForgetsOnPickle(), strict=False)
    assert report.failed == ("pickle",)
    assert "unpickled copy gives" in str(report)


def test_nonfinite_outputs_over_part_of_the_domain_are_reported_not_failed() -> None:
    report = qn.check_device(_Bad(_nan_below_zero), n_points=128, skip=("gradients",))
    assert report.ok
    # half of the box [-1, 1] gives NaN; a scrambled Sobol sample splits it almost exactly
    assert report.nonfinite_fraction == pytest.approx(0.5, abs=0.02)
    assert report.n_points == 128
    text = str(report)
    assert "non-finite outputs at 50.0 % of its domain" in text
    assert "InputClip" in text
