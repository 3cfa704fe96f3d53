"""ODE devices: the output is read from the solution of ``dx/dt = rhs(t, x, u)`` over a window.

The drive ``u`` of each instance is held constant over ``[t_start, t_end]``; every instance of a
batch is solved at once. Three readouts are offered: the final state, the time integral and the
time average of chosen state components. Integrals are computed by augmenting the state with a
quadrature state ``dq/dt = x[components]``, so they are as accurate as the solver itself (no
sampling on a grid).

Solvers are typed objects: fixed-step :class:`Euler`, :class:`Heun` and :class:`RK4` (written
here, batched, optionally fused by ``torch.compile``), and :class:`Adaptive`, backed by
torchdiffeq (``odeint``, or ``odeint_adjoint`` for adjoint gradients).

Speed. When the rhs declares its closed form in C (``native_form()``, see
:mod:`quasineuron.devices.native_ode`) and no gradient is needed, the fixed-step solvers run a
native kernel by default: every stage of every step in one vectorised C loop, compiled once and
cached on disk. Otherwise (gradients, no native form, CUDA, ``native=False``) they run as
tensor operations, whose cost on a CPU is dominated by how many kernels one step launches; with
``layout="rows"`` and ``RK4(compile=True)`` ``torch.compile`` fuses a whole step into one loop
(its compile costs tens of seconds to minutes). ``bench/bench_ode_throughput.py`` measures them.
"""

from __future__ import annotations

import abc
import math
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import reduce
from typing import Any, ClassVar, Literal, final

import numpy as np
import torch

from quasineuron.devices.base import AbstractDevice, Box, InitialState
from quasineuron.errors import DeviceContractError, SolverError

__all__ = [
    "RK4",
    "AbstractODESolver",
    "AbstractReadout",
    "Adaptive",
    "Euler",
    "FinalState",
    "FixedStep",
    "Heun",
    "ODEDevice",
    "ODEResult",
    "TimeAverage",
    "TimeIntegral",
    "compile_method",
    "solve_reference",
]

Parts = tuple[torch.Tensor, ...]
Layout = Literal["batch", "rows"]


