"""Fixed-point devices: the output is read from a steady state of the device's own dynamics.

A device is given by ``f(x, u)``: either the right-hand side of an ODE, ``dx/dt = f(x, u)``
(``kind="ode"``, fixed point where ``f = 0``), or a map ``x ← f(x, u)`` (``kind="map"``, fixed
point where ``x = f(x, u)``). Both are reduced to one residual,

    F(x, u) = f(x, u)          (kind="ode")
    F(x, u) = f(x, u) - x      (kind="map")

and the solvers (:class:`Newton`, :class:`BatchedNewton`, :class:`Anderson`,
:class:`Integrate`) only ever see ``F``. They run batched over instances under
``torch.no_grad()``; all but :class:`BatchedNewton` (a fixed step count, checked once at the
end, for throughput) keep per-instance convergence masks.

Gradients come from the implicit function theorem, ``dx*/du = -(∂F/∂x)^{-1} ∂F/∂u``, attached
with the "one Newton step with grad" construction (as in Bai et al., "Deep Equilibrium Models",
NeurIPS 2019, and the phantom-gradient literature):

    x_out = x* - J^{-1} F(x*, u),    J = ∂F/∂x at x*, detached; x* detached.

Its value is ``x*`` refined by one Newton step. Because ``x*`` and ``J`` are constants for
autograd, its first derivative with respect to ``u`` and to anything ``f`` closes over
(parameters, buffers or captured tensors that require grad) is exactly
``-J^{-1} ∂F/∂(u, theta)``, the implicit-function-theorem gradient. The backward pass is a VJP of
``F`` plus one batched ``(n_state × n_state)`` solve with ``J^T`` per instance. Second
derivatives are not those of ``x*`` (``J`` is held constant).
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, final

import torch

from quasineuron.devices.base import AbstractDevice, Box, InitialState
from quasineuron.errors import DeviceContractError

__all__ = [
    "AbstractFixedPointSolver",
    "Anderson",
    "BatchedNewton",
    "DriveTable",
    "FixedPointDevice",
    "FixedPointResult",
    "FixedPointSolver",
    "Integrate",
    "Newton",
    "implicit_fixed_point",
    "residual_tolerance",
]

Residual = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------------------------
# results and helpers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FixedPointResult:
    """Per-instance outcome of a fixed-point solve.

    Attributes:
        x: Last iterate, shape (batch, n_state). For rows with ``converged=False`` this is only
            diagnostic (it may be non-finite); :class:`FixedPointDevice` turns those rows to NaN.
        residual: ``max_i |F_i(x, u)|`` per row, shape (batch,), same dtype as ``x``.
        iterations: Solver iterations (Newton steps, Anderson updates or integration steps,
            fallback included) per row, shape (batch,), int64.
        converged: Whether the row met the tolerance, shape (batch,), bool.
        fallback: Rows a solver handed to its fallback solver, shape (batch,), bool; None for
            solvers that do not report it (see :class:`BatchedNewton`).
    """

    x: torch.Tensor
    residual: torch.Tensor
    iterations: torch.Tensor
    converged: torch.Tensor
    fallback: torch.Tensor | None = None

    def with_rows(
        self, idx: torch.Tensor, part: FixedPointResult, *, extra_iterations: int | torch.Tensor = 0
    ) -> FixedPointResult:
        """This result with rows ``idx`` replaced by ``part`` (a re-solve of those rows).

        The iteration counts of ``part`` (plus ``extra_iterations``) are added to the rows'.
        """
        x, res, it, conv = (
            t.clone() for t in (self.x, self.residual, self.iterations, self.converged)
        )
        x[idx], res[idx], conv[idx] = part.x, part.residual, part.converged
        it[idx] += part.iterations + extra_iterations
        fb = None if self.fallback is None else self.fallback.clone()
        return FixedPointResult(x=x, residual=res, iterations=it, converged=conv, fallback=fb)


def residual_tolerance(tol: float, dtype: torch.dtype, *, ulps: float = 256.0) -> float:
    """Tolerance actually used for dtype ``dtype``: ``max(tol, ulps · machine epsilon)``.

    Solver tolerances are meant for float64; in float32 a residual of 1e-10 is below rounding,
    so the tolerance is raised to a few hundred ulps instead of failing every row.

    Args:
        tol: Requested absolute tolerance on ``max_i |F_i|``.
        dtype: Floating dtype of the solve.
        ulps: Floor in units of the dtype's machine epsilon.

    Returns:
        The effective tolerance.
    """
    return max(float(tol), ulps * torch.finfo(dtype).eps)


def _inf_norm(v: torch.Tensor) -> torch.Tensor:
    """Row-wise max-abs norm, (batch, n) → (batch,); NaN rows give NaN."""
    out = v.abs().amax(dim=-1)
    return torch.where(torch.isfinite(v).all(dim=-1), out, torch.full_like(out, math.nan))


def _jacobian(fn: Residual, x: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row Jacobian ``∂F/∂x`` by ``n_state`` batched VJPs (rows of ``F`` are independent).

    Args:
        fn: Residual ``F(x, u)``, (batch, n_state), (batch, n_in) → (batch, n_state).
        x: States, (batch, n_state).
        u: Drives, (batch, n_in).

    Returns:
        ``(J, F)``: J (batch, n_state, n_state) with ``J[b, i, j] = ∂F_i/∂x_j``, detached; and
        ``F(x, u)`` (batch, n_state), detached.
    """
    n = x.shape[-1]
    with torch.enable_grad():
        xl = x.detach().requires_grad_(True)
        y = fn(xl, u.detach())
        if not y.requires_grad:  # F does not depend on x (or on anything differentiable)
            return torch.zeros(*x.shape, n, dtype=x.dtype, device=x.device), y.detach()
        rows = []
        for i in range(n):  # n_state is small; a loop over state components, not samples
            (g,) = torch.autograd.grad(y[:, i].sum(), xl, retain_graph=i < n - 1, allow_unused=True)
            rows.append(torch.zeros_like(x) if g is None else g)
    return torch.stack(rows, dim=1), y.detach()


