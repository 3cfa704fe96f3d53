"""Training a Wuxing network: methods 1 and 2 (backward signal propagation), mixed, backprop.

- :class:`Method2` (docs/models.md §A.6; Jiang, arXiv 2502.10414, eqs. 3.3–3.5): one forward run
  gives ``F = ∫_0^T D dt`` of every slot, one reversed run with the error injected at the
  read-outs gives ``R = ∫_0^T D̂ dt``; each link (a,p)→(b,q) then gets

      G1 = F_{a,p} · R_{b,q},   G2 = atan(kt · G1) / kt,   c ← clip(c + η · G2, c_min, c_max).

  For small signals ``G1 / T² ≈ e · ∂s/∂c``, so this is (soft-clipped) gradient descent on the
  linearised network without any chain rule.
- :class:`Backprop`: the same network object, gradients by autograd through the time loop
  (with checkpointing, see :class:`~quasineuron.wuxing.network.SimConfig`), for comparison.

- :class:`Method1` (experimental, docs/models.md §A.7): multiplicative updates of each neuron's own
  K parameters with a proportional and a leaky integral term; :class:`Mixed` applies method 1
  and method 2 in the same step (the paper's mixed method).
- Every rule can take its signals from the time simulation (``estimate="window"``, the
  paper's integrals over ``[0, T]``) or from the layer-by-layer steady state
  (``estimate="steady-state"``, their ``T → ∞`` limit), and
  ``Backprop(through="steady-state")`` trains through the twin built from every neuron's
  steady-state map.

"Time window vs steady state" has one spelling everywhere (method options, ``val_mode``,
``evaluate(mode=...)``, the run config's ``validate_on``): ``"window"`` or ``"steady-state"``
(registered in :mod:`quasineuron._names` as the kind ``"simulation"``). The older spellings
``"time"`` and ``"steady"`` still work and warn.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

import torch

from quasineuron._names import canonical
from quasineuron.data.dataset import ArrayDataset
from quasineuron.devices.wuxing import wuxing_jacobian_rows
from quasineuron.training.callbacks import Callback, LoopState
from quasineuron.training.checkpoint import restore_optimizer_state
from quasineuron.training.config import Cosine
from quasineuron.training.loop import EpochMetrics, TrainResult, fit
from quasineuron.training.strategy import AbstractStrategy, Plan, StepOutput
from quasineuron.wuxing.network import WuxingNetwork
from quasineuron.wuxing.twin import NeuronTwin

__all__ = [
    "Backprop",
    "Method",
    "Method1",
    "Method2",
    "Mixed",
    "Signals",
    "method1_signal",
    "method1_step",
    "signals",
    "StepReport",
    "TargetCoding",
    "evaluate",
    "method2_step",
    "output_error",
    "predict",
    "train",
    "bptt_step",
]


@dataclass(frozen=True)
class TargetCoding:
    """How labels become the output error ``e = y* − s`` ([ours], docs/models.md §A.5).

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


#: What a Wuxing network is run as: the time simulation over the window, or its steady state.
Simulation = Literal["window", "steady-state"]


def _simulation(name: str, label: str) -> Simulation:
    """The one spelling of a window / steady-state choice (an older spelling warns)."""
    try:
        value = canonical("simulation", name, stacklevel=4)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"{label}: {exc}") from None
    return "window" if value == "window" else "steady-state"


def _check_estimate(obj: Any, label: str) -> None:
    """Respell ``obj.estimate`` (a frozen dataclass) into the one spelling."""
    object.__setattr__(obj, "estimate", _simulation(obj.estimate, f"{label}.estimate"))


def _check_reversal(reversal: str, estimate: str, label: str) -> None:
    if reversal not in ("rest", "operating"):
        raise ValueError(f"{label}reversal must be 'rest' or 'operating', got {reversal!r}")
    if reversal == "operating" and estimate != "steady-state":
        raise ValueError(f"{label}reversal='operating' needs estimate='steady-state'")


def _check_K_range(K_range: tuple[float, float], margin: float, label: str) -> None:
    lo, hi = K_range
    if not (0 < lo < hi and math.isfinite(hi)):
        raise ValueError(f"{label}.K_range must be (lo, hi), 0 < lo < hi, got {K_range}")
    if margin >= hi - lo:
        raise ValueError(f"{label}.margin must be below K_range's width {hi - lo}, got {margin}")


def _check_range(c_range: tuple[float, float], label: str) -> None:
    lo, hi = c_range
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"{label}.c_range must be (lo, hi) with lo < hi, got {c_range!r}")


