"""Devices elsewhere: the device server, its client, and the link's cache, retries and record."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import quasineuron as qn
from quasineuron.devices.instrument import InstrumentDevice, SimulatedInstrument
from quasineuron.devices.remote import CallPolicy, DeviceLink, DeviceServer, RemoteDevice
from quasineuron.errors import DeviceBudgetError, DeviceCallError, QuasineuronWarning

FAST = CallPolicy(batch_size=64, retries=20, backoff=0.001, timeout=5.0)


def test_a_served_device_answers_as_the_device_and_repeats_come_from_the_cache() -> None:
    dev = qn.make_device("tanh")
    with DeviceServer(dev) as server:
        remote = RemoteDevice(server.url, policy=FAST)
        assert (remote.n_in, remote.n_out, remote.domain) == (1, 1, dev.domain)
        u = torch.linspace(-3, 3, 150, dtype=torch.float64)[:, None]
        torch.testing.assert_close(remote(u), torch.tanh(u), rtol=0, atol=0)
        assert server.n_requests == 3  # 150 rows in batches of 64
        remote(u.flip(0))  # the same drives in another order: nothing measured
        assert server.n_requests == 3 and remote.link.n_cache_hits == 150
        assert qn.check_device(remote).ok


def test_failed_calls_are_retried_and_counted() -> None:
    with DeviceServer(qn.make_device("tanh"), failure_rate=0.3, seed=3) as server:
        remote = RemoteDevice(server.url, policy=FAST)
        u = torch.linspace(-3, 3, 640, dtype=torch.float64)[:, None]
        torch.testing.assert_close(remote(u), torch.tanh(u))
        assert remote.link.n_failures > 0
        assert remote.link.n_calls == 10 + remote.link.n_failures == server.n_requests


def test_a_batch_that_keeps_failing_raises_after_its_retries() -> None:
    link = DeviceLink(_always_fails, n_in=1, n_out=1, policy=CallPolicy(retries=2, backoff=0.001))
    with pytest.raises(DeviceCallError, match="failed 3 times; last error: OSError: unplugged"):
        link(np.zeros((4, 1)))
    assert link.n_calls == 3


def _always_fails(u: np.ndarray, timeout: float) -> np.ndarray:
    raise OSError("unplugged")


def test_a_slow_device_times_out() -> None:
    with DeviceServer(qn.make_device("tanh"), latency=1.0) as server:
        remote = RemoteDevice(server.url, policy=CallPolicy(timeout=0.5, retries=0))
        start = time.perf_counter()
        with pytest.raises(DeviceCallError, match="timed out"):
            remote(torch.zeros(2, 1))
        assert time.perf_counter() - start < 0.9


def test_the_budget_counts_every_attempt_and_cache_hits_cost_nothing() -> None:
    link = DeviceLink(_square, n_in=1, n_out=1, policy=CallPolicy(batch_size=2, max_calls=2))
    link(np.arange(4.0)[:, None])  # two calls: the whole budget
    link(np.arange(4.0)[:, None])  # all cached: free
    with pytest.raises(DeviceBudgetError, match="budget of 2 calls is spent"):
        link(np.array([[9.0]]))


def _square(u: np.ndarray, timeout: float) -> np.ndarray:
    return u**2


def test_a_link_on_an_existing_record_measures_nothing_recorded(tmp_path: Path) -> None:
    record = tmp_path / "calls.jsonl"
    first = DeviceLink(_square, n_in=1, n_out=1, policy=CallPolicy(batch_size=3), record=record)
    u = np.random.default_rng(0).normal(size=(7, 1))
    y = first(u)
    assert len(record.read_text().splitlines()) == 3  # one line per call
    again = DeviceLink(_never_called, n_in=1, n_out=1, record=record)
    np.testing.assert_array_equal(again(u), y)  # float64 round-trips exactly through the record
    assert again.n_calls == 0


def _never_called(u: np.ndarray, timeout: float) -> np.ndarray:
    raise AssertionError(f"measured {len(u)} rows already in the record")


def test_a_line_cut_off_by_a_kill_is_dropped_and_measured_again(tmp_path: Path) -> None:
    record = tmp_path / "calls.jsonl"
    DeviceLink(_square, n_in=1, n_out=1, policy=CallPolicy(batch_size=2), record=record)(
        np.arange(4.0)[:, None]
    )
    text = record.read_text()
    record.write_text(text[: len(text) - 9])  # the second line, half written
    with pytest.warns(QuasineuronWarning, match="last line is incomplete"):
        link = DeviceLink(_square, n_in=1, n_out=1, record=record)
    link(np.arange(4.0)[:, None])
    assert link.n_rows_measured == 2  # the lost batch only
    assert [json.loads(x)["u"] for x in record.read_text().splitlines()] == [
        [[0.0], [1.0]],
        [[2.0], [3.0]],
    ]


def test_simulated_instrument_behind_the_same_link(tmp_path: Path) -> None:
    inst = SimulatedInstrument(lambda s: np.tanh(s), n_in=1, fail_every=7)
    dev = InstrumentDevice(
        inst,
        set_drive=("SOUR1:VOLT {value}",),
        read_output=("MEAS1?",),
        domain=qn.Box((-2.0,), (2.0,)),
        policy=CallPolicy(batch_size=4, backoff=0.001),
        record=tmp_path / "inst.jsonl",
    )
    u = torch.linspace(-2, 2, 20, dtype=torch.float64)[:, None]
    torch.testing.assert_close(dev(u), torch.tanh(u), atol=1e-8, rtol=0)
    assert dev.link.n_failures > 0  # every 7th reading timed out and its batch was retried


def test_a_visa_instrument_simulated_by_pyvisa_sim() -> None:
    pytest.importorskip("pyvisa_sim", reason="needs pyvisa-sim (pip install 'quasineuron[remote]')")
    # pyvisa-sim's built-in instrument stores an amplitude to 2 decimals and reads it back,
    # acknowledging every set command with "OK"
    dev = InstrumentDevice(
        "ASRL1::INSTR",
        visa_backend="@sim",
        set_drive=("!AMP {value:.2f}",),
        read_output=("?AMP",),
        acknowledged=True,
        domain=qn.Box((0.0,), (10.0,)),
    )
    u = torch.tensor([[0.5], [2.25], [7.0], [2.25]], dtype=torch.float64)
    torch.testing.assert_close(dev(u), u)
    assert dev.link.n_rows_measured == 3


# ---------------------------------------------------------------------------------------------
# physics-aware training with the device behind the server
# ---------------------------------------------------------------------------------------------


def _twin() -> torch.nn.Module:
    dev = qn.make_device("tanh")
    return qn.fit_surrogate(qn.sweep(dev, qn.Grid(41), progress=False), kind="spline").model


class _Killed(BaseException):
    """Not an Exception: like a kill, no retry may catch it."""


class _KillAfter:
    """A transport that dies (as a killed process would) after ``calls`` successful calls."""

    def __init__(self, inner: object, calls: int) -> None:
        self.inner, self.left = inner, calls

    def __call__(self, u: np.ndarray, timeout: float) -> np.ndarray:
        if self.left == 0:
            raise _Killed
        self.left -= 1
        return self.inner(u, timeout)  # type: ignore[operator]


def _train(remote: RemoteDevice, twin: torch.nn.Module) -> float:
    train, test = qn.load_digits()
    train = train.subset(range(320)) if hasattr(train, "subset") else train
    net = qn.DeviceNetwork(remote, (64, 16, 10), twin=twin, seed=0)
    result = qn.train(
        net,
        train,
        mode=qn.PhysicsAware(),
        epochs=1,
        batch_size=64,
        lr=1e-2,
        seed=0,
        progress=False,
    )
    with torch.no_grad():
        pred = result.network(test.x.float(), mode=qn.Surrogate()).argmax(1)
    return float((pred == test.y).float().mean())


@pytest.mark.slow  # about 7 s on 2 cores: two short trainings on digits through HTTP
def test_physics_aware_training_through_a_slow_failing_noisy_server_resumes_from_its_record(
    tmp_path: Path,
) -> None:
    twin = _twin()
    record = tmp_path / "device-calls.jsonl"
    policy = CallPolicy(batch_size=4096, retries=20, backoff=0.001)
    with DeviceServer(
        qn.make_device("tanh"), latency=0.01, failure_rate=0.01, noise_std=0.01, seed=0
    ) as server:
        # the first run is killed after 5 device calls
        first = RemoteDevice(server.url, policy=policy, record=record)
        first.link.transport = _KillAfter(first.link.transport, 5)
        with pytest.raises(_Killed):
            _train(first, twin)
        recorded = {
            np.asarray(r, dtype=np.float64).tobytes()
            for line in record.read_text().splitlines()
            for r in json.loads(line)["u"]
        }
        assert len(record.read_text().splitlines()) == 5
        # the second run starts again from the same seed on the same record
        second = RemoteDevice(server.url, policy=policy, record=record)
        sent: list[np.ndarray] = []
        inner = second.link.transport

        def spy(u: np.ndarray, timeout: float) -> np.ndarray:
            sent.append(u.copy())
            return inner(u, timeout)

        second.link.transport = spy
        acc = _train(second, twin)
    assert sent, "the second run measured nothing new"
    assert not any(row.tobytes() in recorded for u in sent for row in u)
    assert second.link.n_cache_hits >= len(recorded)
    assert acc > 0.3  # it learned (chance is 0.1) despite latency, failures and noise


def test_in_flight_batches_wait_on_the_device_together() -> None:
    import threading

    lock, state = threading.Lock(), {"now": 0, "most": 0}

    def slow(u: np.ndarray, timeout: float) -> np.ndarray:
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        return u * 2

    link = DeviceLink(slow, n_in=1, n_out=1, policy=CallPolicy(batch_size=2, in_flight=4))
    u = np.arange(16.0)[:, None]
    np.testing.assert_array_equal(link(u), u * 2)
    assert link.n_calls == 8
    assert 1 < state["most"] <= 4


def test_the_serve_command_serves_a_named_device_for_a_while(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from quasineuron.devices.serve import main

    assert main(["tanh", "--port", "0", "--seconds", "0.1"]) == 0
    assert "serving tanh at http://127.0.0.1:" in capsys.readouterr().out
