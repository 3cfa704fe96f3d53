"""Derivative-free training: optimise connection weights by evaluating the network only.

Nothing here differentiates: a candidate weight vector is scored by running the network in a
chosen mode (by default on the true device), so a black box with no gradient and no twin can be
trained. The optimisers come from libraries, behind one typed interface:

| spec | library | candidates per round |
|---|---|---|
| :class:`CMAES` | ``cma`` (Hansen's CMA-ES) | ``popsize``, evaluated as one batch |
| :class:`DifferentialEvolution` | ``scipy.optimize.differential_evolution`` | population |
| :class:`NelderMead` | ``scipy.optimize.minimize(method="Nelder-Mead")`` | one |
| :class:`ParticleSwarm` | ``nevergrad`` (optional extra ``[swarm]``) | ``popsize``, one batch |
| :class:`AntColony` | hand-written ACO_R (numpy), see its docstring | ``n_ants``, one batch |

A population is evaluated as **one batch through the network**: the candidate weight vectors
are stacked, each layer's connection runs for all candidates at once (``torch.func.vmap`` over
``torch.func.functional_call``) and the device sees a single call with
``(n_candidates * batch * n_neurons, n_drives)`` drives per layer. A black box with
``workers > 0`` then spreads that call over its worker processes.
"""

from __future__ import annotations

import abc
import contextlib
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, cast

import numpy as np
import torch
from tqdm.auto import tqdm

from quasineuron.data.dataset import ArrayDataset
from quasineuron.network.modes import AbstractMode, TrueDevice
from quasineuron.training.callbacks import Callback, LoopState
from quasineuron.training.config import AbstractLoss, as_loss
from quasineuron.training.loop import fit
from quasineuron.training.strategy import AbstractStrategy, StepOutput

__all__ = [
    "CMAES",
    "AbstractDerivativeFree",
    "AntColony",
    "DifferentialEvolution",
    "NelderMead",
    "OptimizeResult",
    "OptimizeStep",
    "ParticleSwarm",
    "Population",
    "optimize_weights",
    "population_forward",
]


# --------------------------------------------------------------------------------------------
# Optimiser specs


def _check_budget(budget: Any, cls: str) -> None:
    if budget is not None and (
        isinstance(budget, bool) or not isinstance(budget, int) or budget < 1
    ):
        raise ValueError(f"{cls}.budget must be None or an int >= 1 (evaluations), got {budget!r}")


