"""Simulating mass-action networks: a batched semi-implicit scheme in torch, scipy as reference.

The torch scheme is implicit Euler with a Jacobi (species-by-species) split. With the other
species frozen at step n, species i obeys ``dx_i/dt = a_i + b_i x_i + c_i x_i²`` (exact for
reactions of order ≤ 2 in each species), and the implicit Euler step

    x' − x = h (a + b x' + c x'²)

is a scalar quadratic solved in closed form for its non-negative root,
``x' = 2C / (B + √(B² + 4AC))`` with ``A = −c``, ``B = 1/h − b``, ``C = x/h + a``. This root is
positive whenever ``c ≤ 0`` and ``a ≥ 0`` (true for every network whose only second-order
self-term is a degradation such as ``2X → X``), so concentrations never go negative and the
self-terms are unconditionally stable (L-stable), whatever the stiffness ``|z|``. The coupling
between species is explicit, which is first-order accurate in time. For a feed-forward
(triangular) network, ``h → ∞`` makes each step solve every layer given the previous iterate,
so pseudo-time stepping with growing ``h`` reaches the steady state in about ``depth + a few``
steps while remaining a time integration of the chemistry from any positive start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from quasineuron.chemistry.network import MassAction

__all__ = [
    "SteadyStateResult",
    "implicit_step",
    "ode_steady_state",
    "scipy_steady_state",
    "settling_time",
    "steady_state",
]


@dataclass(frozen=True, eq=False)
class SteadyStateResult:
    """Outcome of :func:`steady_state`.

    Attributes:
        x: Final concentrations, shape (batch, n_species).
        residual: ``max_i |dx_i/dt|`` at ``x`` per row, from the stoichiometric right-hand side
            ``S v`` (computed independently of the solver's split), shape (batch,).
        converged: Whether the row met the relative tolerance, shape (batch,).
        steps: Number of time steps taken.
        time: Total simulated time (``inf`` once a step with ``h = ∞`` was taken).
    """

    x: torch.Tensor
    residual: torch.Tensor
    converged: torch.Tensor
    steps: int
    time: float


def _check(kin: MassAction) -> None:
    if not isinstance(kin, MassAction):
        raise TypeError(f"kinetics must be a MassAction, got {type(kin).__name__}")
    if not kin.concave:
        raise ValueError(
            "some species has a positive second-order self-term (e.g. 2X → 3X), so the "
            "semi-implicit step has no guaranteed positive root; use scipy_steady_state"
        )


def _solve(
    kin: MassAction, x: torch.Tensor, coeffs: torch.Tensor, inv_h: float | torch.Tensor
) -> torch.Tensor:
    a, b, c = coeffs
    big_b = inv_h - b
    big_c = inv_h * x + a
    root = torch.sqrt(big_b * big_b - 4.0 * c * big_c)
    # the two algebraically equal forms of the positive root; each is free of cancellation
    # on its own side of B = 0 (the second needs c < 0, which B < 0 at a solvable row implies)
    den = big_b + root
    safe_den = torch.where(den > 0, den, torch.ones_like(den))
    safe_c = torch.where(c < 0, c, -torch.ones_like(c))
    new = torch.where(big_b >= 0, 2.0 * big_c / safe_den, (root - big_b) / (-2.0 * safe_c))
    keep = (~kin.dynamic.to(x.device)) | (den <= 0) | ((big_b < 0) & (c >= 0))
    return torch.where(keep, x, new)


def _solve_bounded(
    kin: MassAction, x: torch.Tensor, coeffs: torch.Tensor, inv_h: float, upper: float
) -> torch.Tensor:
    """Implicit Euler step where each species' step equation has one root in [0, upper].

    ``c x² + (b − 1/h) x + (a + x_old/h) = 0`` is positive at 0 (a > 0) and negative at
    ``upper`` for the bounded neurons (docs/reaction-networks.md), so exactly one of its roots
    lies in between; it is taken whatever the sign of c.
    """
    a, b, c = coeffs
    big_b = b - inv_h
    big_c = a + inv_h * x
    disc = (big_b * big_b - 4.0 * c * big_c).clamp(min=0.0)
    sign = torch.where(big_b >= 0, torch.ones_like(big_b), -torch.ones_like(big_b))
    q = -0.5 * (big_b + sign * torch.sqrt(disc))  # cancellation-free pair of roots
    safe_q = torch.where(q != 0, q, torch.ones_like(q))
    safe_c = torch.where(c != 0, c, torch.ones_like(c))
    r_small = torch.where(q != 0, big_c / safe_q, torch.full_like(q, math.inf))
    r_large = torch.where(c != 0, q / safe_c, torch.full_like(q, math.inf))
    inside = (r_small >= 0) & (r_small <= upper)
    new = torch.where(inside, r_small, r_large)
    ok = torch.isfinite(new) & (new >= 0) & (new <= upper)
    keep = (~kin.dynamic.to(x.device)) | ~ok
    return torch.where(keep, x, new)


def implicit_step(kin: MassAction, x: torch.Tensor, inv_h: float | torch.Tensor) -> torch.Tensor:
    """One Jacobi-split implicit Euler step of size ``h = 1/inv_h`` (``inv_h = 0``: h = ∞).

    Args:
        kin: Kinetics of the network.
        x: Concentrations ≥ 0, shape (batch, n_species).
        inv_h: ``1/h``: a float ≥ 0, or a tensor (batch, 1) of per-row values.

    Returns:
        Concentrations after the step, shape (batch, n_species), ≥ 0; boundary species unchanged.
    """
    return _solve(kin, x, kin.self_coefficients(x), inv_h)


def _relative_residual(x: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """``max_i |f_i| / (|a_i| + |b_i x_i| + |c_i x_i²|)`` per row: 0 at a steady state.

    Scaling by the size of the terms makes the test independent of the concentration scale
    and meaningful down to rounding in float32 as well as float64.
    """
    a, b, c = coeffs
    t1, t2 = b * x, c * x * x
    scale = a.abs() + t1.abs() + t2.abs()
    tiny = torch.finfo(x.dtype).tiny
    return ((a + t1 + t2).abs() / (scale + tiny)).amax(1)


def steady_state(
    kin: MassAction,
    x0: torch.Tensor,
    *,
    dt: float = 0.5,
    growth: float = 4.0,
    max_dt: float = math.inf,
    tol: float | None = None,
    max_steps: int = 200,
    upper: float | None = None,
) -> SteadyStateResult:
    """Integrate from ``x0`` with steps ``h_k = dt · growth^k`` (capped) until steady.

    Pseudo-transient continuation: early steps follow the dynamics from the initial state;
    later, long steps jump onto the steady state. All rows step together until every row has
    converged (converged rows stay put, because a steady state is a fixed point of the step).
    A row has converged when ``|dx_i/dt|`` is at most ``tol`` times the size of the terms
    that make it up, for every species.

    Args:
        kin: Kinetics of the network.
        x0: Initial concentrations ≥ 0 (boundary species carry the clamped inputs), shape
            (batch, n_species), dtype ``kin.dtype``.
        dt: First step size (time units).
        growth: Factor by which the step grows each step (≥ 1).
        max_dt: Largest step; ``inf`` lets the last steps be exact Jacobi solves.
        tol: Relative residual target; default ``64 ×`` the dtype's machine epsilon.
        max_steps: Step limit.
        upper: For networks whose every neuron keeps its concentration in ``[0, upper]``
            and has exactly one steady state there (the sigmoid and saturating neurons,
            ``upper = 1``): each step takes the root in that interval, so positive
            second-order self-terms are allowed. ``None``: the concave networks of the
            smoothed ReLU.

    Returns:
        The final state, with the stoichiometric residual ``|S v|`` and convergence flags.

    Raises:
        ValueError: If ``x0`` has negative entries or the options are out of range.
    """
    if upper is None:
        _check(kin)
    elif not isinstance(kin, MassAction):
        raise TypeError(f"kinetics must be a MassAction, got {type(kin).__name__}")
    if tol is None:
        tol = 64.0 * torch.finfo(x0.dtype).eps
    if bool((x0 < 0).any()):
        raise ValueError("x0 must be >= 0: concentrations are never negative")
    if not (dt > 0 and growth >= 1 and max_dt > 0 and tol > 0 and max_steps >= 1):
        raise ValueError(
            f"need dt > 0, growth >= 1, max_dt > 0, tol > 0, max_steps >= 1; got dt={dt}, "
            f"growth={growth}, max_dt={max_dt}, tol={tol}, max_steps={max_steps}"
        )
    x = x0
    h, t, steps = dt, 0.0, 0
    with torch.no_grad():
        coeffs = kin.self_coefficients(x)
        rel = _relative_residual(x, coeffs)
        while steps < max_steps and bool((rel > tol).any()):
            inv_h = 0.0 if math.isinf(h) else 1.0 / h
            if upper is None:
                x = _solve(kin, x, coeffs, inv_h)
            else:
                x = _solve_bounded(kin, x, coeffs, inv_h, upper)
            t += h
            steps += 1
            h = min(h * growth, max_dt)
            if h > 1e300:
                h = math.inf
            coeffs = kin.self_coefficients(x)
            rel = _relative_residual(x, coeffs)
        res = torch.cat([kin.rhs(c).abs().amax(1) for c in x.split(64)])
    return SteadyStateResult(x=x, residual=res, converged=rel <= tol, steps=steps, time=t)


def settling_time(
    kin: MassAction,
    x0: torch.Tensor,
    x_star: torch.Tensor,
    *,
    dt: float,
    t_max: float,
    rtol: float = 1e-3,
    atol: float = 1e-6,
) -> torch.Tensor:
    """Time after which every species stays within ``atol + rtol·|x*|`` of the steady state.

    Fixed-step time integration with :func:`implicit_step` (first order in ``dt``; halve
    ``dt`` to check that the answer has converged).

    Args:
        kin: Kinetics of the network.
        x0: Initial concentrations, shape (batch, n_species).
        x_star: The steady state, shape (batch, n_species).
        dt: Step size.
        t_max: Simulated time; rows not settled by then report ``inf``.
        rtol: Relative band.
        atol: Absolute band.

    Returns:
        Settling time per row, shape (batch,), float64.
    """
    _check(kin)
    n_steps = int(math.ceil(t_max / dt))
    band = atol + rtol * x_star.abs()
    last_out = torch.zeros(x0.shape[0], dtype=torch.float64)
    x = x0
    with torch.no_grad():
        for k in range(1, n_steps + 1):
            x = implicit_step(kin, x, 1.0 / dt)
            outside = ((x - x_star).abs() > band).any(1)
            last_out = torch.where(outside, torch.full_like(last_out, k * dt), last_out)
    settled = last_out < n_steps * dt
    return torch.where(settled, last_out, torch.full_like(last_out, math.inf))


def scipy_steady_state(
    kin: MassAction,
    x0: np.ndarray,
    *,
    t_end: float,
    method: str = "BDF",
    rtol: float = 1e-10,
    atol: float = 1e-12,
) -> np.ndarray:
    """Reference: integrate one initial state with ``scipy.integrate.solve_ivp`` to ``t_end``.

    Uses the stoichiometric right-hand side ``S v`` (the same model, a different solver).

    Args:
        kin: Kinetics of the network.
        x0: Initial concentrations, shape (n_species,).
        t_end: End time (choose it many settling times long).
        method: A stiff scipy method, ``"BDF"``, ``"LSODA"`` or ``"Radau"``.
        rtol: Relative tolerance.
        atol: Absolute tolerance.

    Returns:
        Concentrations at ``t_end``, shape (n_species,).

    Raises:
        RuntimeError: If the solver fails.
    """
    from scipy.integrate import solve_ivp

    def f(_t: float, y: np.ndarray) -> np.ndarray:
        xt = torch.from_numpy(y).to(kin.dtype)[None]
        return kin.rhs(xt)[0].to(torch.float64).numpy()

    sol = solve_ivp(
        f, (0.0, t_end), np.asarray(x0, dtype=np.float64), method=method, rtol=rtol, atol=atol
    )
    if not sol.success:
        raise RuntimeError(f"solve_ivp({method}) failed: {sol.message}")
    return sol.y[:, -1]


def ode_steady_state(
    kin: MassAction,
    x0: torch.Tensor,
    *,
    t_end: float,
    rtol: float = 1e-10,
    atol: float = 1e-13,
    method: str = "dopri5",
) -> torch.Tensor:
    """Integrate a batch of states with torchdiffeq to ``t_end`` (time-accurate, any network).

    For networks the semi-implicit :func:`steady_state` refuses (positive second-order
    self-terms, as in the sigmoid and saturating neurons). The whole batch is one ODE system.

    Args:
        kin: Kinetics of the network.
        x0: Initial concentrations ≥ 0, shape (batch, n_species), dtype ``kin.dtype``.
        t_end: End time; choose it many slowest settling times long (for one layer
            ``ln(1/tol)/rate``, and layers settle one after another).
        rtol: Relative tolerance.
        atol: Absolute tolerance.
        method: A torchdiffeq method name.

    Returns:
        Concentrations at ``t_end``, shape (batch, n_species).

    Raises:
        ValueError: If ``x0`` has negative entries or ``t_end`` is not positive.
    """
    from torchdiffeq import odeint

    if not isinstance(kin, MassAction):
        raise TypeError(f"kinetics must be a MassAction, got {type(kin).__name__}")
    if bool((x0 < 0).any()):
        raise ValueError("x0 must be >= 0: concentrations are never negative")
    if not (t_end > 0):
        raise ValueError(f"t_end must be > 0, got {t_end!r}")
    t = torch.tensor([0.0, float(t_end)], dtype=x0.dtype)
    with torch.no_grad():
        out = odeint(lambda _t, x: kin.rhs(x), x0, t, rtol=rtol, atol=atol, method=method)
    return out[-1]
