"""A chemical reaction network neuron: the smoothed ReLU as a mass-action steady state.

One species X with mass-action kinetics driven by the catalysts' net drive ``z``,

    dx/dt = ε + z·x − x²                                                       (B1)

(``∅ → X`` at rate ε, ``X → 2X`` / ``X → ∅`` at rate |z|, ``2X → X`` at rate 1). The right-hand
side is a downward parabola in x with value ε > 0 at x = 0, so it has exactly one positive root,

    x* = σ_ε(z) = (z + √(z² + 4ε)) / 2,

which attracts every x(0) ≥ 0 at the exponential rate √(z² + 4ε); the other root is negative
and unreachable from positive concentrations. The device finds ``x*`` as a true ODE fixed
point (Newton on B1), not from the closed form; :func:`smoothed_relu` is the closed form for
training and tests.

Reference: docs/models.md §B.2–B.4 (mass-action construction of the smoothed ReLU after
Anderson, Joshi, Deshpande, "On reaction network implementations of neural networks",
J. R. Soc. Interface 18 (2021) 20210031).
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torchdiffeq import odeint

from quasineuron.devices.base import Box
from quasineuron.devices.fixed_point import FixedPointDevice, FixedPointSolver, Integrate, Newton

__all__ = [
    "convergence_rate",
    "integrate_reaction",
    "reaction_relu",
    "reaction_rhs",
    "smoothed_relu",
    "smoothed_relu_derivative",
]


def _check_eps(eps: float) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"eps must be a float > 0, got {type(eps).__name__}")
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(
            f"eps must be a finite float > 0, got {eps!r}; without the smoothing inflow (eps=0) "
            "x=0 is also a steady state and the map is not smooth at z=0"
        )
    return float(eps)


def reaction_rhs(x: torch.Tensor, z: torch.Tensor, eps: float) -> torch.Tensor:
    """Mass-action rate ``dx/dt = ε + z·x − x²`` (B1), elementwise.

    Args:
        x: Concentration of X, any shape.
        z: Net drive, broadcastable with ``x``.
        eps: Smoothing inflow rate ε > 0.

    Returns:
        ``dx/dt``, the broadcast shape of ``x`` and ``z``.
    """
    return eps + z * x - x * x


def smoothed_relu(z: torch.Tensor, eps: float) -> torch.Tensor:
    """Closed-form steady state ``σ_ε(z) = (z + √(z² + 4ε)) / 2`` of (B1), elementwise.

    Evaluated without cancellation for z < 0 as ``2ε / (√(z² + 4ε) − z)``.

    Args:
        z: Net drive, any shape.
        eps: Smoothing ε > 0; ``σ_ε(0) = √ε`` and ``σ_ε → max(z, 0)`` as ε → 0.

    Returns:
        ``σ_ε(z)``, same shape and dtype as ``z``, strictly positive.
    """
    eps = _check_eps(eps)
    s = torch.sqrt(z * z + 4.0 * eps)
    # both branches are finite and positive everywhere, so torch.where's gradient is clean
    return torch.where(z >= 0, 0.5 * (z + s), 2.0 * eps / (s + z.abs()))


def smoothed_relu_derivative(z: torch.Tensor, eps: float) -> torch.Tensor:
    """Derivative ``σ_ε'(z) = (1 + z / √(z² + 4ε)) / 2 = σ_ε(z) / √(z² + 4ε)``, in (0, 1).

    Args:
        z: Net drive, any shape.
        eps: Smoothing ε > 0.

    Returns:
        ``σ_ε'(z)``, same shape and dtype as ``z``.
    """
    return smoothed_relu(z, eps) / convergence_rate(z, eps)


def convergence_rate(z: torch.Tensor, eps: float) -> torch.Tensor:
    """Exponential rate ``√(z² + 4ε)`` (1/time) at which (B1) approaches its steady state.

    Args:
        z: Net drive, any shape.
        eps: Smoothing ε > 0.

    Returns:
        The rate, same shape and dtype as ``z``; at least ``2√ε``.
    """
    eps = _check_eps(eps)
    return torch.sqrt(z * z + 4.0 * eps)


def integrate_reaction(
    z: torch.Tensor,
    x0: float | torch.Tensor,
    t: torch.Tensor,
    *,
    eps: float,
    rtol: float = 1e-10,
    atol: float = 1e-14,
    method: str = "dopri5",
) -> torch.Tensor:
    """Integrate (B1) in time with torchdiffeq, each drive held fixed.

    Args:
        z: Drives, shape (batch,).
        x0: Initial concentration(s) ≥ 0: a float or a tensor (batch,).
        t: Increasing output times, shape (n_t,); ``t[0]`` is the initial time.
        eps: Smoothing ε > 0.
        rtol: Relative tolerance of the adaptive solver.
        atol: Absolute tolerance of the adaptive solver (keep it well below the deviations
            ``|x − x*|`` you want to resolve).
        method: A torchdiffeq method name, e.g. ``"dopri5"`` or ``"dopri8"``.

    Returns:
        ``x(t)``, shape (n_t, batch), dtype of ``z``.

    Raises:
        ValueError: If ``z`` is not 1-D or ``x0`` is negative.
    """
    eps = _check_eps(eps)
    if z.ndim != 1:
        raise ValueError(f"z must have shape (batch,), got {tuple(z.shape)}")
    x_start = torch.as_tensor(x0, dtype=z.dtype, device=z.device).expand_as(z).clone()
    if bool((x_start < 0).any()):
        raise ValueError("x0 must be >= 0: concentrations are never negative")
    t = t.to(dtype=z.dtype, device=z.device)
    zd = z.detach()

    def rhs(_t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return reaction_rhs(x, zd, eps)

    return odeint(rhs, x_start, t, rtol=rtol, atol=atol, method=method)


def reaction_relu(
    *,
    eps: float = 0.01,
    domain: Box | None = None,
    solver: FixedPointSolver | None = None,
    name: str = "reaction_relu",
) -> FixedPointDevice:
    """The reaction-network neuron: drive ``z`` (batch, 1) → steady state ``x*`` (batch, 1).

    ``x*`` is found as a fixed point of ``dx/dt = ε + z·x − x²`` by :class:`FixedPointDevice`
    (``kind="ode"``), starting from the positive concentration ``x(0) = |z| + √ε``. That start
    lies above ``x*`` (since ``σ_ε(z) ≤ max(z, 0) + √ε``) and right of the parabola's vertex, so
    the slope is negative all the way down and Newton descends monotonically onto the positive
    root. The default solver also keeps every iterate x > 0 (``lower=0``), so it can never
    land on the negative root, and integrates the ODE for any row Newton fails on (which,
    from x(0) > 0, always reaches the positive root). Gradients follow the
    implicit function theorem, ``dx*/dz = x*/√(z² + 4ε)``.

    Args:
        eps: Smoothing inflow rate ε > 0.
        domain: Box of drives, default ``z ∈ [−4, 4]``.
        solver: Fixed-point solver; default
            ``Newton(tol=1e-12, max_iter=60, lower=0.0, fallback=Integrate(tol=1e-12))``.
        name: Name used in reports.

    Returns:
        A differentiable device with ``n_in = n_out = 1`` and one state (the concentration).
    """
    eps = _check_eps(eps)
    # module-level functions bound by functools.partial, not closures, so the device pickles
    # (it is sent to worker processes by characterize --workers N)
    rhs = partial(_reaction_f, eps)
    x_init = partial(_x_init, math.sqrt(eps))

    return FixedPointDevice(
        rhs,
        n_in=1,
        n_state=1,
        n_out=1,
        x_init=x_init,
        readout=_identity,
        domain=domain if domain is not None else Box((-4.0,), (4.0,)),
        kind="ode",
        solver=solver if solver is not None else _default_solver(),
        name=name,
        params={"eps": eps},
    )


def _reaction_f(eps: float, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    # (B1) written out rather than calling reaction_rhs: this runs once per solver iteration
    return eps + u * x - x * x


def _x_init(sqrt_eps: float, u: torch.Tensor) -> torch.Tensor:
    # |z| + √ε lies above x* = σ_ε(z), so Newton descends monotonically (see reaction_relu)
    return u.abs() + sqrt_eps


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _default_solver() -> Newton:
    return Newton(tol=1e-12, max_iter=60, lower=0.0, fallback=Integrate(tol=1e-12))
