"""The single-neuron tutorial: one neuron restores ``y = 2x + 3``, one sample per step.

The neuron is an identity device behind a ``Linear()`` connection, ``y_p = x w + b``, starting
at ``w = 1, b = 0``. As in the tutorial, every step draws one random point of the line and
moves the weights by

    ``w -= lr * x * g``,  ``b -= lr * g``,  with ``g = -(y - y_p)``

(the gradient of ``(y - y_p)**2 / 2``). The tutorial's hand-written neuron and the library
take the same steps: in the library this is the delta rule (``train_local`` with
``Delta(alpha=lr)``, one sample per update, ``shuffle=False`` over the drawn sequence), whose
update on an identity device is exactly this gradient step. Then the tutorial's extra: without
a bias the neuron can only turn a line through the origin, so it ends parallel to
``y = 2x + 3`` and misses it; with the bias it fits.

Last, the library's mini-batch loop ``qn.train`` on the same neuron with full-batch steps
(its MSE has no 1/2, so it runs at half the rate) follows full-batch gradient descent.

Run:
    python examples/line_neuron.py
"""

from __future__ import annotations

import numpy as np
import torch

import quasineuron as qn
from quasineuron.training import Delta, LocalStep, train_local

IDENTITY = qn.FormulaDevice(lambda u: u, n_in=1, n_out=1, domain=qn.Box((-10.0,), (10.0,)))


def line() -> tuple[np.ndarray, np.ndarray]:
    """The tutorial's data: 1000 points of ``y = 2x + 3`` on [-3, 3], each (1000, 1)."""
    x = np.linspace(-3, 3, 1000).reshape(-1, 1)
    return x, 2 * x + 3


def hand_written(
    x: np.ndarray, y: np.ndarray, order: np.ndarray, *, lr: float, bias: bool
) -> np.ndarray:
    """The tutorial's ``Neuron.optimize`` on one sample per step; (w, b) after every step."""
    w, b, path = 1.0, 0.0, []
    for i in order:
        pred = float(x[i, 0]) * w + (b if bias else 0.0)
        g = -(float(y[i, 0]) - pred)  # Error.grad of one sample
        w -= float(x[i, 0]) * g * lr
        if bias:
            b -= g * lr
        path.append((w, b))
    return np.array(path)


def neuron(*, bias: bool) -> qn.DeviceNetwork:
    """One identity neuron ``y = x w (+ b)`` at the tutorial's start ``w = 1, b = 0``."""
    net = qn.DeviceNetwork(
        IDENTITY, (1, 1), connection=qn.Linear(bias=bias), readout_affine=False, dtype=torch.float64
    )
    with torch.no_grad():
        net.layers[0].map.weight.fill_(1.0)
        if bias:
            net.layers[0].map.bias.fill_(0.0)
    return net


def per_sample(
    x: np.ndarray, y: np.ndarray, order: np.ndarray, *, lr: float, bias: bool
) -> tuple[qn.DeviceNetwork, np.ndarray]:
    """The library's run of the tutorial: the delta rule on the drawn samples, in order."""
    net = neuron(bias=bias)
    layer = net.layers[0]
    path: list[tuple[float, float]] = []

    def record(step: LocalStep) -> None:
        path.append((layer.map.weight.item(), layer.map.bias.item() if bias else 0.0))

    drawn = qn.ArrayDataset(torch.from_numpy(x[order]), torch.from_numpy(y[order]))
    train_local(
        net,
        drawn,
        rule=Delta(alpha=lr),
        epochs=1,
        batch_size=1,
        shuffle=False,
        callbacks=[record],
    )
    return net, np.array(path)


def loss(net: qn.DeviceNetwork, x: np.ndarray, y: np.ndarray) -> float:
    """The tutorial's ``J = mean((y - y_p)**2) / 2`` over the whole line."""
    with torch.no_grad():
        pred = net(torch.from_numpy(x), mode=qn.TrueDevice()).numpy()
    return 0.5 * float(np.mean((y - pred) ** 2))


def main(steps: int = 500, lr: float = 1e-2, seed: int = 0) -> dict[str, float]:
    """Run the tutorial both ways, with and without bias; print and return the numbers."""
    x, y = line()
    # The tutorial draws `np.random.randint(0, 1000)` at every step; a seeded generator
    # gives the same kind of sequence, reproducibly.
    order = np.random.default_rng(seed).integers(0, len(x), steps)
    out: dict[str, float] = {}
    for bias in (True, False):
        name, key = ("with bias", "bias") if bias else ("without bias", "no_bias")
        expected = hand_written(x, y, order, lr=lr, bias=bias)
        net, path = per_sample(x, y, order, lr=lr, bias=bias)
        out[f"diff_{key}"] = float(np.abs(path - expected).max())
        out[f"loss_{key}"] = loss(net, x, y)
        w = net.layers[0].map.weight.item()
        b = net.layers[0].map.bias.item() if bias else 0.0
        print(
            f"{name:12s}: after {steps} one-sample steps w={w:.4f} b={b:.4f}, "
            f"J={out[f'loss_{key}']:.6f}; largest difference from the hand-written neuron "
            f"over all steps {out[f'diff_{key}']:.1e}"
        )
    # The best a neuron without bias can do: w* = sum(x y) / sum(x**2) (= 2 on this
    # symmetric grid), whose loss is the missed offset's, 3**2 / 2.
    w_best = float((x * y).sum() / (x * x).sum())
    out["loss_best_no_bias"] = 0.5 * float(np.mean((y - w_best * x) ** 2))
    print(
        f"best line through the origin: w={w_best:.4f}, J={out['loss_best_no_bias']:.4f}; "
        "without a bias the neuron cannot reach y = 2x + 3"
    )

    full = neuron(bias=True)
    layer = full.layers[0]
    batch_path: list[tuple[float, float]] = []
    qn.train(
        full,
        qn.ArrayDataset(torch.from_numpy(x), torch.from_numpy(y)),
        mode=qn.Direct(),
        epochs=200,
        batch_size=len(x),  # one full-batch step per epoch
        optimizer=qn.SGD(lr=0.1 / 2),  # the library's MSE has no 1/2
        loss="mse",
        progress=False,
        callbacks=[lambda m: batch_path.append((layer.map.weight.item(), layer.map.bias.item()))],
    )
    w, b = 1.0, 0.0
    gd = []
    for _ in range(200):
        g = -(y - (x * w + b)) / len(x)
        w, b = w - 0.1 * float((g * x).sum()), b - 0.1 * float(g.sum())
        gd.append((w, b))
    out["diff_full_batch"] = float(np.abs(np.array(batch_path) - np.array(gd)).max())
    print(
        f"full batch, qn.train: w={batch_path[-1][0]:.6f} b={batch_path[-1][1]:.6f}; largest "
        f"difference from hand-written gradient descent over 200 steps "
        f"{out['diff_full_batch']:.1e}"
    )
    return out


if __name__ == "__main__":
    main()
