"""Tensor-product cubic spline twin on a regular (possibly non-uniform) grid.

Fitting uses scipy: along each axis the not-a-knot cubic spline through the grid values
(``scipy.interpolate.CubicSpline``) gives the node derivatives, and the tensor product of these
1-D splines is, on every grid cell, a polynomial of degree 3 in each drive. We store that
polynomial's monomial coefficients per cell, so evaluation is torch-native and batched: locate the
cell of each drive row, gather its ``4**n_in`` coefficients and contract them with the monomials
of the local coordinates. The result is C² inside the grid, exact for data that is cubic per
axis, converges like ``h**4``, and autograd gives its exact gradient on any torch device.

Outside the grid the edge cells' polynomials extrapolate (the domain policy decides whether
that may happen).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import torch
from scipy.interpolate import CubicSpline

from quasineuron.devices.base import Box
from quasineuron.surrogate import _native
from quasineuron.surrogate.base import AbstractSurrogate, DomainPolicy

__all__ = ["MAX_SPLINE_DRIVES", "SplineSurrogate"]

#: Coefficient storage grows like ``4**n_in`` per cell; beyond three drives use the MLP twin.
MAX_SPLINE_DRIVES = 3

# Hermite data [p(0), p(1), h p'(0), h p'(1)] → monomial coefficients [c0, c1, c2, c3].
_HERMITE_TO_MONOMIAL = np.array(
    [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [-3.0, 3.0, -2.0, -1.0], [2.0, -2.0, 1.0, 1.0]]
)


class SplineSurrogate(AbstractSurrogate):
    """Piecewise-cubic tensor-product twin of a device with at most three drives.

    Build one with :meth:`from_grid` (or :func:`~quasineuron.surrogate.fit.fit_surrogate`).

    Args:
        nodes: Strictly increasing grid nodes per drive, ``n_in`` float tensors of shape (n_k,).
        coef: Monomial coefficients per cell, shape (n_cells, 4**n_in, n_out), cells in row-major
            order of the cell grid ``(n_1 - 1, ..., n_d - 1)``; local coordinates
            ``t_k = (u_k - x_k[i]) / (x_k[i+1] - x_k[i])`` in [0, 1].
        domain: The characterised domain.
        policy: Out-of-domain policy, see :class:`AbstractSurrogate`.
        source: Description of the imitated device.
        name: Name used in reports.
    """

    kind = "spline"

    def __init__(
        self,
        nodes: Sequence[torch.Tensor],
        coef: torch.Tensor,
        *,
        domain: Box,
        policy: DomainPolicy = "warn",
        source: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        n_in = len(nodes)
        if not 1 <= n_in <= MAX_SPLINE_DRIVES:
            raise ValueError(
                f"SplineSurrogate supports 1 to {MAX_SPLINE_DRIVES} drives, got {n_in}; use "
                "kind='mlp' for more drives"
            )
        n_cells = [int(x.numel()) - 1 for x in nodes]
        if min(n_cells) < 1:
            raise ValueError(
                f"every grid axis needs at least 2 nodes, got {[c + 1 for c in n_cells]}"
            )
        if coef.ndim != 3 or coef.shape[0] != int(np.prod(n_cells)) or coef.shape[1] != 4**n_in:
            raise ValueError(
                f"coef must have shape ({int(np.prod(n_cells))}, {4**n_in}, n_out) for grid "
                f"{[c + 1 for c in n_cells]}, got {tuple(coef.shape)}"
            )
        n_out = int(coef.shape[2])
        super().__init__(
            n_in=n_in, n_out=n_out, domain=domain, policy=policy, source=source, name=name
        )
        self._n_cells = n_cells
        for k, x in enumerate(nodes):
            x = torch.as_tensor(x, dtype=torch.float64).reshape(-1)
            if not bool((x[1:] > x[:-1]).all()):
                raise ValueError(f"grid nodes of drive {k} must be strictly increasing")
            self.register_buffer(f"nodes{k}", x)
        self.register_buffer("coef", torch.as_tensor(coef, dtype=torch.float64))
        self._uniform = [_is_uniform(getattr(self, f"nodes{k}")) for k in range(n_in)]
        self._cache: dict[tuple[torch.dtype, torch.device], tuple[Any, ...]] = {}
        self._native_grids: dict[torch.dtype, _native.NativeGrid] = {}
        self._compiled: Any = None
        self.fused = True

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_grid(
        cls,
        nodes: Sequence[np.ndarray],
        values: np.ndarray,
        *,
        domain: Box,
        policy: DomainPolicy = "warn",
        source: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> SplineSurrogate:
        """Fit the not-a-knot tensor-product cubic spline through grid values.

        Args:
            nodes: Strictly increasing nodes per drive, arrays of shape (n_k,), n_k >= 2.
            values: Device outputs on the grid, shape (n_1, ..., n_d, n_out), all finite.
            domain: The characterised domain.
            policy: Out-of-domain policy.
            source: Description of the imitated device.
            name: Name used in reports.

        Returns:
            The spline twin; it reproduces ``values`` at the nodes.

        Raises:
            ValueError: If shapes disagree or a value is not finite.
        """
        xs = [np.asarray(x, dtype=np.float64).reshape(-1) for x in nodes]
        vals = np.asarray(values, dtype=np.float64)
        d = len(xs)
        shape = tuple(len(x) for x in xs)
        if vals.ndim != d + 1 or vals.shape[:d] != shape:
            raise ValueError(
                f"values must have shape {shape + ('n_out',)} for the given nodes, got {vals.shape}"
            )
        if not np.isfinite(vals).all():
            raise ValueError(
                "values contain NaN or inf; fill or drop failed sweep points before fitting a "
                "spline (fit_surrogate fills failed grid nodes for you)"
            )
        return cls(
            [torch.from_numpy(x) for x in xs],
            torch.from_numpy(_cell_coefficients(xs, vals)),
            domain=domain,
            policy=policy,
            source=source,
            name=name,
        )

    # -- evaluation --------------------------------------------------------------------------

    def _apply(self, fn: Any, recurse: bool = True) -> Any:
        # .to()/.cuda() may change the buffers: drop the per-dtype copies.
        self._cache = {}
        self._native_grids = {}
        return super()._apply(fn, recurse)

    def _cast(self, u: torch.Tensor) -> tuple[Any, ...]:
        key = (u.dtype, u.device)
        hit = self._cache.get(key)
        if hit is None:
            axes = []
            for k in range(self.n_in):
                x = getattr(self, f"nodes{k}").to(dtype=u.dtype, device=u.device)
                axes.append((x, 1.0 / (x[1:] - x[:-1])))
            hit = (axes, self.coef.to(dtype=u.dtype, device=u.device))
            self._cache[key] = hit
        return hit

    @property
    def compiled(self) -> bool:
        """Whether evaluation runs through a ``torch.compile``'d kernel.

        The compiled kernel fuses the cell lookup and polynomial into one pass (about 4x faster
        on CPU for large batches) at a one-off compile cost of seconds; off by default.
        """
        return self._compiled is not None

    @compiled.setter
    def compiled(self, value: bool) -> None:
        self._compiled = torch.compile(self._value_and_jacobian, dynamic=True) if value else None

    @property
    def fused(self) -> bool:
        """Whether CPU evaluation in float32/float64 runs through the native fused kernel.

        On by default. The kernel (see ``surrogate/_native.py``) does the domain check, the
        cell lookup, the value and the Jacobian in one pass per drive row, with the same
        arithmetic as the torch path. ``False`` (or no C compiler, a GPU tensor, another dtype,
        more than eight outputs, or ``compiled = True``) uses the torch path.
        """
        return getattr(self, "_fused", True)

    @fused.setter
    def fused(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"fused must be True or False, got {value!r}")
        self._fused = value

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """Evaluate the twin; see :meth:`AbstractSurrogate.forward` (same contract and errors)."""
        lib = self._native_library(u)
        if lib is None:
            return super().forward(u)
        grid = self._native_grid(u.dtype)
        clamp = self._policy == "clamp"
        if torch.is_grad_enabled() and u.requires_grad:
            count: list[int] = []
            value = _NativeSplineFunction.apply(u, lib, grid, clamp, count)
            outside = count[0]
        else:
            value, _, outside = _native.spline_eval(
                lib, grid, u.detach(), clamp=clamp, jacobian=False
            )
        if outside:
            self.n_out_of_domain += outside
            if not clamp:
                self._refuse_or_warn(u, outside)
        return value

    def _native_library(self, u: torch.Tensor) -> Any:
        """The native kernel if it applies to drives ``u``, else None."""
        # getattr: a twin pickled before these attributes existed loads without them
        if (
            not getattr(self, "_fused", True)
            or self._compiled is not None
            or u.device.type != "cpu"
            or u.dtype not in _native.NATIVE_DTYPES
            or self.n_out > _native.MAX_NATIVE_OUTPUTS
            or u.ndim != 2
            or u.shape[0] == 0
        ):
            return None
        return _native.library()

    def _native_grid(self, dtype: torch.dtype) -> _native.NativeGrid:
        grids = self.__dict__.setdefault("_native_grids", {})
        grid = grids.get(dtype)
        if grid is None:
            nodes = [getattr(self, f"nodes{k}").to(dtype) for k in range(self.n_in)]
            coef = cast(torch.Tensor, self.coef)
            grid = _native.NativeGrid(
                nodes, coef.to(dtype), self._uniform, self._low.to(dtype), self._high.to(dtype)
            )
            grids[dtype] = grid
        return grid

    def _kernel(
        self, u: torch.Tensor, *, jacobian: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self._compiled is not None:
            return self._compiled(u, jacobian=jacobian)
        return self._value_and_jacobian(u, jacobian=jacobian)

    def _evaluate(self, u: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and u.requires_grad:
            # One pass computes the value and its Jacobian without building an autograd graph
            # of the Horner steps: the backward is then a single multiply (about 3x faster).
            return _SplineFunction.apply(u, self)
        with torch.no_grad():
            return self._kernel(u, jacobian=False)[0]

    def _value_and_jacobian(
        self, u: torch.Tensor, *, jacobian: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Spline value (batch, n_out) and, if asked, its Jacobian (batch, n_in, n_out)."""
        axes, coef = self._cast(u)
        batch = u.shape[0]
        d = self.n_in
        flat: torch.Tensor | None = None
        ts, scales = [], []
        for k, (x, inv_h) in enumerate(axes):
            uk = u[:, k]
            n_cells = self._n_cells[k]
            if self._uniform[k]:
                pos = (uk - x[0]) * inv_h[0]
                i = torch.floor(pos).to(torch.long).clamp_(0, n_cells - 1)
                ts.append(pos - i.to(u.dtype))
                scales.append(inv_h[0].expand(batch))
            else:
                i = torch.searchsorted(x, uk.contiguous(), right=True) - 1
                i = i.clamp_(0, n_cells - 1)
                ts.append((uk - x[i]) * inv_h[i])
                scales.append(inv_h[i])
            flat = i if flat is None else flat * n_cells + i
        assert flat is not None
        c = coef[flat].view((batch,) + (4,) * d + (self.n_out,))
        value = _horner(c, ts)
        if not jacobian:
            return value, None
        jac = [_horner(c, ts, derivative=k) * scales[k].unsqueeze(-1) for k in range(d)]
        return value, torch.stack(jac, dim=1)

    # -- save / load -------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """Grid sizes (the nodes themselves are tensors)."""
        return {"grid": [c + 1 for c in self._n_cells]}

    def tensors(self) -> dict[str, torch.Tensor]:
        """Nodes per drive and the cell coefficients, float64."""
        out = {f"nodes{k}": getattr(self, f"nodes{k}") for k in range(self.n_in)}
        out["coef"] = self.coef
        return out

    @classmethod
    def from_saved(
        cls, config: dict[str, Any], tensors: dict[str, torch.Tensor], common: dict[str, Any]
    ) -> SplineSurrogate:
        """Rebuild from :meth:`config`, :meth:`tensors` and the common fields."""
        n_in = int(common["n_in"])
        return cls(
            [tensors[f"nodes{k}"] for k in range(n_in)],
            tensors["coef"],
            domain=Box.from_dict(common["domain"]),
            policy=common["policy"],
            source=common["source"],
            name=common["name"],
        )


