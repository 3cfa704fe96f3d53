"""Run every example script end to end with ``--quick``, as a user would, in a subprocess.

Each script imports torch and quasineuron afresh (about 3 s on 2 cores) before doing anything,
so each run is marked slow. Also checks that the CLI page documents every config key.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
import typing
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


def _config_keys(model: type, prefix: str = "") -> list[str]:
    """Dotted keys of a pydantic config model, nested tables included."""
    from pydantic import BaseModel

    keys = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        keys.append(key)
        for sub in (field.annotation, *typing.get_args(field.annotation)):
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                keys.extend(_config_keys(sub, f"{key}."))
    return keys


def test_cli_page_documents_every_config_key() -> None:
    from quasineuron.config import RunConfig

    page = (EXAMPLES.parent / "docs" / "cli.md").read_text(encoding="utf-8")
    missing = [
        k for k in _config_keys(RunConfig) if f"`{k}`" not in page and f"`[{k}]`" not in page
    ]
    assert not missing, f"docs/cli.md does not document config keys {missing}"


def test_cli_page_default_config_is_the_default() -> None:
    from quasineuron.config import RunConfig, parse_config

    page = (EXAMPLES.parent / "docs" / "cli.md").read_text(encoding="utf-8")
    block = re.search(r"```toml\n(.*?)```", page, re.S)
    assert block is not None, "docs/cli.md lost its TOML block of defaults"
    assert parse_config(tomllib.loads(block.group(1))) == RunConfig()
