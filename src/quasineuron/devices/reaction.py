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

Other activations follow the same general construction (docs/reaction-networks.md): one species
per neuron with

    dx/dt = a(x) + z·b(x),      a, b polynomials of degree ≤ 2, b > 0 inside the range,

so the steady state solves ``z = −a(x)/b(x)`` and the activation is the inverse of that rational
map. With a and b quadratic the ODE is a Riccati equation with constant coefficients, so the
approach to the steady state is exactly exponential at the rate ``|∂f/∂x|(x*)`` = the square root
of the quadratic's discriminant. Two more are built here:

* **sigmoid-like** (``reaction-sigmoid``): ``dx/dt = ε(1 − 2x) + z·x(1 − x)``, steady state
  ``s_ε(z) = 2ε / (√(z² + 4ε²) − z + 2ε)`` in (0, 1), ``s_ε(0) = 1/2``, ``s_ε(−z) = 1 − s_ε(z)``,
  slope ``1/(8ε)`` at 0, rate ``√(z² + 4ε²)``;
* **saturating** (``reaction-saturating``): ``dx/dt = ε(1 − x) + z·x(1 − x) − x²``, steady state
  ``r_ε(z) = 2ε / (√((z + ε)² + 4ε) − z + ε)`` in (0, 1), which tends to
  ``max(z, 0)/(1 + max(z, 0))`` (a ReLU that saturates like Michaelis–Menten) as ε → 0, rate
  ``√((z + ε)² + 4ε)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torchdiffeq import odeint

from quasineuron.devices.base import Box
from quasineuron.devices.fixed_point import FixedPointDevice, FixedPointSolver, Integrate, Newton

