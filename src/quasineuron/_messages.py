"""One-line error text, shared by the pipeline's status file and the command line.

Kept apart from the pipeline so that the command line can word a failure without importing
torch (an argument or config error then stays quick).
"""

from __future__ import annotations

__all__ = ["error_line"]


def error_line(exc: BaseException) -> str:
    """One line for ``exc``: its type for a bare one, a multi-line message joined."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    text = str(exc).strip()
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        text = f"{exc.strerror}: {exc.filename}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    joined = lines[0]
    for line in lines[1:]:
        joined += (" " if joined.endswith(":") else "; ") + line
    return joined
