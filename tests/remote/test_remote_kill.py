"""A physics-aware run through the device server, killed for real (SIGKILL) and run again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import quasineuron as qn
from quasineuron.devices.base import AbstractDevice
from quasineuron.devices.remote import DeviceServer

# The run that gets killed: physics-aware training on digits through RemoteDevice with a call
# record, in its own process. Everything in it is seeded, so a rerun sends the same drives
# until it reaches the first batch the killed run did not record.
RUN = """
import sys

import torch

import quasineuron as qn
from quasineuron.devices.remote import CallPolicy, RemoteDevice

torch.set_num_threads(1)  # the same arithmetic in both runs, so the same drives
url, record = sys.argv[1], sys.argv[2]
dev = qn.make_device("tanh")
twin = qn.fit_surrogate(qn.sweep(dev, qn.Grid(41), progress=False), kind="spline").model
remote = RemoteDevice(url, policy=CallPolicy(batch_size=4096, retries=20, backoff=0.001),
                      record=record)
train, test = qn.load_digits()
train = train.subset(range(256))
net = qn.DeviceNetwork(remote, (64, 16, 10), twin=twin, seed=0)
result = qn.train(net, train, mode=qn.PhysicsAware(), epochs=2, batch_size=64, lr=1e-2, seed=0,
                  progress=False)
with torch.no_grad():
    pred = result.network(test.x.float(), mode=qn.Surrogate()).argmax(1)
print("accuracy", float((pred == test.y).float().mean()), flush=True)
"""


class _Served(AbstractDevice):
    """tanh that keeps every row it evaluates, so the test sees what was measured."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = qn.make_device("tanh")
        self.n_in, self.n_out, self.domain, self.name = 1, 1, self.inner.domain, "served-tanh"
        self.rows: list[bytes] = []

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        self.rows.extend(r.tobytes() for r in u.detach().double().numpy())
        return self.inner(u)


def _recorded_rows(record: Path) -> set[bytes]:
    rows: set[bytes] = set()
    for line in record.read_bytes().split(b"\n"):
        try:
            entry = json.loads(line)
        except ValueError:  # empty, or the line the kill cut off: not recorded
            continue
        rows.update(np.asarray(r, dtype=np.float64).tobytes() for r in entry["u"])
    return rows


def _complete_lines(record: Path) -> int:
    if not record.exists():
        return 0
    return record.read_bytes().count(b"\n")


@pytest.mark.slow  # two Python processes that import torch, and 50 ms per device call
def test_a_killed_remote_run_resumes_without_measuring_a_recorded_batch_again(
    tmp_path: Path,
) -> None:
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(RUN))
    record = tmp_path / "device-calls.jsonl"
    served = _Served()
    with DeviceServer(served, latency=0.05, failure_rate=0.01, noise_std=0.01, seed=0) as server:
        cmd = [sys.executable, str(script), server.url, str(record)]
        first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 120
            # kill it once a few calls are on record: the run has about 20 to make
            while _complete_lines(record) < 4:
                assert first.poll() is None, first.communicate()[1].decode()[-2000:]
                assert time.monotonic() < deadline, "the first run recorded no calls in 120 s"
                time.sleep(0.01)
            os.kill(first.pid, signal.SIGKILL)
        finally:
            if first.poll() is None:
                first.kill()
            first.communicate(timeout=30)
        assert first.returncode == -signal.SIGKILL
        recorded = _recorded_rows(record)
        assert len(recorded) > 0
        served_first = len(served.rows)
        served.rows.clear()

        second = subprocess.run(cmd, capture_output=True, timeout=300, check=False)
        assert second.returncode == 0, second.stderr.decode()[-3000:]
        assert b"accuracy" in second.stdout
        rows_second = list(served.rows)
    # the rerun measured what the killed run had not recorded, and nothing it had
    assert rows_second, "the rerun measured nothing new"
    again = recorded.intersection(rows_second)
    assert not again, f"{len(again)} recorded drive rows were measured again"
    # every row the server evaluated in the rerun is now on record, and the record holds the
    # killed run's rows too: nothing measured was lost
    assert set(rows_second) <= _recorded_rows(record)
    assert recorded <= _recorded_rows(record)
    assert served_first >= len(recorded)
