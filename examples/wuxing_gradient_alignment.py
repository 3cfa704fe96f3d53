"""How well does method 2's signal follow the gradient on MNIST? (docs/wuxing.md, Training.)

    quasineuron run examples/wuxing-model1-twin-bptt.toml --out runs/twin-bptt --data-dir DIR
    python examples/wuxing_gradient_alignment.py runs/twin-bptt --data-dir DIR \\
        --out runs/gradient-alignment

For the run's MODEL1 network with random coefficients and with its trained ones, on the first
512 training images: the cosine, per layer pair and over all links, between method 2's
batch-mean ``G1`` (steady-state estimate through the neuron twin the run fitted in its first
stage) and the true negative gradient of the same loss (autograd through the same twin
network), for the paper's reversed network (linearised at rest) and for the operating-point
reversal. Writes ``metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

import quasineuron as qn
from quasineuron.wuxing import TargetCoding, WuxingNetwork, signals
from quasineuron.wuxing.io import load_neuron_twin
from quasineuron.wuxing.twin import NeuronTwin


def alignment(
    net: WuxingNetwork, twin: NeuronTwin, x: torch.Tensor, y: torch.Tensor, target: TargetCoding
) -> dict[str, dict[str, object]]:
    """Cosines of G1 (rest and operating-point reversal) with −∂L/∂c, per layer pair."""
    net.c.grad = None
    st = net.steady_state(x, neuron=twin)
    # the loss method 2 descends with a softmax target: cross-entropy of beta * score
    torch.nn.functional.cross_entropy(target.beta * st.score, y).backward()
    assert net.c.grad is not None
    grad = -net.c.grad.detach()
    bounds = [0, *torch.tensor(net.wiring.describe()["links_per_layer"]).cumsum(0).tolist()]
    out: dict[str, dict[str, object]] = {}
    for reversal in ("rest", "operating"):
        sig = signals(net, x, y, target, "steady-state", twin, reversal)
        g1 = (sig.F[:, net.link_src] * sig.R[:, net.link_dst]).mean(0).to(grad.dtype)
        per = [
            float(torch.nn.functional.cosine_similarity(g1[a:b], grad[a:b], dim=0))
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]
        total = float(torch.nn.functional.cosine_similarity(g1, grad, dim=0))
        out[reversal] = {"per_layer_pair": per, "all_links": total}
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", type=Path, help="a run of examples/wuxing-model1-twin-bptt.toml")
    p.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files")
    p.add_argument("--out", type=Path, default=Path("runs/gradient-alignment"))
    p.add_argument("--n", type=int, default=512, help="training images used")
    a = p.parse_args(argv)
    train, _ = qn.load_mnist(a.data_dir)
    x, y = train.x[: a.n], train.y[: a.n]
    twin = load_neuron_twin(a.run / "checkpoints" / "stage-1")
    trained = qn.load_network(a.run / "network")
    target = TargetCoding(kind="softmax", beta=20.0, error_scale=0.05)
    random = qn.load_network(a.run / "network")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        random.c.copy_(torch.empty(random.c.shape).uniform_(-1.0, 1.0, generator=g))
    res = {
        "random c ~ U(-1, 1)": alignment(random, twin, x, y, target),
        "trained": alignment(trained, twin, x, y, target),
    }
    metrics = {
        "name": "wuxing-gradient-alignment",
        "what": "cosine between method 2's batch-mean G1 and the negative gradient of the "
        "cross-entropy, steady state through the neuron twin, per layer pair "
        "(pixels -> outputs) and over all links",
        "run": str(a.run),
        "n_images": a.n,
        "results": res,
        "command": " ".join(["python", "examples/wuxing_gradient_alignment.py", *sys.argv[1:]]),
    }
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    for k, v in res.items():
        for r, d in v.items():
            per = " ".join(f"{c:+.2f}" for c in d["per_layer_pair"])  # type: ignore[attr-defined]
            print(f"{k:24s} {r:9s} {per}  all {d['all_links']:+.2f}")


if __name__ == "__main__":
    main()
