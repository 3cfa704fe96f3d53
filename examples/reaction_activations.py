"""Reaction-network activations beyond the smoothed ReLU: fixed point, convergence rate, training.

For each activation of the general construction (``dx/dt = a(x) + z·b(x)``, see
docs/reaction-networks.md), in float64:

1. the fixed point found by Newton on the ODE against the closed form, over a grid of drives;
2. the convergence rate measured from a time-accurate integration (the slope of
   ``ln|x(t) − x*|`` late in the approach) against the theory ``|∂f/∂x|(x*)``;
3. a small digits network (64-32-10) trained on the closed form with one-hot MSE on the output
   concentrations, for several seeds, compiled into one mass-action reaction network per seed
   and integrated to steady state for every test image: the agreement of the chemistry's class
   with the closed form's, and both accuracies.

Writes ``metrics.json`` and ``convergence-rate.png`` to ``--out``.

Example:
    python examples/reaction_activations.py --out docs/results/reaction-activations
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path

import torch

import quasineuron as qn
import quasineuron.chemistry as ch
from quasineuron._atomic import atomic_write_json
from quasineuron.data.toy import load_digits
from quasineuron.devices.reaction import (
    ACTIVATIONS,
    integrate_activation,
    reaction_relu,
    reaction_saturating,
    reaction_sigmoid,
)

F64 = torch.float64
# ε per activation: the ReLU's 0.01 is the value of the MNIST result; the sigmoid's 1/8 gives
# slope 1 at z = 0 (with 1/2, the logistic slope 1/4, training on the digits was several times
# slower); the saturating neuron's 0.01 keeps it close to max(z, 0)/(1 + max(z, 0)).
EPS = {"relu": 0.01, "sigmoid": 0.125, "saturating": 0.01}
SIZES = (64, 32, 10)
DEVICES = {"relu": reaction_relu, "sigmoid": reaction_sigmoid, "saturating": reaction_saturating}


def fixed_point_check(name: str, eps: float) -> dict:
    z = torch.linspace(-8.0, 8.0, 321, dtype=F64)[:, None]
    res = DEVICES[name](eps=eps).solve(z)
    exact = ACTIVATIONS[name].closed_form(z, eps)
    return {
        "n_drives": int(z.shape[0]),
        "drive_range": [-8.0, 8.0],
        "all_converged": bool(res.converged.all()),
        "max_abs_error": float((res.x - exact).abs().max()),
    }


def rate_study(name: str, eps: float, zs: torch.Tensor) -> dict:
    """Measured rate = −slope of ln|x − x*| over the window where it has decayed 1e-3 → 1e-8."""
    act = ACTIVATIONS[name]
    theory = act.rate(zs, eps)
    x_star = act.closed_form(zs, eps)
    # start at the far end of the invariant interval from x*, so the whole approach is seen
    x0 = torch.where(x_star > 0.5, torch.zeros_like(zs), torch.ones_like(zs))
    if name == "relu":
        x0 = x_star + 1.0
    t_end = float(25.0 / theory.min())
    t = torch.linspace(0.0, t_end, 4001, dtype=F64)
    x = integrate_activation(name, zs, x0, t, eps=eps, rtol=1e-12, atol=1e-16, method="dopri8")
    dev = (x - x_star).abs()
    measured = []
    for k in range(zs.shape[0]):
        d = dev[:, k]
        window = (d < 1e-3 * d[0]) & (d > 1e-8 * d[0])
        tt, ld = t[window], torch.log(d[window])
        slope = ((tt - tt.mean()) * (ld - ld.mean())).sum() / ((tt - tt.mean()) ** 2).sum()
        measured.append(float(-slope))
    rel = [abs(m - float(th)) / float(th) for m, th in zip(measured, theory, strict=True)]
    return {
        "z": zs.tolist(),
        "rate_theory": theory.tolist(),
        "rate_measured": measured,
        "max_relative_error": max(rel),
    }


def train_one(name: str, eps: float, seed: int, train, val, test, *, epochs: int) -> dict:
    dev = ch.reaction_activation_device(name, eps=eps)
    net = qn.DeviceNetwork(dev, SIZES, readout_affine=False, seed=seed)
    res = qn.train(
        net,
        train,
        mode=qn.TrueDevice(),
        epochs=epochs,
        batch_size=32,
        lr=0.03,
        loss="mse",
        seed=seed,
        val_data=val,
        progress=False,
    )
    weights, biases = ch.network_weights(net)
    x = test.x.to(F64)
    closed = ch.closed_form(weights, biases, x, eps=eps, activation=name)
    cn = ch.compile_network(weights, biases, eps=eps, activation=name, name=f"digits_{name}")
    kin = ch.MassAction(cn.network)
    x0 = cn.initial_state(x, generator=torch.Generator().manual_seed(seed), low=0.01, high=0.99)
    t0 = time.perf_counter()
    # every test image: the compiled network's own rate law driven to its steady state
    # (implicit steps of growing length, each species' root taken in [0, 1])
    steady = ch.steady_state(kin, x0, upper=1.0)
    sim_seconds = time.perf_counter() - t0
    xs = steady.x
    # and a time-accurate integration of the mass-action ODE for the first images: it must
    # end where the steady-state solver did (rates are at least 2ε or 2√ε; layers settle
    # one after another, so three layers take about three settling times of 20/rate)
    slowest = 2.0 * eps if name == "sigmoid" else 2.0 * math.sqrt(eps)
    n_ode = min(20, x.shape[0])
    x_ode = ch.ode_steady_state(kin, x0[:n_ode], t_end=3 * 20.0 / slowest, rtol=1e-9, atol=1e-12)
    chem = cn.outputs(xs)
    y = test.y
    return {
        "seed": seed,
        "validation_accuracy_closed_form": float(res.history[-1].val_accuracy),
        "accuracy_closed_form": float((closed.argmax(1) == y).double().mean()),
        "accuracy_chemistry": float((chem.argmax(1) == y).double().mean()),
        "agreement": float((closed.argmax(1) == chem.argmax(1)).double().mean()),
        "max_abs_output_difference": float((closed - chem).abs().max()),
        "max_abs_dxdt": float(kin.rhs(xs).abs().max()),
        "all_converged": bool(steady.converged.all()),
        "time_integration": {
            "n_images": n_ode,
            "t_end": 3 * 20.0 / slowest,
            "max_abs_difference_from_steady_state": float(
                (cn.outputs(x_ode) - chem[:n_ode]).abs().max()
            ),
        },
        "n_species": cn.network.n_species,
        "n_reactions": cn.network.n_reactions,
        "steady_state_seconds": sim_seconds,
    }


def figure(rates: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_err) = plt.subplots(1, 2, figsize=(9.0, 3.8), dpi=100)
    markers = {"relu": "o", "sigmoid": "s", "saturating": "^"}
    for (name, r), color in zip(rates.items(), ("C0", "C1", "C2"), strict=False):
        ax.plot(r["z"], r["rate_theory"], color=color, lw=1.2, label=f"{name}: theory")
        ax.plot(
            r["z"],
            r["rate_measured"],
            markers.get(name, "o"),
            color=color,
            ms=4,
            mfc="none",
            label=f"{name}: measured",
        )
        rel = [abs(m - t) / t for m, t in zip(r["rate_measured"], r["rate_theory"], strict=True)]
        ax_err.semilogy(
            r["z"], rel, markers.get(name, "o") + "-", color=color, ms=4, lw=0.8, label=name
        )
    ax.set_yscale("log")
    ax.set_xlabel("drive z")
    ax.set_ylabel("convergence rate λ (1/time)")
    ax.set_title("rate of approach to the fixed point")
    ax.legend(fontsize=7)
    ax_err.set_xlabel("drive z")
    ax_err.set_ylabel("|measured − theory| / theory")
    ax_err.set_title("relative error of the measured rate")
    ax_err.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="2 epochs, 1 seed (pipeline check)")
    ap.add_argument(
        "--figure-only", action="store_true", help="redraw the figure from --out/metrics.json"
    )
    args = ap.parse_args()
    if args.figure_only:
        done = json.loads((args.out / "metrics.json").read_text())
        figure(
            {k: v["rate"] for k, v in done["activations"].items()},
            args.out / "convergence-rate.png",
        )
        return
    seeds, epochs = (1, 2) if args.quick else (args.seeds, args.epochs)
    t_start = time.perf_counter()
    train_all, test = load_digits(seed=0)
    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(train_all), generator=gen)
    n_val = len(train_all) // 5
    val, train = train_all.subset(perm[:n_val]), train_all.subset(perm[n_val:])
    zs = torch.linspace(-6.0, 6.0, 25, dtype=F64)
    out: dict = {"claim": "fixed point and convergence rate of each reaction neuron match theory"}
    out["activations"] = {}
    rates = {}
    for name, eps in EPS.items():
        entry: dict = {"eps": eps, "fixed_point": fixed_point_check(name, eps)}
        rates[name] = rate_study(name, eps, zs)
        entry["rate"] = rates[name]
        if name != "relu":
            runs = [train_one(name, eps, s, train, val, test, epochs=epochs) for s in range(seeds)]
            accs = [r["accuracy_closed_form"] for r in runs]
            chem = [r["accuracy_chemistry"] for r in runs]
            entry["digits"] = {
                "sizes": list(SIZES),
                "training": "closed form (float32), Adam lr 0.03, batch 32, one-hot MSE",
                "epochs": epochs,
                "seeds": list(range(seeds)),
                "accuracy": {
                    "closed_form_mean": statistics.mean(accs),
                    "closed_form_std": statistics.stdev(accs) if seeds > 1 else None,
                    "device_mean": statistics.mean(chem),
                    "device_std": statistics.stdev(chem) if seeds > 1 else None,
                },
                "agreement_min": min(r["agreement"] for r in runs),
                "runs": runs,
            }
        out["activations"][name] = entry
    out["machine"] = f"{platform.machine()} CPU, torch {torch.__version__}"
    out["seconds"] = time.perf_counter() - t_start
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "metrics.json", out)
    figure(rates, args.out / "convergence-rate.png")
    print(
        json.dumps({k: v.get("digits", {}).get("accuracy") for k, v in out["activations"].items()})
    )


if __name__ == "__main__":
    main()
