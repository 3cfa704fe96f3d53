import json

import numpy as np
import pytest
import torch
import zarr
from sweep_helpers import DOMAIN, Elementwise, Flaky, WrongShape

import quasineuron
from quasineuron.devices.base import Box
from quasineuron.errors import (
    DeviceContractError,
    SimulationError,
    StoreCorruptError,
    StoreMismatchError,
)
from quasineuron.sweep import (
    AbstractExecutor,
    Grid,
    PointStatus,
    Random,
    SerialExecutor,
    SweepStore,
    SweepTable,
    evaluate_points,
    sweep,
)

GRID = Grid(n=(5, 4))


def expected_y(u):
    return np.stack([np.sin(u[:, 0]) * u[:, 1], u[:, 0] + u[:, 1] ** 2], axis=-1)


def assert_tables_equal(a, b):
    np.testing.assert_array_equal(a.u, b.u)
    np.testing.assert_array_equal(a.y, b.y)
    np.testing.assert_array_equal(a.status, b.status)
    assert a.errors == b.errors


def test_in_memory_sweep():
    t = sweep(Elementwise(), GRID, batch_size=6, progress=False)
    np.testing.assert_array_equal(t.u, GRID.points(DOMAIN))
    np.testing.assert_allclose(t.y, expected_y(t.u), rtol=1e-15, atol=0)
    assert t.n_points == 20 and t.n_failed == 0 and t.ok.all() and t.errors == {}
    assert t.status.dtype == np.int8 and t.domain == DOMAIN
    assert t.sampler == GRID.describe() and t.device["name"] == "elementwise"


def test_store_round_trip_and_manifest(tmp_path):
    t = sweep(Elementwise(), GRID, store=tmp_path / "s", batch_size=6, progress=False)
    assert_tables_equal(t, SweepTable.open(tmp_path / "s"))
    assert t.ok.all()
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert m["device"] == json.loads(json.dumps(Elementwise().describe()))
    assert m["domain"] == DOMAIN.to_dict() and m["sampler"] == GRID.describe()
    assert m["dtype"] == "float64" and m["batch_size"] == 6 and m["n_points"] == 20
    assert m["quasineuron_version"] == quasineuron.__version__ and m["created"]
    assert m["seed"] is None
    g = zarr.open_group(tmp_path / "s" / "table.zarr", mode="r")
    assert g.attrs["quasineuron_sweep"] == m
    assert g["y"].chunks == (6, 2) and g["status"].chunks == (6,)
    # a second call with the same arguments evaluates nothing and returns the same table
    again = sweep(
        Elementwise(log=tmp_path / "log"), GRID, store=tmp_path / "s", batch_size=6, progress=False
    )
    assert_tables_equal(t, again)
    assert not (tmp_path / "log").exists()


def test_descriptions_with_functions_resume_across_processes(tmp_path):
    class WithFn(Elementwise):
        def describe(self):
            return {**super().describe(), "fn": expected_y, "obj": object(), "t": torch.ones(2)}

    sweep(WithFn(), GRID, store=tmp_path / "s", progress=False)
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert m["device"]["fn"].endswith("expected_y") and m["device"]["t"] == [1.0, 1.0]
    assert "0x" not in m["device"]["obj"]
    sweep(WithFn(), GRID, store=tmp_path / "s", progress=False)  # new object(): still matches


def test_seed_is_recorded(tmp_path):
    sweep(Elementwise(), Random(n=7, seed=11), store=tmp_path / "s", progress=False)
    assert json.loads((tmp_path / "s" / "manifest.json").read_text())["seed"] == 11


def test_float32_sweep_records_the_rounded_drives():
    t = sweep(Elementwise(), Random(n=9, seed=0), batch_size=4, progress=False, dtype=torch.float32)
    np.testing.assert_array_equal(t.u, t.u.astype(np.float32).astype(np.float64))
    np.testing.assert_allclose(t.y, expected_y(t.u), rtol=1e-6, atol=1e-6)


def test_failures_are_recorded_and_sweep_goes_on(tmp_path):
    grid = Grid(n=(9, 2))  # u0 in {-1, -0.75, ..., 1}
    t = sweep(Flaky(), grid, store=tmp_path / "s", batch_size=4, progress=False)
    u0 = t.u[:, 0]
    raised, nan = u0 > 0.5, u0 < -0.5
    np.testing.assert_array_equal(t.status[raised], PointStatus.ERROR)
    np.testing.assert_array_equal(t.status[nan], PointStatus.NONFINITE)
    np.testing.assert_array_equal(t.status[~raised & ~nan], PointStatus.OK)
    assert t.n_failed == int(raised.sum() + nan.sum()) == 8
    assert set(t.errors) == set(np.flatnonzero(raised).tolist())
    assert t.errors[int(np.flatnonzero(raised)[0])] == "ValueError: solver diverged at u0=0.750"
    assert np.isnan(t.y[raised]).all()
    # points of a failed batch that did not raise were evaluated one by one and kept
    np.testing.assert_allclose(t.y[t.ok], expected_y(t.u[t.ok]), rtol=1e-15, atol=0)
    assert_tables_equal(t, SweepTable.open(tmp_path / "s"))
    u_ok, y_ok = t.ok_arrays()
    assert u_ok.shape == (10, 2) and y_ok.shape == (10, 2)


