"""Damaged files are caught on read: checkpoints, twins, network weights and network.json.

Every file is damaged in the ways a disk, a copy or a crash damages files (a flipped byte in
the data, a flipped byte in the header, a truncation, a deletion) and loading must raise an
error that names the file. Files written before checksums existed still load.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

import quasineuron.network.io as network_io
from quasineuron._atomic import CHECKSUM_KEY
from quasineuron.data import ArrayDataset
from quasineuron.devices.base import Box
from quasineuron.devices.formula import FormulaDevice
from quasineuron.errors import IntegrityError, NonFiniteOutputWarning
from quasineuron.evaluation import evaluate
from quasineuron.network import DeviceNetwork, Surrogate, TrueDevice, load_network, save_network
from quasineuron.surrogate import fit_surrogate, load_surrogate, save_surrogate
from quasineuron.sweep import Grid, sweep
from quasineuron.training import Adam, train
from quasineuron.training.checkpoint import CHECKPOINT_NAME, load_checkpoint

# ---------------------------------------------------------------- makers of the four files


def _tanh(name: str = "tanh") -> FormulaDevice:
    return FormulaDevice(torch.tanh, n_in=1, n_out=1, domain=Box((-3.0,), (3.0,)), name=name)


class TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.lin = torch.nn.Linear(4, 3)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def forward(self, x: torch.Tensor, *, mode: object = None) -> torch.Tensor:
        return self.lin(x)


def _train_data() -> ArrayDataset:
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    return ArrayDataset(x, (x[:, 0] > 0).long(), name="tiny")


def _train(folder: Path, *, epochs: int = 1, resume: bool = False):
    return train(
        TinyNet(),
        _train_data(),
        epochs=epochs,
        batch_size=8,
        optimizer=Adam(lr=0.01),
        seed=0,
        checkpoint_dir=folder,
        resume=resume,
        progress=False,
    )


def make_checkpoint(tmp: Path) -> Path:
    _train(tmp)
    return tmp / CHECKPOINT_NAME


def load_checkpoint_file(path: Path) -> None:
    load_checkpoint(path)


def make_twin(tmp: Path) -> Path:
    fit = fit_surrogate(sweep(_tanh(), Grid(n=9), progress=False), kind="spline")
    return save_surrogate(fit, tmp / "twin.safetensors")


def load_twin_file(path: Path) -> None:
    load_surrogate(path)


def _network(seed: int = 0) -> DeviceNetwork:
    return DeviceNetwork(_tanh(), (4, 3, 2), seed=seed, dtype=torch.float64)


def make_weights(tmp: Path) -> Path:
    return save_network(_network(), tmp / "net") / network_io.WEIGHTS_FILE


def make_arch(tmp: Path) -> Path:
    return save_network(_network(), tmp / "net") / network_io.ARCH_FILE


def load_network_file(path: Path) -> None:
    load_network(path.parent, device=_tanh())


# (name, make(tmp) -> file, load(file), the advice the message must give)
SAFETENSORS_FILES = [
    ("checkpoint", make_checkpoint, load_checkpoint_file, "delete it"),
    ("twin", make_twin, load_twin_file, "fit the twin again"),
    ("network weights", make_weights, load_network_file, "save the network again"),
]
ALL_FILES = [*SAFETENSORS_FILES, ("network.json", make_arch, load_network_file, "save the net")]

# ---------------------------------------------------------------- ways to damage a file


def _header_end(blob: bytes) -> int:
    return 8 + int.from_bytes(blob[:8], "little")


def flip_data_byte(path: Path) -> None:
    """XOR one bit of a byte in the middle of the tensor data."""
    blob = bytearray(path.read_bytes())
    start = _header_end(blob)
    blob[start + (len(blob) - start) // 2] ^= 0x01
    path.write_bytes(bytes(blob))


def flip_header_byte(path: Path) -> None:
    """Change one letter of the header's JSON that keeps the header valid JSON."""
    blob = bytearray(path.read_bytes())
    i = blob.index(b"format", 0, _header_end(blob))
    blob[i] ^= 0x20  # "format" -> "Format": still parses, but says something else
    path.write_bytes(bytes(blob))


def flip_checksum_key(path: Path) -> None:
    """Damage the name of the digest entry, which would make the file look digest-less."""
    blob = bytearray(path.read_bytes())
    i = blob.index(CHECKSUM_KEY.encode(), 0, _header_end(blob))
    blob[i + len(CHECKSUM_KEY) - 1] ^= 0x01
    path.write_bytes(bytes(blob))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])


