"""Sparse-MLP baseline of the Wuxing paper's Fig. 3: accuracy against link ratio on MNIST.

An ordinary MLP with MODEL1's layer sizes (784, 839, 283, 96, 32, 10), tanh hidden neurons and
linear output logits, trained by backprop (Adam). Every layer keeps the same link ratio
``LR = links / (n_in * n_out)`` through a random mask with an exact link count
(``Sparse(link_ratio)``); the masks of one seed are nested, so a smaller LR keeps a subset of the
links of a larger one. The network is a ``DeviceNetwork`` whose neurons are tanh formula devices
(identity devices in the output layer), run in ``Direct()`` mode, trained by ``train``.

Model selection uses a validation split (10 % of the training set, stratified): every candidate
learning rate trains one epoch; the one with the best validation accuracy continues (resumed
from its checkpoint, optimiser state included) to ``--epochs``; the epoch with the best
validation accuracy is kept. The test set is scored once per LR and seed, with those weights.
``--seeds 0,1,2`` repeats the whole sweep per seed (its own split, masks, initialisation and
shuffles) and adds the mean ± std over seeds per link ratio (``by_ratio``).

    python examples/wuxing_sparse_mlp.py --data-dir <folder with the MNIST IDX files>

Writes ``<out>/wuxing-sparse-mlp/metrics.json`` and ``accuracy_vs_link_ratio.png``.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from quasineuron.data.dataset import ArrayDataset
from quasineuron.data.mnist import load_mnist
from quasineuron.devices.base import Box
from quasineuron.devices.formula import FormulaDevice
from quasineuron.network import DeviceNetwork, Direct, Sparse
from quasineuron.report.io import write_json
from quasineuron.training import EpochMetrics, train

SIZES = (784, 839, 283, 96, 32, 10)
RATIOS = (1.0, 0.5, 0.2, 0.1, 0.05, 0.03, 0.02, 0.01, 0.005)
QUICK_RATIOS = (1.0, 0.05)
#: MODEL1 of the paper: 4711 links out of 925 773 possible (docs/models.md §A.8).
MODEL1_LINKS = 4711
MODEL1_POSSIBLE = sum(a * b for a, b in zip(SIZES[:-1], SIZES[1:], strict=True))
MODEL1_POOLED_LR = MODEL1_LINKS / MODEL1_POSSIBLE
RUN_NAME = "wuxing-sparse-mlp"


def _identity(u: torch.Tensor) -> torch.Tensor:
    return u


def build_mlp(link_ratio: float, *, seed: int) -> DeviceNetwork:
    """MLP of MODEL1's sizes with tanh hidden neurons and linear logits, sparsified to LR.

    Args:
        link_ratio: Fraction of links kept in every layer, in (0, 1].
        seed: Seed of the masks and initial weights.

    Returns:
        A network mapping x (batch, 784) to logits (batch, 10) in ``Direct()`` mode.
    """
    box = Box((-4.0,), (4.0,))  # symmetric, so biases start at 0
    tanh = FormulaDevice(torch.tanh, n_in=1, n_out=1, domain=box, name="tanh")
    linear = FormulaDevice(_identity, n_in=1, n_out=1, domain=box, name="identity")
    n_layers = len(SIZES) - 1
    return DeviceNetwork(
        [tanh] * (n_layers - 1) + [linear],
        SIZES,
        wiring=Sparse(link_ratio=link_ratio),
        readout_affine=False,  # the identity output layer already gives linear logits
        init_gain=1.0,  # LeCun normal on each neuron's actual fan-in, the usual tanh choice
        seed=seed,
    )


def link_counts(net: DeviceNetwork) -> list[int]:
    """Links (True mask entries) of every layer, input layer first."""
    return [int(layer.mask.sum()) for layer in net.layers]


@torch.no_grad()
def accuracy(net: DeviceNetwork, data: ArrayDataset, *, batch_size: int = 1000) -> float:
    """Fraction of ``data`` classified right by ``net`` in eval mode."""
    was_training = net.training
    net.eval()
    correct = 0
    for start in range(0, len(data), batch_size):
        logits = net(data.x[start : start + batch_size], mode=Direct())
        correct += int((logits.argmax(dim=1) == data.y[start : start + batch_size]).sum())
    net.train(was_training)
    return correct / len(data)


class _KeepBest:
    """Training callback that snapshots the weights of the best validation accuracy."""

    def __init__(self, net: torch.nn.Module) -> None:
        self.net = net
        self.accuracy = -1.0
        self.epoch: int | None = None
        self.state: dict[str, torch.Tensor] | None = None

    def __call__(self, metrics: EpochMetrics) -> bool:
        if metrics.val_accuracy is not None and metrics.val_accuracy > self.accuracy:
            self.accuracy, self.epoch = metrics.val_accuracy, metrics.epoch
            self.state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
        return False  # never stop early


def fit_link_ratio(
    link_ratio: float,
    train_set: ArrayDataset,
    val_set: ArrayDataset,
    test_set: ArrayDataset,
    *,
    lrs: Sequence[float],
    epochs: int,
    batch_size: int,
    seed: int,
    workdir: Path,
) -> dict[str, Any]:
    """Pick the learning rate and epoch on ``val_set``, then score ``test_set`` once.

    Args:
        link_ratio: Link ratio of every layer.
        train_set: Training part, x (n, 784) float32 and labels (n,).
        val_set: Validation part.
        test_set: Test set, scored once with the selected weights.
        lrs: Candidate Adam learning rates; each trains one epoch, the best continues.
        epochs: Total epochs of the selected run.
        batch_size: Samples per step.
        seed: Seed of masks, weights and batch order (the same for every candidate).
        workdir: Folder for the candidates' checkpoints.

    Returns:
        JSON-ready record of links, selection and accuracies.
    """
    t0 = time.perf_counter()
    pilots = []
    for i, lr in enumerate(lrs):
        net = build_mlp(link_ratio, seed=seed)
        keep = _KeepBest(net)
        ckpt = workdir / f"lr{i}"
        res = train(
            net,
            train_set,
            mode=Direct(),
            epochs=1,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            val_data=val_set,
            checkpoint_dir=ckpt,
            callbacks=[keep],
            progress=False,
        )
        pilots.append((res.history[-1].val_accuracy, -lr, lr, net, keep, ckpt))
    # best first-epoch validation accuracy; a tie goes to the smaller learning rate
    _, _, lr, net, keep, ckpt = max(pilots, key=lambda p: (p[0], p[1]))
    pilot_acc = {f"{p[2]:g}": p[0] for p in pilots}
    del pilots
    res = train(
        net,
        train_set,
        mode=Direct(),
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        val_data=val_set,
        checkpoint_dir=ckpt,
        resume=True,
        callbacks=[keep],
        progress=False,
    )
    if keep.state is None:  # every epoch scores val_set, so only a NaN accuracy gets here
        raise RuntimeError(f"no epoch gave a validation accuracy at link ratio {link_ratio}")
    net.load_state_dict(keep.state)
    test_acc = accuracy(net, test_set)
    links = link_counts(net)
    possible = [a * b for a, b in zip(SIZES[:-1], SIZES[1:], strict=True)]
    return {
        "link_ratio": link_ratio,
        "links_per_layer": links,
        "possible_per_layer": possible,
        "link_ratio_per_layer": [n / p for n, p in zip(links, possible, strict=True)],
        "total_links": sum(links),
        "pooled_link_ratio": sum(links) / sum(possible),
        "pilot_val_accuracy_by_lr": pilot_acc,
        "chosen_lr": lr,
        "val_accuracy_per_epoch": [m.val_accuracy for m in res.history],
        "val_loss_per_epoch": [m.val_loss for m in res.history],
        "train_loss_per_epoch": [m.train_loss for m in res.history],
        "chosen_epoch": keep.epoch,
        "val_accuracy": keep.accuracy,
        "test_accuracy": test_acc,
        "seconds": time.perf_counter() - t0,
    }


def summarise(runs: Sequence[dict[str, Any]], ratios: Sequence[float]) -> list[dict[str, Any]]:
    """Per link ratio: test and validation accuracy, mean and std over seeds (std None for 1)."""
    out = []
    for ratio in ratios:
        mine = [r for r in runs if r["link_ratio"] == ratio]
        row: dict[str, Any] = {
            "link_ratio": ratio,
            "pooled_link_ratio": mine[0]["pooled_link_ratio"],
            "seeds": [r["seed"] for r in mine],
        }
        for key in ("test_accuracy", "val_accuracy"):
            vals = [r[key] for r in mine]
            row[f"{key}_per_seed"] = vals
            row[f"{key}_mean"] = statistics.fmean(vals)
            row[f"{key}_std"] = statistics.stdev(vals) if len(vals) > 1 else None
        out.append(row)
    return out


def plot_accuracy_vs_link_ratio(by_ratio: Sequence[dict[str, Any]], path: Path) -> Path:
    """Test accuracy (mean ± std over seeds) against pooled link ratio (log x), MODEL1 marked."""
    rows = sorted(by_ratio, key=lambda r: r["pooled_link_ratio"])
    x = [100 * r["pooled_link_ratio"] for r in rows]
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    n = len(rows[0]["seeds"])
    ax.errorbar(
        x,
        [100 * r["test_accuracy_mean"] for r in rows],
        yerr=[100 * (r["test_accuracy_std"] or 0.0) for r in rows],
        fmt="o-",
        capsize=3,
        label=f"sparse MLP, test (mean ± std, {n} seed{'s' if n > 1 else ''})",
    )
    ax.plot(
        x,
        [100 * r["val_accuracy_mean"] for r in rows],
        "s--",
        ms=4,
        alpha=0.6,
        label="validation (mean)",
    )
    ax.axvline(100 * MODEL1_POOLED_LR, color="C3", ls=":", label="MODEL1 pooled LR 0.509 %")
    ax.axhline(10, color="grey", lw=0.8, ls="--", label="chance")
    ax.set_xscale("log")
    ax.set_xlabel("link ratio, pooled (%)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("MLP 784-839-283-96-32-10 (tanh), MNIST")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v.strip())


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the sweep; returns the metrics written to ``metrics.json``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=None, help="folder with the four MNIST IDX files")
    p.add_argument("--out", default="docs/results", help="parent folder of the run folder")
    p.add_argument("--epochs", type=int, default=5, help="epochs of the selected run per LR")
    p.add_argument("--lrs", type=_floats, default=(1e-3, 3e-3, 1e-2), help="Adam rates, a,b,c")
    p.add_argument("--ratios", type=_floats, default=None, help="link ratios, a,b,c")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seeds", type=_ints, default=(0,), help="seeds, a,b,c (default 0)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="tiny subset, 2 ratios, 2 epochs")
    a = p.parse_args(argv)
    ratios = a.ratios or (QUICK_RATIOS if a.quick else RATIOS)
    if a.quick:
        a.epochs, a.lrs = min(a.epochs, 2), a.lrs[:2]
    torch.set_num_threads(a.threads)
    t_start = time.perf_counter()

    all_train, all_test = load_mnist(a.data_dir)
    t_data = time.perf_counter() - t_start

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in a.seeds:
            full_train, test_set = all_train, all_test
            if a.quick:
                full_train = full_train.sample(2000, seed=seed)
                test_set = test_set.sample(500, seed=seed)
            train_set, val_set = full_train.split(0.1, seed=seed)
            for k, ratio in enumerate(ratios):
                run = fit_link_ratio(
                    ratio,
                    train_set,
                    val_set,
                    test_set,
                    lrs=a.lrs,
                    epochs=a.epochs,
                    batch_size=a.batch_size,
                    seed=seed,
                    workdir=Path(tmp) / f"seed{seed}-ratio{k}",
                )
                run = {"seed": seed, **run}
                runs.append(run)
                print(
                    f"seed {seed}  LR {100 * ratio:6.2f} %  "
                    f"pooled {100 * run['pooled_link_ratio']:7.3f} %  "
                    f"links {run['links_per_layer']}  lr {run['chosen_lr']:g}  "
                    f"epoch {run['chosen_epoch']}  val {run['val_accuracy']:.4f}  "
                    f"test {run['test_accuracy']:.4f}  ({run['seconds']:.0f} s)",
                    flush=True,
                )

    out_dir = Path(a.out) / RUN_NAME
    metrics = {
        "command": "python examples/wuxing_sparse_mlp.py " + shlex.join(argv),
        "seeds": list(a.seeds),
        "test_reads": len(a.seeds),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "threads": a.threads,
        "sizes": list(SIZES),
        "hidden_activation": "tanh",
        "output": "linear logits",
        "optimizer": "adam",
        "candidate_lrs": list(a.lrs),
        "epochs": a.epochs,
        "batch_size": a.batch_size,
        "selection": (
            "each candidate lr trains 1 epoch; best val accuracy continues to `epochs`; "
            "weights of the best val-accuracy epoch are scored on the test set once"
        ),
        "n_train": len(train_set),
        "n_val": len(val_set),
        "n_test": len(test_set),
        "quick": a.quick,
        "model1": {
            "links": MODEL1_LINKS,
            "possible": MODEL1_POSSIBLE,
            "pooled_link_ratio": MODEL1_POOLED_LR,
        },
        "runs": runs,
        "by_ratio": summarise(runs, ratios),
        "timings": {
            "data_seconds": t_data,
            "total_seconds": time.perf_counter() - t_start,
            "per_ratio_seconds": [r["seconds"] for r in runs],
        },
    }
    write_json(out_dir / "metrics.json", metrics)
    plot_accuracy_vs_link_ratio(metrics["by_ratio"], out_dir / "accuracy_vs_link_ratio.png")
    print(f"wrote {out_dir / 'metrics.json'} ({metrics['timings']['total_seconds']:.0f} s)")
    return metrics


if __name__ == "__main__":
    main()
