"""RandomShift: each image is its own whole-pixel translation, zeros shifted in."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from quasineuron.data import RandomShift


def shifted(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Reference: out[i, j] = img[i - dy, j - dx], zero outside (one image, loops)."""
    h, w = img.shape
    out = torch.zeros_like(img)
    for i in range(h):
        for j in range(w):
            if 0 <= i - dy < h and 0 <= j - dx < w:
                out[i, j] = img[i - dy, j - dx]
    return out


@settings(max_examples=25, deadline=None)
@given(
    s=st.integers(0, 3),
    h=st.integers(4, 9),
    w=st.integers(4, 9),
    b=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_every_image_is_a_translation_of_itself_within_the_range(s, h, w, b, seed):
    x = torch.rand(b, h * w, generator=torch.Generator().manual_seed(seed))
    y = RandomShift(s, (h, w))(x, torch.Generator().manual_seed(seed)).reshape(b, h, w)
    for k in range(b):
        candidates = [
            (dy, dx)
            for dy in range(-s, s + 1)
            for dx in range(-s, s + 1)
            if torch.equal(y[k], shifted(x[k].reshape(h, w), dy, dx))
        ]
        assert candidates, f"image {k} is no shift within ±{s}"


def test_offsets_are_per_image_cover_the_range_and_follow_the_generator():
    x = torch.zeros(400, 49)
    x[:, 24] = 1.0  # one lit pixel in the middle of a 7 × 7 image
    y = RandomShift(2, (7, 7))(x, torch.Generator().manual_seed(0))
    pos = y.argmax(1)
    dy, dx = pos // 7 - 3, pos % 7 - 3
    assert set(dy.tolist()) == set(dx.tolist()) == {-2, -1, 0, 1, 2}
    assert torch.equal(y.sum(1), torch.ones(400))  # nothing lost off the edge here
    again = RandomShift(2, (7, 7))(x, torch.Generator().manual_seed(0))
    assert torch.equal(y, again)
    assert torch.equal(RandomShift(0, (7, 7))(x), x)


def test_bad_settings_and_shapes_are_rejected():
    with pytest.raises(ValueError, match="max_shift"):
        RandomShift(-1)
    with pytest.raises(ValueError, match="smaller than the image"):
        RandomShift(4, (4, 8))
    with pytest.raises(ValueError, match=r"\(batch, 784\)"):
        RandomShift(1)(torch.zeros(3, 100))
