"""A network of black-box devices on the 8x8 digits, trained three ways; device calls counted.

The device is a numpy function with no gradient (a stand-in for a circuit simulator): a tanh
with a ripple. The same task is trained

1. physics-aware (PAT): sweep the device, fit a twin, train with the true device in the forward
   pass and the twin's Jacobian in the backward pass;
2. twin only: train on the twin (no device call while training), then score on the device;
3. derivative-free: CMA-ES on the connection weights, every candidate run on the device.

Each run counts device evaluations (one evaluation = one neuron's drive sent to the device):
sweep points plus training forward calls; the calls made to score are not counted. Every way
runs on each seed of ``--seeds`` (0, 1, 2): a seed draws the split, the twin's fit, the weights
and the batches, and a fifth of the training images is held out for the learning curves, so the
test set is scored once per final network. Results (mean ± std over the seeds, and each seed's)
go to ``<out>/blackbox-digits-{pat,twin,cmaes}/metrics.json`` with the command, and the first
seed's validation accuracy against device evaluations to ``<out>/blackbox-digits-pat/``.

With ``--compare`` it instead compares the derivative-free optimisers (CMA-ES, Nelder–Mead,
differential evolution, particle swarm, ant colony) on the one-layer network: the same
candidate budget and the same full training batch for each, several seeds, each setting
chosen on a validation split carved out of the training images (the test images are scored
once per final network). Results go to ``<out>/derivative-free-digits/metrics.json``.

Run:
    python examples/blackbox_digits.py --out runs/blackbox-digits
    python examples/blackbox_digits.py --compare --out runs/blackbox-digits
    python examples/blackbox_digits.py --quick        # a smoke test, a few seconds
"""

from __future__ import annotations

import argparse
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import quasineuron as qn
from quasineuron.report import write_json
from quasineuron.training.derivative_free import (
    CMAES,
    AbstractDerivativeFree,
    AntColony,
    DifferentialEvolution,
    NelderMead,
    ParticleSwarm,
    optimize_weights,
)


def rippled_tanh(u: np.ndarray) -> np.ndarray:
    """The black box: ``tanh(u) + 0.05 sin(6u)``, u (batch, 1) → (batch, 1)."""
    return np.tanh(u) + 0.05 * np.sin(6.0 * u)


def black_box(workers: int) -> qn.BlackBoxDevice:
    """The rippled tanh as a black-box device on [-6, 6] (``workers`` worker processes)."""
    return qn.BlackBoxDevice(
        rippled_tanh,
        n_in=1,
        n_out=1,
        domain=qn.Box((-6.0,), (6.0,)),
        vectorized=True,
        name="rippled-tanh",
        workers=workers,
    )


def device_accuracy(net: qn.DeviceNetwork, dev: qn.BlackBoxDevice, data: qn.ArrayDataset) -> float:
    """Accuracy on the true device; the evaluations it costs are not counted as training."""
    before = dev.n_evaluations
    with torch.no_grad():
        out = net(data.x.to(net.dtype), mode=qn.TrueDevice())
    dev.n_evaluations = before
    return (out.argmax(dim=1) == data.y).double().mean().item()


def _curve(points: list[tuple[int, float]]) -> dict[str, list]:
    """(device evaluations, validation accuracy) points as two JSON lists."""
    return {"device_evaluations": [p[0] for p in points], "accuracy": [p[1] for p in points]}


