"""Check your own device before a long sweep: ``qn.check_device`` and its report.

1. A formula device built the picklable way (a module-level function bound by
   ``functools.partial``) passes every check.
2. The same formula written as a lambda fails the pickle check: it could not go to worker
   processes (``characterize --workers 2``). ``strict=False`` reports instead of raising.
3. A device that diverges over part of its domain passes, and the report says where and how
   much (a sweep would record those points as failed).

    python examples/check_your_device.py           # well under a second of checks
    python examples/check_your_device.py --quick   # the same (it is already small)
"""

from __future__ import annotations

import argparse
from functools import partial

import torch

import quasineuron as qn


def diode(u: torch.Tensor, *, gain: float) -> torch.Tensor:
    """A diode-like response; u (batch, 1) → (batch, 1), same dtype."""
    return torch.nn.functional.softplus(gain * u) / gain - 0.1 * u


def log_detector(u: torch.Tensor) -> torch.Tensor:
    """``log(u)``: non-finite for drives ``u <= 0``, i.e. on half of the box [-1, 1]."""
    return torch.log(u)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="accepted for uniformity")
    parser.parse_args()
    box = qn.Box((-2.0,), (2.0,))

    good = qn.FormulaDevice(partial(diode, gain=4.0), n_in=1, n_out=1, domain=box, name="diode")
    print(qn.check_device(good), end="\n\n")

    def inline(u: torch.Tensor) -> torch.Tensor:  # a nested function: cannot be pickled
        return diode(u, gain=4.0)

    nested = qn.FormulaDevice(inline, n_in=1, n_out=1, domain=box, name="diode-nested")
    report = qn.check_device(nested, strict=False)
    print(report, end="\n\n")
    assert report.failed == ("pickle",)

    half = qn.FormulaDevice(
        log_detector, n_in=1, n_out=1, domain=qn.Box((-1.0,), (1.0,)), name="log-detector"
    )
    report = qn.check_device(half, skip=("gradients",))
    print(report)
    assert report.ok and 0.4 < report.nonfinite_fraction < 0.6


if __name__ == "__main__":
    main()