DAMAGES = [flip_data_byte, flip_header_byte, flip_checksum_key, truncate]


def _names(path: Path) -> str:
    return re.escape(str(path))


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda f: f.__name__)
@pytest.mark.parametrize(("what", "make", "load", "fix"), SAFETENSORS_FILES, ids=lambda v: v)
def test_damaged_safetensors_file_is_refused_with_its_name(tmp_path, what, make, load, fix, damage):
    path = make(tmp_path)
    load(path)  # the undamaged file loads
    damage(path)
    with pytest.raises(IntegrityError, match=_names(path)) as info:
        load(path)
    assert fix in str(info.value)


@pytest.mark.parametrize(
    "edit",
    [
        # a changed value that keeps valid JSON: the network would load with other settings
        lambda t: t.replace('"seed": 0', '"seed": 1', 1),
        lambda t: t.replace("{", "[", 1),  # no longer JSON
        lambda t: t[: len(t) // 2],  # truncated
    ],
    ids=["flipped-value", "flipped-syntax", "truncated"],
)
def test_damaged_network_json_is_refused_with_its_name(tmp_path, edit):
    path = make_arch(tmp_path)
    text = path.read_text()
    assert edit(text) != text
    path.write_text(edit(text))
    with pytest.raises(IntegrityError, match=_names(path)) as info:
        load_network_file(path)
    assert "save the network again" in str(info.value)


@pytest.mark.parametrize(("what", "make", "load", "fix"), ALL_FILES, ids=lambda v: v)
def test_deleted_file_is_reported_by_name(tmp_path, what, make, load, fix):
    path = make(tmp_path)
    path.unlink()
    with pytest.raises(FileNotFoundError, match=_names(path)):
        load(path)


# ---------------------------------------------------------------- training from a damaged file


def test_resume_from_a_damaged_checkpoint_refuses_and_says_to_delete_it(tmp_path):
    path = make_checkpoint(tmp_path)
    flip_data_byte(path)
    with pytest.raises(IntegrityError, match=_names(path) + r".*delete it"):
        _train(tmp_path, epochs=2, resume=True)
    path.unlink()  # what the message says to do: training restarts from scratch
    assert _train(tmp_path, epochs=2, resume=True).resumed_from_epoch == 0


# ---------------------------------------------------------------- network folders


def test_folder_mixing_two_saves_is_refused(tmp_path):
    a = save_network(_network(seed=0), tmp_path / "a")
    b = save_network(_network(seed=1), tmp_path / "b")
    shutil.copy(b / network_io.WEIGHTS_FILE, a / network_io.WEIGHTS_FILE)
    with pytest.raises(IntegrityError, match=_names(a / network_io.ARCH_FILE)):
        load_network(a, device=_tanh())


def test_save_interrupted_between_the_two_files_leaves_a_folder_that_does_not_load(
    tmp_path, monkeypatch
):
    folder = save_network(_network(seed=0), tmp_path / "net")

    def crash(path, data):
        raise OSError("simulated crash before network.json was replaced")

    with monkeypatch.context() as m:
        m.setattr(network_io, "atomic_write_bytes", crash)
        with pytest.raises(OSError, match="simulated crash"):
            save_network(_network(seed=1), folder)
    # new weights beside the old network.json: refused, not combined
    with pytest.raises(IntegrityError, match="two saves"):
        load_network(folder, device=_tanh())
    save_network(_network(seed=1), folder)  # saving again repairs it
    x = torch.rand(3, 4, dtype=torch.float64)
    loaded = load_network(folder, device=_tanh())
    torch.testing.assert_close(loaded(x, mode=TrueDevice()), _network(seed=1)(x, mode=TrueDevice()))


# ---------------------------------------------------------------- files without checksums


def _strip_checksum(path: Path, *, drop_metadata: bool = False) -> None:
    """Rewrite a file the way versions without checksums wrote it."""
    blob = path.read_bytes()
    header = json.loads(blob[8 : _header_end(blob)])
    meta = dict(header.get("__metadata__") or {})
    meta.pop(CHECKSUM_KEY)
    doc = json.loads(meta["quasineuron"])
    doc.pop("checksummed")
    meta["quasineuron"] = json.dumps(doc)
    path.write_bytes(st_save(st_load(blob), metadata=None if drop_metadata else meta))


@pytest.mark.parametrize(("what", "make", "load", "fix"), SAFETENSORS_FILES, ids=lambda v: v)
def test_files_written_before_checksums_still_load(tmp_path, what, make, load, fix):
    path = make(tmp_path)
    # network weights used to carry no metadata at all
    _strip_checksum(path, drop_metadata=what == "network weights")
    assert CHECKSUM_KEY.encode() not in path.read_bytes()
    load(path)


def test_network_written_before_checksums_loads_with_its_weights(tmp_path):
    net = _network(seed=3)
    folder = save_network(net, tmp_path / "net")
    _strip_checksum(folder / network_io.WEIGHTS_FILE, drop_metadata=True)
    x = torch.rand(3, 4, dtype=torch.float64)
    loaded = load_network(folder, device=_tanh())
    torch.testing.assert_close(loaded(x, mode=TrueDevice()), net(x, mode=TrueDevice()))


def test_damaged_network_json_without_checksum_is_refused_with_its_name(tmp_path):
    folder = save_network(_network(), tmp_path / "net")
    _strip_checksum(folder / network_io.WEIGHTS_FILE, drop_metadata=True)
    arch = folder / network_io.ARCH_FILE
    arch.write_text(arch.read_text()[:100])
    with pytest.raises(IntegrityError, match=_names(arch) + ".*not valid JSON"):
        load_network(folder, device=_tanh())


# ---------------------------------------------------------------- non-finite twins


def test_twin_with_non_finite_fidelity_is_refused(tmp_path):
    table = sweep(_tanh(), Grid(n=9), progress=False)
    y = table.y.copy()
    y[4, 0] = np.nan  # a point marked successful whose output is NaN
    fit = fit_surrogate(
        dataclasses.replace(table, y=y), kind="mlp", hidden=(4,), max_steps=2, lbfgs_steps=0
    )
    # the fit leaves such a point out (and counts it), so its twin is finite ...
    assert math.isfinite(fit.report.nrmse) and fit.report.sweep_failures == {"non-finite": 1}
    # ... but a twin whose report is not finite (e.g. from an older version) is still refused
    fit.model.fit_report = dataclasses.replace(fit.report, rmse=math.nan, nrmse=math.nan)
    path = tmp_path / "twin.safetensors"
    with pytest.raises(ValueError, match=r"not finite \(rmse=nan.*inf/NaN device outputs"):
        save_surrogate(fit, path)
    assert not path.exists()
    save_surrogate(fit, path, allow_nonfinite=True)  # the documented override
    assert math.isnan(load_surrogate(path).fit_report.nrmse)


def test_twin_that_blew_up_is_refused(tmp_path):
    table = sweep(_tanh(), Grid(n=9), progress=False)
    fit = fit_surrogate(table, kind="mlp", hidden=(4,), max_steps=2, lbfgs_steps=0)
    with torch.no_grad():
        fit.model.w0.fill_(math.nan)  # as after a diverged fit
    with pytest.raises(ValueError, match="tensor 'w0'.*blew up.*allow_nonfinite=True"):
        save_surrogate(fit, tmp_path / "twin.safetensors")


# ---------------------------------------------------------------- evaluation of inf outputs


def test_evaluate_counts_rows_whose_device_output_is_inf(tmp_path):
    # the device overflows to inf for drives beyond 1e6; rows of x set to 1e30 drive it there
    def overflowing(u: torch.Tensor) -> torch.Tensor:
        return torch.where(u.abs() > 1e6, torch.full_like(u, math.inf), torch.tanh(u))

    box = Box((-1.0,), (1.0,))
    device = FormulaDevice(overflowing, n_in=1, n_out=1, domain=box, name="overflowing")
    net = DeviceNetwork(device, (4, 3, 2), twin=_tanh(), seed=0, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(20, 4, generator=g, dtype=torch.float64)
    bad = torch.tensor([1, 4, 5, 9, 13, 17, 18])
    x[bad] = 1e30
    data = ArrayDataset(x, torch.randint(0, 2, (20,), generator=g), name="probe")
    with pytest.warns(NonFiniteOutputWarning, match="'device': 7 of 20 rows") as record:
        report = evaluate(net, data, modes=(Surrogate(), TrueDevice()))
    assert len(record) == 1  # once for the device mode, none for the finite twin
    assert report.nonfinite_rows == {"surrogate": 0, "device": 7}
    assert report.to_dict()["nonfinite_rows"] == {"surrogate": 0, "device": 7}
    assert sum(map(sum, report.confusion["device"])) == 20 - 7
    good = torch.ones(20, dtype=torch.bool)
    good[bad] = False
    pred = net(x[good], mode=TrueDevice()).argmax(dim=1)
    assert report.accuracy["device"] == (pred == data.y[good]).sum().item() / 20
