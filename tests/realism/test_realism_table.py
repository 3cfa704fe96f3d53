"""The suite's Markdown table: numbers exactly as metrics.json has them, and the guide's copy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from quasineuron.cli import main
from quasineuron.realism import markdown_table

_ROOT = Path(__file__).resolve().parents[2]
_DIGITS = _ROOT / "docs" / "results" / "realism" / "metrics.json"


def _route(name: str, acc: float, std: float, evals: float, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "accuracy_device_mean": acc,
        "accuracy_device_std": std,
        "accuracy_twin_mean": acc + 0.01,
        "gap_mean": -0.004,
        "gap_std": 0.5,
        "outside_fraction_mean": 0.0123,
        "device_evaluations_mean": evals,
        "seconds_mean": 1.25,
        "seeds": [],
        **extra,
    }


def _metrics() -> dict[str, Any]:
    ideal = {"accuracy_mean": 0.95, "accuracy_std": 0.003, "seeds": []}
    return {
        "network": {"sizes": [64, 32, 10]},
        "scenarios": [
            {
                "name": "slow",
                "recommended": "twin",
                "best_route": "physics-aware",
                "cheapest_within_spread": "twin",
                "ideal": ideal,
                "routes": [
                    _route("twin", 0.90, 0.02, 9, charged_seconds_mean=0.09),
                    _route("physics-aware", 0.91, 0.02, 98_037, charged_seconds_mean=980.37),
                    _route(
                        "derivative-free",
                        0.5,
                        0.1,
                        13_824_000,
                        sizes=[64, 8, 10],
                        ideal_same_shape={"accuracy_mean": 0.9378, "accuracy_std": 0.01},
                    ),
                    {"name": "direct", "skipped": "device 'x' gives no gradients: no route"},
                ],
            }
        ],
    }


def test_the_table_marks_routes_and_formats_the_numbers() -> None:
    lines = markdown_table(_metrics()).splitlines()
    assert "the ideal 64-32-10 MLP reached 95.00 ± 0.30 %" in lines[0]
    rows = [line for line in lines if line.startswith("| ") and "---" not in line][1:]
    assert rows[0] == (
        "| slow | twin ◆ (recommended) | 90.00 ± 2.00 | 91.00 | −0.00 ± 0.50 | 1.23 % "
        "| 9 (0.09 s) | 1.2 |"
    )
    assert rows[1].startswith("|  | physics-aware ★ | 91.00 ± 2.00 |")
    assert "| 98,037 (16.3 min) |" in rows[1]
    assert "50.00 ± 10.00 (ideal 93.78)" in rows[2] and "| 1.4e7 |" in rows[2]
    assert rows[3] == "|  | direct | skipped: device 'x' gives no gradients | | | | | |"


def test_the_table_refuses_what_is_not_the_suites_metrics() -> None:
    with pytest.raises(ValueError, match="needs the realism suite's metrics"):
        markdown_table({"data": "digits"})


def test_realism_table_prints_a_saved_run_without_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = tmp_path / "metrics.json"
    saved.write_text(json.dumps(_metrics()))
    assert main(["realism", "--table", str(saved)]) == 0
    assert capsys.readouterr().out == markdown_table(_metrics())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "needs --out DIR"),
        (["--table", "nosuch.json"], "is not a file"),
        (["--table", "nosuch.json", "--out", "x"], "drop --out"),
    ],
)
def test_realism_without_out_or_with_a_missing_table_is_refused(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["realism", *args]) == 2
    assert message in capsys.readouterr().err


def test_the_guide_shows_the_committed_digits_table_exactly() -> None:
    # docs/realism.md copies the table `quasineuron realism --table` prints for the committed
    # run; a rerun that is not copied into the guide (or an edit by hand) fails here
    if not _DIGITS.is_file():
        pytest.skip(f"{_DIGITS} is not in this checkout")
    table = markdown_table(json.loads(_DIGITS.read_text()))
    guide = (_ROOT / "docs" / "realism.md").read_text()
    assert table in guide, "regenerate with: quasineuron realism --table " + str(
        _DIGITS.relative_to(_ROOT)
    )
