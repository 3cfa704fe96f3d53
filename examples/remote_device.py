"""A device elsewhere: serve it over HTTP, train physics-aware through the server, resume.

Runs in about ten seconds, all on this machine:

    python examples/remote_device.py

The "lab" is a device server on loopback in front of the built-in tanh neuron, answering each
call after 20 ms, failing 1 % of calls and adding noise, as a real setup might. The client
batches the drives, retries failed calls with back-off, keeps a budget of calls, and appends
every call to a record on disk. Run the script twice with ``--record calls.jsonl``: the second
run starts from the same seed, finds every batch in the record, and measures nothing again.
To serve a device from another terminal instead: ``python -m quasineuron.devices.serve tanh``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import quasineuron as qn
from quasineuron.devices import CallPolicy, DeviceServer, RemoteDevice


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", type=Path, help="record of device calls (kept between runs)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for tests")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default 3)")
    parser.add_argument("--latency", type=float, default=0.02, help="seconds per call")
    parser.add_argument(
        "--compare", action="store_true", help="also train with the device in this process"
    )
    parser.add_argument(
        "--server-seed",
        type=int,
        default=0,
        help="seed of the server's injected failures and noise",
    )
    args = parser.parse_args(argv)
    local = qn.make_device("tanh")
    # the twin: characterised here on a model of the device (it could come from measurements)
    twin = qn.fit_surrogate(qn.sweep(local, qn.Grid(41), progress=False), kind="spline").model
    train, test = qn.load_digits()
    if args.quick:
        train = train.subset(range(256))
    epochs = args.epochs or (1 if args.quick else 3)

    def fit_and_score(dev: qn.AbstractDevice) -> float:
        net = qn.DeviceNetwork(dev, (64, 16, 10), twin=twin, seed=0)
        result = qn.train(
            net,
            train,
            mode=qn.PhysicsAware(),
            epochs=epochs,
            batch_size=64,
            lr=1e-2,
            seed=0,
            progress=False,
        )
        report = qn.evaluate(result.network, test, modes=(qn.TrueDevice(),))
        return float(report.accuracy["device"])

    server = DeviceServer(
        local, latency=args.latency, failure_rate=0.01, noise_std=0.01, seed=args.server_seed
    )
    with tempfile.TemporaryDirectory() as tmp, server:
        record = args.record or Path(tmp) / "calls.jsonl"
        policy = CallPolicy(batch_size=4096, retries=8, backoff=0.05, max_calls=5000)
        remote = RemoteDevice(server.url, policy=policy, record=record)
        start = time.perf_counter()
        acc = fit_and_score(remote)
        seconds = time.perf_counter() - start
        link = remote.link
        print(
            f"device calls {link.n_calls} ({link.n_failures} failed and retried), rows measured "
            f"{link.n_rows_measured}, answered from the record or cache {link.n_cache_hits}"
        )
        print(f"accuracy through the server {100 * acc:.2f} % ({seconds:.1f} s)")
    if args.compare:
        local_acc = fit_and_score(local)
        print(
            f"accuracy with the device in this process {100 * local_acc:.2f} % "
            f"(difference {100 * (acc - local_acc):+.2f} pp)"
        )


if __name__ == "__main__":
    main()
