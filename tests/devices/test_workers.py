"""Built-in devices go to worker processes: ``characterize --workers 2 --force-workers`` works."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quasineuron.cli import main


# each run spawns two workers (an interpreter and `import torch` each) and fits a twin
@pytest.mark.slow
@pytest.mark.parametrize("name", ["wuxing", "wuxing-steady", "reaction-relu"])
def test_characterize_with_two_workers(tmp_path: Path, name: str) -> None:
    out = tmp_path / name
    argv = ["characterize", name, "--workers", "2", "--force-workers", "--points", "64"]
    argv += ["--out", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["sweep"]["n_points"] == 64
    assert report["sweep"]["n_failed"] == 0
