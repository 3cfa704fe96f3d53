"""The native fixed-step path of :class:`~quasineuron.devices.ode.ODEDevice`.

When a device's right-hand side declares its closed form in C (:class:`NativeRHS`, returned by
a ``native_form()`` method of the rhs object, as the Wuxing neuron's does), a fixed-step solve
that needs no gradient runs as one C loop instead of tensor operations:

- **Lanes.** Rows are cut into blocks of ``W`` lanes (16 in float32, 8 in float64: one 64-byte
  vector register). For every step, one loop over the block's lanes does all stages of the
  solver, the quadrature of the readout, the clip and the divergence check; every temporary is
  a scalar of that loop, so it lives in a vector register and the loop vectorises over lanes.
  A block's state stays in the L1 cache for the whole window.
- **Threads.** Blocks are split over ``torch.get_num_threads()`` threads (a ctypes call
  releases the GIL).
- **Build.** The C source (the step template plus the rhs body) is compiled once per machine
  with the system C compiler, about a second, and cached on disk keyed by the source
  (:mod:`quasineuron._native`); the rhs parameters are passed at run time, so new parameter
  values never recompile.

The arithmetic, the order of the stages, the clip, the divergence check (``|x| >= bound`` or
non-finite, after the clip, at the end of every fused call of ``unroll`` steps) and the readout
(:meth:`ODEDevice._finish`) are those of the torch path; the results agree to round-off
(float64 tests check 1e-12). The one difference in the arithmetic: products and sums may be
fused into FMA instructions, which round once instead of twice.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import math
import re
import threading
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from quasineuron._native import build_library, thread_pool

if TYPE_CHECKING:
    from quasineuron.devices.ode import FixedStep, ODEDevice, ODEResult

__all__ = ["NativeRHS", "native_available"]

logger = logging.getLogger("quasineuron.devices.ode")

# lanes per block: one 64-byte vector register of each dtype
_LANES = {torch.float32: 16, torch.float64: 8}
# below this many rows one thread does the whole batch: handing work to the pool costs more
_ROWS_PER_THREAD = 2048
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class NativeRHS:
    """A right-hand side in closed form, as C, for the native fixed-step kernel.

    An rhs object declares it through a method ``native_form(self) -> NativeRHS | None``
    (``None``: no native form for these parameters). The C statements in ``code`` compute
    ``dx[i]`` for every state component from the scalars ``x[i]`` (state), ``u[j]`` (drives),
    ``p[k]`` (``params``) and ``t`` (time), all of type ``REAL`` (``float`` or ``double``,
    the dtype of the drives). The code runs once per row and stage, inside the kernel's lane
    loop: keep it branch-free straight-line arithmetic so that the loop vectorises.

    Example:
        >>> form = NativeRHS("decay", n_state=1, n_in=1, code="dx[0] = -p[0] * x[0] + u[0];",
        ...                  params=(2.0,))  # dx/dt = -2 x + u
        >>> form.params
        (2.0,)

    Args:
        name: Lower-case identifier, used in the cached library's file name.
        n_state: Number of state components; must equal the device's.
        n_in: Number of drives; must equal the device's.
        code: C statements assigning every ``dx[i]``.
        params: Parameter values ``p[k]``, passed at run time (no recompile when they change).

    Raises:
        ValueError: For a bad name, sizes, empty code or non-finite parameters.
    """

    name: str
    n_state: int
    n_in: int
    code: str
    params: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(
                f"NativeRHS.name must be a lower-case identifier such as 'wuxing', got "
                f"{self.name!r}"
            )
        for label in ("n_state", "n_in"):
            v = getattr(self, label)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"NativeRHS.{label} must be an int >= 1, got {v!r}")
        if not isinstance(self.code, str) or "dx[" not in self.code:
            raise ValueError(
                "NativeRHS.code must be C statements assigning dx[0..n_state-1], e.g. "
                f"'dx[0] = -x[0] + u[0];', got {self.code!r}"
            )
        if re.search(r"\b(dx|x|u)\s*\[", _rename(self.code, "x", "dx")):
            raise ValueError(
                "NativeRHS.code must index x, u and dx with integer literals (x[0], not x[i]); "
                f"got {self.code!r}"
            )
        params = tuple(float(v) for v in self.params)
        if not all(math.isfinite(v) for v in params):
            raise ValueError(f"NativeRHS.params must be finite, got {self.params!r}")
        object.__setattr__(self, "params", params)

    def source(self) -> str:
        """The complete C source of the kernel for this rhs (float32 and float64)."""
        # generated once per form (parameters are not part of it): a solve asks on every call
        return _source(self.n_state, self.n_in, self.code)


@functools.lru_cache(maxsize=64)
def _source(n_state: int, n_in: int, code: str) -> str:
    """The C source of :meth:`NativeRHS.source` (cached: it depends on these three only)."""
    form = NativeRHS("source", n_state=n_state, n_in=n_in, code=code)
    parts = [_HEAD.replace("NS_", str(n_state)).replace("NI_", str(n_in))]
    # one step function per solver, quadrature and clip: each a branch-free lane loop
    variants = [(s, q, c) for s in range(3) for q in (0, 1) for c in (0, 1)]
    steps = "".join(_c_step(form, *v) for v in variants)
    names = [f"step{s}{q}{c}" for s, q, c in variants]
    steps += "".join(f"PHASE_SUF({n})\n" for n in names)
    steps += "static const phase_SUF_fn phases_SUF[12] = {"
    steps += ", ".join(f"phase_{n}_SUF" for n in names) + "};\n"
    for real, suf, w, fabs in (("float", "f32", 16, "fabsf"), ("double", "f64", 8, "fabs")):
        body = (_PHASE + steps + _TEMPLATE).replace("REAL", real).replace("SUF", suf)
        parts.append(f"#define W {w}\n#define FABS {fabs}\n{body}\n#undef W\n#undef FABS\n")
    return "".join(parts)


_INDEXED = re.compile(r"\b(dx|x|u)\[\s*(\d+)\s*\]")


def _rename(code: str, src: str, dst: str) -> str:
    """``code`` with ``x[i]`` → ``{src}{i}``, ``dx[i]`` → ``{dst}{i}``, ``u[j]`` → ``u{j}``."""
    names = {"x": src, "dx": dst, "u": "u"}
    return _INDEXED.sub(lambda m: f"{names[m.group(1)]}{m.group(2)}", code)


def _c_step(form: NativeRHS, solver: int, quad: int, clip: int) -> str:
    """C of one step over a block's lanes, for one solver (0 Euler, 1 Heun, 2 RK4).

    Every state component and stage is its own scalar variable of the lane loop, so the
    compiler keeps them in vector registers and vectorises the loop over lanes. The stage
    arithmetic and its order are those of ``Euler/Heun/RK4.step`` in
    :mod:`quasineuron.devices.ode`, applied to the state and to the quadrature state
    (``dq/dt = x``).
    """
    n = form.n_state
    idx = range(n)
    out: list[str] = []

    def rhs(src: str, dst: str, t: str) -> None:
        out.append("REAL " + ", ".join(f"{dst}{i}" for i in idx) + ";")
        out.append(f"{{ const REAL t = {t}; (void)t; {_rename(form.code, src, dst)} }}")

    def let(name: str, expr: str) -> None:
        out.extend(f"const REAL {name}{i} = {expr.format(i=i)};" for i in idx)

    out.extend(f"REAL x{i} = X[{i} * W + l];" for i in idx)
    out.extend(f"const REAL u{j} = U[{j} * W + l];" for j in range(form.n_in))
    if solver == 2:
        rhs("x", "ka", "tt")
        let("sb", "x{i} + hh * ka{i}")
        rhs("sb", "kb", "tt + hh")
        let("sc", "x{i} + hh * kb{i}")
        rhs("sc", "kc", "tt + hh")
        let("sd", "x{i} + h * kc{i}")
        rhs("sd", "kd", "tt + h")
        if quad:
            out.extend(
                f"Q[{i} * W + l] += h6 * (x{i} + (REAL)2 * sb{i} + (REAL)2 * sc{i} + sd{i});"
                for i in idx
            )
        out.extend(
            f"x{i} = x{i} + h6 * (ka{i} + (REAL)2 * kb{i} + (REAL)2 * kc{i} + kd{i});" for i in idx
        )
    elif solver == 1:
        rhs("x", "ka", "tt")
        let("sb", "x{i} + h * ka{i}")
        rhs("sb", "kb", "tt + h")
        if quad:
            out.extend(f"Q[{i} * W + l] += hh * (x{i} + sb{i});" for i in idx)
        out.extend(f"x{i} = x{i} + hh * (ka{i} + kb{i});" for i in idx)
    else:
        rhs("x", "ka", "tt")
        if quad:
            out.extend(f"Q[{i} * W + l] += h * x{i};" for i in idx)
        out.extend(f"x{i} = x{i} + h * ka{i};" for i in idx)
    if clip:  # NaN stays NaN, as in torch.clamp
        out.extend(
            f"x{i} = x{i} < lo[{i}] ? lo[{i}] : (x{i} > hi[{i}] ? hi[{i}] : x{i});" for i in idx
        )
    # diverged: some |x_i| >= bound or NaN (NaN compares false), after the clip, once per fused
    # call of `every` steps; counted in a REAL lane (a char store would stop vectorisation)
    ok = " & ".join(f"(FABS(x{i}) < bound)" for i in idx)
    out.append(f"B[l] += (REAL)(check & !({ok}));")
    out.extend(f"X[{i} * W + l] = x{i};" for i in idx)
    body = "\n    ".join(out)
    name = f"step{solver}{quad}{clip}_SUF"
    return f"""
