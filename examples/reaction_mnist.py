"""Train a smoothed-ReLU network on MNIST, compile it to chemistry and validate on the chemistry.

1. train x^ℓ = σ_ε(W x + b) (closed form, FormulaDevice) with one-hot MSE on the output
   concentrations (no affine read-out: the class scores are the species' concentrations);
   hyperparameters are picked on a validation split of the training set, the test set is
   scored once;
2. compile to one mass-action reaction network (docs/models.md §B.2);
3. simulate the whole network to steady state from random positive concentrations for all
   10,000 test images and compare with the closed form;
4. settling time vs depth and ε (random networks, time-accurate stepping);
5. stochastic (Gillespie, libroadrunner) simulation of a small digits network vs molecule count.

Example:
    python examples/reaction_mnist.py --data-dir PATH/TO/MNIST \
        --out docs/results/reaction-mnist
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

import quasineuron as qn
import quasineuron.chemistry as ch


def train_closed_form(train, val, *, sizes, eps, epochs, lr, batch, seed, loss):
    net = qn.DeviceNetwork(ch.smoothed_relu_device(eps=eps), sizes, readout_affine=False, seed=seed)
    res = qn.train(
        net,
        train,
        mode=qn.TrueDevice(),
        epochs=epochs,
        batch_size=batch,
        lr=lr,
        loss=loss,
        seed=seed,
        val_data=val,
        progress=False,
        schedule=qn.Cosine() if epochs > 1 else None,
    )
    return net, res


def accuracy(scores: torch.Tensor, y: torch.Tensor) -> float:
    return float((scores.argmax(1) == y).double().mean())


def simulate_dataset(cn, kin, x, *, seed, chunk=500):
    gen = torch.Generator().manual_seed(seed)
    outs, steps, res = [], [], []
    t0 = time.perf_counter()
    for part in x.split(chunk):
        x0 = cn.initial_state(part.to(kin.dtype), generator=gen)
        r = ch.steady_state(kin, x0)
        outs.append(cn.outputs(r.x))
        steps.append(r.steps)
        res.append(float(r.residual.max()))
    return torch.cat(outs), time.perf_counter() - t0, max(steps), max(res)


def settling_study(eps_list, depths, *, seed, width=16, n_in=64, batch=16, dt=0.1):
    out = []
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(batch, n_in, generator=gen, dtype=torch.float64)
    for depth in depths:
        sizes = [n_in] + [width] * depth
        ws = [
            torch.randn(b, a, generator=gen, dtype=torch.float64) / math.sqrt(a)
            for a, b in zip(sizes, sizes[1:], strict=False)
        ]
        bs = [0.1 * torch.randn(b, generator=gen, dtype=torch.float64) for b in sizes[1:]]
        for eps in eps_list:
            cn = ch.compile_network(ws, bs, eps=eps)
            kin = ch.MassAction(cn.network)
            x0 = cn.initial_state(u, generator=torch.Generator().manual_seed(seed))
            star = ch.steady_state(kin, x0).x
            t_max = 30.0 / math.sqrt(eps)
            ts = ch.settling_time(kin, x0, star, dt=dt, t_max=t_max)
            out.append(
                {
                    "depth": depth,
                    "eps": eps,
                    "median_settling_time": float(ts.median()),
                    "max_settling_time": float(ts.max()),
                    "dt": dt,
                    "slowest_rate_bound_2sqrt_eps": 2 * math.sqrt(eps),
                }
            )
            print(
                f"settling depth={depth} eps={eps}: median {out[-1]['median_settling_time']:.1f}"
                f" max {out[-1]['max_settling_time']:.1f}"
            )
    return out


def gillespie_study(*, seed, volumes, n_images, eps, t_end, burn_in, hidden=16):
    """Digits network on molecule counts: Gillespie SSA (libroadrunner) at several volumes Ω.

    Floating species start from whole counts ``round(Ω·x0)``; pixel inputs are boundary
    species (constant). The class score is the time-averaged output concentration (count/Ω)
    over ``[burn_in, t_end]``, sampled every 0.1 time units.
    """
    train, test = qn.load_digits(seed=seed)
    net, _ = train_closed_form(
        train,
        None,
        sizes=(64, hidden, 10),
        eps=eps,
        epochs=40,
        lr=1e-2,
        batch=64,
        seed=seed,
        loss="mse",
    )
    w, b = ch.network_weights(net)
    w, b = [t.double() for t in w], [t.double() for t in b]
    cn = ch.compile_network(w, b, eps=eps)
    xs = test.x[:n_images].double()
    ys = test.y[:n_images]
    closed = ch.closed_form(w, b, xs, eps=eps)
    outs_ids = [f"x2_{i}" for i in range(10)]
    n_points = int(round(10 * t_end)) + 1
    first = int(round(10 * burn_in))
    rows = []
    for vol in volumes:
        t0 = time.perf_counter()
        scores = []
        for k in range(n_images):
            text = ch.to_sbml(cn.with_inputs(xs[k]), volume=vol)
            traj = ch.roadrunner_simulate(
                text,
                t_end=t_end,
                integrator="gillespie",
                seed=seed + k,
                n_points=n_points,
                selections=outs_ids,
            )
            scores.append(traj[first:].mean(0))
        scores = np.stack(scores)
        preds = scores.argmax(1)
        agree = float(np.mean(preds == closed.argmax(1).numpy()))
        acc = float(np.mean(preds == ys.numpy()))
        err = np.abs(scores - closed.numpy())
        rows.append(
            {
                "volume": vol,
                "accuracy": acc,
                "agreement_with_closed_form": agree,
                "mean_abs_output_error": float(err.mean()),
                "max_abs_output_error": float(err.max()),
                "seconds": time.perf_counter() - t0,
            }
        )
        print(
            f"gillespie volume={vol}: accuracy {acc:.3f} agreement {agree:.3f} "
            f"mean |error| {err.mean():.4f} ({rows[-1]['seconds']:.0f} s)"
        )
    return {
        "task": f"digits 64-{hidden}-10 (sklearn 8x8, pixels in [0, 1])",
        "simulator": "libroadrunner gillespie, whole initial counts, boundary inputs",
        "n_images": n_images,
        "t_end": t_end,
        "burn_in": burn_in,
        "eps": eps,
        "accuracy_closed_form": accuracy(closed[:n_images], ys),
        "by_volume": rows,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", help="MNIST folder (not needed with --gillespie-only)")
    p.add_argument("--gillespie-only", action="store_true", help="only the digits Gillespie study")
    p.add_argument("--gillespie-images", type=int, default=10)
    p.add_argument("--gillespie-t-end", type=float, default=40.0)
    p.add_argument("--out", default="runs/reaction-mnist")
    p.add_argument("--eps", type=float, default=0.01)
    p.add_argument("--hidden", type=int, default=100)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--loss", choices=["mse", "cross_entropy"], default="mse")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-test", type=int, default=10000)
    p.add_argument("--skip-settling", action="store_true")
    p.add_argument("--skip-gillespie", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gillespie_args = {
        "seed": args.seed,
        "volumes": [10.0, 100.0, 1000.0],
        "n_images": args.gillespie_images,
        "eps": args.eps,
        "t_end": args.gillespie_t_end,
        "burn_in": args.gillespie_t_end / 4,
    }
    if args.gillespie_only:
        result = {"command": "python " + " ".join(sys.argv), **gillespie_study(**gillespie_args)}
        (out / "gillespie.json").write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out / 'gillespie.json'}")
        return
    if args.data_dir is None:
        p.error("--data-dir is required unless --gillespie-only")

    train_all, test = qn.load_mnist(args.data_dir, download=False)
    train, val = train_all.split(1 / 12, seed=args.seed)  # 55,000 / 5,000
    sizes = (784, args.hidden, 10)
    t0 = time.perf_counter()
    net, res = train_closed_form(
        train,
        val,
        sizes=sizes,
        eps=args.eps,
        epochs=args.epochs,
        lr=args.lr,
        batch=args.batch_size,
        seed=args.seed,
        loss=args.loss,
    )
    t_train = time.perf_counter() - t0
    for m in res.history:
        print(f"epoch {m.epoch}: train {m.train_accuracy:.4f} val {m.val_accuracy:.4f}")
    w, b = ch.network_weights(net)
    w64, b64 = [t.double() for t in w], [t.double() for t in b]
    xt, yt = test.x[: args.n_test].double(), test.y[: args.n_test]
    closed = ch.closed_form(w64, b64, xt, eps=args.eps)

    cn = ch.compile_network(w64, b64, eps=args.eps, name="mnist_smoothed_relu")
    kin = ch.MassAction(cn.network)
    device_out, t_sim, steps, resid = simulate_dataset(cn, kin, xt, seed=args.seed + 1)
    agree = float((device_out.argmax(1) == closed.argmax(1)).double().mean())
    metrics = {
        "task": "MNIST",
        "sizes": list(sizes),
        "eps": args.eps,
        "output": "one-hot MSE on output concentrations (no affine read-out)"
        if args.loss == "mse"
        else "cross-entropy on output concentrations",
        "accuracy": {
            "closed_form": accuracy(closed, yt),
            "device": accuracy(device_out, yt),
            "validation_closed_form": res.history[-1].val_accuracy,
        },
        "agreement": agree,
        "max_abs_output_difference": float((device_out - closed).abs().max()),
        "n_test": len(yt),
        "chemistry": {
            **cn.network.describe(),
            "solver": "Jacobi-split implicit Euler, growing steps, float64",
            "initial_state": "random uniform [0.01, 1] for non-input species",
            "max_steps": steps,
            "max_abs_dxdt": resid,
            "images_per_second": len(yt) / t_sim,
        },
        "training": {
            "epochs": args.epochs,
            "lr": args.lr,
            "batch_size": args.batch_size,
            "loss": args.loss,
            "seconds": t_train,
            "history": [m.to_dict() for m in res.history],
        },
    }
    print(json.dumps({k: metrics[k] for k in ("accuracy", "agreement")}, indent=1))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if not args.skip_settling:
        metrics["settling"] = settling_study([0.1, 0.01, 0.001], [1, 2, 4], seed=args.seed)
    if not args.skip_gillespie:
        metrics["gillespie"] = gillespie_study(**gillespie_args)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"wrote {out / 'metrics.json'}")


if __name__ == "__main__":
    main()