@dataclass(frozen=True)
class _WuxingStrategy(AbstractStrategy):
    """What the four Wuxing methods share as strategies of :func:`~quasineuron.training.fit`.

    Each method's own :meth:`_step` updates the network from one batch; this base turns the
    step into the loop's :class:`~quasineuron.training.StepOutput`, scores validation with
    :func:`evaluate`, applies the step-size schedule and keeps the memory between steps for
    checkpoints. Options that are not part of the method (a neuron twin, the schedule, how
    validation is scored) are set by :func:`train` through :meth:`bound`; used directly with
    ``fit`` a method runs without a twin or a schedule and validates on the steady state.
    """

    _run: dict[str, Any] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )
    # A batch where every sample diverged has no loss (NaN); the rules then change nothing.
    finite_loss_required: ClassVar[bool] = False

    def bound(
        self,
        *,
        neuron: NeuronTwin | None = None,
        schedule: Cosine | None = None,
        val_mode: Simulation = "steady-state",
    ) -> Any:
        """A copy of this method that runs with these options.

        Args:
            neuron: A neuron twin for steady-state estimates (see :func:`train`).
            schedule: Step-size schedule (see :func:`train`).
            val_mode: How validation is scored: ``"steady-state"`` or ``"window"``.

        Returns:
            The same method (equal settings) with the options attached.
        """
        if schedule is not None and not isinstance(schedule, Cosine):
            raise TypeError(f"schedule must be Cosine(...) or None, got {schedule!r}")
        val_mode = _simulation(val_mode, "val_mode")
        copy = replace(self)
        copy._run["options"] = {"neuron": neuron, "schedule": schedule, "val_mode": val_mode}
        return copy

    def _option(self, name: str) -> Any:
        defaults = {"neuron": None, "schedule": None, "val_mode": "steady-state"}
        return self._run.get("options", defaults)[name]

    def setup(self, net: torch.nn.Module, plan: Plan) -> None:
        """Check the network and start with empty memory."""
        if not isinstance(net, WuxingNetwork):
            raise TypeError(
                f"{type(self).__name__} trains a WuxingNetwork, got {type(net).__name__}"
            )
        options = self._run.get("options")
        self._run.clear()
        if options is not None:
            self._run["options"] = options
        self._run["plan"] = plan
        self._run["factor"] = 1.0

    def _factor(self, step_index: int) -> float:
        """The step as a fraction of the base one (kept > 0: η must stay positive).

        With a sample budget the cosine runs over all of its steps; otherwise the first epoch
        runs at the full step and the cosine spans the remaining planned epochs.
        """
        schedule = self._option("schedule")
        plan: Plan = self._run["plan"]
        if schedule is None:
            return 1.0
        if plan.sample_budget:
            return max(schedule.lr_at(1.0, step_index, plan.total_steps), 1e-6)
        k = step_index - plan.steps_per_epoch
        if k >= 0 and plan.epochs > 1:
            span = (plan.epochs - 1) * plan.steps_per_epoch
            return max(schedule.lr_at(1.0, k, span), 1e-6)
        return 1.0

    def _step(self, net: WuxingNetwork, xb: torch.Tensor, yb: torch.Tensor, f: float) -> StepReport:
        raise NotImplementedError

    def step(
        self, net: torch.nn.Module, xb: torch.Tensor, yb: torch.Tensor, step_index: int
    ) -> StepOutput:
        """One step of the method; the report is in ``extras["report"]``."""
        assert isinstance(net, WuxingNetwork)
        f = self._factor(step_index)
        self._run["factor"] = f
        rep = self._step(net, xb, yb, f)
        n_correct = int(round(rep.accuracy * len(yb)))
        return StepOutput(loss=rep.loss, n_correct=n_correct, extras={"report": rep})

    def score(
        self, net: torch.nn.Module, data: ArrayDataset, batch_size: int
    ) -> tuple[float | None, float | None]:
        """Accuracy by :func:`evaluate` (no loss), on the steady state or the time simulation."""
        assert isinstance(net, WuxingNetwork)
        p = net.c
        acc = evaluate(net, data.x.to(p.device, p.dtype), data.y, mode=self._option("val_mode"))
        return None, acc

    def weights_loaded(self, net: torch.nn.Module) -> None:
        """New ``K`` came in: recompute the neurons' rest states."""
        assert isinstance(net, WuxingNetwork)
        with torch.no_grad():
            net.update_rest_states()

    def current_lr(self) -> float | None:
        """The scheduled fraction of the base step of the latest step."""
        return float(self._run.get("factor", 1.0))

    def config(self) -> dict[str, Any]:
        """The method and the options a resumed run must share."""
        return {
            "strategy": repr(self),
            "schedule": repr(self._option("schedule")),
            "val_mode": self._option("val_mode"),
            "epochs": self._run["plan"].epochs,
        }