def _horner(c: torch.Tensor, ts: list[torch.Tensor], *, derivative: int = -1) -> torch.Tensor:
    """Contract c (batch, 4, ..., 4, n_out) with the monomials of the local coordinates ts[k].

    ``c[..., m, ...]`` on axis ``k + 1`` holds the coefficient of ``t_k**m``. With
    ``derivative=k`` the result is the derivative with respect to ``t_k`` instead.
    """
    batch = c.shape[0]
    for k in reversed(range(len(ts))):  # Horner along the last local axis first
        t = ts[k].view((batch,) + (1,) * (k + 1))
        if k == derivative:  # d/dt (c0 + c1 t + c2 t² + c3 t³) = c1 + 2 c2 t + 3 c3 t²
            r = 3.0 * c.select(k + 1, 3)
            r = torch.addcmul(c.select(k + 1, 2), r, t, value=0.5).mul_(2.0)
            r = torch.addcmul(c.select(k + 1, 1), r, t)
        else:
            r = c.select(k + 1, 3)
            for m in (2, 1, 0):
                r = torch.addcmul(c.select(k + 1, m), r, t)
        c = r
    return c


class _SplineFunction(torch.autograd.Function):
    """Value in the forward, the saved Jacobian in the backward (first derivatives only)."""

    @staticmethod
    def forward(ctx: Any, u: torch.Tensor, spline: SplineSurrogate) -> torch.Tensor:
        value, jac = spline._kernel(u.detach(), jacobian=True)
        ctx.save_for_backward(jac)
        return value

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (jac,) = ctx.saved_tensors
        return torch.einsum("bo,bio->bi", grad, jac), None


