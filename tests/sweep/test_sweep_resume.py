import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from sweep_helpers import Elementwise, read_log

from quasineuron.sweep import Grid, ProcessExecutor, Random, SweepTable, sweep
from quasineuron.sweep.executors import AbstractExecutor

HERE = Path(__file__).resolve().parent
GRID = Grid(n=(20, 10))  # 200 distinct points, 20 chunks of 10
SCRIPT = """
import sys
from sweep_helpers import Elementwise
from quasineuron.sweep import Grid, sweep
sweep(Elementwise(delay=0.05, log=sys.argv[1]), Grid(n=(20, 10)), store=sys.argv[2],
      batch_size=10, progress=False)
"""


def assert_tables_equal(a, b):
    np.testing.assert_array_equal(a.u, b.u)
    np.testing.assert_array_equal(a.y, b.y)
    np.testing.assert_array_equal(a.status, b.status)
    assert a.errors == b.errors


@pytest.mark.slow  # a fresh interpreter importing torch: 3-7 s on 2 busy cores
def test_sigkilled_sweep_resumes_to_the_uninterrupted_result(tmp_path):
    store, log_killed, log_resumed = tmp_path / "s", tmp_path / "a.log", tmp_path / "b.log"
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(log_killed), str(store)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    commits = store / "commits"
    try:
        while not (commits.is_dir() and len(list(commits.glob("*.json"))) >= 4):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"sweep subprocess ended early or hung: {proc.stderr.read().decode()}")
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    committed = {int(p.stem) for p in commits.glob("*.json")}
    assert 4 <= len(committed) < 20, committed
    ref = sweep(Elementwise(), GRID, batch_size=10, progress=False)
    rows = [tuple(r) for r in ref.u]
    committed_rows = Counter(r for c in committed for r in rows[10 * c : 10 * c + 10])
    todo_rows = Counter(rows) - committed_rows

    resumed = sweep(Elementwise(log=log_resumed), GRID, store=store, batch_size=10, progress=False)
    assert_tables_equal(ref, resumed)
    assert_tables_equal(ref, SweepTable.open(store))
    # after resume, exactly the uncommitted points were evaluated, each once
    assert Counter(read_log(log_resumed)) == todo_rows
    # before the kill, every committed point was evaluated once; at most one batch more was
    # in flight (its chunk is recomputed above, the only points evaluated twice overall)
    killed = Counter(read_log(log_killed))
    assert killed - committed_rows == killed - committed_rows & todo_rows
    assert max(killed.values()) == 1 and killed & committed_rows == committed_rows
    assert sum((killed - committed_rows).values()) <= 10


class StopAfter(AbstractExecutor):
    """Serial, but interrupted after `n` batches, like a killed run."""

    def __init__(self, n):
        self.n = n

    def map_unordered(self, fn, items):
        for k, (i, arg) in enumerate(items):
            if k == self.n:
                raise KeyboardInterrupt
            yield i, fn(arg)


@pytest.mark.slow  # spawning 2 workers that import torch takes ~10 s on 2 busy cores
def test_process_executor_matches_serial_and_resumes(tmp_path):
    sampler = Random(n=60, seed=5)
    ref = sweep(Elementwise(), sampler, batch_size=7, progress=False)
    with pytest.raises(KeyboardInterrupt):
        sweep(
            Elementwise(),
            sampler,
            store=tmp_path / "s",
            batch_size=7,
            executor=StopAfter(3),
            progress=False,
        )
    log = tmp_path / "log"
    t = sweep(
        Elementwise(log=log),
        sampler,
        store=tmp_path / "s",
        batch_size=7,
        executor=ProcessExecutor(n_workers=2),
        progress=False,
    )
    assert_tables_equal(ref, t)
    assert Counter(read_log(log)) == Counter(tuple(r) for r in ref.u[21:])


@pytest.mark.parametrize("n", [0, -1])
def test_process_executor_validates(n):
    with pytest.raises(ValueError, match="n_workers must be >= 1"):
        ProcessExecutor(n_workers=n)