def gradient_run(
    name: str,
    mode: qn.PhysicsAware | qn.Surrogate,
    dev: qn.BlackBoxDevice,
    twin: torch.nn.Module,
    n_sweep: int,
    split: tuple[qn.ArrayDataset, qn.ArrayDataset, qn.ArrayDataset],
    seed: int,
    args: argparse.Namespace,
) -> dict:
    """Train with ``mode``; the validation curve against device evaluations, the test set once."""
    train, val, test = split
    net = qn.DeviceNetwork(dev, (64, args.hidden, 10), twin=twin, seed=seed)
    dev.n_evaluations = 0
    curve = [(n_sweep, device_accuracy(net, dev, val))]

    def log(m: qn.training.EpochMetrics) -> None:
        curve.append((n_sweep + dev.n_evaluations, device_accuracy(net, dev, val)))
        print(f"{name} seed {seed} epoch {m.epoch}: device validation accuracy {curve[-1][1]:.4f}")

    qn.train(
        net,
        train,
        mode=mode,
        epochs=args.epochs,
        batch_size=64,
        optimizer=qn.Adam(lr=args.lr),
        seed=seed,
        progress=False,
        callbacks=[log],
    )
    twin_acc = qn.evaluate(net, test, modes=[qn.Surrogate()]).accuracy["surrogate"]
    return {
        "accuracy": {"device": device_accuracy(net, dev, test), "surrogate": twin_acc},
        "device_evaluations": curve[-1][0],
        "device_evaluations_breakdown": {"sweep": n_sweep, "training": curve[-1][0] - n_sweep},
        "val_curve": {
            "device_evaluations": [c[0] for c in curve],
            "accuracy": [c[1] for c in curve],
        },
        "network": {"sizes": [64, args.hidden, 10], "epochs": args.epochs, "lr": args.lr},
    }


def cmaes_run(
    dev: qn.BlackBoxDevice,
    split: tuple[qn.ArrayDataset, qn.ArrayDataset, qn.ArrayDataset],
    seed: int,
    args: argparse.Namespace,
) -> dict:
    """CMA-ES on a one-layer network, every candidate run on the device."""
    train, val, test = split
    net = qn.DeviceNetwork(dev, (64, 10), seed=seed)
    dev.n_evaluations = 0
    res = optimize_weights(
        net,
        train,
        optimizer=CMAES(sigma0=args.sigma0, popsize=args.popsize),
        budget=args.budget,
        batch_size=args.dfo_batch,
        seed=seed,
        val_data=val,
        val_every=args.val_every,
        progress=False,
    )
    curve = [(h.device_evaluations, h.val_accuracy) for h in res.history if h.val_accuracy]
    return {
        "accuracy": {
            "device": device_accuracy(net, dev, test),
            "train_batch": res.history[-1].accuracy,
        },
        "device_evaluations": res.device_evaluations,
        "device_evaluations_breakdown": {"sweep": 0, "training": res.device_evaluations},
        "candidate_evaluations": res.n_evaluations,
        "val_curve": {
            "device_evaluations": [c[0] for c in curve],
            "accuracy": [c[1] for c in curve],
        },
        "network": {"sizes": [64, 10], "optimizer": res.optimizer, "batch_size": args.dfo_batch},
    }


