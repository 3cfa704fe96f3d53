"""Damage, hangs, races and kills around a sweep store: each is detected or survived."""

from __future__ import annotations

import faulthandler
import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from quasineuron.devices.base import AbstractDevice, Box
from quasineuron.errors import IntegrityError, QuasineuronWarning, StoreCorruptError
from quasineuron.sweep import DaskExecutor, Grid, PointStatus, SweepTable, sweep

HERE = Path(__file__).resolve().parent
SWEEP_TESTS = HERE.parent / "sweep"
GRID = Grid(n=(5, 4))  # 20 points, 5 chunks of 4


class Smooth(AbstractDevice):
    """y = (sin(u0) * u1, u0 + u1**2); elementwise, so bit-reproducible in any process."""

    n_in = 2
    n_out = 2
    differentiable = True

    def __init__(self) -> None:
        super().__init__()
        self.domain = Box(low=(-1.0, 0.0), high=(1.0, 2.0))
        self.name = "smooth"

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.sin(u[:, 0]) * u[:, 1], u[:, 0] + u[:, 1] ** 2], dim=-1)


class HangsAbove(AbstractDevice):
    """y = 2 u, but a call holding a drive above ``threshold`` never returns.

    A call holding a drive below ``crash_below`` ends its process at once, as a segfault in a
    native solver would.
    """

    n_in = 1
    n_out = 1
    differentiable = False

    def __init__(self, threshold: float, crash_below: float = -math.inf) -> None:
        super().__init__()
        self.domain = Box(low=(-1.0,), high=(1.0,))
        self.name = "hangs-above"
        self.threshold = threshold
        self.crash_below = crash_below

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        if (u < self.crash_below).any():
            os._exit(3)
        if (u > self.threshold).any():
            time.sleep(3600)
        return 2 * u


def committed_sweep(path: Path) -> SweepTable:
    return sweep(Smooth(), GRID, store=path, batch_size=4, progress=False)


