"""Count the drive rows that reach a device, split by the stage of a run that sent them.

A real device (a simulator, an instrument, a device behind a server) costs time or money per
evaluation, so a run reports how many drive rows it sent: ``metrics.json``'s
``device_evaluations``. The rows are counted in one place, where they reach the device: a
forward pre-hook on the device module adds the batch size of every call to the current
*phase*. The phase is a context variable that the stage sending rows sets around its work
(:func:`device_phase`), so the counting needs neither a wrapper that changes the device's name
and description nor a formula that guesses how many rows a stage sends.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch

from quasineuron.devices.base import AbstractDevice

__all__ = ["DeviceCallCounter", "device_phase"]

#: Rows sent outside every named phase (e.g. a contract probe) are counted here.
OTHER = "other"

_PHASE: ContextVar[str] = ContextVar("quasineuron_device_phase", default=OTHER)


@contextmanager
def device_phase(name: str) -> Iterator[None]:
    """Count the device rows sent inside this block under ``name`` (nested blocks win).

    Args:
        name: The phase, e.g. ``"sweep"``, ``"training"`` or ``"evaluation:device"``.
    """
    token = _PHASE.set(name)
    try:
        yield
    finally:
        _PHASE.reset(token)


class DeviceCallCounter:
    """Counts the drive rows sent to one device, by phase.

    ``counter.attach(device)`` hooks the device: every call ``device(u)`` with ``u`` of shape
    ``(batch, n_in)`` adds ``batch`` to ``rows[phase]`` before the device runs (a call that
    fails still reached the device). The count is one integer addition per call, whatever the
    batch. Calls made in other processes (a sweep's worker processes) are counted there and
    are not seen here.

    Attributes:
        rows: Rows counted so far, by phase.
    """

    def __init__(self) -> None:
        self.rows: dict[str, int] = {}
        self._handle: Any = None

    def attach(self, device: AbstractDevice) -> DeviceCallCounter:
        """Start counting the rows sent to ``device``; returns the counter."""
        if self._handle is not None:
            raise RuntimeError("this counter already counts a device; use a new counter")
        self._handle = device.register_forward_pre_hook(self._count)
        return self

    def detach(self) -> None:
        """Stop counting (the counts are kept)."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _count(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        if args and isinstance(args[0], torch.Tensor) and args[0].dim() >= 1:
            phase = _PHASE.get()
            self.rows[phase] = self.rows.get(phase, 0) + int(args[0].shape[0])

    def __getstate__(self) -> dict[str, Any]:
        """A pickled device (sent to a worker process) carries a counter without the hook."""
        return {"rows": dict(self.rows), "_handle": None}

    def summary(self, evaluation_modes: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
        """The ``device_evaluations`` record of a run.

        Args:
            evaluation_modes: The scored modes; each gets an entry under ``evaluation`` (0 for
                a mode that runs only the twin).

        Returns:
            ``{"sweep", "twin_check", "training", "evaluation": {mode: rows}, "other",
            "total"}``, all in drive rows.
        """
        prefix = "evaluation:"
        evaluation = {m: 0 for m in evaluation_modes}
        for phase, n in self.rows.items():
            if phase.startswith(prefix):
                mode = phase[len(prefix) :]
                evaluation[mode] = evaluation.get(mode, 0) + n
        return {
            "sweep": self.rows.get("sweep", 0),
            "twin_check": self.rows.get("twin_check", 0),
            "training": self.rows.get("training", 0),
            "evaluation": evaluation,
            "other": sum(
                n
                for p, n in self.rows.items()
                if p not in ("sweep", "twin_check", "training") and not p.startswith(prefix)
            ),
            "total": sum(self.rows.values()),
        }