def plot(results: dict[str, dict], seed: int, path: Path) -> None:
    """Device test accuracy against device evaluations, one line per way of training."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, r in results.items():
        c = r["val_curve"]
        ax.plot(c["device_evaluations"], c["accuracy"], "o-", ms=3, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("device evaluations (sweep + training forward calls)")
    ax.set_ylabel("validation accuracy on the device")
    ax.set_title(f"8x8 digits, black-box tanh-with-ripple neurons (seed {seed})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def compare_candidates(popsize: int, budget: int) -> dict[str, list[AbstractDerivativeFree]]:
    """Settings tried for each optimiser; the validation split picks one of each.

    Only the scale of the first moves (step size, initial spread) is varied: it is the
    setting each method is most sensitive to; the rest are the methods' usual defaults.
    """
    scales = (0.1, 0.3)
    return {
        "cmaes": [CMAES(sigma0=s, popsize=popsize, budget=budget) for s in scales],
        "nelder_mead": [NelderMead(step=s, budget=budget) for s in scales],
        "differential_evolution": [
            DifferentialEvolution(popsize=popsize, init_std=s, budget=budget) for s in scales
        ],
        "particle_swarm": [
            ParticleSwarm(popsize=popsize, init_std=s, budget=budget) for s in scales
        ],
        "ant_colony": [AntColony(n_ants=popsize, init_std=s, budget=budget) for s in scales],
    }


def compare_run(
    optimizer: AbstractDerivativeFree,
    seed: int,
    dev: qn.BlackBoxDevice,
    train: qn.ArrayDataset,
    val: qn.ArrayDataset,
    args: argparse.Namespace,
) -> tuple[dict, qn.DeviceNetwork]:
    """One optimiser, one seed: train on the full training batch, score the validation split."""
    net = qn.DeviceNetwork(dev, (64, 10), seed=seed)
    t0, cpu0 = time.perf_counter(), time.process_time()
    res = optimize_weights(
        net,
        train,
        optimizer=optimizer,
        budget=args.budget,
        batch_size=None,  # one fixed objective for all: Nelder–Mead needs it
        seed=seed,
        val_data=val,
        val_every=10**9,  # scored once, at the end
        progress=False,
    )
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
    return {
        "seed": seed,
        "optimizer": res.optimizer,
        "train_loss": res.loss,
        "val_accuracy": res.history[-1].val_accuracy,
        "candidate_evaluations": res.n_evaluations,
        "device_evaluations": res.device_evaluations,
        "val_device_evaluations": res.val_device_evaluations,
        "wall_seconds": seconds,
        "cpu_seconds": cpu_seconds,
    }, net


def _mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (n - 1 in the denominator)."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std}


def compare(args: argparse.Namespace, command: str) -> None:
    """The derivative-free optimisers, same budget and network, mean ± std over seeds."""
    dev = black_box(args.workers)
    full_train, test = qn.load_digits(seed=0)
    train, val = full_train.split(0.2, seed=0)
    selection, results = {}, {}
    for name, candidates in compare_candidates(args.popsize, args.budget).items():
        # Settings are chosen on the validation split, with a seed not used below.
        tried = [compare_run(opt, args.select_seed, dev, train, val, args)[0] for opt in candidates]
        best = max(range(len(tried)), key=lambda i: tried[i]["val_accuracy"])
        selection[name] = {"tried": tried, "chosen": tried[best]["optimizer"]}
        print(f"{name}: chosen on validation {tried[best]['optimizer']}", flush=True)
        runs = []
        for seed in args.seeds:
            run, net = compare_run(candidates[best], seed, dev, train, val, args)
            before = dev.n_evaluations
            run["test_accuracy"] = qn.evaluate(net, test, modes=[qn.TrueDevice()]).accuracy[
                "device"
            ]  # the only time the test set is read for this network
            run["test_device_evaluations"] = dev.n_evaluations - before
            runs.append(run)
            print(
                f"{name:22s} seed {seed}: val {run['val_accuracy']:.4f} "
                f"test {run['test_accuracy']:.4f} ({run['wall_seconds']:.1f} s wall, "
                f"{run['cpu_seconds']:.1f} s CPU)",
                flush=True,
            )
        results[name] = {
            "optimizer": tried[best]["optimizer"],
            "runs": runs,
            **{
                key: _mean_std([r[key] for r in runs])
                for key in (
                    "val_accuracy",
                    "test_accuracy",
                    "device_evaluations",
                    "wall_seconds",
                    "cpu_seconds",
                    "train_loss",
                )
            },
        }
    dev.close()
    folder = Path(args.out) / "derivative-free-digits"
    folder.mkdir(parents=True, exist_ok=True)
    write_json(
        folder / "metrics.json",
        {
            "command": command,
            "device": dev.describe(),
            "network": {"sizes": [64, 10], "n_weights": 670, "readout_affine": True},
            "data": {
                "train": len(train),
                "val": len(val),
                "test": len(test),
                "split": "load_digits(seed=0), then train.split(0.2, seed=0)",
            },
            "budget": {
                "candidate_evaluations": args.budget,
                "batch": "full training split every round",
                "population": args.popsize,
            },
            "seeds": list(args.seeds),
            "selection": {
                "rule": "highest validation accuracy at the selection seed",
                "seed": args.select_seed,
                "per_optimizer": selection,
            },
            "std": "sample standard deviation over seeds (n - 1)",
            "wall_seconds": "one torch thread on a shared machine: wall time depends on the "
            "load; cpu_seconds (this process's CPU time) is the steadier measure",
            "machine": platform.platform(),
            "optimizers": results,
        },
    )
    print(f"wrote {folder / 'metrics.json'}")


def main(argv: list[str] | None = None) -> None:
    """Run the three ways and write their metrics."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/blackbox-digits")
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--sweep-points", type=int, default=301)
    p.add_argument("--budget", type=int, default=6000, help="CMA-ES candidate evaluations")
    p.add_argument("--popsize", type=int, default=32)
    p.add_argument("--sigma0", type=float, default=0.1)
    p.add_argument("--dfo-batch", type=int, default=256)
    p.add_argument("--val-every", type=int, default=10)
    p.add_argument("--workers", type=int, default=0, help="worker processes of the black box")
    p.add_argument("--quick", action="store_true", help="tiny budgets, for a smoke test")
    p.add_argument("--compare", action="store_true", help="compare derivative-free optimisers")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--select-seed", type=int, default=100, help="with --compare")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.budget, args.sweep_points, args.val_every = 1, 128, 41, 2
        args.seeds = args.seeds[:1]
    torch.set_num_threads(1)
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])
    if args.compare:
        compare(args, command)
        return

    three_ways(args, command)


