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

#if defined(__AVX512F__) && IS_F32_SUF
#include <immintrin.h>
/* Two uniform drives, one output: sixteen rows per step in AVX-512, the operations of the
   scalar loop's two-drive path (spline_SUF below) in its order (no FMA). Each
   row's cell is one 64-byte line of sixteen coefficients: the sixteen lines are loaded and the
   16 x 16 block transposed in registers (sixteen gathers took twice as long on an AMD EPYC).
   Rows come drive-major (rs 1) or as interleaved pairs (rs 2, ds 1); other layouts are left
   to the scalar loop. Returns the first row it did not do. */
static long long spline2u_vec_SUF(long long r0, long long r1, int n0, int n1, float x0, float x1,
                                  float ih0, float ih1, float lo0, float lo1, float hi0,
                                  float hi1, int clamp, const float* restrict coef,
                                  const float* restrict u, long long rs, long long ds,
                                  float* restrict value, float* restrict jac,
                                  long long* outside) {
  const int major = rs == 1; /* drive-major rows, else interleaved pairs (rs 2, ds 1) */
  if (!major && !(rs == 2 && ds == 1)) return r0;
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  const __m512i lo_half = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i hi_half = _mm512_add_epi32(lo_half, _mm512_set1_epi32(8));
  const __m512 vx0 = _mm512_set1_ps(x0), vx1 = _mm512_set1_ps(x1);
  const __m512 vih0 = _mm512_set1_ps(ih0), vih1 = _mm512_set1_ps(ih1);
  const __m512 vlo0 = _mm512_set1_ps(lo0), vlo1 = _mm512_set1_ps(lo1);
  const __m512 vhi0 = _mm512_set1_ps(hi0), vhi1 = _mm512_set1_ps(hi1);
  const __m512 top0 = _mm512_set1_ps((float)(n0 - 1)), top1 = _mm512_set1_ps((float)(n1 - 1));
  const __m512 zero = _mm512_setzero_ps(), two = _mm512_set1_ps(2.0f);
  const __m512 three = _mm512_set1_ps(3.0f), half = _mm512_set1_ps(0.5f);
  const __m512i vn1 = _mm512_set1_epi32(n1);
  long long b = r0;
  for (; b + 16 <= r1; b += 16) {
    __m512 u0, u1;
    if (major) {
      u0 = _mm512_loadu_ps(u + b);
      u1 = _mm512_loadu_ps(u + ds + b);
    } else {
      const __m512 a = _mm512_loadu_ps(u + 2 * b), bb = _mm512_loadu_ps(u + 2 * b + 16);
      u0 = _mm512_permutex2var_ps(a, even, bb);
      u1 = _mm512_permutex2var_ps(a, odd, bb);
    }
    const __mmask16 below0 = _mm512_cmp_ps_mask(u0, vlo0, _CMP_LT_OQ);
    const __mmask16 below1 = _mm512_cmp_ps_mask(u1, vlo1, _CMP_LT_OQ);
    const __mmask16 o0 = below0 | _mm512_cmp_ps_mask(u0, vhi0, _CMP_GT_OQ);
    const __mmask16 o1 = below1 | _mm512_cmp_ps_mask(u1, vhi1, _CMP_GT_OQ);
    *outside += __builtin_popcount((unsigned)(o0 | o1));
    const __mmask16 k0 = clamp ? o0 : 0, k1 = clamp ? o1 : 0;
    u0 = _mm512_mask_blend_ps(k0, u0, _mm512_mask_blend_ps(below0, vhi0, vlo0));
    u1 = _mm512_mask_blend_ps(k1, u1, _mm512_mask_blend_ps(below1, vhi1, vlo1));
    const __m512 p0 = _mm512_mul_ps(_mm512_sub_ps(u0, vx0), vih0);
    const __m512 p1 = _mm512_mul_ps(_mm512_sub_ps(u1, vx1), vih1);
    /* p >= 0 else 0 (NaN too), then at most top: the scalar loop's cell */
    __m512 q0 = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(p0, zero, _CMP_GE_OQ), p0);
    __m512 q1 = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(p1, zero, _CMP_GE_OQ), p1);
    q0 = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(q0, top0, _CMP_GE_OQ), q0, top0);
    q1 = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(q1, top1, _CMP_GE_OQ), q1, top1);
    const __m512i i0 = _mm512_cvttps_epi32(q0), i1 = _mm512_cvttps_epi32(q1);
    const __m512 t0 = _mm512_sub_ps(p0, _mm512_cvtepi32_ps(i0));
    const __m512 t1 = _mm512_sub_ps(p1, _mm512_cvtepi32_ps(i1));
    const __m512i base = _mm512_slli_epi32(_mm512_add_epi32(_mm512_mullo_epi32(i0, vn1), i1), 4);
    /* c[k] = coefficient k of each row's cell: load each row's 16 coefficients (one
       64-byte line) and transpose the 16 x 16 block (faster than 16 gathers) */
    int at[16];
    _mm512_storeu_si512((void*)at, base);
    __m512 c[16], x[16];
    for (int k = 0; k < 16; k++) c[k] = _mm512_loadu_ps(coef + at[k]);
    for (int k = 0; k < 16; k += 2) {
      x[k] = _mm512_unpacklo_ps(c[k], c[k + 1]);
      x[k + 1] = _mm512_unpackhi_ps(c[k], c[k + 1]);
    }
    for (int k = 0; k < 16; k += 4) {
      c[k] = _mm512_shuffle_ps(x[k], x[k + 2], 0x44);
      c[k + 1] = _mm512_shuffle_ps(x[k], x[k + 2], 0xEE);
      c[k + 2] = _mm512_shuffle_ps(x[k + 1], x[k + 3], 0x44);
      c[k + 3] = _mm512_shuffle_ps(x[k + 1], x[k + 3], 0xEE);
    }
    for (int h = 0; h < 16; h += 8)
      for (int k = 0; k < 4; k++) {
        x[h + k] = _mm512_shuffle_f32x4(c[h + k], c[h + k + 4], 0x88);
        x[h + k + 4] = _mm512_shuffle_f32x4(c[h + k], c[h + k + 4], 0xDD);
      }
    for (int k = 0; k < 8; k++) {
      c[k] = _mm512_shuffle_f32x4(x[k], x[k + 8], 0x88);
      c[k + 8] = _mm512_shuffle_f32x4(x[k], x[k + 8], 0xDD);
    }
    __m512 r[4];
    for (int m = 0; m < 4; m++) {
      __m512 q = _mm512_add_ps(c[8 + m], _mm512_mul_ps(c[12 + m], t1));
      q = _mm512_add_ps(c[4 + m], _mm512_mul_ps(q, t1));
      r[m] = _mm512_add_ps(c[m], _mm512_mul_ps(q, t1));
    }
    __m512 v = _mm512_add_ps(r[2], _mm512_mul_ps(r[3], t0));
    v = _mm512_add_ps(r[1], _mm512_mul_ps(v, t0));
    _mm512_storeu_ps(value + b, _mm512_add_ps(r[0], _mm512_mul_ps(v, t0)));
    if (jac) {
      __m512 d[4];
      for (int m = 0; m < 4; m++) {
        __m512 q = _mm512_mul_ps(three, c[12 + m]);
        q = _mm512_mul_ps(_mm512_add_ps(c[8 + m], _mm512_mul_ps(_mm512_mul_ps(half, q), t1)), two);
        d[m] = _mm512_add_ps(c[4 + m], _mm512_mul_ps(q, t1));
      }
      __m512 e = _mm512_mul_ps(three, r[3]);
      e = _mm512_mul_ps(_mm512_add_ps(r[2], _mm512_mul_ps(_mm512_mul_ps(half, e), t0)), two);
      __m512 j0 = _mm512_mul_ps(_mm512_add_ps(r[1], _mm512_mul_ps(e, t0)), vih0);
      __m512 w = _mm512_add_ps(d[2], _mm512_mul_ps(d[3], t0));
      w = _mm512_add_ps(d[1], _mm512_mul_ps(w, t0));
      __m512 j1 = _mm512_mul_ps(_mm512_add_ps(d[0], _mm512_mul_ps(w, t0)), vih1);
      j0 = _mm512_mask_blend_ps(k0, j0, zero);
      j1 = _mm512_mask_blend_ps(k1, j1, zero);
      if (major) {
        _mm512_storeu_ps(jac + b, j0);
        _mm512_storeu_ps(jac + ds + b, j1);
      } else {
        _mm512_storeu_ps(jac + 2 * b, _mm512_permutex2var_ps(j0, lo_half, j1));
        _mm512_storeu_ps(jac + 2 * b + 16, _mm512_permutex2var_ps(j0, hi_half, j1));
      }
    }
  }
  return b;
}
#else
static long long spline2u_vec_SUF(long long r0, long long r1, int n0, int n1, REAL x0, REAL x1,
                                  REAL ih0, REAL ih1, REAL lo0, REAL lo1, REAL hi0, REAL hi1,
                                  int clamp, const REAL* coef, const REAL* u, long long rs,
                                  long long ds, REAL* value, REAL* jac, long long* outside) {
  (void)r1, (void)n0, (void)n1, (void)x0, (void)x1, (void)ih0, (void)ih1, (void)lo0, (void)lo1;
  (void)hi0, (void)hi1, (void)clamp, (void)coef, (void)u, (void)rs, (void)ds, (void)value;
  (void)jac, (void)outside;
  return r0; /* no vector path for this type or CPU: the scalar loop does every row */
}
#endif


