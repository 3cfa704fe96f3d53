"""Run the realism suite and write docs/results/realism/metrics.json.

Every scenario (a device with one flaw) is trained by each of its routes on three seeds and
scored on the true device, beside an ordinary tanh MLP of the same shape.

    python examples/realism.py                      # digits, seeds 0 1 2 (a few minutes)
    python examples/realism.py --data mnist --data-dir DIR --max-train 10000
"""

from __future__ import annotations

import argparse
import warnings

import torch

from quasineuron.realism import run_realism


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/results/realism")
    parser.add_argument("--data", default="digits", choices=("digits", "mnist"))
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--max-train", type=int, default=None)
    args = parser.parse_args()
    # the networks are tiny: one thread avoids the cost of splitting each small matmul
    torch.set_num_threads(1)
    # the suite provokes out-of-domain drives and non-finite outputs on purpose
    warnings.simplefilter("ignore")
    run_realism(
        args.out,
        seeds=args.seeds,
        data=args.data,
        data_dir=args.data_dir,
        epochs=args.epochs,
        hidden=args.hidden,
        max_train=args.max_train,
        log=lambda line: print(line, flush=True),
    )


if __name__ == "__main__":
    main()
