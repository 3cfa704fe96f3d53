"""sweep(..., repeats=k): k copies of the points, recorded in the store, checked on resume."""

from __future__ import annotations

import numpy as np
import pytest
from sweep_helpers import Elementwise

from quasineuron.errors import StoreMismatchError
from quasineuron.sweep import Grid, Repeated, SweepTable, sweep
from quasineuron.sweep.sampling import repeat_index


def test_repeats_tile_the_points_and_resume(tmp_path) -> None:
    dev = Elementwise()
    table = sweep(dev, Grid(n=3), store=tmp_path / "s", repeats=2, batch_size=4, progress=False)
    base = Grid(n=3).points(dev.domain)
    np.testing.assert_array_equal(table.u, np.concatenate([base, base]))
    assert table.sampler == {"kind": "Grid", "n": 3, "repeats": 2}
    assert repeat_index(table.sampler, table.n_points).tolist() == [0] * 9 + [1] * 9
    again = sweep(dev, Grid(n=3), store=tmp_path / "s", repeats=2, batch_size=4, progress=False)
    np.testing.assert_array_equal(again.y, table.y)
    assert SweepTable.open(tmp_path / "s").sampler["repeats"] == 2


@pytest.mark.parametrize("other", [1, 3])
def test_resume_with_other_repeats_is_refused(tmp_path, other: int) -> None:
    dev = Elementwise()
    sweep(dev, Grid(n=3), store=tmp_path / "s", repeats=2, progress=False)
    with pytest.raises(StoreMismatchError, match="repeats"):
        sweep(dev, Grid(n=3), store=tmp_path / "s", repeats=other, progress=False)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_repeats_must_be_a_positive_int(bad: object) -> None:
    with pytest.raises(ValueError, match="repeats must be an int >= 1"):
        sweep(Elementwise(), Grid(n=3), repeats=bad, progress=False)  # type: ignore[arg-type]


def test_repeated_sampler_validates() -> None:
    with pytest.raises(ValueError, match="repeats must be >= 2"):
        Repeated(Grid(n=3), 1)
    with pytest.raises(TypeError, match="not itself Repeated"):
        Repeated(Repeated(Grid(n=3), 2), 2)