class _NativeSplineFunction(torch.autograd.Function):
    """The native kernel's value in the forward; its saved Jacobian in the backward.

    ``count`` (a list) receives the number of drive rows outside the domain.
    """

    @staticmethod
    def forward(
        ctx: Any,
        u: torch.Tensor,
        lib: Any,
        grid: _native.NativeGrid,
        clamp: bool,
        count: list[int],
    ) -> torch.Tensor:
        value, jac, outside = _native.spline_eval(lib, grid, u.detach(), clamp=clamp, jacobian=True)
        count.append(outside)
        ctx.save_for_backward(jac)
        ctx.lib = lib
        return value

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (jac,) = ctx.saved_tensors
        if jac.shape[2] == 1 and grad.dtype == jac.dtype:  # one output: no reduction
            g = _native.scale_rows(ctx.lib, jac, grad)
        else:
            g = torch.einsum("bo,bio->bi", grad, jac)
        return g, None, None, None, None


def _is_uniform(x: torch.Tensor) -> bool:
    h = x[1:] - x[:-1]
    return bool((h - h.mean()).abs().max() <= 1e-12 * (x[-1] - x[0]).abs())


def _cell_coefficients(xs: list[np.ndarray], vals: np.ndarray) -> np.ndarray:
    """Monomial coefficients (n_cells, 4**d, n_out) of the tensor-product cubic spline."""
    d = len(xs)
    shape = tuple(len(x) for x in xs)
    n_cells = tuple(n - 1 for n in shape)
    n_out = vals.shape[-1]
    # Node derivatives ∂^alpha f for alpha in {0,1}^d: differentiate the 1-D spline along each
    # axis in alpha in turn (the tensor-product spline's mixed derivatives at the nodes).
    derivs: dict[tuple[int, ...], np.ndarray] = {}
    for alpha in itertools.product((0, 1), repeat=d):
        arr = vals
        for k, a in enumerate(alpha):
            if a:
                arr = CubicSpline(xs[k], arr, axis=k)(xs[k], 1)
        derivs[alpha] = arr
    h = [np.diff(x) for x in xs]
    hermite = np.empty(n_cells + (4,) * d + (n_out,))
    # Local index j = corner + 2*alpha per axis: [p(0), p(1), h p'(0), h p'(1)].
    for j in itertools.product(range(4), repeat=d):
        corner = [jj % 2 for jj in j]
        alpha = tuple(jj // 2 for jj in j)
        block = derivs[alpha][tuple(slice(c, c + n) for c, n in zip(corner, n_cells, strict=True))]
        for k, a in enumerate(alpha):
            if a:
                block = block * h[k].reshape((-1,) + (1,) * (d - k))
        hermite[(slice(None),) * d + j] = block
    coef = hermite
    for k in range(d):
        coef = np.moveaxis(np.tensordot(_HERMITE_TO_MONOMIAL, coef, axes=(1, d + k)), 0, d + k)
    return np.ascontiguousarray(coef.reshape(int(np.prod(n_cells)), 4**d, n_out))