/* The backward of one output: out[b, k] = jac[b, k] * grad[b] for rows [r0, r1), where (b, k)
   sits at b * rs + k * ds in jac and out alike. */
void scale_rows_SUF(long long r0, long long r1, int d, long long rs, long long ds,
                    const REAL* restrict jac, const REAL* restrict grad, REAL* restrict out) {
  if (rs == 1) { /* drive-major: one contiguous loop per drive */
    for (int k = 0; k < d; k++)
      for (long long b = r0; b < r1; b++) out[k * ds + b] = jac[k * ds + b] * grad[b];
    return;
  }
  if (d == 2 && rs == 2 && ds == 1) { /* interleaved pairs, written so that it vectorises */
    for (long long b = r0; b < r1; b++) {
      const REAL g = grad[b];
      out[2 * b] = jac[2 * b] * g;
      out[2 * b + 1] = jac[2 * b + 1] * g;
    }
    return;
  }
  for (long long b = r0; b < r1; b++)
    for (int k = 0; k < d; k++) out[b * rs + k * ds] = jac[b * rs + k * ds] * grad[b];
}

/* Whether two uniform drives and one output run in vectors of rows (compiled for AVX-512). */
int spline_vector_SUF(void) {
#if defined(__AVX512F__) && IS_F32_SUF
  return 1;
#else
  return 0;
#endif
}

