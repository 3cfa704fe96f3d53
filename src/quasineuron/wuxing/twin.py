"""A digital twin of the Wuxing neuron's steady-state map, for fast network training.

Every neuron of a network with uniform parameters has the same steady-state map
``u ∈ R⁵ ↦ D* ∈ R⁵`` (drive on each element → signal of each element at the steady state of
the guarded dynamics, docs/models.md §A.2–A.3). :func:`fit_neuron_twin` samples that map with the
network's own steady-state solver and fits a small MLP to it (the library's MLP twin,
:func:`quasineuron.surrogate.mlp.train_mlp`). A network whose neurons are the twin costs a few
small matrix products per layer, tens of times less than Newton solves, so it can be trained
for many epochs; the result is then scored on the time simulation (the device) and the gap
reported, as for any twin-trained network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from quasineuron.devices.base import Box
from quasineuron.devices.wuxing import wuxing_jacobian_rows
from quasineuron.surrogate.mlp import MLPSurrogate, train_mlp
from quasineuron.surrogate.report import pooled_nrmse
from quasineuron.wuxing.network import WuxingNetwork

__all__ = ["NeuronTwin", "NeuronTwinReport", "fit_neuron_twin"]


@dataclass(frozen=True)
class NeuronTwinReport:
    """Fidelity of a neuron twin on held-out drives.

    Attributes:
        rmse: Root-mean-square error of ``D*`` over held-out drives and elements.
        nrmse: RMS over the five elements of each element's RMSE divided by its range of
            ``D*`` over the held-out drives (the pooled NRMSE of twin fidelity reports).
        max_error: Largest absolute error.
        signal_rms: RMS of ``D*`` itself (the scale of the error).
        n_train: Drives the twin was fitted on.
    """

    rmse: float
    nrmse: float
    max_error: float
    signal_rms: float
    n_train: int


class NeuronTwin(torch.nn.Module):
    """``D*(u) = G u + ‖u‖² m(u)``: the exact small-signal gain plus a fitted correction.

    ``G = −J⁻¹`` is the neuron's gain matrix at rest (docs/models.md §A.3), so the twin is exact to
    first order in the drive, where a network's small signals live; the MLP ``m`` carries the
    nonlinearity (saturation, the clip at E = 0) scaled by ``‖u‖²``.

    Args:
        gain: ``G``, shape (5, 5).
        correction: The fitted MLP ``m``, (R, 5) → (R, 5).
    """

    # buffers are declared here so the type checker knows them (nn.Module's __getattr__ is untyped)
    gain: torch.Tensor

    def __init__(self, gain: torch.Tensor, correction: MLPSurrogate) -> None:
        super().__init__()
        self.register_buffer("gain", gain.float())
        self.correction = correction

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """Signals ``D*`` (R, 5) for drives ``u`` (R, 5).

        Drives are clamped to the fitted range first, so the twin saturates outside it
        (a network of unbounded twins can blow up; the device itself grows sub-linearly
        for large positive drives and is held at ``E = 0`` for large negative ones).
        """
        low, high = self.correction.domain.tensors(dtype=u.dtype, device=u.device)
        u = torch.minimum(torch.maximum(u, low), high)
        g = self.gain.to(u.dtype)
        return u @ g.T + u.square().sum(1, keepdim=True) * self.correction(u).to(u.dtype)

    def reversed(self, v: torch.Tensor) -> torch.Tensor:
        """The reversed neuron (A2) for small drives: ``D̂* = Gᵀ v``, (R, 5) → (R, 5).

        The reversed neuron's Jacobian at rest is the transpose of the forward one
        (docs/models.md §A.5), so its small-signal gain is ``Gᵀ``; with a small injected error
        (``TargetCoding.error_scale``) the reversed network stays in this regime.
        """
        return v @ self.gain.to(v.dtype)


def _drives(n: int, low: float, high: float, density: float, g: torch.Generator) -> torch.Tensor:
    """Random drives, each element active with probability ``density``.

    Magnitudes are log-uniform from 1e-3 to the range's bound: small signals matter as much as
    large ones.
    """
    sign = torch.rand(n, 5, generator=g) < high / (high - low)
    bound = torch.where(sign, torch.tensor(high), torch.tensor(-low)).double()
    mag = torch.exp(
        math.log(1e-3) + (torch.log(bound) - math.log(1e-3)) * torch.rand(n, 5, generator=g)
    )
    u = torch.where(sign, mag, -mag)
    active = torch.rand(n, 5, generator=g) < density
    return torch.where(active, u, torch.zeros_like(u))


def fit_neuron_twin(
    net: WuxingNetwork,
    *,
    n_samples: int = 60_000,
    drive_range: tuple[float, float] = (-1.5, 3.0),
    density: float = 0.6,
    hidden: tuple[int, ...] = (64, 64),
    max_steps: int = 3000,
    seed: int = 0,
) -> tuple[NeuronTwin, NeuronTwinReport]:
    """Fit an MLP to the steady-state map of the network's neurons.

    Drives are sampled with each element active with probability ``density`` (a neuron's
    receiving interfaces are a subset of its five elements) and uniform in ``drive_range``,
    which should cover the drives the trained network produces; outside it the twin clamps.
    Targets come from the network's steady-state solver (Newton with the state clip, the
    fixed points the time simulation settles to).

    Args:
        net: Network with uniform parameters (every neuron the same K).
        n_samples: Drives sampled (80 % train, 20 % validation).
        drive_range: Range of each drive.
        density: Probability that an element is driven.
        hidden: Hidden widths of the MLP.
        max_steps: Adam steps (full batch), then an L-BFGS polish.
        seed: Seed of the sampling and the initial weights.

    Returns:
        The twin (``u (batch, 5) → D* (batch, 5)``, float32) and its held-out fidelity.

    Raises:
        ValueError: If the neurons' parameters are not uniform, or for bad settings.
    """
    K = net.K
    if not bool((K == K[:, :, :1]).all()):
        raise ValueError(
            "fit_neuron_twin needs every neuron to have the same K (one steady-state map); "
            "train K with method 1 on the exact steady state instead"
        )
    lo, hi = drive_range
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi) or not 0 < density <= 1:
        raise ValueError(
            f"need drive_range lo < hi and 0 < density <= 1, got {drive_range}, {density}"
        )
    g = torch.Generator().manual_seed(seed)
    u = _drives(n_samples, lo, hi, density, g)
    with torch.no_grad():
        rest = net.rest_state().reshape(-1, 5)[:1].double()
        E, ok = net._steady_neurons(slice(0, 1), u[:, None, :], rest, reverse=False)
    D, ok = E[:, 0] - rest, ok[:, 0]
    ok = ok & (u.square().sum(1) > 0)
    u, D = u[ok], D[ok]
    k = K[:, :, :1]
    gain = -torch.linalg.inv(wuxing_jacobian_rows(rest, k[0], k[1], k[2])[0])
    target = ((D - u @ gain.T) / u.square().sum(1, keepdim=True)).float()
    u = u.float()
    n_train = int(0.8 * u.shape[0])
    domain = Box(low=(lo,) * 5, high=(hi,) * 5)
    mlp = train_mlp(
        u[:n_train],
        target[:n_train],
        u[n_train:],
        target[n_train:],
        domain=domain,
        hidden=hidden,
        max_steps=max_steps,
        lr=3e-3,
        patience=40,
        eval_every=50,
        lbfgs_steps=200,
        generator=g,
        policy="clamp",
        source={"name": "wuxing-steady-map-correction", "K": K[:, :, 0].tolist()},
    )
    twin = NeuronTwin(gain, mlp)
    D = D.float()
    held = D[n_train:]
    with torch.no_grad():
        err = twin(u[n_train:]) - held
    report = NeuronTwinReport(
        rmse=float(err.square().mean().sqrt()),
        # range-normalised as every twin's fidelity (an error relative to each entry,
        # err / |D*|, is dominated by the entries near zero, which a neuron at rest has many of)
        nrmse=pooled_nrmse(err.cpu().numpy(), (held.amax(0) - held.amin(0)).cpu().numpy()),
        max_error=float(err.abs().max()),
        signal_rms=float(held.square().mean().sqrt()),
        n_train=n_train,
    )
    return twin, report
