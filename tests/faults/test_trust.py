"""A config file or a device name never runs code the user did not allow."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from quasineuron import available_devices, make_device
from quasineuron.cli import main
from quasineuron.errors import UntrustedCodeError

DEVICE_MODULE = """
import torch

from quasineuron import Box, FormulaDevice


def _fn(u, scale):
    return scale * torch.tanh(u)


def make(scale=1.0):
    return FormulaDevice(
        lambda u: _fn(u, scale), n_in=1, n_out=1, domain=Box((-2.0,), (2.0,)), name="plug"
    )
"""


@pytest.mark.parametrize(
    ("spec", "options"),
    [
        ("os:system", ["-o", "command='touch {marker}'"]),
        ("subprocess:getoutput", ["-o", "cmd='touch {marker}'"]),
        ("builtins:eval", ["-o", 'source=\'open(r"{marker}", "w")\'']),
    ],
)
def test_a_device_spec_that_would_run_code_is_refused(
    spec: str, options: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "ran"
    opts = [o.format(marker=marker) for o in options]
    assert main(["characterize", spec, "--out", str(tmp_path / "o"), *opts]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--allow-import" in err
    assert not marker.exists()


def test_a_config_file_alone_cannot_run_a_shell_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "ran"
    cfg = tmp_path / "evil.toml"
    cfg.write_text(f'[device]\nname = "os:system"\noptions = {{ command = "touch {marker}" }}\n')
    assert main(["run", str(cfg), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "--allow-import os" in capsys.readouterr().err
    assert not marker.exists()


def test_an_allowed_module_is_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "trust_allowed_dev.py").write_text(DEVICE_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UntrustedCodeError, match="allow_import=\\('trust_allowed_dev',\\)"):
        make_device("trust_allowed_dev:make")
    dev = make_device("trust_allowed_dev:make", allow_import=("trust_allowed_dev",), scale=2.0)
    assert dev.n_in == 1 and dev.name == "plug"
    out = tmp_path / "o"
    argv = [
        "characterize",
        "trust_allowed_dev:make",
        "--allow-import",
        "trust_allowed_dev",
        "--out",
        str(out),
        "--points",
        "21",
        "--twin",
        "spline",
        "--no-progress",
    ]
    assert main(argv) == 0
    assert json.loads((out / "report.json").read_text())["sweep"]["n_points"] == 21
    # allowing one package does not allow another
    assert (
        main(
            ["characterize", "os:system", "--allow-import", "trust_allowed_dev", "--out", str(out)]
        )
        == 2
    )


def _install_plugin(root: Path) -> None:
    """A real installed distribution: a module and a dist-info folder with entry points."""
    (root / "qn_plugin_dev.py").write_text(DEVICE_MODULE)
    info = root / "qn_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: qn-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        textwrap.dedent(
            """
            [quasineuron.devices]
            plug-tanh = qn_plugin_dev:make
            """
        )
    )


def test_a_registered_entry_point_is_a_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "plug-tanh" not in available_devices()
    _install_plugin(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "plug-tanh" in available_devices()
    dev = make_device("plug-tanh", scale=0.5)
    assert dev.name == "plug" and dev.n_out == 1


def test_the_cli_runs_a_registered_device_without_a_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _install_plugin(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["devices"]) == 0
    assert "plug-tanh" in capsys.readouterr().out.split()
    out = tmp_path / "o"
    argv = [
        "characterize",
        "plug-tanh",
        "--out",
        str(out),
        "--points",
        "21",
        "--twin",
        "spline",
        "--no-progress",
    ]
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith("plug: 21 points, 0 failed")