/* Evaluate rows [r0, r1). Drive k of row b is u[b * rs + k * ds] and its Jacobian for output o
   goes to jac[(b * rs + k * ds) * n_out + o] (rows of d drives: rs = d, ds = 1; drive-major
   columns of a one-output twin: rs = 1, ds = batch). Returns the number of rows with a drive
   outside [low, high]. */
long long spline_SUF(long long r0, long long r1, int d, int n_out, const int* ncell,
                     const int* uniform, const REAL* nodes, const int* node_off,
                     const REAL* inv_h, const REAL* low, const REAL* high, int clamp,
                     const REAL* coef, const REAL* u, long long rs, long long ds, REAL* value,
                     REAL* jac) {
  REAL buf[16 * 8]; /* 4**(d-1) * n_out with d <= 3, n_out <= 8 (checked by the caller) */
  REAL tmp[8];
  long long outside = 0;
  const int per_cell = (d == 1 ? 4 : d == 2 ? 16 : 64) * n_out;
  if (d == 2 && n_out == 1 && uniform[0] && uniform[1]) /* whole vectors of rows, if compiled */
    r0 = spline2u_vec_SUF(r0, r1, ncell[0], ncell[1], nodes[0], nodes[node_off[1]], inv_h[0],
                          inv_h[node_off[1] - 1], low[0], low[1], high[0], high[1], clamp, coef, u,
                          rs, ds, value, jac, &outside);
  for (long long b = r0; b < r1; b++) {
    REAL t[3], sc[3];
    int clipped[3];
    long long flat = 0;
    int out_row = 0;
    for (int k = 0; k < d; k++) {
      REAL uk = u[b * rs + k * ds];
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
      if (jac)
        jac[b * rs] = clipped[0] ? 0 : horner_SUF(c[0], c[1], c[2], c[3], t[0], 1) * sc[0];
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
        jac[b * rs] = clipped[0] ? 0 : horner_SUF(r[0], r[1], r[2], r[3], t[0], 1) * sc[0];
        jac[b * rs + ds] =
            clipped[1] ? 0 : horner_SUF(rd[0], rd[1], rd[2], rd[3], t[0], 0) * sc[1];
      }
      continue;
    }
    contract_SUF(c, d, n_out, t, -1, buf, value + b * n_out);
    if (jac) {
      for (int k = 0; k < d; k++) {
        REAL* jk = jac + (b * rs + k * ds) * n_out;
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
        parts.append(
            _TEMPLATE.replace("IS_F32_SUF", str(int(real == "float")))
            .replace("REAL", real)
            .replace("SUF", suf)
        )
    return "".join(parts)


def _compile() -> ctypes.CDLL:
    # for this CPU (its vector path needs AVX-512); ISO C99 means no FMA contraction, so the
    # arithmetic rounds like the torch path's
    lib = build_library("spline", _source())
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
            *[ctypes.c_void_p] * 2,
            ctypes.c_longlong,
            ctypes.c_longlong,
            *[ctypes.c_void_p] * 2,
        ]
        fn.restype = ctypes.c_longlong
        scale = getattr(lib, f"scale_rows_{suf}")
        scale.argtypes = [
            ctypes.c_longlong,
            ctypes.c_longlong,
            ctypes.c_int,
            ctypes.c_longlong,
            ctypes.c_longlong,
            *[ctypes.c_void_p] * 3,
        ]
        scale.restype = None
        getattr(lib, f"spline_vector_{suf}").restype = ctypes.c_int
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
        self.all_uniform = all(bool(v) for v in uniform)
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
        u: Drives (batch, n_in), CPU, dtype ``grid.dtype``. Rows of drives (contiguous) are
            read in place, and so are drive-major columns (strides ``(1, batch)``, as a
            ``TwoDrive`` connection makes them) for a one-output twin; other layouts are
            copied first. The Jacobian has ``u``'s layout.
        clamp: Clip drives into ``[low, high]`` first (Jacobian zero across the clip).
        jacobian: Whether to compute the Jacobian.

    Returns:
        Value (batch, n_out), Jacobian (batch, n_in, n_out) or None, and the number of rows
        with a drive outside the domain.
    """
    batch = u.shape[0]
    rs, ds = u.stride()
    rows = (rs == grid.d and ds == 1) or (grid.d == 1 and rs == 1)
    columns = grid.n_out == 1 and rs == 1 and ds == batch  # drive-major, as TwoDrive makes them
    if not (rows or columns):
        u = u.contiguous()
        rs, ds = grid.d, 1
    value = torch.empty(batch, grid.n_out, dtype=u.dtype)
    jac = None
    if jacobian:
        n_out = grid.n_out
        jac = torch.empty_strided(
            (batch, grid.d, n_out), (rs * n_out, ds * n_out, 1), dtype=u.dtype
        )
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
        rs,
        ds,
        value.data_ptr(),
        None if jac is None else jac.data_ptr(),
    )
    # Rows are independent: large batches are split over torch's intra-op thread count, the
    # cores the GEMMs around the twin use (ctypes releases the GIL during each call).
    per_thread = ROWS_PER_THREAD_VECTOR if _vector_path(lib, grid) else ROWS_PER_THREAD
    n = min(torch.get_num_threads(), batch // per_thread, _MAX_THREADS)
    if n <= 1:
        return value, jac, int(fn(0, batch, *args))
    edges = [batch * i // n for i in range(n + 1)]
    pool = thread_pool(n - 1)
    futures = [pool.submit(fn, edges[i], edges[i + 1], *args) for i in range(1, n)]
    outside = fn(edges[0], edges[1], *args) + sum(f.result() for f in futures)
    return value, jac, int(outside)


def scale_rows(lib: ctypes.CDLL, jac: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """The backward of a one-output spline: ``jac[b, k] * grad[b]``, shape (batch, n_in).

    Equal to ``jac.view(batch, n_in) * grad`` (one multiply per element), without torch's
    broadcast along the last axis, which took ten times as long as the multiply itself.

    Args:
        lib: The compiled kernel (:func:`library`).
        jac: The saved Jacobian (batch, n_in, 1), as :func:`spline_eval` made it.
        grad: The gradient of the output (batch, 1), in ``jac``'s dtype.
    """
    batch, d = jac.shape[0], jac.shape[1]
    rs, ds = jac.stride(0), jac.stride(1)
    grad = grad.contiguous()
    out = torch.empty_strided((batch, d), (rs, ds), dtype=jac.dtype)  # the drives' layout
    fn = lib.scale_rows_f32 if jac.dtype == torch.float32 else lib.scale_rows_f64
    fn(0, batch, d, rs, ds, jac.data_ptr(), grad.data_ptr(), out.data_ptr())
    return out


def _vector_path(lib: ctypes.CDLL, grid: NativeGrid) -> bool:
    """Whether ``grid`` takes the kernel's vector path (two uniform drives, one output)."""
    return (
        grid.d == 2
        and grid.n_out == 1
        and grid.all_uniform
        and bool(
            (lib.spline_vector_f32 if grid.dtype == torch.float32 else lib.spline_vector_f64)()
        )
    )


#: Below this many rows per thread, waking a thread costs more than it saves (a hand-off
#: through the thread pool is some ten to a hundred microseconds; a row a few nanoseconds).
ROWS_PER_THREAD = 8192
#: The same for the vector path (about 4 ns a row against 7-25 ns): at 32,768 rows, two
#: threads took 150 us against 115 us on one.
ROWS_PER_THREAD_VECTOR = 65536
_MAX_THREADS = 8
