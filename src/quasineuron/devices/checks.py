"""The device conformance check: the same checks the test suite runs on every built-in device.

Like scikit-learn's ``check_estimator``, :func:`check_device` runs a fixed list of checks on
any object that claims the device contract, so a user can check their own device before a long
sweep:

- ``"contract"``: ``n_in``, ``n_out``, ``differentiable`` and ``domain`` are well formed,
  ``describe()`` is JSON-ready, and ``device(u)`` maps (batch, n_in) to (batch, n_out) keeping
  the dtype (float32 and float64) and the torch device of ``u``;
- ``"rows"``: the rows of a batch are independent (a batch equals its rows one by one);
- ``"gradients"``: where ``differentiable``, autograd agrees with central finite differences
  in float64 on two rows inside the domain (a directional derivative in a random direction);
- ``"pickle"``: a ``pickle`` round trip gives a device with equal outputs (devices are pickled
  when they are sent to worker processes, e.g. ``characterize --workers 2``);
- ``"domain"``: the declared domain is sampled on ``n_points`` scrambled Sobol points and the
  fraction of points with non-finite outputs is reported (reported, not failed: a device may
  legitimately diverge over part of its domain).
"""

from __future__ import annotations

import json
import pickle
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

from quasineuron.devices.base import Box
from quasineuron.errors import DeviceContractError

__all__ = ["CHECKS", "DeviceCheckReport", "check_contract", "check_device"]

CHECKS: tuple[str, ...] = ("contract", "rows", "gradients", "pickle", "domain")

# Rows of a batch must agree with the same rows evaluated alone up to these tolerances. They are
# loose enough for adaptive ODE solvers, whose step size is shared by the batch (so a row's
# result moves at the solver's tolerance with its batch-mates), and far tighter than any real
# coupling between rows (a batch statistic changes outputs at order one).
_ROWS_RTOL, _ROWS_ATOL = 1e-5, 1e-7
# finite differences: central differences with step 1e-6 in float64 err by about 1e-10 for
# smooth devices; a fixed-point device adds its solver tolerance over the step (up to ~1e-5 at
# tolerance 1e-10), hence the loose absolute tolerance. A wrong backward is off at order one.
_FD_EPS, _FD_ATOL, _FD_RTOL = 1e-6, 1e-5, 1e-4
# probe rows lie in the middle 80 % of the domain so that finite differences never cross its edge
_INNER = 0.1


