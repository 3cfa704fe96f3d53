"""An in-memory labelled data set of feature rows, and seeded splits of it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["ArrayDataset"]


@dataclass(frozen=True, repr=False)
class ArrayDataset:
    """Feature rows with their targets, held in memory.

    Args:
        x: Features, shape (n, n_features), a floating dtype.
        y: Targets: class labels of shape (n,) with an integer dtype (classification), or
            values of shape (n, k) with a floating dtype (regression, soft labels).
        name: A short label used in reports, e.g. ``"mnist-train"``.

    Raises:
        ValueError: If the shapes or dtypes are not as above, or ``x`` and ``y`` differ in ``n``.
    """

    x: torch.Tensor
    y: torch.Tensor
    name: str = "data"

    def __post_init__(self) -> None:
        if not isinstance(self.x, torch.Tensor) or not isinstance(self.y, torch.Tensor):
            raise TypeError(
                f"ArrayDataset needs torch tensors, got x: {type(self.x).__name__}, "
                f"y: {type(self.y).__name__}; convert with torch.as_tensor(...)"
            )
        if self.x.ndim != 2 or not self.x.is_floating_point():
            raise ValueError(
                f"x must be a floating tensor of shape (n, n_features), got shape "
                f"{tuple(self.x.shape)} and dtype {self.x.dtype}; flatten images with "
                f"x.reshape(len(x), -1).float()"
            )
        integer = not self.y.is_floating_point() and not self.y.is_complex()
        if integer and self.y.ndim != 1:
            raise ValueError(
                f"integer labels y must have shape (n,), got {tuple(self.y.shape)}; use "
                f"y.argmax(dim=1) for one-hot labels"
            )
        if not integer and self.y.ndim != 2:
            raise ValueError(
                f"floating targets y must have shape (n, k), got {tuple(self.y.shape)}; use "
                f"y.reshape(-1, 1) for a single output"
            )
        if integer and self.y.dtype == torch.bool:
            raise ValueError("labels y must be an integer tensor, got torch.bool; use y.long()")
        if len(self.x) != len(self.y):
            raise ValueError(
                f"x and y must have the same number of rows, got {len(self.x)} and {len(self.y)}"
            )
        if integer and len(self.y) and int(self.y.min()) < 0:
            raise ValueError(f"class labels must be >= 0, got min {int(self.y.min())}")

    def __len__(self) -> int:
        return len(self.x)

    def __repr__(self) -> str:
        return (
            f"ArrayDataset(name={self.name!r}, x={tuple(self.x.shape)} {self.x.dtype}, "
            f"y={tuple(self.y.shape)} {self.y.dtype})"
        )

    @property
    def n_features(self) -> int:
        """Number of feature columns of ``x``."""
        return self.x.shape[1]

    @property
    def is_classification(self) -> bool:
        """True when ``y`` holds integer class labels."""
        return not self.y.is_floating_point()

    @property
    def n_classes(self) -> int | None:
        """Number of classes (``max(y) + 1``) for labels, or None for floating targets."""
        if not self.is_classification:
            return None
        return int(self.y.max()) + 1 if len(self.y) else 0

    @property
    def n_outputs(self) -> int:
        """Width a network's output needs: ``n_classes`` for labels, ``k`` for targets."""
        n_classes = self.n_classes
        return self.y.shape[1] if n_classes is None else n_classes

    def subset(
        self, indices: Sequence[int] | np.ndarray | torch.Tensor, *, name: str | None = None
    ) -> ArrayDataset:
        """Rows ``indices`` of this data set, in that order.

        Args:
            indices: Row indices, shape (m,).
            name: Name of the result; defaults to this data set's name.

        Returns:
            A new data set of m rows.
        """
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return ArrayDataset(self.x[idx], self.y[idx], name=self.name if name is None else name)

    def split(
        self, val_fraction: float, *, seed: int, stratify: bool = True
    ) -> tuple[ArrayDataset, ArrayDataset]:
        """Split into training and validation parts, reproducibly.

        With ``stratify`` (labels only) each class contributes ``round(val_fraction * count)``
        rows to the validation part, so both parts keep the class proportions. Rows keep
        their original order inside each part.

        Args:
            val_fraction: Fraction of rows for validation, in (0, 1).
            seed: Seed of the numpy Generator that picks the rows.
            stratify: Split class by class (ignored for floating targets).

        Returns:
            ``(train, val)``, named ``"<name>-train"`` and ``"<name>-val"``.

        Raises:
            ValueError: If ``val_fraction`` is not in (0, 1) or a part would be empty.
        """
        if not 0.0 < float(val_fraction) < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}; e.g. 0.1")
        val_idx = self._pick(float(val_fraction), seed=seed, stratify=stratify)
        mask = np.zeros(len(self), dtype=bool)
        mask[val_idx] = True
        if mask.all() or not mask.any():
            raise ValueError(
                f"val_fraction={val_fraction!r} of {len(self)} rows leaves an empty part; "
                f"choose a fraction between {1 / len(self):.3g} and {1 - 1 / len(self):.3g}"
            )
        return (
            self.subset(np.flatnonzero(~mask), name=f"{self.name}-train"),
            self.subset(np.flatnonzero(mask), name=f"{self.name}-val"),
        )

    def sample(self, n: int, *, seed: int, stratify: bool = True) -> ArrayDataset:
        """A reproducible random subset of ``n`` rows (class-stratified for labels).

        Useful for quick runs on a slice of a large set, e.g. ``mnist_train.sample(5000, seed=0)``.

        Args:
            n: Number of rows, 1 <= n <= len(self) (stratification may round by a few rows).
            seed: Seed of the numpy Generator that picks the rows.
            stratify: Keep class proportions (ignored for floating targets).

        Returns:
            About ``n`` rows in their original order, same name.
        """
        if not 1 <= int(n) <= len(self):
            raise ValueError(f"n must be in [1, {len(self)}], got {n!r}")
        if int(n) == len(self):
            return self
        idx = np.sort(self._pick(int(n) / len(self), seed=seed, stratify=stratify))
        return self.subset(idx)

    def _pick(self, fraction: float, *, seed: int, stratify: bool) -> np.ndarray:
        rng = np.random.Generator(np.random.PCG64(seed))
        n = len(self)
        if stratify and self.is_classification:
            labels = self.y.cpu().numpy()
            picked = []
            for c in np.unique(labels):
                members = np.flatnonzero(labels == c)
                k = int(round(fraction * len(members)))
                picked.append(rng.permutation(members)[:k])
            return np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64)
        return rng.permutation(n)[: int(round(fraction * n))]
