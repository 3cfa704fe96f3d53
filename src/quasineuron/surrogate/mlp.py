"""Small-MLP twin: drives normalised to [-1, 1] by the domain, outputs standardised.

``y = mean + std · MLP(2 (u − low) / (high − low) − 1)``. The weights are buffers, not
parameters: inside a network the twin is frozen and only the connections train. Training
(:func:`train_mlp`) uses a private ``torch.nn.Sequential``: Adam with a cosine learning-rate
schedule and early stopping on the validation loss, then an optional L-BFGS polish that is kept
only if it lowers the validation loss. All randomness comes from one ``torch.Generator``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from quasineuron.devices.base import Box
from quasineuron.surrogate.base import AbstractSurrogate, DomainPolicy

__all__ = ["ACTIVATIONS", "MLPSurrogate", "train_mlp"]

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": torch.nn.functional.silu,
    "tanh": torch.tanh,
    "gelu": torch.nn.functional.gelu,
    "softplus": torch.nn.functional.softplus,
}


def check_activation(name: str) -> str:
    """Validate an activation name.

    Raises:
        ValueError: If ``name`` is not a key of :data:`ACTIVATIONS`.
    """
    if name not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)} (smooth ones give "
            "twins with smooth gradients)"
        )
    return name


class MLPSurrogate(AbstractSurrogate):
    """Multilayer-perceptron twin.

    Args:
        weights: Layer weights, shapes (h_1, n_in), (h_2, h_1), ..., (n_out, h_L).
        biases: Layer biases, shapes (h_1,), ..., (n_out,).
        y_mean: Output mean used to standardise, shape (n_out,).
        y_std: Output standard deviation used to standardise, shape (n_out,).
        activation: Name of the hidden activation, a key of :data:`ACTIVATIONS`.
        domain: The characterised domain; drives are mapped from it onto [-1, 1].
        policy: Out-of-domain policy, see :class:`AbstractSurrogate`.
        source: Description of the imitated device.
        name: Name used in reports.
    """

    # buffers are declared here so the type checker knows them (nn.Module's __getattr__ is untyped)
    y_mean: torch.Tensor
    y_std: torch.Tensor

    kind = "mlp"

    def __init__(
        self,
        weights: Sequence[torch.Tensor],
        biases: Sequence[torch.Tensor],
        *,
        y_mean: torch.Tensor,
        y_std: torch.Tensor,
        activation: str = "silu",
        domain: Box,
        policy: DomainPolicy = "warn",
        source: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        if len(weights) != len(biases) or not weights:
            raise ValueError(
                f"need one bias per weight and at least one layer, got {len(weights)} weights "
                f"and {len(biases)} biases"
            )
        super().__init__(
            n_in=int(weights[0].shape[1]),
            n_out=int(weights[-1].shape[0]),
            domain=domain,
            policy=policy,
            source=source,
            name=name,
        )
        self.activation = check_activation(activation)
        self._act = ACTIVATIONS[activation]
        self.n_layers = len(weights)
        for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
            self.register_buffer(f"w{i}", w.detach().clone())
            self.register_buffer(f"b{i}", b.detach().clone())
        self.register_buffer("y_mean", torch.as_tensor(y_mean).detach().clone().reshape(-1))
        self.register_buffer("y_std", torch.as_tensor(y_std).detach().clone().reshape(-1))

    @property
    def hidden(self) -> tuple[int, ...]:
        """Hidden layer widths."""
        return tuple(int(getattr(self, f"b{i}").numel()) for i in range(self.n_layers - 1))

    def _evaluate(self, u: torch.Tensor) -> torch.Tensor:
        dt, dev = u.dtype, u.device
        low = self._low.to(dtype=dt, device=dev)
        high = self._high.to(dtype=dt, device=dev)
        x = (u - low) * (2.0 / (high - low)) - 1.0
        for i in range(self.n_layers):
            w = getattr(self, f"w{i}").to(dtype=dt, device=dev)
            b = getattr(self, f"b{i}").to(dtype=dt, device=dev)
            x = torch.nn.functional.linear(x, w, b)
            if i < self.n_layers - 1:
                x = self._act(x)
        return x * self.y_std.to(dtype=dt, device=dev) + self.y_mean.to(dtype=dt, device=dev)

    def config(self) -> dict[str, Any]:
        """Layer count, widths and activation."""
        return {
            "n_layers": self.n_layers,
            "hidden": list(self.hidden),
            "activation": self.activation,
        }

    def tensors(self) -> dict[str, torch.Tensor]:
        """Weights, biases and the output standardisation."""
        out = {}
        for i in range(self.n_layers):
            out[f"w{i}"] = getattr(self, f"w{i}")
            out[f"b{i}"] = getattr(self, f"b{i}")
        out["y_mean"] = self.y_mean
        out["y_std"] = self.y_std
        return out

    @classmethod
    def from_saved(
        cls, config: dict[str, Any], tensors: dict[str, torch.Tensor], common: dict[str, Any]
    ) -> MLPSurrogate:
        """Rebuild from :meth:`config`, :meth:`tensors` and the common fields."""
        n = int(config["n_layers"])
        return cls(
            [tensors[f"w{i}"] for i in range(n)],
            [tensors[f"b{i}"] for i in range(n)],
            y_mean=tensors["y_mean"],
            y_std=tensors["y_std"],
            activation=config["activation"],
            domain=Box.from_dict(common["domain"]),
            policy=common["policy"],
            source=common["source"],
            name=common["name"],
        )


def train_mlp(
    u_train: torch.Tensor,
    y_train: torch.Tensor,
    u_val: torch.Tensor,
    y_val: torch.Tensor,
    *,
    domain: Box,
    hidden: Sequence[int] = (64, 64),
    activation: str = "silu",
    max_steps: int = 800,
    lr: float = 3e-3,
    batch_size: int | None = None,
    patience: int = 20,
    eval_every: int = 25,
    lbfgs_steps: int = 500,
    generator: torch.Generator,
    policy: DomainPolicy = "warn",
    source: dict[str, Any] | None = None,
) -> MLPSurrogate:
    """Train an :class:`MLPSurrogate` on a train/validation split.

    Loss: mean squared error of the standardised outputs. Adam runs for at most ``max_steps``
    steps with a cosine schedule from ``lr`` to ``lr/100``; every ``eval_every`` steps the
    validation loss is measured, the best weights kept, and training stops after ``patience``
    evaluations without improvement. Then L-BFGS (strong Wolfe line search, full batch) polishes
    for ``lbfgs_steps`` iterations; its result is kept only if the validation loss improves.

    Args:
        u_train: Training drives, shape (n_train, n_in); the dtype used for training.
        y_train: Training outputs, shape (n_train, n_out).
        u_val: Validation drives, shape (n_val, n_in); may be empty (then the training loss
            stands in for early stopping).
        y_val: Validation outputs, shape (n_val, n_out).
        domain: Characterised domain, for the input normalisation.
        hidden: Hidden layer widths.
        activation: Hidden activation, a key of :data:`ACTIVATIONS`.
        max_steps: Maximum number of Adam steps.
        lr: Initial Adam learning rate.
        batch_size: Mini-batch size; ``None`` uses the full training set each step.
        patience: Evaluations without validation improvement before stopping.
        eval_every: Adam steps between validation evaluations.
        lbfgs_steps: L-BFGS iterations after Adam; 0 skips the polish.
        generator: Source of all randomness (initial weights, mini-batches).
        policy: Out-of-domain policy of the returned twin.
        source: Description of the imitated device.

    Returns:
        The trained twin, with weights in the dtype of ``u_train``.
    """
    dtype = u_train.dtype
    n_in, n_out = u_train.shape[1], y_train.shape[1]
    low, high = domain.tensors(dtype=dtype)
    y_mean = y_train.mean(dim=0)
    y_std = y_train.std(dim=0, unbiased=False) if y_train.shape[0] > 1 else torch.ones_like(y_mean)
    y_std = torch.where(y_std > 1e-12 * (1 + y_mean.abs()), y_std, torch.ones_like(y_std))

    def norm_u(u: torch.Tensor) -> torch.Tensor:
        return (u - low) * (2.0 / (high - low)) - 1.0

    xt, zt = norm_u(u_train), (y_train - y_mean) / y_std
    has_val = u_val.shape[0] > 0
    xv, zv = (norm_u(u_val), (y_val - y_mean) / y_std) if has_val else (xt, zt)

    sizes = [n_in, *hidden, n_out]
    layers: list[torch.nn.Module] = []
    for i in range(len(sizes) - 1):
        lin = torch.nn.Linear(sizes[i], sizes[i + 1], dtype=dtype)
        bound = 1.0 / math.sqrt(sizes[i])  # PyTorch's default init, drawn from our generator
        with torch.no_grad():
            lin.weight.copy_((2 * torch.rand(lin.weight.shape, generator=generator) - 1) * bound)
            lin.bias.copy_((2 * torch.rand(lin.bias.shape, generator=generator) - 1) * bound)
        layers.append(lin)
        if i < len(sizes) - 2:
            layers.append(_Activation(ACTIVATIONS[activation]))
    net = torch.nn.Sequential(*layers)

    def val_loss() -> float:
        with torch.no_grad():
            return float(torch.mean((net(xv) - zv) ** 2))

    with torch.enable_grad():
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max_steps, eta_min=lr / 100)
        n_train = xt.shape[0]
        best, best_state, bad = math.inf, copy.deepcopy(net.state_dict()), 0
        for step in range(max_steps):
            if batch_size is None or batch_size >= n_train:
                xb, zb = xt, zt
            else:
                idx = torch.randint(n_train, (batch_size,), generator=generator)
                xb, zb = xt[idx], zt[idx]
            opt.zero_grad(set_to_none=True)
            loss = torch.mean((net(xb) - zb) ** 2)
            loss.backward()
            opt.step()
            sched.step()
            if (step + 1) % eval_every == 0 or step == max_steps - 1:
                v = val_loss()
                if v < best:
                    best, best_state, bad = v, copy.deepcopy(net.state_dict()), 0
                else:
                    bad += 1
                    if bad >= patience:
                        break
        net.load_state_dict(best_state)

        if lbfgs_steps > 0:
            lbfgs = torch.optim.LBFGS(
                net.parameters(),
                lr=1.0,
                max_iter=lbfgs_steps,
                history_size=50,
                line_search_fn="strong_wolfe",
                tolerance_grad=1e-12,
                tolerance_change=1e-16,
            )

            def closure() -> torch.Tensor:
                lbfgs.zero_grad(set_to_none=True)
                loss = torch.mean((net(xt) - zt) ** 2)
                loss.backward()
                return loss

            lbfgs.step(closure)
            v = val_loss()
            if math.isfinite(v) and v < best:
                best = v
            else:
                net.load_state_dict(best_state)

    lins = [m for m in net if isinstance(m, torch.nn.Linear)]
    return MLPSurrogate(
        [m.weight.detach() for m in lins],
        [m.bias.detach() for m in lins],
        y_mean=y_mean,
        y_std=y_std,
        activation=activation,
        domain=domain,
        policy=policy,
        source=source,
    )


class _Activation(torch.nn.Module):
    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)
