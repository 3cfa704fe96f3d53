"""Fine-tune a twin-trained MNIST network of circuit neurons physics-aware, on ngspice.

Starts from the run folder of ``quasineuron run examples/spice-mnist.toml`` (its network and
twin), trains more epochs with ngspice in the forward pass and the twin's derivative in the
backward pass, and scores the result on ngspice and on the twin. Each epoch solves about
7.5 million operating points (54,000 images x 138 neurons).

    python examples/spice_mnist_physics_aware.py --run runs/spice-mnist/seed-0 --data-dir PATH
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import quasineuron as qn
from quasineuron.network.io import load_network
from quasineuron.surrogate.io import load_surrogate


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run",
        type=Path,
        required=True,
        help="the run folder of one seed of spice-mnist (e.g. runs/spice-mnist/seed-0)",
    )
    parser.add_argument("--data-dir", type=Path, required=True, help="folder with MNIST files")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--out", type=Path, help="write metrics.json here")
    args = parser.parse_args(argv)
    dev = qn.make_device("spice-diffpair")
    twin = load_surrogate(args.run / "twin.safetensors")
    net = load_network(args.run / "network", device=dev, twin=twin)
    train, test = qn.load_mnist(args.data_dir, download=False)
    train, val = train.split(0.1, seed=0)
    start = time.perf_counter()
    qn.train(
        net,
        train,
        mode=qn.PhysicsAware(),
        epochs=args.epochs,
        batch_size=128,
        lr=args.lr,
        seed=1,
        progress=False,
    )
    train_s = time.perf_counter() - start
    n_before = dev.n_evaluations
    start = time.perf_counter()
    report = qn.evaluate(net, test, modes=(qn.Surrogate(), qn.TrueDevice()))
    metrics = {
        "accuracy": report.accuracy,
        "gap": report.gap,
        "device_evaluations": dev.n_evaluations - n_before,
        "physics_aware_epochs": args.epochs,
        "lr": args.lr,
        "train_s": round(train_s, 1),
        "evaluate_s": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(metrics, indent=1))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")


if __name__ == "__main__":
    main()
