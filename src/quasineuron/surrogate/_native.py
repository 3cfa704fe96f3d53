"""The spline twin in one native pass: cell lookup, domain check, value and Jacobian.

The torch path of :class:`~quasineuron.surrogate.spline.SplineSurrogate` evaluates a batch of
drives as about a dozen tensor operations for one drive (locate the cell, gather coefficients,
three Horner steps per output and per derivative) and about fifty for two drives, each a pass
over the whole batch in memory, plus a host synchronisation for the domain check and, under
``policy="clamp"``, a clamp whose backward is three more passes. At the sizes of a training step
(a few ten thousand drive rows) the passes and their per-operation overhead, not the arithmetic,
set the time. This kernel does all of it row by row in one loop: per drive it checks the domain
(counting rows outside, clipping them under ``"clamp"``), finds the cell, and contracts the
cell's ``4**n_in`` coefficients to the value and, when a gradient is needed, the Jacobian with
respect to every drive (zero across a clip, as the clamp's gradient is). The backward pass is
then one multiply by the saved Jacobian. Rows are independent, so a large batch is split over
torch's intra-op thread count (``torch.get_num_threads()``).

The arithmetic is the torch path's, in the same order (Horner along the last drive first); C is
compiled in ISO mode (``-std=c99``), which contracts no multiply-add into an FMA, so results
agree with the torch path to round-off. The kernel is compiled once per machine with the system
C compiler and cached on disk (``$QUASINEURON_CACHE`` or ``~/.cache/quasineuron``); without a
compiler :func:`library` returns None and the twin keeps its torch path.
"""

from __future__ import annotations

import ctypes
import threading
import warnings

import torch

from quasineuron._native import build_library, thread_pool

__all__ = ["MAX_NATIVE_OUTPUTS", "NATIVE_DTYPES", "NativeGrid", "library", "spline_eval"]

#: dtypes the kernel is built for; others use the torch path.
NATIVE_DTYPES = (torch.float32, torch.float64)

