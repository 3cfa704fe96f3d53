from __future__ import annotations

import numpy as np
import pytest
import torch

from quasineuron.data import ArrayDataset, load_digits, regression_1d, xor


def _labelled(n: int = 100, n_classes: int = 4) -> ArrayDataset:
    x = torch.arange(n * 3, dtype=torch.float32).reshape(n, 3)
    y = torch.arange(n) % n_classes
    return ArrayDataset(x, y, name="toy")


def test_rejects_bad_shapes_and_dtypes():
    with pytest.raises(ValueError, match="shape \\(n, n_features\\)"):
        ArrayDataset(torch.zeros(5), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="floating targets y must have shape"):
        ArrayDataset(torch.zeros(5, 2), torch.zeros(5))
    with pytest.raises(ValueError, match="same number of rows"):
        ArrayDataset(torch.zeros(5, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError, match="torch tensors"):
        ArrayDataset(np.zeros((5, 2)), torch.zeros(5, dtype=torch.long))


def test_properties():
    data = _labelled()
    assert (len(data), data.n_features, data.n_classes, data.n_outputs) == (100, 3, 4, 4)
    assert data.is_classification
    reg = regression_1d(10)
    assert not reg.is_classification and reg.n_classes is None and reg.n_outputs == 1
    assert "x=(10, 1)" in repr(reg)


def test_stratified_split_is_disjoint_complete_proportional_and_seeded():
    data = _labelled(100, 4)
    train, val = data.split(0.2, seed=3)
    assert (len(train), len(val)) == (80, 20)
    assert torch.bincount(val.y).tolist() == [5, 5, 5, 5]
    rows = torch.cat([train.x[:, 0], val.x[:, 0]]).sort().values
    torch.testing.assert_close(rows, data.x[:, 0])
    again = data.split(0.2, seed=3)[1]
    torch.testing.assert_close(again.x, val.x)
    assert not torch.equal(data.split(0.2, seed=4)[1].x, val.x)
    assert (train.name, val.name) == ("toy-train", "toy-val")


def test_split_of_regression_targets_and_bad_fraction():
    train, val = regression_1d(50).split(0.1, seed=0)
    assert (len(train), len(val)) == (45, 5)
    with pytest.raises(ValueError, match="val_fraction must be in"):
        _labelled().split(1.0, seed=0)


def test_sample_is_stratified_and_ordered():
    small = _labelled(100, 4).sample(40, seed=0)
    assert torch.bincount(small.y).tolist() == [10, 10, 10, 10]
    assert torch.all(small.x[1:, 0] > small.x[:-1, 0])


def test_digits_shapes_range_and_determinism():
    train, test = load_digits()
    assert train.x.shape == (1438, 64) and test.x.shape == (359, 64)
    assert train.x.dtype == torch.float32 and train.y.dtype == torch.int64
    assert 0.0 <= float(train.x.min()) and float(train.x.max()) == 1.0
    assert train.n_classes == test.n_classes == 10
    again, _ = load_digits()
    assert torch.equal(again.x, train.x) and torch.equal(again.y, train.y)


def test_xor_points_and_noisy_variant():
    data = xor()
    assert data.x.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert data.y.tolist() == [0, 1, 1, 0]
    noisy = xor(n_per_corner=5, noise=0.1, seed=1)
    assert noisy.x.shape == (20, 2) and noisy.y.tolist() == [0, 1, 1, 0] * 5
    torch.testing.assert_close(noisy.x, xor(n_per_corner=5, noise=0.1, seed=1).x)
    assert 0.0 < float((noisy.x - xor(n_per_corner=5).x).std()) < 0.2


def test_regression_1d_follows_sin3x():
    data = regression_1d(2000, noise=0.1, seed=0)
    resid = (data.y - torch.sin(3 * data.x)).double()
    assert abs(float(resid.std()) - 0.1) < 0.01
    assert float(data.x.min()) >= -1 and float(data.x.max()) <= 1