@dataclass(frozen=True)
class Method2(_WuxingStrategy):
    """Training method 2: additive connection-coefficient updates (docs/models.md §A.6).

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
        estimate: Where ``F`` and ``R`` come from. ``"window"``: the paper's time integrals
            over ``[0, T]`` of the forward and reversed time simulations. ``"steady-state"``:
            their
            ``T → ∞`` limit, ``F/T → D*`` and ``R/T → D̂*`` (the layer-by-layer steady states,
            :meth:`WuxingNetwork.steady_state`), much cheaper; with ``normalise`` both give
            ``G1 ≈ e · ∂s/∂c`` once T exceeds the settling time.
        update: ``"additive"``: the paper's ``c ← c + η G2``. ``"adaptive"`` [ours]: each link
            divides its ``G2`` by the running RMS of its own past ``G2`` (with momentum, the
            Adam step applied to method 2's signal; still local to the link), so ``η`` is
            the step in units of ``c`` (e.g. 0.005).
        reversal: With ``estimate="steady-state"``: ``"rest"`` (the paper's reversed network,
            linearised about rest) or ``"operating"`` [ours] (each reversed neuron linearised
            about its forward neuron's operating point; then ``G1`` is the exact gradient
            signal), see :func:`signals`.
    """

    kt: float = 1.0
    eta: float = 20.0
    c_range: tuple[float, float] = (-3.0, 3.0)
    target: TargetCoding = field(default_factory=TargetCoding)
    normalise: bool = True
    reduce: Literal["mean_g2", "mean_g1"] = "mean_g2"
    estimate: Simulation = "window"
    update: Literal["additive", "adaptive"] = "additive"
    reversal: Literal["rest", "operating"] = "rest"

    def __post_init__(self) -> None:
        _check_estimate(self, "Method2")
        _check_reversal(self.reversal, self.estimate, "Method2.")
        if self.update not in ("additive", "adaptive"):
            raise ValueError(
                f"Method2.update must be 'additive' or 'adaptive', got {self.update!r}"
            )
        for name in ("kt", "eta"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"Method2.{name} must be a finite number > 0, got {v!r}")
        _check_range(self.c_range, "Method2")
        if self.reduce not in ("mean_g2", "mean_g1"):
            raise ValueError(f"Method2.reduce must be 'mean_g2' or 'mean_g1', got {self.reduce!r}")

    def setup(self, net: torch.nn.Module, plan: Plan) -> None:
        """Start with no running moments (``update="adaptive"``)."""
        super().setup(net, plan)
        self._run["moments"] = {}

    def _step(self, net: WuxingNetwork, xb: torch.Tensor, yb: torch.Tensor, f: float) -> StepReport:
        method = self if f == 1.0 else replace(self, eta=self.eta * f)
        rep, _ = method2_step(net, xb, yb, method, self._option("neuron"), self._run["moments"])
        return rep

    def state_dict(self) -> dict[str, Any]:
        """The running moments of ``update="adaptive"``."""
        return {"moments": dict(self._run.get("moments", {}))}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the running moments."""
        self._run["moments"] = dict(state.get("moments", {}))


@dataclass(frozen=True)
class _IntegralMemory(_WuxingStrategy):
    """Method 1's step, shared by :class:`Method1` and :class:`Mixed`.

    Its integral term carries a memory from step to step, and into checkpoints.
    """

    def _step(self, net: WuxingNetwork, xb: torch.Tensor, yb: torch.Tensor, f: float) -> StepReport:
        assert isinstance(self, (Method1, Mixed))  # the only two subclasses
        rep, self._run["memory"] = method1_step(net, xb, yb, self, self._run.get("memory"))
        return rep

    def state_dict(self) -> dict[str, Any]:
        """The integral term's memory."""
        memory = self._run.get("memory")
        return {} if memory is None else {"memory": memory}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the integral term's memory."""
        memory = state.get("memory")
        self._run["memory"] = None if memory is None else memory.to(self._run["plan"].device)


@dataclass(frozen=True)
class Method1(_IntegralMemory):
    """Training method 1: multiplicative K-parameter updates with a distributed PID.

    See docs/models.md §A.7.

    **Experimental** [reconstruction]: the paper's text of method 1 is not available; this is
    the rule of docs/models.md §A.7, derived like method 2. Each neuron changes only its own
    parameters, from the forward signals ``F`` and reversed signals ``R`` passing through it:

        g1_i = F_{i−1} · R_i,   g2_i = −F_i · R_i,   g3_i = −(B_{i−2} F_i + B_i F_{i−2}) · R_i

    (``B`` the neuron's rest state; ``∂f_i/∂K`` at the operating point minus at rest; plus
    the shift of the rest state, see :func:`method1_signal`). With ``g`` scaled by ``K``
    (a relative step) and ``G = atan(kt · g)/kt`` averaged over the batch, the proportional
    term is ``η_P · G`` and the integral term ``η_I · I`` with the leaky memory
    ``I ← λ I + G``; then
    ``K ← K · (1 + η_P G + η_I I)`` (multiplicative), clipped to ``K_range`` with
    ``K1 ≥ K2 + margin`` (stability, docs/models.md §A.3), and every neuron's rest state is
    recomputed. The derivative term of the PID is method 2 (see :class:`Mixed`).

    Args:
        kt: Soft-clip constant.
        eta: Proportional gain ``η_P``.
        eta_i: Integral gain ``η_I`` (0 switches the integral term off).
        leak: Memory ``λ`` of the integral term, in [0, 1).
        K_range: Every K stays in this range.
        margin: Minimum ``K1 − K2`` of every element.
        target: Target coding and error injection.
        estimate: ``"window"`` or ``"steady-state"``, as for :class:`Method2`.
        rest_shift: Include the rest-state shift in the signal (see :func:`method1_signal`);
            ``False`` is docs/models.md §A.7's rule verbatim.
    """

    kt: float = 1.0
    eta: float = 2.0
    eta_i: float = 0.0
    leak: float = 0.9
    K_range: tuple[float, float] = (0.05, 5.0)
    margin: float = 0.05
    target: TargetCoding = field(default_factory=TargetCoding)
    estimate: Simulation = "window"
    rest_shift: bool = True

    def __post_init__(self) -> None:
        for name in ("kt", "eta", "margin"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"Method1.{name} must be a finite number > 0, got {v!r}")
        if not (math.isfinite(self.eta_i) and self.eta_i >= 0):
            raise ValueError(f"Method1.eta_i must be a finite number >= 0, got {self.eta_i!r}")
        if not 0 <= self.leak < 1:
            raise ValueError(f"Method1.leak must be in [0, 1), got {self.leak!r}")
        _check_K_range(self.K_range, self.margin, "Method1")
        _check_estimate(self, "Method1")


