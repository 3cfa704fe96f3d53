"""A circuit neuron of your own: a SPICE netlist simulated by ngspice, characterised and checked.

Needs ngspice (``apt-get install -y ngspice libngspice0``). Runs in a few seconds:

    python examples/spice_neuron.py

The circuit is a resistor-loaded NMOS common-source stage: one drive (the gate voltage), one
output (the drain voltage). The script checks it against the device contract, sweeps it (every
batch is one ngspice run), fits a twin, and trains a small digits network through the twin,
scored on ngspice itself.
"""

from __future__ import annotations

import argparse

import quasineuron as qn
from quasineuron.devices import SpiceDevice

NETLIST = """\
vdd vdd 0 dc 1.8
rd vdd out 20k
m1 out gate 0 0 nch w=2u l=0.5u
.model nch nmos level=1 vto=0.5 kp=120u lambda=0.05
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for tests")
    args = parser.parse_args(argv)
    dev = SpiceDevice(
        NETLIST,
        drives=("gate",),
        outputs=("v(out)",),
        domain=qn.Box((0.0,), (1.8,)),
        name="common-source",
    )
    print(qn.check_device(dev))
    table = qn.sweep(dev, qn.Grid(101), progress=False)  # 101 points: one ngspice run
    twin = qn.fit_surrogate(table, kind="spline", policy="clamp")
    print(f"twin fitted on {dev.n_evaluations} operating points ({dev.n_runs} ngspice runs)")
    train, test = qn.load_digits()
    net = qn.DeviceNetwork(dev, (64, 16, 10), twin=twin.model, seed=0)
    result = qn.train(
        net,
        train,
        mode=qn.Surrogate(),
        epochs=2 if args.quick else 20,
        batch_size=32,
        lr=3e-3,
        seed=0,
        progress=False,
    )
    report = qn.evaluate(result.network, test, modes=(qn.Surrogate(), qn.TrueDevice()))
    print(
        f"accuracy on the twin {100 * report.accuracy['surrogate']:.1f} %, on ngspice "
        f"{100 * report.accuracy['device']:.1f} % (gap {100 * report.gap:+.2f} pp)"
    )


if __name__ == "__main__":
    main()
