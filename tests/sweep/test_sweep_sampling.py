import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quasineuron.devices.base import Box
from quasineuron.sweep import Grid, LatinHypercube, Random, Sobol

BOX = Box(low=(-1.0, 0.0, 10.0), high=(1.0, 2.0, 10.5))
SEEDED = (Random, Sobol, LatinHypercube)


def test_grid_sizes_order_and_endpoints():
    pts = Grid(n=(3, 2, 4)).points(BOX)
    assert pts.shape == (24, 3) and pts.dtype == np.float64
    assert Grid(n=(3, 2, 4)).n_points(3) == 24
    np.testing.assert_array_equal(np.unique(pts[:, 0]), [-1.0, 0.0, 1.0])
    np.testing.assert_array_equal(np.unique(pts[:, 1]), [0.0, 2.0])
    np.testing.assert_allclose(np.unique(pts[:, 2]), np.linspace(10.0, 10.5, 4), rtol=0, atol=0)
    np.testing.assert_array_equal(pts[0], BOX.low)
    np.testing.assert_array_equal(pts[-1], BOX.high)
    # C order: the last drive varies fastest
    np.testing.assert_array_equal(pts[:4, 0], [-1.0] * 4)
    assert len(np.unique(pts, axis=0)) == 24


def test_grid_single_int_and_midpoint():
    assert Grid(n=5).points(BOX).shape == (125, 3)
    pts = Grid(n=(1, 1, 2)).points(BOX)
    np.testing.assert_array_equal(pts[:, :2], [[0.0, 1.0], [0.0, 1.0]])


@pytest.mark.parametrize("cls", SEEDED)
def test_seeded_sizes_bounds_and_determinism(cls):
    a = cls(n=100, seed=3).points(BOX)
    assert a.shape == (100, 3) and a.dtype == np.float64
    assert cls(n=100, seed=3).n_points(3) == 100
    np.testing.assert_array_equal(a, cls(n=100, seed=3).points(BOX))
    assert not np.array_equal(a, cls(n=100, seed=4).points(BOX))
    assert (a >= BOX.low).all() and (a <= BOX.high).all()
    assert cls(n=100, seed=3).describe() == {"kind": cls.__name__, "n": 100, "seed": 3}


def test_latin_hypercube_has_one_point_per_stratum():
    n = 16
    unit = (LatinHypercube(n=n, seed=0).points(BOX) - np.array(BOX.low)) / (
        np.array(BOX.high) - np.array(BOX.low)
    )
    for axis in range(3):
        np.testing.assert_array_equal(np.sort(np.floor(unit[:, axis] * n)), np.arange(n))


def test_sobol_power_of_two_is_balanced():
    unit = Sobol(n=64, seed=1).points(Box(low=(0.0, 0.0), high=(1.0, 1.0)))
    counts = np.histogram2d(unit[:, 0], unit[:, 1], bins=8, range=[[0, 1], [0, 1]])[0]
    np.testing.assert_array_equal(counts, np.ones((8, 8)))
    # Any n is accepted: the first n points of the sequence.
    np.testing.assert_array_equal(
        Sobol(n=10, seed=1).points(BOX), Sobol(n=16, seed=1).points(BOX)[:10]
    )


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda: Grid(n=0), ValueError, "Grid.n must be >= 1"),
        (lambda: Grid(n=()), ValueError, "one count per drive"),
        (lambda: Grid(n=2.5), TypeError, "Grid.n must be an int"),
        (lambda: Random(n=0), ValueError, "Random.n must be >= 1"),
        (lambda: Sobol(n=8, seed=-1), ValueError, "Sobol.seed"),
        (lambda: LatinHypercube(n=8, seed=1.5), TypeError, "LatinHypercube.seed"),
    ],
)
def test_invalid_samplers_are_refused(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_grid_dimension_mismatch_message():
    with pytest.raises(ValueError, match="Grid.n has 2 counts .* domain has 3 drives"):
        Grid(n=(3, 3)).points(BOX)


def test_describe_is_json_ready():
    assert Grid(n=(3, 4)).describe() == {"kind": "Grid", "n": [3, 4]}
    assert Grid(n=[3, 4]) == Grid(n=(3, 4))


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    kind=st.sampled_from(["grid", *SEEDED]),
    n=st.integers(1, 40),
    seed=st.integers(0, 2**31),
    bounds=st.lists(st.tuples(st.floats(-1e6, 1e6), st.floats(1e-6, 1e6)), min_size=1, max_size=4),
)
def test_points_lie_in_domain(kind, n, seed, bounds):
    box = Box(low=tuple(lo for lo, _ in bounds), high=tuple(lo + w for lo, w in bounds))
    sampler = Grid(n=min(n, 6)) if kind == "grid" else kind(n=n, seed=seed)
    pts = sampler.points(box)
    assert pts.shape == (sampler.n_points(box.dim), box.dim)
    assert (pts >= np.array(box.low)).all() and (pts <= np.array(box.high)).all()
