"""Small data sets that need no download: scikit-learn's digits, XOR and a 1-D regression."""

from __future__ import annotations

import numpy as np
import torch

from quasineuron.data.dataset import ArrayDataset

__all__ = ["load_digits", "regression_1d", "xor"]


def load_digits(*, test_fraction: float = 0.2, seed: int = 0) -> tuple[ArrayDataset, ArrayDataset]:
    """Scikit-learn's 8x8 handwritten digits (1797 images), pixels scaled to [0, 1].

    The data ships inside scikit-learn, so nothing is downloaded.

    Args:
        test_fraction: Fraction held out for testing, class-stratified.
        seed: Seed of the split; the default gives the same split everywhere.

    Returns:
        ``(train, test)``: x of shape (n, 64) float32 in [0, 1], y int64 labels 0..9
        (1438 / 359 rows with the defaults).
    """
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    x = torch.from_numpy(np.asarray(bunch.data, dtype=np.float32) / np.float32(16.0))
    y = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    train, test = ArrayDataset(x, y, name="digits").split(test_fraction, seed=seed)
    return (
        ArrayDataset(train.x, train.y, name="digits-train"),
        ArrayDataset(test.x, test.y, name="digits-test"),
    )


def xor(*, n_per_corner: int = 1, noise: float = 0.0, seed: int = 0) -> ArrayDataset:
    """The XOR problem: label ``u1 xor u2`` at the corners of the unit square.

    Args:
        n_per_corner: Copies of each of the four corners.
        noise: Standard deviation of Gaussian noise added to the features (0 gives the exact
            four points).
        seed: Seed of the noise.

    Returns:
        x of shape (4 * n_per_corner, 2) float32, y int64 in {0, 1}, corners in the order
        (0,0), (0,1), (1,0), (1,1), repeated.
    """
    if int(n_per_corner) < 1:
        raise ValueError(f"n_per_corner must be >= 1, got {n_per_corner!r}")
    if not float(noise) >= 0.0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    corners = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    x = np.tile(corners, (int(n_per_corner), 1))
    y = (x[:, 0] != x[:, 1]).astype(np.int64)
    if noise > 0:
        rng = np.random.Generator(np.random.PCG64(seed))
        x = x + rng.normal(0.0, float(noise), size=x.shape).astype(np.float32)
    name = "xor" if noise == 0 else f"xor-noise{noise:g}"
    return ArrayDataset(torch.from_numpy(x), torch.from_numpy(y), name=name)


def regression_1d(n: int = 200, *, noise: float = 0.1, seed: int = 0) -> ArrayDataset:
    """A 1-D regression problem, ``y = sin(3 u) + noise * N(0, 1)`` with ``u ~ U(-1, 1)``.

    Args:
        n: Number of samples.
        noise: Standard deviation of the additive Gaussian noise.
        seed: Seed of the samples and the noise.

    Returns:
        x of shape (n, 1) float32, y of shape (n, 1) float32.
    """
    if int(n) < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    if not float(noise) >= 0.0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    rng = np.random.Generator(np.random.PCG64(seed))
    u = rng.uniform(-1.0, 1.0, size=(int(n), 1))
    y = np.sin(3.0 * u) + float(noise) * rng.normal(size=u.shape)
    return ArrayDataset(
        torch.from_numpy(u.astype(np.float32)),
        torch.from_numpy(y.astype(np.float32)),
        name="regression-1d",
    )
