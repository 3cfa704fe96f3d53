"""XOR and its cousins, the classic cases of the perceptron.

- AND and OR with Rosenblatt's perceptron rule on hard-limiting black-box neurons, with the
  error-dependent rate ``alpha(e) = 0.05 + 0.2 e**2``;
- XOR, which no single linear neuron separates: one neuron whose transfer function has the
  pairwise term (``Quadratic()`` connection) reaches 100 %, as does a two-layer network of
  ordinary tanh neurons;
- XOR on a black-box network trained without gradients by CMA-ES.

Every accuracy printed is the final one: the trained weights scored on the true device after
training (not the running accuracy seen while training).

Run:
    python examples/xor.py
"""

from __future__ import annotations

import numpy as np
import torch

import quasineuron as qn
from quasineuron.training import CMAES, ErrorPolynomial, Perceptron, optimize_weights, train_local


def step(u: np.ndarray) -> np.ndarray:
    """A hard limiter: 1 for u >= 0, else 0."""
    return np.heaviside(u, 1.0)


Model = tuple[torch.nn.Module, torch.Tensor, torch.Tensor]


def accuracy(out: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction right: argmax for several outputs, threshold 0.5 for one."""
    pred = out.argmax(dim=1) if out.shape[1] > 1 else (out[:, 0] > 0.5).long()
    return (pred == y).double().mean().item()


def final_accuracy(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy of the trained weights on the true device, scored after training."""
    with torch.no_grad():
        return accuracy(net(x, mode=qn.TrueDevice()), y)


def main() -> dict[str, Model]:
    """Run the cases, print their final accuracies and return each model with its data."""
    torch.set_num_threads(1)
    data = qn.xor()
    x = data.x.double()
    models: dict[str, Model] = {}
    box = qn.BlackBoxDevice(step, n_in=1, n_out=1, domain=qn.Box((-1.0,), (1.0,)), vectorized=True)
    for gate, labels in (("AND", [0, 0, 0, 1]), ("OR", [0, 1, 1, 1]), ("XOR", [0, 1, 1, 0])):
        net = qn.DeviceNetwork(box, (2, 1), readout_affine=False, dtype=torch.float64)
        y = torch.tensor(labels)
        res = train_local(
            net,
            qn.ArrayDataset(x, y),
            rule=Perceptron(alpha=ErrorPolynomial((0.05, 0.2))),
            epochs=50,
        )
        name = f"perceptron rule, {gate}"
        models[name] = (net, x, y)
        print(
            f"{name}: accuracy {final_accuracy(net, x, y):.2f} after {len(res.history)} "
            f"epochs (converged: {res.extras['converged']})"
        )

    quad = qn.DeviceNetwork(
        qn.ideal_neuron("sigmoid"),
        (2, 1),
        connection=qn.Quadratic(),
        readout_affine=False,
        dtype=torch.float64,
    )
    target = qn.ArrayDataset(x, data.y.double()[:, None])
    qn.train(
        quad, target, mode=qn.Direct(), epochs=400, batch_size=4, lr=0.1, loss="mse", progress=False
    )
    models["one quadratic neuron, XOR"] = (quad, x, data.y)
    print(f"one quadratic neuron, XOR: accuracy {final_accuracy(quad, x, data.y):.2f}")

    mlp = qn.DeviceNetwork(qn.ideal_neuron("tanh"), (2, 8, 2), dtype=torch.float64, init_gain=0.6)
    qn.train(mlp, data, mode=qn.Direct(), epochs=300, batch_size=4, lr=0.05, progress=False)
    models["2-8-2 tanh network, XOR"] = (mlp, x, data.y)
    print(f"2-8-2 tanh network, XOR: accuracy {final_accuracy(mlp, x, data.y):.2f}")

    tanh_box = qn.BlackBoxDevice(
        np.tanh, n_in=1, n_out=1, domain=qn.Box((-3.0,), (3.0,)), vectorized=True
    )
    net = qn.DeviceNetwork(tanh_box, (2, 4, 2), dtype=torch.float64)
    res = optimize_weights(
        net,
        data,
        optimizer=CMAES(sigma0=1.0, popsize=16),
        budget=1000,
        target_loss=0.05,
        progress=False,
    )
    name = "CMA-ES on a black-box 2-4-2 network, XOR"
    models[name] = (net, x, data.y)
    print(
        f"{name}: accuracy {final_accuracy(net, x, data.y):.2f} after {res.n_evaluations} "
        "candidates"
    )
    return models


if __name__ == "__main__":
    main()
