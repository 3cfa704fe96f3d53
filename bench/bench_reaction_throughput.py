"""Steady-state simulation throughput of a compiled 784-100-10 network (images/s).

Compares, in one run: the closed-form forward (baseline), the batched semi-implicit torch
solver (float32 and float64), and scipy LSODA per image (a few images).

    python bench/bench_reaction_throughput.py --batch 1000
"""

from __future__ import annotations

import argparse
import time

import torch

import quasineuron.chemistry as ch


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eps", type=float, default=0.01)
    p.add_argument("--scipy-images", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    ws = [torch.randn(100, 784, generator=g) * 0.05, torch.randn(10, 100, generator=g) * 0.3]
    bs = [torch.randn(100, generator=g) * 0.1, torch.randn(10, generator=g) * 0.1]
    t0 = time.perf_counter()
    cn = ch.compile_network(ws, bs, eps=args.eps)
    print(f"compile: {time.perf_counter() - t0:.2f} s, {cn.network.describe()}")
    u = torch.rand(args.batch, 784, generator=g)
    t0 = time.perf_counter()
    for _ in range(10):
        ch.closed_form(ws, bs, u, eps=args.eps)
    base = 10 * args.batch / (time.perf_counter() - t0)
    print(f"closed-form forward: {base:,.0f} images/s")
    for dtype in (torch.float32, torch.float64):
        kin = ch.MassAction(cn.network, dtype=dtype)
        x0 = cn.initial_state(u.to(dtype), generator=torch.Generator().manual_seed(1))
        t0 = time.perf_counter()
        res = ch.steady_state(kin, x0)
        el = time.perf_counter() - t0
        err = (cn.outputs(res.x) - ch.closed_form(ws, bs, u.to(dtype), eps=args.eps)).abs().max()
        rate = args.batch / el
        print(
            f"chemistry {dtype}: {rate:,.0f} images/s ({res.steps} steps, incl. the final "
            f"|S v| check), max |x - closed form| = {float(err):.1e}, "
            f"ratio to closed form = 1/{base / rate:,.0f}"
        )
    kin = ch.MassAction(cn.network)
    x0 = cn.initial_state(u[: args.scipy_images].double(), generator=torch.Generator())
    t0 = time.perf_counter()
    for i in range(args.scipy_images):
        ch.scipy_steady_state(
            kin, x0[i].numpy(), t_end=2000.0, method="LSODA", rtol=1e-8, atol=1e-10
        )
    sc = args.scipy_images / (time.perf_counter() - t0)
    print(f"scipy LSODA per image (float64): {sc:.3f} images/s")


if __name__ == "__main__":
    main()
