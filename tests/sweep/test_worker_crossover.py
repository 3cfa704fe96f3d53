"""Worker processes only where they pay: ``workers=N`` starts them once the sweep proves long."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from sweep_helpers import Elementwise

from quasineuron.sweep import Grid, ProcessExecutor, SerialExecutor, sweep
from quasineuron.sweep.executors import AutoExecutor

GRID = Grid(n=(6, 4))  # 24 points


class PidLogged(Elementwise):
    """Elementwise, appending the id of the process of every call to the file ``pids``."""

    def __init__(self, pids: str | os.PathLike[str], *, delay: float = 0.0) -> None:
        super().__init__(delay=delay)
        self.pids = str(pids)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        with open(self.pids, "a") as f:
            f.write(f"{os.getpid()}\n")
        return super().forward(u)


def _pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()]


def test_cheap_device_with_workers_runs_serially_and_says_so(tmp_path, capsys):
    from quasineuron.pipeline import characterize  # not at the top: workers import this module

    pids = tmp_path / "pids"
    res = characterize(
        PidLogged(pids),
        tmp_path / "out",
        sampler=GRID,
        batch_size=4,
        workers=2,
        twin_kind="spline",
        progress=False,
    )
    assert set(_pids(pids)) == {os.getpid()}  # no batch left this process
    choice = res.report["sweep"]["workers"]
    assert choice["mode"] == "serial" and choice["batches_in_process"] == 6
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ran serially" in err[0] and "--force-workers" in err[0]


def test_auto_executor_never_starts_workers_for_batches_cheaper_than_sending_them():
    decisions = []
    ex = AutoExecutor(
        2, start_cost_s=0.0, min_batch_s=10.0, on_decision=lambda *a: decisions.append(a)
    )
    out = dict(ex.map_unordered(abs, ((i, -i) for i in range(50))))  # abs: not worth a process
    assert out == {i: i for i in range(50)}
    assert [info["mode"] for _, info in decisions] == ["serial"]


@pytest.mark.slow  # starts two worker processes (interpreter + torch each)
def test_slow_device_moves_to_workers_with_the_same_table(tmp_path):
    pids = tmp_path / "pids"
    decisions = []
    # 0.05 s per batch of 2 points; workers once 2 * 0.1 s were spent here (about 4 batches)
    ex = AutoExecutor(
        2, start_cost_s=0.1, min_batch_s=0.0, on_decision=lambda *a: decisions.append(a)
    )
    t = sweep(
        PidLogged(pids, delay=0.05),
        GRID,
        store=tmp_path / "s",
        batch_size=2,
        executor=ex,
        progress=False,
    )
    ref = sweep(
        Elementwise(),
        GRID,
        store=tmp_path / "ref",
        batch_size=2,
        executor=SerialExecutor(),
        progress=False,
    )
    np.testing.assert_array_equal(t.u, ref.u)
    np.testing.assert_array_equal(t.y, ref.y)
    [(line, info)] = decisions
    assert info["mode"] == "processes" and "moved to 2 worker processes" in line
    k = info["batches_in_process"]
    assert 4 <= k <= 6 and info["in_process_s"] >= 0.2
    seen = _pids(pids)
    assert seen[:k] == [os.getpid()] * k  # timed in this process first
    assert len(seen) == 12 and os.getpid() not in seen[k:]  # the rest in workers


@pytest.mark.slow  # starts two worker processes (interpreter + torch each)
def test_forced_workers_start_processes_for_a_cheap_device(tmp_path, capsys):
    from quasineuron.pipeline import characterize

    pids = tmp_path / "pids"
    res = characterize(
        PidLogged(pids),
        tmp_path / "out",
        sampler=GRID,
        batch_size=4,
        workers=2,
        force_workers=True,
        twin_kind="spline",
        progress=False,
    )
    sweep_pids = _pids(pids)[:6]  # the twin's check points run here afterwards
    assert os.getpid() not in sweep_pids
    assert res.report["sweep"]["workers"] == {
        "mode": "processes",
        "n_workers": 2,
        "reason": "forced",
    }
    assert "ran serially" not in capsys.readouterr().err


def test_auto_executor_validates():
    with pytest.raises(ValueError, match="n_workers must be >= 1"):
        AutoExecutor(0)
    with pytest.raises(ValueError, match="start_cost_s must be a finite number"):
        AutoExecutor(2, start_cost_s=float("inf"))
    assert isinstance(ProcessExecutor(1), ProcessExecutor)
