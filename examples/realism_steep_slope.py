"""Why the steep-threshold device loses seeds: the twin's slope, not the drives or the step.

The realism suite's steep-threshold device, tanh(3 (u - 0.3)), has a twin fitted on 9 grid
points that misses the threshold. Trained through that twin (``twin``) or physics-aware
(device forward, the twin's slope backward), one seed in three ends 20-27 points below the
others. This script runs the scenario with routes of its own (a custom ``Route`` list passed
to :func:`~quasineuron.realism.run_realism`) that take away one suspect at a time:

- ``*+slope``: the learning rate divided by the twin's peak slope (``match_slope``);
- ``*+bounded+slope``: also every layer's drives squashed into the twin's box;
- ``direct+slope``: the same step, with the device's own exact slope (no twin at all).

Scored on the validation split (held-out training images), as a diagnosis should be::

    python examples/realism_steep_slope.py --data-dir MNIST --out DIR

writes ``DIR/metrics.json`` and prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import warnings

import torch

from quasineuron.realism import ROUTES, Route, default_scenarios, markdown_table, run_realism

EXTRA = (
    Route("twin+slope", match_slope=True),
    Route("physics-aware+slope", mode="physics-aware", match_slope=True),
    Route("twin+bounded+slope", bounded_drives="all", match_slope=True),
    Route(
        "physics-aware+bounded+slope", mode="physics-aware", bounded_drives="all", match_slope=True
    ),
    Route("direct+slope", mode="direct", match_slope=True),
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for metrics.json")
    p.add_argument("--data-dir", required=True, help="folder with the MNIST files")
    p.add_argument("--quick", action="store_true", help="one seed, one epoch, 300 images")
    a = p.parse_args()
    (steep,) = [s for s in default_scenarios() if s.name == "steep-threshold"]
    names = ("twin", "physics-aware", "direct", *(r.name for r in EXTRA))
    torch.set_num_threads(1)  # as `quasineuron realism`: the networks are tiny
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # drives leave the box on purpose
        metrics = run_realism(
            a.out,
            seeds=(0,) if a.quick else (0, 1, 2),
            data="mnist",
            scenarios=[dataclasses.replace(steep, routes=names)],
            routes=ROUTES + EXTRA,
            epochs=1 if a.quick else 5,
            data_dir=a.data_dir,
            max_train=300 if a.quick else 10000,
            validation=True,
            log=lambda line: print(line, flush=True),
        )
    print(markdown_table(metrics))


if __name__ == "__main__":
    main()