_TEMPLATE = r"""
/* Horner along one local axis: sum_m a[m] t^m, or its derivative in t (the torch path's order) */
static inline REAL horner_SUF(REAL a0, REAL a1, REAL a2, REAL a3, REAL t, int deriv) {
  REAL r;
  if (deriv) {
    r = (REAL)3.0 * a3;
    r = (a2 + ((REAL)0.5 * r) * t) * (REAL)2.0;
    return a1 + r * t;
  }
  r = a2 + a3 * t;
  r = a1 + r * t;
  return a0 + r * t;
}

/* contract one cell's coefficients c[(m_0 .. m_{d-1}), o] with the local coordinates t;
   derivative along axis `deriv` (-1: value). buf holds 4**(d-1) * n_out scratch values. */
static inline void contract_SUF(const REAL* restrict c, int d, int n_out, const REAL* t,
                                int deriv, REAL* restrict buf, REAL* restrict out) {
  const REAL* src = c;
  int pre = 1;
  for (int k = 0; k < d - 1; k++) pre *= 4;
  for (int k = d - 1; k >= 0; k--) {
    REAL* dst = k == 0 ? out : buf;
    for (int p = 0; p < pre; p++)
      for (int o = 0; o < n_out; o++) {
        const REAL* s = src + (size_t)p * 4 * n_out + o;
        dst[(size_t)p * n_out + o] =
            horner_SUF(s[0], s[n_out], s[2 * n_out], s[3 * n_out], t[k], k == deriv);
      }
    src = buf;
    pre /= 4;
  }
}

/* Evaluate rows [r0, r1). Returns the number of rows with a drive outside [low, high]. */
long long spline_SUF(long long r0, long long r1, int d, int n_out, const int* ncell,
                     const int* uniform, const REAL* nodes, const int* node_off,
                     const REAL* inv_h, const REAL* low, const REAL* high, int clamp,
                     const REAL* coef, const REAL* u, REAL* value, REAL* jac) {
  REAL buf[16 * 8]; /* 4**(d-1) * n_out with d <= 3, n_out <= 8 (checked by the caller) */
  REAL tmp[8];
  long long outside = 0;
  const int per_cell = (d == 1 ? 4 : d == 2 ? 16 : 64) * n_out;
  for (long long b = r0; b < r1; b++) {
    REAL t[3], sc[3];
    int clipped[3];
    long long flat = 0;
    int out_row = 0;
    for (int k = 0; k < d; k++) {
      REAL uk = u[b * d + k];
      clipped[k] = 0;
      if (uk < low[k] || uk > high[k]) {
        out_row = 1;
        if (clamp) {
          uk = uk < low[k] ? low[k] : high[k];
          clipped[k] = 1;
        }
      }
      const REAL* x = nodes + node_off[k];
      const REAL* ih = inv_h + node_off[k] - k;
      const int n = ncell[k];
      int i;
      if (uniform[k]) {
        const REAL pos = (uk - x[0]) * ih[0];
        /* floor(pos) clamped to a cell; for pos >= 0 truncation is floor; NaN goes to cell 0 */
        i = !(pos >= 0) ? 0 : (pos >= (REAL)(n - 1) ? n - 1 : (int)pos);
        t[k] = pos - (REAL)i;
        sc[k] = ih[0];
      } else {
        /* searchsorted(x, uk, right=True) - 1, clamped to a cell */
        int lo = 0, hi = n + 1;
        while (lo < hi) {
          const int mid = (lo + hi) / 2;
          if (x[mid] <= uk) lo = mid + 1; else hi = mid;
        }
        i = lo - 1;
        i = i < 0 ? 0 : (i > n - 1 ? n - 1 : i);
        t[k] = (uk - x[i]) * ih[i];
        sc[k] = ih[i];
      }
      flat = flat * n + i;
    }
    outside += out_row;
    const REAL* c = coef + flat * per_cell;
    if (n_out == 1 && d == 1) { /* the common cases, unrolled: same operations and order */
      value[b] = horner_SUF(c[0], c[1], c[2], c[3], t[0], 0);
      if (jac) jac[b] = clipped[0] ? 0 : horner_SUF(c[0], c[1], c[2], c[3], t[0], 1) * sc[0];
      continue;
    }
    if (n_out == 1 && d == 2) {
      /* coefficients stored transposed here, c[4 * m1 + m0]: the four Horner steps along
         t1 (one per m0) run side by side on contiguous values */
      REAL r[4], rd[4];
      const REAL t1 = t[1];
      for (int m = 0; m < 4; m++) r[m] = c[8 + m] + c[12 + m] * t1;
      for (int m = 0; m < 4; m++) r[m] = c[4 + m] + r[m] * t1;
      for (int m = 0; m < 4; m++) r[m] = c[m] + r[m] * t1;
      if (jac) {
        for (int m = 0; m < 4; m++) rd[m] = (REAL)3.0 * c[12 + m];
        for (int m = 0; m < 4; m++) rd[m] = (c[8 + m] + ((REAL)0.5 * rd[m]) * t1) * (REAL)2.0;
        for (int m = 0; m < 4; m++) rd[m] = c[4 + m] + rd[m] * t1;
      }
      value[b] = horner_SUF(r[0], r[1], r[2], r[3], t[0], 0);
      if (jac) {
        jac[2 * b] = clipped[0] ? 0 : horner_SUF(r[0], r[1], r[2], r[3], t[0], 1) * sc[0];
        jac[2 * b + 1] = clipped[1] ? 0 : horner_SUF(rd[0], rd[1], rd[2], rd[3], t[0], 0) * sc[1];
      }
      continue;
    }
    contract_SUF(c, d, n_out, t, -1, buf, value + b * n_out);
    if (jac) {
      for (int k = 0; k < d; k++) {
        REAL* jk = jac + (b * d + k) * n_out;
        if (clipped[k]) {
          for (int o = 0; o < n_out; o++) jk[o] = 0;
          continue;
        }
        contract_SUF(c, d, n_out, t, k, buf, tmp);
        for (int o = 0; o < n_out; o++) jk[o] = tmp[o] * sc[k];
      }
    }
  }
  return outside;
}
"""

#: the kernel's scratch space holds this many outputs per drive row
MAX_NATIVE_OUTPUTS = 8

_LOCK = threading.Lock()
_LIB: ctypes.CDLL | None = None
_TRIED = False


def _source() -> str:
    parts = ["#include <stddef.h>\n"]
    for real, suf in (("float", "f32"), ("double", "f64")):
        parts.append(_TEMPLATE.replace("REAL", real).replace("SUF", suf))
    return "".join(parts)


def _compile() -> ctypes.CDLL:
    # portable code (no -march=native); ISO C99 means no FMA contraction, so the arithmetic
    # rounds like the torch path's
    lib = build_library("spline", _source(), native_arch=False)
    for suf in ("f32", "f64"):
        fn = getattr(lib, f"spline_{suf}")
        fn.argtypes = [
            ctypes.c_longlong,
            ctypes.c_longlong,
            ctypes.c_int,
            ctypes.c_int,
            *[ctypes.c_void_p] * 4,
            *[ctypes.c_void_p] * 3,
            ctypes.c_int,
            *[ctypes.c_void_p] * 4,
        ]
        fn.restype = ctypes.c_longlong
    return lib


