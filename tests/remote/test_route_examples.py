"""The bring-your-own-device examples run end to end with ``--quick``, in a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _run(script: str, cwd: Path, *args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--quick", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.mark.slow
def test_remote_example_resumes_from_its_record(tmp_path: Path) -> None:
    record = tmp_path / "calls.jsonl"
    first = _run("remote_device.py", tmp_path, "--record", str(record))
    assert "rows measured 0," not in first
    second = _run("remote_device.py", tmp_path, "--record", str(record))
    assert "rows measured 0," in second


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("ngspice") is None, reason="needs ngspice (apt-get install -y ngspice libngspice0)"
)
def test_spice_example_scores_on_ngspice(tmp_path: Path) -> None:
    out = _run("spice_neuron.py", tmp_path)
    assert "on ngspice" in out