def _check_positive(value: Any, name: str) -> None:
    if not (isinstance(value, int | float) and not isinstance(value, bool)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


class AbstractDerivativeFree(abc.ABC):
    """A derivative-free optimiser of a flat weight vector.

    Attributes:
        budget: Default number of candidate evaluations (one candidate = one weight vector
            scored on one batch); :func:`optimize_weights` may override it.
    """

    budget: int | None

    @abc.abstractmethod
    def run(
        self,
        objective: Callable[[np.ndarray], np.ndarray],
        x0: np.ndarray,
        *,
        budget: int,
        seed: int,
    ) -> None:
        """Minimise ``objective`` from ``x0`` until the budget is spent or it raises a stop.

        Args:
            objective: Maps candidates (n_candidates, n_params) to losses (n_candidates,).
            x0: Starting weights, shape (n_params,).
            budget: Largest number of candidate evaluations.
            seed: Seed of the optimiser's randomness.
        """


@dataclass(frozen=True)
class CMAES(AbstractDerivativeFree):
    """Covariance matrix adaptation evolution strategy, via the ``cma`` package.

    Hansen & Ostermeier, "Completely derandomized self-adaptation in evolution strategies",
    Evolutionary Computation 9(2), 159-195 (2001). Above ``diagonal_above`` weights the
    covariance is kept diagonal (sep-CMA-ES; Ros & Hansen, PPSN 2008), which costs O(n) per
    sample instead of O(n**2).

    Args:
        sigma0: Initial step size, in weight units.
        popsize: Candidates per generation; None takes ``cma``'s ``4 + 3 ln(n_params)``.
        budget: Default number of candidate evaluations.
        diagonal_above: Use a diagonal covariance above this many weights.
    """

    sigma0: float = 0.1
    popsize: int | None = None
    budget: int | None = 2000
    diagonal_above: int = 200

    def __post_init__(self) -> None:
        _check_positive(self.sigma0, "CMAES.sigma0")
        if self.popsize is not None and (not isinstance(self.popsize, int) or self.popsize < 2):
            raise ValueError(f"CMAES.popsize must be None or an int >= 2, got {self.popsize!r}")
        _check_budget(self.budget, "CMAES")
        if not isinstance(self.diagonal_above, int) or self.diagonal_above < 0:
            raise ValueError(
                f"CMAES.diagonal_above must be an int >= 0, got {self.diagonal_above!r}"
            )

    def run(
        self,
        objective: Callable[[np.ndarray], np.ndarray],
        x0: np.ndarray,
        *,
        budget: int,
        seed: int,
    ) -> None:
        """See :meth:`AbstractDerivativeFree.run`."""
        import cma

        rng = np.random.Generator(np.random.PCG64(seed))
        opts: dict[str, Any] = {
            "seed": seed + 1,  # cma treats 0 as "seed from the clock"
            "randn": lambda *shape: rng.standard_normal(shape),
            "maxfevals": budget,
            "verbose": -9,
            "CMA_diagonal": len(x0) > self.diagonal_above,
        }
        if self.popsize is not None:
            opts["popsize"] = self.popsize
        with _numpy_global_state(seed):  # cma seeds numpy's global RNG; keep the caller's
            es = cma.CMAEvolutionStrategy(x0, self.sigma0, opts)
            while not es.stop():
                candidates = es.ask()
                es.tell(candidates, objective(np.asarray(candidates)).tolist())


@dataclass(frozen=True)
class NelderMead(AbstractDerivativeFree):
    """The Nelder–Mead simplex method, via ``scipy.optimize.minimize``.

    Nelder & Mead, "A simplex method for function minimization", Comput. J. 7, 308-313 (1965);
    with ``adaptive`` the dimension-dependent coefficients of Gao & Han, Comput. Optim. Appl.
    51, 259-277 (2012). One candidate per evaluation: use it for small weight vectors.

    Args:
        budget: Default number of candidate evaluations.
        step: Edge length of the initial simplex around the starting weights.
        adaptive: Use the dimension-adapted coefficients.
        xatol: Absolute tolerance on the simplex size for convergence.
        fatol: Absolute tolerance on the loss spread for convergence.
    """

    budget: int | None = 2000
    step: float = 0.1
    adaptive: bool = True
    xatol: float = 1e-6
    fatol: float = 1e-8

    def __post_init__(self) -> None:
        _check_budget(self.budget, "NelderMead")
        _check_positive(self.step, "NelderMead.step")
        _check_positive(self.xatol, "NelderMead.xatol")
        _check_positive(self.fatol, "NelderMead.fatol")

    def run(
        self,
        objective: Callable[[np.ndarray], np.ndarray],
        x0: np.ndarray,
        *,
        budget: int,
        seed: int,
    ) -> None:
        """See :meth:`AbstractDerivativeFree.run`; Nelder–Mead is deterministic."""
        from scipy.optimize import minimize

        simplex = np.vstack([x0, x0 + self.step * np.eye(len(x0))])
        minimize(
            lambda w: float(objective(w[None, :])[0]),
            x0,
            method="Nelder-Mead",
            options={
                "maxfev": budget,
                "maxiter": budget,
                "initial_simplex": simplex,
                "adaptive": self.adaptive,
                "xatol": self.xatol,
                "fatol": self.fatol,
            },
        )


@dataclass(frozen=True)
class DifferentialEvolution(AbstractDerivativeFree):
    """Differential evolution, via ``scipy.optimize.differential_evolution``.

    Storn & Price, "Differential evolution – a simple and efficient heuristic for global
    optimization over continuous spaces", J. Global Optim. 11, 341-359 (1997). The search box
    is ``x0 ± radius``; the initial population is ``x0`` plus Gaussian noise of standard
    deviation ``init_std`` (clipped to the box), and every generation is evaluated as one batch.

    Args:
        popsize: Candidates per generation (at least 5).
        radius: Half-width of the search box around the starting weights.
        init_std: Spread of the initial population around the starting weights.
        mutation: Differential weight, a number or a dithering range ``(low, high)``.
        recombination: Crossover probability in [0, 1].
        strategy: scipy's mutation strategy name.
        budget: Default number of candidate evaluations.
    """

    popsize: int = 32
    radius: float = 2.0
    init_std: float = 0.1
    mutation: float | tuple[float, float] = (0.5, 1.0)
    recombination: float = 0.7
    strategy: str = "best1bin"
    budget: int | None = 2000

    def __post_init__(self) -> None:
        if isinstance(self.popsize, bool) or not isinstance(self.popsize, int) or self.popsize < 5:
            raise ValueError(
                f"DifferentialEvolution.popsize must be an int >= 5, got {self.popsize!r}"
            )
        _check_positive(self.radius, "DifferentialEvolution.radius")
        _check_positive(self.init_std, "DifferentialEvolution.init_std")
        if not 0.0 <= self.recombination <= 1.0:
            raise ValueError(
                f"DifferentialEvolution.recombination must be in [0, 1], got {self.recombination!r}"
            )
        _check_budget(self.budget, "DifferentialEvolution")

    def run(
        self,
        objective: Callable[[np.ndarray], np.ndarray],
        x0: np.ndarray,
        *,
        budget: int,
        seed: int,
    ) -> None:
        """See :meth:`AbstractDerivativeFree.run`."""
        from scipy.optimize import differential_evolution

        rng = np.random.Generator(np.random.PCG64(seed))
        low, high = x0 - self.radius, x0 + self.radius
        init = x0 + self.init_std * rng.standard_normal((self.popsize, len(x0)))
        init[0] = x0
        init = np.clip(init, low, high)
        maxiter = max(1, budget // self.popsize - 1)
        differential_evolution(
            lambda w: objective(np.ascontiguousarray(w.T)),  # vectorized: w is (n_params, S)
            bounds=list(zip(low, high, strict=True)),
            strategy=self.strategy,
            maxiter=maxiter,
            popsize=self.popsize,  # ignored when init is an array, kept for clarity
            init=init,
            mutation=self.mutation,
            recombination=self.recombination,
            tol=0.0,
            polish=False,
            vectorized=True,
            updating="deferred",
            rng=rng,
        )


def _check_int(value: Any, name: str, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


#: Stand-in for an infinite or absurd loss (a failed device point, a candidate past the
#: budget): nevergrad warns on losses that are not below 5e20, so they are capped here.
_HUGE_LOSS = 1e20


@dataclass(frozen=True)
class ParticleSwarm(AbstractDerivativeFree):
    """Particle swarm optimisation, via ``nevergrad`` (``pip install quasineuron[swarm]``).

    Kennedy & Eberhart, "Particle swarm optimization", Proc. ICNN'95, 1942-1948 (1995). Every
    particle keeps a position ``x`` and a velocity ``v`` and moves by

        ``v <- omega v + phip r_p (p - x) + phig r_g (g - x)``,  ``x <- x + v``

    with ``p`` its own best position, ``g`` the swarm's best and ``r_p, r_g ~ U(0, 1)`` drawn
    per coordinate. The defaults ``omega = 1 / (2 ln 2)``, ``phip = phig = 1/2 + ln 2`` are
    the constriction values of the 2011 standard PSO (Clerc; Zambrano-Bigiarini, Clerc & Rojas,
    IEEE CEC 2013), which are also nevergrad's. Particles start at ``x0 + init_std N(0, 1)``
    with velocities ``init_std N(0, 1)``, unbounded.

    nevergrad's ``ConfPSO`` is used through its ask/tell interface: a whole swarm is asked,
    evaluated as one batch and told, and its randomness comes from a ``RandomState`` seeded
    from ``seed`` on the parametrization (numpy's global RNG is not touched).

    Args:
        popsize: Particles; one generation = ``popsize`` candidate evaluations.
        init_std: Spread of the initial positions and velocities around the starting
            weights, in weight units.
        omega: Inertia weight.
        phip: Pull towards the particle's own best position.
        phig: Pull towards the swarm's best position.
        budget: Default number of candidate evaluations.
    """

    popsize: int = 32
    init_std: float = 0.1
    omega: float = 0.5 / math.log(2.0)
    phip: float = 0.5 + math.log(2.0)
    phig: float = 0.5 + math.log(2.0)
    budget: int | None = 2000

    def __post_init__(self) -> None:
        _check_int(self.popsize, "ParticleSwarm.popsize", 2)
        _check_positive(self.init_std, "ParticleSwarm.init_std")
        _check_positive(self.omega, "ParticleSwarm.omega")
        _check_positive(self.phip, "ParticleSwarm.phip")
        _check_positive(self.phig, "ParticleSwarm.phig")
        _check_budget(self.budget, "ParticleSwarm")

    def run(
        self,
        objective: Callable[[np.ndarray], np.ndarray],
        x0: np.ndarray,
        *,
        budget: int,
        seed: int,
    ) -> None:
        """See :meth:`AbstractDerivativeFree.run`."""
        try:
            import nevergrad as ng
            from nevergrad.optimization.optimizerlib import ConfPSO
        except ImportError as exc:  # an optional extra
            raise ImportError(
                "ParticleSwarm needs nevergrad; install it with `pip install quasineuron[swarm]` "
                "(or `pip install nevergrad`)"
            ) from exc

        param = ng.p.Array(init=np.asarray(x0, dtype=np.float64)).set_mutation(
            sigma=float(self.init_std)
        )
        # Seeds nevergrad's own generator; left unset it would draw a seed from numpy's
        # global RNG.
        param.random_state = np.random.RandomState(seed % 2**32)
        config = ConfPSO(
            transform="identity",  # no box: weights are unbounded
            popsize=self.popsize,
            omega=float(self.omega),
            phip=float(self.phip),
            phig=float(self.phig),
        )
        # num_workers = popsize lets a whole swarm be asked before any of it is told; the
        # budget is enforced by the objective, so nevergrad gets none.
        opt = config(parametrization=param, budget=None, num_workers=self.popsize)
        while True:
            particles = [opt.ask() for _ in range(self.popsize)]
            losses = objective(np.stack([p.value for p in particles]))
            for particle, loss in zip(particles, losses, strict=True):
                opt.tell(particle, min(float(loss), _HUGE_LOSS))  # nan/inf arrive as inf


@dataclass(frozen=True)
class AntColony(AbstractDerivativeFree):
    """Ant colony optimisation for continuous weights (ACO_R), a small numpy implementation.

    Socha & Dorigo, "Ant colony optimization for continuous domains", European Journal of
    Operational Research 185(3), 1155-1173 (2008). The pheromone is an archive of the
    ``archive_size`` (k) best weight vectors found, sorted by loss. Solution ``l`` (rank 1 is
    the best) guides an ant with probability proportional to

        ``omega_l = exp(-(l - 1)**2 / (2 q**2 k**2)) / (q k sqrt(2 pi))``,

    and the ant samples every weight ``i`` from ``N(s_l[i], sigma_l[i])`` with
    ``sigma_l[i] = xi * sum_e |s_e[i] - s_l[i]| / (k - 1)``. The ``n_ants`` new solutions
    join the archive and the worst ``n_ants`` are dropped. Small ``q`` follows the best
    solutions closely; larger ``xi`` searches more widely and converges more slowly. The
    archive starts as ``x0`` and ``k - 1`` points ``x0 + init_std N(0, 1)``.

    Written here because no library fits: ``nevergrad`` has no ant colony, and ``mealpy``'s
    ``OriginalACOR`` calls the objective once per candidate (no batch through the network)
    and its release 3.0.3 requires ``numpy<=1.26.0``, which conflicts with numpy 2. One
    guide is drawn per ant and used for all its weights; the paper's rotation of the archive
    to its principal axes (for correlated variables) is left out, as it costs
    O(n_params**3) per round.

    Args:
        n_ants: New solutions per round, evaluated as one batch (the paper's ``m``).
        archive_size: Solutions kept (``k``), at least 2.
        q: Locality of the search, > 0.
        xi: Width of the sampling Gaussians relative to the archive's spread, > 0 (plays
            the part of pheromone evaporation).
        init_std: Spread of the initial archive around the starting weights.
        budget: Default number of candidate evaluations (the initial archive included).
    """

    n_ants: int = 32
    archive_size: int = 50
    q: float = 0.1
    xi: float = 0.85
    init_std: float = 0.1
    budget: int | None = 2000

    def __post_init__(self) -> None:
        _check_int(self.n_ants, "AntColony.n_ants", 1)
        _check_int(self.archive_size, "AntColony.archive_size", 2)
        _check_positive(self.q, "AntColony.q")
        _check_positive(self.xi, "AntColony.xi")
        _check_positive(self.init_std, "AntColony.init_std")
        _check_budget(self.budget, "AntColony")

    def run(
        self,
        objective: Callable[[np.ndarray], np.ndarray],
        x0: np.ndarray,
        *,
        budget: int,
        seed: int,
    ) -> None:
        """See :meth:`AbstractDerivativeFree.run`."""
        rng = np.random.Generator(np.random.PCG64(seed))
        k, m = self.archive_size, self.n_ants
        archive = x0 + self.init_std * rng.standard_normal((k, len(x0)))
        archive[0] = x0
        losses = np.asarray(objective(archive), dtype=np.float64)
        ranks = np.arange(k, dtype=np.float64)  # l - 1
        width = self.q * k
        weights = np.exp(-(ranks**2) / (2.0 * width**2)) / (width * math.sqrt(2.0 * math.pi))
        prob = weights / weights.sum()
        while True:
            order = np.argsort(losses, kind="stable")  # stable: ties keep the older solution
            archive, losses = archive[order][:k], losses[order][:k]
            guides = rng.choice(k, size=m, p=prob)
            mean = archive[guides]  # (m, n_params)
            # Mean distance of the archive to each guide, per weight: (m, n_params). One
            # guide at a time keeps the memory at (k, n_params) rather than (m, k, n_params).
            spread = np.empty_like(mean)
            for g in np.unique(guides):
                spread[guides == g] = np.abs(archive - archive[g]).sum(axis=0) / (k - 1)
            ants = mean + self.xi * spread * rng.standard_normal(mean.shape)
            ant_losses = np.asarray(objective(ants), dtype=np.float64)
            archive = np.concatenate([archive, ants])
            losses = np.concatenate([losses, ant_losses])


@contextlib.contextmanager
def _numpy_global_state(seed: int) -> Iterator[None]:
    """Seed numpy's global RNG for a library that reads it, then restore the caller's state."""
    state = np.random.get_state()
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        np.random.set_state(state)


# --------------------------------------------------------------------------------------------
# Batched forward of a population of weight vectors


def _trainable(net: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    return [(k, p) for k, p in net.named_parameters() if p.requires_grad]


def _unflatten(
    named: Sequence[tuple[str, torch.nn.Parameter]], flat: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Split candidates (S, n_params) into {name: (S, *shape)}."""
    out, start = {}, 0
    for k, p in named:
        out[k] = flat[:, start : start + p.numel()].reshape(len(flat), *p.shape)
        start += p.numel()
    return out


def population_forward(
    net: torch.nn.Module,
    weights: torch.Tensor,
    x: torch.Tensor,
    *,
    mode: AbstractMode = TrueDevice(),  # noqa: B008 - frozen dataclass
) -> tuple[torch.Tensor, int]:
    """Outputs of ``net`` for many candidate weight vectors at once, without gradients.

    For a ``DeviceNetwork`` (anything with ``layers`` of ``DeviceLayer`` and an optional
    readout) every layer's connection runs for all candidates in one vectorised call and the
    device gets one call per layer. Other modules are called once per candidate with
    ``torch.func.functional_call``. The network's nominal devices are used (no variability).

    Args:
        net: The network; its trainable parameters, flattened in ``named_parameters`` order,
            define the layout of ``weights``.
        weights: Candidates, shape (S, n_params), in the network's dtype.
        x: Inputs, shape (batch, n_features).
        mode: Execution mode of the devices, e.g. ``TrueDevice()`` or ``Surrogate()``.

    Returns:
        Outputs (S, batch, n_outputs), and the number of drive rows sent to true devices.
    """
    named = _trainable(net)
    params = _unflatten(named, weights)
    s, b = weights.shape[0], x.shape[0]
    with torch.no_grad():
        layers = getattr(net, "layers", None)
        if layers is None or not all(hasattr(layer, "map") for layer in layers):
            outs = [
                torch.func.functional_call(
                    net, {k: v[i] for k, v in params.items()}, (x,), {"mode": mode}
                )
                for i in range(s)
            ]
            return torch.stack(outs), 0
        h = x.expand(s, *x.shape)
        rows = 0
        for i, layer in enumerate(layers):
            prefix = f"layers.{i}.map."
            p_i = {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}

            def call(p: dict[str, torch.Tensor], h1: torch.Tensor, _map: Any = layer.map) -> Any:
                return torch.func.functional_call(_map, p, (h1,))

            u = torch.func.vmap(call)(p_i, h) if p_i else layer.map(h.reshape(s * b, -1))
            u = u.reshape(s * b * layer.n_neurons, layer.n_drives)
            if mode.uses_true_device:
                rows += len(u)
            # DeviceLayer's dispatch on the mode (twin, true device, ...) for drives we built.
            y = layer._evaluate(u, mode).reshape(s, b, layer.n_neurons, -1)
            if len(layer.outputs) != y.shape[-1]:
                y = y[..., list(layer.outputs)]
            h = y.reshape(s, b, layer.n_features)
        if getattr(net, "readout_affine", False):
            # parameters of a network with an affine read-out (nn.Module attributes are untyped)
            net_scale = cast(torch.Tensor, net.readout_scale)
            net_offset = cast(torch.Tensor, net.readout_offset)
            scale = params.get("readout_scale", net_scale.expand(s, -1))
            offset = params.get("readout_offset", net_offset.expand(s, -1))
            h = h * scale[:, None, :] + offset[:, None, :]
        return h, rows


# --------------------------------------------------------------------------------------------
# Entry point


@dataclass(frozen=True)
class OptimizeStep:
    """One round of candidate evaluations (a generation, or one Nelder–Mead evaluation).

    Args:
        evaluations: Candidate evaluations so far.
        device_evaluations: Drive rows sent to true devices so far by the optimisation
            (validation scoring not included).
        loss: Best loss so far on the optimisation batches.
        accuracy: Training-batch accuracy of that best candidate, or None for regression.
        val_accuracy: Accuracy of the best candidate on ``val_data`` when it was scored this
            round, else None.
        seconds: Wall time since the start.
    """

    evaluations: int
    device_evaluations: int
    loss: float
    accuracy: float | None
    val_accuracy: float | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass(frozen=True)
class OptimizeResult:
    """What :func:`optimize_weights` did.

    Args:
        network: The network, holding the best weights found (trained in place).
        weights: The best weights, flat, shape (n_params,).
        loss: The best loss.
        history: One entry per round.
        n_evaluations: Candidate evaluations used.
        device_evaluations: Drive rows sent to true devices by the optimisation.
        val_device_evaluations: Drive rows sent to true devices to score ``val_data``.
        stopped_early: True if ``target_loss``, ``patience`` or a callback stopped the run.
        optimizer: ``repr`` of the optimiser spec.
    """

    network: torch.nn.Module
    weights: torch.Tensor
    loss: float
    history: tuple[OptimizeStep, ...]
    n_evaluations: int
    device_evaluations: int
    val_device_evaluations: int
    stopped_early: bool
    optimizer: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (without the network and weights)."""
        return {
            "loss": self.loss,
            "history": [h.to_dict() for h in self.history],
            "n_evaluations": self.n_evaluations,
            "device_evaluations": self.device_evaluations,
            "val_device_evaluations": self.val_device_evaluations,
            "stopped_early": self.stopped_early,
            "optimizer": self.optimizer,
        }


class _Stop(Exception):
    """Raised inside the objective to end a library's optimisation loop."""


def optimize_weights(
    net: torch.nn.Module,
    data: ArrayDataset,
    *,
    optimizer: AbstractDerivativeFree,
    mode: AbstractMode = TrueDevice(),  # noqa: B008 - frozen dataclass
    loss: str | AbstractLoss = "cross-entropy",
    seed: int = 0,
    budget: int | None = None,
    batch_size: int | None = None,
    target_loss: float | None = None,
    patience: int | None = None,
    min_delta: float = 0.0,
    val_data: ArrayDataset | None = None,
    val_every: int = 10,
    progress: bool = True,
    callbacks: Sequence[Callable[[OptimizeStep], bool | None]] = (),
) -> OptimizeResult:
    """Train ``net``'s weights with a derivative-free optimiser, evaluating the network only.

    Every candidate weight vector is scored by the loss of ``net`` run in ``mode`` (by default
    on the true device, which then needs no gradient and no twin). Populations are evaluated
    as one batch (see :func:`population_forward`).

    Example:
        >>> res = optimize_weights(net, train, optimizer=CMAES(sigma0=0.2), budget=3000)
        >>> res.history[-1].accuracy

    Args:
        net: The network (e.g. a ``DeviceNetwork``); its trainable parameters are optimised,
            flattened in ``named_parameters`` order, starting from their current values.
        data: Training data.
        optimizer: ``CMAES(...)``, ``NelderMead(...)``, ``DifferentialEvolution(...)``,
            ``ParticleSwarm(...)`` or ``AntColony(...)``.
        mode: Execution mode used to score candidates.
        loss: ``"cross-entropy"``, ``"mse"`` or a typed loss.
        seed: Seed of the optimiser and of the batch draws.
        budget: Candidate evaluations; None takes ``optimizer.budget``.
        batch_size: Samples per round, redrawn every round (all candidates of a round see the
            same batch); None scores the full data set, which Nelder–Mead needs to make sense.
        target_loss: Stop once the best loss is at or below this value.
        patience: Stop after this many rounds without the best loss improving by more than
            ``min_delta``.
        min_delta: Smallest improvement that resets ``patience``.
        val_data: Scored with the best weights every ``val_every`` rounds and at the end.
        val_every: Rounds between validation scorings.
        progress: Show a tqdm bar over the evaluation budget.
        callbacks: Called with every :class:`OptimizeStep`; a truthy return stops the run.

    Returns:
        The network with the best weights, the history and the evaluation counts.

    Raises:
        TypeError: For a wrong optimiser, data or network type.
        ValueError: For bad options or a network without trainable parameters.
    """
    if not isinstance(optimizer, AbstractDerivativeFree):
        raise TypeError(
            "optimizer must be CMAES(...), NelderMead(...), DifferentialEvolution(...), "
            f"ParticleSwarm(...) or AntColony(...), got {optimizer!r}"
        )
    if not isinstance(net, torch.nn.Module):
        raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}")
    if not isinstance(mode, AbstractMode):
        raise TypeError(f"mode must be TrueDevice(), Surrogate(), ... , got {mode!r}")
    for name, d in (("data", data), ("val_data", val_data)):
        if d is not None and not isinstance(d, ArrayDataset):
            raise TypeError(f"{name} must be an ArrayDataset, got {type(d).__name__}")
    budget = optimizer.budget if budget is None else budget
    if budget is None or isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"budget must be an int >= 1 (candidate evaluations), got {budget!r}")
    for name, v in (("batch_size", batch_size), ("patience", patience)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"{name} must be None or an int >= 1, got {v!r}")
    if isinstance(val_every, bool) or not isinstance(val_every, int) or val_every < 1:
        raise ValueError(f"val_every must be an int >= 1, got {val_every!r}")
    loss_fn = as_loss(loss)
    named = _trainable(net)
    if not named:
        raise ValueError("net has no trainable parameters; nothing to optimise")
    dtype = named[0][1].dtype
    strategy = Population(optimizer, mode=mode, loss=loss_fn, budget=budget, seed=int(seed))
    if batch_size is not None and batch_size < len(data):
        # each round draws its own batch: the loop hands the strategy the whole data set
        strategy._draw = (batch_size, torch.Generator().manual_seed(int(seed)))
    x0 = torch.cat([p.detach().reshape(-1) for _, p in named]).double().cpu().numpy()
    rounds = _Rounds(
        named=named,
        x0=x0,
        data_classify=data.is_classification,
        val_data=val_data,
        val_every=val_every,
        score_val=lambda w: _score_val(net, w, val_data, mode, dtype),
        target_loss=target_loss,
        patience=patience,
        min_delta=min_delta,
        budget=budget,
        callbacks=callbacks,
        bar=tqdm(
            total=budget, desc=type(optimizer).__name__, disable=not progress, dynamic_ncols=True
        ),
        progress=progress,
    )
    try:
        with rounds.bar:
            # one round (generation) per epoch of one full-data step, at most one per evaluation
            fit(
                net,
                data,
                strategy,
                epochs=budget,
                batch_size=len(data),
                shuffle=False,
                progress=False,
                callbacks=[rounds],
            )
    finally:
        best = torch.from_numpy(rounds.best_w).to(dtype)
        torch.nn.utils.vector_to_parameters(best, [p for _, p in named])
    history = rounds.history
    val_rows = rounds.val_rows
    if val_data is not None and (not history or history[-1].val_accuracy is None):
        val_acc, rows = _score_val(net, rounds.best_w, val_data, mode, dtype)
        val_rows += rows
        if history:
            history[-1] = OptimizeStep(**{**history[-1].to_dict(), "val_accuracy": val_acc})
    return OptimizeResult(
        network=net,
        weights=best,
        loss=rounds.best_loss,
        history=tuple(history),
        n_evaluations=strategy.evaluations,
        device_evaluations=rounds.rows,
        val_device_evaluations=val_rows,
        stopped_early=rounds.stopped and strategy.evaluations < budget,
        optimizer=repr(optimizer),
    )


def _score_val(
    net: torch.nn.Module,
    w: np.ndarray,
    val_data: ArrayDataset | None,
    mode: AbstractMode,
    dtype: torch.dtype,
) -> tuple[float, int]:
    """Accuracy of weights ``w`` on ``val_data``, and the drive rows it cost."""
    assert val_data is not None
    out, rows = population_forward(
        net, torch.from_numpy(w[None]).to(dtype), val_data.x.to(dtype), mode=mode
    )
    return (out[0].argmax(dim=1) == val_data.y).double().mean().item(), rows


class _Rounds(Callback):
    """:func:`optimize_weights`'s bookkeeping: best so far, history, stop rules, progress."""

    def __init__(
        self,
        *,
        named: list[tuple[str, torch.nn.Parameter]],
        x0: np.ndarray,
        data_classify: bool,
        val_data: ArrayDataset | None,
        val_every: int,
        score_val: Callable[[np.ndarray], tuple[float, int]],
        target_loss: float | None,
        patience: int | None,
        min_delta: float,
        budget: int,
        callbacks: Sequence[Callable[[OptimizeStep], bool | None]],
        bar: Any,
        progress: bool,
    ) -> None:
        self.named, self.x0, self.data_classify = named, x0, data_classify
        self.val_data, self.val_every, self.score_val = val_data, val_every, score_val
        self.target_loss, self.patience, self.min_delta = target_loss, patience, min_delta
        self.budget, self.callbacks, self.bar, self.progress = budget, callbacks, bar, progress
        self.best_loss = math.inf
        self.best_acc: float | None = None
        self.best_w = self.x0.copy()
        self.bad_rounds = 0
        self.rows = 0
        self.val_rows = 0
        self.stopped = False
        self.history: list[OptimizeStep] = []
        self.t0 = time.perf_counter()

    def on_step(self, state: LoopState, output: StepOutput) -> bool | None:
        if output.extras.get("finished"):
            return True  # the optimiser ended by its own criteria
        self.rows = int(output.extras["device_evaluations"])
        loss = float(output.loss)
        if loss < self.best_loss - self.min_delta:
            self.bad_rounds = 0
        else:
            self.bad_rounds += 1
        if loss < self.best_loss:
            self.best_loss = loss
            self.best_w = _flat(self.named).double().cpu().numpy()
            n_right = output.n_correct
            self.best_acc = (
                float(n_right) / int(output.extras["batch"])
                if self.data_classify and n_right is not None
                else None
            )
        val_acc = None
        if self.val_data is not None and state.step % self.val_every == 0:
            val_acc, rows = self.score_val(self.best_w)
            self.val_rows += rows
        step = OptimizeStep(
            evaluations=int(output.extras["evaluations"]),
            device_evaluations=self.rows,
            loss=self.best_loss,
            accuracy=self.best_acc,
            val_accuracy=val_acc,
            seconds=time.perf_counter() - self.t0,
        )
        self.history.append(step)
        self.bar.update(int(output.extras["candidates"]))
        if self.progress:
            post = {"loss": f"{step.loss:.4f}"}
            if step.accuracy is not None:
                post["acc"] = f"{step.accuracy:.3f}"
            self.bar.set_postfix(post, refresh=False)
        stop = (self.target_loss is not None and self.best_loss <= self.target_loss) or (
            self.patience is not None and self.bad_rounds >= self.patience
        )
        for callback in self.callbacks:
            stop = bool(callback(step)) or stop
        if stop:
            self.stopped = True
        return stop or step.evaluations >= self.budget


def _padded(
    objective: Callable[[np.ndarray], np.ndarray],
) -> Callable[[np.ndarray], np.ndarray]:
    """Give a library a loss for every candidate it asked for, even past the budget.

    The last round may be cut to the remaining budget; the candidates beyond it get ``inf``
    (they are never evaluated), and the next call stops the run.
    """

    def wrapped(candidates: np.ndarray) -> np.ndarray:
        losses = objective(candidates)
        if len(losses) < len(candidates):
            losses = np.concatenate([losses, np.full(len(candidates) - len(losses), np.inf)])
        return losses

    return wrapped


# --------------------------------------------------------------------------------------------
# As a strategy of the one training loop


class _Generations:
    """An optimiser's own ``run`` turned into ask/tell, one generation at a time.

    cma and nevergrad have ask/tell interfaces, scipy's optimisers do not: they call an
    objective and own their loop. To drive every optimiser the same way without changing its
    numerics, ``run`` works in a helper thread whose objective hands each generation's
    candidates to the training loop (:meth:`ask`) and waits for their losses (:meth:`tell`).
    Only one side runs at a time, so the sequence of candidates is the same as when the
    optimiser calls the objective directly.
    """

    def __init__(
        self, optimizer: AbstractDerivativeFree, x0: np.ndarray, budget: int, seed: int
    ) -> None:
        self._asks: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=1)
        self._tells: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=1)
        self.evaluations = 0
        self.finished = False
        self._waiting = False

        def objective(candidates: np.ndarray) -> np.ndarray:
            if self.evaluations >= budget:
                raise _Stop
            candidates = candidates[: budget - self.evaluations]
            self._asks.put(("ask", np.ascontiguousarray(candidates)))
            losses = self._tells.get()  # the loop counted them before handing them back
            if losses is None:
                raise _Stop
            return losses

        def work() -> None:
            try:
                optimizer.run(_padded(objective), x0, budget=budget, seed=seed)
            except _Stop:
                pass
            except BaseException as exc:  # handed to the loop's thread, raised there
                self._asks.put(("error", exc))
                return
            self._asks.put(("done", None))

        self._thread = threading.Thread(target=work, name="population-optimiser", daemon=True)
        self._thread.start()

    def ask(self) -> np.ndarray | None:
        """The next generation's candidates (n, n_params), or None once the optimiser is done."""
        if self.finished:
            return None
        kind, value = self._asks.get()
        if kind == "error":
            self.finished = True
            raise value
        if kind == "done":
            self.finished = True
            return None
        self._waiting = True
        return value

    def tell(self, losses: np.ndarray) -> None:
        """The losses of the candidates of the latest :meth:`ask`."""
        self._waiting = False
        # counted here, in the loop's thread, before the optimiser's thread runs on
        self.evaluations += len(losses)
        self._tells.put(losses)

    def close(self) -> None:
        """Stop the optimiser (if it still waits for losses) and end its thread."""
        if self._waiting:
            self._waiting = False
            self._tells.put(None)
        if not self.finished:
            while self._thread.is_alive():
                kind, _ = self._asks.get()
                if kind == "ask":
                    self._tells.put(None)
                else:
                    break
            self.finished = True
        self._thread.join()


class Population(AbstractStrategy):
    """A derivative-free population optimiser as a strategy: one generation per step.

    Each step asks the optimiser for its next generation of candidate weight vectors,
    scores them all on the step's batch in one call through the network
    (:func:`population_forward`, no gradients), tells it their losses and puts the best
    candidate of the generation into the network. Once the optimiser has spent ``budget``
    candidate evaluations (or stopped by its own criteria) further steps leave the weights
    as they are and evaluate nothing.

    The optimisers keep their state in library objects, so a run with this strategy cannot
    be checkpointed: run ``fit`` without ``checkpoint_dir``.

    Args:
        optimizer: ``CMAES(...)``, ``NelderMead(...)``, ``DifferentialEvolution(...)``,
            ``ParticleSwarm(...)`` or ``AntColony(...)``.
        mode: Execution mode used to score candidates (default: the true device).
        loss: ``"cross-entropy"``, ``"mse"`` or a typed loss.
        budget: Candidate evaluations; None takes ``optimizer.budget``.
        seed: Seed of the optimiser's randomness.

    Raises:
        TypeError: For a wrong optimiser or mode.
        ValueError: For a bad budget.
    """

    # a generation whose every candidate failed on the device scores inf: part of the search
    finite_loss_required = False

    def __init__(
        self,
        optimizer: AbstractDerivativeFree,
        *,
        mode: AbstractMode = TrueDevice(),  # noqa: B008 - frozen dataclass
        loss: str | AbstractLoss = "cross-entropy",
        budget: int | None = None,
        seed: int = 0,
    ) -> None:
        if not isinstance(optimizer, AbstractDerivativeFree):
            raise TypeError(
                "optimizer must be CMAES(...), NelderMead(...), DifferentialEvolution(...), "
                f"ParticleSwarm(...) or AntColony(...), got {optimizer!r}"
            )
        if not isinstance(mode, AbstractMode):
            raise TypeError(f"mode must be TrueDevice(), Surrogate(), ... , got {mode!r}")
        budget = optimizer.budget if budget is None else budget
        if budget is None or isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
            raise ValueError(f"budget must be an int >= 1 (candidate evaluations), got {budget!r}")
        self.optimizer = optimizer
        self.mode = mode
        self.loss = as_loss(loss)
        self.budget = budget
        self.seed = int(seed)
        self._gens: _Generations | None = None
        self._named: list[tuple[str, torch.nn.Parameter]] = []
        self.device_evaluations = 0
        self._last_loss = math.inf
        # (samples, generator): score each generation on a random subset of the step's batch
        self._draw: tuple[int, torch.Generator] | None = None

    def __repr__(self) -> str:
        return (
            f"Population(optimizer={self.optimizer!r}, mode={self.mode!r}, loss={self.loss!r}, "
            f"budget={self.budget!r}, seed={self.seed!r})"
        )

    @property
    def evaluations(self) -> int:
        """Candidate evaluations spent so far."""
        return 0 if self._gens is None else self._gens.evaluations

    def setup(self, net: torch.nn.Module, plan: Any) -> None:
        """Start the optimiser from the network's current weights."""
        self._named = _trainable(net)
        x0 = torch.cat([p.detach().reshape(-1) for _, p in self._named]).double().cpu().numpy()
        self._gens = _Generations(self.optimizer, x0, self.budget, self.seed)
        self.device_evaluations = 0

    def step(
        self, net: torch.nn.Module, xb: torch.Tensor, yb: torch.Tensor, step_index: int
    ) -> StepOutput:
        """Score one generation on the batch and install its best candidate."""
        assert self._gens is not None, "setup() was not called"
        candidates = self._gens.ask()
        dtype = self._named[0][1].dtype
        if candidates is None:  # the optimiser is done: nothing is evaluated any more
            extras = {
                "evaluations": self.evaluations,
                "device_evaluations": self.device_evaluations,
                "finished": True,
            }
            return StepOutput(loss=self._last_loss, n_correct=None, extras=extras)
        if self._draw is not None and self._draw[0] < len(xb):
            idx = torch.randperm(len(xb), generator=self._draw[1])[: self._draw[0]]
            xb, yb = xb[idx.to(xb.device)], yb[idx.to(yb.device)]
        w = torch.from_numpy(candidates).to(dtype)
        out, rows = population_forward(net, w, xb, mode=self.mode)
        self.device_evaluations += rows
        losses = torch.stack([self.loss(o, yb) for o in out]).double()
        losses = torch.nan_to_num(losses, nan=math.inf)  # a failed device point loses
        self._gens.tell(losses.numpy())
        i = int(losses.argmin())
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(w[i], [p for _, p in self._named])
        output = self._output(out[i], yb, losses[i])
        output.extras.update(candidates=len(w), batch=len(yb))
        self._last_loss = float(losses[i])
        return output

    def _output(self, out: torch.Tensor, yb: torch.Tensor, loss: torch.Tensor) -> StepOutput:
        n_correct = (out.argmax(dim=1) == yb).sum() if not yb.is_floating_point() else None
        extras = {"evaluations": self.evaluations, "device_evaluations": self.device_evaluations}
        return StepOutput(loss=float(loss), n_correct=n_correct, extras=extras)

    def score(
        self, net: torch.nn.Module, data: ArrayDataset, batch_size: int
    ) -> tuple[float | None, float | None]:
        """Loss and accuracy of the network's current weights (one candidate, no gradients)."""
        p = self._named[0][1]
        x = data.x.to(p.device, p.dtype)
        y = data.y.to(p.device)
        y = y.to(p.dtype) if y.is_floating_point() else y
        out, _ = population_forward(net, _flat(self._named)[None], x, mode=self.mode)
        acc = (out[0].argmax(dim=1) == y).double().mean().item() if data.is_classification else None
        return float(self.loss(out[0], y)), acc

    def state_dict(self) -> dict[str, Any]:
        """Refused: the optimiser's state lives in a library object."""
        raise NotImplementedError(
            "a Population run cannot be checkpointed (the optimiser's state is a library "
            "object); run it without checkpoint_dir"
        )

    def teardown(self, net: torch.nn.Module) -> None:
        """Stop the optimiser's thread."""
        if self._gens is not None:
            self._gens.close()


def _flat(named: Sequence[tuple[str, torch.nn.Parameter]]) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for _, p in named])
