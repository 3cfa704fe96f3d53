"""A fused time step of the whole Wuxing network: a small native kernel for CPUs.

The torch path of :class:`~quasineuron.wuxing.network.WuxingNetwork` evaluates one time step
as ≈ 30 separate tensor operations, each a pass over the whole state in memory. This module
runs the same arithmetic as one native loop per sample block instead:

- **Layout.** Samples are cut into blocks of ``W`` lanes (16 in float32, 8 in float64: one
  64-byte vector register). A block's state is one contiguous array ``(n_slots, W)``, so every
  operation of the neuron equation is one vector instruction over the block's samples, and a
  block's whole state (≈ 0.65 MB for MODEL1) stays in the core's cache for all time steps.
- **Links** are gathers on a precomputed index: the links into each slot, sorted by slot
  (compressed rows), each row summed straight into that slot's drive. No dense mask and no
  scatter in the forward direction.
- **Fusion.** Per time step the right-hand side (links + neuron equation of every slot), the
  solver's stages, the time integral ``∫D dt``, the divergence guard and the state clip run in
  one call; the whole window runs in one call per block. Blocks run in parallel threads (the
  call releases the GIL).
- **Gradients** (backprop through time) come from the hand-written reverse of the same
  discrete steps of every solver (Euler, Heun, RK4: the transposed Jacobian of the neuron
  equation and of the links, stage by stage), with respect to the coefficients, the drive, the
  initial state and the neurons' parameters (each slot's rates and rest state). The state is
  kept only every ``segment`` steps and the steps in between are recomputed: memory is
  ``n_steps/segment + segment`` states per block, ``2√n_steps`` with the default segment
  ``⌈√n_steps⌉`` (:attr:`~quasineuron.wuxing.network.SimConfig.segment_steps`).

The kernel is C, compiled once per machine with the system C compiler (about a second) and
cached on disk (``$QUASINEURON_CACHE`` or ``~/.cache/quasineuron``). Without a compiler,
:func:`available` is False and the network uses its torch path (with a one-line warning).
Results equal the torch path to floating-point round-off (tested in float64).
"""

from __future__ import annotations

import ctypes
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from quasineuron._native import build_library, thread_pool

if TYPE_CHECKING:
    from quasineuron.wuxing.network import SimConfig

__all__ = ["available", "FusedPlan", "fused_run", "bptt_buffer_bytes"]

# solver codes of the kernel
_EULER, _HEUN, _RK4 = 0, 1, 2
# lanes per block: one 64-byte vector register of each dtype
LANES = {torch.float32: 16, torch.float64: 8}