def three_ways(args: argparse.Namespace, command: str) -> None:
    """Physics-aware, twin only and CMA-ES on every seed; one folder per way, mean ± std."""
    dev = black_box(args.workers)
    # the device is swept once; each seed draws its own split, twin fit, weights and batches
    table = qn.sweep(dev, qn.Grid(n=args.sweep_points), progress=False)
    n_sweep = table.n_points
    runs: dict[str, list[dict]] = {"pat": [], "twin": [], "cmaes": []}
    for seed in args.seeds:
        full_train, test = qn.load_digits(seed=seed)
        train, val = full_train.split(0.2, seed=seed)
        split = (train, val, test)
        twin = qn.fit_surrogate(table, seed=seed, policy="clamp").model
        runs["pat"].append(
            gradient_run("pat", qn.PhysicsAware(), dev, twin, n_sweep, split, seed, args)
        )
        runs["twin"].append(
            gradient_run("twin", qn.Surrogate(), dev, twin, n_sweep, split, seed, args)
        )
        runs["cmaes"].append(cmaes_run(dev, split, seed, args))
        if seed == args.seeds[0]:
            first = {name: r[-1] for name, r in runs.items()}
    dev.close()
    out = Path(args.out)
    for name, per_seed in runs.items():
        folder = out / f"blackbox-digits-{name}"
        folder.mkdir(parents=True, exist_ok=True)
        acc = [r["accuracy"]["device"] for r in per_seed]
        stats = _mean_std(acc)
        record = {
            "way": name,
            "device": dev.describe(),
            "seeds": list(args.seeds),
            "accuracy": {
                "device_mean": stats["mean"],
                "device_std": stats["std"],
                "device": acc,
            },
            "device_evaluations": per_seed[0]["device_evaluations"],
            "per_seed": per_seed,
            "protocol": "curves on a validation split (a fifth of the training images); the test "
            "set scored once per final network",
        }
        write_json(folder / "metrics.json", record)
        (folder / "command.txt").write_text(command + "\n")
        print(
            f"{name:6s} device accuracy {stats['mean']:.4f} ± {stats['std']:.4f} over seeds "
            f"{list(args.seeds)}, {record['device_evaluations']:,} device evaluations per run"
        )
    plot(first, args.seeds[0], out / "blackbox-digits-pat" / "accuracy-vs-evaluations.png")


if __name__ == "__main__":
    main()
