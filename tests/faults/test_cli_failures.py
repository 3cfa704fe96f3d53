"""Every foreseeable CLI failure is one line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from quasineuron.cli import main
from quasineuron.sweep import PointStatus, SweepTable

RUN = """
name = "tiny"
[device]
name = "tanh"
[sweep]
points = 21
[twin]
kind = "spline"
policy = "clamp"
[data]
name = "digits"
limit_train = 100
[network]
hidden = [4]
[training]
epochs = 1
batch_size = 50
[evaluation]
modes = ["surrogate"]
baseline_mlp = false
"""

DEVICES = """
import time

import torch

from quasineuron import Box, FormulaDevice

BOX = Box((-2.0,), (2.0,))


def _half(u):
    # fails for positive drives only: at some of the probe's points, not everywhere
    if bool((u > 0).any()):
        raise RuntimeError("solver diverged")
    return torch.tanh(u)


def _nan(u):
    return torch.where(u > 0, torch.full_like(u, float("nan")), torch.tanh(u))


def _wrong(u):
    return torch.zeros(u.shape[0], dtype=u.dtype)


def _hang(u):
    # hangs for drives above 1.5 (3 of the 21 grid points on [-2, 2]), like a stuck solver
    if bool((u > 1.5).any()):
        time.sleep(3600)
    return torch.tanh(u)


def hang():
    return FormulaDevice(_hang, n_in=1, n_out=1, domain=BOX, name="hang", probe=False)


def half():
    return FormulaDevice(_half, n_in=1, n_out=1, domain=BOX, name="half", probe=False)


def nan():
    return FormulaDevice(_nan, n_in=1, n_out=1, domain=BOX, name="nan", probe=False)


def wrong():
    return FormulaDevice(_wrong, n_in=1, n_out=1, domain=BOX, name="wrong", probe=False)
"""


@pytest.fixture
def devices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Put a module of misbehaving devices on sys.path; returns the flag that allows it."""
    folder = tmp_path / "plug"
    folder.mkdir()
    (folder / "qn_fault_devs.py").write_text(DEVICES)
    monkeypatch.syspath_prepend(str(folder))
    return ["--allow-import", "qn_fault_devs"]


def _config(tmp_path: Path, old: str = "", new: str = "") -> str:
    path = tmp_path / "run.toml"
    path.write_text(RUN.replace(old, new) if old else RUN)
    return str(path)


def _run(tmp_path: Path, old: str = "", new: str = "", *extra: str) -> list[str]:
    return [
        "run",
        _config(tmp_path, old, new),
        "--out",
        str(tmp_path / "out"),
        "--no-progress",
        *extra,
    ]


def _char(tmp_path: Path, device: str, *extra: str) -> list[str]:
    return [
        "characterize",
        device,
        "--out",
        str(tmp_path / "out"),
        "--points",
        "21",
        "--twin",
        "spline",
        "--no-progress",
        *extra,
    ]


def _file_out(tmp_path: Path) -> list[str]:
    (tmp_path / "afile").write_text("x")
    return ["demo", "--out", str(tmp_path / "afile"), "--no-progress"]


def _under_file_out(tmp_path: Path) -> list[str]:
    (tmp_path / "afile").write_text("x")
    return _char(tmp_path, "tanh")[:2] + ["--out", str(tmp_path / "afile" / "sub")]


def _read_only_out(tmp_path: Path) -> list[str]:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if os.access(ro, os.W_OK):  # root writes anyway
        ro.chmod(0o700)
        pytest.skip("running as root: a read-only folder is still writable")
    return ["run", _config(tmp_path), "--out", str(ro / "run"), "--no-progress"]


def _corrupt_store(tmp_path: Path) -> list[str]:
    argv = _char(tmp_path, "tanh")
    assert main(argv) == 0
    chunk = next(p for p in (tmp_path / "out" / "sweep.zarr").rglob("c/*") if p.is_file())
    chunk.write_bytes(chunk.read_bytes()[:3])  # truncated, as by a full disk
    return argv


def _another_run(tmp_path: Path) -> list[str]:
    out = tmp_path / "out"
    out.mkdir()
    record = {"config_hash": "0" * 64, "config": {"name": "someone-else"}}
    (out / "run.json").write_text(json.dumps(record))
    (out / "metrics.json").write_text("{}")
    return _run(tmp_path)


