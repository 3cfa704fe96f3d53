"""Quick start: the README's pipeline, on the embedded 8×8 digits set (nothing to download).

Characterise the almost-neuron ``y = tanh(x·A − ε·A·x²)`` (ε = 0.1), fit its digital twin, train
a 64 → 32 → 10 network of it through the twin, and score it on the twin and on the true device.

    python examples/quickstart.py                  # about 20 s on 2 cores
    python examples/quickstart.py --quick          # a few seconds (smaller sweep, 2 epochs)
    python examples/quickstart.py --out runs/qs    # where the sweep store goes

``QUASINEURON_EXAMPLES_QUICK=1`` in the environment does the same as ``--quick``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import quasineuron as qn


def main(argv: Sequence[str] | None = None) -> int:
    """Run the quick start; returns the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for tests")
    parser.add_argument("--out", type=Path, default=Path("runs/quickstart"), help="run folder")
    args = parser.parse_args(argv)
    quick = args.quick or os.environ.get("QUASINEURON_EXAMPLES_QUICK") == "1"

    # describe: f_nl(s1 − ε·s2) with drives (s1, s2) = (x·A + b, A·x²); domain [-8, 8]²
    dev = qn.almost_neuron(eps=0.1)
    # characterise: a 2-D grid, written chunk by chunk to a resumable store
    table = qn.sweep(dev, qn.Grid(21 if quick else 101), store=args.out / "sweep", progress=False)
    print(table.summary())
    # twin: a cubic spline on the grid, its error measured against the device itself.
    # policy="clamp" clips the rare drive outside [-8, 8]² (tanh is flat there) instead of
    # warning about it on every batch.
    # kind="spline" skips the slower MLP fit that kind="auto" adds when the spline's error is
    # above good_enough (1e-4), as it is on the coarse --quick grid.
    twin = qn.fit_surrogate(table, kind="spline", true_device=dev, policy="clamp")
    print(twin.report.summary())

    train, test = qn.load_digits()  # x (n, 64) in [0, 1], y (n,) labels 0..9
    net = qn.DeviceNetwork(dev, (64, 32, 10), twin=twin.model, connection=qn.TwoDrive(), seed=0)
    result = qn.train(
        net,
        train,
        mode=qn.Surrogate(),  # forward and backward through the twin
        epochs=2 if quick else 15,
        batch_size=32,
        lr=3e-3,
        seed=0,
        progress=not quick,
    )
    report = qn.evaluate(result.network, test, modes=(qn.Surrogate(), qn.TrueDevice()))
    for mode, acc in report.accuracy.items():
        print(f"test accuracy on {mode:>9}: {100 * acc:.2f} %")
    print(f"gap (twin − true device): {100 * report.gap:+.2f} pp")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
