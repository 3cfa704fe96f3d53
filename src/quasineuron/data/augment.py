"""Training-time augmentation of image batches (flattened rows), vectorised over the batch."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RandomShift:
    """Translate every image by its own random whole-pixel offset, zeros shifted in.

    The standard regulariser for MNIST-sized networks that memorise their training set
    (e.g. Simard et al., ICDAR 2003): offsets ``(dy, dx)`` uniform in
    ``[-max_shift, max_shift]²``, drawn per image.

    Args:
        max_shift: Largest offset in pixels (0: identity).
        shape: Image height and width; rows of the batch are images flattened row-major.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> RandomShift(2)(torch.rand(8, 784), g).shape
        torch.Size([8, 784])
    """

    max_shift: int = 2
    shape: tuple[int, int] = (28, 28)

    def __post_init__(self) -> None:
        if not (isinstance(self.max_shift, int) and self.max_shift >= 0):
            raise ValueError(f"RandomShift.max_shift must be an int >= 0, got {self.max_shift!r}")
        h, w = self.shape
        if h < 1 or w < 1 or self.max_shift >= min(h, w):
            raise ValueError(
                f"RandomShift: max_shift {self.max_shift} must be smaller than the image "
                f"{self.shape}"
            )

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Shifted copy of ``x`` (batch, h·w); offsets drawn from ``generator`` (CPU)."""
        h, w = self.shape
        if x.ndim != 2 or x.shape[1] != h * w:
            raise ValueError(
                f"RandomShift{self.shape}: x must be (batch, {h * w}), got {tuple(x.shape)}"
            )
        s, b = self.max_shift, x.shape[0]
        if s == 0:
            return x
        dy, dx = torch.randint(-s, s + 1, (2, b), generator=generator).to(x.device)
        padded = torch.nn.functional.pad(x.reshape(b, h, w), (s, s, s, s))
        # output pixel (i, j) reads input pixel (i - dy, j - dx), i.e. padded (i - dy + s, ...)
        rows = torch.arange(h, device=x.device)[None, :] - dy[:, None] + s  # (b, h)
        cols = torch.arange(w, device=x.device)[None, :] - dx[:, None] + s  # (b, w)
        batch = torch.arange(b, device=x.device)[:, None, None]
        return padded[batch, rows[:, :, None], cols[:, None, :]].reshape(b, h * w)