def _solve_linear(jac: torch.Tensor, rhs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve ``J d = rhs`` per row without raising on singular or non-finite rows.

    Args:
        jac: (batch, n, n).
        rhs: (batch, n).

    Returns:
        ``(d, ok)``: d (batch, n) (zeros where not ok) and ok (batch,) bool.
    """
    finite = torch.isfinite(jac).flatten(1).all(dim=1) & torch.isfinite(rhs).all(dim=1)
    if jac.shape[-1] == 1:  # scalar state: a division beats a batched LU by far
        den = jac[:, 0, :]
        ok = finite & (den[:, 0] != 0)
        d = rhs / torch.where(ok[:, None], den, 1.0)
        return torch.where(ok[:, None], d, torch.zeros_like(d)), ok
    eye = torch.eye(jac.shape[-1], dtype=jac.dtype, device=jac.device).expand_as(jac)
    safe = torch.where(finite[:, None, None], jac, eye)
    d, info = torch.linalg.solve_ex(safe, torch.where(finite[:, None], rhs, 0).unsqueeze(-1))
    d = d.squeeze(-1)
    ok = finite & (info == 0) & torch.isfinite(d).all(dim=1)
    return torch.where(ok[:, None], d, torch.zeros_like(d)), ok


# --------------------------------------------------------------------------------------------
# solvers
# --------------------------------------------------------------------------------------------


class AbstractFixedPointSolver(abc.ABC):
    """A solver of :class:`FixedPointDevice`: it *is* how the steady state is found.

    The device calls :meth:`solve` and never asks which solver it has, so a new solver is one
    class (a frozen dataclass, so that :meth:`FixedPointDevice.describe` can record it).

    Attributes:
        refine_without_grad: Whether :meth:`FixedPointDevice.forward` still applies the
            implicit-function step (one more Newton step) to the solution when no gradient is
            taken. Solvers whose result already ends in a Newton step at the tolerance set it
            False: under ``torch.no_grad()`` that step would only cost time.
    """

    refine_without_grad: ClassVar[bool] = True

    @abc.abstractmethod
    def solve(self, fn: Residual, x0: torch.Tensor, u: torch.Tensor) -> FixedPointResult:
        """Find ``x`` with ``fn(x, u) = 0`` for every row, without building a graph.

        Args:
            fn: The residual ``F(x, u)``, shapes (batch, n_state), (batch, n_in) → (batch,
                n_state).
            x0: Starting states, shape (batch, n_state).
            u: Drives, shape (batch, n_in).

        Returns:
            Per-row state, residual, iteration count and convergence flag.
        """


@final
@dataclass(frozen=True)
class Integrate(AbstractFixedPointSolver):
    """Integrate ``dx/dt = F(x, u)`` until ``max_i |F_i| <= tol`` (steady state).

    A batched Bogacki–Shampine 3(2) integrator with a *per-row* step size, time and status, so
    a stiff or diverging row neither slows down nor breaks the others (a shared-step solver such
    as torchdiffeq's would). Rows whose state becomes non-finite, or that reach ``t_max`` or
    ``max_steps`` first, are reported unconverged. For ``kind="map"`` it integrates
    ``dx/dt = f(x) - x``, whose steady states are the map's fixed points.

    Reference: P. Bogacki, L. F. Shampine, "A 3(2) pair of Runge–Kutta formulas",
    Appl. Math. Lett. 2 (1989) 321–325.

    Args:
        tol: Absolute tolerance on ``max_i |F_i|`` (raised for low-precision dtypes, see
            :func:`residual_tolerance`).
        rtol: Relative local error tolerance of a step. Only the steady state is wanted, so
            the transient needs just enough accuracy to stay in the right basin.
        atol: Absolute local error tolerance of a step.
        t_max: Give up after this much model time (same units as the ODE's t).
        max_steps: Give up after this many attempted steps per row.
        dt0: Initial step.
        blowup: Rows whose ``max_i |x_i|`` exceeds this are stopped and reported unconverged
            (a finite-time blow-up would otherwise cost thousands of shrinking steps).
    """

    tol: float = 1e-10
    rtol: float = 1e-4
    atol: float = 1e-8
    t_max: float = 1e4
    max_steps: int = 5000
    dt0: float = 1e-2
    blowup: float = 1e10

    def __post_init__(self) -> None:
        for name in ("tol", "rtol", "atol", "t_max", "dt0", "blowup"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"Integrate.{name} must be a finite float > 0, got {v!r}")
        if not isinstance(self.max_steps, int) or self.max_steps < 1:
            raise ValueError(f"Integrate.max_steps must be an int >= 1, got {self.max_steps!r}")

    def solve(self, fn: Residual, x0: torch.Tensor, u: torch.Tensor) -> FixedPointResult:
        """Integrate every row to steady state.

        Args:
            fn: Residual ``F(x, u)``: (batch, n_state), (batch, n_in) → (batch, n_state).
            x0: Initial states, (batch, n_state).
            u: Drives, (batch, n_in).

        Returns:
            Per-row result; ``iterations`` counts attempted steps.
        """
        tol = residual_tolerance(self.tol, x0.dtype)
        batch = x0.shape[0]
        x = x0.clone()
        k1 = fn(x, u)
        res = _inf_norm(k1)
        t = torch.zeros(batch, dtype=x.dtype, device=x.device)
        h = torch.full_like(t, self.dt0)
        steps = torch.zeros(batch, dtype=torch.int64, device=x.device)
        done = res <= tol
        failed = ~torch.isfinite(x).all(dim=1) | ~torch.isfinite(res)
        for _ in range(self.max_steps):
            act = ~done & ~failed & (t < self.t_max)
            if not bool(act.any()):
                break
            idx = act.nonzero().squeeze(1)
            xa, ua, ka, ha = x[idx], u[idx], k1[idx], h[idx, None]
            k2 = fn(xa + 0.5 * ha * ka, ua)
            k3 = fn(xa + 0.75 * ha * k2, ua)
            xn = xa + ha * (2.0 / 9.0 * ka + 1.0 / 3.0 * k2 + 4.0 / 9.0 * k3)
            k4 = fn(xn, ua)
            err = ha * (-5.0 / 72.0 * ka + 1.0 / 12.0 * k2 + 1.0 / 9.0 * k3 - 0.125 * k4)
            scale = self.atol + self.rtol * torch.maximum(xa.abs(), xn.abs())
            e = (err / scale).square().mean(dim=1).sqrt()
            # Near a steady state the deviation falls below atol and the usual test would let
            # the step grow past the stability limit; also bounding the error by a fraction
            # of the step's own increment keeps h·λ inside the stability region.
            e_rel = err.norm(dim=1) / (0.1 * (xn - xa).norm(dim=1) + torch.finfo(x.dtype).tiny)
            e = torch.maximum(e, e_rel)
            good = torch.isfinite(e) & torch.isfinite(k4).all(dim=1)
            accept = good & (e <= 1.0)
            factor = torch.where(
                good,
                (0.9 * e.clamp_min(1e-10).pow(-1.0 / 3.0)).clamp(0.2, 5.0),
                torch.full_like(e, 0.2),
            )
            x[idx] = torch.where(accept[:, None], xn, xa)
            k1[idx] = torch.where(accept[:, None], k4, ka)
            t[idx] = t[idx] + torch.where(accept, ha[:, 0], 0.0)
            h[idx] = ha[:, 0] * factor
            steps[idx] += 1
            res[idx] = torch.where(accept, _inf_norm(k4), res[idx])
            done[idx] = done[idx] | (accept & (res[idx] <= tol))
            # a step that shrinks below rounding means a blow-up (finite-time singularity)
            failed[idx] = (
                failed[idx]
                | (h[idx] <= 1e-13 * (1.0 + t[idx]))
                | (x[idx].abs().amax(dim=1) > self.blowup)
            )
        return FixedPointResult(x=x, residual=res, iterations=steps, converged=done & ~failed)


@final
@dataclass(frozen=True)
class Anderson(AbstractFixedPointSolver):
    """Anderson acceleration of the iteration ``x ← x + step · F(x, u)``.

    For ``kind="map"`` with ``step=1`` this is the map itself, ``x ← f(x, u)`` (``step < 1``
    damps it); for ``kind="ode"`` it is explicit Euler with time step ``step``. Each update mixes
    the last ``memory`` iterates with weights from a small regularised least-squares problem,
    solved batched for every row.

    Reference: H. F. Walker, P. Ni, "Anderson acceleration for fixed-point iterations",
    SIAM J. Numer. Anal. 49 (2011) 1715–1735.

    Args:
        tol: Absolute tolerance on ``max_i |F_i|`` (see :func:`residual_tolerance`).
        max_iter: Maximum number of map evaluations per row.
        memory: Number of past iterates mixed (``m``).
        mixing: Mixing parameter ``beta`` in (0, 1]; 1 uses the mapped iterates only.
        regularization: Tikhonov term relative to the Gram matrix's scale.
        step: Step ``h`` of the underlying iteration ``x + h · F``.
    """

    tol: float = 1e-10
    max_iter: int = 100
    memory: int = 5
    mixing: float = 1.0
    regularization: float = 1e-10
    step: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.tol) and self.tol > 0):
            raise ValueError(f"Anderson.tol must be a finite float > 0, got {self.tol!r}")
        if not isinstance(self.max_iter, int) or self.max_iter < 1:
            raise ValueError(f"Anderson.max_iter must be an int >= 1, got {self.max_iter!r}")
        if not isinstance(self.memory, int) or self.memory < 1:
            raise ValueError(f"Anderson.memory must be an int >= 1, got {self.memory!r}")
        if not (0.0 < self.mixing <= 1.0):
            raise ValueError(f"Anderson.mixing must be in (0, 1], got {self.mixing!r}")
        if not (self.regularization >= 0.0 and math.isfinite(self.regularization)):
            raise ValueError(
                f"Anderson.regularization must be a finite float >= 0, got {self.regularization!r}"
            )
        if not (math.isfinite(self.step) and self.step > 0):
            raise ValueError(f"Anderson.step must be a finite float > 0, got {self.step!r}")

    def solve(self, fn: Residual, x0: torch.Tensor, u: torch.Tensor) -> FixedPointResult:
        """Iterate every row until ``max_i |F_i| <= tol``.

        Args:
            fn: Residual ``F(x, u)``: (batch, n_state), (batch, n_in) → (batch, n_state).
            x0: Initial states, (batch, n_state).
            u: Drives, (batch, n_in).

        Returns:
            Per-row result; each row keeps the first iterate that met the tolerance, or its
            best (smallest-residual) iterate if none did.
        """
        tol = residual_tolerance(self.tol, x0.dtype)
        batch, n = x0.shape
        m = self.memory
        dt, dev = x0.dtype, x0.device
        xs = torch.zeros(batch, m, n, dtype=dt, device=dev)  # past iterates
        gs = torch.zeros(batch, m, n, dtype=dt, device=dev)  # their images g(x) = x + h F
        best_x = x0.clone()
        best_res = torch.full((batch,), math.inf, dtype=dt, device=dev)
        iters = torch.zeros(batch, dtype=torch.int64, device=dev)
        done = torch.zeros(batch, dtype=torch.bool, device=dev)

        x = x0.clone()
        for k in range(self.max_iter):
            fx = fn(x, u)
            res = _inf_norm(fx)
            live = ~done
            better = live & torch.isfinite(res) & ~(res >= best_res)
            best_x = torch.where(better[:, None], x, best_x)
            best_res = torch.where(better, res, best_res)
            iters = iters + live.long()
            done = done | (res <= tol)
            if bool(done.all()):
                break
            slot = k % m
            xs[:, slot] = x
            gs[:, slot] = x + self.step * fx
            p = min(k + 1, m)
            r = gs[:, :p] - xs[:, :p]  # (batch, p, n) residuals of the kept iterates
            gram = r @ r.transpose(1, 2)  # (batch, p, p)
            scale = gram.diagonal(dim1=1, dim2=2).mean(dim=1).clamp_min(torch.finfo(dt).tiny)
            gram = gram + (self.regularization * scale)[:, None, None] * torch.eye(
                p, dtype=dt, device=dev
            )
            # weights minimise |sum_j a_j r_j| subject to sum_j a_j = 1: a ∝ gram^{-1} 1
            ones = torch.ones(batch, p, dtype=dt, device=dev)
            a, ok = _solve_linear(gram, ones)
            a_sum = a.sum(dim=1, keepdim=True)
            ok = ok & (a_sum[:, 0].abs() > 0)
            a = torch.where(ok[:, None], a / torch.where(ok[:, None], a_sum, 1.0), 0.0)
            a[:, slot] = torch.where(ok, a[:, slot], 1.0)  # fall back to a plain step
            mixed_g = (a[:, :, None] * gs[:, :p]).sum(dim=1)
            mixed_x = (a[:, :, None] * xs[:, :p]).sum(dim=1)
            x_new = self.mixing * mixed_g + (1.0 - self.mixing) * mixed_x
            x = torch.where(done[:, None], x, x_new)
        x_out = torch.where(done[:, None] | torch.isfinite(best_res)[:, None], best_x, x)
        res_out = _inf_norm(fn(x_out, u))
        return FixedPointResult(
            x=x_out, residual=res_out, iterations=iters, converged=res_out <= tol
        )


@final
@dataclass(frozen=True)
class Newton(AbstractFixedPointSolver):
    """Batched damped Newton's method on ``F(x, u) = 0`` with per-row convergence masks.

    Each iteration solves ``J δ = -F`` per row (``J = ∂F/∂x`` by autograd), optionally clips
    the step to ``max_step`` (max-abs) and shortens it to stay strictly inside
    ``[lower, upper]`` (fraction-to-the-boundary rule, 0.995), then backtracks
    (halving, Armijo test on ``|F|_2``) at most ``max_backtracks`` times. A row has converged when
    ``max_i |F_i| <= tol`` (floored at 2 ulps of the dtype), when its full Newton step is at
    rounding level, or when its residual is below :func:`residual_tolerance` (256 ulps) and can
    no longer be decreased. Iterating past the looser floor matters in float32: the implicit
    gradient is evaluated at ``x*``, so its error follows the error in ``x*``. Rows where
    Newton fails are handed to ``fallback`` (restarted from the initial guess), then polished
    by Newton again.

    Args:
        tol: Absolute tolerance on ``max_i |F_i|`` (see :func:`residual_tolerance`).
        max_iter: Maximum Newton iterations per row.
        max_step: If set, the max-abs length of a step is clipped to this.
        max_backtracks: Maximum step halvings per iteration; the last trial is taken if none
            passes the Armijo test (so Newton keeps moving out of flat regions).
        lower: Optional lower bound on every state component (e.g. 0 for concentrations);
            iterates stay strictly above it. The initial guess is clipped into the bounds.
        upper: Optional upper bound, likewise.
        fallback: Solver for rows Newton does not converge on, e.g. ``Integrate()``.
        jacobian: Optional analytic Jacobian ``J(x, u)`` (batch, n_state, n_state) of the
            residual, ``J[b, i, j] = ∂F_i/∂x_j``; by default it is built from ``n_state``
            batched VJPs of the residual.
    """

    tol: float = 1e-10
    max_iter: int = 50
    max_step: float | None = None
    max_backtracks: int = 12
    lower: float | None = None
    upper: float | None = None
    fallback: Integrate | Anderson | None = None
    jacobian: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.tol, (int, float)) and math.isfinite(self.tol) and self.tol > 0):
            raise ValueError(f"Newton.tol must be a finite float > 0, got {self.tol!r}")
        if not isinstance(self.max_iter, int) or self.max_iter < 1:
            raise ValueError(f"Newton.max_iter must be an int >= 1, got {self.max_iter!r}")
        if self.max_step is not None and not (self.max_step > 0):
            raise ValueError(f"Newton.max_step must be > 0 or None, got {self.max_step!r}")
        if not isinstance(self.max_backtracks, int) or self.max_backtracks < 0:
            raise ValueError(
                f"Newton.max_backtracks must be an int >= 0, got {self.max_backtracks!r}"
            )
        if self.lower is not None and self.upper is not None and not self.lower < self.upper:
            raise ValueError(
                f"Newton needs lower < upper, got lower={self.lower!r}, upper={self.upper!r}"
            )
        if self.fallback is not None and not isinstance(self.fallback, (Integrate, Anderson)):
            raise TypeError(
                f"Newton.fallback must be Integrate(...), Anderson(...) or None, got "
                f"{type(self.fallback).__name__}"
            )

    def solve(self, fn: Residual, x0: torch.Tensor, u: torch.Tensor) -> FixedPointResult:
        """Run Newton on every row, then ``fallback`` on the rows that failed.

        Args:
            fn: Residual ``F(x, u)``: (batch, n_state), (batch, n_in) → (batch, n_state).
            x0: Initial states, (batch, n_state).
            u: Drives, (batch, n_in).

        Returns:
            Per-row result.
        """
        out = self._newton(fn, x0, u)
        if self.fallback is None or bool(out.converged.all()):
            return out
        idx = (~out.converged).nonzero().squeeze(1)
        fb = self.fallback.solve(fn, x0[idx], u[idx])
        # polish every finite fallback result with Newton (fast, and sharpens Integrate's result)
        x_start = torch.where(torch.isfinite(fb.x), fb.x, x0[idx])
        pol = self._newton(fn, x_start, u[idx])
        return out.with_rows(idx, pol, extra_iterations=fb.iterations)

    def _clip_to_bounds(self, x: torch.Tensor) -> torch.Tensor:
        if self.lower is None and self.upper is None:
            return x
        return x.clamp(min=self.lower, max=self.upper)

    def _max_fraction(self, x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """Largest alpha <= 1 keeping ``x + alpha d`` strictly inside the bounds, (batch,)."""
        alpha = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
        tau = 0.995
        if self.lower is not None:
            lim = torch.where(d < 0, tau * (x - self.lower) / (-d), math.inf)
            alpha = torch.minimum(alpha, lim.amin(dim=1))
        if self.upper is not None:
            lim = torch.where(d > 0, tau * (self.upper - x) / d, math.inf)
            alpha = torch.minimum(alpha, lim.amin(dim=1))
        return alpha

    def _newton(self, fn: Residual, x0: torch.Tensor, u: torch.Tensor) -> FixedPointResult:
        tol = residual_tolerance(self.tol, x0.dtype, ulps=2.0)
        tol_floor = residual_tolerance(self.tol, x0.dtype)
        ulp = torch.finfo(x0.dtype).eps
        x = self._clip_to_bounds(x0.clone())
        fx = fn(x, u)
        res = _inf_norm(fx)
        iters = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
        done = res <= tol
        failed = ~torch.isfinite(res)
        for _ in range(self.max_iter):
            act = ~done & ~failed
            if not bool(act.any()):
                break
            idx = act.nonzero().squeeze(1)
            xa, ua, fa = x[idx], u[idx], fx[idx]
            jac = _jacobian(fn, xa, ua)[0] if self.jacobian is None else self.jacobian(xa, ua)
            d, ok = _solve_linear(jac, -fa)
            # a full step at rounding level: x is a root to machine precision
            tiny = ok & (d.abs().amax(dim=1) <= 8 * ulp * (1.0 + xa.abs().amax(dim=1)))
            if self.max_step is not None:
                dn = d.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
                d = d * torch.clamp(self.max_step / dn, max=1.0)
            alpha = self._max_fraction(xa, d)
            merit = fa.square().sum(dim=1)
            x_new, f_new = xa.clone(), fa.clone()
            searching = ok.clone()
            decreased = torch.zeros_like(ok)
            for j in range(self.max_backtracks + 1):
                if not bool(searching.any()):
                    break
                last = j == self.max_backtracks
                s = searching.nonzero().squeeze(1)
                xt = xa[s] + alpha[s, None] * d[s]
                ft = fn(xt, ua[s])
                finite = torch.isfinite(ft).all(dim=1) & torch.isfinite(xt).all(dim=1)
                armijo = ft.square().sum(dim=1) <= (1.0 - 1e-4 * alpha[s]) * merit[s]
                take = finite & (armijo | last)  # last trial: take it if finite
                x_new[s] = torch.where(take[:, None], xt, x_new[s])
                f_new[s] = torch.where(take[:, None], ft, f_new[s])
                decreased[s] = decreased[s] | (take & armijo)
                searching[s] = ~take & (not last)
                alpha[s] = torch.where(take, alpha[s], 0.5 * alpha[s])
            moved = ok & ~searching & (x_new != xa).any(dim=1)
            x[idx], fx[idx] = x_new, f_new
            iters[idx] += 1
            res[idx] = _inf_norm(f_new)
            # at rounding level the residual stops decreasing: accept it below the floor
            stalled = ~(moved & decreased) & (res[idx] <= tol_floor)
            done[idx] = done[idx] | (res[idx] <= tol) | tiny | stalled
            failed[idx] = failed[idx] | ~(moved | tiny | stalled) | ~torch.isfinite(res[idx])
        conv = done & torch.isfinite(x).all(dim=1)
        return FixedPointResult(x=x, residual=res, iterations=iters, converged=conv)


def _solve_small(jac: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Solve ``J d = rhs`` for many small systems by Gaussian elimination written out.

    Works on the ``n × n`` entries as (batch,) vectors, so each step is one elementwise
    operation over all rows. For ``n = 5`` on a CPU this is several times faster than the
    batched LAPACK solve, which factors the matrices one by one. There is no pivoting: a zero
    or tiny pivot gives non-finite or inaccurate rows, which the caller's residual check
    catches (this is only used inside :class:`BatchedNewton`, whose rows are always checked).

    Args:
        jac: (batch, n, n).
        rhs: (batch, n).

    Returns:
        d, (batch, n).
    """
    n = jac.shape[-1]
    # (n, n, batch) contiguous: a Jacobian built element-first (see wuxing_jacobian's fast
    # path) is already laid out so, and the copy is skipped
    jt = jac.permute(1, 2, 0).contiguous()
    a = [list(row.unbind(0)) for row in jt.unbind(0)]
    b = list(rhs.t().contiguous().unbind(0))
    for k in range(n):
        inv = 1.0 / a[k][k]
        for i in range(k + 1, n):
            f = a[i][k] * inv
            for j in range(k + 1, n):
                a[i][j] = torch.addcmul(a[i][j], f, a[k][j], value=-1.0)
            b[i] = torch.addcmul(b[i], f, b[k], value=-1.0)
    d: list[torch.Tensor] = [b[0]] * n
    for i in reversed(range(n)):
        s = b[i]
        for j in range(i + 1, n):
            s = torch.addcmul(s, a[i][j], d[j], value=-1.0)
        d[i] = s / a[i][i]
    return torch.stack(d, dim=1)


@final
@dataclass(frozen=True, eq=False)
class DriveTable:
    """A start for Newton: steady states tabulated over one drive, interpolated linearly.

    The table is solved once per dtype and torch device, on first use, by ``solver`` (default
    the integrator, so every tabulated state is the stable one the dynamics reaches) on
    ``points`` drives evenly spaced over ``[low, high]``, in float64. A drive outside the
    range, or a table point that did not converge, gives a NaN start, which the Newton solve
    turns into a row that fails its residual check and goes to the fallback: a drive the table
    does not cover is never started near the wrong root.

    With ``points`` evenly spaced drives the linear interpolation's error is about
    ``h²/8 · |x''|`` with ``h = (high - low)/(points - 1)``: for 4097 points over a range of
    2.5 that is about 5e-8 · |x''|, so one Newton step takes the start to rounding level.

    Args:
        residual: The device's residual ``F(x, u)`` (for ``kind="ode"`` its ``f``).
        x_init: Starting state of the tabulating solve, (n_state,) floats.
        low: Lowest tabulated drive.
        high: Highest tabulated drive.
        points: Number of tabulated drives (>= 2).
        solver: Solver of the table points; default ``Integrate()``.

    Raises:
        ValueError: For ``low >= high``, non-finite bounds or ``points < 2``.
        TypeError: If ``residual`` is not callable or ``solver`` is not a solver object.
    """

    residual: Residual
    x_init: tuple[float, ...]
    low: float
    high: float
    points: int = 4097
    solver: AbstractFixedPointSolver | None = None
    _cache: dict[tuple[torch.dtype, torch.device], torch.Tensor] = dataclasses.field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not callable(self.residual):
            raise TypeError(f"DriveTable.residual must be callable F(x, u), got {self.residual!r}")
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ValueError(
                f"DriveTable needs finite low < high, got low={self.low!r}, high={self.high!r}"
            )
        if isinstance(self.points, bool) or not isinstance(self.points, int) or self.points < 2:
            raise ValueError(f"DriveTable.points must be an int >= 2, got {self.points!r}")
        if self.solver is not None and not isinstance(self.solver, AbstractFixedPointSolver):
            raise TypeError(
                f"DriveTable.solver must be a fixed-point solver or None, got "
                f"{type(self.solver).__name__}"
            )

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the tables; a copy solves them again on first use."""
        return {**self.__dict__, "_cache": {}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore a pickled table (frozen dataclass: fields are set through ``__dict__``)."""
        self.__dict__.update(state)

    def table(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The tabulated states, (points, n_state), NaN rows where the solve failed."""
        key = (dtype, device)
        tab = self._cache.get(key)
        if tab is None:
            tab64 = self._cache.get((torch.float64, torch.device("cpu")))
            if tab64 is None:
                with torch.no_grad():
                    tab64 = self._solve_table()
                self._cache[(torch.float64, torch.device("cpu"))] = tab64
            tab = tab64.to(dtype=dtype, device=device)
            self._cache[key] = tab
        return tab

    def _solve_table(self) -> torch.Tensor:
        """The float64 table: a coarse one by ``solver``, refined to ``points`` by Newton."""
        # Integrating every one of thousands of points costs tens of seconds on a busy CPU;
        # integrating a coarse grid and refining it by Newton costs a fraction of a second.
        # With 129 coarse points (spacing 0.02 on the default range) the interpolated guess
        # is within ~1e-4 of the root, far inside its basin, so Newton converges to the same
        # stable state; a refined point that moved more than REFINE_MOVE is dropped (NaN).
        n = min(self.points, _COARSE_POINTS)
        uc = torch.linspace(self.low, self.high, n, dtype=torch.float64)[:, None]
        x0 = torch.tensor(self.x_init, dtype=torch.float64).expand(n, -1).clone()
        res = (self.solver or Integrate()).solve(self.residual, x0, uc)
        coarse = torch.where(res.converged[:, None], res.x, math.nan)
        if n == self.points:
            return coarse
        u = torch.linspace(self.low, self.high, self.points, dtype=torch.float64)[:, None]
        guess = _interpolate(coarse, u, self.low, self.high)
        x = guess
        for _ in range(_REFINE_STEPS):
            jac, f_x = _jacobian(self.residual, x, u)
            x = x - _solve_small(jac, f_x)
        tol = self.solver.tol if isinstance(self.solver, (Integrate, Newton)) else 1e-10
        ok = (_inf_norm(self.residual(x, u)) <= tol) & (
            (x - guess).abs().amax(dim=1) <= _REFINE_MOVE
        )
        return torch.where(ok[:, None], x, math.nan)

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        """Interpolated start for drives ``u`` (batch, 1) → (batch, n_state); NaN off the table."""
        return _interpolate(self.table(u.dtype, u.device), u, self.low, self.high)


#: Coarse grid of a DriveTable, integrated; then refined by Newton (see DriveTable._solve_table)
_COARSE_POINTS = 129
_REFINE_STEPS = 6
_REFINE_MOVE = 1e-2


def _interpolate(tab: torch.Tensor, u: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Linear interpolation of ``tab`` (points, n) on an even grid over [low, high] at u (b, 1).

    Returns (b, n); NaN rows for drives outside [low, high] (NaN drives included).
    """
    points = tab.shape[0]
    pos = (u[:, 0] - low) * ((points - 1) / (high - low))
    i = pos.floor().nan_to_num(0.0).clamp(0, points - 2).long()  # NaN drives: any valid row
    x = torch.lerp(tab.index_select(0, i), tab.index_select(0, i + 1), (pos - i)[:, None])
    inside = (pos >= 0) & (pos <= points - 1)
    return torch.where(inside[:, None], x, math.nan)


@final
@dataclass(frozen=True)
class BatchedNewton(AbstractFixedPointSolver):
    """A fixed number of full Newton steps on every row at once, then one residual check.

    Built for throughput (scoring a network on the true device): every iteration is the same
    few batched tensor operations on all rows, with no per-row masks, no data-dependent
    branches and no host synchronisation inside the loop. Each step solves ``J δ = -F`` with
    the closed-form Jacobian when one is given (by ``n_state`` autograd VJPs otherwise) and a
    written-out elimination for the small systems. After the loop ``max_i |F_i| <= tol`` is
    checked once for every row; rows that fail it (or went non-finite) are never accepted:
    they go to ``fallback`` (restarted from the device's initial guess) and are flagged in
    :attr:`FixedPointResult.fallback`, or, without a fallback, reported unconverged (NaN
    outputs).

    Newton finds *a* root, which may be an unstable state the dynamics never reaches, so start
    it close to the wanted one: ``start`` (e.g. a :class:`DriveTable` of integrated steady
    states) gives that; without it Newton starts from the device's initial guess.

    Args:
        iterations: Newton steps per row (fixed).
        tol: Absolute tolerance on ``max_i |F_i|`` of the final check (see
            :func:`residual_tolerance`).
        jacobian: Optional closed-form ``J(x, u)`` (batch, n_state, n_state) of the residual.
        start: Optional ``u (batch, n_in) -> x (batch, n_state)`` starting states; NaN rows
            fail the check and go to the fallback.
        fallback: Solver for the rows that fail the check, e.g. ``Integrate()``; None reports
            them unconverged.
    """

    iterations: int = 2
    tol: float = 1e-10
    jacobian: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    start: Callable[[torch.Tensor], torch.Tensor] | None = None
    fallback: AbstractFixedPointSolver | None = None

    refine_without_grad: ClassVar[bool] = False

    def __post_init__(self) -> None:
        it = self.iterations
        if isinstance(it, bool) or not isinstance(it, int) or it < 0:
            raise ValueError(f"BatchedNewton.iterations must be an int >= 0, got {it!r}")
        if not (isinstance(self.tol, (int, float)) and math.isfinite(self.tol) and self.tol > 0):
            raise ValueError(f"BatchedNewton.tol must be a finite float > 0, got {self.tol!r}")
        for name in ("jacobian", "start"):
            v = getattr(self, name)
            if v is not None and not callable(v):
                raise TypeError(f"BatchedNewton.{name} must be callable or None, got {v!r}")
        if self.fallback is not None and not isinstance(self.fallback, AbstractFixedPointSolver):
            raise TypeError(
                f"BatchedNewton.fallback must be a fixed-point solver (e.g. Integrate()) or None, "
                f"got {type(self.fallback).__name__}"
            )

    def solve(self, fn: Residual, x0: torch.Tensor, u: torch.Tensor) -> FixedPointResult:
        """Run the fixed Newton steps on every row, check once, re-solve the failed rows.

        Args:
            fn: Residual ``F(x, u)``: (batch, n_state), (batch, n_in) → (batch, n_state).
            x0: Initial guesses, (batch, n_state): the start without ``start``, and the
                fallback's start.
            u: Drives, (batch, n_in).

        Returns:
            Per-row result; ``iterations`` counts Newton steps plus the fallback's steps,
            ``fallback`` flags the rows re-solved by the fallback.
        """
        x = x0 if self.start is None else self.start(u).to(x0)
        for _ in range(self.iterations):
            f_x = fn(x, u)
            jac = _jacobian(fn, x, u)[0] if self.jacobian is None else self.jacobian(x, u)
            x = x - _solve_small(jac, f_x)
        res = _inf_norm(fn(x, u))
        ok = res <= residual_tolerance(self.tol, x.dtype)  # NaN residuals fail
        batch = x.shape[0]
        out = FixedPointResult(
            x=x,
            residual=res,
            iterations=torch.full((batch,), self.iterations, dtype=torch.int64, device=x.device),
            converged=ok,
            fallback=torch.zeros(batch, dtype=torch.bool, device=x.device),
        )
        if self.fallback is None:
            return out
        bad = ~ok
        if not bool(bad.any()):  # the one host synchronisation, after the loop
            return out
        idx = bad.nonzero().squeeze(1)
        ub = u[idx]
        fb = self.fallback.solve(fn, x0[idx], ub)
        # polish the fallback's result with Newton steps (as Newton polishes its fallback's):
        # an integrator stops at the tolerance, a Newton step from there reaches rounding
        xp = fb.x
        for _ in range(max(self.iterations, 1)):
            jac = _jacobian(fn, xp, ub)[0] if self.jacobian is None else self.jacobian(xp, ub)
            xp = xp - _solve_small(jac, fn(xp, ub))
        rp = _inf_norm(fn(xp, ub))
        better = fb.converged & (rp <= fb.residual)  # NaN residuals are never better
        fb = dataclasses.replace(
            fb,
            x=torch.where(better[:, None], xp, fb.x),
            residual=torch.where(better, rp, fb.residual),
        )
        out = out.with_rows(idx, fb)
        assert out.fallback is not None
        out.fallback[idx] = True
        return out


def implicit_fixed_point(
    fn: Residual,
    result: FixedPointResult,
    u: torch.Tensor,
    *,
    jacobian: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Attach implicit-function-theorem gradients to a solved fixed point.

    Returns ``x* − J⁻¹ F(x*, u)`` (``x*`` and ``J = ∂F/∂x`` at ``x*`` detached): its value is
    ``x*`` refined by one Newton step, its derivative with respect to ``u`` and to anything
    ``fn`` closes over is ``−J⁻¹ ∂F/∂(u, θ)`` (see the module docstring).

    Args:
        fn: Residual ``F(x, u)``: (batch, n_state), (batch, n_in) → (batch, n_state).
        result: The solve of every row (from a solver's ``solve``).
        u: Drives, (batch, n_in), possibly requiring grad.
        jacobian: Optional analytic ``∂F/∂x`` (see :class:`Newton`).

    Returns:
        States, (batch, n_state); NaN rows where the solve did not converge. At a singular
        Jacobian the row keeps ``x*`` and gets no gradient.
    """
    ok = result.converged
    x = torch.full_like(result.x, math.nan)
    if not bool(ok.any()):
        return x
    n_state = result.x.shape[1]
    idx = ok.nonzero().squeeze(1)
    xs, us = result.x[idx], u[idx]
    if jacobian is None:
        jac, f_val = _jacobian(fn, xs, us)
    else:
        with torch.no_grad():
            jac, f_val = jacobian(xs, us), fn(xs, us)
    singular = ~_solve_linear(jac, f_val)[1]
    eye = torch.eye(n_state, dtype=jac.dtype, device=jac.device)
    jac = torch.where(singular[:, None, None], eye, jac)
    f_grad = fn(xs, us) if torch.is_grad_enabled() else f_val
    if n_state == 1:
        step = f_grad / jac[:, 0, :]
    else:
        step = torch.linalg.solve(jac, f_grad.unsqueeze(-1)).squeeze(-1)
    step = torch.where(singular[:, None], torch.zeros_like(step), step)
    return x.index_put((idx,), xs - step)


FixedPointSolver = AbstractFixedPointSolver
"""Any of the fixed-point solver strategies."""


# --------------------------------------------------------------------------------------------
# the device
# --------------------------------------------------------------------------------------------


@final
class FixedPointDevice(AbstractDevice):
    """A device whose output is a readout of a steady state ``x*`` of ``f``.

    ``kind="ode"``: ``x*`` solves ``f(x*, u) = 0`` for ``dx/dt = f(x, u)``.
    ``kind="map"``: ``x*`` solves ``x* = f(x*, u)``.
    Output ``readout(x*)``; rows whose solve did not converge give NaN outputs (never an
    exception), and :meth:`solve` reports per-row residuals, iteration counts and status.
    Gradients with respect to ``u`` and to any tensor ``f`` closes over that requires grad
    follow the implicit function theorem (see the module docstring for the construction).

    Example:
        >>> def f(x, u):  # dx/dt = u - x^3: steady state x* = u^(1/3)
        ...     return u - x**3
        >>> dev = FixedPointDevice(
        ...     f, n_in=1, n_state=1, n_out=1, x_init=torch.ones(1),
        ...     readout=lambda x: x, domain=Box((0.1,), (8.0,)),
        ... )
        >>> dev(torch.tensor([[8.0]], dtype=torch.float64))
        tensor([[2.]], dtype=torch.float64)

    Args:
        f: ``f(x, u)`` with x (batch, n_state) and u (batch, n_in), returning (batch, n_state):
            ``dx/dt`` (``kind="ode"``) or the map's next state (``kind="map"``). Rows must be
            independent and ``f`` differentiable by autograd in ``x`` (for Newton and the
            gradient). If ``f`` is a ``torch.nn.Module`` it is registered as a submodule.
        n_in: Number of drives.
        n_state: Number of state components.
        n_out: Number of outputs.
        x_init: Initial guess: a tensor (n_state,) used for every row, or a callable
            ``u (batch, n_in) -> (batch, n_state)``.
        readout: ``x (batch, n_state) -> (batch, n_out)``.
        domain: Box of drives to characterise the device on.
        kind: ``"ode"`` or ``"map"``.
        solver: ``Newton(...)`` (default), ``BatchedNewton(...)``, ``Anderson(...)`` or
            ``Integrate(...)``.
        name: Name used in reports.
        params: JSON-ready parameters recorded in :meth:`describe` (e.g. ``{"eps": 0.01}``).

    Raises:
        ValueError: For a bad size, ``kind`` or ``x_init`` shape.
        TypeError: If ``f``/``readout`` are not callable or ``solver`` is not a solver object.
    """

    def __init__(
        self,
        f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        *,
        n_in: int,
        n_state: int,
        n_out: int,
        x_init: torch.Tensor | Callable[[torch.Tensor], torch.Tensor],
        readout: Callable[[torch.Tensor], torch.Tensor],
        domain: Box,
        kind: Literal["ode", "map"] = "ode",
        solver: FixedPointSolver | None = None,
        name: str = "fixed_point",
        params: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        for label, v in (("n_in", n_in), ("n_state", n_state), ("n_out", n_out)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{label} must be a positive int, got {v!r}")
        if not callable(f):
            raise TypeError(f"f must be callable f(x, u) -> (batch, n_state), got {f!r}")
        if not callable(readout):
            raise TypeError(
                f"readout must be callable x -> (batch, n_out), got {readout!r}; "
                "use readout=lambda x: x to output the whole state"
            )
        if kind not in ("ode", "map"):
            raise ValueError(
                f"kind must be 'ode' (fixed point where f = 0) or 'map' (where x = f(x)), "
                f"got {kind!r}"
            )
        if solver is None:
            solver = Newton()
        if not isinstance(solver, AbstractFixedPointSolver):
            raise TypeError(
                f"solver must be Newton(...), BatchedNewton(...), Anderson(...), Integrate(...) "
                f"or another "
                f"AbstractFixedPointSolver, got {type(solver).__name__}"
            )
        if not isinstance(domain, Box) or domain.dim != n_in:
            raise ValueError(f"domain must be a Box with {n_in} bounds, got {domain!r}")
        self._x_init = InitialState(x_init, n_state=n_state, label="x_init")
        self.f = f
        self.readout = readout
        self.n_in, self.n_state, self.n_out = n_in, n_state, n_out
        self.kind = kind
        self.solver = solver
        self.domain = domain
        self.name = name
        self.params = dict(params or {})
        self.differentiable = True
        # rows solved, re-solved by a fallback and left unconverged, for solvers that report
        # their fallback rows (BatchedNewton); reset it freely
        self.solve_counts: dict[str, int] = {"rows": 0, "fallback": 0, "unconverged": 0}

    # -- the residual ------------------------------------------------------------------------

    def residual(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """``F(x, u)``: ``f`` for ``kind="ode"``, ``f - x`` for ``kind="map"``; (batch, n_state).

        Raises:
            DeviceContractError: If ``f`` returns the wrong shape or dtype.
        """
        y = self.f(x, u)
        if not isinstance(y, torch.Tensor) or y.shape != x.shape or y.dtype != x.dtype:
            got = f"{tuple(y.shape)} {y.dtype}" if isinstance(y, torch.Tensor) else type(y).__name__
            raise DeviceContractError(
                f"f(x, u) must return a tensor of shape {tuple(x.shape)} and dtype {x.dtype} "
                f"(batch, n_state={self.n_state}), got {got}"
            )
        return y - x if self.kind == "map" else y

    def initial_state(self, u: torch.Tensor) -> torch.Tensor:
        """Initial guess for drives ``u`` (batch, n_in) → (batch, n_state), dtype of ``u``."""
        return self._x_init(u)

    # -- solve and forward -------------------------------------------------------------------

    def solve(self, u: torch.Tensor) -> FixedPointResult:
        """Find the fixed point for every row of ``u`` without building a graph.

        Args:
            u: Drives, shape (batch, n_in).

        Returns:
            Per-row state, residual, iteration count and convergence flag.
        """
        self._check_drives(u)
        with torch.no_grad():
            u0 = u.detach()
            return self.solver.solve(self.residual, self.initial_state(u0), u0)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """Readout of the fixed point, differentiable by the implicit function theorem.

        Args:
            u: Drives, shape (batch, n_in).

        Returns:
            ``readout(x*)``, shape (batch, n_out), same dtype as ``u``; NaN rows where the
            solver did not converge.
        """
        result = self.solve(u)
        if result.fallback is not None:
            # one host synchronisation per call, after the solve: what fell back is counted
            counts = torch.stack([result.fallback.sum(), (~result.converged).sum()]).tolist()
            self.solve_counts["rows"] += result.fallback.shape[0]
            self.solve_counts["fallback"] += counts[0]
            self.solve_counts["unconverged"] += counts[1]
        if torch.is_grad_enabled() or self.solver.refine_without_grad:
            x = implicit_fixed_point(self.residual, result, u)
        else:  # the solver's last step was a Newton step at the tolerance already
            x = torch.where(result.converged[:, None], result.x, math.nan)
        y = self.readout(x)
        if not isinstance(y, torch.Tensor) or tuple(y.shape) != (u.shape[0], self.n_out):
            got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise DeviceContractError(
                f"readout must return shape ({u.shape[0]}, n_out={self.n_out}), got {got}"
            )
        return y

    def describe(self) -> dict[str, Any]:
        """JSON-ready description: contract, kind, state size, solver settings and params."""
        d = super().describe()
        d["fixed_point_kind"] = self.kind
        d["n_state"] = self.n_state
        d["solver"] = _solver_dict(self.solver)
        d["params"] = self.params
        return d

    def extra_repr(self) -> str:
        """Shown in ``repr(device)``."""
        return f"{super().extra_repr()}, n_state={self.n_state}, kind={self.kind!r}"


def _solver_dict(solver: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type(solver).__name__}
    for fld in dataclasses.fields(solver):
        if fld.name.startswith("_"):  # caches, not settings
            continue
        v = getattr(solver, fld.name)
        if dataclasses.is_dataclass(v):
            out[fld.name] = _solver_dict(v)
        elif callable(v):  # a closed-form Jacobian or residual: recorded by its name
            out[fld.name] = getattr(v, "__qualname__", type(v).__qualname__)
        else:
            out[fld.name] = list(v) if isinstance(v, tuple) else v
    return out
