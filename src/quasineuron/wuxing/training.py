"""Training a Wuxing network: method 2 (connection coefficients, BSP) and backprop through time.

- :class:`Method2` (models.md §A.6; Jiang, arXiv 2502.10414, eqs. 3.3–3.5): one forward run
  gives ``F = ∫_0^T D dt`` of every slot, one reversed run with the error injected at the
  read-outs gives ``R = ∫_0^T D̂ dt``; each link (a,p)→(b,q) then gets

      G1 = F_{a,p} · R_{b,q},   G2 = atan(kt · G1) / kt,   c ← clip(c + η · G2, c_min, c_max).

  For small signals ``G1 / T² ≈ e · ∂s/∂c``, so this is (soft-clipped) gradient descent on the
  linearised network without any chain rule.
- :class:`Backprop`: the same network object, gradients by autograd through the time loop
  (with checkpointing, see :class:`~quasineuron.wuxing.network.SimConfig`), for comparison.

Training method 1 (fixed-point / K-parameter adjustment with distributed PID, §A.7) and the
mixed method are not implemented (the source text of method 1 is not available).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch

from quasineuron.wuxing.network import WuxingNetwork

__all__ = [
    "Backprop",
    "Method2",
    "StepReport",
    "TargetCoding",
    "TrainResult",
    "evaluate",
    "method2_step",
    "output_error",
    "train",
    "bptt_step",
]


@dataclass(frozen=True)
class TargetCoding:
    """How labels become the output error ``e = y* − s`` ([ours], models.md §A.5).

    Args:
        kind: ``"softmax"``: ``e = onehot − softmax(beta · s)`` (the negative gradient of the
            cross-entropy with respect to ``s``, up to ``beta``); ``"onehot"``:
            ``e = amplitude · onehot − s`` (squared error towards a reachable amplitude).
        amplitude: Target amplitude of the true class for ``"onehot"``.
        beta: Inverse temperature for ``"softmax"``.
        error_scale: Multiplies the error before it is injected; keeps the reversed network
            near rest, where it is the adjoint of the forward one.
    """

    kind: Literal["softmax", "onehot"] = "softmax"
    amplitude: float = 0.5
    beta: float = 20.0
    error_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in ("softmax", "onehot"):
            raise ValueError(f"TargetCoding.kind must be 'softmax' or 'onehot', got {self.kind!r}")
        for name in ("amplitude", "beta", "error_scale"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"TargetCoding.{name} must be a finite number > 0, got {v!r}")


def output_error(score: torch.Tensor, y: torch.Tensor, coding: TargetCoding) -> torch.Tensor:
    """Error ``e`` (batch, n_out) to inject, from scores (batch, n_out) and labels (batch,)."""
    onehot = torch.nn.functional.one_hot(y, score.shape[1]).to(score.dtype)
    if coding.kind == "softmax":
        e = onehot - torch.softmax(coding.beta * score, dim=1)
    else:
        e = coding.amplitude * onehot - score
    return coding.error_scale * e


def _loss(score: torch.Tensor, y: torch.Tensor, coding: TargetCoding) -> torch.Tensor:
    if coding.kind == "softmax":
        return torch.nn.functional.cross_entropy(coding.beta * score, y)
    onehot = torch.nn.functional.one_hot(y, score.shape[1]).to(score.dtype)
    return 0.5 * ((coding.amplitude * onehot - score) ** 2).sum(1).mean()


def _check_range(c_range: tuple[float, float], label: str) -> None:
    lo, hi = c_range
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"{label}.c_range must be (lo, hi) with lo < hi, got {c_range!r}")


@dataclass(frozen=True)
class Method2:
    """Training method 2: additive connection-coefficient updates (models.md §A.6).

    The paper gives none of the numbers below; all defaults are [ours].

    Args:
        kt: Soft-clip constant of ``G2 = atan(kt · G1) / kt`` (``|G2| < π / (2 kt)``).
        eta: Step multiplier, ``c ← c + η · G2`` (20 trained MODEL1 on MNIST subsets; with
            ``normalise`` the per-link ``G2`` is of order 1e-4 to 1e-1).
        c_range: Coefficients are clipped to this range after each update.
        target: Target coding and error injection.
        normalise: Divide ``G1`` by ``T²``, so that ``G1`` estimates ``e · ∂s/∂c`` whatever
            the window (the paper's raw ``G1`` grows as ``T²``).
        reduce: Mini-batch rule: ``"mean_g2"`` averages the clipped ``G2`` of the samples
            (close to per-sample updates), ``"mean_g1"`` clips the batch-mean ``G1``.
    """

    kt: float = 1.0
    eta: float = 20.0
    c_range: tuple[float, float] = (-3.0, 3.0)
    target: TargetCoding = field(default_factory=TargetCoding)
    normalise: bool = True
    reduce: Literal["mean_g2", "mean_g1"] = "mean_g2"

    def __post_init__(self) -> None:
        for name in ("kt", "eta"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"Method2.{name} must be a finite number > 0, got {v!r}")
        _check_range(self.c_range, "Method2")
        if self.reduce not in ("mean_g2", "mean_g1"):
            raise ValueError(f"Method2.reduce must be 'mean_g2' or 'mean_g1', got {self.reduce!r}")


@dataclass(frozen=True)
class Backprop:
    """Gradient training by backprop through the time simulation (for comparison).

    Args:
        lr: Adam learning rate.
        c_range: Coefficients are clipped to this range after each step.
        target: Target coding; the loss is cross-entropy of ``beta · s`` (``"softmax"``) or
            the squared error (``"onehot"``), the losses whose negative gradient is method 2's
            injected error.
    """

    lr: float = 0.02
    c_range: tuple[float, float] = (-3.0, 3.0)
    target: TargetCoding = field(default_factory=TargetCoding)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"Backprop.lr must be a finite number > 0, got {self.lr!r}")
        _check_range(self.c_range, "Backprop")


@dataclass(frozen=True)
class StepReport:
    """One training step.

    Attributes:
        loss: Mean loss of the batch before the update.
        accuracy: Fraction of the batch classified right before the update.
        n_diverged: Samples whose forward or reversed run diverged (excluded from the update).
        n_clipped: Samples whose forward or reversed run hit the state clip.
        update_norm: ``‖Δc‖₂`` of the step.
    """

    loss: float
    accuracy: float
    n_diverged: int
    n_clipped: int
    update_norm: float


def method2_step(
    net: WuxingNetwork, x: torch.Tensor, y: torch.Tensor, method: Method2
) -> tuple[StepReport, torch.Tensor]:
    """One mini-batch step of method 2; updates ``net.c`` in place.

    Args:
        net: The network.
        x: Pixels, shape (batch, n_in).
        y: Labels, shape (batch,), int64.
        method: Settings.

    Returns:
        The step report and the per-link ``G2`` of the batch, shape (n_links,).
    """
    with torch.no_grad():
        fwd = net.simulate(x)
        e = output_error(fwd.score, y, method.target)
        bwd = net.simulate_reversed(e)
        ok = ~(fwd.diverged | bwd.diverged)
        g1 = fwd.integral[:, net.link_src] * bwd.integral[:, net.link_dst]  # (batch, n_links)
        if method.normalise:
            g1 = g1 / net.config.T**2
        g1 = g1 / method.target.error_scale
        g1 = torch.where(ok[:, None], g1, torch.zeros_like(g1))
        n_ok = max(int(ok.sum()), 1)
        kt = method.kt
        if method.reduce == "mean_g2":
            g2 = (torch.atan(kt * g1) / kt).sum(0) / n_ok
        else:
            g2 = torch.atan(kt * g1.sum(0) / n_ok) / kt
        old = net.c.detach().clone()
        net.c.add_(method.eta * g2.to(net.c.dtype)).clamp_(*method.c_range)
        loss = _loss(fwd.score[ok], y[ok], method.target) if ok.any() else torch.tensor(math.nan)
        acc = (fwd.score.argmax(1) == y).double().mean()
        report = StepReport(
            loss=float(loss),
            accuracy=float(acc),
            n_diverged=int((~ok).sum()),
            n_clipped=int((fwd.clipped | bwd.clipped).sum()),
            update_norm=float((net.c - old).norm()),
        )
    return report, g2


def bptt_step(
    net: WuxingNetwork,
    x: torch.Tensor,
    y: torch.Tensor,
    method: Backprop,
    optimizer: torch.optim.Optimizer,
) -> StepReport:
    """One step of backprop through time on the same network; updates ``net.c``.

    Args:
        net: The network.
        x: Pixels, shape (batch, n_in).
        y: Labels, shape (batch,).
        method: Settings.
        optimizer: Optimiser over ``net.c`` (e.g. ``torch.optim.Adam([net.c], lr)``).
    """
    old = net.c.detach().clone()
    with torch.enable_grad():
        res = net.simulate(x)
        ok = ~res.diverged
        loss = _loss(res.score[ok], y[ok], method.target)
        optimizer.zero_grad()
        if ok.any():
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        net.c.clamp_(*method.c_range)
        acc = (res.score.argmax(1) == y).double().mean()
        return StepReport(
            loss=float(loss.detach()),
            accuracy=float(acc),
            n_diverged=int((~ok).sum()),
            n_clipped=int(res.clipped.sum()),
            update_norm=float((net.c - old).norm()),
        )


def evaluate(
    net: WuxingNetwork, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 256
) -> float:
    """Accuracy of the forward time simulation on ``(x, y)``; diverged samples count wrong.

    Args:
        net: The network.
        x: Pixels, shape (n, n_in).
        y: Labels, shape (n,).
        batch_size: Samples per simulation.

    Returns:
        Fraction classified right (float).
    """
    right = 0
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            res = net.simulate(x[i : i + batch_size])
            pred = res.score.argmax(1)
            right += int(((pred == y[i : i + batch_size]) & ~res.diverged).sum())
    return right / max(x.shape[0], 1)


@dataclass(frozen=True)
class TrainResult:
    """History of :func:`train`.

    Attributes:
        steps: One :class:`StepReport` per step.
        seconds: Wall time of the training steps.
        samples_per_second: Training samples processed per second.
    """

    steps: tuple[StepReport, ...]
    seconds: float
    samples_per_second: float


def train(
    net: WuxingNetwork,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    method: Method2 | Backprop,
    epochs: int = 1,
    batch_size: int = 32,
    seed: int = 0,
    callback: Callable[[int, StepReport], None] | None = None,
) -> TrainResult:
    """Train ``net.c`` in place with method 2 or backprop through time.

    Args:
        net: The network.
        x: Pixels, shape (n, n_in).
        y: Labels, shape (n,).
        method: :class:`Method2` or :class:`Backprop`.
        epochs: Passes over the data.
        batch_size: Samples per step.
        seed: Seed of the shuffling.
        callback: Called as ``callback(step_index, report)`` after each step.

    Returns:
        The per-step reports and the throughput.
    """
    if not isinstance(method, (Method2, Backprop)):
        raise TypeError(f"method must be Method2(...) or Backprop(...), got {method!r}")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam([net.c], lr=method.lr) if isinstance(method, Backprop) else None
    reports = []
    t0 = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], batch_size):
            idx = order[i : i + batch_size]
            if opt is None:
                rep, _ = method2_step(net, x[idx], y[idx], method)
            else:
                rep = bptt_step(net, x[idx], y[idx], method, opt)
            reports.append(rep)
            if callback is not None:
                callback(len(reports) - 1, rep)
    seconds = time.perf_counter() - t0
    return TrainResult(tuple(reports), seconds, epochs * x.shape[0] / max(seconds, 1e-12))
