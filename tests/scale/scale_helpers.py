"""Picklable helpers for the scale tests (importable by Dask workers and spawned ranks)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from quasineuron.devices.base import AbstractDevice, Box

DOMAIN = Box(low=(-1.0, 0.0), high=(1.0, 2.0))


class SlowBlackBox(AbstractDevice):
    """y = (sin(u0) * u1, u0 + u1**2), sleeping ``delay`` seconds per point.

    Elementwise, hence bit-reproducible in any process. ``log`` is a file to which every
    evaluated row is appended as float.hex values (one write per batch), to count evaluations.
    """

    n_in = 2
    n_out = 2
    differentiable = False

    def __init__(self, *, delay: float = 0.0, log: str | os.PathLike[str] | None = None) -> None:
        super().__init__()
        self.domain = DOMAIN
        self.name = "slow-blackbox"
        self.delay = delay
        self.log = None if log is None else str(log)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        if self.delay:
            time.sleep(self.delay * u.shape[0])
        if self.log is not None:
            lines = "".join(",".join(float(v).hex() for v in row) + "\n" for row in u.tolist())
            with open(self.log, "a") as f:
                f.write(lines)
        return torch.stack([torch.sin(u[:, 0]) * u[:, 1], u[:, 0] + u[:, 1] ** 2], dim=-1)


def read_log(path: str | os.PathLike[str]) -> list[tuple[float, ...]]:
    """Rows logged by SlowBlackBox(log=path); a torn last line (from a kill) is dropped."""
    if not os.path.exists(path):
        return []
    lines = Path(path).read_text().split("\n")[:-1]
    return [tuple(float.fromhex(v) for v in line.split(",")) for line in lines]


def ddp_digits_run(out_dir: str, *, epochs: int, batch_size: int, seed: int) -> None:
    """One rank of a data-parallel digits run; each rank saves its weights and metrics."""
    import quasineuron as qn
    from quasineuron.training.distributed import train_distributed

    torch.set_num_threads(1)
    train, test = qn.load_digits()
    net = small_digits_net()
    result = train_distributed(
        net,
        train,
        val_data=test,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        lr=1e-2,
        mode=qn.Direct(),
    )
    rank = int(os.environ["RANK"])
    torch.save(
        {"state": net.state_dict(), "history": [m.to_dict() for m in result.history]},
        Path(out_dir) / f"rank{rank}.pt",
    )


def small_digits_net() -> torch.nn.Module:
    """A 64-16-10 DeviceNetwork of ideal tanh neurons, float64, seeded."""
    import quasineuron as qn

    return qn.DeviceNetwork(
        qn.ideal_neuron("tanh"), sizes=(64, 16, 10), seed=0, dtype=torch.float64
    )
