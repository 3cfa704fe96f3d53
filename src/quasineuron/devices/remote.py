"""Devices that live elsewhere: a device server, its client, and the link between them.

A device behind a network or an instrument bus is slow, may fail or time out, and each call may
cost money or wear. :class:`DeviceLink` wraps any "send these drives, get those outputs" function
(a *transport*) with what such a device needs:

- **batching**: rows are deduplicated and sent in batches of at most ``batch_size`` rows, with up
  to ``in_flight`` batches waiting at once (a queue of requests);
- **a cache keyed by drives**: a row whose exact drives were measured before is not measured again;
- **retries with back-off** and a **timeout** per call;
- **a budget** of calls, counted over every attempt, failed ones included;
- **an append-only record** of every successful call (drives and outputs, one JSON line each,
  written and synced before the outputs are used). A link opened on an existing record loads it
  into its cache, so a run that was interrupted and starts again re-measures nothing it had
  measured: with a seeded run the drives are the same, bit for bit, and every recorded batch is
  a cache hit.

:class:`DeviceServer` serves any device over HTTP (standard library only) and can inject
latency, failures and noise for testing; :class:`RemoteDevice` is its client.

Protocol (JSON over HTTP): ``GET /describe`` → ``{"n_in", "n_out", "name", "domain"}``;
``POST /evaluate`` with ``{"u": [[...], ...]}`` → ``{"y": [[...], ...]}``. Floats travel as
JSON numbers, which round-trip float64 exactly.
"""

from __future__ import annotations

import json
import math
import os
import random
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, final

import numpy as np
import torch

from quasineuron.devices.base import AbstractDevice, Box
from quasineuron.errors import (
    DeviceBudgetError,
    DeviceCallError,
    DeviceContractError,
    IntegrityError,
    QuasineuronWarning,
)

__all__ = ["CallPolicy", "DeviceLink", "DeviceServer", "RemoteDevice"]

Transport = Callable[[np.ndarray, float], np.ndarray]