def test_strict_raises_naming_the_point(tmp_path):
    dev = Flaky(domain=Box(low=(0.0, 0.0), high=(1.0, 2.0)))
    grid = Grid(n=(5, 2))  # u0 in {0, 0.25, 0.5, 0.75, 1}: points 6.. raise, in chunk 1
    with pytest.raises(SimulationError, match=r"raised ValueError: solver diverged.*point 6"):
        sweep(dev, grid, batch_size=4, strict=True, progress=False, store=tmp_path / "s")
    with pytest.raises(SimulationError, match=r"non-finite .* at point 0 \(u=\[-1.0, 0.0\]\)"):
        sweep(Flaky(), Grid(n=(9, 2)), batch_size=4, strict=True, progress=False)
    # the chunk committed before the failure stays; a non-strict rerun completes the store
    assert [p.name for p in (tmp_path / "s" / "commits").iterdir()] == ["000000000.json"]
    t = sweep(dev, grid, batch_size=4, progress=False, store=tmp_path / "s")
    assert t.n_failed == 4 and set(t.errors) == {6, 7, 8, 9}


def test_contract_violation_raises():
    with pytest.raises(DeviceContractError, match=r"returned \(2,\) .* expected a tensor"):
        sweep(WrongShape(), GRID, progress=False)


def test_mismatched_store_is_refused_with_the_difference(tmp_path):
    path = tmp_path / "s"
    sweep(Elementwise(), GRID, store=path, batch_size=6, progress=False)
    other_domain = Elementwise(domain=Box(low=(-1.0, 0.0), high=(1.0, 3.0)))
    cases = [
        (dict(device=other_domain), r"domain.high: stored \[1.0, 2.0\], requested \[1.0, 3.0\]"),
        (dict(device=Elementwise(name="other")), r"device.name: stored 'elementwise'"),
        (dict(sampler=Grid(n=(5, 5))), r"sampler.n: stored \[5, 4\], requested \[5, 5\]"),
        (dict(batch_size=5), r"batch_size: stored 6, requested 5"),
        (dict(dtype=torch.float32), r"dtype: stored 'float64', requested 'float32'"),
    ]
    for change, match in cases:
        kwargs = dict(device=Elementwise(), sampler=GRID, batch_size=6, dtype=torch.float64)
        kwargs.update(change)
        with pytest.raises(StoreMismatchError, match=match) as info:
            sweep(kwargs.pop("device"), kwargs.pop("sampler"), store=path, progress=False, **kwargs)
        assert "--overwrite" in str(info.value) and "another folder" in str(info.value)
    # the stored sweep is untouched, and overwrite=True replaces it explicitly
    assert SweepTable.open(path).device["name"] == "elementwise"
    t = sweep(
        Elementwise(name="other"), GRID, store=path, batch_size=6, progress=False, overwrite=True
    )
    assert SweepTable.open(path).device["name"] == "other" and t.ok.all()