@dataclass(frozen=True)
class DeviceCheckReport:
    """What :func:`check_device` found.

    Attributes:
        name: The device's ``name``.
        kind: The device's class name.
        passed: Checks that ran and passed, in the order they ran.
        failed: Checks that ran and failed.
        skipped: Checks that did not run (asked to skip, not applicable, or after a failed
            contract).
        nonfinite_fraction: Fraction of the ``n_points`` domain points whose output has a
            non-finite entry; ``None`` if the domain check did not run.
        n_points: Number of domain points sampled.
        seconds: Wall time of the whole check.
        notes: One sentence per failure, skip or finding, in words.
    """

    name: str
    kind: str
    passed: tuple[str, ...]
    failed: tuple[str, ...]
    skipped: tuple[str, ...]
    nonfinite_fraction: float | None
    n_points: int
    seconds: float
    notes: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Whether every check that ran passed."""
        return not self.failed

    def describe(self) -> str:
        """The report in words, one finding per line."""
        verdict = "passes" if self.ok else f"FAILS {', '.join(self.failed)}"
        lines = [
            f"device {self.name!r} ({self.kind}) {verdict}: checked "
            f"{', '.join(c for c in CHECKS if c in self.passed + self.failed) or 'nothing'} in "
            f"{self.seconds:.2f} s"
        ]
        if self.nonfinite_fraction is not None:
            n_bad = round(self.nonfinite_fraction * self.n_points)
            lines.append(
                f"non-finite outputs at {100 * self.nonfinite_fraction:.1f} % of its domain "
                f"({n_bad} of {self.n_points} sampled points)"
            )
        lines += list(self.notes)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.describe()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "kind": self.kind,
            "ok": self.ok,
            "passed": list(self.passed),
            "failed": list(self.failed),
            "skipped": list(self.skipped),
            "nonfinite_fraction": self.nonfinite_fraction,
            "n_points": self.n_points,
            "seconds": self.seconds,
            "notes": list(self.notes),
        }


class _CheckFailed(Exception):
    """Internal: one check failed; the message says why and how to fix it."""


def check_device(
    device: Any,
    *,
    dtype: torch.dtype | None = None,
    batch: int = 3,
    seed: int = 0,
    n_points: int = 256,
    skip: Iterable[str] = (),
    strict: bool = True,
    torch_device: torch.device | str | None = None,
) -> DeviceCheckReport:
    """Run the conformance checks on ``device`` and report what passed.

    The checks (see the module docstring) are ``"contract"``, ``"rows"``, ``"gradients"``,
    ``"pickle"`` and ``"domain"``. If the contract fails, the others are skipped. A device
    whose outputs are non-finite over part of its domain still passes; the report gives the
    fraction.

    Example:
        >>> import quasineuron as qn
        >>> dev = qn.FormulaDevice(torch.tanh, n_in=1, n_out=1, domain=qn.Box((-3.0,), (3.0,)))
        >>> qn.check_device(dev).ok
        True

    Args:
        device: The device to check (an :class:`~quasineuron.devices.base.AbstractDevice` or
            anything with the same contract).
        dtype: Check this floating dtype only (a device meant for one dtype); default: the
            contract for both float32 and float64, the other checks in float64. The gradient
            check needs float64 and is skipped for another ``dtype``.
        batch: Rows of the contract's probe batch.
        seed: Seed for every probe and domain point.
        n_points: Domain points sampled for the non-finite fraction (scrambled Sobol).
        skip: Names of checks not to run, e.g. ``("gradients",)``, the slow one for ODE
            devices, or ``("pickle",)`` for a device that never goes to worker processes.
        strict: Raise :class:`DeviceContractError` if a check fails; ``False`` only reports.
        torch_device: Torch device of the probe drives (default the CPU).

    Returns:
        The report: checks passed, failed and skipped, the non-finite fraction on the domain,
        the time taken and notes in words.

    Raises:
        DeviceContractError: With ``strict=True``, if any check fails; the message lists every
            failure and how to fix it.
        ValueError: For an unknown check name in ``skip`` or a bad ``batch``/``n_points``.
    """
    skip_set = set(skip) if not isinstance(skip, str) else {skip}
    unknown = skip_set - set(CHECKS)
    if unknown:
        raise ValueError(f"unknown checks in skip: {sorted(unknown)}; choose from {list(CHECKS)}")
    for label, v in (("batch", batch), ("n_points", n_points)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{label} must be a positive int, got {v!r}")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating torch dtype or None (both), got {dtype!r}")

    t0 = time.perf_counter()
    name = str(getattr(device, "name", type(device).__name__))
    passed: list[str] = []
    failed: list[str] = []
    skipped: list[str] = []
    notes: list[str] = []
    nonfinite: float | None = None
    on = torch.device("cpu") if torch_device is None else torch.device(torch_device)

    def run(check: str, fn: Callable[[], str | None]) -> None:
        if check in skip_set:
            skipped.append(check)
            return
        try:
            note = fn()
        except _CheckFailed as exc:
            failed.append(check)
            notes.append(f"{check}: {exc}")
            return
        passed.append(check)
        if note:
            notes.append(f"{check}: {note}")

    dtypes = (torch.float32, torch.float64) if dtype is None else (dtype,)
    work = torch.float64 if dtype is None else dtype
    run("contract", lambda: _contract(device, dtypes, batch, seed, on))
    if "contract" in failed:
        rest = [c for c in CHECKS[1:] if c not in skip_set]
        skipped += rest
        if rest:
            notes.append(f"skipped {', '.join(rest)}: the contract failed")
    else:
        probe = _inner_points(device.domain, 3, seed + 1, on).to(work)
        if getattr(device, "stochastic", False):
            # a noisy device's rows differ call to call, and finite differences see the noise
            for check in ("rows", "gradients"):
                if check not in skip_set:
                    skip_set.add(check)
                    notes.append(f"{check}: skipped, the device is stochastic")
        run("rows", lambda: _rows(device, probe))
        if "gradients" in skip_set:
            skipped.append("gradients")
        elif device.differentiable and work != torch.float64:
            skipped.append("gradients")
            notes.append(
                f"gradients: skipped, finite differences need float64 (checked dtype={work})"
            )
        elif device.differentiable:
            run("gradients", lambda: _gradients(device, probe[:2], seed))
        else:
            skipped.append("gradients")
            notes.append("gradients: skipped, the device declares differentiable=False")
        run("pickle", lambda: _pickles(device, probe))

        def domain() -> str | None:
            nonlocal nonfinite
            nonfinite, note = _domain(device, n_points, seed, on, work)
            return note

        run("domain", domain)

    report = DeviceCheckReport(
        name=name,
        kind=type(device).__name__,
        passed=tuple(passed),
        failed=tuple(failed),
        skipped=tuple(skipped),
        nonfinite_fraction=nonfinite,
        n_points=n_points if nonfinite is not None else 0,
        seconds=time.perf_counter() - t0,
        notes=tuple(notes),
    )
    if strict and failed:
        raise DeviceContractError(
            f"{type(device).__name__} {name!r} failed check_device:\n"
            + "\n".join(n for n in notes if n.split(":", 1)[0] in failed)
            + "\n(pass strict=False to get the report instead of this error)"
        )
    return report


# --------------------------------------------------------------------------------------------
# the checks; each returns an optional note or raises _CheckFailed with what to fix
# --------------------------------------------------------------------------------------------


def _kind(device: Any) -> str:
    return type(device).__name__


def _contract(
    device: Any, dtypes: tuple[torch.dtype, ...], batch: int, seed: int, on: torch.device
) -> None:
    try:
        for dt in dtypes:
            check_contract(device, dtype=dt, batch=batch, seed=seed, torch_device=on)
    except DeviceContractError as exc:
        raise _CheckFailed(str(exc)) from exc
    if not isinstance(getattr(device, "differentiable", None), bool):
        raise _CheckFailed(
            f"{_kind(device)}.differentiable must be a bool, got "
            f"{getattr(device, 'differentiable', None)!r}"
        )
    describe = getattr(device, "describe", None)
    if callable(describe):
        try:
            json.dumps(describe())
        except (TypeError, ValueError) as exc:
            raise _CheckFailed(
                f"{_kind(device)}.describe() must return JSON-ready values (it is stored in "
                f"sweep manifests and reports): {exc}"
            ) from exc


def _inner_points(box: Box, n: int, seed: int, on: torch.device) -> torch.Tensor:
    low, high = box.tensors(dtype=torch.float64, device=on)
    gen = torch.Generator().manual_seed(seed)
    r = _INNER + (1 - 2 * _INNER) * torch.rand(n, box.dim, generator=gen, dtype=torch.float64)
    return low + (high - low) * r.to(on)


def _call(device: Any, u: torch.Tensor, what: str) -> torch.Tensor:
    try:
        with torch.no_grad():
            return device(u)
    except Exception as exc:
        raise _CheckFailed(
            f"calling the device on {what} raised {type(exc).__name__}: {exc}; a device should "
            "return NaN for points it cannot evaluate rather than raise"
        ) from exc


def _rows(device: Any, u: torch.Tensor) -> None:
    whole = _call(device, u, f"a batch of {u.shape[0]} rows")
    alone = torch.cat([_call(device, u[i : i + 1], "a single row") for i in range(u.shape[0])])
    # in float32, a batch and a single row may take different (equally rounded) kernel paths
    rtol = max(_ROWS_RTOL, 1000 * torch.finfo(u.dtype).eps)
    atol = rtol * _ROWS_ATOL / _ROWS_RTOL
    close = torch.isclose(whole, alone, rtol=rtol, atol=atol, equal_nan=True)
    if not bool(close.all()):
        i = int((~close).any(dim=1).nonzero()[0])
        raise _CheckFailed(
            f"row {i} of a batch gives {whole[i].tolist()} but {alone[i].tolist()} alone; the "
            "rows of a batch must not affect each other (no batch statistics, no state kept "
            "between calls)"
        )


def _gradients(device: Any, u: torch.Tensor, seed: int) -> str | None:
    """Autograd's directional derivative against central differences, in float64.

    One random direction ``w`` of the drives and one random weighting ``v`` of the outputs:
    ``v · (J w)`` by autograd (one forward and one backward) against
    ``v · (y(u + h w) - y(u - h w)) / 2h`` (two forwards). A wrong Jacobian entry changes
    ``v · J w`` for almost every ``(v, w)``, and the check costs three solves however many
    drives and outputs the device has, where a full ``gradcheck`` costs one backward per
    output and two forwards per drive (tens of seconds for an ODE device).
    """
    y = _call(device, u, "float64 probe rows")
    finite = torch.isfinite(y).all(dim=1)
    if not bool(finite.any()):
        return "skipped, the device gives non-finite outputs at the probe rows"
    u = u[finite].detach()
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(u.shape, generator=gen, dtype=u.dtype).to(u.device)
    v = torch.randn(u.shape[0], device.n_out, generator=gen, dtype=u.dtype).to(u.device)
    # the step grows with the drives' size so that rounding (eps_machine |y| / h) stays small
    h = _FD_EPS * max(1.0, float(u.abs().max()))
    try:
        with torch.enable_grad():
            uu = u.clone().requires_grad_(True)
            out = device(uu)
            (grad,) = torch.autograd.grad((out * v).sum(), uu, allow_unused=True)
    except Exception as exc:
        raise _CheckFailed(
            f"backward through the device raised {type(exc).__name__}: {exc}; fix it, or "
            "declare differentiable=False and train with PhysicsAware or CMAES"
        ) from exc
    analytic = 0.0 if grad is None else float((grad * w).sum())
    with torch.no_grad():
        numeric = float(((device(u + h * w) - device(u - h * w)) * v).sum() / (2 * h))
    if not abs(analytic - numeric) <= _FD_ATOL + _FD_RTOL * abs(numeric):
        why = "no gradient reaches the drives" if grad is None else "a wrong backward"
        raise _CheckFailed(
            f"autograd disagrees with finite differences at u={u.tolist()}: the directional "
            f"derivative is {analytic:.6g} by autograd and {numeric:.6g} by central "
            f"differences ({why}); fix the backward pass, or declare differentiable=False "
            "and train with PhysicsAware or CMAES"
        )
    return None


def _pickles(device: Any, u: torch.Tensor) -> None:
    try:
        copy = pickle.loads(pickle.dumps(device))
    except Exception as exc:
        raise _CheckFailed(
            f"the device cannot be pickled ({type(exc).__name__}: {exc}); devices are pickled "
            "when they go to worker processes (characterize --workers N). Build it from "
            "module-level functions, functools.partial or small callable classes instead of "
            "lambdas and nested functions"
        ) from exc
    y = _call(device, u, "the probe rows")
    y_copy = _call(copy, u, "the probe rows (the unpickled copy)")
    if y.shape != y_copy.shape or not bool(
        torch.isclose(y, y_copy, rtol=1e-12, atol=0.0, equal_nan=True).all()
    ):
        raise _CheckFailed(
            f"the unpickled copy gives {y_copy.tolist()} where the device gives {y.tolist()}; "
            "state the outputs depend on is lost in pickling (check __getstate__)"
        )


def _domain(
    device: Any, n_points: int, seed: int, on: torch.device, dtype: torch.dtype
) -> tuple[float, str | None]:
    box: Box = device.domain
    low, high = box.tensors(dtype=dtype, device=on)
    sobol = torch.quasirandom.SobolEngine(dimension=box.dim, scramble=True, seed=seed)
    u = low + (high - low) * sobol.draw(n_points, dtype=torch.float64).to(on, dtype)
    y = _call(device, u, f"{n_points} points of its domain")
    if tuple(y.shape) != (n_points, device.n_out):
        raise _CheckFailed(
            f"returned shape {tuple(y.shape)} for {n_points} domain points, expected "
            f"({n_points}, {device.n_out})"
        )
    bad = ~torch.isfinite(y).all(dim=1)
    fraction = float(bad.float().mean())
    if fraction == 0:
        return 0.0, None
    where = u[bad]
    return fraction, (
        f"{100 * fraction:.1f} % of {n_points} domain points give non-finite outputs (drives "
        f"from {_fmt(where.amin(0))} to {_fmt(where.amax(0))}); a sweep records them as "
        "failed points. Narrow the domain, or wrap the device in InputClip to keep drives in "
        "its safe range"
    )


def _fmt(v: torch.Tensor) -> str:
    return "[" + ", ".join(f"{x:.3g}" for x in v.tolist()) + "]"


def check_contract(
    device: Any,
    *,
    dtype: torch.dtype = torch.float32,
    batch: int = 3,
    seed: int = 0,
    torch_device: torch.device | str | None = None,
) -> None:
    """Probe ``device`` once with drives from its domain: the cheap part of the contract.

    Used by adapters at construction (``FormulaDevice(probe=True)``); :func:`check_device` runs
    it for float32 and float64 and then the other checks.

    Args:
        device: The device to probe.
        dtype: Floating dtype of the probe drives.
        batch: Number of probe rows.
        seed: Seed for the probe points.
        torch_device: Torch device of the probe drives (default the CPU).

    Raises:
        DeviceContractError: If the output has the wrong shape, dtype or torch device, or if
            the device's declared attributes are malformed.
    """
    kind = _kind(device)
    for attr in ("n_in", "n_out"):
        val = getattr(device, attr, None)
        if isinstance(val, bool) or not isinstance(val, int) or val < 1:
            raise DeviceContractError(f"{kind}.{attr} must be a positive int, got {val!r}")
    domain = getattr(device, "domain", None)
    if not isinstance(domain, Box) or domain.dim != device.n_in:
        raise DeviceContractError(
            f"{kind}.domain must be a Box with {device.n_in} bounds, got {domain!r}"
        )
    gen = torch.Generator().manual_seed(seed)
    low, high = domain.tensors(dtype=dtype, device=torch_device)
    r = torch.rand(batch, device.n_in, generator=gen, dtype=dtype).to(low.device)
    u = low + (high - low) * r
    with torch.no_grad():
        y = device(u)
    if not isinstance(y, torch.Tensor):
        raise DeviceContractError(
            f"{kind} returned {type(y).__name__}, expected a torch.Tensor of "
            f"shape ({batch}, {device.n_out})"
        )
    if tuple(y.shape) != (batch, device.n_out):
        raise DeviceContractError(
            f"{kind} returned shape {tuple(y.shape)} for drives of shape "
            f"{tuple(u.shape)}; expected ({batch}, {device.n_out}). Check n_out and that the "
            "function keeps the batch dimension first."
        )
    if y.dtype != dtype:
        raise DeviceContractError(
            f"{kind} returned dtype {y.dtype} for drives of dtype {dtype}; "
            "a device must keep the dtype of its drives."
        )
    if y.device != u.device:
        raise DeviceContractError(
            f"{kind} returned a tensor on {y.device} for drives on {u.device}; a device must "
            "keep the torch device of its drives"
        )
