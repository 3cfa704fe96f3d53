"""How well does method 2's signal follow the gradient on MNIST? (docs/wuxing.md, Training.)

    python examples/wuxing_gradient_alignment.py --data-dir <mnist folder> \\
        --out docs/results/wuxing-gradient-alignment

For MODEL1 with random coefficients and with the twin-trained ones, on the first 512 training
images: the cosine, per layer pair and over all links, between method 2's batch-mean ``G1``
(steady estimate through the neuron twin) and the true negative gradient of the same loss
(autograd through the same twin network), for the paper's reversed network (linearised at
rest) and for the operating-point reversal. Writes ``metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
from wuxing_mnist import _split, build, load_twin  # noqa: E402

from quasineuron.devices.ode import Heun  # noqa: E402
from quasineuron.wuxing import SimConfig, TargetCoding, signals  # noqa: E402
from quasineuron.wuxing.training import _loss  # noqa: E402


def alignment(net, twin, x, y, target) -> dict:
    """Cosines of G1 (rest and operating-point reversal) with −∂L/∂c, per layer pair."""
    net.c.grad = None
    st = net.steady_state(x, neuron=twin)
    _loss(st.score, y, target).backward()
    grad = -net.c.grad.detach()
    bounds = [0, *torch.tensor(net.wiring.describe()["links_per_layer"]).cumsum(0).tolist()]
    out = {}
    for reversal in ("rest", "operating"):
        sig = signals(net, x, y, target, "steady", twin, reversal)
        g1 = (sig.F[:, net.link_src] * sig.R[:, net.link_dst]).mean(0).to(grad.dtype)
        per = [
            float(torch.nn.functional.cosine_similarity(g1[a:b], grad[a:b], dim=0))
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]
        total = float(torch.nn.functional.cosine_similarity(g1, grad, dim=0))
        out[reversal] = {"per_layer_pair": per, "all_links": total}
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="docs/results/wuxing-gradient-alignment")
    p.add_argument("--twin", default="docs/results/wuxing-neuron-twin")
    p.add_argument("--trained", default="docs/results/wuxing-model1-twin")
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    (xtr, ytr, _, _), _ = _split(a.data_dir)
    x, y = xtr[: a.n], ytr[: a.n]
    twin = load_twin(a.twin)
    doc = json.loads((Path(a.trained) / "model.json").read_text())
    target = TargetCoding(kind="softmax", beta=20.0, error_scale=0.05)
    net = build(doc["network"], SimConfig(T=60.0, solver=Heun(dt=0.1)))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        net.c.copy_(torch.empty(net.c.shape).uniform_(-1.0, 1.0, generator=g))
    res = {"random c ~ U(-1, 1)": alignment(net, twin, x, y, target)}
    state = load_file(str(Path(a.trained) / "model.safetensors"))
    with torch.no_grad():
        net.c.copy_(state["c"])
        net.K.copy_(state["K"])
        net.update_rest_states()
    res[f"trained ({doc['name']})"] = alignment(net, twin, x, y, target)
    metrics = {
        "name": "wuxing-gradient-alignment",
        "what": "cosine between method 2's batch-mean G1 and the negative gradient of the "
        "cross-entropy, steady state through the neuron twin, MODEL1, per layer pair "
        "(pixels -> outputs) and over all links",
        "n_images": a.n,
        "results": res,
        "command": " ".join(["python", "examples/wuxing_gradient_alignment.py", *sys.argv[1:]]),
    }
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    for k, v in res.items():
        for r, d in v.items():
            per = " ".join(f"{c:+.2f}" for c in d["per_layer_pair"])
            print(f"{k:40s} {r:9s} {per}  all {d['all_links']:+.2f}")


if __name__ == "__main__":
    main()