def flip_byte(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def assert_tables_equal(a: SweepTable, b: SweepTable) -> None:
    np.testing.assert_array_equal(a.u, b.u)
    np.testing.assert_array_equal(a.y, b.y)
    np.testing.assert_array_equal(a.status, b.status)
    assert a.errors == b.errors


# -- integrity ---------------------------------------------------------------------------------


@pytest.mark.parametrize("array", ["u", "y", "status"])
def test_deleted_chunk_with_its_commit_record_is_an_error_naming_the_file(tmp_path, array):
    store = tmp_path / "s"
    committed_sweep(store)
    victim = store / "table.zarr" / array / "c" / "2"
    victim = victim / "0" if victim.is_dir() else victim
    victim.unlink()
    for read in (lambda: SweepTable.open(store), lambda: committed_sweep(store)):
        with pytest.raises(IntegrityError, match=f"chunk 2 .*{victim}.* missing") as info:
            read()
        assert "repair=True" in str(info.value)  # the message says how to recover


def test_flipped_byte_in_a_chunk_is_an_error_naming_the_file(tmp_path):
    store = tmp_path / "s"
    ref = committed_sweep(store)
    victim = store / "table.zarr" / "y" / "c" / "3" / "0"
    flip_byte(victim, len(victim.read_bytes()) - 3)
    with pytest.raises(IntegrityError, match=f"chunk 3 .*{victim}.* SHA-256"):
        SweepTable.open(store)
    # repair drops that one commit record; the resume recomputes exactly that chunk
    with pytest.warns(QuasineuronWarning, match="chunk 3 was damaged"):
        repaired = sweep(Smooth(), GRID, store=store, batch_size=4, progress=False, repair=True)
    assert_tables_equal(repaired, ref)
    assert_tables_equal(SweepTable.open(store), ref)


def test_unreadable_commit_record_is_an_error_and_repair_recomputes_its_chunk(tmp_path):
    store = tmp_path / "s"
    ref = committed_sweep(store)
    record = store / "commits" / "000000001.json"
    record.write_text(record.read_text()[:-20])  # torn by hand: a crash never leaves this
    with pytest.raises(IntegrityError, match=f"commit record {record} is unreadable"):
        SweepTable.open(store)
    with pytest.warns(QuasineuronWarning, match="000000001.json was unreadable"):
        repaired = sweep(Smooth(), GRID, store=store, batch_size=4, progress=False, repair=True)
    assert_tables_equal(repaired, ref)


def test_flipped_byte_in_the_manifest_is_an_error(tmp_path):
    store = tmp_path / "s"
    committed_sweep(store)
    manifest = store / "manifest.json"
    text = manifest.read_text()
    # A digit of the creation time: the file stays valid JSON, only the digest can tell.
    at = text.index('"created": "') + len('"created": "') + 3
    flip_byte(manifest, at)
    json.loads(manifest.read_text())
    with pytest.raises(IntegrityError, match="manifest.json does not match its digest"):
        SweepTable.open(store)
    with pytest.raises(StoreCorruptError, match="manifest"):
        committed_sweep(store)


def test_store_without_digests_is_read_and_still_checked_for_missing_chunks(tmp_path):
    store = tmp_path / "s"
    ref = committed_sweep(store)
    # Turn it into a store of format version 1: no manifest digest, no chunk digests.
    manifest = json.loads((store / "manifest.json").read_text())
    del manifest["manifest_sha256"]
    manifest["format_version"] = 1
    (store / "manifest.json").write_text(json.dumps(manifest))
    for rec_path in (store / "commits").glob("*.json"):
        rec = json.loads(rec_path.read_text())
        del rec["sha256"]
        rec_path.write_text(json.dumps(rec))
    assert_tables_equal(SweepTable.open(store), ref)
    victim = store / "table.zarr" / "y" / "c" / "1" / "0"
    victim.unlink()
    with pytest.raises(IntegrityError, match=f"chunk 1 .*{victim}.* missing"):
        SweepTable.open(store)


def test_store_killed_during_creation_is_recreated(tmp_path):
    store = tmp_path / "s"
    (store / "table.zarr" / "u").mkdir(parents=True)  # a table, no manifest, no commits
    table = committed_sweep(store)
    assert_tables_equal(table, sweep(Smooth(), GRID, batch_size=4, progress=False))


# -- timeouts ----------------------------------------------------------------------------------


@pytest.mark.slow  # each killed worker is replaced by a fresh interpreter importing torch
def test_hung_points_time_out_and_the_sweep_completes(tmp_path):
    # Without working timeouts this test would hang: abort it with a traceback instead.
    faulthandler.dump_traceback_later(120, exit=True)
    grid = Grid(n=10)  # -1, -7/9, ..., 7/9, 1: u = 1 (point 9) hangs, u = -1 (point 0) crashes
    dev = HangsAbove(0.9, crash_below=-0.9)
    t0 = time.monotonic()
    table = sweep(dev, grid, store=tmp_path / "s", batch_size=4, progress=False, timeout=0.5)
    elapsed = time.monotonic() - t0
    assert np.flatnonzero(table.status == PointStatus.TIMEOUT).tolist() == [9]
    assert table.errors[9] == "TimeoutError: timed out after 0.5 s"
    assert np.flatnonzero(table.status == PointStatus.ERROR).tolist() == [0]
    assert table.errors[0].startswith("WorkerDied: worker process ended with exit code 3")
    assert (table.status[1:9] == PointStatus.OK).all() and table.n_failed == 2
    # points 1-3 and 8 share a batch with a bad point and still have their values
    np.testing.assert_array_equal(table.y[1:9, 0], 2 * table.u[1:9, 0])
    assert elapsed < 60, elapsed
    assert_tables_equal(SweepTable.open(tmp_path / "s"), table)
    faulthandler.cancel_dump_traceback_later()


def test_timeout_is_checked_where_it_enters():
    for bad in (0, -1.0, float("inf"), "10", True):
        with pytest.raises(ValueError, match="timeout must be a positive number"):
            sweep(Smooth(), GRID, progress=False, timeout=bad)
    with pytest.raises(ValueError, match="timeout works with SerialExecutor or ProcessExecutor"):
        sweep(Smooth(), GRID, progress=False, timeout=1, executor=DaskExecutor(local_workers=1))


# -- processes ---------------------------------------------------------------------------------


def _env(marker: str = "") -> dict[str, str]:
    path = os.pathsep.join([str(HERE), str(SWEEP_TESTS), os.environ.get("PYTHONPATH", "")])
    return dict(os.environ, PYTHONPATH=path, QN_FAULT_TEST_MARKER=marker)


CONCURRENT = """
import sys, time
from pathlib import Path
from test_sweep_faults import GRID, Smooth
from quasineuron.sweep import sweep
go = Path(sys.argv[2])
Path(sys.argv[3]).touch()
while not go.exists():
    time.sleep(0.001)
t = sweep(Smooth(), GRID, store=sys.argv[1], batch_size=4, progress=False)
print(t.y.tobytes().hex())
"""


@pytest.mark.slow  # two fresh interpreters importing torch
def test_two_processes_creating_one_store_at_once_both_finish_with_the_same_table(tmp_path):
    store, go = tmp_path / "s", tmp_path / "go"
    ready = [tmp_path / "ready0", tmp_path / "ready1"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT, str(store), str(go), str(r)],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in ready
    ]
    deadline = time.monotonic() + 60
    while not all(r.exists() for r in ready) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()  # both start creating the store within a millisecond
    outs = [p.communicate(timeout=60) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    ref = sweep(Smooth(), GRID, batch_size=4, progress=False)
    assert outs[0][0].strip() == outs[1][0].strip() == ref.y.tobytes().hex()
    assert_tables_equal(SweepTable.open(store), ref)


ORPHANS = """
import sys
from sweep_helpers import Elementwise
from quasineuron.sweep import Grid, ProcessExecutor, sweep
timeout = None if sys.argv[3] == "none" else float(sys.argv[3])
sweep(Elementwise(delay=60, log=sys.argv[1]), Grid(n=(4, 4)), batch_size=4, progress=False,
      executor=ProcessExecutor(n_workers=2), store=sys.argv[2], timeout=timeout)
"""


def _marked_pids(marker: str) -> list[int]:
    """Live processes whose environment holds ``marker`` (zombies have no environment)."""
    needle = f"QN_FAULT_TEST_MARKER={marker}".encode()
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    out.append(int(entry.name))
            except OSError:
                continue
    return out


@pytest.mark.slow  # a fresh interpreter plus two workers importing torch
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("timeout", ["none", "600"])  # the process pool, the killable pool
def test_killing_the_main_process_takes_its_workers_with_it(tmp_path, timeout):
    marker, log = uuid.uuid4().hex, tmp_path / "eval.log"
    proc = subprocess.Popen(
        [sys.executable, "-c", ORPHANS, str(log), str(tmp_path / "s"), timeout],
        env=_env(marker),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        # both workers are inside a 60 s device call once two batches (8 rows) are logged
        while not (log.exists() and log.read_text().count("\n") >= 8):
            assert proc.poll() is None and time.monotonic() < deadline, "sweep did not start"
            time.sleep(0.01)
        assert len(_marked_pids(marker)) >= 3  # main and two workers
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 10
    while _marked_pids(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = _marked_pids(marker)
    for pid in left:  # do not leave them running if the check fails
        os.kill(pid, signal.SIGKILL)
    assert left == []