def _demo_into_user_files(tmp_path: Path) -> list[str]:
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("{}")
    return ["demo", "--out", str(out), "--no-progress"]


# name -> (argv builder, a phrase the one line must contain)
CASES: dict[str, tuple[Callable[..., list[str]], str]] = {
    "unknown device": (lambda t, d: _char(t, "no-such-device"), "unknown device"),
    "untrusted spec": (lambda t, d: _char(t, "os:system", "-o", "command='true'"), "--allow"),
    "unknown device option": (lambda t, d: _char(t, "almost-neuron", "-o", "x=1"), "options"),
    "bad option value": (
        lambda t, d: _char(t, "almost-neuron", "-o", "activation=nope"),
        "unknown activation",
    ),
    "option without =": (lambda t, d: _char(t, "tanh", "-o", "novalue"), "KEY=VALUE"),
    "unknown argument": (lambda t, d: _char(t, "tanh", "--bogus"), "unrecognized"),
    "missing config": (
        lambda t, d: ["run", str(t / "nope.toml"), "--out", str(t / "o")],
        "does not exist",
    ),
    "bad TOML": (lambda t, d: _run(t, "[training]", "[training"), "not valid TOML"),
    "unknown key": (lambda t, d: _run(t, "epochs = 1", "epochz = 1"), "unknown key"),
    "wrong type": (lambda t, d: _run(t, "epochs = 1", 'epochs = "2"'), "training.epochs"),
    "bool for int": (lambda t, d: _run(t, "epochs = 1", "epochs = true"), "training.epochs"),
    "negative hidden": (lambda t, d: _run(t, "hidden = [4]", "hidden = [-4]"), "network.hidden"),
    "workers -1 (flag)": (lambda t, d: _char(t, "tanh", "--workers", "-1"), "--workers"),
    "workers -1 (config)": (
        lambda t, d: _run(t, "points = 21", "points = 21\nworkers = -1"),
        "sweep.workers",
    ),
    "points -1": (lambda t, d: _char(t, "tanh")[:4] + ["--points", "-1"], "--points"),
    "overwrite and resume": (lambda t, d: _run(t, "", "", "--overwrite", "--resume"), "--resume"),
    "missing MNIST": (
        lambda t, d: _run(t, 'name = "digits"', 'name = "mnist"', "--data-dir", str(t)),
        "lacks",
    ),
    "connection does not fit the device": (
        lambda t, d: _run(t, "hidden = [4]", 'hidden = [4]\nconnection = "two-drive"'),
        "n_in=1",
    ),
    "fan-in above the inputs": (
        lambda t, d: _run(t, "hidden = [4]", 'hidden = [4]\nwiring = "fan-in"\nfan_in = 100'),
        "FanIn",
    ),
    "--out is a file": (lambda t, d: _file_out(t), "is a file"),
    "--out under a file": (lambda t, d: _under_file_out(t), "output folder"),
    "--out read-only": (lambda t, d: _read_only_out(t), "cannot write"),
    "corrupt sweep store": (lambda t, d: _corrupt_store(t), "is damaged"),
    "--strict with a failing device": (
        lambda t, d: _char(t, "qn_fault_devs:half", *d, "--strict"),
        "solver diverged",
    ),
    "wrong output shape": (lambda t, d: _char(t, "qn_fault_devs:wrong", *d), "returned (21,)"),
    "NaN training loss": (
        lambda t, d: _run(
            t, "batch_size = 50", 'batch_size = 50\nlr = 1e30\noptimizer = "sgd"\nloss = "mse"'
        ),
        "training loss became",
    ),
    "huge sizes": (
        lambda t, d: _run(t, "hidden = [4]", "hidden = [1000000000000]"),
        "GiB",
    ),
    "huge sweep": (lambda t, d: _char(t, "tanh")[:4] + ["--points", str(10**15)], "GiB"),
    "another run's folder": (lambda t, d: _another_run(t), "another run"),
    "demo into a user's folder": (lambda t, d: _demo_into_user_files(t), "--overwrite"),
}

