"""Build, cache and load small native C kernels (one helper for every kernel of the package).

A kernel is C source compiled once per machine with the system C compiler (``$CC``, else
``cc``, else ``gcc``) into a shared library, cached on disk under
``$QUASINEURON_CACHE/kernels`` (default ``~/.cache/quasineuron/kernels``) with a file name keyed
by the SHA-256 of the source, the CPU and the compiler, and loaded with :mod:`ctypes`. A second
process (or a second call) finds the cached library and loads it in milliseconds.

Kernels run in Python threads from one shared pool: a ctypes call releases the GIL, so the
threads run the C code in parallel.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

__all__ = ["build_library", "cache_dir", "find_compiler", "machine_key", "thread_pool"]

_FLAGS = ("-O3", "-shared", "-fPIC", "-std=c99")
# the CPU's own vector width: the kernels' lane loops vectorise
_NATIVE_ARCH = ("-march=native",)

_POOL: ThreadPoolExecutor | None = None


def _forget_pool() -> None:
    # a forked child (worker processes) inherits the pool object but not its threads
    global _POOL
    _POOL = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def thread_pool(n: int) -> ThreadPoolExecutor:
    """The shared pool of at least ``n`` threads that run kernel calls."""
    global _POOL
    if _POOL is None or _POOL._max_workers < n:
        _POOL = ThreadPoolExecutor(max_workers=n, thread_name_prefix="quasineuron-kernel")
    return _POOL


def cache_dir() -> Path:
    """Folder of the compiled kernels: ``$QUASINEURON_CACHE/kernels`` or the user cache."""
    root = os.environ.get("QUASINEURON_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "quasineuron"
    )
    return Path(root) / "kernels"


def machine_key() -> str:
    """The CPU's name and features: ``-march=native`` code is specific to them."""
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln for ln in f if ln.startswith("flags")), "")
    except OSError:
        pass
    return platform.machine() + platform.processor() + flags


def find_compiler() -> str | None:
    """The C compiler to use: ``$CC``, else ``cc`` or ``gcc`` on the PATH; None if none."""
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def build_library(
    name: str,
    source: str,
    *,
    extra_flags: tuple[str, ...] = (),
    key: str = "",
    native_arch: bool = True,
) -> ctypes.CDLL:
    """Compile ``source`` (or reuse its cached build) and load it.

    Args:
        name: File-name prefix of the cached library (``NAME-DIGEST.so``).
        source: The C source.
        extra_flags: Compiler flags after the default ``-O3 -march=native``; part of the key.
        key: Anything else the build depends on; part of the key.
        native_arch: Compile for this CPU (``-march=native``, keyed by the CPU's features);
            False builds portable code, keyed by the source and the compiler only.

    Returns:
        The loaded library.

    Raises:
        RuntimeError: If there is no C compiler or the compilation fails (the compiler's
            message is included).
        OSError: If the library cannot be loaded.
    """
    cc = find_compiler()
    if cc is None:
        raise RuntimeError("no C compiler (cc or gcc) on PATH; set CC to one")
    salt = key + "".join(extra_flags)
    arch = machine_key() if native_arch else ""
    digest = hashlib.sha256((source + arch + cc + salt).encode()).hexdigest()[:16]
    path = cache_dir() / f"{name}-{digest}.so"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            c_file = Path(tmp) / f"{name}.c"
            c_file.write_text(source)
            so = Path(tmp) / f"{name}.so"
            flags = (*_FLAGS, *(_NATIVE_ARCH if native_arch else ()), *extra_flags)
            cmd = [cc, *flags, "-o", str(so), str(c_file)]
            try:
                done = subprocess.run(cmd, capture_output=True, text=True)
            except OSError as exc:  # CC names a file that is not there or not executable
                raise RuntimeError(f"cannot run the C compiler {cc!r}: {exc}") from exc
            if done.returncode != 0:
                raise RuntimeError(f"{cc} failed: {done.stderr.strip()[:500]}")
            os.replace(so, path)  # atomic: a concurrent process sees all of it or nothing
    return ctypes.CDLL(str(path))
