"""Physics-aware training with a deliberately wrong twin, scored on the true device.

The true device is the almost-neuron ``tanh(s1 − 0.1·s2)``. Its twin is fitted, not to the
device, but to a model of it with a 10 % gain error, ``1.1·tanh(s1 − 0.1·s2)``, as when a
twin comes from a miscalibrated measurement or an idealised simulation. Three networks with
the same initial weights are trained on the 8×8 digits set:

- ``surrogate``: forward and backward through the wrong twin (the device is never run);
- ``physics-aware``: forward through the true device, backward through the wrong twin's
  Jacobian at the drives the device actually received (Wright et al., Nature 601, 2022);
- ``reference``: surrogate training with a correct twin, for comparison.

Each is then scored on the true device (and on its twin). The accuracies are printed; which
training wins, and by how much, depends on the error and the task: on classification a pure
gain error is largely absorbed by the next layer's weights and the learned readout scale,
so expect differences of a few points at most. Try ``--gain-error 0.5``.

    python examples/physics_aware.py                     # about a minute on 2 cores
    python examples/physics_aware.py --quick             # a few seconds, for tests
    python examples/physics_aware.py --gain-error 0.5 --epochs 5

``QUASINEURON_EXAMPLES_QUICK=1`` in the environment does the same as ``--quick``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from functools import partial

import torch

import quasineuron as qn


def miscalibrated(u: torch.Tensor, *, gain: float) -> torch.Tensor:
    """The wrong model of the device: ``gain · tanh(s1 − 0.1·s2)``; u (batch, 2) → (batch, 1)."""
    return gain * torch.tanh(u[:, :1] - 0.1 * u[:, 1:2])


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison; returns the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for tests")
    parser.add_argument("--gain-error", type=float, default=0.1, help="relative gain error")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per training")
    args = parser.parse_args(argv)
    quick = args.quick or os.environ.get("QUASINEURON_EXAMPLES_QUICK") == "1"
    epochs = args.epochs or (1 if quick else 10)

    dev = qn.almost_neuron(eps=0.1)  # the true device, domain [-8, 8]²
    grid = qn.Grid(21 if quick else 81)
    gain = 1.0 + args.gain_error
    model = qn.FormulaDevice(
        partial(miscalibrated, gain=gain),
        n_in=2,
        n_out=1,
        domain=dev.domain,
        name="almost-neuron-model",
        params={"gain": gain},
    )
    # Twins are fitted on sweeps (in memory here: store=None) and clamp drives to the domain.
    wrong = qn.fit_surrogate(qn.sweep(model, grid, progress=False), kind="spline", policy="clamp")
    right = qn.fit_surrogate(qn.sweep(dev, grid, progress=False), kind="spline", policy="clamp")

    train, test = qn.load_digits()
    train, val = train.split(0.1, seed=0)
    runs = [
        ("surrogate", wrong.model, qn.Surrogate()),
        ("physics-aware", wrong.model, qn.PhysicsAware()),
    ]
    if not quick:
        runs.append(("reference", right.model, qn.Surrogate()))

    print(f"twin gain error {args.gain_error:+.0%}, {epochs} epochs, scored on {len(test)} digits")
    print(f"{'training':>14} | {'acc. on twin':>12} | {'acc. on device':>14} | {'gap':>8}")
    for label, twin, mode in runs:
        net = qn.DeviceNetwork(
            dev, (64, 16 if quick else 32, 10), twin=twin, connection=qn.TwoDrive(), seed=0
        )
        result = qn.train(
            net,
            train,
            mode=mode,
            epochs=epochs,
            batch_size=32,
            lr=3e-3,
            seed=0,
            val_data=val,
            progress=False,
        )
        report = qn.evaluate(result.network, test, modes=(qn.Surrogate(), qn.TrueDevice()))
        acc = report.accuracy
        print(
            f"{label:>14} | {100 * acc['surrogate']:11.2f}% | {100 * acc['device']:13.2f}% | "
            f"{100 * report.gap:+6.2f}pp"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