# caught before any work: nothing was swept
BEFORE_WORK = {
    "negative hidden",
    "missing MNIST",
    "huge sizes",
    "connection does not fit the device",
    "fan-in above the inputs",
    "another run's folder",
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_failure_is_one_line_and_exit_code_2(
    case: str, tmp_path: Path, devices: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    build, phrase = CASES[case]
    argv = build(tmp_path, devices)
    capsys.readouterr()  # drop the output of any set-up run
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse exits itself
        rc = exc.code
    out, err = capsys.readouterr()
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("quasineuron") and ": error: " in lines[0]
    assert "Traceback" not in err and out == ""
    assert phrase in lines[0]
    if case in BEFORE_WORK:
        assert not (tmp_path / "out" / "sweep.zarr").exists()


def test_an_unforeseen_error_names_itself_and_the_traceback_flag(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import quasineuron.cli as cli

    def boom(args: object) -> int:
        raise KeyError("bug")

    monkeypatch.setattr(cli, "_devices", boom)
    assert main(["devices"]) == 2
    assert capsys.readouterr().err.strip() == (
        "quasineuron devices: error: KeyError: 'bug' (rerun with --traceback for details)"
    )
    with pytest.raises(KeyError):
        main(["--traceback", "devices"])


def test_ctrl_c_exits_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import quasineuron.cli as cli

    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_devices", interrupted)
    assert main(["devices"]) == 130
    assert capsys.readouterr().err.strip() == "quasineuron devices: interrupted"


@pytest.mark.parametrize("kind", ["half", "nan"])
def test_a_device_failing_at_the_probe_points_is_swept_and_its_failures_recorded(
    kind: str, tmp_path: Path, devices: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_char(tmp_path, f"qn_fault_devs:{kind}", *devices)) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    # drives > 0 fail: 10 of the 21 grid points on [-2, 2]
    assert report["sweep"]["n_points"] == 21 and report["sweep"]["n_failed"] == 10
    assert capsys.readouterr().out.startswith(f"{kind}: 21 points, 10 failed")


def test_repair_recomputes_a_damaged_store_from_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _corrupt_store(tmp_path)
    before = json.loads((tmp_path / "out" / "report.json").read_text())
    assert main(argv) == 2  # refused while damaged
    with pytest.warns(UserWarning, match="so that it is recomputed"):
        assert main([*argv, "--repair"]) == 0
    table = SweepTable.open(tmp_path / "out" / "sweep.zarr")
    assert int((table.status == PointStatus.OK).sum()) == before["sweep"]["n_points"]
    capsys.readouterr()


@pytest.mark.slow
def test_a_device_that_hangs_on_some_points_completes_with_those_points_timed_out(
    tmp_path: Path, devices: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    args = _char(tmp_path, "qn_fault_devs:hang", *devices)
    assert main([*args, "--batch-size", "4", "--timeout", "2"]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["sweep"]["n_points"] == 21 and report["sweep"]["n_failed"] == 3
    assert capsys.readouterr().out.startswith("hang: 21 points, 3 failed")
    table = SweepTable.open(tmp_path / "out" / "sweep.zarr")
    hung = table.u[:, 0] > 1.5
    assert (table.status[hung] == PointStatus.TIMEOUT).all() and int(hung.sum()) == 3
    assert (table.status[~hung] == PointStatus.OK).all()


@pytest.mark.parametrize(
    "exc",
    [MemoryError(), RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to ...")],
)
def test_running_out_of_memory_is_one_line(
    exc: BaseException, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import quasineuron.cli as cli

    def oom(args: object) -> int:
        raise exc

    monkeypatch.setattr(cli, "_devices", oom)
    assert main(["devices"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "out of memory" in err and "Traceback" not in err


def test_only_a_device_that_goes_to_other_processes_must_pickle(tmp_path: Path) -> None:
    import quasineuron as qn
    from quasineuron.errors import DeviceContractError
    from quasineuron.pipeline import characterize

    dev = qn.FormulaDevice(
        lambda u: torch.tanh(u), n_in=1, n_out=1, domain=qn.Box((-1.0,), (1.0,)), name="lam"
    )
    run = characterize(dev, tmp_path / "a", executor=qn.SerialExecutor(), progress=False)
    assert run.report["sweep"]["n_failed"] == 0
    with pytest.raises(DeviceContractError, match="cannot be pickled"):
        characterize(dev, tmp_path / "b", workers=2, progress=False)
    assert not (tmp_path / "b" / "sweep.zarr").exists()  # refused before any work