_TEMPLATE = r"""
typedef struct {
  int S, L, solver, nsteps, clip, per_lane, seg, nd;
  double h, lo, hi, bound;
  const int *rowptr, *col, *lid, *p1, *p2, *dslot;
  const REAL *A, *B, *G, *rest;
} net_SUF;

/* u = f(E) at slot s: the slot's drive, the links gathered into it, the neuron equation */
static inline void f_slot_SUF(const net_SUF* n, int s, const REAL* restrict E,
                              const REAL* restrict drive, const REAL* restrict c,
                              REAL* restrict u) {
  const int d = n->dslot[s];
  if (d >= 0)
    SIMD for (int l = 0; l < W; l++) u[l] = drive[(size_t)d * W + l];
  else
    SIMD for (int l = 0; l < W; l++) u[l] = 0;
  for (int j = n->rowptr[s]; j < n->rowptr[s + 1]; j++) {
    const int src = n->col[j];
    const REAL r = n->rest[src];
    const REAL* e = E + (size_t)src * W;
    if (n->per_lane) {
      const REAL* cc = c + (size_t)n->lid[j] * W;
      SIMD for (int l = 0; l < W; l++) u[l] += (e[l] - r) * cc[l];
    } else {
      const REAL cc = c[n->lid[j]];
      SIMD for (int l = 0; l < W; l++) u[l] += (e[l] - r) * cc;
    }
  }
  const REAL a = n->A[s], b = n->B[s], g = n->G[s];
  const REAL* e0 = E + (size_t)s * W;
  const REAL* e1 = E + (size_t)n->p1[s] * W;
  const REAL* e2 = E + (size_t)n->p2[s] * W;
  SIMD for (int l = 0; l < W; l++) u[l] = a * e1[l] - b * e0[l] - g * e0[l] * e2[l] + u[l];
}

/* out += J(E)^T v (neuron equation and links); gc += dc of <v, f(E)> per lane; gp (NULL, or
   4 (S, W) arrays) += d of <v, f(E)> with respect to each slot's A, B, G and rest state */
static void rhs_vjp_SUF(const net_SUF* n, const REAL* restrict E, const REAL* restrict c,
                        const REAL* restrict v, REAL* restrict out, REAL* restrict gc,
                        REAL* restrict gp) {
  const int S = n->S;
  const size_t m = (size_t)S * W;
  for (int s = 0; s < S; s++) {
    const REAL a = n->A[s], b = n->B[s], g = n->G[s];
    const REAL* vs = v + (size_t)s * W;
    const REAL* e0 = E + (size_t)s * W;
    const REAL* e1 = E + (size_t)n->p1[s] * W;
    const REAL* e2 = E + (size_t)n->p2[s] * W;
    REAL* o0 = out + (size_t)s * W;
    REAL* o1 = out + (size_t)n->p1[s] * W;
    REAL* o2 = out + (size_t)n->p2[s] * W;
    SIMD for (int l = 0; l < W; l++) {
      o1[l] += a * vs[l];
      o0[l] -= (b + g * e2[l]) * vs[l];
      o2[l] -= g * e0[l] * vs[l];
    }
    if (gp) {
      REAL *ga = gp + (size_t)s * W, *gb = ga + m, *gg = ga + 2 * m;
      SIMD for (int l = 0; l < W; l++) {
        ga[l] += vs[l] * e1[l];
        gb[l] -= vs[l] * e0[l];
        gg[l] -= vs[l] * e0[l] * e2[l];
      }
    }
    for (int j = n->rowptr[s]; j < n->rowptr[s + 1]; j++) {
      const int src = n->col[j];
      const REAL r = n->rest[src];
      const REAL* e = E + (size_t)src * W;
      REAL* os = out + (size_t)src * W;
      REAL* gk = gc + (size_t)n->lid[j] * W;
      if (n->per_lane) {
        const REAL* cc = c + (size_t)n->lid[j] * W;
        SIMD for (int l = 0; l < W; l++) { os[l] += cc[l] * vs[l]; gk[l] += vs[l] * (e[l] - r); }
        if (gp) {
          REAL* gr = gp + 3 * m + (size_t)src * W;
          SIMD for (int l = 0; l < W; l++) gr[l] -= cc[l] * vs[l];
        }
      } else {
        const REAL cc = c[n->lid[j]];
        SIMD for (int l = 0; l < W; l++) { os[l] += cc * vs[l]; gk[l] += vs[l] * (e[l] - r); }
        if (gp) {
          REAL* gr = gp + 3 * m + (size_t)src * W;
          SIMD for (int l = 0; l < W; l++) gr[l] -= cc * vs[l];
        }
      }
    }
  }
}

/* the end of a step at one slot: divergence guard (before the clip) and clip, per lane. The
   flags are collected in REAL lanes (a char store may alias anything and stops vectorisation):
   bad counts |x| >= bound or NaN, mn/mx track the extremes (NaN passes, as in torch.amin) */
static inline void guard_slot_SUF(const net_SUF* n, REAL* restrict x, REAL* restrict bad,
                                  REAL* restrict mn, REAL* restrict mx) {
  const REAL bound = (REAL)n->bound, lo = (REAL)n->lo, hi = (REAL)n->hi;
  SIMD for (int l = 0; l < W; l++) {
    const REAL v = x[l];
    bad[l] += (v < bound && v > -bound) ? (REAL)0 : (REAL)1;
    mn[l] = v < mn[l] ? v : mn[l];
    mx[l] = v > mx[l] ? v : mx[l];
  }
  if (n->clip)
    SIMD for (int l = 0; l < W; l++) x[l] = x[l] < lo ? lo : (x[l] > hi ? hi : x[l]);
}

static inline void guard_end_SUF(const net_SUF* n, const REAL* bad, const REAL* mn,
                                 const REAL* mx, unsigned char* div, unsigned char* hit) {
  SIMD for (int l = 0; l < W; l++) {
    div[l] |= bad[l] > 0;
    if (n->clip) hit[l] |= (mn[l] < (REAL)n->lo) | (mx[l] > (REAL)n->hi);
  }
}

/* one solver step of one block, each stage one pass over the slots; Q (may be NULL) gets the
   quadrature of D = E - rest. Work space w: 4 (S, W) arrays. The arithmetic (and its order)
   is that of the solvers in quasineuron.devices.ode. */
static void step_SUF(const net_SUF* n, REAL* restrict E, REAL* restrict Q,
                     const REAL* restrict drive, const REAL* restrict c, REAL* restrict w,
                     unsigned char* div, unsigned char* hit) {
  const int S = n->S;
  const size_t m = (size_t)S * W;
  const REAL h = (REAL)n->h, hh = (REAL)(0.5 * n->h), h6 = (REAL)(n->h / 6.0);
  REAL *w1 = w, *w2 = w + m, *w3 = w + 2 * m, *w4 = w + 3 * m;
  REAL u[W], bad[W], mn[W], mx[W];
  SIMD for (int l = 0; l < W; l++) { bad[l] = 0; mn[l] = (REAL)n->lo; mx[l] = (REAL)n->hi; }
  if (n->solver == 0) {
    /* w1 = f(E); then E += h w1 in place (no later gather reads E) */
    for (int s = 0; s < S; s++) f_slot_SUF(n, s, E, drive, c, w1 + (size_t)s * W);
    for (int s = 0; s < S; s++) {
      const REAL r = n->rest[s];
      REAL* x = E + (size_t)s * W;
      const REAL* k = w1 + (size_t)s * W;
      if (Q) SIMD for (int l = 0; l < W; l++) Q[(size_t)s * W + l] += h * (x[l] - r);
      SIMD for (int l = 0; l < W; l++) x[l] = x[l] + h * k[l];
      guard_slot_SUF(n, x, bad, mn, mx);
    }
  } else if (n->solver == 1) {
    /* pass 1: w1 = E + h f(E); pass 2: E = (E + w1)/2 + h/2 f(w1) in place, which is
       E + h/2 (f(E) + f(w1)) without keeping f(E): three state-sized arrays instead of four,
       a quarter less memory traffic per step (the step's cost on two cores is memory's) */
    for (int s = 0; s < S; s++) {
      const REAL* x = E + (size_t)s * W;
      REAL* t = w1 + (size_t)s * W;
      f_slot_SUF(n, s, E, drive, c, u);
      SIMD for (int l = 0; l < W; l++) t[l] = x[l] + h * u[l];
    }
    for (int s = 0; s < S; s++) {
      const REAL r = n->rest[s];
      REAL* x = E + (size_t)s * W;
      const REAL* t = w1 + (size_t)s * W;
      f_slot_SUF(n, s, w1, drive, c, u);
      if (Q) {
        REAL* q = Q + (size_t)s * W;
        SIMD for (int l = 0; l < W; l++) q[l] = q[l] + hh * ((x[l] - r) + (t[l] - r));
      }
      SIMD for (int l = 0; l < W; l++) x[l] = (REAL)0.5 * (x[l] + t[l]) + hh * u[l];
      guard_slot_SUF(n, x, bad, mn, mx);
    }
  } else {
    /* w1: sum of slopes, w2: sum of stage signals, w3/w4: stage states (alternating, since
       a stage gathers from the previous one while writing the next) */
    for (int s = 0; s < S; s++) {
      const REAL r = n->rest[s];
      const REAL* x = E + (size_t)s * W;
      REAL *a = w1 + (size_t)s * W, *q = w2 + (size_t)s * W, *t = w3 + (size_t)s * W;
      f_slot_SUF(n, s, E, drive, c, u);
      SIMD for (int l = 0; l < W; l++) { a[l] = u[l]; q[l] = x[l] - r; t[l] = x[l] + hh * u[l]; }
    }
    for (int s = 0; s < S; s++) {
      const REAL r = n->rest[s];
      const REAL* x = E + (size_t)s * W;
      REAL *a = w1 + (size_t)s * W, *q = w2 + (size_t)s * W;
      const REAL* p = w3 + (size_t)s * W;
      REAL* t = w4 + (size_t)s * W;
      f_slot_SUF(n, s, w3, drive, c, u);
      SIMD for (int l = 0; l < W; l++) {
        a[l] = a[l] + (REAL)2.0 * u[l]; q[l] = q[l] + (REAL)2.0 * (p[l] - r);
        t[l] = x[l] + hh * u[l];
      }
    }
    for (int s = 0; s < S; s++) {
      const REAL r = n->rest[s];
      const REAL* x = E + (size_t)s * W;
      REAL *a = w1 + (size_t)s * W, *q = w2 + (size_t)s * W;
      const REAL* p = w4 + (size_t)s * W;
      REAL* t = w3 + (size_t)s * W;
      f_slot_SUF(n, s, w4, drive, c, u);
      SIMD for (int l = 0; l < W; l++) {
        a[l] = a[l] + (REAL)2.0 * u[l]; q[l] = q[l] + (REAL)2.0 * (p[l] - r);
        t[l] = x[l] + h * u[l];
      }
    }
    for (int s = 0; s < S; s++) {
      const REAL r = n->rest[s];
      REAL* x = E + (size_t)s * W;
      const REAL *a = w1 + (size_t)s * W, *q = w2 + (size_t)s * W, *p = w3 + (size_t)s * W;
      f_slot_SUF(n, s, w3, drive, c, u);
      if (Q) {
        REAL* qq = Q + (size_t)s * W;
        SIMD for (int l = 0; l < W; l++) qq[l] = qq[l] + h6 * (q[l] + (p[l] - r));
      }
      SIMD for (int l = 0; l < W; l++) x[l] = x[l] + h6 * (a[l] + u[l]);
      guard_slot_SUF(n, x, bad, mn, mx);
    }
  }
  guard_end_SUF(n, bad, mn, mx, div, hit);
}

/* the whole window for blocks [0, nblk): E, Q (nblk, S, W); drive (nblk, nd, W) at the driven
   slots; c (L) or (nblk, L, W); ckpt (nblk, nseg, S, W) or NULL: E before steps 0, seg, ... */
int run_SUF(const net_SUF* n, int nblk, REAL* E, REAL* Q, const REAL* drive, const REAL* c,
            unsigned char* div, unsigned char* hit, REAL* ckpt) {
  const size_t m = (size_t)n->S * W, md = (size_t)n->nd * W;
  const int nseg = (n->nsteps + n->seg - 1) / n->seg;
  REAL* w = (REAL*)malloc(4 * m * sizeof(REAL));
  if (!w) return 1;
  for (int b = 0; b < nblk; b++) {
    REAL* Eb = E + b * m;
    const REAL* cb = n->per_lane ? c + (size_t)b * n->L * W : c;
    for (int k = 0; k < n->nsteps; k++) {
      if (ckpt && k % n->seg == 0)
        memcpy(ckpt + ((size_t)b * nseg + k / n->seg) * m, Eb, m * sizeof(REAL));
      step_SUF(n, Eb, Q + b * m, drive + b * md, cb, w, div + (size_t)b * W,
               hit + (size_t)b * W);
    }
  }
  free(w);
  return 0;
}

/* f(E) of every slot */
static void rhs_SUF(const net_SUF* n, const REAL* restrict E, const REAL* restrict drive,
                    const REAL* restrict c, REAL* restrict out) {
  for (int s = 0; s < n->S; s++) f_slot_SUF(n, s, E, drive, c, out + (size_t)s * W);
}

/* reverse of one classical RK4 step from E (the step before the clip mask, which the caller
   has applied to gE): g = dL/dE, vd = dL/d(drive) of the step (per slot), gc accumulates.
   Forward: X1 = E, k_i = f(X_i), X2 = E + hh k1, X3 = E + hh k2, X4 = E + h k3,
   E' = E + h6 (k1 + 2 k2 + 2 k3 + k4), Q' = Q + h6 (D(X1) + 2 D(X2) + 2 D(X3) + D(X4)).
   Each stage's cotangent v_i = dL/dk_i is the direct term (h6 or 2 h6 of dL/dE') plus what
   the next stage's input passes back; dL/dX_i = J(X_i)^T v_i + (its quadrature weight) gQ.
   Work space w: 6 (S, W) arrays. */
static void back_rk4_SUF(const net_SUF* n, const REAL* restrict E, const REAL* restrict drive,
                         const REAL* restrict c, REAL* restrict gE, const REAL* restrict gQ,
                         REAL* restrict g, REAL* restrict vd, REAL* restrict gc,
                         REAL* restrict gp, REAL* restrict w) {
  const size_t m = (size_t)n->S * W;
  const REAL h = (REAL)n->h, hh = (REAL)(0.5 * n->h), h6 = (REAL)(n->h / 6.0);
  const REAL h3 = (REAL)2.0 * h6, lo = (REAL)n->lo, hi = (REAL)n->hi;
  REAL *X2 = w, *X3 = w + m, *X4 = w + 2 * m, *k = w + 3 * m, *v = w + 4 * m, *dX = w + 5 * m;
  /* the stage inputs (and the sum of slopes in v), recomputed in the forward step's order */
  rhs_SUF(n, E, drive, c, k);
  for (size_t i = 0; i < m; i++) { v[i] = k[i]; X2[i] = E[i] + hh * k[i]; }
  rhs_SUF(n, X2, drive, c, k);
  for (size_t i = 0; i < m; i++) { v[i] = v[i] + (REAL)2.0 * k[i]; X3[i] = E[i] + hh * k[i]; }
  rhs_SUF(n, X3, drive, c, k);
  for (size_t i = 0; i < m; i++) { v[i] = v[i] + (REAL)2.0 * k[i]; X4[i] = E[i] + h * k[i]; }
  /* clip: the gradient passes where lo <= E' <= hi (as torch.clamp's) */
  if (n->clip) {
    rhs_SUF(n, X4, drive, c, k);
    for (size_t i = 0; i < m; i++) {
      const REAL x = E[i] + h6 * (v[i] + k[i]);
      if (!(x >= lo && x <= hi)) gE[i] = 0;
    }
  }
  /* stage 4: v4 = h6 gE'; dL/dX4 = J(X4)^T v4 + h6 gQ */
  for (size_t i = 0; i < m; i++) { v[i] = h6 * gE[i]; vd[i] = v[i]; dX[i] = h6 * gQ[i]; }
  rhs_vjp_SUF(n, X4, c, v, dX, gc, gp);
  for (size_t i = 0; i < m; i++) {
    g[i] = gE[i] + h6 * gQ[i] + dX[i];
    v[i] = h3 * gE[i] + h * dX[i];               /* v3 (X4 = E + h k3) */
    vd[i] += v[i];
    dX[i] = h3 * gQ[i];
  }
  rhs_vjp_SUF(n, X3, c, v, dX, gc, gp);
  for (size_t i = 0; i < m; i++) {
    g[i] += dX[i];
    v[i] = h3 * gE[i] + hh * dX[i];              /* v2 (X3 = E + hh k2) */
    vd[i] += v[i];
    dX[i] = h3 * gQ[i];
  }
  rhs_vjp_SUF(n, X2, c, v, dX, gc, gp);
  for (size_t i = 0; i < m; i++) {
    g[i] += dX[i];
    v[i] = h6 * gE[i] + hh * dX[i];              /* v1 (X2 = E + hh k1) */
    vd[i] += v[i];
  }
  rhs_vjp_SUF(n, E, c, v, g, gc, gp);
}

/* one Euler or Heun step of the reverse's recomputation, E1 = the step from E0 (clipped; the
   arithmetic of step_SUF), keeping what the step's reverse needs: Heun's stage state Et and,
   with the clip, ok = 1 where the gradient passes it (lo <= E1 <= hi before the clip), else 0.
   The reverse then needs no right-hand side of its own, only the two transposed ones.
   Work space w: one (S, W) array (Euler's f(E0); Heun does not use it). */
static void step_keep_SUF(const net_SUF* n, const REAL* restrict E0, REAL* restrict E1,
                          const REAL* restrict drive, const REAL* restrict c, REAL* restrict w,
                          REAL* restrict Et, REAL* restrict ok) {
  const int S = n->S;
  const REAL h = (REAL)n->h, hh = (REAL)(0.5 * n->h), lo = (REAL)n->lo, hi = (REAL)n->hi;
  REAL u[W];
  for (int s = 0; s < S; s++) {
    const size_t o = (size_t)s * W;
    const REAL* x = E0 + o;
    if (n->solver == 1) { /* Heun keeps only its stage state, as step_SUF */
      REAL* t = Et + o;
      f_slot_SUF(n, s, E0, drive, c, u);
      SIMD for (int l = 0; l < W; l++) t[l] = x[l] + h * u[l];
    } else { /* Euler's f(E0), read by the second pass */
      f_slot_SUF(n, s, E0, drive, c, w + o);
    }
  }
  for (int s = 0; s < S; s++) {
    const size_t o = (size_t)s * W;
    const REAL *x = E0 + o, *k = w + o;
    REAL* y = E1 + o;
    if (n->solver == 1) {
      const REAL* t = Et + o;
      f_slot_SUF(n, s, Et, drive, c, u);
      SIMD for (int l = 0; l < W; l++) y[l] = (REAL)0.5 * (x[l] + t[l]) + hh * u[l];
    } else {
      SIMD for (int l = 0; l < W; l++) y[l] = x[l] + h * k[l];
    }
    if (n->clip) {
      REAL* q = ok + o;
      SIMD for (int l = 0; l < W; l++) {
        const REAL v = y[l];
        q[l] = (v >= lo && v <= hi) ? (REAL)1 : (REAL)0;
        y[l] = v < lo ? lo : (v > hi ? hi : v);
      }
    }
  }
}

/* the end of one slot's reverse step: its drive's gradient (v = dL/d drive) and the rest
   state's weight -h in the step's quadrature of D = E - rest */
static inline void back_tail_SUF(const net_SUF* n, int s, const REAL* restrict vs,
                                 const REAL* restrict gq, REAL* restrict gdb,
                                 REAL* restrict gpb) {
  const int d = n->dslot[s];
  if (d >= 0) SIMD for (int l = 0; l < W; l++) gdb[(size_t)d * W + l] += vs[l];
  if (gpb) {
    const REAL h = (REAL)n->h;
    REAL* gr = gpb + 3 * (size_t)n->S * W + (size_t)s * W;
    SIMD for (int l = 0; l < W; l++) gr[l] -= h * gq[l];
  }
}

/* reverse of run_SUF: gE (nblk, S, W) in: dL/dE(T), out: dL/dE(0);
   gQ: dL/dQ(T); gc (nblk, L, W) and gdrive (nblk, nd, W) accumulate per lane; gp (NULL or
   (nblk, 4, S, W)) accumulates the gradients of A, B, G and the rest state per lane */
int back_SUF(const net_SUF* n, int nblk, const REAL* drive, const REAL* c, const REAL* ckpt,
             REAL* gE, const REAL* gQ, REAL* gc, REAL* gdrive, REAL* gp) {
  const size_t m = (size_t)n->S * W, md = (size_t)n->nd * W;
  const int seg = n->seg, nseg = (n->nsteps + seg - 1) / seg;
  const REAL h = (REAL)n->h, hh = (REAL)(0.5 * n->h);
  /* per recomputed step: the state, and for Euler/Heun Heun's stage state and the clip mask */
  const int keep = n->solver == 2 ? 1 : 1 + (n->solver == 1) + (n->clip != 0);
  REAL* states = (REAL*)malloc((size_t)keep * seg * m * sizeof(REAL));
  /* 8 arrays: RK4's reverse takes 6 for itself besides v and g */
  REAL* w = (REAL*)malloc(8 * m * sizeof(REAL));
  unsigned char dd[W] = {0}, hk[W] = {0};
  if (!states || !w) { free(states); free(w); return 1; }
  /* w, w + m: the recomputation's work space and its last step's state */
  REAL *k2 = w + 2 * m, *v = w + 3 * m, *a = w + 4 * m, *g = w + 5 * m;
  if (n->solver == 2) { v = w + 6 * m; g = w + 7 * m; }
  for (int b = 0; b < nblk; b++) {
    const REAL* cb = n->per_lane ? c + (size_t)b * n->L * W : c;
    const REAL* db = drive + b * md;
    REAL* gEb = gE + b * m;
    const REAL* gQb = gQ + b * m;
    REAL* gcb = gc + (size_t)b * n->L * W;
    REAL* gdb = gdrive + b * md;
    REAL* gpb = gp ? gp + (size_t)b * 4 * m : 0;
    for (int sg = nseg - 1; sg >= 0; sg--) {
      const int k0 = sg * seg;
      const int len = (k0 + seg <= n->nsteps) ? seg : n->nsteps - k0;
      memcpy(states, ckpt + ((size_t)b * nseg + sg) * m, m * sizeof(REAL));
      REAL *Ets = states + (size_t)seg * m, *oks = Ets + (n->solver == 1 ? (size_t)seg * m : 0);
      if (n->solver == 2)
        for (int k = 1; k < len; k++) {
          memcpy(states + k * m, states + (k - 1) * m, m * sizeof(REAL));
          step_SUF(n, states + k * m, 0, db, cb, w, dd, hk);
        }
      else /* every step of the segment, the last one's E1 (the next segment's start) in w */
        for (int k = 0; k < len; k++)
          step_keep_SUF(n, states + k * m, k + 1 < len ? states + (k + 1) * m : w + m, db, cb,
                        w, Ets + k * m, oks + k * m);
      for (int k = len - 1; k >= 0; k--) {
        const REAL* E = states + k * m;
        if (n->solver == 2) {
          /* w[0, 6m) is RK4's work space; v (dL/d drive) and g lie past it */
          back_rk4_SUF(n, E, db, cb, gEb, gQb, g, v, gcb, gpb, w);
          for (int s = 0; s < n->S; s++) {
            const int d = n->dslot[s];
            if (d >= 0)
              SIMD for (int l = 0; l < W; l++) gdb[(size_t)d * W + l] += v[(size_t)s * W + l];
          }
          /* the step's quadrature of D = E - rest weighs the rest state by -h in all */
          if (gpb)
            SIMD for (size_t i = 0; i < m; i++) gpb[3 * m + i] -= h * gQb[i];
          memcpy(gEb, g, m * sizeof(REAL));
        } else if (n->solver == 0) {
          /* E' = E + h f(E), Q' = Q + h D(E). One pass per slot: the clip mask (the gradient
             passes where lo <= E' <= hi, as torch.clamp's), v = dL/df = dL/d drive, and
             dL/dE (its direct terms, written over gE in place; the links add the rest) */
          for (int s = 0; s < n->S; s++) {
            const size_t o = (size_t)s * W;
            REAL *ge = gEb + o, *vs = v + o;
            const REAL* gq = gQb + o;
            if (n->clip) {
              const REAL* q = oks + (size_t)k * m + o;
              SIMD for (int l = 0; l < W; l++) ge[l] = q[l] != 0 ? ge[l] : (REAL)0;
            }
            SIMD for (int l = 0; l < W; l++) { vs[l] = h * ge[l]; ge[l] = ge[l] + h * gq[l]; }
            back_tail_SUF(n, s, vs, gq, gdb, gpb);
          }
          rhs_vjp_SUF(n, E, cb, v, gEb, gcb, gpb);
        } else {
          /* E' = E + hh (f(E) + f(Et)), Et = E + h f(E), Q' = Q + hh (D(E) + D(Et)).
             The recomputation kept Et and the clip mask. Pass 1: v = hh gE', a = hh gQ' */
          const REAL* Et = Ets + (size_t)k * m;
          for (int s = 0; s < n->S; s++) {
            const size_t o = (size_t)s * W;
            const REAL* gq = gQb + o;
            REAL *ge = gEb + o, *vs = v + o, *as = a + o;
            if (n->clip) {
              const REAL* q = oks + (size_t)k * m + o;
              SIMD for (int l = 0; l < W; l++) ge[l] = q[l] != 0 ? ge[l] : (REAL)0;
            }
            SIMD for (int l = 0; l < W; l++) { vs[l] = hh * ge[l]; as[l] = hh * gq[l]; }
          }
          rhs_vjp_SUF(n, Et, cb, v, a, gcb, gpb);  /* a = dL/dEt */
          /* pass 2: k2 = dL/df(E); dL/dE's direct terms over gE in place; v = dL/d drive */
          for (int s = 0; s < n->S; s++) {
            const size_t o = (size_t)s * W;
            const REAL *as = a + o, *gq = gQb + o;
            REAL *ge = gEb + o, *vs = v + o, *kk = k2 + o;
            SIMD for (int l = 0; l < W; l++) {
              kk[l] = vs[l] + h * as[l];
              ge[l] = ge[l] + hh * gq[l] + as[l];
              vs[l] = vs[l] + kk[l];
            }
            back_tail_SUF(n, s, vs, gq, gdb, gpb);
          }
          rhs_vjp_SUF(n, E, cb, k2, gEb, gcb, gpb);
        }
      }
    }
  }
  free(states);
  free(w);
  return 0;
}
"""


