"""load_measurements: measured data becomes the table a sweep produces, and twins fit it."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from quasineuron.devices import Noisy, ideal_neuron
from quasineuron.devices.base import Box
from quasineuron.surrogate import fit_surrogate
from quasineuron.sweep import Grid, PointStatus, load_measurements, sweep
from quasineuron.sweep.sampling import repeat_index

F64 = torch.float64


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def NoisyTanh(std: float, seed: int = 0) -> Noisy:
    """tanh(u) on [-3.0, 3.0] plus Gaussian noise of known ``std`` from a seeded generator."""
    return Noisy(ideal_neuron("tanh", limit=3.0), std=std, seed=seed)


# -- unit tests ---------------------------------------------------------------------------------


def test_columns_map_to_drives_and_outputs_in_the_given_order(tmp_path: Path) -> None:
    p = _write_csv(
        tmp_path / "iv.csv",
        ["I_drain", "note", "V_gate", "V_drain", "I_gate"],
        [[1.0, "a", 0.1, 0.5, 10.0], [2.0, "b", 0.2, 0.7, 20.0], [3.0, "c", 0.3, 0.9, 30.0]],
    )
    t = load_measurements(p, drives=["V_drain", "V_gate"], outputs=["I_gate", "I_drain"])
    np.testing.assert_array_equal(t.u, [[0.5, 0.1], [0.7, 0.2], [0.9, 0.3]])
    np.testing.assert_array_equal(t.y, [[10.0, 1.0], [20.0, 2.0], [30.0, 3.0]])
    assert t.status.tolist() == [PointStatus.OK] * 3
    # the domain defaults to the data's bounding box, drive by drive
    assert t.domain == Box(low=(0.5, 0.1), high=(0.9, 0.3))
    assert t.device["drives"] == ["V_drain", "V_gate"] and t.device["kind"] == "measured"
    assert t.sampler == {"kind": "measured"}


def test_units_are_kept_in_the_device_description(tmp_path: Path) -> None:
    p = _write_csv(tmp_path / "d.csv", ["V", "I"], [[0.0, 1e-6], [1.0, 2e-6]])
    t = load_measurements(p, drives=["V"], outputs=["I"], units={"I": "A", "V": "V"})
    assert t.device["units"] == {"V": "V", "I": "A"}
    with pytest.raises(ValueError, match="units names column 'T'"):
        load_measurements(p, drives=["V"], outputs=["I"], units={"T": "K"})


def test_missing_and_non_finite_outputs_are_kept_as_nonfinite(tmp_path: Path) -> None:
    p = _write_csv(
        tmp_path / "d.csv",
        ["u", "y", "z"],
        [[0.0, 1.0, 1.0], [1.0, "", 2.0], [2.0, "nan", 3.0], [3.0, 4.0, "inf"], [4.0, 5, 5]],
    )
    t = load_measurements(p, drives=["u"], outputs=["y", "z"])
    assert t.n_points == 5  # nothing dropped
    assert t.status.tolist() == [0, 1, 1, 1, 0]
    assert t.n_failed == 3
    assert np.isinf(t.y[3, 1]) and np.isnan(t.y[1, 0])
    fit = fit_surrogate(t, kind="mlp", hidden=(4,), max_steps=25, lbfgs_steps=0)
    assert fit.report.n_failed == 3


def test_status_column_flags_rows_and_cannot_hide_a_missing_output(tmp_path: Path) -> None:
    p = _write_csv(
        tmp_path / "d.csv",
        ["u", "y", "flag"],
        [[0.0, 1.0, "ok"], [1.0, 2.0, "error"], [2.0, "", 0], [3.0, 4.0, 3]],
    )
    t = load_measurements(p, drives=["u"], outputs=["y"], status="flag")
    assert t.status.tolist() == [
        PointStatus.OK,
        PointStatus.ERROR,
        PointStatus.NONFINITE,
        PointStatus.TIMEOUT,
    ]
    assert t.errors == {
        1: "MeasurementError: flagged error in column 'flag' (data row 2)",
        3: "MeasurementError: flagged timeout in column 'flag' (data row 4)",
    }
    bad = _write_csv(tmp_path / "b.csv", ["u", "y", "flag"], [[0.0, 1.0, "ok"], [1.0, 2.0, "?"]])
    with pytest.raises(ValueError, match=r"status column 'flag', data row 2 holds '\?'"):
        load_measurements(bad, drives=["u"], outputs=["y"], status="flag")


def test_repeats_are_grouped_into_the_layout_of_a_repeated_sweep(tmp_path: Path) -> None:
    # three points measured three times, interleaved in the file as a lab might log them
    rows = [[u, 10 * u + r] for u in (0.0, 1.0, 2.0) for r in range(3)]
    t = load_measurements(
        _write_csv(tmp_path / "d.csv", ["u", "y"], rows), drives=["u"], outputs=["y"]
    )
    assert t.sampler == {"kind": "measured", "repeats": 3}
    np.testing.assert_array_equal(t.u[:, 0], [0, 1, 2] * 3)
    # repeat r of point i is the r-th time the file measured it
    np.testing.assert_array_equal(t.y[:, 0], [0, 10, 20, 1, 11, 21, 2, 12, 22])
    assert repeat_index(t.sampler, t.n_points).tolist() == [0] * 3 + [1] * 3 + [2] * 3
    rep = fit_surrogate(t, kind="mlp", hidden=(4,), max_steps=25, lbfgs_steps=0).report
    # per point the repeats are 0, 1, 2 above its base value: std 1
    assert rep.repeats == 3 and rep.noise_floor == pytest.approx((1.0,))


def test_unequal_repeats_keep_the_file_order(tmp_path: Path) -> None:
    rows = [[0.0, 1.0], [1.0, 2.0], [0.0, 3.0]]
    t = load_measurements(
        _write_csv(tmp_path / "d.csv", ["u", "y"], rows), drives=["u"], outputs=["y"]
    )
    assert "repeats" not in t.sampler
    np.testing.assert_array_equal(t.y[:, 0], [1.0, 2.0, 3.0])


def test_a_repeat_column_orders_the_rows_and_is_checked(tmp_path: Path) -> None:
    rows = [[1, 0.0, 5.0], [1, 1.0, 6.0], [0, 1.0, 2.0], [0, 0.0, 1.0]]
    p = _write_csv(tmp_path / "d.csv", ["run", "u", "y"], rows)
    t = load_measurements(p, drives=["u"], outputs=["y"], repeat="run")
    assert t.sampler["repeats"] == 2
    np.testing.assert_array_equal(t.u[:, 0], [1.0, 0.0, 1.0, 0.0])
    np.testing.assert_array_equal(t.y[:, 0], [2.0, 1.0, 6.0, 5.0])
    short = _write_csv(tmp_path / "s.csv", ["run", "u", "y"], rows[:3])
    with pytest.raises(ValueError, match="repeat 1 .* does not measure the same drive values"):
        load_measurements(short, drives=["u"], outputs=["y"], repeat="run")


def test_bad_column_names_are_refused_with_the_available_ones(tmp_path: Path) -> None:
    p = _write_csv(tmp_path / "d.csv", ["V_gate", "I_drain"], [[0.0, 1.0], [1.0, 2.0]])
    with pytest.raises(ValueError, match=r"no column 'V_gat'; did you mean 'V_gate'\?"):
        load_measurements(p, drives=["V_gat"], outputs=["I_drain"])
    with pytest.raises(ValueError, match="both drives and outputs"):
        load_measurements(p, drives=["V_gate"], outputs=["V_gate"])
    with pytest.raises(ValueError, match="more than once"):
        load_measurements(p, drives=["V_gate", "V_gate"], outputs=["I_drain"])
    with pytest.raises(TypeError, match="list of column names"):
        load_measurements(p, drives="V_gate", outputs=["I_drain"])


def test_bad_values_name_the_column_and_row(tmp_path: Path) -> None:
    p = _write_csv(tmp_path / "d.csv", ["u", "y"], [[0.0, 1.0], [1.0, "1,5"]])
    with pytest.raises(ValueError, match="column 'y', data row 2 holds '1,5'"):
        load_measurements(p, drives=["u"], outputs=["y"])
    p = _write_csv(tmp_path / "e.csv", ["u", "y"], [[0.0, 1.0], ["", 2.0]])
    with pytest.raises(ValueError, match="drive 'u' is missing or non-finite in data row 2"):
        load_measurements(p, drives=["u"], outputs=["y"])
    p = _write_csv(tmp_path / "f.csv", ["u", "y"], [[1.0, 1.0], [1.0, 2.0]])
    with pytest.raises(ValueError, match="single value 1.0.*domain=Box"):
        load_measurements(p, drives=["u"], outputs=["y"])


def test_a_given_domain_is_kept_and_must_hold_the_data(tmp_path: Path) -> None:
    p = _write_csv(tmp_path / "d.csv", ["u", "y"], [[0.0, 1.0], [1.0, 2.0]])
    box = Box((-1.0,), (2.0,))
    assert load_measurements(p, drives=["u"], outputs=["y"], domain=box).domain == box
    with pytest.raises(ValueError, match="outside domain"):
        load_measurements(p, drives=["u"], outputs=["y"], domain=Box((0.5,), (2.0,)))


def test_comment_lines_and_the_file_digest(tmp_path: Path) -> None:
    p = tmp_path / "d.csv"
    p.write_text("# instrument: SMU 1\n# date: today\nu,y\n0,1\n1,2\n")
    t = load_measurements(p, drives=["u"], outputs=["y"])
    assert t.n_points == 2 and len(t.device["sha256"]) == 64


def test_hdf5_datasets_map_like_columns(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py", reason="h5py is not installed (pip install h5py)")
    p = tmp_path / "d.h5"
    with h5py.File(p, "w") as f:
        f["sweep/V"] = np.array([0.0, 1.0, 2.0])
        f["sweep/I"] = np.array([1.0, np.nan, 3.0])
    t = load_measurements(p, drives=["sweep/V"], outputs=["sweep/I"], units={"sweep/I": "A"})
    np.testing.assert_array_equal(t.u[:, 0], [0.0, 1.0, 2.0])
    assert t.status.tolist() == [0, 1, 0] and t.device["units"] == {"sweep/I": "A"}
    with pytest.raises(ValueError, match="no dataset 'sweep/J'"):
        load_measurements(p, drives=["sweep/V"], outputs=["sweep/J"])


def test_netcdf_variables_map_like_columns(tmp_path: Path) -> None:
    xarray = pytest.importorskip("xarray", reason="xarray is not installed (pip install xarray)")
    pytest.importorskip("netCDF4", reason="netCDF4 is not installed (pip install netCDF4)")
    p = tmp_path / "d.nc"
    xarray.Dataset(
        {"I": ("n", [1.0, np.nan, 3.0])}, coords={"V": ("n", [0.0, 1.0, 2.0])}
    ).to_netcdf(p)
    t = load_measurements(p, drives=["V"], outputs=["I"])
    np.testing.assert_array_equal(t.u[:, 0], [0.0, 1.0, 2.0])
    assert t.status.tolist() == [0, 1, 0]


@pytest.mark.parametrize(
    ("module", "suffix", "advice"),
    [("h5py", ".h5", r"quasineuron\[measured\]"), ("xarray", ".nc", r"quasineuron\[measured\]")],
)
def test_a_missing_reader_names_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, suffix: str, advice: str
) -> None:
    import builtins

    real_import = builtins.__import__

    def without(name: str, *args: object, **kwargs: object) -> object:
        if name == module:
            raise ImportError(f"No module named {module!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without)
    p = tmp_path / f"d{suffix}"
    p.write_bytes(b"\x89HDF\r\n\x1a\n")
    with pytest.raises(ImportError, match=advice):
        load_measurements(p, drives=["V"], outputs=["I"])


def test_a_ragged_row_names_its_line(tmp_path: Path) -> None:
    p = tmp_path / "d.csv"
    p.write_text("# comment\n\nu,y\n0,1\n1,2,3\n")
    with pytest.raises(ValueError, match="line 5: 3 fields but the header has 2"):
        load_measurements(p, drives=["u"], outputs=["y"])
    with pytest.raises(ValueError, match="the status column 'u' is already used"):
        load_measurements(p, drives=["u"], outputs=["y"], status="u")


# -- acceptance: a twin from measurements trains like a twin from a live sweep ------------------


def _noisy_measurements(path: Path, std: float, n: int, repeats: int) -> Path:
    dev = NoisyTanh(std, seed=7)
    u = np.linspace(-3.0, 3.0, n)
    rows = []
    for i in range(n):  # point by point, repeats next to each other, as a lab logs them
        y = dev(torch.full((repeats, 1), u[i], dtype=F64))[:, 0].tolist()
        rows += [[repr(float(u[i])), repr(v)] for v in y]
    return _write_csv(path, ["V_in", "V_out"], rows)


def test_a_measured_twin_gives_the_noise_floor_and_trains_like_a_live_one(tmp_path: Path) -> None:
    import quasineuron as qn

    std, n = 0.02, 101
    table = load_measurements(
        _noisy_measurements(tmp_path / "m.csv", std, n, 3),
        drives=["V_in"],
        outputs=["V_out"],
        units={"V_in": "V", "V_out": "V"},
    )
    assert table.sampler["repeats"] == 3 and table.n_points == 3 * n
    # tanh saturates beyond the measured range: clamping drives there is exact enough
    measured = fit_surrogate(table, kind="spline", policy="clamp")
    rep = measured.report
    # 101 points x 2 degrees of freedom: the estimate's relative error is about 1/sqrt(404) = 5 %
    assert rep.repeats == 3 and rep.noise_floor[0] == pytest.approx(std, rel=0.15)
    assert rep.validation != "device-sobol"  # no true device: a held-out table estimate
    live = fit_surrogate(
        sweep(NoisyTanh(std, seed=1), Grid(n=n), repeats=3, progress=False),
        kind="spline",
        policy="clamp",
    )
    assert live.report.noise_floor[0] == pytest.approx(std, rel=0.15)

    train_set, test_set = qn.load_digits()
    acc = {}
    for key, twin in (("measured", measured.model), ("live", live.model)):
        net = qn.DeviceNetwork(NoisyTanh(std, seed=2), (64, 16, 10), twin=twin, seed=0)
        result = qn.train(
            net,
            train_set,
            mode=qn.Surrogate(),
            epochs=3,
            batch_size=32,
            lr=1e-2,
            seed=0,
            progress=False,
        )
        report = qn.evaluate(result.network, test_set, modes=(qn.TrueDevice(),))
        acc[key] = report.accuracy["device"]
    # measured: 0.936 and 0.933 (noise floors 0.0208 and 0.0218; about 4 s on 2 cores)
    assert acc["measured"] > 0.8, acc
    assert abs(acc["measured"] - acc["live"]) <= 0.03, acc