def test_foreign_folder_is_never_deleted(tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(StoreMismatchError, match="holds no sweep store"):
        sweep(Elementwise(), GRID, store=tmp_path, progress=False, overwrite=True)
    assert (tmp_path / "mine.txt").read_text() == "precious"
    # an empty folder is fine
    (tmp_path / "empty").mkdir()
    assert sweep(Elementwise(), GRID, store=tmp_path / "empty", progress=False).ok.all()


@pytest.mark.parametrize("damage", ["manifest", "shape", "commit", "missing_manifest"])
def test_corrupt_store_is_refused(tmp_path, damage):
    path = tmp_path / "s"
    sweep(Elementwise(), GRID, store=path, batch_size=6, progress=False)
    if damage == "manifest":
        (path / "manifest.json").write_text('{"format": "quasineuron.sweep", "dev')
        match = "manifest .* is unreadable"
    elif damage == "shape":
        g = zarr.open_group(path / "table.zarr", mode="r+")
        g.create_array("y", shape=(20, 3), chunks=(6, 3), dtype="float64", overwrite=True)
        match = r"array 'y' .* shape \(20, 3\).* requires \(20, 2\)"
    elif damage == "commit":
        (path / "commits" / "000000001.json").write_text("{")
        match = "commit record .*000000001.json is unreadable"
    else:
        (path / "manifest.json").unlink()
        match = "has a table but no manifest.json"
    with pytest.raises(StoreCorruptError, match=match):
        sweep(Elementwise(), GRID, store=path, batch_size=6, progress=False)
    with pytest.raises(StoreCorruptError):
        SweepTable.open(path)
    assert sweep(
        Elementwise(), GRID, store=path, batch_size=6, progress=False, overwrite=True
    ).ok.all()


def test_uncommitted_chunk_is_recomputed(tmp_path):
    """A chunk whose data was written but not committed (killed in between) is redone."""
    path = tmp_path / "s"
    ref = sweep(Elementwise(), GRID, store=path, batch_size=6, progress=False)
    store = SweepStore.open(path, mode="r+")
    store.write_chunk(2, np.full((6, 2), 7.0), np.full(6, PointStatus.ERROR), {13: "junk"})
    (path / "commits" / "000000002.json").unlink()
    partial = SweepTable.open(path)
    assert partial.n_pending == 6 and 13 not in partial.errors
    assert np.isnan(partial.y[12:18]).all()
    log = tmp_path / "log"
    t = sweep(Elementwise(log=log), GRID, store=path, batch_size=6, progress=False)
    assert_tables_equal(ref, t)
    from sweep_helpers import read_log

    assert read_log(log) == [tuple(r) for r in ref.u[12:18]]


class Reversed(AbstractExecutor):
    """Completes items in reverse order, and can stop early like a killed run."""

    def __init__(self, stop_after=None):
        self.stop_after = stop_after

    def map_unordered(self, fn, items):
        for k, (i, arg) in enumerate(reversed(list(items))):
            if k == self.stop_after:
                raise KeyboardInterrupt
            yield i, fn(arg)


def test_out_of_order_completion_and_resume(tmp_path):
    ref = sweep(Elementwise(), GRID, batch_size=3, progress=False)
    path = tmp_path / "s"
    with pytest.raises(KeyboardInterrupt):
        sweep(Elementwise(), GRID, store=path, batch_size=3, executor=Reversed(3), progress=False)
    assert sorted(p.name for p in (path / "commits").iterdir())[0] == "000000004.json"
    assert SweepTable.open(path).n_pending == 12  # chunks 6, 5, 4 hold 2 + 3 + 3
    t = sweep(Elementwise(), GRID, store=path, batch_size=3, executor=Reversed(), progress=False)
    assert_tables_equal(ref, t)


def test_progress_bar_starts_at_points_done(tmp_path, capsys):
    path = tmp_path / "s"
    with pytest.raises(KeyboardInterrupt):
        sweep(Elementwise(), GRID, store=path, batch_size=5, executor=Reversed(2), progress=False)
    sweep(Elementwise(), GRID, store=path, batch_size=5, progress=True)
    err = capsys.readouterr().err
    assert "10/20" in err and "20/20" in err and "failed=0" in err


def test_evaluate_points_and_concat():
    dev = Flaky()
    u = np.array([[0.0, 1.0], [0.9, 1.0], [-0.9, 0.5]])
    t = evaluate_points(dev, u, batch_size=2)
    np.testing.assert_array_equal(
        t.status, [PointStatus.OK, PointStatus.ERROR, PointStatus.NONFINITE]
    )
    assert t.errors == {1: "ValueError: solver diverged at u0=0.900"}
    assert t.sampler == {"kind": "points", "n": 3}
    base = sweep(dev, Grid(n=2), progress=False)
    both = base.concat(t)
    assert set(base.errors) == {2, 3}
    assert both.n_points == 7 and both.errors == {**base.errors, 5: t.errors[1]}
    np.testing.assert_array_equal(both.u[4:], u)
    u_t, y_t = both.to_torch()
    assert u_t.dtype == torch.float64 and u_t.shape == (int(both.ok.sum()), 2)
    assert y_t.dtype == torch.float64 and torch.equal(y_t, torch.tensor(both.y[both.ok]))
    assert both.concat(t).sampler["parts"] == [base.sampler, t.sampler, t.sampler]
    with pytest.raises(ValueError, match="different devices or domains"):
        base.concat(evaluate_points(Elementwise(name="x"), u))
    with pytest.raises(ValueError, match=r"shape \(n_points, 2\)"):
        evaluate_points(dev, np.zeros((3, 3)))


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(batch_size=0), ValueError, "batch_size must be >= 1"),
        (dict(dtype=torch.int64), TypeError, "floating torch.dtype"),
        (dict(executor="processes"), TypeError, "executor must be an AbstractExecutor"),
    ],
)
def test_bad_options_are_refused(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        sweep(Elementwise(), GRID, progress=False, **kwargs)


def test_serial_executor_is_default_and_in_order():
    out = list(SerialExecutor().map_unordered(lambda x: x * 2, [(0, 1), (1, 5)]))
    assert out == [(0, 2), (1, 10)]
