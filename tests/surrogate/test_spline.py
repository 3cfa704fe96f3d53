from __future__ import annotations

import numpy as np
import pytest
import torch

from quasineuron.devices.base import Box
from quasineuron.surrogate import SplineSurrogate

GEN = torch.Generator().manual_seed(0)


def _rand(n: int, box: Box, dtype=torch.float64) -> torch.Tensor:
    low, high = box.tensors(dtype=dtype)
    return low + (high - low) * torch.rand(n, box.dim, generator=GEN, dtype=dtype)


def test_reproduces_nodes_and_cubic_data_exactly():
    x = np.linspace(-1.0, 2.0, 7)
    y = np.array([-0.5, 0.0, 0.3, 1.0, 1.7])
    box = Box((-1.0, -0.5), (2.0, 1.7))

    def f(a, b):
        return 1 + a - 2 * a**2 + 0.5 * a**3 * b - b**3 + a * b**2

    vals = f(*np.meshgrid(x, y, indexing="ij"))[..., None]
    twin = SplineSurrogate.from_grid([x, y], vals, domain=box)
    u = _rand(50, box)
    want = f(u[:, :1], u[:, 1:])
    torch.testing.assert_close(twin(u), want, rtol=1e-12, atol=1e-12)


def test_accuracy_converges_like_h4_in_1d():
    box = Box((-3.0,), (3.0,))
    u = torch.linspace(-3, 3, 2001, dtype=torch.float64)[:, None]
    errs = []
    for n in (17, 33, 65):
        x = np.linspace(-3, 3, n)
        twin = SplineSurrogate.from_grid([x], np.tanh(x)[:, None], domain=box)
        errs.append(float((twin(u) - torch.tanh(u)).abs().max()))
    rates = [np.log2(a / b) for a, b in zip(errs, errs[1:], strict=False)]
    assert all(3.5 < r < 4.6 for r in rates), (errs, rates)


def test_non_uniform_grid_and_two_outputs():
    x = 3 * np.cos(np.linspace(np.pi, 0, 40))  # Chebyshev-like, denser at the ends
    vals = np.stack([np.tanh(x), np.sin(x)], axis=1)
    twin = SplineSurrogate.from_grid([x], vals, domain=Box((-3.0,), (3.0,)))
    u = torch.linspace(-3, 3, 501, dtype=torch.float64)[:, None]
    want = torch.cat([torch.tanh(u), torch.sin(u)], dim=1)
    assert float((twin(u) - want).abs().max()) < 5e-4


def test_three_drives():
    axes = [np.linspace(-1, 1, 9)] * 3
    mesh = np.meshgrid(*axes, indexing="ij")
    vals = np.tanh(mesh[0] + 0.5 * mesh[1] - 0.3 * mesh[2])[..., None]
    box = Box((-1.0,) * 3, (1.0,) * 3)
    twin = SplineSurrogate.from_grid(axes, vals, domain=box)
    u = _rand(200, box)
    want = torch.tanh(u[:, :1] + 0.5 * u[:, 1:2] - 0.3 * u[:, 2:])
    assert float((twin(u) - want).abs().max()) < 1e-3


@pytest.mark.parametrize("n_in", [1, 2])
def test_gradient_matches_finite_differences(n_in):
    axes = [np.linspace(-2, 2, 11)] * n_in
    mesh = np.meshgrid(*axes, indexing="ij")
    vals = np.stack([np.tanh(sum(mesh)), np.cos(mesh[0])], axis=-1)
    box = Box((-2.0,) * n_in, (2.0,) * n_in)
    twin = SplineSurrogate.from_grid(axes, vals, domain=box)
    u = _rand(6, box).requires_grad_()
    assert torch.autograd.gradcheck(twin, (u,))
    # gradient of the twin approximates the device gradient as well
    (g,) = torch.autograd.grad(twin(u)[:, 0].sum(), u)
    want = (1 - torch.tanh(u.detach().sum(1, keepdim=True)) ** 2).expand(-1, n_in)
    torch.testing.assert_close(g, want, atol=2e-2, rtol=0)


def test_keeps_dtype_and_follows_module_to():
    x = np.linspace(0, 1, 8)
    twin = SplineSurrogate.from_grid([x], x[:, None] ** 2, domain=Box((0.0,), (1.0,)))
    u32 = torch.rand(5, 1, generator=GEN)
    out = twin(u32)
    assert out.dtype == torch.float32 and out.shape == (5, 1)
    torch.testing.assert_close(out, u32**2)
    twin.to(torch.float32)  # clears the per-dtype cache; still evaluates in the input dtype
    u64 = u32.double()
    assert twin(u64).dtype == torch.float64


def test_rejects_bad_input():
    x = np.linspace(0, 1, 8)
    with pytest.raises(ValueError, match="NaN or inf"):
        SplineSurrogate.from_grid([x], np.full((8, 1), np.nan), domain=Box((0.0,), (1.0,)))
    with pytest.raises(ValueError, match="1 to 3 drives"):
        SplineSurrogate.from_grid(
            [x] * 4, np.zeros((8,) * 4 + (1,)), domain=Box((0.0,) * 4, (1.0,) * 4)
        )
    twin = SplineSurrogate.from_grid([x], x[:, None], domain=Box((0.0,), (1.0,)))
    with pytest.raises(ValueError, match=r"shape \(batch, n_in=1\)"):
        twin(torch.zeros(3))


@pytest.mark.slow
def test_compiled_kernel_matches_eager_values_and_gradients():
    x = np.linspace(-2.0, 2.0, 9)
    box = Box((-2.0, -2.0), (2.0, 2.0))
    vals = np.tanh(np.add.outer(x, -0.3 * x))[..., None]
    twin = SplineSurrogate.from_grid([x, x], vals, domain=box)
    u = _rand(300, box).requires_grad_(True)
    y_eager = twin(u)
    (g_eager,) = torch.autograd.grad(y_eager.sum(), u)
    twin.compiled = True
    assert twin.compiled
    y_comp = twin(u)
    (g_comp,) = torch.autograd.grad(y_comp.sum(), u)
    torch.testing.assert_close(y_comp, y_eager)
    torch.testing.assert_close(g_comp, g_eager)
