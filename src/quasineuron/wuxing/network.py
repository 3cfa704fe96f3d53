"""Whole-network time simulation of a layered Wuxing network (docs/models.md §A.1, §A.4, §A.5).

All neurons of all layers form one ODE system over the state ``E`` of shape
(batch, n_slots), ``n_slots = 5 · n_neurons`` (slot ``5·neuron + element``). Each neuron follows
(A1) (the single-neuron right-hand side :func:`~quasineuron.devices.wuxing.wuxing_rhs`, applied
to all neurons at once); its drive is

    u_{b,q}(t) = Σ_{links (a,p)→(b,q)} c · D_{a,p}(t)  +  x_pixel  (input slots),

with ``D = E − B0``. The reversed network (A2) keeps every link and coefficient and flips the
signal direction: a link (a,p)→(b,q) adds ``c · D̂_{b,q}`` to ``dÊ_{a,p}/dt``; the error enters
at the read-out slots. Its neuron equation is (A1) on the mirrored ring (element i ↦ −i) with
the parameters permuted accordingly, so it reuses the same right-hand side.

Links are applied with one gather and one ``index_add`` per right-hand-side evaluation (no loop
over neurons or links); the time loop is a fixed-step Heun (default) or RK4 step of
:mod:`quasineuron.devices.ode`, with the time integral of ``D`` carried as a quadrature state.
On CPUs the same steps run by default in one fused native kernel per window
(:mod:`quasineuron.wuxing.kernel`, ``SimConfig.fused``), with the same results.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch.utils.checkpoint import checkpoint

from quasineuron.devices.fixed_point import (
    FixedPointResult,
    Integrate,
    Newton,
    implicit_fixed_point,
)
from quasineuron.devices.ode import Euler, FixedStep, Heun, compile_method
from quasineuron.devices.wuxing import wuxing_jacobian_rows, wuxing_rest_state, wuxing_rhs
from quasineuron.wuxing.wiring import N_ELEMENTS, WuxingWiring

__all__ = ["SimConfig", "SimulationResult", "SteadyState", "WuxingNetwork", "neuron_residual"]

# mirror of the ring, i -> -i (mod 5); an involution
_MIRROR = (0, 4, 3, 2, 1)
# reversed neuron (A2) = (A1) on the mirrored ring with permuted parameters:
# K1'_j = K1_{1-j}, K2'_j = K2_{-j}, K3'_j = K3_{2-j} (indices mod 5)
_MIRROR_K = (
    [(1 - j) % 5 for j in range(5)],
    [(-j) % 5 for j in range(5)],
    [(2 - j) % 5 for j in range(5)],
)


def _five(v: float | Sequence[float]) -> list[float]:
    return [float(v)] * 5 if isinstance(v, (int, float)) else [float(a) for a in v]


def _steady_residual(
    clip: tuple[float, float] | None,
) -> tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor]]:
    """Steady-state residual of independent neurons and its Jacobian (rows as below).

    With a state clip ``(lo, hi)`` the steady state is that of the guarded dynamics,
    ``E = clamp(E + f(E), lo, hi)``: an element held at a bound has ``f`` pointing outwards.
    These are exactly the states the clipped time steps stop at.
    """

    def jac_free(E: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        k = r[:, 5:].reshape(-1, 3, 5)
        return wuxing_jacobian_rows(E, k[:, 0].T, k[:, 1].T, k[:, 2].T)

    if clip is None:
        return neuron_residual, jac_free
    lo, hi = clip

    def fn(E: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return (E + neuron_residual(E, r)).clamp(lo, hi) - E

    def jac(E: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        y = E + neuron_residual(E, r)
        free = ((y > lo) & (y < hi)).to(E.dtype)[:, :, None]
        eye = torch.eye(5, dtype=E.dtype, device=E.device)
        return free * (eye + jac_free(E, r)) - eye

    return fn, jac


def neuron_residual(E: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """(A1) of independent neurons, one per row: ``dE/dt`` (R, 5).

    Args:
        E: States, shape (R, 5).
        rows: ``(drive(5), K1(5), K2(5), K3(5))`` per row, shape (R, 20).
    """
    k = rows[:, 5:].reshape(-1, 3, 5)
    rhs = wuxing_rhs(k[:, 0].T, k[:, 1].T, k[:, 2].T, input_elements=range(5), layout="rows")
    return torch.stack(rhs(None, E.unbind(1), rows[:, :5].unbind(1)), 1)


@dataclass(frozen=True)
class SimConfig:
    """Settings of the time simulation ([ours] defaults; the paper gives none).

    Why these defaults: docs/models.md §A.8.

    Args:
        T: Length of the window ``[0, T]``; the slowest neuron mode is ≈ 3.5 time units and
            signals cross every layer, so T = 30 by default.
        solver: ``Heun(dt=...)`` (default, dt = 0.05), ``RK4(dt=...)`` or ``Euler(dt=...)``.
        readout: ``"mean"``: score ``(1/T) ∫_0^T D dt`` of each read-out slot
            (docs/models.md §A.4); ``"final"``: ``D(T)``.
        input_scale: Pixel drive ``u = input_scale · x`` (constant over the window).
        clip: ``(0, E_max)`` clamp of every state after each step (the divergence guard of
            docs/models.md §A.3), or ``None`` for detection only.
        bound: A sample whose ``max |E|`` reaches ``bound`` or turns non-finite is reported
            diverged.
        checkpoint_every: For backprop through time: keep only every n-th state and recompute
            the steps in between in the backward pass (memory ∝ n_steps/n + n). ``"sqrt"``
            (default) takes n = ⌈√n_steps⌉, the n of least memory, so memory grows as
            √n_steps rather than with the window (n = 25 at the default T = 30, dt = 0.05).
            ``None`` keeps every step's graph (every step's state in the fused kernel).
        adjoint: For backprop through time: take gradients from the adjoint ODE
            (``torchdiffeq.odeint_adjoint``; Chen et al., NeurIPS 2018), solved backwards in
            time by the same fixed-step method on the same grid, instead of from the recorded
            steps. Only the states every ``checkpoint_every`` steps are kept (no graph); the
            backward reconstruction of the state restarts from them, since running this damped
            network backwards over the whole window (``checkpoint_every=None``, constant
            memory) ruins the gradient (BENCHMARKS.md). The gradient is that of the continuous
            problem, so it differs from the taped one by the solver's discretisation error
            (second order for Heun, tested). Forward values are unchanged. Needs
            ``clip=None`` (a per-step clamp is not part of an ODE that can be run backwards; a
            sample that reaches ``bound`` is frozen there and reported diverged), and ``Heun``
            or ``Euler`` uncompiled (torchdiffeq has no classical RK4).
        fused: Run the window with the fused native kernel (:mod:`quasineuron.wuxing.kernel`)
            where it applies: CPU tensors in float32 or float64, an uncompiled solver, no
            adjoint; gradients of every solver (Heun, RK4, Euler) with respect to the
            coefficients, the drive and :attr:`WuxingNetwork.K`. Elsewhere (and with
            ``fused=False``) the torch path runs.
            Same results to round-off; 4–4.5× the torch path's samples/s on one CPU thread at
            batch 32 (BENCHMARKS.md).

    With ``solver=Heun(dt, compile=True, unroll=k)`` (or ``RK4``/``Euler``) every ``k`` solver
    steps of the whole network (right-hand sides, stages, clip and divergence guard) run as one
    ``torch.compile``'d function, forward and backward. The first run of a network compiles
    for tens of seconds (a C++ compiler is needed on a CPU); after that, on 2 CPU cores, the
    forward simulation runs 1.5×, a method-2 step 1.9× and a backprop-through-time step 1.4×
    faster (BENCHMARKS.md). Results equal the uncompiled ones to rounding (tested).
    """

    T: float = 30.0
    solver: FixedStep = field(default_factory=lambda: Heun(dt=0.05))
    readout: Literal["mean", "final"] = "mean"
    input_scale: float = 1.0
    clip: tuple[float, float] | None = (0.0, 50.0)
    bound: float = 1e3
    checkpoint_every: int | Literal["sqrt"] | None = "sqrt"
    adjoint: bool = False
    fused: bool = True

    def __post_init__(self) -> None:
        if not (isinstance(self.T, (int, float)) and math.isfinite(self.T) and self.T > 0):
            raise ValueError(f"SimConfig.T must be a finite number > 0, got {self.T!r}")
        if not isinstance(self.solver, FixedStep):
            raise TypeError(
                f"SimConfig.solver must be a fixed-step solver, Heun(dt=...), RK4(dt=...) or "
                f"Euler(dt=...), got "
                f"{type(self.solver).__name__}"
            )
        if self.readout not in ("mean", "final"):
            raise ValueError(f"SimConfig.readout must be 'mean' or 'final', got {self.readout!r}")
        if not math.isfinite(self.input_scale):
            raise ValueError(f"SimConfig.input_scale must be finite, got {self.input_scale!r}")
        if self.clip is not None:
            lo, hi = self.clip
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"SimConfig.clip must be (lo, hi) with lo < hi, got {self.clip}")
        if not (math.isfinite(self.bound) and self.bound > 0):
            raise ValueError(f"SimConfig.bound must be a finite number > 0, got {self.bound!r}")
        ce = self.checkpoint_every
        if ce is not None and ce != "sqrt":
            if isinstance(ce, bool) or not isinstance(ce, int) or ce < 1:
                raise ValueError(
                    f"SimConfig.checkpoint_every must be an int >= 1, 'sqrt' or None, got {ce!r}"
                )
        if not isinstance(self.adjoint, bool):
            raise TypeError(f"SimConfig.adjoint must be a bool, got {self.adjoint!r}")
        if not isinstance(self.fused, bool):
            raise TypeError(f"SimConfig.fused must be a bool, got {self.fused!r}")
        if self.adjoint:
            if self.clip is not None:
                raise ValueError(
                    "SimConfig(adjoint=True) needs clip=None: the per-step clamp is not part of "
                    "an ODE the adjoint can run backwards (samples that reach `bound` are frozen "
                    "and reported diverged instead)"
                )
            if not isinstance(self.solver, (Heun, Euler)) or self.solver.compile:
                raise ValueError(
                    "SimConfig(adjoint=True) needs solver=Heun(dt) or Euler(dt) without compile "
                    f"(torchdiffeq's fixed-grid methods), got {self.solver!r}"
                )

    @property
    def n_steps(self) -> int:
        """Number of fixed steps over ``[0, T]``."""
        return max(1, math.ceil(self.T / self.solver.dt - 1e-9))

    @property
    def segment_steps(self) -> int | None:
        """Steps between kept states in backprop through time (``checkpoint_every`` resolved)."""
        if self.checkpoint_every == "sqrt":
            # n_steps/n kept states + n recomputed ones is least at n = √n_steps
            return max(1, math.ceil(math.sqrt(self.n_steps) - 1e-9))
        return self.checkpoint_every


@dataclass(frozen=True, eq=False)
class SimulationResult:
    """Outcome of one forward or reversed run.

    Attributes:
        score: Read-out, shape (batch, n_out) (forward run; for the reversed run the
            time-mean of ``D̂`` at the input slots, shape (batch, n_in)).
        integral: ``∫_0^T D dt`` of every slot, shape (batch, n_slots).
        final: State ``E(T)``, shape (batch, n_slots).
        diverged: Shape (batch,): ``max |E|`` reached ``bound`` or turned non-finite.
        clipped: Shape (batch,): the state clip was active at least once.
    """

    score: torch.Tensor
    integral: torch.Tensor
    final: torch.Tensor
    diverged: torch.Tensor
    clipped: torch.Tensor


@dataclass(frozen=True, eq=False)
class SteadyState:
    """Outcome of a layer-by-layer steady-state solve.

    Attributes:
        score: ``D*`` at the read-out slots (forward, (batch, n_out)) or at the pixel slots
            (reversed, (batch, n_in)).
        signal: ``D* = E* − rest`` of every slot, shape (batch, n_slots), wiring numbering.
        converged: Shape (batch,): every neuron's Newton solve converged (the others are NaN).
    """

    score: torch.Tensor
    signal: torch.Tensor
    converged: torch.Tensor


class WuxingNetwork(torch.nn.Module):
    """A layered Wuxing network simulated in time as one ODE system (docs/models.md §A).

    Example:
        >>> from quasineuron.wuxing import one_to_one_wiring
        >>> net = WuxingNetwork(one_to_one_wiring((3, 4, 1), links=(7, 4)))
        >>> net(torch.full((2, 3), 0.1)).shape
        torch.Size([2, 1])

    Args:
        wiring: Links, pixel and read-out slots.
        config: Simulation settings.
        K1: Generation rate of every neuron, a float or 5 floats (one per element).
        K2: Self-decay rate, likewise.
        K3: Predation rate, likewise.
        c0: Initial connection coefficient of every link ([ours] 1, docs/models.md §A.9).
        dtype: Dtype of the coefficients (the state follows the input's dtype).

    Attributes:
        c: Connection coefficients, shape (n_links,) (a trainable parameter).
    """

    # buffers are declared here so the type checker knows them (nn.Module's __getattr__ is untyped)
    K: torch.Tensor
    to_internal: torch.Tensor
    to_wiring: torch.Tensor
    src: torch.Tensor
    dst: torch.Tensor
    input_slots: torch.Tensor
    output_slots: torch.Tensor
    link_src: torch.Tensor
    link_dst: torch.Tensor
    rest: torch.Tensor
    rest_rev: torch.Tensor

    def __init__(
        self,
        wiring: WuxingWiring,
        *,
        config: SimConfig | None = None,
        K1: float | Sequence[float] = 1.0,
        K2: float | Sequence[float] = 0.5,
        K3: float | Sequence[float] = 0.5,
        c0: float = 1.0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if not isinstance(wiring, WuxingWiring):
            raise TypeError(
                f"wiring must be a WuxingWiring (from one_to_one_wiring, adder_wiring or "
                f"model_wiring), got {type(wiring).__name__}"
            )
        config = SimConfig() if config is None else config
        if not isinstance(config, SimConfig):
            raise TypeError(f"config must be a SimConfig, got {type(config).__name__}")
        self.wiring, self.config = wiring, config
        self.n_in = int(wiring.input_slots.numel())
        self.n_out = int(wiring.output_slots.numel())
        self.n_slots = wiring.n_slots
        n = wiring.n_neurons
        self._n = n
        # per-neuron parameters K[k, element, neuron] (k = 0, 1, 2 for K1, K2, K3), float64;
        # uniform at construction, edited per neuron by training method 1
        k = torch.tensor([_five(v) for v in (K1, K2, K3)], dtype=torch.float64)
        wuxing_rest_state(*k.tolist())  # validates the parameters (needs K1 > K2)
        self.register_buffer("K", k[:, :, None].repeat(1, 1, n).contiguous())
        # internal layout: state (n_slots, batch), element-major (row ``element·N + neuron``),
        # so each element is one contiguous (N, batch) block for the neuron equation and the
        # links are row gathers / row index_adds (several times faster than column indexing)
        slot = torch.arange(self.n_slots)
        # wiring slot 5·neuron + element  <->  internal row element·N + neuron
        self.register_buffer("to_internal", (slot % 5) * n + slot // 5, persistent=False)
        self.register_buffer("to_wiring", (slot % n) * 5 + slot // n, persistent=False)
        for name in ("src", "dst", "input_slots", "output_slots"):
            self.register_buffer(name, self.to_internal[getattr(wiring, name)], persistent=False)
        # the same links in wiring numbering, on the network's torch device (for method 2)
        self.register_buffer("link_src", wiring.src.clone(), persistent=False)
        self.register_buffer("link_dst", wiring.dst.clone(), persistent=False)
        self.register_buffer(
            "rest", torch.zeros(self.n_slots, 1, dtype=torch.float64), persistent=False
        )
        self.register_buffer("rest_rev", torch.zeros_like(self.rest), persistent=False)
        self.c = torch.nn.Parameter(torch.full((wiring.n_links,), float(c0), dtype=dtype))
        # semi-smooth Newton on the (clipped) steady-state residual; rows it cannot solve
        # (e.g. a drive with no fixed point, which the state clip holds at a bound) are integrated
        self.steady_solver = Newton(
            tol=1e-9, max_iter=40, fallback=Integrate(tol=1e-6, rtol=1e-2, atol=1e-6)
        )
        self._compiled: Callable[..., tuple[torch.Tensor, ...]] | None = None
        self.update_rest_states()

    # -- right-hand sides (internal layout) --------------------------------------------------

    @staticmethod
    def _link(
        drive: torch.Tensor, to: torch.Tensor, frm: torch.Tensor, c: torch.Tensor, D: torch.Tensor
    ) -> torch.Tensor:
        """``drive`` plus ``c · D[frm]`` summed into rows ``to``; c (L,) or (batch, L)."""
        cc = c[:, None] if c.ndim == 1 else c.T
        return drive.index_add(0, to, D.index_select(0, frm) * cc)

    def _f(
        self,
        E: torch.Tensor,
        drive: torch.Tensor,
        c: torch.Tensor,
        rest: torch.Tensor | None = None,
    ) -> torch.Tensor:
        rest = self.rest if rest is None else rest  # links carry D = E − rest
        u = self._link(drive, self.dst, self.src, c, E - rest.to(E.dtype))
        k = self.K.to(E.dtype)[..., None]  # (3, 5, N, 1): one row of parameters per neuron
        rhs = wuxing_rhs(k[0], k[1], k[2], input_elements=range(N_ELEMENTS), layout="rows")
        return torch.cat(rhs(None, E.chunk(5), u.chunk(5)))

    def _f_rev(
        self,
        E: torch.Tensor,
        drive: torch.Tensor,
        c: torch.Tensor,
        rest: torch.Tensor | None = None,
    ) -> torch.Tensor:
        rest = self.rest_rev if rest is None else rest
        u = self._link(drive, self.src, self.dst, c, E - rest.to(E.dtype))
        e, v = E.chunk(5), u.chunk(5)
        m = _MIRROR  # mirrored ring: element j of the mirror is element -j
        k = self.K.to(E.dtype)[..., None]
        rhs = wuxing_rhs(
            *(k[i][p] for i, p in enumerate(_MIRROR_K)), input_elements=range(5), layout="rows"
        )
        dm = rhs(None, [e[i] for i in m], [v[i] for i in m])
        return torch.cat([dm[i] for i in m])

    # -- per-neuron parameters and rest states -------------------------------------------------

    @property
    def layer_bounds(self) -> tuple[int, ...]:
        """First neuron of each layer and the total, ``(0, n_0, n_0 + n_1, ..., N)``."""
        return tuple(int(v) for v in torch.tensor((0, *self.wiring.sizes)).cumsum(0))

    def _neuron_rows(self, neurons: slice, drive: torch.Tensor, *, reverse: bool) -> torch.Tensor:
        """Rows ``(drive(5), K1(5), K2(5), K3(5))`` for :func:`neuron_residual`.

        ``drive`` (batch, n, 5) for the neurons in ``neurons``; reversed rows are written on
        the mirrored ring (A2 = A1 mirrored, with permuted parameters).
        """
        k = self.K[:, :, neurons].to(drive.dtype).permute(2, 0, 1)  # (n, 3, 5)
        if reverse:
            k = torch.stack([k[:, i, p] for i, p in enumerate(_MIRROR_K)], 1)
            drive = drive[..., list(_MIRROR)]
        b, n = drive.shape[0], drive.shape[1]
        return torch.cat([drive, k.reshape(1, n, 15).expand(b, n, 15)], 2).reshape(b * n, 20)

    def _steady_neurons(
        self, neurons: slice, drive: torch.Tensor, start: torch.Tensor, *, reverse: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Steady states ``E*`` (batch, n, 5) of ``neurons`` under constant ``drive``.

        Newton from ``start`` (n, 5) with implicit-function gradients (with respect to the
        drive and, through it, to ``c``). Returns ``E*`` (NaN where unsolved) and the per-row
        convergence (batch, n).
        """
        rows = self._neuron_rows(neurons, drive, reverse=reverse)
        b, n = drive.shape[0], drive.shape[1]
        x0 = start[:, list(_MIRROR)] if reverse else start
        x0 = x0.to(drive.dtype).expand(b, n, 5).reshape(b * n, 5)
        fn, jac = _steady_residual(self.config.clip)
        result = self._solve_rows(fn, jac, x0, rows.detach())
        if torch.is_grad_enabled() and rows.requires_grad:
            E = implicit_fixed_point(fn, result, rows, jacobian=jac)
        else:
            E = torch.where(result.converged[:, None], result.x, torch.nan)
        E = E.reshape(b, n, 5)
        if reverse:
            E = E[..., list(_MIRROR)]
        return E, result.converged.reshape(b, n)

    def _solve_rows(self, fn, jac, x0: torch.Tensor, rows: torch.Tensor) -> FixedPointResult:
        """Steady states of independent neurons (rows), without a graph.

        Newton from the rest state; rows it cannot solve get Newton from ``E = 0`` (a neuron
        the state clip holds at zero: drives with no fixed point, docs/models.md §A.3), then
        the solver's fallback (integration of the guarded dynamics).
        """
        newton = dataclasses.replace(self.steady_solver, jacobian=jac, fallback=None)
        with torch.no_grad():
            out = newton.solve(fn, x0, rows)
            if bool(out.converged.all()) or self.config.clip is None:
                return out
            idx = (~out.converged).nonzero().squeeze(1)
            start = torch.full_like(x0[idx], max(self.config.clip[0], 0.0))
            second = newton.solve(fn, start, rows[idx])
            if not bool(second.converged.all()) and self.steady_solver.fallback is not None:
                left = (~second.converged).nonzero().squeeze(1)
                full = dataclasses.replace(self.steady_solver, jacobian=jac)
                third = full.solve(fn, x0[idx[left]], rows[idx[left]])
                second = second.with_rows(left, third)
            return out.with_rows(idx, second)

    def update_rest_states(self) -> None:
        """Recompute every neuron's forward and reversed rest state from :attr:`K`.

        Called after the parameters change (training method 1). Uniform parameters give
        ``B0 = (K1 − K2)/K3``; otherwise each neuron's five quadratics are solved by Newton.

        Raises:
            ValueError: If some neuron has no positive rest state (e.g. ``K1 <= K2``).
        """
        n = self._n
        k = self.K
        guess = ((k[0] - k[1]) / k[2]).mean(0)[:, None].expand(n, 5)  # (N, 5)
        zero = k.new_zeros(1, n, 5)
        with torch.no_grad():
            fwd, ok_f = self._steady_neurons(slice(None), zero, guess, reverse=False)
            rev, ok_r = self._steady_neurons(slice(None), zero, guess, reverse=True)
        bad = ~(ok_f & ok_r)[0] | ~((fwd[0] > 0).all(1) & (rev[0] > 0).all(1))
        if not bool(bad.any()):  # the rest state must be stable (all eigenvalues Re < 0)
            jac = wuxing_jacobian_rows(fwd[0], k[0], k[1], k[2])
            bad = torch.linalg.eigvals(jac).real.amax(1) >= 0
        if bool(bad.any()):
            raise ValueError(
                f"{int(bad.sum())} neurons have no positive stable rest state (first: neuron "
                f"{int(bad.nonzero()[0])}); keep K1 > K2 > 0 and K3 > 0 (docs/models.md §A.3)"
            )
        # internal rows element·N + neuron  <-  (neuron, element)
        self.rest = fwd[0].T.reshape(-1, 1).contiguous()
        self.rest_rev = rev[0].T.reshape(-1, 1).contiguous()

    def _rest(self, *, reverse: bool) -> torch.Tensor:
        """Rest state rows (n_slots, 1), internal layout; differentiable in :attr:`K`.

        The stored rest state, or, while ``K`` requires grad (backprop that trains the
        neurons' parameters), the same state re-solved from it by Newton with
        implicit-function gradients: a change of ``K`` moves the rest state the links
        measure from, and the gradient must see it.
        """
        stored = self.rest_rev if reverse else self.rest
        if not (torch.is_grad_enabled() and self.K.requires_grad):
            return stored
        n = self._n
        start = stored[:, 0].reshape(5, n).T  # (neuron, element)
        E, ok = self._steady_neurons(slice(None), self.K.new_zeros(1, n, 5), start, reverse=reverse)
        if not bool(ok.all()):  # cannot happen for K that passed update_rest_states
            raise RuntimeError("the rest state of some neuron could not be re-solved")
        return E[0].T.reshape(-1, 1)

    def rest_state(self) -> torch.Tensor:
        """Forward rest state of every slot, shape (n_slots,), wiring numbering."""
        return self.rest[self.to_internal, 0]

    def _public(self, f, E: torch.Tensor, drive: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        i = self.to_internal
        # wiring order -> internal rows: row r holds wiring slot to_wiring[r]
        out = f(E[:, self.to_wiring].T, drive[:, self.to_wiring].T, c)
        return out.T[:, i]

    def rhs(self, E: torch.Tensor, drive: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Forward network (A1) + links: ``dE/dt``, shape (batch, n_slots).

        Slots are numbered as in the wiring (``5·neuron + element``).

        Args:
            E: State, shape (batch, n_slots).
            drive: External drive of every slot (pixels), shape (batch, n_slots).
            c: Coefficients, shape (n_links,) or (batch, n_links).
        """
        return self._public(self._f, E, drive, c)

    def rhs_reversed(self, E: torch.Tensor, drive: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Reversed network (A2) + reversed links: ``dÊ/dt``, shape (batch, n_slots).

        Args:
            E: Reversed state ``Ê``, shape (batch, n_slots).
            drive: External drive of every slot (errors at read-out slots), (batch, n_slots).
            c: Coefficients, shape (n_links,) or (batch, n_links).
        """
        return self._public(self._f_rev, E, drive, c)

    # -- time loop ---------------------------------------------------------------------------

    def _advance(
        self,
        reverse: bool,
        E: torch.Tensor,
        Q: torch.Tensor,
        drive: torch.Tensor,
        c: torch.Tensor,
        rest: torch.Tensor,
        n: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` solver steps of the whole (forward or reversed) network, each then clipped.

        Returns the new state and ``∫D dt``, and per sample ``max |E|`` and whether the clip
        was hit, both taken before clipping (the divergence guard of docs/models.md §A.3).
        """
        cfg = self.config
        f = self._f_rev if reverse else self._f
        h = cfg.T / cfg.n_steps

        def g(t: torch.Tensor, p: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
            return (f(p[0], drive, c, rest), p[0] - rest)  # autonomous: t is unused

        peak = E.new_zeros(E.shape[1])
        hit = torch.zeros(E.shape[1], dtype=torch.bool, device=E.device)
        t0 = E.new_zeros(())  # the solver's time argument; the network is autonomous
        for _ in range(n):
            E, Q = cfg.solver.step(g, t0, (E, Q), h)
            # NaN propagates through maximum, so non-finite rows are caught as well
            peak = torch.maximum(peak, E.detach().abs().amax(0))
            if cfg.clip is not None:
                lo, hi = cfg.clip
                hit = hit | (E.detach().amin(0) < lo) | (E.detach().amax(0) > hi)
                E = E.clamp(lo, hi)
        return E, Q, peak, hit

    def _stepper(self) -> Callable[..., tuple[torch.Tensor, ...]]:
        """:meth:`_advance`, under ``torch.compile`` when the solver asks for it."""
        if not self.config.solver.compile:
            return self._advance
        if self._compiled is None:
            compiled = compile_method(WuxingNetwork._advance, self)

            def advance(*args: object) -> tuple[torch.Tensor, ...]:
                with warnings.catch_warnings():
                    # tracing reads .grad of the non-leaf states; a warning of torch's own
                    warnings.filterwarnings("ignore", message="The .grad attribute of a Tensor")
                    return compiled(*args)

            self._compiled = advance
        return self._compiled

    def __getstate__(self) -> dict:
        """Copies and pickles leave the compiled step behind; it is rebuilt on first use."""
        state = self.__dict__.copy()
        state["_compiled"] = None
        return state

    def _run(
        self,
        reverse: bool,
        E0: torch.Tensor,
        drive: torch.Tensor,
        rest: torch.Tensor,
        c: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Integrate from ``E0`` (n_slots, batch); returns E(T), ∫D dt, diverged, clipped."""
        cfg = self.config
        n_steps = cfg.n_steps
        advance = self._stepper()
        batch = E0.shape[1]

        def chunk(
            E: torch.Tensor, Q: torch.Tensor, n: int
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
            # steps per call: the largest divisor of n up to unroll (equal calls, one graph)
            u = max(d for d in range(1, min(cfg.solver.unroll, n) + 1) if n % d == 0)
            peak = torch.zeros(batch, dtype=E.dtype, device=E.device)
            hit = torch.zeros(batch, dtype=torch.bool, device=E.device)
            for _ in range(n // u):
                E, Q, pk, ht = advance(reverse, E, Q, drive, c, rest, u)
                peak, hit = torch.maximum(peak, pk), hit | ht
            return E, Q, peak, hit

        if cfg.adjoint and torch.is_grad_enabled():
            return self._run_adjoint(reverse, E0, drive, rest, c)
        if self._fused_applies(E0, drive, rest, c):
            return self._run_fused(reverse, E0, drive, rest, c)
        E, Q = E0, torch.zeros_like(E0)
        peak = torch.zeros(batch, dtype=E0.dtype, device=E0.device)
        hit = torch.zeros(batch, dtype=torch.bool, device=E0.device)
        every = cfg.segment_steps
        use_ckpt = every is not None and torch.is_grad_enabled()
        size = every if every is not None and use_ckpt else n_steps
        k = 0
        while k < n_steps:
            n = min(size, n_steps - k)
            if use_ckpt:
                E, Q, pk, ht = checkpoint(chunk, E, Q, n, use_reentrant=False)
            else:
                E, Q, pk, ht = chunk(E, Q, n)
            peak, hit = torch.maximum(peak, pk), hit | ht
            k += n
        diverged = ~(peak < cfg.bound)
        return E, Q, diverged, hit

    def _fused_applies(
        self, E0: torch.Tensor, drive: torch.Tensor, rest: torch.Tensor, c: torch.Tensor
    ) -> bool:
        """Whether :meth:`_run` can use the fused kernel (see ``SimConfig.fused``)."""
        from quasineuron.wuxing import kernel

        cfg = self.config
        return (
            cfg.fused
            and not cfg.solver.compile
            and not (cfg.adjoint and torch.is_grad_enabled())
            and E0.device.type == "cpu"
            and E0.dtype in kernel.LANES
            and kernel.available()
        )

    def _run_fused(
        self,
        reverse: bool,
        E0: torch.Tensor,
        drive: torch.Tensor,
        rest: torch.Tensor,
        c: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`_run` by the fused kernel; the link index is built once per direction."""
        from quasineuron.wuxing import kernel

        plans = self.__dict__.setdefault("_fused_plans", {})
        if reverse not in plans:
            driven = self.output_slots if reverse else self.input_slots
            plans[reverse] = kernel.FusedPlan.build(
                self.src, self.dst, driven, self._n, reverse=reverse
            )
        cfg = self.config
        segment = cfg.segment_steps or cfg.n_steps
        return kernel.fused_run(plans[reverse], self.K, cfg, E0, drive, rest, c, segment=segment)

    def _run_adjoint(
        self,
        reverse: bool,
        E0: torch.Tensor,
        drive: torch.Tensor,
        rest: torch.Tensor,
        c: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`_run` with adjoint gradients (``SimConfig.adjoint``); no clip by construction."""
        import torchdiffeq

        cfg = self.config
        f = self._f_rev if reverse else self._f
        n_steps, bound = cfg.n_steps, cfg.bound

        def func(t: torch.Tensor, y: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
            E = y[0]
            # a sample past the bound stops evolving (and stays flagged): NaN compares False
            live = E.abs().amax(0) < bound
            return (torch.where(live, f(E, drive, c, rest), 0.0), torch.where(live, E - rest, 0.0))

        h = cfg.T / n_steps

        def grid(func: object, y0: object, t: torch.Tensor) -> torch.Tensor:
            # the solver's equal steps over [t0, t1], forwards and (adjoint) backwards
            m = max(1, round(abs(float(t[-1] - t[0])) / h))
            return torch.linspace(float(t[0]), float(t[-1]), m + 1, dtype=t.dtype, device=t.device)

        # states kept every `checkpoint_every` steps restart the backward reconstruction
        every = cfg.segment_steps or n_steps
        marks = [*range(0, n_steps, every), n_steps]
        t = torch.tensor(marks, dtype=E0.dtype, device=E0.device) * h
        method = "heun2" if isinstance(cfg.solver, Heun) else "euler"
        E, Q = torchdiffeq.odeint_adjoint(
            func,
            (E0, torch.zeros_like(E0)),
            t,
            method=method,
            options={"grid_constructor": grid},
            adjoint_params=(c, drive),
        )
        E, Q = E[-1], Q[-1]
        diverged = ~(E.detach().abs().amax(0) < bound)
        return E, Q, diverged, torch.zeros_like(diverged)

    def _coeffs(self, coeffs: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        c = self.c if coeffs is None else coeffs
        if c.shape[-1] != self.c.shape[0] or c.ndim not in (1, 2):
            raise ValueError(
                f"coeffs must have shape (n_links={self.c.shape[0]},) or (batch, n_links), got "
                f"{tuple(c.shape)}"
            )
        if c.ndim == 2 and c.shape[0] != x.shape[0]:
            raise ValueError(f"coeffs has {c.shape[0]} rows for a batch of {x.shape[0]}")
        return c.to(x.dtype)

    def _result(self, score, E, Q, rest, diverged, clipped) -> SimulationResult:
        w = self.to_internal
        return SimulationResult(score, Q[w].T, E[w].T, diverged, clipped)

    def simulate(self, x: torch.Tensor, *, coeffs: torch.Tensor | None = None) -> SimulationResult:
        """Run the forward network from rest with constant pixel drives.

        Differentiable with respect to ``c`` (backprop through time), and to :attr:`K` when
        it requires grad (through the neurons and their rest states, see :meth:`_rest`).

        Args:
            x: Pixels, shape (batch, n_in); the state takes its dtype and torch device.
            coeffs: Coefficients to use instead of :attr:`c`: (n_links,) or (batch, n_links)
                (one set per sample, e.g. for batched finite differences).

        Returns:
            Scores (batch, n_out), ``∫D dt`` and final state of every slot (batch, n_slots,
            slots numbered as in the wiring) and the per-sample guard flags.

        Raises:
            ValueError: If ``x`` or ``coeffs`` has the wrong shape.
        """
        self._check_x(x)
        c = self._coeffs(coeffs, x)
        rest = self._rest(reverse=False).to(x.dtype)
        drive = x.new_zeros(self.n_slots, x.shape[0])
        drive = drive.index_add(0, self.input_slots, self.config.input_scale * x.T)
        E0 = rest.expand(-1, x.shape[0]).contiguous()
        E, Q, diverged, clipped = self._run(False, E0, drive, rest, c)
        if self.config.readout == "mean":
            score = Q[self.output_slots].T / self.config.T
        else:
            score = (E - rest)[self.output_slots].T
        return self._result(score, E, Q, rest, diverged, clipped)

    def simulate_reversed(
        self, error: torch.Tensor, *, coeffs: torch.Tensor | None = None
    ) -> SimulationResult:
        """Run the reversed network (A2) from its rest state with the error at the read-outs.

        Each output neuron's read-out slot is driven by the constant ``error``
        (docs/models.md §A.5); input-layer neurons get no drive.

        Args:
            error: Error per output, shape (batch, n_out).
            coeffs: As in :meth:`simulate`.

        Returns:
            ``integral`` = ``∫ D̂ dt`` of every slot (batch, n_slots); ``score`` = the
            time-mean of ``D̂`` at the pixel slots (batch, n_in).
        """
        if error.ndim != 2 or error.shape[1] != self.n_out:
            raise ValueError(
                f"error must have shape (batch, n_out={self.n_out}), got {tuple(error.shape)}"
            )
        c = self._coeffs(coeffs, error)
        rest = self._rest(reverse=True).to(error.dtype)
        drive = error.new_zeros(self.n_slots, error.shape[0])
        drive = drive.index_add(0, self.output_slots, error.T)
        E0 = rest.expand(-1, error.shape[0]).contiguous()
        E, Q, diverged, clipped = self._run(True, E0, drive, rest, c)
        score = Q[self.input_slots].T / self.config.T
        return self._result(score, E, Q, rest, diverged, clipped)

    # -- steady state (the T → ∞ limit of the window) -----------------------------------------

    def _layer_links(self, ell: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Links of layer pair ℓ → ℓ+1: indices (src within layer ℓ, dst within layer ℓ+1)."""
        bounds = self.layer_bounds
        sel = (self.wiring.layer == ell).nonzero().squeeze(1).to(self.link_src.device)
        src = self.link_src[sel] - 5 * bounds[ell]
        dst = self.link_dst[sel] - 5 * bounds[ell + 1]
        return sel, src, dst

    def _check_x(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != self.n_in:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must have shape (batch, n_in={self.n_in}), got {got}")

    def steady_state(
        self,
        x: torch.Tensor,
        *,
        coeffs: torch.Tensor | None = None,
        neuron: Callable[[torch.Tensor], torch.Tensor] | None = None,
        drive_offset: torch.Tensor | None = None,
    ) -> SteadyState:
        """Steady state of the forward network under constant pixel drives, layer by layer.

        Links only run from layer ℓ to ℓ+1, so the steady state of the whole network is the
        composition of the layers' steady states: each layer's neurons are solved by Newton
        (per neuron and sample, 5 unknowns) given the previous layer's signals. This is the
        ``T → ∞`` limit of the time simulation where that limit exists; it is differentiable
        with respect to ``c`` (implicit function theorem), i.e. a twin of the network built
        from each neuron's steady-state map.

        Args:
            x: Pixels, shape (batch, n_in).
            coeffs: Coefficients instead of :attr:`c`: (n_links,) only.
            neuron: A twin of every neuron's steady-state map, drives (R, 5) → signals
                ``D*`` (R, 5) (e.g. from :func:`~quasineuron.wuxing.twin.fit_neuron_twin`),
                used instead of the Newton solves.
            drive_offset: Added to the drive of every slot, shape (batch, n_slots) (zero to
                leave the state unchanged; the gradient of a loss with respect to it is the
                adjoint of every slot's drive, see :func:`~quasineuron.wuxing.training.signals`).

        Returns:
            Scores ``D*`` at the read-out slots (batch, n_out), ``D*`` of every slot
            (batch, n_slots, wiring numbering) and per-sample convergence.
        """
        self._check_x(x)
        c = self._coeffs(coeffs, x)
        if c.ndim != 1:
            raise ValueError("steady_state takes one coefficient vector (n_links,)")
        bounds, batch = self.layer_bounds, x.shape[0]
        rest = self.rest_state().to(x.dtype).reshape(-1, 5)
        signals: list[torch.Tensor] = []
        ok = torch.ones(batch, dtype=torch.bool, device=x.device)
        for ell in range(len(self.wiring.sizes)):
            a, b = bounds[ell], bounds[ell + 1]
            drive = x.new_zeros(batch, 5 * (b - a))
            if ell == 0:
                pixels = self.wiring.input_slots.to(x.device)
                drive = drive.index_add(1, pixels, self.config.input_scale * x)
            else:
                sel, src, dst = self._layer_links(ell - 1)
                drive = drive.index_add(1, dst, signals[-1][:, src] * c[sel])
            if drive_offset is not None:
                drive = drive + drive_offset[:, 5 * a : 5 * b]
            if neuron is not None:
                signals.append(neuron(drive.reshape(-1, 5)).reshape(batch, -1))
                continue
            E, conv = self._steady_neurons(
                slice(a, b), drive.reshape(batch, b - a, 5), rest[a:b], reverse=False
            )
            signals.append((E - rest[a:b]).reshape(batch, -1))
            ok = ok & conv.all(1)
        D = torch.cat(signals, 1)
        return SteadyState(D[:, self.wiring.output_slots.to(x.device)], D, ok)

    def steady_state_reversed(
        self,
        error: torch.Tensor,
        *,
        coeffs: torch.Tensor | None = None,
        neuron: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> SteadyState:
        """Steady state of the reversed network (A2) with the error at the read-outs.

        Solved layer by layer from the output layer back to the input layer (the reversed
        links run from layer ℓ+1 to ℓ).

        Args:
            error: Error per output, shape (batch, n_out).
            coeffs: As in :meth:`steady_state`.
            neuron: A twin of the reversed neurons' steady-state map (drives (R, 5) →
                ``D̂*`` (R, 5)), e.g. :meth:`~quasineuron.wuxing.twin.NeuronTwin.reversed`.

        Returns:
            ``signal`` = ``D̂*`` of every slot (batch, n_slots); ``score`` = ``D̂*`` at the pixel
            slots (batch, n_in).
        """
        if error.ndim != 2 or error.shape[1] != self.n_out:
            raise ValueError(
                f"error must have shape (batch, n_out={self.n_out}), got {tuple(error.shape)}"
            )
        c = self._coeffs(coeffs, error)
        bounds, batch = self.layer_bounds, error.shape[0]
        rest = self.rest_rev[self.to_internal, 0].to(error.dtype).reshape(-1, 5)
        n_layers = len(self.wiring.sizes)
        signals: list[torch.Tensor] = []
        ok = torch.ones(batch, dtype=torch.bool, device=error.device)
        for ell in reversed(range(n_layers)):
            a, b = bounds[ell], bounds[ell + 1]
            drive = error.new_zeros(batch, 5 * (b - a))
            if ell == n_layers - 1:
                out = self.wiring.output_slots.to(error.device) - 5 * a
                drive = drive.index_add(1, out, error)
            else:
                sel, src, dst = self._layer_links(ell)
                drive = drive.index_add(1, src, signals[0][:, dst] * c[sel])
            if neuron is not None:
                signals.insert(0, neuron(drive.reshape(-1, 5)).reshape(batch, -1))
                continue
            E, conv = self._steady_neurons(
                slice(a, b), drive.reshape(batch, b - a, 5), rest[a:b], reverse=True
            )
            signals.insert(0, (E - rest[a:b]).reshape(batch, -1))
            ok = ok & conv.all(1)
        D = torch.cat(signals, 1)
        return SteadyState(D[:, self.wiring.input_slots.to(error.device)], D, ok)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores of the forward time simulation, shape (batch, n_out)."""
        return self.simulate(x).score

    def extra_repr(self) -> str:
        """Shown in ``repr(net)``."""
        return f"sizes={self.wiring.sizes}, n_links={self.wiring.n_links}, config={self.config}"
