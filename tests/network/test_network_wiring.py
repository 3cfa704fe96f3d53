from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from quasineuron.network import Dense, FanIn, Ports, Sparse


@settings(max_examples=40, deadline=None)
@given(
    ratio=st.floats(0.01, 1.0),
    n_in=st.integers(1, 64),
    n_out=st.integers(1, 64),
    seed=st.integers(0, 2**31 - 1),
)
def test_sparse_mask_has_exact_link_count(ratio, n_in, n_out, seed):
    mask = Sparse(link_ratio=ratio).mask(n_in, n_out, seed=seed)
    assert mask.dtype == torch.bool and mask.shape == (n_in, n_out)
    assert int(mask.sum()) == max(1, round(ratio * n_in * n_out))


def test_masks_are_seeded_and_do_not_touch_global_rng():
    state = torch.random.get_rng_state()
    a = Sparse(0.3).mask(20, 30, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a, Sparse(0.3).mask(20, 30, seed=5))
    assert not torch.equal(a, Sparse(0.3).mask(20, 30, seed=6))


def test_dense_mask_is_all_true():
    assert bool(Dense().mask(4, 7).all())


@settings(max_examples=30, deadline=None)
@given(k=st.integers(1, 8), n_in=st.integers(8, 40), n_out=st.integers(1, 40))
def test_fan_in_mask_has_k_inputs_per_column(k, n_in, n_out):
    mask = FanIn(k).mask(n_in, n_out, seed=0)
    assert torch.equal(mask.sum(0), torch.full((n_out,), k))


@settings(max_examples=30, deadline=None)
@given(n_in=st.integers(1, 50), n_out=st.integers(1, 50), seed=st.integers(0, 1000))
def test_ports_one_to_one_gives_each_port_one_input_spread_evenly(n_in, n_out, seed):
    mask = Ports().mask(n_in, n_out, seed=seed)
    assert torch.equal(mask.sum(0), torch.ones(n_out, dtype=torch.long))
    uses = mask.sum(1)
    assert int(uses.max()) - int(uses.min()) <= 1  # balanced: every input used ⌊⌋ or ⌈⌉ times
    if n_out <= n_in:
        assert int(uses.max()) == 1  # one-to-one: no input feeds two ports


@settings(max_examples=30, deadline=None)
@given(adder=st.integers(1, 6), n_in=st.integers(1, 30), n_out=st.integers(1, 30))
def test_ports_with_adder_have_fan_in_at_most_k(adder, n_in, n_out):
    mask = Ports(adder=adder).mask(n_in, n_out, seed=3)
    fan = mask.sum(0)
    assert int(fan.max()) <= adder
    assert torch.equal(fan, torch.full((n_out,), min(adder, n_in)))
    uses = mask.sum(1)
    assert int(uses.max()) - int(uses.min()) <= 1


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Sparse(0.0), "link_ratio"),
        (lambda: Sparse(1.5), "link_ratio"),
        (lambda: FanIn(0), "positive"),
        (lambda: Ports(adder=0), "positive"),
        (lambda: FanIn(5).mask(3, 2), "n_in=3"),
    ],
)
def test_bad_wiring_arguments_are_rejected(make, match):
    with pytest.raises(ValueError, match=match):
        make()