def _source() -> str:
    # SIMD: the loops over a block's lanes have no dependence between lanes; said explicitly
    # (OpenMP's simd pragma, no OpenMP runtime), gcc vectorises them whole. Left to itself it
    # unrolls the 16-lane loops, vectorises few of them and runs ≈ 3× slower (measured).
    head = '#define SIMD _Pragma("omp simd")\n'
    head += "#include <math.h>\n#include <stdlib.h>\n#include <string.h>\n"
    parts = [head]
    for real, suf, w in (("float", "f32", LANES[torch.float32]), ("double", "f64", 8)):
        body = _TEMPLATE.replace("REAL", real).replace("SUF", suf)
        parts.append(f"#define W {w}\n{body}\n#undef W\n")
    return "".join(parts)


class _Net(ctypes.Structure):
    _fields_ = [
        *((name, ctypes.c_int) for name in ("S", "L", "solver", "nsteps", "clip", "per_lane")),
        ("seg", ctypes.c_int),
        ("nd", ctypes.c_int),
        *((name, ctypes.c_double) for name in ("h", "lo", "hi", "bound")),
        *((name, ctypes.c_void_p) for name in ("rowptr", "col", "lid", "p1", "p2", "dslot")),
        *((name, ctypes.c_void_p) for name in ("A", "B", "G", "rest")),
    ]