@dataclass(frozen=True)
class Mixed(_IntegralMemory):
    """The mixed method (paper Fig. 2): method 1 and method 2 in the same step.

    One forward and one reversed run per step feed both rules; their own ``target`` and
    ``estimate`` settings are replaced by the ones given here.

    Args:
        method1: K-parameter rule.
        method2: Connection-coefficient rule (with the paper's step of 25 % of method 1's,
            set ``method2.eta`` accordingly).
        target: Target coding for both.
        estimate: ``"window"`` or ``"steady-state"`` for both.
    """

    method1: Method1 = field(default_factory=Method1)
    method2: Method2 = field(default_factory=Method2)
    target: TargetCoding = field(default_factory=TargetCoding)
    estimate: Simulation = "window"

    def __post_init__(self) -> None:
        if not isinstance(self.method1, Method1) or not isinstance(self.method2, Method2):
            raise TypeError("Mixed needs method1=Method1(...) and method2=Method2(...)")
        if self.method2.reversal != "rest":
            raise ValueError(
                "Mixed runs the paper's reversed network (reversal='rest'); "
                "reversal='operating' is for Method2 alone"
            )
        _check_estimate(self, "Mixed")
        # the inner rules run with this target and estimate: hold them, so that the record
        # (the method's repr in a run's stage outcome) shows the settings that ran
        for name in ("method1", "method2"):
            inner = getattr(self, name)
            if inner.target != self.target or inner.estimate != self.estimate:
                inner = replace(inner, target=self.target, estimate=self.estimate)
                object.__setattr__(self, name, inner)


