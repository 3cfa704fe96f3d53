"""Tiny picklable test devices for the sweep tests (importable by spawned workers)."""

from __future__ import annotations

import os
import time

import torch

from quasineuron.devices.base import AbstractDevice, Box

DOMAIN = Box(low=(-1.0, 0.0), high=(1.0, 2.0))


class Elementwise(AbstractDevice):
    """y = (sin(u0) * u1, u0 + u1**2): elementwise, hence bit-reproducible across processes.

    ``delay`` (seconds slept per call) and ``log`` (a file to which every evaluated row is
    appended as float.hex values) are test instruments and not part of ``describe()``.
    """

    n_in = 2
    n_out = 2
    differentiable = True

    def __init__(
        self,
        *,
        domain: Box = DOMAIN,
        name: str = "elementwise",
        delay: float = 0.0,
        log: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        self.domain = domain
        self.name = name
        self.delay = delay
        self.log = None if log is None else str(log)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        if self.log is not None:
            lines = "".join(",".join(float(v).hex() for v in row) + "\n" for row in u.tolist())
            with open(self.log, "a") as f:
                f.write(lines)
        if self.delay:
            time.sleep(self.delay)
        return torch.stack([torch.sin(u[:, 0]) * u[:, 1], u[:, 0] + u[:, 1] ** 2], dim=-1)


class Flaky(Elementwise):
    """Raises ValueError when a row has u0 > 0.5; returns NaN in y1 for rows with u0 < -0.5."""

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        bad = u[:, 0] > 0.5
        if bad.any():
            raise ValueError(f"solver diverged at u0={u[bad, 0][0].item():.3f}")
        y = super().forward(u)
        y[u[:, 0] < -0.5, 1] = float("nan")
        return y


class WrongShape(Elementwise):
    """Violates the contract: drops the batch dimension."""

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return super().forward(u).sum(dim=0)


def read_log(path: str | os.PathLike[str]) -> list[tuple[float, ...]]:
    """Rows logged by Elementwise(log=path); a torn last line (from SIGKILL) is dropped."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        text = f.read()
    lines = text.split("\n")[:-1]  # the part after the last newline is incomplete
    return [tuple(float.fromhex(v) for v in line.split(",")) for line in lines]
