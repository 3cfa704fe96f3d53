"""Circuit devices: a SPICE netlist simulated by ngspice, many operating points per call.

The netlist describes one neuron. Its drive nodes are driven by the device (the drives, in volts)
and chosen node voltages are the outputs. To make a batch cheap, the whole batch is one DC sweep:
a hidden index source is swept over the rows and each drive node follows a table indexed by it,
so ngspice solves thousands of operating points in one run, each starting from the previous
solution. Starting ngspice costs about 10 ms; one run per point would pay it every time. The
swept netlist holds several copies of the neuron ("lanes"), each walking its own share of the
rows, so that one sweep step solves several points. A :class:`Transient` readout instead puts
one instance of the neuron per row in one netlist and integrates them over one time window.
Outputs are node voltages or currents through voltage sources (``i(vname)``).

ngspice runs as a program in batch mode (``ngspice -b``), one subprocess per chunk; nothing
links against the shared library, so a crash in the simulator cannot take the Python process
down, and the device pickles as plain data.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal, final

import numpy as np
import torch

from quasineuron.devices.base import AbstractDevice, Box
from quasineuron.errors import SimulationError, SimulatorNotFoundError

__all__ = [
    "INSTALL_HINT",
    "SpiceDevice",
    "Transient",
    "find_ngspice",
    "readout_from_options",
    "spice_diffpair",
    "spice_inverter",
]

#: How to install ngspice, named in every error about a missing simulator.
INSTALL_HINT = (
    "install ngspice (Debian/Ubuntu: `apt-get install -y ngspice libngspice0`; macOS: "
    "`brew install ngspice`; conda: `conda install -c conda-forge ngspice`), or pass "
    "SpiceDevice(..., ngspice='/path/to/ngspice')"
)

_NODE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_OUTPUT = re.compile(r"^v\(\s*([A-Za-z0-9_]+)\s*(?:,\s*([A-Za-z0-9_]+)\s*)?\)$", re.IGNORECASE)
_CURRENT = re.compile(r"^i\(\s*(v[A-Za-z0-9_]*)\s*\)$", re.IGNORECASE)

#: Operating points per ngspice run for a transient readout. Each run simulates this many
#: instances of the neuron side by side (one circuit matrix for all of them): past a few hundred
#: the shared time step and the larger matrix stop paying for the saved start-ups.
_TRANSIENT_CHUNK = 200


@dataclass(frozen=True)
class Transient:
    """Read the outputs from a transient simulation over ``[0, t_stop]`` seconds.

    The drives are voltage sources held at their values for the whole window. With
    ``start="hold"`` the window starts from the circuit's DC operating point at those drives;
    with ``start="step"`` each drive is 0 V before t = 0 and rises to its value over
    ``t_step / 100`` (a step, as far as the circuit can tell when its time constants are longer
    than a step). The rest of the circuit (supplies included) starts from its operating point
    at zero drives in that case.

    Args:
        t_stop: End of the window, seconds (> 0).
        t_step: Largest time step ngspice may take, seconds (0 < t_step <= t_stop); it also
            sets the resolution of ``at="mean"``.
        at: ``"final"``: the outputs at ``t_stop``; ``"mean"``: their time average over
            ``[t_from, t_stop]`` (trapezoid rule over ngspice's time points).
        t_from: Start of the averaging window for ``at="mean"`` (0 <= t_from < t_stop).
        start: ``"hold"`` or ``"step"``, see above.

    Raises:
        ValueError: If a time is out of range or an option is not one of its choices.
    """

    t_stop: float
    t_step: float
    at: Literal["final", "mean"] = "final"
    t_from: float = 0.0
    start: Literal["hold", "step"] = "hold"

    def __post_init__(self) -> None:
        if not (isinstance(self.t_stop, int | float) and self.t_stop > 0):
            raise ValueError(f"Transient t_stop must be > 0 seconds, got {self.t_stop!r}")
        if not (isinstance(self.t_step, int | float) and 0 < self.t_step <= self.t_stop):
            raise ValueError(
                f"Transient t_step must be in (0, t_stop={self.t_stop}] seconds, got "
                f"{self.t_step!r}; pick a step several times shorter than the circuit's "
                "fastest time constant"
            )
        if self.at not in ("final", "mean"):
            raise ValueError(f"Transient at must be 'final' or 'mean', got {self.at!r}")
        if not (isinstance(self.t_from, int | float) and 0 <= self.t_from < self.t_stop):
            raise ValueError(
                f"Transient t_from must be in [0, t_stop={self.t_stop}) seconds, got "
                f"{self.t_from!r}"
            )
        if self.start not in ("hold", "step"):
            raise ValueError(f"Transient start must be 'hold' or 'step', got {self.start!r}")


_READOUT_KINDS = ("op", "transient")


def readout_from_options(value: Any) -> Literal["op"] | Transient:
    """The readout a config names: ``"op"``, a :class:`Transient`, or a table of options.

    A config file cannot hold a :class:`Transient` object, so the readout may be given as a
    table: ``{kind = "transient", t_stop = 2e-6, t_step = 1e-8, at = "final"}`` (the other
    keys are :class:`Transient`'s fields: ``at``, ``t_from``, ``start``) or ``{kind = "op"}``.

    Args:
        value: ``"op"``, a :class:`Transient`, or a mapping with ``kind`` and the fields.

    Returns:
        ``"op"`` or the :class:`Transient`.

    Raises:
        ValueError: If the kind is unknown, a field is missing or unknown, or a value is out
            of range.
    """
    if value == "op" or isinstance(value, Transient):
        return value
    if value == "transient":
        raise ValueError(
            "readout 'transient' needs its window: use readout = {kind = \"transient\", "
            "t_stop = ..., t_step = ...} (seconds)"
        )
    if not isinstance(value, Mapping):
        raise ValueError(
            "readout must be 'op' (the DC operating point), Transient(t_stop, t_step, ...) or a "
            f'table {{kind = "transient", t_stop = ..., t_step = ...}}, got {value!r}'
        )
    options = dict(value)
    kind = options.pop("kind", None)
    if kind not in _READOUT_KINDS:
        raise ValueError(
            f"readout kind must be one of {list(_READOUT_KINDS)}, got {kind!r}; e.g. "
            'readout = {kind = "transient", t_stop = 2e-6, t_step = 1e-8}'
        )
    if kind == "op":
        if options:
            raise ValueError(f"readout kind 'op' takes no options, got {sorted(options)}")
        return "op"
    names = {f.name for f in fields(Transient)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise ValueError(
            f"readout kind 'transient' does not know {unknown}; its options are "
            f"{sorted(names)} (times in seconds)"
        )
    missing = [n for n in ("t_stop", "t_step") if n not in options]
    if missing:
        raise ValueError(
            f"readout kind 'transient' needs {missing} (seconds), e.g. t_stop = 2e-6, t_step = 1e-8"
        )
    for key in ("t_stop", "t_step", "t_from"):
        v = options.get(key, 0.0)
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"readout {key} must be a number of seconds, got {v!r}")
    return Transient(**options)


def find_ngspice(program: str | None = None) -> str:
    """Path of the ngspice program.

    Args:
        program: A path or program name; None looks for ``ngspice`` on ``PATH`` (or the
            ``QUASINEURON_NGSPICE`` environment variable, when set).

    Returns:
        The absolute path of the program.

    Raises:
        SimulatorNotFoundError: If it is not found; the message says how to install it.
    """
    name = program or os.environ.get("QUASINEURON_NGSPICE") or "ngspice"
    found = shutil.which(name)
    if found is None:
        raise SimulatorNotFoundError(
            f"ngspice was not found (looked for {name!r} on PATH); circuit devices need it: "
            f"{INSTALL_HINT}"
        )
    return found


@final
class SpiceDevice(AbstractDevice):
    """A device whose response is a SPICE netlist simulated by ngspice; not differentiable.

    Args:
        netlist: The circuit of one neuron, as SPICE lines (elements and ``.model`` cards; no
            analysis or ``.end`` cards). Node ``0`` is ground. The drive nodes are left
            undriven: the device drives each of them against ground.
        drives: Names of the drive nodes, one per drive (``n_in``).
        outputs: The outputs, one per output (``n_out``): ``"v(node)"`` for a node voltage,
            ``"v(a,b)"`` for the difference between two nodes, or ``"i(vname)"`` for the current
            through the netlist's voltage source ``vname`` (amperes, positive when it flows
            into the source's first node and out of its second: put a 0 V source in series
            with a branch to measure it).
        domain: Box of drives (volts) to characterise the device on.
        readout: ``"op"``: the DC operating point, all rows of a chunk solved in one DC sweep;
            or :class:`Transient`: the outputs at the end of (or averaged over) a time window,
            one instance of the circuit per row, side by side in one netlist; or a table
            ``{"kind": "transient", "t_stop": ..., "t_step": ..., ...}`` (``{"kind": "op"}``),
            the spelling a config file uses (see :func:`readout_from_options`).
        chunk: Operating points per ngspice run (default 5000 for ``"op"``, 200 for a
            transient). Larger chunks spread ngspice's start-up over more points, but the DC
            table lookup grows with the chunk (past about 10,000 points the run slows down)
            and a transient's circuit matrix grows with it.
        workers: ngspice runs in flight at once (each is its own process).
        lanes: For ``"op"``: copies of the neuron in the swept netlist, each walking its own
            share of the chunk's rows, so that one sweep step solves ``lanes`` operating points
            (default 8, about 1.5-2x the points per second of a single copy; 1 gives the
            plain one-copy sweep).
        on_error: A chunk that fails is split in halves until the failing points are alone;
            ``"raise"`` then raises :class:`SimulationError` naming the first failing point,
            ``"nan"`` returns NaN for it.
        ngspice: Path or name of the ngspice program (default: ``ngspice`` on ``PATH``).
        timeout: Seconds one ngspice run may take before it counts as failed.
        name: Name used in reports.

    Attributes:
        n_evaluations: Operating points evaluated by this instance so far.
        n_runs: ngspice runs started by this instance so far.

    Raises:
        ValueError: If a node or output name cannot be used, or an option is out of range.
        SimulatorNotFoundError: On the first evaluation, if ngspice is not installed.
    """

    differentiable = False

    def __init__(
        self,
        netlist: str,
        *,
        drives: Sequence[str],
        outputs: Sequence[str],
        domain: Box,
        readout: Literal["op"] | Transient | Mapping[str, Any] = "op",
        chunk: int | None = None,
        lanes: int = 8,
        workers: int = 1,
        on_error: Literal["raise", "nan"] = "raise",
        ngspice: str | None = None,
        timeout: float = 600.0,
        name: str = "spice",
    ) -> None:
        super().__init__()
        if not isinstance(netlist, str) or not netlist.strip():
            raise ValueError("netlist must be a non-empty string of SPICE lines")
        for card in (".end", ".control", ".op", ".tran", ".dc"):
            for line in netlist.lower().splitlines():
                if line.strip().split(" ")[0] == card:
                    raise ValueError(
                        f"netlist must describe the circuit only; remove its {card!r} line "
                        "(the device adds the analysis and the sources on the drive nodes)"
                    )
        drives = tuple(drives)
        if not drives:
            raise ValueError("drives must name at least one node, e.g. drives=('inp',)")
        for node in drives:
            if not isinstance(node, str) or not _NODE.match(node) or node == "0":
                raise ValueError(
                    f"drive {node!r} must be a node name (letters, digits, '_'; not ground '0')"
                )
        if len(set(drives)) != len(drives):
            raise ValueError(f"drives must be distinct nodes, got {drives}")
        elements = {line.split()[0].lower() for line in netlist.splitlines() if line.split()}
        parsed: list[tuple[str, str, str | None]] = []
        for out in outputs:
            text = out.strip() if isinstance(out, str) else ""
            m, c = _OUTPUT.match(text), _CURRENT.match(text)
            if c is not None:
                source = c.group(1).lower()
                if source not in elements:
                    raise ValueError(
                        f"output {out!r} reads the current through {source!r}, but the netlist "
                        "has no element of that name; add a voltage source in series with the "
                        f"branch, e.g. '{source} a b 0'"
                    )
                parsed.append(("i", source, None))
            elif m is not None:
                parsed.append(("v", m.group(1).lower(), m.group(2).lower() if m.group(2) else None))
            else:
                raise ValueError(
                    f"output {out!r} must be 'v(node)', 'v(node_a,node_b)' (a difference) or "
                    "'i(vname)' (the current through voltage source vname)"
                )
        if not parsed:
            raise ValueError("outputs must name at least one output, e.g. outputs=('v(out)',)")
        # a table of options (from a config file) becomes a Transient here
        readout = readout_from_options(readout)
        if chunk is None:
            chunk = 5000 if readout == "op" else _TRANSIENT_CHUNK
        if domain.dim != len(drives):
            raise ValueError(f"domain has {domain.dim} drives but drives names {len(drives)} nodes")
        for opt, value in (("chunk", chunk), ("workers", workers), ("lanes", lanes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{opt} must be an int >= 1, got {value!r}")
        if on_error not in ("raise", "nan"):
            raise ValueError(f"on_error must be 'raise' or 'nan', got {on_error!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        self.netlist = netlist.strip()
        self.drives = tuple(d.lower() for d in drives)
        self.outputs = tuple(o.strip() for o in outputs)
        self._parsed = tuple(parsed)
        self.n_in = len(drives)
        self.n_out = len(parsed)
        self.domain = domain
        self.readout = readout
        self.chunk = chunk
        self.workers = workers
        self.lanes = lanes
        self.on_error = on_error
        self.ngspice = ngspice
        self.timeout = float(timeout)
        self.name = name
        self.n_evaluations = 0
        self.n_runs = 0

    # -- netlist -----------------------------------------------------------------------------

    def _vectors(self, instance: int | None) -> list[tuple[str | None, str | None]]:
        """Raw-file vector names of each output's two terms (None: ground or no term).

        ``instance`` None names the top-level circuit of the DC sweep; an int names the nodes
        and sources inside transient instance ``instance`` (ngspice's ``x<name>.node`` and
        ``v.x<name>.vsource`` spellings; a drive node is the instance's own drive net).
        """

        def node(x: str | None) -> str | None:
            if x is None or x == "0":
                return None
            if instance is None:
                return f"v({x})"
            if x in self.drives:
                return f"v(qn_d{instance}_{self.drives.index(x)})"
            return f"v(xqn{instance}.{x})"

        names: list[tuple[str | None, str | None]] = []
        for kind, a, b in self._parsed:
            if kind == "i":
                names.append((f"i({a})" if instance is None else f"i(v.xqn{instance}.{a})", None))
            else:
                names.append((node(a), node(b)))
        return names

    def batch_netlist(self, u: np.ndarray, raw_path: str) -> str:
        """The netlist that solves the rows of ``u`` (n, n_in) in one ngspice run.

        For the DC readout, see below; for a :class:`Transient` readout, see
        :meth:`transient_netlist`. Exposed so that a user can run it by hand:
        ``ngspice -b file.cir``.
        """
        if isinstance(self.readout, Transient):
            return self.transient_netlist(u, raw_path)
        if self.lanes > 1 and len(u) > 1:
            return self.lanes_netlist(u, raw_path)
        return self.sweep_netlist(u, raw_path)

    def _lanes_split(self, n: int) -> tuple[int, int]:
        """(lanes, rows per lane) for a chunk of n rows."""
        k = min(self.lanes, n)
        return k, -(-n // k)

    def lanes_netlist(self, u: np.ndarray, raw_path: str) -> str:
        """The DC sweep of :meth:`sweep_netlist` with ``lanes`` copies of the neuron.

        The neuron becomes a subcircuit (ports: the drive nodes); copy k is driven from rows
        ``k*m ... k*m + m - 1`` (m = rows per lane, the last lane padded with its last row), all
        copies indexed by the same swept source. Each sweep step then solves ``lanes`` operating
        points at once: ngspice's per-step work (the sweep bookkeeping, the convergence test,
        the behavioural sources' table lookups over m instead of n entries) is shared. The
        copies share no node but ground, so each row's answer is its own circuit's; a step
        iterates until every copy has converged, which keeps each answer closer to the one its
        row gets alone than the one-copy sweep does (measured: within 2e-14 V against 4e-7 V on
        the differential pair).
        """
        n = len(u)
        k, m = self._lanes_split(n)
        u = np.concatenate([u, np.repeat(u[-1:], k * m - n, axis=0)])
        idx = np.arange(max(m, 2), dtype=np.float64)
        lines = [
            f"* quasineuron {self.name}: {n} operating points in {k} lanes",
            "v_qn_index qn_index 0 dc 0",
            # the tolerances of the one-copy sweep, see there
            ".options reltol=1e-7 vntol=1e-10 abstol=1e-15",
            f".subckt qn_cell {' '.join(self.drives)}",
            self.netlist,
            ".ends qn_cell",
        ]
        for lane in range(k):
            rows = u[lane * m : (lane + 1) * m]
            if m == 1:  # a table needs two entries; the sweep stays at index 0
                rows = np.repeat(rows, 2, axis=0)
            for j in range(self.n_in):
                table = ", ".join(
                    f"{float(i)!r},{float(v)!r}" for i, v in zip(idx, rows[:, j], strict=True)
                )
                lines.append(f"b_qn_drive{lane}_{j} qn_d{lane}_{j} 0 v = pwl(v(qn_index), {table})")
            lines.append(
                f"xqn{lane} {' '.join(f'qn_d{lane}_{j}' for j in range(self.n_in))} qn_cell"
            )
        wanted = sorted({x for lane in range(k) for pair in self._vectors(lane) for x in pair if x})
        lines += [f".save {x}" for x in wanted]
        lines += [
            ".control",
            "set filetype=binary",
            f"dc v_qn_index 0 {m - 1} 1",
            f"write {raw_path}",
            "quit",
            ".endc",
            ".end",
        ]
        return "\n".join(lines) + "\n"

    def transient_netlist(self, u: np.ndarray, raw_path: str) -> str:
        """The netlist that simulates the rows of ``u`` (n, n_in) over one transient window.

        The neuron becomes a subcircuit whose ports are the drive nodes; each row gets its own
        instance and its own drive sources, all in one netlist, so one ngspice run (one start-up,
        one shared time axis) covers the chunk. Instances share no node but ground, so each
        row's answer is its own circuit's. Its control block writes the time axis and the
        outputs' vectors to ``raw_path`` (binary raw file).
        """
        tr = self.readout
        assert isinstance(tr, Transient)
        rise = tr.t_step / 100  # the step's rise: short against every step ngspice takes
        lines = [
            f"* quasineuron {self.name}: {len(u)} transient instances",
            # reltol 1e-6: ngspice's default 1e-3 also bounds its time-step error control, and
            # let an RC charge curve drift by about 1e-3 of its swing
            ".options reltol=1e-6 vntol=1e-9 abstol=1e-15",
            f".subckt qn_cell {' '.join(self.drives)}",
            self.netlist,
            ".ends qn_cell",
        ]
        for i, row in enumerate(u):
            for k, v in enumerate(row):
                v = float(v)
                src = f"pwl(0 0 {rise!r} {v!r})" if tr.start == "step" else f"dc {v!r}"
                lines.append(f"vqn{i}_{k} qn_d{i}_{k} 0 {src}")
            ports = " ".join(f"qn_d{i}_{k}" for k in range(self.n_in))
            lines.append(f"xqn{i} {ports} qn_cell")
        wanted = sorted({x for i in range(len(u)) for pair in self._vectors(i) for x in pair if x})
        # .save keeps only these vectors (not every node of every instance) in memory and file
        lines += [f".save {x}" for x in wanted]
        lines += [
            ".control",
            "set filetype=binary",
            f"tran {tr.t_step!r} {tr.t_stop!r} 0 {tr.t_step!r}",
            f"write {raw_path}",
            "quit",
            ".endc",
            ".end",
        ]
        return "\n".join(lines) + "\n"

    def sweep_netlist(self, u: np.ndarray, raw_path: str) -> str:
        """The netlist that solves the rows of ``u`` (n, n_in) in one DC sweep.

        A hidden source ``v_qn_index`` is swept over 0, 1, ..., n-1, and each drive node is
        driven by a behavioural source that looks its value up in a table indexed by it. ngspice
        then solves the n operating points one after another, each starting from the previous
        solution: one run, one circuit matrix of the size of one neuron. Its control block
        writes the outputs to ``raw_path`` (binary raw file). Exposed so that a user can run it
        by hand: ``ngspice -b file.cir``.
        """
        n = len(u)
        lines = [f"* quasineuron {self.name}: {n} operating points", "v_qn_index qn_index 0 dc 0"]
        idx = np.arange(n, dtype=np.float64)
        if n == 1:  # a table needs two entries; the sweep stays at index 0
            idx, u = np.array([0.0, 1.0]), np.repeat(u, 2, axis=0)
        for k, node in enumerate(self.drives):
            table = ", ".join(
                f"{float(i)!r},{float(v)!r}" for i, v in zip(idx, u[:, k], strict=True)
            )
            lines.append(f"b_qn_drive{k} {node} 0 v = pwl(v(qn_index), {table})")
        # Tight tolerances: each point starts from its neighbour's solution, so a point's answer
        # moves within the Newton tolerance with its batch-mates; ngspice's default reltol of
        # 1e-3 would make a row depend on its batch at 1e-4, these at about 1e-9.
        lines.append(".options reltol=1e-7 vntol=1e-10 abstol=1e-15")
        lines.append(self.netlist)
        wanted = sorted({x for pair in self._vectors(None) for x in pair if x})
        lines += [
            ".control",
            "set filetype=binary",
            f"dc v_qn_index 0 {max(n - 1, 0)} 1",
            f"write {raw_path} {' '.join(wanted)}",
            "quit",
            ".endc",
            ".end",
        ]
        return "\n".join(lines) + "\n"

    # -- evaluation --------------------------------------------------------------------------

    def evaluate_numpy(self, u: np.ndarray) -> np.ndarray:
        """Evaluate on a float64 array (batch, n_in) → (batch, n_out), honouring ``on_error``.

        Raises:
            SimulatorNotFoundError: If ngspice is not installed.
            SimulationError: With ``on_error="raise"``, if some point does not solve.
        """
        u = np.ascontiguousarray(u, dtype=np.float64).reshape(-1, self.n_in)
        program = find_ngspice(self.ngspice)
        self.n_evaluations += len(u)
        out = np.full((len(u), self.n_out), np.nan)
        if len(u) == 0:
            return out
        # Sorted rows make neighbouring operating points close, so that each solve starts near
        # its answer (fewer Newton iterations, fewer convergence failures).
        order = np.lexsort(u.T[::-1])
        us = u[order]
        starts = list(range(0, len(us), self.chunk))
        if self.workers == 1 or len(starts) == 1:
            parts = [self._solve(program, us[s : s + self.chunk]) for s in starts]
        else:
            with ThreadPoolExecutor(self.workers) as pool:  # each thread waits on a process
                parts = list(
                    pool.map(lambda s: self._solve(program, us[s : s + self.chunk]), starts)
                )
        out[order] = np.concatenate(parts)
        bad = ~np.isfinite(out).all(axis=1)
        if bad.any() and self.on_error == "raise":
            first = int(np.flatnonzero(bad)[0])
            raise SimulationError(
                f"ngspice found no operating point for device {self.name!r} at "
                f"u={u[first].tolist()} ({int(bad.sum())} of {len(u)} points failed); check the "
                "netlist converges there, or pass on_error='nan' to record the failures as NaN"
            )
        return out

    def _solve(self, program: str, u: np.ndarray) -> np.ndarray:
        """Solve a chunk; a failed run is split in halves, so a bad point costs only itself."""
        try:
            return self._run(program, u)
        except SimulationError:
            if len(u) == 1:
                return np.full((1, self.n_out), np.nan)
            half = len(u) // 2
            return np.concatenate([self._solve(program, u[:half]), self._solve(program, u[half:])])

    def _run(self, program: str, u: np.ndarray) -> np.ndarray:
        self.n_runs += 1
        with tempfile.TemporaryDirectory(prefix="qn-spice-") as tmp:
            cir, raw = Path(tmp) / "batch.cir", Path(tmp) / "out.raw"
            cir.write_text(self.batch_netlist(u, str(raw)))
            try:
                proc = subprocess.run(
                    [program, "-b", str(cir)],
                    capture_output=True,
                    text=True,
                    timeout=self.timeout,
                    cwd=tmp,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise SimulationError(
                    f"ngspice ran past timeout={self.timeout} s on {len(u)} points"
                ) from exc
            if not raw.exists():
                tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
                raise SimulationError(
                    f"ngspice wrote no results for {len(u)} points (exit status "
                    f"{proc.returncode}): {' | '.join(tail)}"
                )
            values = _read_binary_raw(raw.read_bytes())
        if isinstance(self.readout, Transient):
            return self._transient_outputs(values, len(u))
        if self.lanes > 1 and len(u) > 1:
            return self._lanes_outputs(values, len(u))
        out = np.empty((len(u), self.n_out))
        for j, (a, b) in enumerate(self._vectors(None)):
            va = 0.0 if a is None else values[a]
            vb = 0.0 if b is None else values[b]
            col = np.asarray(va - vb, dtype=np.float64)
            if col.size < len(u):
                raise SimulationError(
                    f"ngspice solved {col.size} of {len(u)} operating points (the sweep stopped)"
                )
            out[:, j] = col[: len(u)]
        return out

    def _lanes_outputs(self, values: dict[str, np.ndarray], n: int) -> np.ndarray:
        """The rows of a lanes sweep, lane after lane, in the order of the chunk."""
        k, m = self._lanes_split(n)
        out = np.empty((k * m, self.n_out))
        for lane in range(k):
            for j, (a, b) in enumerate(self._vectors(lane)):
                va = 0.0 if a is None else values[a]
                vb = 0.0 if b is None else values[b]
                col = np.asarray(va - vb, dtype=np.float64)
                if col.size < m:
                    raise SimulationError(
                        f"ngspice solved {col.size} of {m} sweep steps (the sweep stopped)"
                    )
                out[lane * m : (lane + 1) * m, j] = col[:m]
        return out[:n]

    def _transient_outputs(self, values: dict[str, np.ndarray], n: int) -> np.ndarray:
        """Each instance's outputs at the end of, or averaged over, the transient window."""
        tr = self.readout
        assert isinstance(tr, Transient)
        t = values["time"]
        if t.size < 2 or abs(t[-1] - tr.t_stop) > 1e-9 * tr.t_stop:
            raise SimulationError(
                f"ngspice's transient stopped at t={t[-1] if t.size else 0.0:g} s of "
                f"t_stop={tr.t_stop:g} s"
            )
        if tr.at == "mean":
            # the window [t_from, t_stop] on ngspice's own time points, t_from interpolated in
            first = int(np.searchsorted(t, tr.t_from, side="right"))
            tw = np.concatenate([[tr.t_from], t[first:]])
        out = np.empty((n, self.n_out))
        for i in range(n):
            for j, (a, b) in enumerate(self._vectors(i)):
                y = (values[a] if a else 0.0) - (values[b] if b else 0.0)
                y = np.broadcast_to(np.asarray(y, dtype=np.float64), t.shape)
                if tr.at == "final":
                    out[i, j] = y[-1]
                else:
                    yw = np.concatenate([[np.interp(tr.t_from, t, y)], y[first:]])
                    area = float(np.sum((yw[1:] + yw[:-1]) * np.diff(tw)) / 2)
                    out[i, j] = area / (tr.t_stop - tr.t_from)
        return out

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """Evaluate on the CPU; u (batch, n_in) → (batch, n_out) on u's dtype and device."""
        y = self.evaluate_numpy(u.detach().cpu().double().numpy())
        return torch.from_numpy(y).to(dtype=u.dtype, device=u.device)

    def describe(self) -> dict[str, Any]:
        """JSON-ready description, including the netlist and the ngspice settings."""
        d = super().describe()
        d.update(
            netlist=self.netlist,
            drives=list(self.drives),
            outputs=list(self.outputs),
            readout=self.readout if self.readout == "op" else asdict(self.readout),
        )
        return d


def _read_binary_raw(data: bytes) -> dict[str, np.ndarray]:
    """Vectors of a real-valued binary raw file, by lower-case name."""
    marker = b"Binary:\n"
    head, found, body = data.partition(marker)
    if not found:
        raise SimulationError("ngspice's results file has no data section")
    names: list[str] = []
    n_points = 0
    in_vars = False
    for line in head.decode(errors="replace").splitlines():
        if line.startswith("No. Points:"):
            n_points = int(line.split(":")[1])
        elif line.startswith("Variables:"):
            in_vars = True
        elif in_vars and line.strip():
            names.append(line.split()[1].lower())
    expected = n_points * len(names)
    values = np.frombuffer(body, dtype="<f8")
    if values.size < expected:
        raise SimulationError(
            f"ngspice's results file is truncated: {values.size} of {expected} values"
        )
    table = values[:expected].reshape(n_points, len(names))
    return {name: table[:, i] for i, name in enumerate(names)}


# -- built-in circuit neurons ------------------------------------------------------------------

#: A MOS differential pair with resistor loads: tanh-like in the differential input, saturating
#: at ±I_tail·R_L = ±1 V. Level-1 models keep it portable across ngspice versions.
DIFFPAIR_NETLIST = """\
vdd vdd 0 dc 3.3
vcm cm 0 dc 1.5
einp gp cm inp 0 0.5
einn gn cm inp 0 -0.5
rl1 vdd outn 10k
rl2 vdd outp 10k
m1 outn gp tail 0 nmos1 w=5u l=1u
m2 outp gn tail 0 nmos1 w=5u l=1u
itail tail 0 dc 100u
.model nmos1 nmos level=1 vto=0.5 kp=100u lambda=0.02
"""

#: A CMOS inverter. The PMOS is as wide as the NMOS but its carriers are about three times
#: slower (kp), so the switching threshold sits below VDD/2: the transfer curve is asymmetric.
INVERTER_NETLIST = """\
vdd vdd 0 dc 1.8
mp out in vdd vdd pmos1 w=2u l=0.5u
mn out in 0 0 nmos1 w=2u l=0.5u
.model nmos1 nmos level=1 vto=0.45 kp=120u lambda=0.05
.model pmos1 pmos level=1 vto=-0.45 kp=40u lambda=0.08
"""


def spice_diffpair(**options: Any) -> SpiceDevice:
    """A MOS differential-pair neuron: drive = differential input (V), output = v(outp, outn).

    Tanh-like: odd, saturating at about ±1 V, nearly linear over about ±0.5 V. Domain [-1.5, 1.5] V.
    ``options`` go to :class:`SpiceDevice` (``chunk``, ``workers``, ``ngspice``, ...).
    """
    options.setdefault("name", "spice-diffpair")
    options.setdefault("domain", Box(low=(-1.5,), high=(1.5,)))
    return SpiceDevice(DIFFPAIR_NETLIST, drives=("inp",), outputs=("v(outp,outn)",), **options)


def spice_inverter(**options: Any) -> SpiceDevice:
    """A CMOS inverter neuron: drive = input voltage (V), output = v(out) (V), supply 1.8 V.

    Falling, with its switching threshold below mid-supply (a weaker PMOS): not an odd
    function. Domain [0, 1.8] V. ``options`` go to :class:`SpiceDevice`.
    """
    options.setdefault("name", "spice-inverter")
    options.setdefault("domain", Box(low=(0.0,), high=(1.8,)))
    return SpiceDevice(INVERTER_NETLIST, drives=("in",), outputs=("v(out)",), **options)
