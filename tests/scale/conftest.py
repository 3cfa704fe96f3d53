"""Time bound for the multi-process tests (no pytest-timeout needed)."""

from __future__ import annotations

import faulthandler

import pytest


@pytest.fixture
def time_limit():
    """Abort the run with a traceback if one test hangs for more than 90 s (e.g. a lost rank)."""
    faulthandler.dump_traceback_later(90, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
