import os
import signal
import threading
import time
from collections import Counter

import numpy as np
import pytest
from scale_helpers import SlowBlackBox, read_log

from quasineuron.sweep import DaskExecutor, Grid, sweep

GRID = Grid(n=(12, 10))  # 120 distinct points, 15 chunks of 8


def assert_tables_equal(a, b):
    np.testing.assert_array_equal(a.u, b.u)
    np.testing.assert_array_equal(a.y, b.y)
    np.testing.assert_array_equal(a.status, b.status)
    assert a.errors == b.errors


def test_dask_executor_rejects_ambiguous_targets():
    with pytest.raises(ValueError, match="not both"):
        DaskExecutor("tcp://127.0.0.1:1", client=object())
    with pytest.raises(ValueError, match="local_workers"):
        DaskExecutor("tcp://127.0.0.1:1", local_workers=2)
    with pytest.raises(ValueError, match="max_in_flight"):
        DaskExecutor(max_in_flight=0)
    assert DaskExecutor(local_workers=3).describe() == {"kind": "DaskExecutor", "local_workers": 3}


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    # Shared by this module's tests: starting two worker processes that import torch costs
    # several seconds on 2 cores. The worker-killing test runs last; the nannies restart the
    # workers it kills.
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    )
    c = distributed.Client(cluster, set_as_default=False)
    try:
        c.wait_for_workers(2, timeout=60)
        yield c
    finally:
        c.close()
        cluster.close(timeout=20)


@pytest.mark.slow  # local cluster start: two interpreters importing torch
def test_dask_sweep_equals_serial_sweep_and_resumes(client, tmp_path, time_limit):
    dev = SlowBlackBox()
    serial = sweep(dev, GRID, batch_size=8, progress=False)
    ex = DaskExecutor(client=client)
    store = tmp_path / "s"
    table = sweep(dev, GRID, batch_size=8, progress=False, executor=ex, store=store)
    assert_tables_equal(table, serial)
    log = tmp_path / "again.log"  # a resumed, complete sweep evaluates nothing
    again = sweep(
        SlowBlackBox(log=log), GRID, batch_size=8, progress=False, executor=ex, store=store
    )
    assert_tables_equal(again, serial)
    assert read_log(log) == []
    assert client.status == "running"  # a given client is left open


@pytest.mark.slow
def test_dask_sweep_survives_losing_every_worker_that_holds_the_device(
    client, tmp_path, time_limit
):
    log = tmp_path / "eval.log"
    dev = SlowBlackBox(delay=0.01, log=log)  # 80 ms per 8-point batch, ~0.6 s per worker
    victims = sorted(client.run(os.getpid).values())
    killed = threading.Event()

    def kill_when_started():
        deadline = time.monotonic() + 30
        while len(read_log(log)) < 24 and time.monotonic() < deadline:
            time.sleep(0.005)
        # Every worker at once, so no copy of the scattered device survives; the nannies
        # start fresh workers, which hold nothing.
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        killed.set()

    killer = threading.Thread(target=kill_when_started, daemon=True)
    killer.start()
    table = sweep(dev, GRID, batch_size=8, progress=False, executor=DaskExecutor(client=client))
    killer.join(timeout=30)
    assert killed.is_set()
    assert_tables_equal(table, sweep(SlowBlackBox(), GRID, batch_size=8, progress=False))
    # Nothing lost: every point was evaluated; nothing duplicated beyond the batches that were
    # running on the killed workers (re-run once the device was sent again).
    counts = Counter(read_log(log))
    expected = {tuple(r) for r in table.u}
    assert set(counts) == expected
    assert sum(counts.values()) - len(expected) <= 8 * len(victims)
