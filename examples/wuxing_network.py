"""A Wuxing five-element network (MODEL1 wiring) on an MNIST subset: method 2 versus BPTT.

Both methods train the connection coefficients of the same kind of network, simulated in time
(Heun). Method 2 uses one forward and one reversed run per batch and no chain rule; BPTT
backpropagates through the time loop.

    python examples/wuxing_network.py --data-dir <folder with the MNIST IDX files> --quick
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from quasineuron.data.mnist import load_mnist
from quasineuron.devices.ode import Heun
from quasineuron.wuxing import (
    Backprop,
    Method2,
    SimConfig,
    WuxingNetwork,
    evaluate,
    method2_step,
    model_wiring,
    train,
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data-dir", default=None, help="folder with the four MNIST IDX files")
    p.add_argument("--quick", action="store_true", help="tiny subset, short window")
    p.add_argument("--model", default="MODEL1", choices=["MODEL1", "MODEL2"])
    p.add_argument("--n-train", type=int, default=3000)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--T", type=float, default=30.0)
    p.add_argument("--dt", type=float, default=0.05)
    p.add_argument("--eta", type=float, default=20.0, help="method-2 step multiplier")
    p.add_argument("--lr", type=float, default=0.02, help="BPTT Adam learning rate")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    if a.quick:
        a.n_train, a.n_test, a.T, a.dt = 128, 256, 20.0, 0.1
    torch.set_num_threads(a.threads)
    train_set, test_set = load_mnist(a.data_dir)
    xtr, ytr = torch.as_tensor(train_set.x[: a.n_train]), torch.as_tensor(train_set.y[: a.n_train])
    xte, yte = torch.as_tensor(test_set.x[: a.n_test]), torch.as_tensor(test_set.y[: a.n_test])
    config = SimConfig(T=a.T, solver=Heun(dt=a.dt))
    wiring = model_wiring(a.model, seed=a.seed)
    out: dict = {"wiring": wiring.describe(), "config": repr(config), "args": vars(a)}

    # throughput of one method-2 step (forward + reversed run + update)
    net = WuxingNetwork(wiring, config=config)
    t0 = time.perf_counter()
    method2_step(net, xtr[: a.batch_size], ytr[: a.batch_size], Method2(eta=a.eta))
    out["method2_samples_per_s"] = a.batch_size / (time.perf_counter() - t0)

    for name, method in (("method2", Method2(eta=a.eta)), ("bptt", Backprop(lr=a.lr))):
        net = WuxingNetwork(wiring, config=config)
        acc0 = evaluate(net, xte, yte)
        res = train(
            net, xtr, ytr, method=method, epochs=a.epochs, batch_size=a.batch_size, seed=a.seed
        )
        acc1 = evaluate(net, xte, yte)
        out[name] = {
            "test_acc_before": acc0,
            "test_acc_after": acc1,
            "train_samples_per_s": res.samples_seen / max(res.seconds, 1e-12),
            "last_loss": res.extras["steps"][-1].loss,
            "diverged": sum(s.n_diverged for s in res.extras["steps"]),
        }
        print(name, json.dumps(out[name]), flush=True)
    print(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