__all__ = [
    "ACTIVATIONS",
    "ReactionActivation",
    "activation_rhs",
    "convergence_rate",
    "integrate_activation",
    "integrate_reaction",
    "reaction_relu",
    "reaction_rhs",
    "reaction_saturating",
    "reaction_sigmoid",
    "saturating_relu",
    "saturating_relu_rate",
    "smoothed_relu",
    "smoothed_relu_derivative",
    "smoothed_sigmoid",
    "smoothed_sigmoid_rate",
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
    return integrate_activation("relu", z, x0, t, eps=eps, rtol=rtol, atol=atol, method=method)


def reaction_relu(
    *,
    eps: float = 0.01,
    domain: Box | None = None,
    solver: FixedPointSolver | None = None,
    name: str = "reaction-relu",
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


# ---------------------------------------------------------------------------------------------
# The general construction: dx/dt = a(x) + z·b(x) with a quadratic discriminant


def smoothed_sigmoid(z: torch.Tensor, eps: float) -> torch.Tensor:
    """Steady state of ``dx/dt = ε(1 − 2x) + z·x(1 − x)``: ``2ε / (√(z² + 4ε²) − z + 2ε)``.

    A sigmoid in (0, 1) with ``s(0) = 1/2``, ``s(−z) = 1 − s(z)`` and slope ``1/(8ε)`` at 0
    (ε = 1/2 matches the logistic function's slope 1/4). Evaluated as ``1 − s(−z)`` for z > 0
    so that no branch subtracts nearly equal numbers.

    Args:
        z: Net drive, any shape.
        eps: Rate ε > 0 of the inflow ``∅ → X`` (the outflow ``X → ∅`` runs at 2ε).

    Returns:
        ``s_ε(z)``, same shape and dtype as ``z``, in (0, 1).
    """
    eps = _check_eps(eps)
    zn = z.clamp(max=0.0)  # clamp passes the gradient at 0 itself, unlike abs
    zp = z.clamp(min=0.0)
    low = 2.0 * eps / (torch.sqrt(zn * zn + 4.0 * eps * eps) - zn + 2.0 * eps)  # s(z), z ≤ 0
    high = 1.0 - 2.0 * eps / (torch.sqrt(zp * zp + 4.0 * eps * eps) + zp + 2.0 * eps)  # 1 − s(−z)
    return torch.where(z > 0, high, low)


def smoothed_sigmoid_rate(z: torch.Tensor, eps: float) -> torch.Tensor:
    """Exact exponential rate ``√(z² + 4ε²)`` of the sigmoid neuron; at least ``2ε``.

    Args:
        z: Net drive, any shape.
        eps: Rate ε > 0.

    Returns:
        The rate (1/time), same shape and dtype as ``z``.
    """
    eps = _check_eps(eps)
    return torch.sqrt(z * z + 4.0 * eps * eps)


def saturating_relu(z: torch.Tensor, eps: float) -> torch.Tensor:
    """Steady state of ``dx/dt = ε(1 − x) + z·x(1 − x) − x²``, a smoothed saturating ReLU.

    ``r_ε(z) = 2ε / (√((z + ε)² + 4ε) − z + ε)`` lies in (0, 1) and tends to
    ``max(z, 0) / (1 + max(z, 0))`` as ε → 0. For z ≥ 0 it is evaluated in the equal form
    ``(z − ε + √D) / (2(z + 1))``, which has no cancellation there.

    Args:
        z: Net drive, any shape.
        eps: Rate ε > 0 of the inflow ``∅ → X`` (and of the outflow ``X → ∅``).

    Returns:
        ``r_ε(z)``, same shape and dtype as ``z``, in (0, 1).
    """
    eps = _check_eps(eps)
    zp = z.clamp(min=0.0)
    zn = z.clamp(max=0.0)
    # each branch is evaluated only on the side where it is finite and cancellation-free, so
    # torch.where's gradient never meets an inf or nan from the unused side
    high = (zp - eps + torch.sqrt((zp + eps) ** 2 + 4.0 * eps)) / (2.0 * (zp + 1.0))
    low = 2.0 * eps / (torch.sqrt((zn + eps) ** 2 + 4.0 * eps) - zn + eps)
    return torch.where(z >= 0, high, low)


def saturating_relu_rate(z: torch.Tensor, eps: float) -> torch.Tensor:
    """Exact exponential rate ``√((z + ε)² + 4ε)`` of the saturating neuron; at least ``2√ε``.

    Args:
        z: Net drive, any shape.
        eps: Rate ε > 0.

    Returns:
        The rate (1/time), same shape and dtype as ``z``.
    """
    eps = _check_eps(eps)
    return torch.sqrt((z + eps) ** 2 + 4.0 * eps)


def _relu_f(eps: float, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return eps + z * x - x * x


def _sigmoid_f(eps: float, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return eps * (1.0 - 2.0 * x) + z * x * (1.0 - x)


def _saturating_f(eps: float, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return eps * (1.0 - x) + z * x * (1.0 - x) - x * x


def _relu_rate(z: torch.Tensor, eps: float) -> torch.Tensor:
    return convergence_rate(z, eps)


@dataclass(frozen=True)
class ReactionActivation:
    """One activation of the general construction: its ODE, closed form and rate.

    Args:
        name: Kebab-case name (``"relu"``, ``"sigmoid"``, ``"saturating"``).
        rhs: ``f(eps, x, z)``, the mass-action rate ``dx/dt`` elementwise.
        closed_form: ``σ(z, eps)``, the steady state.
        rate: ``λ(z, eps)``, the exact exponential convergence rate ``|∂f/∂x|`` at the steady
            state.
        upper: Upper end of the invariant interval of concentrations (``inf`` for the ReLU).
    """

    name: str
    rhs: Callable[[float, torch.Tensor, torch.Tensor], torch.Tensor]
    closed_form: Callable[[torch.Tensor, float], torch.Tensor]
    rate: Callable[[torch.Tensor, float], torch.Tensor]
    upper: float


#: The built activations by name.
ACTIVATIONS: dict[str, ReactionActivation] = {
    "relu": ReactionActivation("relu", _relu_f, smoothed_relu, _relu_rate, math.inf),
    "sigmoid": ReactionActivation(
        "sigmoid", _sigmoid_f, smoothed_sigmoid, smoothed_sigmoid_rate, 1.0
    ),
    "saturating": ReactionActivation(
        "saturating", _saturating_f, saturating_relu, saturating_relu_rate, 1.0
    ),
}


def _activation(name: str) -> ReactionActivation:
    if name not in ACTIVATIONS:
        raise ValueError(
            f"unknown reaction activation {name!r}; expected one of {sorted(ACTIVATIONS)}"
        )
    return ACTIVATIONS[name]


def activation_rhs(activation: str, x: torch.Tensor, z: torch.Tensor, eps: float) -> torch.Tensor:
    """Mass-action rate ``dx/dt`` of one neuron of the named activation, elementwise.

    Args:
        activation: ``"relu"``, ``"sigmoid"`` or ``"saturating"``.
        x: Concentration, any shape.
        z: Net drive, broadcastable with ``x``.
        eps: Rate ε > 0.

    Returns:
        ``dx/dt``, the broadcast shape.
    """
    return _activation(activation).rhs(_check_eps(eps), x, z)


def integrate_activation(
    activation: str,
    z: torch.Tensor,
    x0: float | torch.Tensor,
    t: torch.Tensor,
    *,
    eps: float,
    rtol: float = 1e-10,
    atol: float = 1e-14,
    method: str = "dopri5",
) -> torch.Tensor:
    """Integrate one neuron of the named activation in time, each drive held fixed.

    Args:
        activation: ``"relu"``, ``"sigmoid"`` or ``"saturating"``.
        z: Drives, shape (batch,).
        x0: Initial concentration(s) in the invariant interval (``[0, 1]`` for the sigmoid
            and saturating neurons, ``[0, ∞)`` for the ReLU).
        t: Increasing output times, shape (n_t,).
        eps: Rate ε > 0.
        rtol: Relative tolerance of the adaptive solver.
        atol: Absolute tolerance of the adaptive solver.
        method: A torchdiffeq method name.

    Returns:
        ``x(t)``, shape (n_t, batch).

    Raises:
        ValueError: If ``z`` is not 1-D or ``x0`` lies outside the invariant interval, from
            which the concentration need not reach the steady state.
    """
    act = _activation(activation)
    eps = _check_eps(eps)
    if z.ndim != 1:
        raise ValueError(f"z must have shape (batch,), got {tuple(z.shape)}")
    x_start = torch.as_tensor(x0, dtype=z.dtype, device=z.device).expand_as(z).clone()
    if bool((x_start < 0).any()):
        raise ValueError("x0 must be >= 0: concentrations are never negative")
    if bool((x_start > act.upper).any()):
        raise ValueError(
            f"x0 must lie in [0, {act.upper}] for the {activation} neuron: that interval is "
            "invariant and every start in it reaches the steady state"
        )
    zd = z.detach()

    def rhs(_t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return act.rhs(eps, x, zd)

    return odeint(
        rhs, x_start, t.to(dtype=z.dtype, device=z.device), rtol=rtol, atol=atol, method=method
    )


def _bounded_device(
    activation: str,
    eps: float,
    domain: Box | None,
    solver: FixedPointSolver | None,
    name: str,
) -> FixedPointDevice:
    act = _activation(activation)
    eps = _check_eps(eps)
    return FixedPointDevice(
        partial(act.rhs, eps),
        n_in=1,
        n_state=1,
        n_out=1,
        x_init=partial(_x_init_bounded, -1.0 if activation == "saturating" else 0.0),
        readout=_identity,
        domain=domain if domain is not None else Box((-8.0,), (8.0,)),
        kind="ode",
        solver=solver if solver is not None else _bounded_solver(),
        name=name,
        params={"eps": eps, "activation": activation},
    )


def _x_init_bounded(pivot: float, u: torch.Tensor) -> torch.Tensor:
    # f is a quadratic in x whose x² coefficient is −(z − pivot) (sigmoid: pivot 0; saturating:
    # pivot −1). Where it is concave (z > pivot) start at x = 1, right of the positive root, where
    # f(1) < 0: Newton descends monotonically. Where it is convex start at x = 0, left of the
    # smaller root, where f(0) = ε > 0: Newton climbs monotonically. Either way it never jumps
    # to the other root, which lies outside [0, 1].
    return (u > pivot).to(u.dtype)


def _bounded_solver() -> Newton:
    # no bounds: from the starts above Newton stays inside [0, 1] on its own
    return Newton(tol=1e-12, max_iter=60, fallback=Integrate(tol=1e-12))


def reaction_sigmoid(
    *,
    eps: float = 0.5,
    domain: Box | None = None,
    solver: FixedPointSolver | None = None,
    name: str = "reaction-sigmoid",
) -> FixedPointDevice:
    """Sigmoid-like reaction neuron: drive z (batch, 1) → steady state of ``ε(1−2x) + z·x(1−x)``.

    Reactions per neuron: ``∅ → X`` (ε), ``X → ∅`` (2ε); a drive +w·y is
    ``Y + X → Y + 2X`` and ``Y + 2X → Y + X`` (both at rate w), a drive −w·y is ``Y + X → Y``
    and ``Y + 2X → Y + 3X`` (both at rate w). The steady state is :func:`smoothed_sigmoid`,
    found by Newton on the ODE (not from the closed form); gradients follow the implicit
    function theorem.

    Args:
        eps: Rate ε > 0; ε = 1/2 (the default) gives the logistic function's slope 1/4 at 0.
        domain: Box of drives, default ``z ∈ [−8, 8]``.
        solver: Fixed-point solver; default Newton kept in [0, 1] with an ODE fallback.
        name: Name used in reports.

    Returns:
        A differentiable device with ``n_in = n_out = 1`` and one state.
    """
    return _bounded_device("sigmoid", eps, domain, solver, name)


def reaction_saturating(
    *,
    eps: float = 0.01,
    domain: Box | None = None,
    solver: FixedPointSolver | None = None,
    name: str = "reaction-saturating",
) -> FixedPointDevice:
    """Saturating reaction neuron: steady state of ``ε(1 − x) + z·x(1 − x) − x²``.

    Reactions per neuron: ``∅ → X`` (ε), ``X → ∅`` (ε), ``2X → X`` (1), and the drive's
    reactions as in :func:`reaction_sigmoid`. The steady state is :func:`saturating_relu`,
    ≈ ``max(z, 0)/(1 + max(z, 0))`` for small ε.

    Args:
        eps: Rate ε > 0.
        domain: Box of drives, default ``z ∈ [−8, 8]``.
        solver: Fixed-point solver; default Newton kept in [0, 1] with an ODE fallback.
        name: Name used in reports.

    Returns:
        A differentiable device with ``n_in = n_out = 1`` and one state.
    """
    return _bounded_device("saturating", eps, domain, solver, name)