_LOCK = threading.Lock()
_LIB: ctypes.CDLL | None = None
_TRIED = False


def _compile() -> ctypes.CDLL:
    # -fopenmp-simd honours the SIMD pragmas only (no OpenMP runtime); -std=c99 (a default) keeps FP
    # contraction off: no FMA, so float64 results stay within round-off of the torch path's (Euler
    # and RK4 bit-identical; Heun's second stage is arranged to need one array fewer)
    lib = build_library("wuxing", _source(), extra_flags=("-fopenmp-simd",))
    for suf in ("f32", "f64"):
        run, back = getattr(lib, f"run_{suf}"), getattr(lib, f"back_{suf}")
        run.argtypes = [ctypes.POINTER(_Net), ctypes.c_int, *[ctypes.c_void_p] * 7]
        back.argtypes = [ctypes.POINTER(_Net), ctypes.c_int, *[ctypes.c_void_p] * 8]
        run.restype = back.restype = ctypes.c_int
    return lib


def _library() -> ctypes.CDLL | None:
    global _LIB, _TRIED
    with _LOCK:
        if not _TRIED:
            _TRIED = True
            try:
                _LIB = _compile()
            except (OSError, RuntimeError) as e:
                warnings.warn(
                    f"the fused Wuxing kernel is unavailable ({e}); using the torch path "
                    "(slower; install a C compiler to get the fused one)",
                    stacklevel=3,
                )
        return _LIB