def _positive_finite(v: Any, label: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
        raise ValueError(f"{label} must be a finite number > 0, got {v!r}")
    return float(v)


# --------------------------------------------------------------------------------------------
# solvers
# --------------------------------------------------------------------------------------------


class AbstractODESolver(abc.ABC):
    """A solver of :class:`ODEDevice`: it *is* how the device's window is integrated.

    The device never asks which solver it has: it calls :meth:`integrate` and reads the few
    attributes below. A new solver is one class; a fixed-step one only writes
    :meth:`FixedStep.step`.

    Attributes:
        supports_clip: Whether ``ODEDevice(clip=...)`` works with this solver (the clip changes
            the state between steps, which only a fixed-step solver can do).
        adjoint: Whether gradients come from the adjoint ODE rather than from the tape; read by
            ``Direct(adjoint=True)`` to check that the device was built for it.
    """

    supports_clip: ClassVar[bool] = False
    adjoint: bool = False

    @abc.abstractmethod
    def integrate(self, device: ODEDevice, u: torch.Tensor) -> ODEResult:
        """Solve every row of ``u`` (batch, n_in) over the device's window.

        Args:
            device: The device; its helpers give the right-hand side in batch layout
                (:meth:`ODEDevice.rhs_batch`), the initial state and the readout
                (:meth:`ODEDevice.finish`).
            u: Drives, shape (batch, n_in), already checked.

        Returns:
            The readout and the per-row divergence mask.
        """


def compile_method(func: Callable[..., Any], obj: object) -> Callable[..., Any]:
    """``func`` bound to ``obj`` under ``torch.compile`` (dynamic shapes), on its own code copy.

    Dynamo keeps its graph cache and recompile limit on the code object, so every object
    (device, network) compiles its own copy and they do not share one limit.
    """
    fresh = types.FunctionType(
        func.__code__.replace(), func.__globals__, func.__name__, func.__defaults__
    )
    return torch.compile(types.MethodType(fresh, obj), dynamic=True)


@dataclass(frozen=True)
class FixedStep(AbstractODESolver):
    """Base of the fixed-step solvers: subclasses write :meth:`step`, the loop is shared.

    Args:
        dt: Largest step. The window is cut into ``ceil(length / dt)`` equal steps.
        compile: Fuse ``unroll`` steps into one ``torch.compile``'d function (cached per device,
            batch size and dtype). The first call per shape compiles (seconds on a small CPU);
            worth it from ~1e4 instances on. Fastest with ``layout="rows"``.
        unroll: Steps per fused call (at most; it is lowered to divide the number of steps).
            The divergence check runs once per call.
        native: Run the native kernel (:mod:`quasineuron.devices.native_ode`) when the rhs
            declares a native form and no gradient is needed: the default path then, many
            times faster than the torch one. ``False`` always runs the torch path.
            ``compile=True`` also runs the torch path (torch.compile was asked for).
    """

    dt: float
    compile: bool = False
    unroll: int = 1
    native: bool = True
    supports_clip: ClassVar[bool] = True
    # which step of the native kernel this solver is (0 Euler, 1 Heun, 2 RK4); None: none
    native_step: ClassVar[int | None] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "dt", _positive_finite(self.dt, f"{type(self).__name__}.dt"))
        if not isinstance(self.compile, bool):
            raise TypeError(f"{type(self).__name__}.compile must be a bool, got {self.compile!r}")
        if isinstance(self.unroll, bool) or not isinstance(self.unroll, int) or self.unroll < 1:
            raise ValueError(
                f"{type(self).__name__}.unroll must be an int >= 1, got {self.unroll!r}"
            )
        if not isinstance(self.native, bool):
            raise TypeError(f"{type(self).__name__}.native must be a bool, got {self.native!r}")

    order: int = field(default=0, init=False, repr=False)

    @abc.abstractmethod
    def step(
        self, f: Callable[[torch.Tensor, Parts], Parts], t: torch.Tensor, x: Parts, h: float
    ) -> Parts:
        """One step of size ``h`` from ``(t, x)``.

        Args:
            f: The right-hand side ``f(t, x) -> dx/dt`` on state parts.
            t: Time, a 0-d tensor.
            x: The state as a tuple of parts (one (batch, n) tensor, or one (batch,) tensor per
                component with ``layout="rows"``); apply the same arithmetic to every part.
            h: Step size.

        Returns:
            The state at ``t + h``, parts as in ``x``.
        """

    def _step(
        self, f: Callable[[torch.Tensor, Parts], Parts], t: torch.Tensor, x: Parts, h: float
    ) -> Parts:
        # the former name of step(), still called by code outside this module
        return self.step(f, t, x, h)

    def integrate(self, device: ODEDevice, u: torch.Tensor) -> ODEResult:
        """Equal steps of at most ``dt``; see :meth:`AbstractODESolver.integrate`.

        Runs the native kernel when it applies (see ``native``), else the torch steps below.
        """
        from quasineuron.devices.native_ode import try_native

        native = try_native(device, self, u)
        if native is not None:
            return native
        x0 = device.initial_state(u)
        rows = device.layout == "rows"
        # contiguous parts: fast loops, and the same strides on every call (a compiled graph is
        # specialised to them)
        u_parts: Parts = u.T.contiguous().unbind(0) if rows else (u.contiguous(),)
        parts: Parts = x0.T.contiguous().unbind(0) if rows else (x0.contiguous(),)
        # per-component bounds: floats for the rows layout, (n_state,) tensors for the batch one
        lo: tuple[float, ...] | torch.Tensor | None = None
        hi: tuple[float, ...] | torch.Tensor | None = None
        if device._clip is not None:
            if rows:
                lo, hi = device._clip
            else:
                lo = torch.tensor(device._clip[0], dtype=u.dtype, device=u.device)
                hi = torch.tensor(device._clip[1], dtype=u.dtype, device=u.device)
        block = device._block
        if self.compile:
            if device._compiled is None:
                # the batch size is dynamic, so a device compiles once per dtype, phase and
                # readout, not once per batch size
                device._compiled = compile_method(ODEDevice._block, device)
            block = device._compiled
        bound = device.bound if device.bound is not None else math.inf
        bad = torch.zeros(u.shape[0], dtype=torch.bool, device=u.device)
        n_total = 0
        phases = [
            (device.t_start, device._t_from, False),
            (device._t_from, device.t_end, device._quad),
        ]
        for ta, tb, quad in phases:
            if tb <= ta:
                continue
            n_steps = max(1, math.ceil((tb - ta) / self.dt - 1e-9))
            h = (tb - ta) / n_steps
            if quad:
                nq = len(device._comps)
                zeros = torch.zeros(u.shape[0], nq, dtype=u.dtype, device=u.device)
                parts = parts + (zeros.T.contiguous().unbind(0) if rows else (zeros,))
            # steps per call: the largest divisor of n_steps up to unroll, so that every call
            # has the same length (a shorter last call would be one more compiled graph)
            unroll = max(d for d in range(1, min(self.unroll, n_steps) + 1) if n_steps % d == 0)
            k = 0
            while k < n_steps:
                n = unroll
                t = torch.tensor(ta + k * h, dtype=u.dtype, device=u.device)
                parts, peak = block(t, parts, u_parts, h, n, quad, lo, hi)
                # NaN compares False, so non-finite rows are caught as well
                bad = bad | ~(peak < bound)
                k += n
            n_total += n_steps
        nx = device.n_state if rows else 1
        x = torch.stack(parts[:nx], dim=1) if rows else parts[0]
        q = None
        if device._quad:
            q = torch.stack(parts[nx:], dim=1) if rows else parts[nx]
        return device._finish(x, q, bad, n_total)


def _axpy(x: Parts, k: Parts, c: float) -> Parts:
    return tuple(a + c * b for a, b in zip(x, k, strict=True))


@final
@dataclass(frozen=True)
class Euler(FixedStep):
    """Forward Euler, first order: ``x += h f(t, x)``."""

    order: int = field(default=1, init=False, repr=False)
    native_step: ClassVar[int | None] = 0

    def step(self, f, t, x, h):
        """``x + h f(t, x)``; see :meth:`FixedStep.step`."""
        return _axpy(x, f(t, x), h)


@final
@dataclass(frozen=True)
class Heun(FixedStep):
    """Heun's method (explicit trapezoid), second order."""

    order: int = field(default=2, init=False, repr=False)
    native_step: ClassVar[int | None] = 1

    def step(self, f, t, x, h):
        """One Heun step; see :meth:`FixedStep.step`."""
        k1 = f(t, x)
        k2 = f(t + h, _axpy(x, k1, h))
        return tuple(a + (0.5 * h) * (b + c) for a, b, c in zip(x, k1, k2, strict=True))


