"""The MNIST realism run in this folder: every scenario, the routes compared on MNIST, 3 seeds.

    python docs/results/realism-mnist/run.py DATA_DIR docs/results/realism-mnist [SCENARIO ...]

Each scenario runs its recommended route and the best route of the previous MNIST run (the
full route list of each scenario runs on digits: `quasineuron realism`); the routes were chosen
on a validation split (training images 50 000-55 000, seed 0), never on the test set.
"""

from __future__ import annotations

import dataclasses
import sys

import torch

from quasineuron.realism import default_scenarios, run_realism

ROUTES = {
    "exact-twin": ("twin",),
    "noisy": ("twin", "twin+bounded"),
    "nan-region": ("twin+domain", "twin+bounded"),
    "steep-threshold": ("physics-aware+recharacterize", "physics-aware+recharacterize+bounded"),
    "variability": ("physics-aware", "physics-aware+bounded"),
    "few-points": ("physics-aware", "physics-aware+recharacterize+bounded"),
    "escaping-drives": ("twin+domain", "twin+bounded"),
}

if __name__ == "__main__":
    from quasineuron._atomic import atomic_write_json

    data_dir, out = sys.argv[1], sys.argv[2]
    only = sys.argv[3:]  # scenario names (default: all)
    # one thread: on a shared, busy machine several torch threads per run cost more than gain
    torch.set_num_threads(1)
    merged: dict | None = None
    # one scenario at a time, metrics.json rewritten after each, so a cut-short run keeps
    # what it finished (the ideal network is trained again per scenario: same seeds, same
    # numbers)
    for sc in default_scenarios():
        if only and sc.name not in only:
            continue
        m = run_realism(
            None,
            data="mnist",
            data_dir=data_dir,
            max_train=10_000,
            epochs=5,
            scenarios=[dataclasses.replace(sc, routes=ROUTES[sc.name])],
            seeds=(0, 1, 2),
            log=lambda line: print(line, flush=True),
        )
        if merged is None:
            merged = m
        else:
            merged["scenarios"].extend(m["scenarios"])
        atomic_write_json(f"{out}/metrics.json", merged)