def available() -> bool:
    """True if the fused kernel is compiled (or could be now) for this machine."""
    return _library() is not None


@dataclass(frozen=True, eq=False)
class FusedPlan:
    """Precomputed index of one direction of a network, in the network's internal rows.

    Attributes:
        rowptr: Links into each slot are ``rowptr[s]:rowptr[s+1]``, shape (n_slots + 1,).
        col: Source slot of each of those links, shape (n_links,).
        lid: Coefficient index of each, shape (n_links,).
        p1: Slot of the neuron's ``E_{i-1}`` (forward) or ``E_{i+1}`` (reversed), (n_slots,).
        p2: Slot of ``E_{i-2}`` or ``E_{i+2}``, shape (n_slots,).
        k1: For each slot, which (element) row of ``K1`` gives its generation rate; likewise
            ``k3``; (n_slots,) flat indices into ``K[k].reshape(-1)``.
        k3: See ``k1``.
        driven: The rows with an external drive (pixels, or the errors of the reversed
            network), shape (n_driven,); every other row's drive is zero.
        dslot: For each row its position in ``driven``, or -1, shape (n_slots,).
    """

    rowptr: torch.Tensor
    col: torch.Tensor
    lid: torch.Tensor
    p1: torch.Tensor
    p2: torch.Tensor
    k1: torch.Tensor
    k3: torch.Tensor
    driven: torch.Tensor
    dslot: torch.Tensor

    @staticmethod
    def build(
        src: torch.Tensor,
        dst: torch.Tensor,
        driven: torch.Tensor,
        n_neurons: int,
        *,
        reverse: bool,
    ) -> FusedPlan:
        """The plan for links ``src → dst`` (internal rows) of ``n_neurons`` neurons.

        Args:
            src: Source row of every link, shape (n_links,).
            dst: Destination row, shape (n_links,).
            driven: Rows with an external drive, shape (n_driven,).
            n_neurons: N; row ``element·N + neuron``.
            reverse: The reversed network (A2): links run ``dst → src`` and the ring is mirrored.
        """
        n = n_neurons
        S = 5 * n
        to, frm = (src, dst) if reverse else (dst, src)
        to, frm = to.cpu().long(), frm.cpu().long()
        order = torch.sort(to, stable=True).indices  # by slot, links in their own order
        counts = torch.bincount(to, minlength=S)
        rowptr = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
        row = torch.arange(S)
        element, neuron = row // n, row % n
        # forward (A1): dE_i = K1_i E_{i-1} - K2_i E_i - K3_i E_i E_{i-2}; reversed (A2), the
        # mirrored ring written back: dÊ_i = K1_{i+1} Ê_{i+1} - K2_i Ê_i - K3_{i+2} Ê_i Ê_{i+2}
        s1, s2 = (1, 2) if reverse else (-1, -2)
        e1, e2 = (element + s1) % 5, (element + s2) % 5
        k1 = (e1 if reverse else element) * n + neuron
        k3 = (e2 if reverse else element) * n + neuron
        i32 = torch.int32
        driven = driven.cpu().long()
        dslot = torch.full((S,), -1, dtype=torch.long)
        dslot[driven] = torch.arange(driven.numel())
        return FusedPlan(
            rowptr.to(i32),
            frm[order].to(i32).contiguous(),
            order.to(i32).contiguous(),
            (e1 * n + neuron).to(i32),
            (e2 * n + neuron).to(i32),
            k1,
            k3,
            driven,
            dslot.to(i32),
        )