static inline __attribute__((always_inline)) void {name}(
    const int check, const REAL tt, const REAL h, REAL* restrict X,
    REAL* restrict Q, const REAL* restrict U, const REAL* restrict p, REAL* restrict B,
    const REAL* restrict lo, const REAL* restrict hi, const REAL bound) {{
  const REAL hh = (REAL)0.5 * h, h6 = h / (REAL)6;
  (void)hh; (void)h6; (void)Q; (void)lo; (void)hi;
  for (int l = 0; l < W; l++) {{
    {body}
  }}
}}
"""


_HEAD = r"""#include <math.h>
#include <stddef.h>
#define NS NS_
#define NI NI_
typedef struct {
  int solver, clip, x0_stride;
  int nsteps[2], quad[2], every[2];
  double t0[2], h[2];
  double bound;
  const double *lo, *hi;
} ode_cfg;
"""

# The phases and the rows around the step functions above: a block of W rows is loaded, every
# step of both phases (before t_from without, after it with the quadrature) runs on it, and the
# block is stored.
_PHASE = r"""
typedef void (*phase_SUF_fn)(const ode_cfg*, int, REAL*, REAL*, const REAL*, const REAL*,
                             REAL*, const REAL*, const REAL*);
#define PHASE_SUF(STEP)                                                             \
  static void phase_##STEP##_SUF(const ode_cfg* c, int ph, REAL* restrict X,        \
                                 REAL* restrict Q, const REAL* restrict U,          \
                                 const REAL* restrict p, REAL* restrict B,          \
                                 const REAL* restrict lo, const REAL* restrict hi) { \
    const int n = c->nsteps[ph], every = c->every[ph];                              \
    const REAL h = (REAL)c->h[ph], bound = (REAL)c->bound;                          \
    for (int k = 0; k < n; k++) {                                                   \
      const REAL t = (REAL)(c->t0[ph] + k * c->h[ph]);                              \
      const int check = (k + 1) % every == 0;                                       \
      STEP##_SUF(check, t, h, X, Q, U, p, B, lo, hi, bound);                        \
    }                                                                               \
  }
