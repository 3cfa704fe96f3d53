"""Draw eps-sweep.png from metrics.json beside this file (run from anywhere).

Left: the drive map g(x) = x − ε·x² that the almost-neuron applies to each input x before the
weighted sum (pixel values lie in [0, 1]). Right: test accuracy on the true device, mean ± std
over seeds, against ε.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

HERE = Path(__file__).resolve().parent


def main() -> None:
    """Read metrics.json and write eps-sweep.png beside it."""
    m = json.loads((HERE / "metrics.json").read_text(encoding="utf-8"))
    eps = np.array(m["eps"], dtype=float)
    mean = 100 * np.array(m["accuracy"]["device_mean"])
    std = 100 * np.array(m["accuracy"]["device_std"])
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(9, 3.4))
    x = np.linspace(0, 1, 201)
    for e in (0, 0.5, 1, 2):
        ax0.plot(x, x - e * x * x, label=f"ε = {e:g}")
    ax0.axhline(0, color="0.7", lw=0.8)
    ax0.set_xlabel("pixel value x")
    ax0.set_ylabel("drive x − ε·x²")
    ax0.set_title("what the device makes of a pixel")
    ax0.legend(fontsize=8)
    ax1.errorbar(eps, mean, yerr=std, marker="o", capsize=3)
    for e, s in zip(eps, m["per_value"], strict=True):
        ax1.scatter([e] * len(s["per_seed"]), [100 * v["device"] for v in s["per_seed"].values()],
                    s=8, color="0.5", zorder=3)  # fmt: skip
    ax1.axvline(0.5, color="0.7", ls="--", lw=0.8)
    ax1.set_xlabel("ε")
    ax1.set_ylabel("test accuracy on the device (%)")
    ax1.set_title(f"MNIST, {len(m['per_value'][0]['seeds'])} seeds per ε")
    fig.tight_layout()
    fig.savefig(HERE / "eps-sweep.png", dpi=90)


if __name__ == "__main__":
    main()
