"""Run every example script end to end with ``--quick``, as a user would, in a subprocess.

Each script imports torch and quasineuron afresh (about 3 s on 2 cores) before doing anything,
so each run is marked slow.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TIMEOUT_S = 180


def _run(script: str, *args: str, cwd: Path) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "error"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--quick", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.mark.slow
def test_quickstart_runs_and_scores_both_modes(tmp_path: Path) -> None:
    out = _run("quickstart.py", "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert "test accuracy on surrogate" in out
    assert "test accuracy on    device" in out
    assert (tmp_path / "run" / "sweep" / "manifest.json").is_file()


@pytest.mark.slow
def test_characterize_custom_device_resumes_and_records_failures(tmp_path: Path) -> None:
    out = _run("characterize_custom_device.py", "--out", str(tmp_path / "stores"), cwd=tmp_path)
    assert "pending" in out.split("interrupted:")[1].splitlines()[0]
    assert "0 pending" in out.split("resumed:")[1].splitlines()[0]
    assert "run again:   0 points evaluated" in out
    assert "'ERROR': 0" not in out and "'NONFINITE': 0" not in out
    assert (tmp_path / "stores" / "transistor-twin.safetensors").is_file()


@pytest.mark.slow
def test_physics_aware_compares_training_modes(tmp_path: Path) -> None:
    out = _run("physics_aware.py", cwd=tmp_path)
    assert "surrogate |" in out
    assert "physics-aware |" in out
