"""Serve a named device over HTTP: ``python -m quasineuron.devices.serve tanh --port 8765``.

Its own module (not part of :mod:`quasineuron.devices.remote`) so that ``python -m`` does not
run a module the package has already imported.
"""

from __future__ import annotations

import argparse
import time

from quasineuron.devices.library import make_device
from quasineuron.devices.remote import DeviceServer

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """``python -m quasineuron.devices.serve NAME [--port P] ...``: serve a named device."""
    parser = argparse.ArgumentParser(description="Serve a quasineuron device over HTTP.")
    parser.add_argument("device", help="a device name, as `quasineuron devices` lists")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added per call")
    parser.add_argument("--failure-rate", type=float, default=0.0)
    parser.add_argument("--noise-std", type=float, default=0.0)
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long")
    args = parser.parse_args(argv)
    server = DeviceServer(
        make_device(args.device),
        host=args.host,
        port=args.port,
        latency=args.latency,
        failure_rate=args.failure_rate,
        noise_std=args.noise_std,
    ).start()
    print(f"serving {args.device} at {server.url}", flush=True)
    try:
        time.sleep(args.seconds if args.seconds is not None else 1e9)
    except KeyboardInterrupt:
        pass
    server.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
