"""Instrument devices: drives set and outputs read with text commands (SCPI over VISA).

An instrument is a point-by-point device: for each row of drives it is told to set each drive,
then asked for each output. :class:`InstrumentDevice` does that through any object with
``write(str)`` and ``query(str) -> str`` (a PyVISA resource, or a simulated instrument), behind
a :class:`~quasineuron.devices.remote.DeviceLink`, so it gets the same cache, retries,
timeouts, budget and record as a remote device.

With PyVISA installed (``pip install "quasineuron[remote]"``) pass a VISA resource string,
``InstrumentDevice("TCPIP::192.168.0.5::INSTR", ...)``; ``visa_backend="@sim"`` opens it in
pyvisa-sim instead. :class:`SimulatedInstrument` is a small SCPI-speaking instrument of our own
(a transfer function, optional noise and dropped readings) for tests and examples.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from typing import Any, Protocol, final

import numpy as np
import torch

from quasineuron.devices.base import AbstractDevice, Box
from quasineuron.devices.remote import CallPolicy, DeviceLink

__all__ = ["InstrumentDevice", "SimulatedInstrument"]


class _Resource(Protocol):
    def write(self, command: str) -> Any: ...

    def query(self, command: str) -> str: ...


class SimulatedInstrument:
    """An instrument of our own that speaks a little SCPI: ``SOUR<k>:VOLT <v>`` / ``MEAS<k>?``.

    Args:
        fn: The transfer function, float64 drives (n_in,) → outputs (n_out,).
        n_in: Number of sources.
        noise_std: Gaussian noise on every reading.
        fail_every: Every ``fail_every``-th query raises ``TimeoutError`` (0: never), like an
            instrument that sometimes misses a reading.
        seed: Seed of the noise.
    """

    def __init__(
        self,
        fn: Callable[[np.ndarray], np.ndarray],
        *,
        n_in: int,
        noise_std: float = 0.0,
        fail_every: int = 0,
        seed: int = 0,
    ) -> None:
        self.fn = fn
        self.sources = np.zeros(n_in)
        self.noise_std = noise_std
        self.fail_every = fail_every
        self.n_queries = 0
        self._rng = np.random.default_rng(seed)

    def write(self, command: str) -> None:
        """Set a source: ``SOUR<k>:VOLT <value>`` (k from 1)."""
        head, _, value = command.strip().partition(" ")
        if not (head.upper().startswith("SOUR") and head.upper().endswith(":VOLT")):
            raise ValueError(f"unknown command {command!r}; expected 'SOUR<k>:VOLT <value>'")
        self.sources[int(head[4:-5]) - 1] = float(value)

    def query(self, command: str) -> str:
        """Read an output: ``MEAS<k>?`` (k from 1) → its value as text."""
        self.n_queries += 1
        if self.fail_every and self.n_queries % self.fail_every == 0:
            raise TimeoutError("simulated instrument: reading timed out")
        c = command.strip().upper()
        if not (c.startswith("MEAS") and c.endswith("?")):
            raise ValueError(f"unknown query {command!r}; expected 'MEAS<k>?'")
        y = np.atleast_1d(np.asarray(self.fn(self.sources.copy()), dtype=np.float64))
        value = y[int(c[4:-1]) - 1] + self.noise_std * self._rng.standard_normal()
        return f"{value:.9e}"


class _InstrumentTransport:
    def __init__(
        self,
        resource: _Resource,
        set_drive: Sequence[str],
        read_output: Sequence[str],
        acknowledged: bool,
    ) -> None:
        self.resource = resource
        self.set_drive = tuple(set_drive)
        self.read_output = tuple(read_output)
        self.acknowledged = acknowledged

    def __call__(self, u: np.ndarray, timeout: float) -> np.ndarray:
        if hasattr(self.resource, "timeout"):
            self.resource.timeout = timeout * 1000.0  # PyVISA counts milliseconds
        out = np.empty((len(u), len(self.read_output)))
        for i, row in enumerate(u):  # an instrument is set and read one point at a time
            for cmd, value in zip(self.set_drive, row, strict=True):
                if self.acknowledged:  # read the reply, or the next query would get it
                    self.resource.query(cmd.format(value=float(value)))
                else:
                    self.resource.write(cmd.format(value=float(value)))
            for j, q in enumerate(self.read_output):
                out[i, j] = float(self.resource.query(q))
        return out


@final
class InstrumentDevice(AbstractDevice):
    """A device measured by an instrument; not differentiable.

    Args:
        resource: An object with ``write`` and ``query`` (an open PyVISA resource, a
            :class:`SimulatedInstrument`), or a VISA resource string opened with PyVISA.
        set_drive: One command template per drive, ``{value}`` replaced by the drive, e.g.
            ``("SOUR1:VOLT {value}",)`` (a format spec works: ``{value:.3f}``).
        read_output: One query per output, e.g. ``("MEAS1?",)``; the reply is parsed as a float.
        domain: Box of drives the instrument may be set to (also its safe range: keep it so).
        policy: Retries, timeouts, budget; ``batch_size`` is the rows per call.
        record: Append-only record of every call (see :class:`DeviceLink`).
        acknowledged: Whether the instrument answers each set command (``"OK"``); its
            answer is then read and dropped.
        visa_backend: PyVISA backend when ``resource`` is a string (``"@sim"`` for pyvisa-sim).
        name: Name used in reports.

    Raises:
        ImportError: If ``resource`` is a string and PyVISA is not installed.
        ValueError: If the commands do not match the domain.
    """

    differentiable = False

    def __init__(
        self,
        resource: _Resource | str,
        *,
        set_drive: Sequence[str],
        read_output: Sequence[str],
        domain: Box,
        policy: CallPolicy | None = None,
        record: str | os.PathLike[str] | None = None,
        acknowledged: bool = False,
        visa_backend: str = "",
        name: str = "instrument",
    ) -> None:
        super().__init__()
        if isinstance(resource, str):
            try:
                # imported by name: PyVISA is optional, and typed as Any whether or not present
                pyvisa: Any = importlib.import_module("pyvisa")
            except ImportError as exc:
                raise ImportError(
                    f"opening the VISA resource {resource!r} needs PyVISA: pip install "
                    "'quasineuron[remote]' (or pass an object with write() and query())"
                ) from exc
            opened: Any = pyvisa.ResourceManager(visa_backend).open_resource(resource)
            resource = opened
        if isinstance(resource, str) or not (
            hasattr(resource, "write") and hasattr(resource, "query")
        ):
            raise TypeError(
                f"resource must have write() and query(), got {type(resource).__name__}"
            )
        set_drive, read_output = tuple(set_drive), tuple(read_output)
        if len(set_drive) != domain.dim:
            raise ValueError(
                f"set_drive has {len(set_drive)} commands but the domain has {domain.dim} drives"
            )
        if not all("{value" in c for c in set_drive):
            raise ValueError(f"each set_drive command needs a '{{value}}' field, got {set_drive}")
        if not read_output:
            raise ValueError("read_output needs at least one query, e.g. ('MEAS1?',)")
        self.n_in = domain.dim
        self.n_out = len(read_output)
        self.domain = domain
        self.name = name
        self.stochastic = True  # a measurement is never exactly repeatable
        self.link = DeviceLink(
            _InstrumentTransport(resource, set_drive, read_output, acknowledged),
            n_in=self.n_in,
            n_out=self.n_out,
            policy=policy or CallPolicy(batch_size=256),
            record=record,
        )

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """Measure; u (batch, n_in) → (batch, n_out), u's dtype and device."""
        y = self.link(u.detach().cpu().double().numpy())
        return torch.from_numpy(y).to(dtype=u.dtype, device=u.device)