@dataclass(frozen=True)
class Backprop(_WuxingStrategy):
    """Gradient training by backprop through the time simulation (for comparison).

    Args:
        lr: Adam learning rate.
        c_range: Coefficients are clipped to this range after each step.
        target: Target coding; the loss is cross-entropy of ``beta · s`` (``"softmax"``) or
            the squared error (``"onehot"``), the losses whose negative gradient is method 2's
            injected error.
        through: ``"window"``: backprop through the time simulation (BPTT, checkpointed).
            ``"steady-state"``: through the twin built from every neuron's steady-state map (the
            layer-by-layer steady state with implicit gradients); score it on the time
            simulation afterwards.
        weight_decay: Decoupled weight decay of ``c`` (AdamW, Loshchilov & Hutter, ICLR
            2019): each step shrinks ``c`` by ``lr · weight_decay · c``; 0 is plain Adam.
        k_lr: Adam learning rate of the neurons' parameters :attr:`~WuxingNetwork.K`
            [ours]: 0 (default) leaves them as they are, the paper's network for methods
            other than method 1; > 0 trains them with ``c`` (``through="window"``, not with
            the adjoint), the gradient passing through each neuron's rest state. After each
            step ``K`` is clipped to ``K_range`` with ``K1 ≥ K2 + margin``, as in
            :class:`Method1`; a step that costs a neuron its stable rest state is undone for
            ``K`` (``c`` keeps its step).
        K_range: Every K stays in this range (with ``k_lr > 0``).
        margin: Minimum ``K1 − K2`` of every element (with ``k_lr > 0``).
    """

    lr: float = 0.02
    c_range: tuple[float, float] = (-3.0, 3.0)
    target: TargetCoding = field(default_factory=TargetCoding)
    through: Simulation = "window"
    weight_decay: float = 0.0
    k_lr: float = 0.0
    K_range: tuple[float, float] = (0.05, 5.0)
    margin: float = 0.05

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"Backprop.lr must be a finite number > 0, got {self.lr!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(
                f"Backprop.weight_decay must be a finite number >= 0, got {self.weight_decay!r}"
            )
        _check_range(self.c_range, "Backprop")
        object.__setattr__(self, "through", _simulation(self.through, "Backprop.through"))
        if not (math.isfinite(self.k_lr) and self.k_lr >= 0):
            raise ValueError(f"Backprop.k_lr must be a finite number >= 0, got {self.k_lr!r}")
        if self.k_lr > 0 and self.through != "window":
            raise ValueError(
                "Backprop.k_lr > 0 trains K through the time simulation: through must be 'window'"
            )
        if not (math.isfinite(self.margin) and self.margin > 0):
            raise ValueError(f"Backprop.margin must be a finite number > 0, got {self.margin!r}")
        _check_K_range(self.K_range, self.margin, "Backprop")

    def setup(self, net: torch.nn.Module, plan: Plan) -> None:
        """Build the optimiser: AdamW over ``c`` (and over ``K`` with ``k_lr > 0``)."""
        super().setup(net, plan)
        assert isinstance(net, WuxingNetwork)
        groups: list[dict[str, Any]] = [{"params": [net.c]}]
        base = [self.lr]
        if self.k_lr > 0:  # bptt_step refuses the adjoint
            net.K.requires_grad_(True)
            groups.append({"params": [net.K], "lr": self.k_lr, "weight_decay": 0.0})
            base.append(self.k_lr)
        # AdamW with weight_decay=0 is Adam, bit for bit
        self._run["opt"] = torch.optim.AdamW(groups, lr=self.lr, weight_decay=self.weight_decay)
        self._run["base_lr"] = base

    def _step(self, net: WuxingNetwork, xb: torch.Tensor, yb: torch.Tensor, f: float) -> StepReport:
        opt = self._run["opt"]
        for group, lr in zip(opt.param_groups, self._run["base_lr"], strict=True):
            group["lr"] = lr * f
        return bptt_step(net, xb, yb, self, opt, self._option("neuron"))

    def state_dict(self) -> dict[str, Any]:
        """The optimiser's state."""
        return {"optimizer": self._run["opt"].state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the optimiser's state."""
        if state.get("optimizer") is not None:
            restore_optimizer_state(self._run["opt"], state["optimizer"])

    def teardown(self, net: torch.nn.Module) -> None:
        """Leave ``K`` frozen again."""
        assert isinstance(net, WuxingNetwork)
        net.K.requires_grad_(False)
        net.K.grad = None


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


@dataclass(frozen=True, eq=False)
class Signals:
    """Forward and reversed signals of one batch, per unit time.

    Attributes:
        score: Forward scores, (batch, n_out).
        error: Injected error, (batch, n_out) (scaled by ``error_scale``).
        F: ``∫D dt / T`` (window) or ``D*`` (steady) of every slot, (batch, n_slots).
        R: ``∫D̂ dt / T`` or ``D̂*`` of every slot, (batch, n_slots).
        ok: Samples whose runs neither diverged nor failed to converge, (batch,).
        clipped: Samples whose runs hit the state clip, (batch,).
    """

    score: torch.Tensor
    error: torch.Tensor
    F: torch.Tensor
    R: torch.Tensor
    ok: torch.Tensor
    clipped: torch.Tensor


def signals(
    net: WuxingNetwork,
    x: torch.Tensor,
    y: torch.Tensor,
    target: TargetCoding,
    estimate: Simulation = "window",
    neuron: NeuronTwin | None = None,
    reversal: Literal["rest", "operating"] = "rest",
) -> Signals:
    """One forward run, the error, one reversed run (docs/models.md §A.5–A.6), without a graph.

    Args:
        net: The network.
        x: Pixels, (batch, n_in).
        y: Labels, (batch,).
        target: Target coding.
        estimate: ``"window"`` (time simulations over ``[0, T]``) or ``"steady-state"`` (their
            ``T → ∞`` limit).
        neuron: With ``"steady-state"``: a neuron twin; the forward steady state is the twin's and
            the reversed one its small-signal transpose (:meth:`NeuronTwin.reversed`).
        reversal: Where each reversed neuron is linearised (``"steady-state"`` only). ``"rest"``:
            about its own rest state, the paper's reversed network (A2). ``"operating"``
            [ours]: about the operating point of its forward twin, i.e. each reversed neuron
            responds with the transpose of its forward neuron's local gain ``∂D*/∂u`` at the
            present drive (still neuron-local: a neuron needs only its own forward state).
            Then ``R`` is exactly the adjoint of every slot's drive and ``F · R`` exactly
            ``e · ∂s/∂c`` of the steady state; computed here by differentiating the forward
            steady state with respect to a zero drive offset, which gives the same numbers.
    """
    estimate = _simulation(estimate, "estimate")
    _check_reversal(reversal, estimate, "")
    with torch.no_grad():
        if estimate == "window":
            fwd = net.simulate(x)
            e = output_error(fwd.score, y, target)
            bwd = net.simulate_reversed(e)
            T = net.config.T
            ok = ~(fwd.diverged | bwd.diverged)
            return Signals(
                fwd.score, e, fwd.integral / T, bwd.integral / T, ok, fwd.clipped | bwd.clipped
            )
        if reversal == "operating":
            z = x.new_zeros(x.shape[0], 5 * net.wiring.n_neurons, requires_grad=True)
            with torch.enable_grad():
                fwd_s = net.steady_state(x, coeffs=net.c.detach(), neuron=neuron, drive_offset=z)
                e = output_error(torch.nan_to_num(fwd_s.score.detach()), y, target)
                (R,) = torch.autograd.grad((torch.nan_to_num(fwd_s.score) * e).sum(), z)
            ok = fwd_s.converged
            none = torch.zeros_like(ok)
            return Signals(fwd_s.score.detach(), e, fwd_s.signal.detach(), R, ok, none)
        fwd_s = net.steady_state(x, neuron=neuron)
        e = output_error(torch.nan_to_num(fwd_s.score), y, target)
        rev = None if neuron is None else neuron.reversed
        bwd_s = net.steady_state_reversed(e, neuron=rev)
        ok = fwd_s.converged & bwd_s.converged
        none = torch.zeros_like(ok)
        return Signals(fwd_s.score, e, fwd_s.signal, bwd_s.signal, ok, none)


def _soft_mean(g: torch.Tensor, ok: torch.Tensor, kt: float, reduce: str) -> torch.Tensor:
    """Batch reduction of the soft-clipped rule ``atan(kt·g)/kt`` over the ok samples."""
    g = torch.where(ok.reshape(-1, *([1] * (g.ndim - 1))), g, torch.zeros_like(g))
    n_ok = max(int(ok.sum()), 1)
    if reduce == "mean_g2":
        return (torch.atan(kt * g) / kt).sum(0) / n_ok
    return torch.atan(kt * g.sum(0) / n_ok) / kt


def _apply_method2(
    net: WuxingNetwork, sig: Signals, method: Method2, scale: float, state: dict | None = None
) -> torch.Tensor:
    """``c ← clip(c + η G2)`` (or the adaptive step) from the signals; returns ``G2``."""
    g1 = sig.F[:, net.link_src] * sig.R[:, net.link_dst] / scale  # (batch, n_links)
    if not method.normalise:
        g1 = g1 * net.config.T**2
    g2 = _soft_mean(g1, sig.ok, method.kt, method.reduce)
    step = g2.to(net.c.dtype)
    if method.update == "adaptive":
        # per-link running moments of the link's own G2 (Adam's step, ascent on G2)
        state = {} if state is None else state
        t = state["t"] = state.get("t", 0) + 1
        m = state["m"] = 0.9 * state.get("m", torch.zeros_like(step)) + 0.1 * step
        v = state["v"] = 0.999 * state.get("v", torch.zeros_like(step)) + 0.001 * step**2
        step = (m / (1 - 0.9**t)) / ((v / (1 - 0.999**t)).sqrt() + 1e-12)
    net.c.add_(method.eta * step).clamp_(*method.c_range)
    return g2


def method1_signal(
    net: WuxingNetwork, F: torch.Tensor, R: torch.Tensor, *, rest_shift: bool = True
) -> torch.Tensor:
    """Per-neuron K signal ``g`` of method 1 (docs/models.md §A.7), shape (batch, 3, n_neurons, 5).

    ``g[:, k, n, i]`` estimates ``e · ∂s/∂K_{k+1,i}`` of neuron ``n`` from the signals passing
    through that neuron only. The base terms (docs/models.md §A.7) hold the rest state fixed:

        g1_i = F_{i−1} R_i,   g2_i = −F_i R_i,   g3_i = −(B_{i−2} F_i + B_i F_{i−2}) R_i.

    A change of K also moves the neuron's rest state ``B``, from which its signals are
    measured, and the Jacobian at rest depends on ``B``; to first order in the signals this
    adds ``−w_i a_{k,i}`` with ``a = (B_{i−1}, −B_i, −B_i B_{i−2})`` (``∂f_i/∂K`` at rest),
    ``w = J_B^{−T} v`` and ``v_j = −K3_{j+2} R_{j+2} F_{j+2} − K3_j R_j F_{j−2}``, still
    local to the neuron ([ours]; without it the correlation with the finite-difference
    gradient is about 0.5 on the test network, with it above 0.98).

    Args:
        net: The network.
        F: Forward signals per unit time, (batch, n_slots) (wiring numbering).
        R: Reversed signals per unit time, (batch, n_slots).
        rest_shift: Add the rest-state term (default); ``False`` gives the base terms only.
    """
    batch = F.shape[0]
    F = F.reshape(batch, -1, 5).double()  # (batch, neuron, element)
    R = R.reshape(batch, -1, 5).double()
    B = net.rest_state().reshape(-1, 5)  # (neuron, element)
    a_b = B.roll(2, 1)  # B_{i-2}
    g = torch.stack(
        [F.roll(1, 2) * R, -F * R, -(a_b * F + B * F.roll(2, 2)) * R], 1
    )  # (batch, 3, neuron, element); roll(1) puts element i-1 at i
    if not rest_shift:
        return g
    K3 = net.K[2].T  # (neuron, element)
    KR = K3 * R
    v = -(KR * F).roll(-2, 2) - KR * F.roll(2, 2)
    jac = wuxing_jacobian_rows(B, net.K[0], net.K[1], net.K[2])  # (neuron, 5, 5) at rest
    w = torch.linalg.solve(jac.transpose(1, 2).unsqueeze(0), v.unsqueeze(-1)).squeeze(-1)
    a = torch.stack([B.roll(1, 1), -B, -B * a_b], 0)  # (3, neuron, element)
    return g - w.unsqueeze(1) * a.unsqueeze(0)


def _clip_K(K: torch.Tensor, K_range: tuple[float, float], margin: float) -> torch.Tensor:
    """``K`` (3, 5, N) clipped to ``K_range`` with ``K1 ≥ K2 + margin`` (K2 lowered if need be)."""
    lo, hi = K_range
    K = K.clamp(lo, hi)
    K[1] = K[1].clamp(max=hi - margin)
    K[0] = torch.maximum(K[0], K[1] + margin)
    return K


def _apply_method1(
    net: WuxingNetwork, sig: Signals, method: Method1, scale: float, memory: torch.Tensor | None
) -> torch.Tensor:
    """Multiplicative K update (P + leaky I) from the signals; returns the new memory."""
    g = method1_signal(net, sig.F, sig.R / scale, rest_shift=method.rest_shift)
    # multiplicative: the relative change follows K · ∂L/∂K
    g = g * net.K.permute(0, 2, 1).unsqueeze(0)
    G = _soft_mean(g, sig.ok, method.kt, "mean_g2").transpose(1, 2)  # (3, element, neuron)
    memory = G if memory is None else method.leak * memory + G
    delta = method.eta * G + method.eta_i * memory
    old = net.K.clone()
    for _ in range(5):  # a step that costs some neuron its stable rest state is halved
        net.K.copy_(_clip_K(old * (1.0 + delta), method.K_range, method.margin))
        try:
            net.update_rest_states()
            return memory
        except ValueError:
            delta = 0.5 * delta
    net.K.copy_(old)  # no valid step: keep the parameters
    net.update_rest_states()
    return memory


def _report(sig: Signals, y: torch.Tensor, target: TargetCoding, norm: float) -> StepReport:
    ok = sig.ok
    loss = _loss(sig.score[ok], y[ok], target) if ok.any() else torch.tensor(math.nan)
    return StepReport(
        loss=float(loss),
        accuracy=float((sig.score.argmax(1) == y).double().mean()),
        n_diverged=int((~ok).sum()),
        n_clipped=int(sig.clipped.sum()),
        update_norm=norm,
    )


def method2_step(
    net: WuxingNetwork,
    x: torch.Tensor,
    y: torch.Tensor,
    method: Method2,
    neuron: NeuronTwin | None = None,
    state: dict | None = None,
) -> tuple[StepReport, torch.Tensor]:
    """One mini-batch step of method 2; updates ``net.c`` in place.

    Args:
        net: The network.
        x: Pixels, shape (batch, n_in).
        y: Labels, shape (batch,), int64.
        method: Settings.
        neuron: Optional neuron twin for ``estimate="steady-state"`` (see :func:`signals`).
        state: Running moments for ``update="adaptive"`` (a dict kept between steps).

    Returns:
        The step report and the per-link ``G2`` of the batch, shape (n_links,).
    """
    with torch.no_grad():
        sig = signals(net, x, y, method.target, method.estimate, neuron, method.reversal)
        old = net.c.detach().clone()
        g2 = _apply_method2(net, sig, method, method.target.error_scale, state)
        return _report(sig, y, method.target, float((net.c - old).norm())), g2


def method1_step(
    net: WuxingNetwork,
    x: torch.Tensor,
    y: torch.Tensor,
    method: Method1 | Mixed,
    memory: torch.Tensor | None = None,
) -> tuple[StepReport, torch.Tensor]:
    """One mini-batch step of method 1 (or of the mixed method); updates ``net.K`` (and ``c``).

    Args:
        net: The network.
        x: Pixels, shape (batch, n_in).
        y: Labels, shape (batch,).
        method: :class:`Method1` or :class:`Mixed`.
        memory: The integral term's memory from the previous step (None at the start).

    Returns:
        The step report (``update_norm`` is ``‖Δc‖₂ + ‖ΔK‖₂``) and the new memory
        (3, 5, n_neurons).
    """
    m1 = method.method1 if isinstance(method, Mixed) else method
    with torch.no_grad():
        sig = signals(net, x, y, method.target, method.estimate)
        old_c, old_K = net.c.detach().clone(), net.K.clone()
        scale = method.target.error_scale
        if isinstance(method, Mixed):
            _apply_method2(net, sig, method.method2, scale)
        memory = _apply_method1(net, sig, m1, scale, memory)
        norm = float((net.c - old_c).norm()) + float((net.K - old_K).norm())
        return _report(sig, y, method.target, norm), memory


def bptt_step(
    net: WuxingNetwork,
    x: torch.Tensor,
    y: torch.Tensor,
    method: Backprop,
    optimizer: torch.optim.Optimizer,
    neuron: NeuronTwin | None = None,
) -> StepReport:
    """One step of backprop through time on the same network; updates ``net.c``.

    Args:
        net: The network.
        x: Pixels, shape (batch, n_in).
        y: Labels, shape (batch,).
        method: Settings.
        optimizer: Optimiser over ``net.c`` (e.g. ``torch.optim.Adam([net.c], lr)``), and
            over ``net.K`` (which then requires grad) to train the neurons' parameters too
            (see :attr:`Backprop.k_lr`; :func:`train` sets this up).
        neuron: With ``through="steady-state"``: a neuron twin used instead of the Newton solves.
    """
    old = net.c.detach().clone()
    old_K = net.K.detach().clone()
    train_k = net.K.requires_grad
    if train_k and (method.through != "window" or net.config.adjoint):
        raise ValueError(
            "K is trained by the taped time simulation (through='window'), not the "
            "adjoint or the steady state"
        )
    with torch.enable_grad():
        if method.through == "window":
            res = net.simulate(x)
            ok, clipped, score = ~res.diverged, res.clipped, res.score
        else:
            st = net.steady_state(x, neuron=neuron)
            ok, clipped, score = st.converged, torch.zeros_like(st.converged), st.score
        loss = _loss(score[ok], y[ok], method.target)
        optimizer.zero_grad()
        if ok.any():
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        net.c.clamp_(*method.c_range)
        if train_k:
            _project_K(net, method, old_K)
        acc = (score.argmax(1) == y).double().mean()
        return StepReport(
            loss=float(loss.detach()),
            accuracy=float(acc),
            n_diverged=int((~ok).sum()),
            n_clipped=int(clipped.sum()),
            update_norm=float((net.c - old).norm()) + float((net.K - old_K).norm()),
        )


def _project_K(net: WuxingNetwork, method: Backprop, old: torch.Tensor) -> None:
    """Keep a gradient step of ``K`` valid, then store the new rest states.

    The range, ``K1 ≥ K2 + margin`` and a stable rest state of every neuron; a step that
    costs some neuron its rest state sends ``K`` back to ``old``.
    """
    net.K.copy_(_clip_K(net.K, method.K_range, method.margin))
    try:
        net.update_rest_states()
    except ValueError:
        net.K.copy_(old)
        net.update_rest_states()


def predict(
    net: WuxingNetwork,
    x: torch.Tensor,
    *,
    batch_size: int = 256,
    mode: Simulation = "window",
    neuron: NeuronTwin | None = None,
) -> torch.Tensor:
    """Predicted class per sample, −1 where the run diverged or the steady state is unsolved.

    Args:
        net: The network.
        x: Pixels, shape (n, n_in).
        batch_size: Samples per simulation.
        mode: ``"window"``: the forward time simulation (the device; default).
            ``"steady-state"``:
            the layer-by-layer steady state (exact, or through ``neuron``).
        neuron: With ``"steady-state"``: a neuron twin instead of the Newton solves.

    Returns:
        Classes, shape (n,), int64, on ``x``'s torch device.
    """
    mode = _simulation(mode, "mode")
    preds = [x.new_zeros(0, dtype=torch.long)]
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            xb = x[i : i + batch_size]
            if mode == "window":
                res = net.simulate(xb)
                score, ok = res.score, ~res.diverged
            else:
                st = net.steady_state(xb, neuron=neuron)
                score, ok = st.score, st.converged
            preds.append(torch.where(ok, score.argmax(1), -1))
    return torch.cat(preds)


def evaluate(
    net: WuxingNetwork,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int = 256,
    mode: Simulation = "window",
) -> float:
    """Accuracy on ``(x, y)``; diverged or unsolved samples count wrong (see :func:`predict`).

    Args:
        net: The network.
        x: Pixels, shape (n, n_in).
        y: Labels, shape (n,).
        batch_size: Samples per simulation.
        mode: ``"window"`` (the device; default) or ``"steady-state"`` (the exact steady
            state).

    Returns:
        Fraction classified right (float).
    """
    pred = predict(net, x, batch_size=batch_size, mode=mode)
    return int((pred == y.to(pred.device)).sum()) / max(x.shape[0], 1)


Method = Method1 | Method2 | Mixed | Backprop
"""Any training strategy for a Wuxing network."""


def train(
    net: WuxingNetwork,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    method: Method,
    epochs: int = 1,
    batch_size: int = 32,
    seed: int = 0,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    val_mode: Simulation = "steady-state",
    callback: Callable[[int, StepReport], None] | None = None,
    epoch_callback: Callable[[int, float | None], None] | None = None,
    neuron: NeuronTwin | None = None,
    schedule: Cosine | None = None,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    max_samples: int | None = None,
    checkpoint_dir: str | None = None,
    resume: bool = False,
    progress: bool = False,
) -> TrainResult:
    """Train the network in place with method 1, method 2, mixed or backprop.

    A thin wrapper over :func:`quasineuron.training.fit` with the method as the strategy.

    Args:
        net: The network.
        x: Pixels, shape (n, n_in), on the network's torch device.
        y: Labels, shape (n,).
        method: :class:`Method1`, :class:`Method2`, :class:`Mixed` or :class:`Backprop`.
        epochs: Passes over the data.
        batch_size: Samples per step.
        seed: Seed of the shuffling.
        val: Optional validation split; its accuracy is measured after every epoch and the
            coefficients and parameters of the best epoch (the earliest of equals) are
            restored at the end.
        val_mode: How validation is scored (``"steady-state"``, cheap, or ``"window"``).
        callback: Called as ``callback(step_index, report)`` after each step.
        epoch_callback: Called as ``epoch_callback(epoch, val_accuracy)`` after each epoch.
        neuron: A neuron twin (:func:`~quasineuron.wuxing.twin.fit_neuron_twin`) for
            ``Backprop(through="steady-state")`` and method 2 with
            ``estimate="steady-state"``: the
            steady states come from the twin instead of Newton solves (fast); validation
            with ``val_mode="steady-state"`` still uses the exact steady state.
        schedule: Step-size schedule: ``None`` (constant) or the library's
            :class:`~quasineuron.training.config.Cosine`, here [ours] with the first epoch at
            the full step and the cosine over the steps of the remaining planned epochs,
            applied to the Adam learning rate (:class:`Backprop`) or to ``η``
            (:class:`Method2`; method 1's steps are not scheduled); ``min_lr`` is read as a
            fraction of that step. With ``max_samples`` the cosine instead runs over all the
            ``ceil(max_samples / batch_size)`` steps of the stage from the first step (a
            fine-tuning stage, typically shorter than an epoch, that anneals to its end).
        augment: Applied to every training batch as ``augment(xb, generator)`` (e.g.
            :class:`~quasineuron.data.RandomShift`); its generator is seeded from ``seed``
            apart from the shuffling's, so the batches are the same with and without it.
        max_samples: Sample budget: training stops after ``ceil(max_samples / batch_size)``
            steps (whole batches; at most ``epochs`` epochs), and the epoch in progress is
            validated and counted as the last one.
        checkpoint_dir: Folder for a checkpoint after every epoch (see ``fit``), or None.
        resume: Continue from the checkpoint in ``checkpoint_dir``.
        progress: Show a progress bar per epoch.

    Returns:
        The loop's :class:`~quasineuron.training.TrainResult`; ``extras["steps"]`` holds one
        :class:`StepReport` per step of this call and ``extras["epochs_planned"]`` the epochs
        the schedule was planned over.
    """
    if not isinstance(method, _WuxingStrategy):
        raise TypeError(
            f"method must be Method1(...), Method2(...), Mixed(...) or Backprop(...), got "
            f"{method!r}"
        )
    strategy = method.bound(neuron=neuron, schedule=schedule, val_mode=val_mode)
    recorder = _Recorder(callback, epoch_callback)
    val_data = None if val is None else ArrayDataset(val[0], val[1].to(val[0].device))
    result = fit(
        net,
        ArrayDataset(x, y.to(x.device)),
        strategy,
        epochs=epochs,
        max_samples=max_samples,
        batch_size=batch_size,
        seed=seed,
        val_data=val_data,
        keep="best" if val is not None else "last",
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        progress=progress,
        callbacks=[recorder],
        augment=augment,
    )
    extras = {
        **result.extras,
        "steps": tuple(recorder.steps),
        "epochs_planned": recorder.planned,
    }
    return replace(result, extras=extras)


class _Recorder(Callback):
    """Keeps every step's report for :func:`train` and calls its plain callbacks."""

    def __init__(
        self,
        callback: Callable[[int, StepReport], None] | None,
        epoch_callback: Callable[[int, float | None], None] | None,
    ) -> None:
        self.callback = callback
        self.epoch_callback = epoch_callback
        self.steps: list[StepReport] = []
        self.planned = 0

    def on_train_begin(self, state: LoopState) -> None:
        self.planned = state.plan.epochs

    def on_step(self, state: LoopState, output: StepOutput) -> None:
        report = output.extras["report"]
        self.steps.append(report)
        if self.callback is not None:
            self.callback(state.step - 1, report)

    def on_epoch(self, state: LoopState, metrics: EpochMetrics) -> bool | None:
        if self.epoch_callback is not None:
            self.epoch_callback(metrics.epoch, metrics.val_accuracy)
        return None