@final
@dataclass(frozen=True)
class RK4(FixedStep):
    """The classical fourth-order Runge–Kutta method."""

    order: int = field(default=4, init=False, repr=False)
    native_step: ClassVar[int | None] = 2

    def step(self, f, t, x, h):
        """One classical Runge–Kutta step; see :meth:`FixedStep.step`."""
        k1 = f(t, x)
        k2 = f(t + 0.5 * h, _axpy(x, k1, 0.5 * h))
        k3 = f(t + 0.5 * h, _axpy(x, k2, 0.5 * h))
        k4 = f(t + h, _axpy(x, k3, h))
        return tuple(
            a + (h / 6.0) * (b1 + 2.0 * b2 + 2.0 * b3 + b4)
            for a, b1, b2, b3, b4 in zip(x, k1, k2, k3, k4, strict=True)
        )


_ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")


@final
@dataclass(frozen=True)
class Adaptive(AbstractODESolver):
    """An adaptive-step torchdiffeq solver (one step size shared by the whole batch).

    Args:
        method: torchdiffeq method: ``"dopri5"``, ``"dopri8"``, ``"bosh3"``, ``"fehlberg2"`` or
            ``"adaptive_heun"``.
        rtol: Relative tolerance.
        atol: Absolute tolerance.
        adjoint: Compute gradients with the adjoint method (``odeint_adjoint``, memory constant
            in the number of steps; Chen et al., "Neural Ordinary Differential Equations",
            NeurIPS 2018) instead of backpropagating through the solver's steps.
    """

    method: str = "dopri5"
    rtol: float = 1e-7
    atol: float = 1e-9
    adjoint: bool = False

    def __post_init__(self) -> None:
        if self.method not in _ADAPTIVE_METHODS:
            raise ValueError(
                f"Adaptive.method must be one of {_ADAPTIVE_METHODS}, got {self.method!r}; for a "
                "fixed step use RK4(dt=...), Heun(dt=...) or Euler(dt=...)"
            )
        object.__setattr__(self, "rtol", _positive_finite(self.rtol, "Adaptive.rtol"))
        object.__setattr__(self, "atol", _positive_finite(self.atol, "Adaptive.atol"))
        if not isinstance(self.adjoint, bool):
            raise TypeError(f"Adaptive.adjoint must be a bool, got {self.adjoint!r}")

    def integrate(self, device: ODEDevice, u: torch.Tensor) -> ODEResult:
        """Solve with torchdiffeq; see :meth:`AbstractODESolver.integrate`.

        A batch whose shared step collapses is split and retried, so that only the failing rows
        are reported diverged.

        Raises:
            SolverError: When an adjoint backward solve fails (collapsed step or non-finite
                adjoint); raised from the backward pass, naming the alternatives.
        """
        import torchdiffeq

        n, comps = device.n_state, list(device._comps)
        finfo = torch.finfo(u.dtype)
        bound = device.bound if device.bound is not None else math.sqrt(finfo.max)
        nfe = [0]

        def make_func(
            quad: bool, uu: torch.Tensor
        ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
            def func(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
                nfe[0] += 1
                x = y[:, :n]
                # freeze rows that left the bound: one diverging row must not stall the shared
                # adaptive step of the whole batch; they are flagged after the solve
                frozen = ~(x.abs().amax(1) < bound)[:, None]
                dx = torch.where(frozen, 0.0, device._rhs_batch(t, x, uu))
                if not quad:
                    return dx
                return torch.cat([dx, torch.where(frozen, 0.0, x[:, comps])], dim=1)

            return func

        def integrate(
            quad: bool, y0: torch.Tensor, ta: float, tb: float, uu: torch.Tensor
        ) -> torch.Tensor:
            tt = torch.tensor([ta, tb], dtype=u.dtype, device=u.device)
            kw: dict[str, Any] = {"rtol": self.rtol, "atol": self.atol, "method": self.method}
            if not (self.adjoint and torch.is_grad_enabled()):
                return torchdiffeq.odeint(make_func(quad, uu), y0, tt, **kw)[-1]
            params: list[torch.Tensor] = []
            if isinstance(device.rhs, torch.nn.Module):
                params = [p for p in device.rhs.parameters() if p.requires_grad]

            def solve(y0_: torch.Tensor, uu_: torch.Tensor) -> torch.Tensor:
                adjoint_params = ((uu_,) if uu_.requires_grad else ()) + tuple(params)
                out = torchdiffeq.odeint_adjoint(
                    make_func(quad, uu_), y0_, tt, adjoint_params=adjoint_params, **kw
                )
                return out[-1]

            def explain(reason: str) -> str:
                return _adjoint_failure(device, self, reason)

            return _GuardedAdjoint.apply(solve, explain, y0, uu, *params)

        def run(uu: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """Solve rows ``uu`` from ``y``; returns the end state (batch, n [+ n_q]) and bad."""
            y_start = y
            try:
                if device._t_from > device.t_start:
                    y = integrate(False, y, device.t_start, device._t_from, uu)
                if device._quad:
                    zeros = torch.zeros(uu.shape[0], len(comps), dtype=u.dtype, device=u.device)
                    y = torch.cat([y, zeros], dim=1)
                    y = integrate(True, y, device._t_from, device.t_end, uu)
                elif device._t_from == device.t_start:
                    y = integrate(False, y, device.t_start, device.t_end, uu)
            except (AssertionError, RuntimeError, OverflowError):
                # torchdiffeq reports a collapsed step ("underflow in dt") by AssertionError.
                # The step is shared by the batch, so one blowing-up row fails them all: split
                # the batch and retry, so that only the failing rows are reported.
                if uu.shape[0] == 1:
                    width = n + (len(comps) if device._quad else 0)
                    nan = torch.full((1, width), math.nan, dtype=u.dtype, device=u.device)
                    return nan, torch.ones(1, dtype=torch.bool, device=u.device)
                m = uu.shape[0] // 2
                y_a, bad_a = run(uu[:m], y_start[:m])
                y_b, bad_b = run(uu[m:], y_start[m:])
                return torch.cat([y_a, y_b]), torch.cat([bad_a, bad_b])
            return y, ~(y[:, :n].abs().amax(1) < bound)

        y_end, bad = run(u, device.initial_state(u))
        return device._finish(y_end[:, :n], y_end[:, n:] if device._quad else None, bad, nfe[0])


class _GuardedAdjoint(torch.autograd.Function):
    """An adjoint solve whose backward failures become a :class:`SolverError` that explains them.

    torchdiffeq's adjoint integrates backward in time inside ``loss.backward()``; when that
    integration is stiff or unstable it stops with ``AssertionError: underflow in dt`` (or
    meets non-finite values) and the user sees neither the device nor a way out. The solve
    runs inside this function's forward on detached inputs, and its backward takes the
    gradients of that inner graph, so the failure is caught where it happens.
    """

    @staticmethod
    def forward(ctx: Any, solve: Any, explain: Any, y0: torch.Tensor, uu: torch.Tensor, *params):
        with torch.enable_grad():
            y0_ = y0.detach().requires_grad_(y0.requires_grad)
            uu_ = uu.detach().requires_grad_(uu.requires_grad)
            out = solve(y0_, uu_)
        ctx.inner = (out, (y0_, uu_, *params))
        ctx.explain = explain
        return out.detach()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        out, inputs = ctx.inner
        wanted = [t for t in inputs if t.requires_grad]
        grads: tuple[torch.Tensor | None, ...] = ()
        if wanted and out.requires_grad:
            try:
                # retained: backward may run more than once (gradcheck, retain_graph=True); the
                # inner graph of an adjoint solve holds no steps, so keeping it costs little
                grads = torch.autograd.grad(out, wanted, grad, allow_unused=True, retain_graph=True)
            except AssertionError as exc:
                # torchdiffeq's "underflow in dt" (the step collapsed) and "non-finite values
                # in state" (the adjoint or the re-integrated state became inf/NaN)
                raise SolverError(ctx.explain(f"{exc}")) from exc
        it = iter(grads)
        full = [next(it, None) if t.requires_grad else None for t in inputs]
        return (None, None, *full)


def _adjoint_failure(device: Any, solver: Adaptive, reason: str) -> str:
    return (
        f"the adjoint (backward-in-time) solve of ODE device {device.name!r} failed: {reason}. "
        f"Solver: {solver!r} (rtol={solver.rtol:g}, atol={solver.atol:g}). The backward "
        "integration of the adjoint is stiff or unstable at these drives even though the "
        "forward solve succeeded. Alternatives: a fixed-step solver such as RK4(dt=...) with a "
        "small enough dt, which backpropagates through its steps; Adaptive(..., adjoint=False), "
        "which backpropagates through the adaptive steps (memory grows with the steps); other "
        "tolerances (tighter rtol/atol when the error control lost track, looser when the step "
        "collapsed on a stiff region); or train through a twin (Surrogate() or PhysicsAware() "
        "mode), which needs no gradient of the device"
    )


# --------------------------------------------------------------------------------------------
# readouts
# --------------------------------------------------------------------------------------------


def _norm_components(components: Any, label: str) -> tuple[int, ...] | None:
    if components is None:
        return None
    if isinstance(components, int):
        components = (components,)
    comps = tuple(components)
    if not comps or any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in comps):
        raise ValueError(
            f"{label}.components must be a non-empty tuple of state indices >= 0 or None (all), "
            f"got {components!r}"
        )
    return comps


def _norm_rest(rest: Any, label: str) -> float | tuple[float, ...]:
    if isinstance(rest, (int, float)) and not isinstance(rest, bool):
        return float(rest)
    try:
        vals = tuple(float(v) for v in rest)
    except TypeError as exc:
        raise TypeError(f"{label}.rest must be a float or a tuple of floats, got {rest!r}") from exc
    if not all(math.isfinite(v) for v in vals):
        raise ValueError(f"{label}.rest must be finite, got {rest!r}")
    return vals


class AbstractReadout(abc.ABC):
    """What an :class:`ODEDevice` outputs from its trajectory; it *is* how that is computed.

    The device integrates the state and, when :attr:`needs_quadrature` is set, the quadrature
    state ``q = ∫_{t_from}^{t_end} x[components] dt`` along with it (as accurate as the solver),
    then calls :meth:`finish`. It never asks which readout it has.

    Attributes:
        components: State indices read; ``None`` reads the whole state.
        rest: Subtracted from the state (a float or one value per component).
        t_from: Start of the integration window; ``None`` means the device's ``t_start``.
        needs_quadrature: Whether :meth:`finish` needs the quadrature state.
    """

    components: tuple[int, ...] | None = None
    rest: float | tuple[float, ...] = 0.0
    t_from: float | None = None
    needs_quadrature: ClassVar[bool] = False

    @abc.abstractmethod
    def finish(self, value: torch.Tensor, length: float) -> torch.Tensor:
        """The output from the final state or the quadrature.

        Args:
            value: ``x(t_end)[components]`` when :attr:`needs_quadrature` is False, else the
                quadrature ``∫ x[components] dt`` over the window; shape (batch, n_out).
            length: Length of the window ``t_end - t_from``.

        Returns:
            The readout, shape (batch, n_out).
        """

    def _rest(self, like: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.rest, dtype=like.dtype, device=like.device)


@final
@dataclass(frozen=True)
class FinalState(AbstractReadout):
    """Read ``x(t_end)[components] - rest``.

    Args:
        components: State indices to output; ``None`` outputs the whole state.
        rest: Subtracted from the output: a float, or one value per output component (e.g.
            the rest state, so the output is the deviation from rest).
    """

    components: tuple[int, ...] | None = None
    rest: float | tuple[float, ...] = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "components", _norm_components(self.components, "FinalState"))
        object.__setattr__(self, "rest", _norm_rest(self.rest, "FinalState"))

    def finish(self, value: torch.Tensor, length: float) -> torch.Tensor:
        """``x(t_end)[components] - rest``; see :meth:`AbstractReadout.finish`."""
        return value - self._rest(value)


@final
@dataclass(frozen=True)
class TimeIntegral(AbstractReadout):
    """Read ``∫_{t_from}^{t_end} (x(t)[components] - rest) dt``.

    Args:
        components: State indices to integrate; ``None`` integrates the whole state.
        rest: Subtracted from the integrand (a float or one value per component).
        t_from: Start of the integral; ``None`` means ``t_start`` of the device.
    """

    components: tuple[int, ...] | None = None
    rest: float | tuple[float, ...] = 0.0
    t_from: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "components", _norm_components(self.components, "TimeIntegral"))
        object.__setattr__(self, "rest", _norm_rest(self.rest, "TimeIntegral"))

    needs_quadrature: ClassVar[bool] = True

    def finish(self, value: torch.Tensor, length: float) -> torch.Tensor:
        """``∫ x dt - rest · length``; see :meth:`AbstractReadout.finish`."""
        return value - self._rest(value) * length


