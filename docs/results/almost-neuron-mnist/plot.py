"""Draw seeds.png from metrics.json beside this file (run from anywhere).

Test accuracy of each seed on the true device and of the plain MLP of the same shape trained
beside it, with each family's mean ± sample std over the seeds.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).resolve().parent


def main() -> None:
    """Read metrics.json and write seeds.png beside it."""
    m = json.loads((HERE / "metrics.json").read_text(encoding="utf-8"))
    acc = m["accuracy"]
    fig, ax = plt.subplots(figsize=(4.6, 3.2))
    for i, (key, label) in enumerate(
        (("device", "almost-neurons, device"), ("baseline_mlp", "plain MLP"))
    ):
        values = [100 * m["per_seed"][str(s)]["accuracy"][key] for s in m["seeds"]]
        ax.scatter([i] * len(values), values, s=14, color="0.5", zorder=3)
        ax.errorbar([i + 0.15], [100 * acc[f"{key}_mean"]], yerr=[100 * acc[f"{key}_std"]],
                    marker="o", capsize=4, label=label)  # fmt: skip
    ax.set_xticks([0, 1], ["almost-neurons\n(true device)", "plain MLP"])
    ax.set_xlim(-0.5, 1.5)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"MNIST 784-256-10, ε = 0.1, seeds {', '.join(map(str, m['seeds']))}")
    fig.tight_layout()
    fig.savefig(HERE / "seeds.png", dpi=90)


if __name__ == "__main__":
    main()
