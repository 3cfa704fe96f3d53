from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from quasineuron.devices.base import Box
from quasineuron.errors import OutOfDomainError, OutOfDomainWarning
from quasineuron.surrogate import SplineSurrogate


@pytest.fixture
def twin() -> SplineSurrogate:
    x = np.linspace(-1.0, 1.0, 9)
    return SplineSurrogate.from_grid([x], np.tanh(x)[:, None], domain=Box((-1.0,), (1.0,)))


INSIDE = torch.tensor([[-1.0], [0.0], [1.0]], dtype=torch.float64)
MIXED = torch.tensor([[-3.0], [0.0], [0.5], [2.0]], dtype=torch.float64)


def test_inside_domain_is_silent_and_not_counted(twin):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        twin(INSIDE)
    assert twin.n_out_of_domain == 0


def test_warn_counts_rows_and_points_at_the_caller(twin):
    with pytest.warns(
        OutOfDomainWarning, match=r"2 of 4 drive rows .*low=\[-1.0\], high=\[1.0\]"
    ) as rec:
        out = twin(MIXED)
    assert rec[0].filename == __file__
    assert twin.n_out_of_domain == 2
    assert torch.isfinite(out).all()
    with pytest.warns(OutOfDomainWarning):
        twin(MIXED)
    assert twin.n_out_of_domain == 4
    twin.reset_domain_count()
    assert twin.n_out_of_domain == 0


def test_clamp_evaluates_at_the_nearest_edge(twin):
    twin.policy = "clamp"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = twin(MIXED)
    torch.testing.assert_close(out, twin(MIXED.clamp(-1.0, 1.0)))
    assert twin.n_out_of_domain == 2


def test_raise_refuses_and_counts(twin):
    twin.policy = "raise"
    with pytest.raises(OutOfDomainError, match="2 of 4 drive rows"):
        twin(MIXED)
    assert twin.n_out_of_domain == 2
    twin(INSIDE)


def test_unknown_policy_is_rejected(twin):
    with pytest.raises(ValueError, match="policy must be one of"):
        twin.policy = "ignore"


@pytest.mark.parametrize("fused", [True, False])
def test_the_span_in_the_message_skips_nan_drives_and_counts_them(twin, fused):
    # a NaN drive made every extremum of the message NaN ("span low=[nan]")
    twin.fused = fused
    u = torch.cat([MIXED, torch.tensor([[float("nan")]], dtype=torch.float64)])
    with pytest.warns(
        OutOfDomainWarning,
        match=r"2 of 5 drive rows .*span low=\[-3.0\], high=\[2.0\] \(1 row holds NaN drives",
    ):
        twin(u)