def _pool(n: int) -> ThreadPoolExecutor:
    return thread_pool(n)


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _blocks(x: torch.Tensor, nb: int, w: int, pad: float | torch.Tensor = 0.0) -> torch.Tensor:
    """(S, B) → (nb, S, W) contiguous, lanes past B filled with ``pad`` ((S, 1) or a float)."""
    S, B = x.shape
    out = torch.empty(S, nb * w, dtype=x.dtype)
    out[:, :B] = x
    out[:, B:] = pad
    return out.reshape(S, nb, w).permute(1, 0, 2).contiguous()


def _unblock(x: torch.Tensor, B: int) -> torch.Tensor:
    nb, S, w = x.shape
    return x.permute(1, 0, 2).reshape(S, nb * w)[:, :B]


def bptt_buffer_bytes(
    n_slots: int,
    n_links: int,
    batch: int,
    n_steps: int,
    segment: int,
    dtype: torch.dtype,
    threads: int,
    kept: int = 1,
) -> int:
    """Bytes the kernel allocates for one window with gradients (forward and reverse).

    Counts what grows with the window or the batch: the blocked state, integral and their
    gradients (4 arrays of ``n_slots`` per lane), the kept states (``⌈n_steps/segment⌉`` per
    block), the per-lane coefficient gradients, and per thread the reverse's recomputed
    segment (``kept · segment`` states) and work space (8 states) and the forward's (4).

    Args:
        n_slots: Slots of the network (5 per neuron).
        n_links: Links.
        batch: Samples.
        n_steps: Solver steps of the window.
        segment: Steps between kept states (``SimConfig.segment_steps``).
        dtype: float32 or float64.
        threads: Threads the blocks are split over.
        kept: States the reverse keeps per recomputed step: 1 for RK4; for Euler and Heun
            also the clip mask (with a clip) and Heun's stage state (:func:`kept_per_step`).

    Returns:
        The total in bytes (the peak: the forward's buffers are alive during the reverse).
    """
    w = LANES[dtype]
    nb = -(-batch // w)
    threads = max(1, min(threads, nb))
    seg = max(1, min(segment, n_steps))
    state = n_slots * w * torch.empty(0, dtype=dtype).element_size()  # one block's state
    nseg = -(-n_steps // seg)
    per_block = (4 + nseg) * state + n_links * w * (state // (n_slots * w))
    return nb * per_block + threads * (kept * seg + 8 + 4) * state


def kept_per_step(solver: str, clip: bool) -> int:
    """States the reverse keeps per recomputed step (``kept`` of :func:`bptt_buffer_bytes`).

    Euler and Heun keep, besides the state, the clip mask and Heun's stage state, so their
    reverse needs no right-hand side of its own; RK4 recomputes its stages.

    Args:
        solver: ``"Euler"``, ``"Heun"`` or ``"RK4"``.
        clip: Whether the state is clipped.
    """
    if solver == "RK4":
        return 1
    return 1 + (solver == "Heun") + int(clip)


class _Call:
    """Everything one kernel call needs, kept alive for the backward pass."""

    def __init__(self, plan, params, cfg, nsteps, h, dtype, per_lane, seg):
        self.dtype = dtype
        self.suf = "f32" if dtype == torch.float32 else "f64"
        # each slot's A, B, G and rest state, (n_slots,) each, in the kernel's dtype
        self.A, self.B, self.G, self.rest = (p.detach().contiguous() for p in params)
        self.plan = plan
        lo, hi = cfg.clip if cfg.clip is not None else (0.0, 0.0)
        self.solver = type(cfg.solver).__name__
        solver = {"Euler": _EULER, "Heun": _HEUN, "RK4": _RK4}[self.solver]
        self.net = _Net(
            S=self.rest.numel(),
            L=int(plan.lid.numel()),
            solver=solver,
            nsteps=nsteps,
            clip=int(cfg.clip is not None),
            per_lane=int(per_lane),
            seg=seg,
            nd=int(plan.driven.numel()),
            h=h,
            lo=lo,
            hi=hi,
            bound=cfg.bound,
            rowptr=plan.rowptr.data_ptr(),
            col=plan.col.data_ptr(),
            lid=plan.lid.data_ptr(),
            p1=plan.p1.data_ptr(),
            p2=plan.p2.data_ptr(),
            dslot=plan.dslot.data_ptr(),
            A=self.A.data_ptr(),
            B=self.B.data_ptr(),
            G=self.G.data_ptr(),
            rest=self.rest.data_ptr(),
        )

    def parallel(self, name: str, nb: int, arrays: list[tuple[torch.Tensor | None, bool]]):
        """Run kernel ``name`` on blocks split over threads; ``arrays``: (tensor, blocked)."""
        lib = _library()
        assert lib is not None
        fn = getattr(lib, f"{name}_{self.suf}")
        threads = max(1, min(torch.get_num_threads(), nb))
        cuts = [nb * i // threads for i in range(threads + 1)]

        def one(a: int, b: int) -> int:
            ptrs: list[int | None] = []
            for t, blocked in arrays:
                if t is None:
                    ptrs.append(None)
                elif blocked:
                    ptrs.append(t[a].data_ptr() if a < t.shape[0] else t.data_ptr())
                else:
                    ptrs.append(t.data_ptr())
            return fn(ctypes.byref(self.net), b - a, *ptrs)

        if threads == 1:
            codes = [one(0, nb)]
        else:
            pool = _pool(threads)
            futures = [pool.submit(one, cuts[i], cuts[i + 1]) for i in range(threads)]
            codes = [f.result() for f in futures]
        if any(codes):
            raise MemoryError("the fused Wuxing kernel could not allocate its work space")


class _FusedRun(torch.autograd.Function):
    @staticmethod
    def forward(ctx, c, drive, E0, _a, _b, _g, _rest, call, seg_store):
        # _a, _b, _g, _rest: the slot parameters (in call), inputs here for their gradients
        S, B = E0.shape
        w = LANES[call.dtype]
        nb = -(-B // w)
        rest = call.rest[:, None]
        E = _blocks(E0.detach(), nb, w, rest)
        Q = torch.zeros_like(E)
        dr = _blocks(drive.detach()[call.plan.driven], nb, w)
        per_lane = c.ndim == 2
        cb = _blocks(c.detach().T.contiguous(), nb, w) if per_lane else c.detach().contiguous()
        div = torch.zeros(nb, w, dtype=torch.uint8)
        hit = torch.zeros(nb, w, dtype=torch.uint8)
        ckpt = None
        if seg_store:
            nseg = -(-call.net.nsteps // call.net.seg)
            ckpt = torch.empty(nb, nseg, S, w, dtype=call.dtype)
        call.parallel(
            "run",
            nb,
            [
                (E, True),
                (Q, True),
                (dr, True),
                (cb, per_lane),
                (div, True),
                (hit, True),
                (ckpt, True),
            ],
        )
        ctx.call, ctx.saved = call, (dr, cb, ckpt, per_lane, B, nb)
        ctx.params_grad = any(ctx.needs_input_grad[3:7])
        if seg_store:
            # what this window with gradients allocates: flat in T up to √n_steps (tested)
            threads = torch.get_num_threads()
            kept = kept_per_step(call.solver, bool(call.net.clip))
            ctx.buffer_bytes = bptt_buffer_bytes(
                S, call.net.L, B, call.net.nsteps, call.net.seg, call.dtype, threads, kept
            )
        flags = div.reshape(-1)[:B].bool(), hit.reshape(-1)[:B].bool()
        ctx.mark_non_differentiable(*flags)
        return _unblock(E, B).contiguous(), _unblock(Q, B).contiguous(), *flags

    @staticmethod
    def backward(ctx, gE, gQ, _gd, _gh):
        call = ctx.call
        dr, cb, ckpt, per_lane, B, nb = ctx.saved
        w = LANES[call.dtype]
        S = call.net.S
        zero = torch.zeros(S, B, dtype=call.dtype)
        gEb = _blocks(zero if gE is None else gE.to(call.dtype), nb, w)
        gQb = _blocks(zero if gQ is None else gQ.to(call.dtype), nb, w)
        L = call.net.L
        gc = torch.zeros(nb, L, w, dtype=call.dtype)
        gdr = torch.zeros(nb, call.net.nd, w, dtype=call.dtype)
        # per lane: each slot's dA, dB, dG and d(rest), only when the parameters train
        gp = torch.zeros(nb, 4, S, w, dtype=call.dtype) if ctx.params_grad else None
        call.parallel(
            "back",
            nb,
            [
                (dr, True),
                (cb, per_lane),
                (ckpt, True),
                (gEb, True),
                (gQb, True),
                (gc, True),
                (gdr, True),
                (gp, True),
            ],
        )
        gc_lanes = _unblock(gc, B)  # (L, B)
        g_c = gc_lanes.T if per_lane else gc_lanes.sum(1)
        g_drive = torch.zeros(S, B, dtype=call.dtype)
        g_drive[call.plan.driven] = _unblock(gdr, B)
        g_params: list[torch.Tensor | None] = [None] * 4
        if gp is not None:
            sums = gp.sum((0, 3))  # (4, S): summed over blocks and lanes (padded lanes are 0)
            g_params = list(sums.unbind(0))
        return g_c, g_drive, _unblock(gEb, B), *g_params, None, None


def fused_run(
    plan: FusedPlan,
    K: torch.Tensor,
    cfg: SimConfig,
    E0: torch.Tensor,
    drive: torch.Tensor,
    rest: torch.Tensor,
    c: torch.Tensor,
    *,
    segment: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Integrate the network over the window with the fused kernel.

    Args:
        plan: Index of the direction to run (:meth:`FusedPlan.build`).
        K: Per-neuron parameters (3, 5, N); differentiable.
        cfg: The network's :class:`~quasineuron.wuxing.network.SimConfig`.
        E0: Initial state, internal rows, shape (n_slots, batch), float32 or float64.
        drive: External drive of every row, shape (n_slots, batch); zero outside
            ``plan.driven``.
        rest: Rest state the links and ``∫D dt`` measure from, shape (n_slots, 1);
            differentiable.
        c: Coefficients, (n_links,) or (batch, n_links).
        segment: With gradients, the state is kept every ``segment`` steps.

    Returns:
        ``E(T)`` and ``∫D dt`` (n_slots, batch), diverged and clipped flags (batch,);
        differentiable with respect to ``c``, ``drive``, ``E0``, ``K`` and ``rest``.
    """
    n_steps = cfg.n_steps
    h = cfg.T / n_steps
    dtype = E0.dtype
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (c, drive, E0))
    grad = grad or (torch.is_grad_enabled() and (K.requires_grad or rest.requires_grad))
    seg = max(1, min(segment, n_steps))
    kd = K.to(dtype)
    # the slot's own rate K2, and K1/K3 of the neuron element the plan names (mirrored ring)
    A = kd[0].reshape(-1)[plan.k1]
    B = kd[1].reshape(-1)
    G = kd[2].reshape(-1)[plan.k3]
    params = (A, B, G, rest.to(dtype).reshape(-1))
    call = _Call(plan, params, cfg, n_steps, h, dtype, c.ndim == 2, seg)
    return _FusedRun.apply(c.to(dtype), drive.to(dtype), E0, *params, call, grad)
