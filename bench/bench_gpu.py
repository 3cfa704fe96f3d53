"""The GPU benchmark: one prepared script for a machine with a CUDA device.

    python bench/bench_gpu.py [--data-dir PATH/TO/MNIST] [--json out.json] [--device cuda]

Measures, each beside a baseline from the same run:
1. Wuxing neuron-solves/s (T = 10, RK4 dt = 0.1, float32): our compiled fixed-step path
   (rows layout) against torchdiffeq rk4 on the same device.
2. One MNIST epoch in surrogate mode (almost-neuron ε = 0.1, two drives, 784-256-10, spline
   twin, compiled kernel) against a plain MLP of the same shape.
3. Samples/s of one method-2 training step on the Wuxing MODEL1 network (time simulation,
   forward + reversed run, T = 30, Heun dt = 0.05).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import torch

import quasineuron as qn
from quasineuron.devices.ode import RK4
from quasineuron.devices.wuxing import wuxing_neuron, wuxing_rhs
from quasineuron.errors import OutOfDomainWarning


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best(fn, device, reps: int = 3) -> float:
    fn()
    _sync(device)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def ode_solves(device: torch.device, batches: list[int]) -> dict:
    import torchdiffeq

    out: dict = {}
    dev = wuxing_neuron(solver=RK4(dt=0.1, compile=True, unroll=10)).to(device)
    rhs = wuxing_rhs(layout="batch")
    for batch in batches:
        u = -0.5 + 2.5 * torch.rand(batch, 1, device=device)
        with torch.no_grad():
            t_ours = _best(lambda u=u: dev(u), device)
        out[f"ours_compiled_rows@{batch}"] = batch / t_ours
        if batch <= 1_000_000:  # the library baseline, same device, rest state E = 1
            x0 = torch.ones(batch, 5, device=device)
            ts = torch.tensor([0.0, 10.0], device=device)

            def solve(u=u, x0=x0, ts=ts):
                return torchdiffeq.odeint(
                    lambda t, x: rhs(t, x, u), x0, ts, method="rk4", options={"step_size": 0.1}
                )

            with torch.no_grad():
                out[f"torchdiffeq_rk4@{batch}"] = batch / _best(solve, device, reps=2)
        print({k: f"{v:.3g}" for k, v in out.items()}, flush=True)
    return out


def mnist_epoch(device: torch.device, data_dir: str | None, batch: int) -> dict:
    warnings.simplefilter("ignore", OutOfDomainWarning)
    if data_dir:
        train, _ = qn.load_mnist(data_dir)
        x, y = train.x.to(device), train.y.to(device)
    else:
        x = (torch.rand(60000, 784, device=device) < 0.2).float()
        y = torch.randint(0, 10, (60000,), device=device)
    dev = qn.almost_neuron(0.1)
    twin = qn.fit_surrogate(qn.sweep(dev, qn.Grid(101), progress=False), kind="spline").model
    twin = twin.to(device=device, dtype=torch.float32)
    twin.policy = "clamp"
    twin.compiled = True
    net = qn.DeviceNetwork(dev, (784, 256, 10), twin=twin, connection=qn.TwoDrive()).to(device)
    mlp = torch.nn.Sequential(
        torch.nn.Linear(784, 256), torch.nn.Tanh(), torch.nn.Linear(256, 10)
    ).to(device)

    def epoch(model, mode):
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        perm = torch.randperm(len(y), device=device)
        for i in range(0, len(y), batch):
            idx = perm[i : i + batch]
            out = model(x[idx]) if mode is None else model(x[idx], mode=mode)
            loss = torch.nn.functional.cross_entropy(out, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    t_mlp = _best(lambda: epoch(mlp, None), device, reps=2)
    t_net = _best(lambda: epoch(net, qn.Surrogate()), device, reps=2)
    return {"batch": batch, "plain_mlp_s": t_mlp, "two_drive_twin_s": t_net, "ratio": t_net / t_mlp}


def model1_step(device: torch.device, batch: int) -> dict:
    from quasineuron.wuxing import model_wiring
    from quasineuron.wuxing.network import WuxingNetwork
    from quasineuron.wuxing.training import Method2, method2_step

    net = WuxingNetwork(model_wiring("MODEL1")).to(device)
    x = torch.rand(batch, 784, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    t = _best(lambda: method2_step(net, x, y, Method2()), device, reps=2)
    return {"batch": batch, "samples_per_s": batch / t}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test on CPU)")
    args = ap.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result: dict = {"device": name, "torch": torch.__version__}
    batches = [10_000] if args.quick else [1_000_000, 10_000_000]
    for key, fn in (
        ("ode_solves_per_s", lambda: ode_solves(device, batches)),
        ("mnist_epoch_surrogate", lambda: mnist_epoch(device, args.data_dir, 128)),
        ("model1_method2_step", lambda: model1_step(device, 8 if args.quick else 1024)),
    ):
        t0 = time.perf_counter()
        try:
            result[key] = fn()
        except Exception as exc:  # keep the other figures when one part fails
            result[key] = {"error": f"{type(exc).__name__}: {exc}"}
        result[key + "_wall_s"] = time.perf_counter() - t0
        print(key, result[key], flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