"""

_TEMPLATE = r"""
/* rows r0..r1 of x0 (rows, NS) and u (rows, NI) → xo (rows, NS), qo (rows, NS), bad (rows) */
int solve_SUF(const ode_cfg* c, long long r0, long long r1, const REAL* restrict x0,
              const REAL* restrict u, const REAL* restrict p, REAL* restrict xo,
              REAL* restrict qo, unsigned char* restrict bad) {
  REAL lo[NS], hi[NS];
  for (int i = 0; i < NS; i++) { lo[i] = (REAL)c->lo[i]; hi[i] = (REAL)c->hi[i]; }
  for (long long r = r0; r < r1; r += W) {
    const int nl = (r1 - r) < W ? (int)(r1 - r) : W;
    REAL X[NS * W], Q[NS * W], U[NI * W], B[W];
    for (int l = 0; l < W; l++) {
      /* lanes past the last row repeat row r: finite work, never stored */
      const long long rr = r + (l < nl ? l : 0);
      for (int i = 0; i < NS; i++) {
        X[i * W + l] = x0[rr * c->x0_stride + i];
        Q[i * W + l] = 0;
      }
      for (int j = 0; j < NI; j++) U[j * W + l] = u[rr * NI + j];
      B[l] = 0;
    }
    for (int ph = 0; ph < 2; ph++)
      phases_SUF[c->solver * 4 + c->quad[ph] * 2 + (c->clip != 0)](c, ph, X, Q, U, p, B, lo, hi);
    for (int l = 0; l < nl; l++) {
      for (int i = 0; i < NS; i++) {
        xo[(r + l) * NS + i] = X[i * W + l];
        qo[(r + l) * NS + i] = Q[i * W + l];
      }
      bad[r + l] = B[l] > 0;
    }
  }
  return 0;
}
"""


class _Cfg(ctypes.Structure):
    _fields_ = [
        ("solver", ctypes.c_int),
        ("clip", ctypes.c_int),
        ("x0_stride", ctypes.c_int),
        ("nsteps", ctypes.c_int * 2),
        ("quad", ctypes.c_int * 2),
        ("every", ctypes.c_int * 2),
        ("t0", ctypes.c_double * 2),
        ("h", ctypes.c_double * 2),
        ("bound", ctypes.c_double),
        ("lo", ctypes.c_void_p),
        ("hi", ctypes.c_void_p),
    ]


# products and sums may become FMA instructions (-std=c99 alone turns that off): about a third
# fewer instructions per step, and one rounding instead of two
_FLAGS = ("-ffp-contract=fast",)
_LOCK = threading.Lock()
# compiled libraries by source; a failed build is remembered as its message (one try)
_LIBS: dict[str, ctypes.CDLL | str] = {}
_WARNED = False


def _library(form: NativeRHS) -> ctypes.CDLL | str:
    """The library for ``form``, or why there is none (compiled once per source and process)."""
    global _WARNED
    src = form.source()
    with _LOCK:
        lib = _LIBS.get(src)
        if lib is None:
            try:
                lib = build_library(f"ode-{form.name}", src, extra_flags=_FLAGS)
                for suf in ("f32", "f64"):
                    fn = getattr(lib, f"solve_{suf}")
                    fn.argtypes = [
                        ctypes.POINTER(_Cfg),
                        ctypes.c_longlong,
                        ctypes.c_longlong,
                        *[ctypes.c_void_p] * 6,
                    ]
                    fn.restype = ctypes.c_int
            except (OSError, RuntimeError) as exc:
                lib = f"the native ODE kernel could not be built ({exc})"
                if not _WARNED:
                    _WARNED = True
                    warnings.warn(
                        f"{lib}; ODE devices use the torch path (slower; install a C compiler "
                        "or set CC to get the native one)",
                        RuntimeWarning,
                        stacklevel=4,
                    )
            _LIBS[src] = lib
        return lib


def native_available(form: NativeRHS) -> bool:
    """True if the native kernel for ``form`` is compiled (or could be now) on this machine."""
    return not isinstance(_library(form), str)


def native_form(rhs: Any) -> NativeRHS | None:
    """The :class:`NativeRHS` an rhs object declares through ``native_form()``, or None."""
    declare = getattr(rhs, "native_form", None)
    if not callable(declare):
        return None
    form = declare()
    if form is not None and not isinstance(form, NativeRHS):
        raise TypeError(
            f"rhs.native_form() must return a NativeRHS or None, got {type(form).__name__}"
        )
    return form


def _why_not(device: ODEDevice, solver: FixedStep, u: torch.Tensor) -> str | None:
    """Why this solve cannot run natively (checked before the initial state), or None."""
    if not solver.native:
        return f"{type(solver).__name__}(native=False) asks for it"
    if solver.compile:
        return f"{type(solver).__name__}(compile=True) asks for torch.compile"
    if solver.native_step is None:
        return f"the solver {type(solver).__name__} has no native step (Euler, Heun, RK4 do)"
    if u.device.type != "cpu":
        return f"the drives are on {u.device.type}, the native kernel runs on the CPU"
    if u.dtype not in _LANES:
        return f"the native kernel runs float32 and float64, not {u.dtype}"
    if torch.is_grad_enabled() and u.requires_grad:
        return "the drives require a gradient (the native kernel has none)"
    if isinstance(device.rhs, torch.nn.Module) and torch.is_grad_enabled():
        if any(p.requires_grad for p in device.rhs.parameters()):
            return "the rhs has parameters that require a gradient"
    return None


def _note(device: ODEDevice, path: str, reason: str) -> None:
    device.solve_path = (path, reason)
    # a device pickled before this attribute existed starts an empty set
    notes = device.__dict__.setdefault("_path_notes", set())
    if reason not in notes:  # one line per device and reason
        notes.add(reason)
        logger.info("ODE device %r runs the %s path: %s", device.name, path, reason)


def try_native(device: ODEDevice, solver: FixedStep, u: torch.Tensor) -> ODEResult | None:
    """Solve ``u`` with the native kernel, or return None (with a note) for the torch path.

    Args:
        device: The device (its rhs, window, clip, bound and readout).
        solver: The fixed-step solver that was asked for.
        u: Drives, shape (batch, n_in), already checked.

    Returns:
        The result, equal to the torch path's to round-off; None when the torch path must run.
    """
    reason = _why_not(device, solver, u)
    form = None
    if reason is None:
        form = native_form(device.rhs)
        if form is None:
            reason = "the rhs declares no native form (a native_form() method)"
        elif (form.n_state, form.n_in) != (device.n_state, device.n_in):
            reason = (
                f"the rhs's native form has n_state={form.n_state}, n_in={form.n_in}; the "
                f"device has n_state={device.n_state}, n_in={device.n_in}"
            )
    x0 = None
    if reason is None:
        # a fixed initial state is passed as its one row (read with stride 0), not a copy per row
        fixed = getattr(device._x0, "value", None)
        x0 = fixed[None, :] if fixed is not None else device.initial_state(u)
        if torch.is_grad_enabled() and x0.requires_grad:
            reason = "the initial state requires a gradient"
    lib = None
    if reason is None:
        assert form is not None
        lib = _library(form)
        if isinstance(lib, str):
            reason = lib
    if reason is not None:
        _note(device, "torch", reason)
        return None
    assert form is not None and x0 is not None and not isinstance(lib, str) and lib is not None
    _note(device, "native", "no gradient is needed and the rhs declares a native form")
    return _run(lib, form, device, solver, u, x0)


def _run(
    lib: ctypes.CDLL,
    form: NativeRHS,
    device: ODEDevice,
    solver: FixedStep,
    u: torch.Tensor,
    x0: torch.Tensor,
) -> ODEResult:
    dtype = u.dtype
    suf = "f32" if dtype == torch.float32 else "f64"
    batch, ns = u.shape[0], device.n_state
    uu = u.detach().contiguous()
    xx = x0.detach().to(dtype).contiguous()
    cfg = _Cfg()
    cfg.x0_stride = 0 if xx.shape[0] == 1 else ns  # one row: every row starts there
    p = torch.tensor(form.params or (0.0,), dtype=dtype)
    cfg.solver = solver.native_step
    lo_hi = device._clip if device._clip is not None else ((0.0,) * ns, (0.0,) * ns)
    lo = torch.tensor(lo_hi[0], dtype=torch.float64)
    hi = torch.tensor(lo_hi[1], dtype=torch.float64)
    cfg.clip = int(device._clip is not None)
    cfg.lo, cfg.hi = lo.data_ptr(), hi.data_ptr()
    cfg.bound = device.bound if device.bound is not None else math.inf
    n_total = 0
    phases = [(device.t_start, device._t_from, False), (device._t_from, device.t_end, device._quad)]
    for i, (ta, tb, quad) in enumerate(phases):
        n = 0
        if tb > ta:
            # the step count and the check interval of FixedStep.integrate
            n = max(1, math.ceil((tb - ta) / solver.dt - 1e-9))
            cfg.every[i] = max(d for d in range(1, min(solver.unroll, n) + 1) if n % d == 0)
            cfg.h[i] = (tb - ta) / n
        else:
            cfg.every[i], cfg.h[i] = 1, 0.0
        cfg.nsteps[i], cfg.quad[i], cfg.t0[i] = n, int(quad), ta
        n_total += n
    x_end = torch.empty(batch, ns, dtype=dtype)
    q_end = torch.empty(batch, ns, dtype=dtype)
    bad = torch.zeros(batch, dtype=torch.uint8)
    fn = getattr(lib, f"solve_{suf}")
    w = _LANES[dtype]
    ptrs = [t.data_ptr() for t in (xx, uu, p, x_end, q_end, bad)]
    blocks = -(-batch // w)
    threads = max(1, min(torch.get_num_threads(), batch // _ROWS_PER_THREAD, blocks))
    if threads == 1:
        fn(ctypes.byref(cfg), 0, batch, *ptrs)
    else:
        # whole blocks per thread: only the last one ends in a partial block
        cuts = [min(batch, w * (blocks * i // threads)) for i in range(threads + 1)]
        pool = thread_pool(threads)
        futures = [
            pool.submit(fn, ctypes.byref(cfg), cuts[i], cuts[i + 1], *ptrs) for i in range(threads)
        ]
        for f in futures:
            f.result()
    comps = list(device._comps)
    q = None
    if device._quad:  # the quadrature of every component was kept; read those of the readout
        q = q_end if comps == list(range(ns)) else q_end[:, comps]
    return device._finish(x_end, q, bad.bool(), n_total)
