"""A single linear neuron restores ``y = 2x + 3``: hand-written gradient descent vs the library.

The neuron is an identity device behind a ``Linear()`` connection, ``y = x w + b``. Both
start from ``w = 1, b = 0`` and take the same full-batch steps on ``J = mean((y - y_p)**2) / 2``
(the library's MSE has no 1/2, so it runs at half the rate); their parameters agree at every
step. The delta rule (a local rule, no autograd) reaches the same line.

Run:
    python examples/line_neuron.py
"""

from __future__ import annotations

import numpy as np
import torch

import quasineuron as qn
from quasineuron.training import Delta, train_local


def main(steps: int = 200, lr: float = 0.1) -> None:
    """Train both ways and print the largest parameter difference over all steps."""
    x = np.linspace(-3, 3, 1000).reshape(-1, 1)
    y = 2 * x + 3

    w, b, hand = 1.0, 0.0, []
    for _ in range(steps):
        g = -(y - (x * w + b)) / len(x)
        w, b = w - lr * float((g * x).sum()), b - lr * float(g.sum())
        hand.append((w, b))

    ident = qn.FormulaDevice(lambda u: u, n_in=1, n_out=1, domain=qn.Box((-10.0,), (10.0,)))
    net = qn.DeviceNetwork(ident, (1, 1), readout_affine=False, dtype=torch.float64)
    layer = net.layers[0]
    with torch.no_grad():
        layer.map.weight.fill_(1.0)
        layer.map.bias.fill_(0.0)
    lib: list[tuple[float, float]] = []
    data = qn.ArrayDataset(torch.from_numpy(x), torch.from_numpy(y))
    qn.train(
        net,
        data,
        mode=qn.Direct(),
        epochs=steps,
        batch_size=len(x),
        optimizer=qn.SGD(lr=lr / 2),
        loss="mse",
        progress=False,
        callbacks=[lambda m: lib.append((layer.map.weight.item(), layer.map.bias.item()))],
    )
    diff = np.abs(np.array(hand) - np.array(lib)).max()
    print(f"hand-written: w={hand[-1][0]:.6f} b={hand[-1][1]:.6f}")
    print(f"library:      w={lib[-1][0]:.6f} b={lib[-1][1]:.6f}")
    print(f"largest difference over {steps} steps: {diff:.2e}")

    net = qn.DeviceNetwork(ident, (1, 1), readout_affine=False, dtype=torch.float64)
    train_local(net, data, rule=Delta(alpha=0.01), epochs=5)
    print(
        f"delta rule:   w={net.layers[0].map.weight.item():.6f} "
        f"b={net.layers[0].map.bias.item():.6f}"
    )


if __name__ == "__main__":
    main()