@final
@dataclass(frozen=True)
class TimeAverage(AbstractReadout):
    """Read ``(1 / (t_end - t_from)) ∫_{t_from}^{t_end} (x(t)[components] - rest) dt``.

    Args:
        components: State indices to average; ``None`` averages the whole state.
        rest: Subtracted from the integrand (a float or one value per component).
        t_from: Start of the averaging window; ``None`` means ``t_start`` of the device.
    """

    components: tuple[int, ...] | None = None
    rest: float | tuple[float, ...] = 0.0
    t_from: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "components", _norm_components(self.components, "TimeAverage"))
        object.__setattr__(self, "rest", _norm_rest(self.rest, "TimeAverage"))

    needs_quadrature: ClassVar[bool] = True

    def finish(self, value: torch.Tensor, length: float) -> torch.Tensor:
        """``(∫ x dt - rest · length) / length``; see :meth:`AbstractReadout.finish`."""
        return (value - self._rest(value) * length) / length


Readout = AbstractReadout


# --------------------------------------------------------------------------------------------
# result
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ODEResult:
    """Per-instance outcome of an ODE solve.

    Attributes:
        y: Readout, shape (batch, n_out); NaN rows where ``diverged``.
        x: State at ``t_end``, shape (batch, n_state) (diagnostic; may be non-finite where
            ``diverged``).
        diverged: Shape (batch,), bool: the state became non-finite or left ``|x| < bound``
            (fixed-step solvers check after every fused call, adaptive ones at every
            right-hand-side evaluation), or the adaptive solver failed.
        n_steps: Fixed steps taken, or right-hand-side evaluations of an adaptive solver.
    """

    y: torch.Tensor
    x: torch.Tensor
    diverged: torch.Tensor
    n_steps: int


