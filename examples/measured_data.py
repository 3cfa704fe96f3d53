"""A twin from measured data alone: load a lab's CSV, fit, train on the twin.

Runs in a few seconds. The "lab" here is simulated: tanh(u) plus Gaussian noise of standard
deviation 0.02, measured in three runs over 101 drive values, with one reading lost.
"""

from __future__ import annotations

import argparse
import csv
import math
import tempfile
from pathlib import Path

import numpy as np

import quasineuron as qn
from quasineuron.sweep import load_measurements


def write_lab_csv(path: Path) -> None:
    rng = np.random.default_rng(0)
    with path.open("w", newline="") as f:
        f.write("# transfer curve, 3 readings per set point\n")
        w = csv.writer(f)
        w.writerow(["V_in", "V_out", "run"])
        for run in range(3):
            for i, v in enumerate(np.linspace(-3.0, 3.0, 101)):
                y = math.tanh(v) + 0.02 * rng.standard_normal()
                # one reading the instrument lost: kept in the table as NONFINITE
                w.writerow([f"{v:.4f}", "" if (run, i) == (1, 7) else f"{y:.6f}", run])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, help="folder for the CSV (default: a temporary one)")
    parser.add_argument("--quick", action="store_true", help="accepted; the example is quick")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.out or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        run(folder)


def run(folder: Path) -> None:
    write_lab_csv(folder / "transfer.csv")

    table = load_measurements(
        folder / "transfer.csv",
        drives=["V_in"],
        outputs=["V_out"],
        repeat="run",
        units={"V_in": "V", "V_out": "V"},
    )
    print(table.summary())
    print("domain:", table.domain, "units:", table.device["units"], "sampler:", table.sampler)

    # No true device: the fidelity is a held-out estimate from the measurements themselves.
    fit = qn.fit_surrogate(table, kind="spline", policy="clamp")
    print(fit.report.summary())

    # The twin is the only device there is: it stands in for the device in the network, and
    # every score is a score on the twin (the gap to the real device is unknown).
    train_set, test_set = qn.load_digits()
    net = qn.DeviceNetwork(fit.model, (64, 16, 10), twin=fit.model, seed=0)
    result = qn.train(
        net, train_set, mode=qn.Surrogate(), epochs=3, batch_size=32, lr=1e-2, progress=False
    )
    report = qn.evaluate(result.network, test_set, modes=(qn.Surrogate(),))
    print(f"test accuracy on the twin: {report.accuracy['surrogate']:.3f}")


if __name__ == "__main__":
    main()