def library() -> ctypes.CDLL | None:
    """The compiled kernel, or None (with one warning) where no C compiler works."""
    global _LIB, _TRIED
    with _LOCK:
        if not _TRIED:
            _TRIED = True
            try:
                _LIB = _compile()
            except (OSError, RuntimeError) as e:
                warnings.warn(
                    f"the native spline twin kernel is unavailable ({e}); spline twins use "
                    "their torch path (slower; install a C compiler to get the native one)",
                    stacklevel=3,
                )
        return _LIB


class NativeGrid:
    """A spline's grid and coefficients laid out for the kernel, in one dtype.

    Args:
        nodes: Grid nodes per drive, ``n_in`` tensors of shape (n_k,), in the kernel's dtype.
        coef: Cell coefficients (n_cells, 4**n_in, n_out), in the kernel's dtype.
        uniform: Whether each axis is uniform (then its cell is found by a division).
        low: Domain lower bounds (n_in,), in the kernel's dtype.
        high: Domain upper bounds (n_in,), in the kernel's dtype.
    """

    def __init__(
        self,
        nodes: list[torch.Tensor],
        coef: torch.Tensor,
        uniform: list[bool],
        low: torch.Tensor,
        high: torch.Tensor,
    ) -> None:
        self.d = len(nodes)
        self.n_out = int(coef.shape[-1])
        self.dtype = coef.dtype
        self.nodes = torch.cat([x.reshape(-1) for x in nodes]).contiguous()
        # inv_h of axis k sits at offset node_off[k] - k (one fewer value than nodes per axis)
        self.inv_h = torch.cat([1.0 / (x[1:] - x[:-1]) for x in nodes]).contiguous()
        offs = [0]
        for x in nodes[:-1]:
            offs.append(offs[-1] + int(x.numel()))
        self.node_off = torch.tensor(offs, dtype=torch.int32)
        self.ncell = torch.tensor([int(x.numel()) - 1 for x in nodes], dtype=torch.int32)
        self.uniform = torch.tensor([int(bool(v)) for v in uniform], dtype=torch.int32)
        if self.d == 2 and self.n_out == 1:
            # the kernel's two-drive path reads c[4 * m1 + m0] (see the C source)
            coef = coef.view(-1, 4, 4, 1).transpose(1, 2)
        self.coef = coef.contiguous()
        self.low = low.contiguous()
        self.high = high.contiguous()


def spline_eval(
    lib: ctypes.CDLL, grid: NativeGrid, u: torch.Tensor, *, clamp: bool, jacobian: bool
) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """Value, Jacobian and out-of-domain row count of the spline at drives ``u``.

    Args:
        lib: The compiled kernel (:func:`library`).
        grid: The spline in ``u``'s dtype.
        u: Drives (batch, n_in), CPU, contiguous, dtype ``grid.dtype``.
        clamp: Clip drives into ``[low, high]`` first (Jacobian zero across the clip).
        jacobian: Whether to compute the Jacobian.

    Returns:
        Value (batch, n_out), Jacobian (batch, n_in, n_out) or None, and the number of rows
        with a drive outside the domain.
    """
    batch = u.shape[0]
    value = torch.empty(batch, grid.n_out, dtype=u.dtype)
    jac = torch.empty(batch, grid.d, grid.n_out, dtype=u.dtype) if jacobian else None
    fn = lib.spline_f32 if u.dtype == torch.float32 else lib.spline_f64
    args = (
        grid.d,
        grid.n_out,
        grid.ncell.data_ptr(),
        grid.uniform.data_ptr(),
        grid.nodes.data_ptr(),
        grid.node_off.data_ptr(),
        grid.inv_h.data_ptr(),
        grid.low.data_ptr(),
        grid.high.data_ptr(),
        int(clamp),
        grid.coef.data_ptr(),
        u.data_ptr(),
        value.data_ptr(),
        None if jac is None else jac.data_ptr(),
    )
    # Rows are independent: large batches are split over torch's intra-op thread count, the
    # cores the GEMMs around the twin use (ctypes releases the GIL during each call).
    n = min(torch.get_num_threads(), batch // ROWS_PER_THREAD, _MAX_THREADS)
    if n <= 1:
        return value, jac, int(fn(0, batch, *args))
    edges = [batch * i // n for i in range(n + 1)]
    pool = thread_pool(n - 1)
    futures = [pool.submit(fn, edges[i], edges[i + 1], *args) for i in range(1, n)]
    outside = fn(edges[0], edges[1], *args) + sum(f.result() for f in futures)
    return value, jac, int(outside)


#: Below this many rows per thread, waking a thread costs more than it saves (a thread
#: hand-off is some ten microseconds; a row is a few nanoseconds).
ROWS_PER_THREAD = 8192
_MAX_THREADS = 8