# --------------------------------------------------------------------------------------------
# the device
# --------------------------------------------------------------------------------------------


@final
class ODEDevice(AbstractDevice):
    """A device that solves ``dx/dt = rhs(t, x, u)`` from ``x0`` over ``[t_start, t_end]``.

    ``u`` is constant over the window. The output is a :class:`FinalState`,
    :class:`TimeIntegral` or :class:`TimeAverage` readout of the trajectory.

    The layout in which ``rhs`` sees the state decides the speed of the fixed-step solvers:

    - ``layout="batch"`` (default): ``rhs(t, x, u)`` gets ``x`` of shape (batch, n_state) and
      ``u`` of shape (batch, n_in) and returns (batch, n_state). ``t`` is a 0-d tensor.
    - ``layout="rows"``: ``x`` is a *tuple* of ``n_state`` tensors of shape (batch,) (``x[i]``
      is state component i of every instance) and ``u`` a tuple of ``n_in`` tensors (batch,).
      ``rhs`` returns a sequence (list or tuple) of ``n_state`` tensors of shape (batch,).
      With ``RK4(compile=True)`` this lets the compiler fuse a whole step into one vectorised
      loop; returning ``torch.stack(...)`` instead is accepted but defeats that fusion.

    Example:
        >>> def rhs(t, x, u):  # dx/dt = -x + u, layout="batch"
        ...     return -x + u
        >>> dev = ODEDevice(rhs, x0=torch.zeros(1), n_in=1, t_end=1.0,
        ...                 readout=FinalState(), solver=RK4(dt=0.01))
        >>> dev(torch.ones(2, 1, dtype=torch.float64))  # 1 - exp(-1)
        tensor([[0.6321],
                [0.6321]], dtype=torch.float64)

    Divergence is reported, never raised: rows whose state becomes non-finite or reaches
    ``|x| >= bound`` give NaN outputs, and :meth:`solve` returns the per-row mask.

    Args:
        rhs: Right-hand side in the chosen ``layout``. Rows must be independent. If it is a
            ``torch.nn.Module`` it is registered as a submodule.
        x0: Initial state: a tensor (n_state,) used for every row, or a callable
            ``u (batch, n_in) -> (batch, n_state)``.
        n_in: Number of drives.
        t_end: End of the window.
        t_start: Start of the window.
        readout: What to output (default: the whole final state).
        solver: ``RK4(dt=...)``, ``Heun(dt=...)``, ``Euler(dt=...)`` or ``Adaptive(...)``;
            default ``RK4`` with 100 steps over the window.
        layout: How ``rhs`` sees states and drives, see above.
        n_state: Size of the state; required when ``x0`` is a callable.
        clip: ``(lo, hi)``: clamp the state into this box after every step (fixed-step solvers
            only). Each of ``lo``/``hi`` is a float or one value per state component.
        bound: Rows whose ``max_i |x_i|`` reaches this are reported diverged (NaN output).
            ``None``: only non-finite states count as diverged; adaptive solvers then freeze
            rows at ``sqrt(finfo.max)`` so that one row cannot stall the shared step size.
        domain: Box of drives to characterise the device on; default ``[-1, 1]^n_in``.
        name: Name used in reports.
        params: JSON-ready device parameters recorded in :meth:`describe`.

    Raises:
        ValueError: For bad sizes, a window with ``t_end <= t_start``, readout components out
            of range or a clip box with ``lo >= hi``.
        TypeError: For a non-callable ``rhs`` or a solver/readout of the wrong type.
    """

    def __init__(
        self,
        rhs: Callable[..., Any],
        *,
        x0: torch.Tensor | Callable[[torch.Tensor], torch.Tensor],
        n_in: int,
        t_end: float,
        t_start: float = 0.0,
        readout: Readout | None = None,
        solver: AbstractODESolver | None = None,
        layout: Layout = "batch",
        n_state: int | None = None,
        clip: tuple[float | Sequence[float], float | Sequence[float]] | None = None,
        bound: float | None = None,
        domain: Box | None = None,
        name: str = "ode",
        params: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not callable(rhs):
            raise TypeError(f"rhs must be callable rhs(t, x, u), got {rhs!r}")
        if isinstance(n_in, bool) or not isinstance(n_in, int) or n_in < 1:
            raise ValueError(f"n_in must be a positive int, got {n_in!r}")
        t_start, t_end = float(t_start), float(t_end)
        if not (math.isfinite(t_start) and math.isfinite(t_end) and t_end > t_start):
            raise ValueError(
                f"need finite t_start < t_end, got t_start={t_start!r}, t_end={t_end!r}"
            )
        if layout not in ("batch", "rows"):
            raise ValueError(
                f"layout must be 'batch' (x: (batch, n_state)) or 'rows' (x: tuple of n_state "
                f"(batch,) tensors), got {layout!r}"
            )
        self._x0 = InitialState(x0, n_state=n_state, label="x0")
        n_state = self._x0.n_state
        if readout is None:
            readout = FinalState()
        if not isinstance(readout, AbstractReadout):
            raise TypeError(
                f"readout must be FinalState(...), TimeIntegral(...), TimeAverage(...) or another "
                f"AbstractReadout, got {type(readout).__name__}"
            )
        comps = readout.components if readout.components is not None else tuple(range(n_state))
        if max(comps) >= n_state:
            raise ValueError(f"readout components {comps} out of range for n_state={n_state}")
        if isinstance(readout.rest, tuple) and len(readout.rest) != len(comps):
            raise ValueError(
                f"readout.rest has {len(readout.rest)} values for {len(comps)} components; give "
                "one value per component or a single float"
            )
        t_from = t_start
        if readout.t_from is not None:
            t_from = float(readout.t_from)
            if not (t_start <= t_from < t_end):
                raise ValueError(
                    f"readout.t_from must lie in [t_start, t_end) = [{t_start}, {t_end}), got "
                    f"{readout.t_from!r}"
                )
        if solver is None:
            solver = RK4(dt=(t_end - t_start) / 100)
        if not isinstance(solver, AbstractODESolver):
            raise TypeError(
                "solver must be RK4(dt=...), Heun(dt=...), Euler(dt=...), Adaptive(...) or "
                f"another AbstractODESolver, got {type(solver).__name__}"
            )
        self._clip = None if clip is None else _norm_clip(clip, n_state)
        if self._clip is not None and not solver.supports_clip:
            raise ValueError(
                f"clip works with the fixed-step solvers only (it changes the state between "
                f"steps), not with {solver!r}; with an adaptive solver use bound=... to flag "
                "diverging rows"
            )
        if bound is not None:
            bound = _positive_finite(bound, "bound")
        if domain is None:
            domain = Box(low=(-1.0,) * n_in, high=(1.0,) * n_in)
        if not isinstance(domain, Box) or domain.dim != n_in:
            raise ValueError(f"domain must be a Box with {n_in} bounds, got {domain!r}")

        self.rhs = rhs
        self.n_in, self.n_state, self.n_out = n_in, n_state, len(comps)
        self.t_start, self.t_end, self._t_from = t_start, t_end, t_from
        self.readout, self.solver, self.layout = readout, solver, layout
        self.bound = bound
        self.domain = domain
        self.name = name
        self.params = dict(params or {})
        self.differentiable = True
        # read by Direct(adjoint=True): gradients come from the adjoint ODE, not the tape
        self.adjoint = bool(solver.adjoint)
        self._comps = comps
        self._quad = readout.needs_quadrature
        self._compiled: Callable[..., Any] | None = None
        # (path, why) of the last fixed-step solve: ("native", ...) or ("torch", ...); the
        # reasons already logged, so that each is noted once per device
        self.solve_path: tuple[str, str] = ("", "not solved yet")
        self._path_notes: set[str] = set()

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles leave the compiled step behind; it is rebuilt on first use."""
        state = self.__dict__.copy()
        state["_compiled"] = None
        return state

    # -- helpers ------------------------------------------------------------------------------

    def initial_state(self, u: torch.Tensor) -> torch.Tensor:
        """Initial state for drives ``u`` (batch, n_in) → (batch, n_state), dtype of ``u``."""
        return self._x0(u)

    def _rhs_batch(self, t: torch.Tensor, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The user's rhs in batch layout whatever its own layout: (batch, n_state)."""
        if self.layout == "batch":
            dx = self.rhs(t, x, u)
            if not isinstance(dx, torch.Tensor) or dx.shape != x.shape:
                got = tuple(dx.shape) if isinstance(dx, torch.Tensor) else type(dx).__name__
                raise DeviceContractError(
                    f"rhs(t, x, u) must return shape {tuple(x.shape)} (batch, n_state) with "
                    f"layout='batch', got {got}"
                )
            return dx
        rows = self._rhs_rows(t, x.unbind(1), u.unbind(1))
        return torch.stack(rows, dim=1)

    def _rhs_rows(self, t: torch.Tensor, x: Parts, u: Parts) -> Parts:
        dx = self.rhs(t, x, u)
        if isinstance(dx, torch.Tensor):
            dx = dx.unbind(0)
        dx = tuple(dx)
        if len(dx) != self.n_state or any(d.shape != x[0].shape for d in dx):
            raise DeviceContractError(
                f"rhs(t, x, u) must return {self.n_state} tensors of shape "
                f"{tuple(x[0].shape)} (one per state component) with layout='rows', got "
                f"{[tuple(d.shape) for d in dx]}"
            )
        return dx

    def _finish(
        self, x: torch.Tensor, q: torch.Tensor | None, bad: torch.Tensor, n_steps: int
    ) -> ODEResult:
        """Readout from final state ``x`` and quadrature ``q`` (batch, n_out); NaN bad rows."""
        value = x[:, list(self._comps)] if q is None else q
        y = self.readout.finish(value, self.t_end - self._t_from)
        bad = bad | ~torch.isfinite(y).all(dim=1)
        # on the CPU a batch without a diverged row (the common case) skips the masking pass
        if y.device.type != "cpu" or bad.any():
            y = torch.where(bad[:, None], torch.full_like(y, math.nan), y)
        return ODEResult(y=y, x=x, diverged=bad, n_steps=n_steps)

    # -- fixed-step path ---------------------------------------------------------------------

    def _block(
        self,
        t: torch.Tensor,
        parts: Parts,
        u: Parts,
        h: float,
        n: int,
        quad: bool,
        lo: Any,
        hi: Any,
    ) -> tuple[Parts, torch.Tensor]:
        """``n`` fixed steps from ``(t, parts)``; returns new parts and ``max |x|`` per row.

        ``parts`` are the state (one (batch, n_state) tensor, or n_state rows) followed, when
        ``quad``, by the quadrature state (one (batch, n_q) tensor, or n_q rows).
        """
        rows = self.layout == "rows"
        nx = self.n_state if rows else 1
        comps = list(self._comps)

        def f(tt: torch.Tensor, p: Parts) -> Parts:
            xs = p[:nx]
            dx = self._rhs_rows(tt, xs, u) if rows else (self._rhs_batch(tt, xs[0], u[0]),)
            if not quad:
                return dx
            dq = tuple(xs[c] for c in comps) if rows else (xs[0][:, comps],)
            return dx + dq

        # only FixedStep.integrate calls this, so the solver has a step method
        step = self.solver.step  # type: ignore[attr-defined]
        for _ in range(n):
            parts = step(f, t, parts, h)
            t = t + h
            if lo is not None:
                xs = parts[:nx]
                if rows:
                    xs = tuple(a.clamp(lo[i], hi[i]) for i, a in enumerate(xs))
                else:
                    xs = (torch.clamp(xs[0], lo, hi),)
                parts = xs + parts[nx:]
        xs = parts[:nx]
        peak = reduce(torch.maximum, [a.abs() for a in xs]) if rows else xs[0].abs().amax(1)
        return parts, peak

    # -- adaptive path -----------------------------------------------------------------------

    # -- public ------------------------------------------------------------------------------

    def solve(self, u: torch.Tensor) -> ODEResult:
        """Solve every row of ``u`` and report per-row divergence.

        Differentiable (the result's ``y`` carries the graph when grad is enabled).

        Args:
            u: Drives, shape (batch, n_in).

        Returns:
            Readout (NaN rows where diverged), final state, divergence mask and step count.

        Raises:
            ValueError: If ``u`` does not have shape (batch, n_in).
            DeviceContractError: If ``rhs`` or ``x0`` return the wrong shape.
        """
        self._check_drives(u)
        return self.solver.integrate(self, u)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """Readout of the solution for each row of ``u``.

        Args:
            u: Drives, shape (batch, n_in).

        Returns:
            Outputs, shape (batch, n_out), same dtype as ``u``; NaN rows where the solution
            diverged (see :meth:`solve` for the mask).
        """
        return self.solve(u).y

    def describe(self) -> dict[str, Any]:
        """JSON-ready description: contract, window, readout, solver, layout and params."""
        d = super().describe()
        d.update(
            n_state=self.n_state,
            t_start=self.t_start,
            t_end=self.t_end,
            layout=self.layout,
            readout={"type": type(self.readout).__name__, **_fields(self.readout)},
            solver={"type": type(self.solver).__name__, **_fields(self.solver)},
            clip=None if self._clip is None else [list(self._clip[0]), list(self._clip[1])],
            bound=self.bound,
            params=self.params,
        )
        return d

    def extra_repr(self) -> str:
        """Shown in ``repr(device)``."""
        return (
            f"{super().extra_repr()}, n_state={self.n_state}, "
            f"t=[{self.t_start}, {self.t_end}], solver={self.solver!r}"
        )


def _fields(obj: Any) -> dict[str, Any]:
    import dataclasses

    out = {}
    for fld in dataclasses.fields(obj):
        if not fld.init:
            continue
        v = getattr(obj, fld.name)
        out[fld.name] = list(v) if isinstance(v, tuple) else v
    return out


def _norm_clip(clip: Any, n_state: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    try:
        lo, hi = clip
    except (TypeError, ValueError) as exc:
        raise ValueError(f"clip must be a pair (lo, hi), got {clip!r}") from exc

    def per_component(v: Any, label: str) -> tuple[float, ...]:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return (float(v),) * n_state
        vals = tuple(float(a) for a in v)
        if len(vals) != n_state:
            raise ValueError(
                f"clip {label} needs 1 or n_state={n_state} values, got {len(vals)}: {v!r}"
            )
        return vals

    lo_t, hi_t = per_component(lo, "lo"), per_component(hi, "hi")
    if not all(a < b for a, b in zip(lo_t, hi_t, strict=True)):
        raise ValueError(f"clip needs lo < hi for every component, got lo={lo!r}, hi={hi!r}")
    return lo_t, hi_t


# --------------------------------------------------------------------------------------------
# reference solution
# --------------------------------------------------------------------------------------------


def solve_reference(
    device: ODEDevice, u: torch.Tensor, *, rtol: float = 1e-10, atol: float = 1e-12
) -> torch.Tensor:
    """Solve each row of ``u`` with ``scipy.integrate.solve_ivp(method="DOP853")`` for checks.

    One row at a time in float64 (slow, for validation only). The state is augmented with the
    readout's quadrature, exactly as the device does; ``clip`` and ``bound`` are ignored.

    Args:
        device: The ODE device to check.
        u: Drives, shape (batch, n_in).
        rtol: Relative tolerance of DOP853.
        atol: Absolute tolerance of DOP853.

    Returns:
        Readout, shape (batch, n_out), float64 on the CPU; NaN rows where scipy failed.
    """
    from scipy.integrate import solve_ivp

    if not isinstance(device, ODEDevice):
        raise TypeError(f"device must be an ODEDevice, got {type(device).__name__}")
    device._check_drives(u)
    u64 = u.detach().to(dtype=torch.float64, device="cpu")
    n, comps = device.n_state, list(device._comps)
    with torch.no_grad():
        x0_all = device.initial_state(u64)
    out = np.full((u64.shape[0], device.n_out), np.nan)
    for b in range(u64.shape[0]):  # reference path: one solve_ivp call per row by design
        ub = u64[b : b + 1]

        def fun(t: float, y: np.ndarray, quad: bool, ub: torch.Tensor = ub) -> np.ndarray:
            with torch.no_grad():
                x = torch.from_numpy(y[:n]).reshape(1, n)
                dx = device._rhs_batch(torch.tensor(t, dtype=torch.float64), x, ub)[0].numpy()
            return np.concatenate([dx, y[comps]]) if quad else dx

        y = x0_all[b].numpy().astype(np.float64)
        ok = True
        phases = [
            (device.t_start, device._t_from, False),
            (device._t_from, device.t_end, device._quad),
        ]
        for ta, tb, quad in phases:
            if tb <= ta:
                continue
            y0 = np.concatenate([y, np.zeros(len(comps))]) if quad else y
            sol = solve_ivp(fun, (ta, tb), y0, method="DOP853", rtol=rtol, atol=atol, args=(quad,))
            if not sol.success:
                ok = False
                break
            y = sol.y[:, -1]
        if not ok or not np.all(np.isfinite(y)):
            continue
        x_end = torch.from_numpy(y[:n].copy()).reshape(1, n)
        q = torch.from_numpy(y[n:].copy()).reshape(1, -1) if device._quad else None
        res = device._finish(x_end, q, torch.zeros(1, dtype=torch.bool), 0)
        out[b] = res.y[0].numpy()
    return torch.from_numpy(out)
