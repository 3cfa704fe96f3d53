"""The Wuxing five-element neuron (equations: docs/models.md §A.1–A.3).

After Jiang K., "A Neural Network Training Method Based on Neuron Connection Coefficient
Adjustments", arXiv:2502.10414 (2025).

One neuron has five elements ``E_0..E_4`` on a ring (indices mod 5):

    dE_i/dt = K1_i E_{i-1} − K2_i E_i − K3_i E_i E_{i-2} + u_i            (A1)

(generation from the mother element i−1, self-decay, predation by the grandmother i−2, and the
external drive). With uniform parameters the rest state is ``E = B0 = (K1 − K2)/K3`` for every
element, and the signal is ``D = E − B0``. Two readouts are offered:

- ``"window"``: the time average of ``D`` over ``[0, T]`` starting from rest (an
  :class:`~quasineuron.devices.ode.ODEDevice`),
- ``"steady-state"``: ``D`` at the steady state reached under a constant drive (a
  :class:`~quasineuron.devices.fixed_point.FixedPointDevice`).

Limits (docs/models.md §A.3): a constant drive on one element diverges somewhere between −0.7 and
−0.8 with the default parameters, and a uniform drive on all five below
``−(K1−K2)²/(4 K3) = −0.125`` has no fixed point. Such rows give NaN, never an exception.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch

from quasineuron._names import canonical
from quasineuron.devices.base import AbstractDevice, Box
from quasineuron.devices.fixed_point import (
    AbstractFixedPointSolver,
    BatchedNewton,
    DriveTable,
    FixedPointDevice,
    Integrate,
)
from quasineuron.devices.native_ode import NativeRHS
from quasineuron.devices.ode import RK4, AbstractODESolver, ODEDevice, TimeAverage

__all__ = [
    "wuxing_jacobian",
    "wuxing_jacobian_rows",
    "wuxing_neuron",
    "wuxing_rest_state",
    "wuxing_rhs",
]

N_ELEMENTS = 5


def _five(v: float | Sequence[float] | torch.Tensor, label: str) -> tuple[float, ...]:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        vals = (float(v),) * N_ELEMENTS
    else:
        try:
            # a bool still reaches this branch; iterating it raises the TypeError handled below
            vals = tuple(float(a) for a in v)  # type: ignore[union-attr]
        except TypeError as exc:
            raise TypeError(f"{label} must be a float or 5 floats, got {v!r}") from exc
    if len(vals) != N_ELEMENTS or not all(math.isfinite(a) and a > 0 for a in vals):
        raise ValueError(
            f"{label} must be a positive float or 5 positive floats (one per element), got {v!r}"
        )
    return vals


def _five_rows(v: Any, label: str) -> Any:
    """Parameters for the rows layout: 5 floats, or a tensor indexed by element first."""
    if isinstance(v, torch.Tensor):
        if v.ndim < 1 or v.shape[0] != N_ELEMENTS:
            raise ValueError(
                f"{label} as a tensor must have the element as its first dimension (5, ...), got "
                f"shape {tuple(v.shape)}"
            )
        return v
    return _five(v, label)


def _elements(v: int | Sequence[int], label: str) -> tuple[int, ...]:
    els = (v,) if isinstance(v, int) else tuple(v)
    if (
        not els
        or any(
            isinstance(e, bool) or not isinstance(e, int) or not 0 <= e < N_ELEMENTS for e in els
        )
        or len(set(els)) != len(els)
    ):
        raise ValueError(
            f"{label} must be distinct element indices in 0..4, got {v!r}; e.g. {label}=(0,)"
        )
    return els


def wuxing_rhs(
    K1: float | Sequence[float] | torch.Tensor = 1.0,
    K2: float | Sequence[float] | torch.Tensor = 0.5,
    K3: float | Sequence[float] | torch.Tensor = 0.5,
    *,
    input_elements: Sequence[int] = (0,),
    layout: Literal["batch", "rows"] = "rows",
) -> Callable[..., Any]:
    """The right-hand side (A1) as ``rhs(t, x, u)`` for :class:`ODEDevice`.

    Args:
        K1: Generation rate, a float or one per element. With ``layout="rows"`` also a tensor
            whose first dimension is the element, ``(5, ...)``, broadcasting against one row
            of the state (e.g. ``(5, n_neurons, 1)`` for per-neuron parameters of a network).
        K2: Self-decay rate, likewise.
        K3: Predation rate, likewise.
        input_elements: Element receiving drive ``u_j``, for each drive j.
        layout: ``"rows"``: ``x`` a tuple of 5 tensors (batch,), ``u`` a tuple of ``n_in``
            tensors (batch,), returns a list of 5 tensors (batch,) (fuses well under
            ``torch.compile``). ``"batch"``: ``x`` (batch, 5), ``u`` (batch, n_in) →
            (batch, 5).

    Returns:
        The right-hand side ``dE/dt``.
    """
    inputs = _elements(input_elements, "input_elements")
    if layout == "rows":
        k1, k2, k3 = (_five_rows(v, n) for v, n in ((K1, "K1"), (K2, "K2"), (K3, "K3")))
        return _WuxingRowsRHS(k1, k2, k3, inputs)
    if layout != "batch":
        raise ValueError(f"layout must be 'rows' or 'batch', got {layout!r}")
    return _WuxingBatchRHS(_five(K1, "K1"), _five(K2, "K2"), _five(K3, "K3"), inputs)


# The right-hand sides are small callable classes rather than closures built inside
# ``wuxing_rhs``: a closure cannot be pickled, and a device is pickled whenever it is sent to a
# worker process (``characterize --workers 2``, ``copy.deepcopy``). ``__call__`` does exactly
# the arithmetic the closures did, so the hot path is unchanged.


class _WuxingRowsRHS:
    """(A1) in the rows layout: ``x`` 5 tensors (batch,), ``u`` n_in tensors → 5 tensors."""

    def __init__(self, k1: Any, k2: Any, k3: Any, inputs: tuple[int, ...]) -> None:
        self.k1, self.k2, self.k3, self.inputs = k1, k2, k3, inputs

    def __call__(self, t: Any, x: Sequence[torch.Tensor], u: Sequence[torch.Tensor]) -> list:
        k1, k2, k3 = self.k1, self.k2, self.k3
        d = [k1[i] * x[i - 1] - k2[i] * x[i] - k3[i] * x[i] * x[i - 2] for i in range(N_ELEMENTS)]
        for j, e in enumerate(self.inputs):
            d[e] = d[e] + u[j]
        return d

    def native_form(self) -> NativeRHS | None:
        """(A1) in C for the native ODE kernel; None for per-neuron (tensor) parameters."""
        if any(isinstance(k, torch.Tensor) for k in (self.k1, self.k2, self.k3)):
            return None
        return _wuxing_native(self.k1, self.k2, self.k3, self.inputs)


class _WuxingBatchRHS:
    """(A1) in the batch layout: ``x`` (batch, 5), ``u`` (batch, n_in) → (batch, 5)."""

    def __init__(
        self,
        k1: tuple[float, ...],
        k2: tuple[float, ...],
        k3: tuple[float, ...],
        inputs: tuple[int, ...],
    ) -> None:
        self.k1, self.k2, self.k3, self.idx = k1, k2, k3, list(inputs)
        # the rate and index tensors per (dtype, torch device): built on first use instead of
        # on every call (this runs once per solver step)
        self._coef: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor, ...]] = {}

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the tensor cache; a copy rebuilds it on first use."""
        return {**self.__dict__, "_coef": {}}

    def __call__(self, t: Any, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        coef = self._coef.get((x.dtype, x.device))
        if coef is None:
            coef = (
                x.new_tensor(self.k1),
                x.new_tensor(self.k2),
                x.new_tensor(self.k3),
                torch.tensor(self.idx, device=x.device),
            )
            self._coef[(x.dtype, x.device)] = coef
        a, b, c, idx = coef
        d = a * torch.roll(x, 1, dims=1) - b * x - c * x * torch.roll(x, 2, dims=1)
        return d.index_add(1, idx, u)

    def native_form(self) -> NativeRHS:
        """(A1) in C for the native ODE kernel."""
        return _wuxing_native(self.k1, self.k2, self.k3, tuple(self.idx))


def _wuxing_native(k1: Any, k2: Any, k3: Any, inputs: tuple[int, ...]) -> NativeRHS:
    """(A1) as C statements: ``p`` holds K1, K2, K3 (5 each).

    Written ``K1 E_{i-1} - E_i (K2 + K3 E_{i-2})``: one multiplication fewer per element than
    the rows rhs (about 15 % faster in the native kernel), equal to round-off.
    """
    lines = [
        f"dx[{i}] = p[{i}] * x[{(i - 1) % 5}]"
        f" - x[{i}] * (p[{5 + i}] + p[{10 + i}] * x[{(i - 2) % 5}]);"
        for i in range(N_ELEMENTS)
    ]
    lines += [f"dx[{e}] = dx[{e}] + u[{j}];" for j, e in enumerate(inputs)]
    return NativeRHS(
        "wuxing",
        n_state=N_ELEMENTS,
        n_in=len(inputs),
        code="\n".join(lines),
        params=(*k1, *k2, *k3),
    )


class _SteadyF:
    """``f(x, u)`` of a fixed-point device from a right-hand side ``rhs(t, x, u)``."""

    def __init__(self, rhs: Callable[..., torch.Tensor]) -> None:
        self.rhs = rhs

    def __call__(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.rhs(None, x, u)


class _Deviation:
    """Readout ``x[:, out_idx] - rest``: the signals ``D`` of the output elements."""

    def __init__(self, out_idx: list[int], rest: torch.Tensor) -> None:
        self.out_idx, self.rest = out_idx, rest

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.out_idx] - self.rest.to(dtype=x.dtype, device=x.device)


class _WuxingJacobian:
    """Closed-form ``∂(dE/dt)/∂E`` of (A1) for :class:`BatchedNewton`: x (batch, 5) → (batch, 5, 5).

    The result is a view of an element-first (5, 5, batch) tensor, the layout the batched
    Newton's elimination works in, so no transposing copy is made there.
    """

    def __init__(self, k1: tuple[float, ...], k2: tuple[float, ...], k3: tuple[float, ...]) -> None:
        self.k1, self.k2, self.k3 = k1, k2, k3

    def __call__(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        e = x.t()
        jt = x.new_zeros(N_ELEMENTS, N_ELEMENTS, x.shape[0])
        for i in range(N_ELEMENTS):  # the ring's five rows, each 3 entries (A1)
            jt[i, (i - 1) % 5] = self.k1[i]
            jt[i, i] = -self.k2[i] - self.k3[i] * e[(i - 2) % 5]
            jt[i, (i - 2) % 5] = -self.k3[i] * e[i]
        return jt.permute(2, 0, 1)


def wuxing_rest_state(
    K1: float | Sequence[float] = 1.0,
    K2: float | Sequence[float] = 0.5,
    K3: float | Sequence[float] = 0.5,
) -> tuple[float, ...]:
    """The stable rest state ``B0`` (5 floats) with no drive.

    Uniform parameters give ``B0 = (K1 − K2)/K3`` (paper, eq. 2.2). Otherwise the five
    quadratics are solved by Newton's method from ``B0`` of the mean parameters.

    Raises:
        ValueError: If no positive, stable rest state is found (e.g. ``K1 <= K2``).
    """
    k1, k2, k3 = (np.array(_five(v, n)) for v, n in ((K1, "K1"), (K2, "K2"), (K3, "K3")))
    if np.ptp(k1) == 0 and np.ptp(k2) == 0 and np.ptp(k3) == 0:
        b = np.full(N_ELEMENTS, (k1[0] - k2[0]) / k3[0])
    else:
        b = np.full(N_ELEMENTS, (k1.mean() - k2.mean()) / k3.mean())
        for _ in range(100):  # 5 unknowns: a plain Newton iteration at construction time
            f = k1 * np.roll(b, 1) - k2 * b - k3 * b * np.roll(b, 2)
            step = np.linalg.solve(_jac_np(k1, k2, k3, b), f)
            b = b - step
            if np.max(np.abs(step)) < 1e-14 * max(1.0, np.max(np.abs(b))):
                break
    jac = _jac_np(k1, k2, k3, b)
    if not (np.all(np.isfinite(b)) and np.all(b > 0) and np.linalg.eigvals(jac).real.max() < 0):
        raise ValueError(
            f"no positive stable rest state for K1={K1!r}, K2={K2!r}, K3={K3!r} (got {b}); the "
            "rest state needs K1 > K2 (docs/models.md §A.3)"
        )
    return tuple(float(v) for v in b)


def _jac_np(k1: np.ndarray, k2: np.ndarray, k3: np.ndarray, e: np.ndarray) -> np.ndarray:
    rows = [torch.from_numpy(np.asarray(v, dtype=float))[:, None] for v in (k1, k2, k3, e)]
    return wuxing_jacobian_rows(rows[3].T, rows[0], rows[1], rows[2])[0].numpy()


def wuxing_jacobian_rows(
    E: torch.Tensor, K1: torch.Tensor, K2: torch.Tensor, K3: torch.Tensor
) -> torch.Tensor:
    """Jacobians ``∂(dE/dt)/∂E`` of (A1) for many neurons at once.

    Args:
        E: States, shape (R, 5).
        K1: Generation rates, shape (5, R) (element first, as ``wuxing_rhs``'s rows layout).
        K2: Self-decay rates, (5, R).
        K3: Predation rates, (5, R).

    Returns:
        Shape (R, 5, 5), ``J[r, i, j] = ∂f_i/∂E_j``.
    """
    jac = E.new_zeros(E.shape[0], N_ELEMENTS, N_ELEMENTS)
    for i in range(N_ELEMENTS):  # five elements: the ring's structure, not a loop over rows
        jac[:, i, (i - 1) % 5] += K1[i]
        jac[:, i, i] += -K2[i] - K3[i] * E[:, (i - 2) % 5]
        jac[:, i, (i - 2) % 5] += -K3[i] * E[:, i]
    return jac


def wuxing_jacobian(
    K1: float | Sequence[float] = 1.0,
    K2: float | Sequence[float] = 0.5,
    K3: float | Sequence[float] = 0.5,
    *,
    state: Sequence[float] | None = None,
) -> np.ndarray:
    """Jacobian ``∂(dE/dt)/∂E`` (5, 5) of (A1) at ``state`` (default: the rest state)."""
    k1, k2, k3 = (np.array(_five(v, n)) for v, n in ((K1, "K1"), (K2, "K2"), (K3, "K3")))
    e = np.array(wuxing_rest_state(K1, K2, K3) if state is None else state, dtype=float)
    return _jac_np(k1, k2, k3, e)


def wuxing_neuron(
    *,
    readout: Literal["window", "steady-state"] = "window",
    K1: float | Sequence[float] = 1.0,
    K2: float | Sequence[float] = 0.5,
    K3: float | Sequence[float] = 0.5,
    input_elements: int | Sequence[int] = (0,),
    output_elements: int | Sequence[int] = (0, 1, 2, 3, 4),
    T: float = 10.0,
    solver: AbstractODESolver | None = None,
    layout: Literal["batch", "rows"] = "rows",
    clip: tuple[float, float] | None = None,
    bound: float = 1e3,
    domain: Box | None = None,
    steady_solver: Literal["newton", "integrate"] | AbstractFixedPointSolver | None = None,
) -> AbstractDevice:
    """A Wuxing five-element neuron as a device (docs/models.md §A.1–A.4).

    Drive ``u_j`` (constant) enters ``dE/dt`` of element ``input_elements[j]``; the outputs are
    the signals ``D_k = E_k − B0_k`` of ``output_elements``.

    Default domain: each drive in ``[-0.5, 2.0]`` with one input element and in
    ``[-0.1, 2.0]`` with several. Below, a single drive approaches the divergence between −0.7
    and −0.8 and a uniform drive on all five has no fixed point below −0.125 (docs/models.md §A.3),
    so these margins keep characterisation sweeps inside the well-behaved region; the upper
    limit 2.0 keeps ``D`` at a few units (large drives are fine but grow super-linearly on some
    elements). Outside the domain the device still runs; divergence gives NaN rows.

    Args:
        readout: ``"window"``: ``(1/T) ∫_0^T D dt`` from rest ``E(0) = B0``, by an
            :class:`ODEDevice`. ``"steady-state"`` (formerly ``"steady"``, which still reads
            with a warning): ``D`` at the steady state, by a
            :class:`FixedPointDevice` integrating to steady state (so a drive past the
            divergence limit reports NaN instead of an unstable fixed point); its gradients
            use the implicit function theorem.
        K1: Generation rate, a float or 5 floats.
        K2: Self-decay rate, likewise.
        K3: Predation rate, likewise.
        input_elements: Element index for each drive; ``n_in = len(input_elements)``.
        output_elements: Element indices read out; ``n_out = len(output_elements)``.
        T: Length of the window (``"window"`` only).
        solver: ODE solver for ``"window"``; default ``RK4(dt=0.1)``.
        layout: Layout handed to the ODE solver (``"rows"`` is the fast one under
            ``RK4(compile=True)``; both give the same numbers). Without a gradient the
            window runs on the native kernel whatever the layout (``ODEDevice.solve_path``).
        clip: ``(lo, hi)`` state clip for ``"window"`` (e.g. ``(0.0, 50.0)``); default none, so
            that a divergence is reported rather than hidden.
        bound: Rows with ``max |E| >= bound`` are reported diverged (NaN); for ``"steady-state"``
            the integration to steady state stops there.
        domain: Box of drives; default as above.
        steady_solver: How ``"steady-state"`` finds the steady state. ``"newton"`` (the default
            with one input element): a :class:`BatchedNewton` with the closed-form Jacobian,
            started from a :class:`DriveTable` of integrated steady states over the domain;
            rows it does not bring to a residual of 1e-10 (drives outside the domain
            included) are integrated instead. ``"integrate"`` (the default with several input
            elements, which a one-drive table cannot cover): integration to a residual of
            1e-10 from rest for every row, the slower earlier path. Or any fixed-point solver.

    Returns:
        The device; ``n_in = len(input_elements)``, ``n_out = len(output_elements)``.

    Raises:
        ValueError: For bad parameters, element indices, or a window ``T <= 0``.
    """
    k1, k2, k3 = _five(K1, "K1"), _five(K2, "K2"), _five(K3, "K3")
    inputs = _elements(input_elements, "input_elements")
    outputs = _elements(output_elements, "output_elements")
    rest = wuxing_rest_state(k1, k2, k3)
    n_in = len(inputs)
    if domain is None:
        low = -0.5 if n_in == 1 else -0.1
        domain = Box(low=(low,) * n_in, high=(2.0,) * n_in)
    params = {
        "K1": list(k1),
        "K2": list(k2),
        "K3": list(k3),
        "input_elements": list(inputs),
        "output_elements": list(outputs),
        "B0": list(rest),
    }
    # one spelling with the Wuxing network's (quasineuron._names); "steady" still reads, warning
    try:
        readout = canonical("simulation", readout, stacklevel=3)  # type: ignore[assignment]
    except (TypeError, ValueError):
        raise ValueError(f"readout must be 'window' or 'steady-state', got {readout!r}") from None
    if readout == "window" and steady_solver is not None:
        raise ValueError(
            "steady_solver= applies to readout='steady-state' only; the window readout takes "
            "solver= (an ODE solver)"
        )
    if readout == "window":
        if not (isinstance(T, (int, float)) and math.isfinite(T) and T > 0):
            raise ValueError(f"T must be a finite float > 0, got {T!r}")
        params["T"] = float(T)
        return ODEDevice(
            wuxing_rhs(k1, k2, k3, input_elements=inputs, layout=layout),
            x0=torch.tensor(rest, dtype=torch.float64),
            n_in=n_in,
            t_end=float(T),
            readout=TimeAverage(components=outputs, rest=tuple(rest[k] for k in outputs)),
            solver=RK4(dt=0.1) if solver is None else solver,
            layout=layout,
            clip=clip,
            bound=bound,
            domain=domain,
            name="wuxing-window",
            params=params,
        )
    if readout != "steady-state":
        raise ValueError(f"readout must be 'window' or 'steady-state', got {readout!r}")
    if solver is not None:
        raise ValueError(
            "solver= applies to readout='window' only; the steady-state readout integrates to "
            "steady state with its own adaptive solver"
        )
    rhs = wuxing_rhs(k1, k2, k3, input_elements=inputs, layout="batch")
    rest_out = torch.tensor([rest[k] for k in outputs], dtype=torch.float64)
    f = _SteadyF(rhs)
    read = _Deviation(list(outputs), rest_out)
    # integrate rather than Newton from B0: past the divergence limit (single drive below
    # about -0.73) Newton converges to an unstable root with negative elements, while the
    # dynamics blows up; integrating reports those rows unconverged (NaN)
    integrate = Integrate(tol=1e-10, blowup=bound)
    if steady_solver is None:
        steady_solver = "newton" if n_in == 1 else "integrate"
    if steady_solver == "integrate":
        steady_solver = integrate
    elif steady_solver == "newton":
        if n_in != 1:
            raise ValueError(
                f"steady_solver='newton' starts from a table over one drive, but the neuron has "
                f"{n_in} input elements; use steady_solver='integrate'"
            )
        # Newton is started from integrated steady states (the table), so it lands on the
        # stable root the dynamics reaches; drives off the table start from NaN, fail the
        # residual check and are integrated like before. One step is enough: from the table's
        # start (about 3e-8 off) one float64 step left a largest residual of 2e-15 over the
        # domain (float32 starts are at rounding already), and the check catches any row
        # that is not
        steady_solver = BatchedNewton(
            iterations=1,
            tol=1e-10,
            jacobian=_WuxingJacobian(k1, k2, k3),
            start=DriveTable(f, rest, domain.low[0], domain.high[0], solver=integrate),
            fallback=integrate,
        )
    elif not isinstance(steady_solver, AbstractFixedPointSolver):
        raise ValueError(
            f"steady_solver must be 'newton', 'integrate' or a fixed-point solver, got "
            f"{steady_solver!r}"
        )

    return FixedPointDevice(
        f,
        n_in=n_in,
        n_state=N_ELEMENTS,
        n_out=len(outputs),
        x_init=torch.tensor(rest, dtype=torch.float64),
        readout=read,
        domain=domain,
        kind="ode",
        solver=steady_solver,
        name="wuxing-steady",
        params=params,
    )
