"""``.ci/run`` runs the README's test command, and a failing step fails the run.

The commands it calls (python3, pip, python, mypy, ruff) are replaced by tiny fakes on ``PATH``, so
these tests check the script's control flow in milliseconds without installing anything.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CI_RUN = ROOT / ".ci" / "run"


def _readme_test_command() -> str:
    text = (ROOT / "README.md").read_text()
    blocks = [b.split("```", 1)[0].strip() for b in text.split("```bash\n")[1:]]
    commands = [b for b in blocks if "pytest" in b and b.startswith("python3 -m venv")]
    assert len(commands) == 1, commands
    return commands[0]


def test_ci_runs_the_readme_command_verbatim() -> None:
    command = _readme_test_command()
    assert command in CI_RUN.read_text().splitlines()
    assert '-m "not slow"' in command and command.endswith("-m slow")


FAKE_PYTHON = """#!/usr/bin/env bash
echo "python $*" >> "$LOG"
case "$*" in
  *"not slow"*) exit "$FAST_RC" ;;
  *"-m slow"*) exit "$SLOW_RC" ;;
esac
exit 0
"""
FAKE_PYTHON3 = """#!/usr/bin/env bash
mkdir -p .venv/bin && : > .venv/bin/activate
"""
FAKE_OK = """#!/usr/bin/env bash
echo "$(basename "$0") $*" >> "$LOG"
"""
FAKE_MYPY = """#!/usr/bin/env bash
echo "mypy $*" >> "$LOG"
exit "$MYPY_RC"
"""


def _run_ci(tmp_path: Path, fast_rc: int, slow_rc: int, mypy_rc: int = 0) -> tuple[int, str]:
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    shutil.copy(CI_RUN, repo / ".ci" / "run")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (
        ("python", FAKE_PYTHON),
        ("python3", FAKE_PYTHON3),
        ("pip", FAKE_OK),
        ("mypy", FAKE_MYPY),
        ("ruff", FAKE_OK),
        # present, so the script does not try to install the circuit simulator for real
        ("ngspice", FAKE_OK),
        ("apt-get", FAKE_OK),
    ):
        path = bin_dir / name
        path.write_text(body)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "log"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "LOG": str(log),
        "FAST_RC": str(fast_rc),
        "SLOW_RC": str(slow_rc),
        "MYPY_RC": str(mypy_rc),
    }
    proc = subprocess.run(
        ["bash", str(repo / ".ci" / "run")], env=env, capture_output=True, text=True
    )
    return proc.returncode, log.read_text() if log.exists() else ""


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize(
    ("fast_rc", "slow_rc", "expected_rc"),
    [(0, 0, 0), (1, 0, 1), (0, 1, 1), (5, 0, 5), (0, 5, 5)],
    ids=["both-pass", "fast-fails", "slow-fails", "fast-collects-nothing", "slow-collects-nothing"],
)
def test_ci_fails_when_either_step_fails(
    tmp_path: Path, fast_rc: int, slow_rc: int, expected_rc: int
) -> None:
    rc, log = _run_ci(tmp_path, fast_rc, slow_rc)
    assert rc == expected_rc
    ran_slow = "-m slow" in log
    ran_mypy = "mypy src/" in log
    ran_lint = "ruff check ." in log
    assert ran_slow == (fast_rc == 0)
    assert ran_mypy == (expected_rc == 0)
    assert ran_lint == (expected_rc == 0)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_ci_type_checks_after_the_tests_and_before_lint(tmp_path: Path) -> None:
    rc, log = _run_ci(tmp_path, 0, 0)
    assert rc == 0
    lines = log.splitlines()
    order = [
        i for i, line in enumerate(lines) if line.startswith(("python -m pytest", "mypy", "ruff"))
    ]
    assert [lines[i].split()[0] for i in order] == ["python", "python", "mypy", "ruff", "ruff"]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_ci_fails_when_the_type_check_fails(tmp_path: Path) -> None:
    rc, log = _run_ci(tmp_path, 0, 0, mypy_rc=1)
    assert rc == 1
    assert "mypy src/" in log and "ruff" not in log