@dataclass(frozen=True)
class CallPolicy:
    """How a device elsewhere is called.

    Args:
        batch_size: Most rows per call.
        in_flight: Calls waiting at once (a queue of requests, for devices that accept several).
        retries: Attempts after the first before a call counts as failed.
        backoff: Seconds before the first retry; doubled at each further retry (with up to
            25 % random jitter so that many clients do not retry in step), at most
            ``max_backoff``.
        max_backoff: Longest wait between two attempts, in seconds.
        timeout: Seconds one attempt may take.
        max_calls: Budget: the most attempts this link may make, failed ones included
            (None: no limit). Cache hits cost nothing.
    """

    batch_size: int = 4096
    in_flight: int = 1
    retries: int = 5
    backoff: float = 0.05
    max_backoff: float = 5.0
    timeout: float = 30.0
    max_calls: int | None = None

    def __post_init__(self) -> None:
        for name, low in (("batch_size", 1), ("in_flight", 1), ("retries", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"CallPolicy.{name} must be an int >= {low}, got {value!r}")
        for name in ("backoff", "max_backoff", "timeout"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"CallPolicy.{name} must be a finite number >= 0, got {value!r}")
        if self.timeout <= 0:
            raise ValueError(f"CallPolicy.timeout must be > 0 seconds, got {self.timeout!r}")
        m = self.max_calls
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
            raise ValueError(f"CallPolicy.max_calls must be None or an int >= 1, got {m!r}")


class DeviceLink:
    """Batching, cache, retries, budget and record around a transport.

    Args:
        transport: ``transport(u, timeout) -> y``: u float64 (rows, n_in) → (rows, n_out). It
            raises on failure (any exception counts as a failed attempt).
        n_in: Drives per row.
        n_out: Outputs per row.
        policy: How calls are made.
        record: Path of the append-only record (JSON lines). An existing record is loaded into
            the cache; a damaged last line (the process was killed while writing it) is
            dropped with a warning. None keeps no record.

    Attributes:
        n_calls: Attempts made, failed ones included (what the budget counts).
        n_failures: Attempts that failed.
        n_rows_measured: Rows measured by this link (not from the cache or the record).
        n_cache_hits: Rows answered from the cache.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        n_in: int,
        n_out: int,
        policy: CallPolicy | None = None,
        record: str | os.PathLike[str] | None = None,
    ) -> None:
        self.transport = transport
        self.n_in = int(n_in)
        self.n_out = int(n_out)
        self.policy = policy or CallPolicy()
        self.record = Path(record) if record is not None else None
        self.n_calls = 0
        self.n_failures = 0
        self.n_rows_measured = 0
        self.n_cache_hits = 0
        self._cache: dict[bytes, np.ndarray] = {}
        self._lock = threading.Lock()
        if self.record is not None and self.record.exists():
            self._load_record(self.record)

    # -- record -------------------------------------------------------------------------------

    def _load_record(self, path: Path) -> None:
        lines = path.read_bytes().split(b"\n")
        for k, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                u = np.asarray(entry["u"], dtype=np.float64).reshape(-1, self.n_in)
                y = np.asarray(entry["y"], dtype=np.float64).reshape(len(u), self.n_out)
            except (ValueError, KeyError, TypeError) as exc:
                if k >= len(lines) - 2:  # the last line: a write that was cut off
                    warnings.warn(
                        f"device record {path}: its last line is incomplete (the run was "
                        "interrupted while writing it) and is ignored; that batch will be "
                        "measured again",
                        QuasineuronWarning,
                        stacklevel=3,
                    )
                    # cut it off, so that the next append starts on a fresh line
                    with path.open("r+b") as f:
                        f.truncate(sum(len(s) + 1 for s in lines[:k]))
                    break
                raise IntegrityError(
                    f"device record {path} is damaged at line {k + 1} ({exc}); it is "
                    "append-only, so this is not an interrupted write: move the file away to "
                    "measure again from scratch"
                ) from exc
            for row, out in zip(u, y, strict=True):
                self._cache[row.tobytes()] = out

    def _append(self, u: np.ndarray, y: np.ndarray, seconds: float) -> None:
        if self.record is None:
            return
        line = json.dumps(
            {"call": self.n_calls, "seconds": round(seconds, 6), "u": u.tolist(), "y": y.tolist()}
        )
        self.record.parent.mkdir(parents=True, exist_ok=True)
        # one write of one whole line, then fsync: after a crash the file ends with complete
        # lines, or with one incomplete line that _load_record drops
        with self.record.open("ab") as f:
            f.write(line.encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())

    # -- calls --------------------------------------------------------------------------------

    def __call__(self, u: np.ndarray) -> np.ndarray:
        """Outputs for drives u (rows, n_in) float64 → (rows, n_out) float64.

        Raises:
            DeviceBudgetError: If measuring the rows not yet known would exceed ``max_calls``.
            DeviceCallError: If a batch still fails after all its retries.
        """
        u = np.ascontiguousarray(u, dtype=np.float64).reshape(-1, self.n_in)
        keys = [row.tobytes() for row in u]
        missing: dict[bytes, int] = {}
        for i, key in enumerate(keys):
            if key not in self._cache and key not in missing:
                missing[key] = i
        self.n_cache_hits += len(u) - len(missing)
        todo = u[list(missing.values())]
        bs = self.policy.batch_size
        batches = [todo[s : s + bs] for s in range(0, len(todo), bs)]
        if batches:
            if self.policy.in_flight == 1 or len(batches) == 1:
                for b in batches:
                    self._measure(b)
            else:
                with ThreadPoolExecutor(self.policy.in_flight) as pool:
                    list(pool.map(self._measure, batches))
        return np.stack([self._cache[k] for k in keys]) if keys else np.empty((0, self.n_out))

    def _take_call(self) -> None:
        with self._lock:
            budget = self.policy.max_calls
            if budget is not None and self.n_calls >= budget:
                raise DeviceBudgetError(
                    f"the device's budget of {budget} calls is spent ({self.n_failures} of "
                    "them failed); raise CallPolicy.max_calls, or resume from the record, whose "
                    "measurements cost no calls"
                )
            self.n_calls += 1

    def _measure(self, u: np.ndarray) -> None:
        p = self.policy
        wait = p.backoff
        errors: list[str] = []
        for attempt in range(p.retries + 1):
            self._take_call()
            start = time.perf_counter()
            try:
                y = np.asarray(self.transport(u, p.timeout), dtype=np.float64)
                if y.shape != (len(u), self.n_out):
                    raise DeviceContractError(
                        f"the device answered shape {y.shape} for {len(u)} rows; expected "
                        f"({len(u)}, {self.n_out})"
                    )
            except DeviceContractError:
                raise
            except Exception as exc:  # any failure of the far side is retried
                with self._lock:
                    self.n_failures += 1
                errors.append(f"{type(exc).__name__}: {exc}")
                if attempt < p.retries:
                    time.sleep(min(wait, p.max_backoff) * (1 + 0.25 * random.random()))
                    wait *= 2
                continue
            with self._lock:
                self._append(u, y, time.perf_counter() - start)
                for row, out in zip(u, y, strict=True):
                    self._cache[row.tobytes()] = out
                self.n_rows_measured += len(u)
            return
        raise DeviceCallError(
            f"a batch of {len(u)} rows failed {p.retries + 1} times; last error: {errors[-1]}. "
            "Check the device is reachable, or raise CallPolicy.retries / timeout; what was "
            "measured so far is kept in the record"
        )

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the lock."""
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore, with a new lock."""
        self.__dict__.update(state)
        self._lock = threading.Lock()


# -- HTTP client ----------------------------------------------------------------------------------


def _http_json(url: str, payload: dict[str, Any] | None, timeout: float) -> dict[str, Any]:
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(
        url,
        data=data,
        headers={"Content-Type": "application/json"},
        method="GET" if data is None else "POST",
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        out: dict[str, Any] = json.loads(resp.read())
    return out


class _HttpTransport:
    """Picklable transport: POST the drives to ``url/evaluate``."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __call__(self, u: np.ndarray, timeout: float) -> np.ndarray:
        reply = _http_json(f"{self.url}/evaluate", {"u": u.tolist()}, timeout)
        return np.asarray(reply["y"], dtype=np.float64)


@final
class RemoteDevice(AbstractDevice):
    """A device served elsewhere by :class:`DeviceServer`, called through a :class:`DeviceLink`.

    Not differentiable: train it with ``PhysicsAware`` (the device forward, a twin's gradient
    backward), characterise it with ``sweep`` like any device.

    Args:
        url: The server's address, e.g. ``"http://127.0.0.1:8765"``.
        policy: Batching, retries, timeout and budget.
        record: Append-only record of every call; an existing one is loaded, so a resumed run
            re-measures nothing recorded.

    Attributes:
        link: The :class:`DeviceLink` (its counters say how many calls, failures, cache hits).

    Raises:
        DeviceCallError: If the server cannot be reached to describe the device.
    """

    differentiable = False

    def __init__(
        self,
        url: str,
        *,
        policy: CallPolicy | None = None,
        record: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        policy = policy or CallPolicy()
        info: dict[str, Any] | None = None
        last: Exception | None = None
        for _ in range(policy.retries + 1):  # the description is fetched with the same retries
            try:
                info = _http_json(f"{self.url}/describe", None, policy.timeout)
                break
            except Exception as exc:
                last = exc
                time.sleep(policy.backoff)
        if info is None:
            raise DeviceCallError(
                f"no device server answered at {self.url} ({type(last).__name__}: {last}); "
                "start one with DeviceServer(device) or `python -m quasineuron.devices.serve`"
            )
        self.n_in = int(info["n_in"])
        self.n_out = int(info["n_out"])
        self.domain = Box.from_dict(info["domain"])
        self.name = f"remote-{info.get('name', 'device')}"
        self.stochastic = bool(info.get("stochastic", False))
        self.link = DeviceLink(
            _HttpTransport(self.url), n_in=self.n_in, n_out=self.n_out, policy=policy, record=record
        )

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """Evaluate through the link; u (batch, n_in) → (batch, n_out), u's dtype and device."""
        y = self.link(u.detach().cpu().double().numpy())
        return torch.from_numpy(y).to(dtype=u.dtype, device=u.device)

    def describe(self) -> dict[str, Any]:
        """JSON-ready description, with the address and the call policy."""
        d = super().describe()
        d.update(url=self.url, batch_size=self.link.policy.batch_size)
        return d


# -- HTTP server ----------------------------------------------------------------------------------


@final
class DeviceServer:
    """Serve a device over HTTP on this machine, in a background thread.

    For tests and demonstrations it can behave like a real instrument: slow, failing and noisy.

    Args:
        device: Any :class:`AbstractDevice`.
        host: Address to listen on (loopback by default; the protocol has no authentication,
            so expose it on a network only behind one).
        port: Port (0 picks a free one; see :attr:`url`).
        latency: Seconds added to every call.
        failure_rate: Probability that a call answers HTTP 503 instead of outputs.
        noise_std: Standard deviation of Gaussian noise added to every output.
        seed: Seed of the failures and the noise.

    Attributes:
        url: The address to give :class:`RemoteDevice`.
        n_requests: Evaluate requests received (failed ones included).
        n_rows: Rows evaluated.

    Example:
        >>> with DeviceServer(qn.make_device("tanh"), latency=0.05) as server:  # doctest: +SKIP
        ...     dev = RemoteDevice(server.url)
    """

    def __init__(
        self,
        device: AbstractDevice,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        failure_rate: float = 0.0,
        noise_std: float = 0.0,
        seed: int = 0,
    ) -> None:
        if not isinstance(device, AbstractDevice):
            raise TypeError(f"device must be an AbstractDevice, got {type(device).__name__}")
        if not (latency >= 0 and 0 <= failure_rate < 1 and noise_std >= 0):
            raise ValueError(
                "need latency >= 0, 0 <= failure_rate < 1 and noise_std >= 0, got "
                f"{latency!r}, {failure_rate!r}, {noise_std!r}"
            )
        self.device = device
        self.latency = float(latency)
        self.failure_rate = float(failure_rate)
        self.noise_std = float(noise_std)
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self.n_requests = 0
        self.n_rows = 0
        self._httpd = ThreadingHTTPServer((host, port), self._handler())
        self._httpd.daemon_threads = True
        h, p = self._httpd.server_address[:2]
        self.url = f"http://{h!s}:{p}"
        self._thread: threading.Thread | None = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return  # quiet: a server in a test must not write to stderr per request

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout); it will retry or report

            def do_GET(self) -> None:
                if self.path.rstrip("/") != "/describe":
                    self._send(404, {"error": f"unknown path {self.path}; use /describe"})
                    return
                dev = server.device
                self._send(
                    200,
                    {
                        "n_in": dev.n_in,
                        "n_out": dev.n_out,
                        "name": dev.name,
                        "domain": dev.domain.to_dict(),
                        "stochastic": bool(dev.stochastic or server.noise_std > 0),
                    },
                )

            def do_POST(self) -> None:
                if self.path.rstrip("/") != "/evaluate":
                    self._send(404, {"error": f"unknown path {self.path}; use /evaluate"})
                    return
                try:
                    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                    u = np.asarray(body["u"], dtype=np.float64).reshape(-1, server.device.n_in)
                except (ValueError, KeyError, TypeError) as exc:
                    self._send(400, {"error": f"bad request: {exc}; send {{'u': [[...], ...]}}"})
                    return
                with server._lock:
                    server.n_requests += 1
                    fail = server._rng.random() < server.failure_rate
                    noise = server._rng.standard_normal((len(u), server.device.n_out))
                if server.latency:
                    time.sleep(server.latency)
                if fail:
                    self._send(503, {"error": "injected failure"})
                    return
                with server._lock, torch.no_grad():  # one evaluation at a time, like an instrument
                    y = server.device(torch.from_numpy(u)).double().numpy()
                    server.n_rows += len(u)
                self._send(200, {"y": (y + server.noise_std * noise).tolist()})

        return Handler

    def start(self) -> DeviceServer:
        """Start serving in a daemon thread; returns self."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and free the port."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> DeviceServer:
        """Start on entry."""
        return self.start()

    def __exit__(self, *exc: object) -> None:
        """Stop on exit."""
        self.close()
