"""Devices of the realism suite for `quasineuron run` (import them with --allow-import).

    PYTHONPATH=examples quasineuron run examples/realism-nan.toml \
        --allow-import realism_devices --out runs/realism-nan
"""

from __future__ import annotations

import math

import torch

import quasineuron as qn


def _tanh_failing_above(u: torch.Tensor, *, above: float) -> torch.Tensor:
    y = torch.tanh(u)
    return torch.where(u > above, torch.full_like(y, math.nan), y)


def noisy_nan_tanh(
    above: float = 2.2, std: float = 0.02, limit: float = 3.0, seed: int = 0
) -> qn.AbstractDevice:
    """tanh on [-limit, limit] that returns NaN above ``above`` (inside its domain), plus noise."""

    def fn(u: torch.Tensor) -> torch.Tensor:
        return _tanh_failing_above(u, above=above)

    dev = qn.FormulaDevice(
        fn, n_in=1, n_out=1, domain=qn.Box((-limit,), (limit,)), name="nan-tanh", probe=False
    )
    return qn.Noisy(dev, std=std, seed=seed)
