"""Score a trained network in several execution modes and report the twin-to-device gap."""

from __future__ import annotations

import dataclasses
import math
import re
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch

from quasineuron.data.dataset import ArrayDataset
from quasineuron.devices.base import Box
from quasineuron.devices.counting import device_phase
from quasineuron.errors import NonFiniteOutputWarning

__all__ = ["EvaluationReport", "evaluate", "is_stochastic", "mode_name"]

# Report keys of the execution modes of quasineuron.network.modes, by class name.
_MODE_NAMES = {
    "Surrogate": "surrogate",
    "TrueDevice": "device",
    "PhysicsAware": "physics-aware",
    "Direct": "direct",
}


def mode_name(mode: Any) -> str:
    """Report key of an execution mode: ``"surrogate"``, ``"device"``, ``"physics-aware"``, ...

    A mode with a string ``name`` attribute keeps it; other classes get their kebab-cased
    class name (``MyMode`` -> ``"my-mode"``); None (a plain module called without ``mode``) is
    ``"default"``.
    """
    if mode is None:
        return "default"
    name = getattr(mode, "name", None)
    if isinstance(name, str) and name:
        return name
    cls = type(mode).__name__
    return _MODE_NAMES.get(cls) or re.sub(r"(?<!^)(?=[A-Z])", "-", cls).lower()


@dataclass(frozen=True)
class EvaluationReport:
    """Accuracy of one network on one data set, per execution mode.

    Args:
        dataset: Name of the data set.
        n_samples: Number of samples scored.
        n_classes: Number of classes (size of the confusion matrices).
        accuracy: Fraction right per mode, keyed by :func:`mode_name`; the mean over the
            passes (see ``accuracy_passes``).
        confusion: Confusion matrix per mode, ``confusion[mode][true][predicted]`` counts, of
            the first pass. Rows with non-finite outputs have no predicted class and are left
            out, so each matrix sums to ``n_samples - nonfinite_rows[mode]``.
        samples_per_second: Throughput per mode (forward passes only, all passes).
        gap: ``accuracy["surrogate"] - accuracy["device"]`` (a fraction), or None unless both
            modes were scored. Positive means the true device does worse than its twin.
        variability: None, or the spread of accuracy over draws of device-to-device
            variability: ``{"settings": [...], "modes": {mode: {"accuracy": [...], "mean",
            "std", "min", "max", "nonfinite_rows": [...]}}}`` for each mode that runs the
            true device.
        nonfinite_rows: Per mode, how many samples of the first pass gave an output row
            holding inf or NaN. They count as wrong predictions in ``accuracy``, whatever the
            finite logits say.
        accuracy_passes: Per mode, the accuracy of each pass: ``passes`` numbers for a mode
            that runs the true device, one for a mode that runs only the twin.
        accuracy_std: Per mode, the standard deviation of ``accuracy_passes`` (population
            form, ``correction=0``): the spread that device noise alone causes. 0 for one pass.
        domain: Per mode, where the drives fell relative to the characterised domain of each
            layer (its twin's box, else its device's ``domain``), over all passes:
            ``{mode: {"outside_fraction", "n_outside", "n_rows", "layers": [{"outside_fraction",
            "n_outside", "n_rows", "min", "max", "low", "high"}, ...]}}``. A row is one neuron's
            drives for one sample; it is outside when any drive lies outside ``[low, high]`` or
            is NaN. ``min`` / ``max`` are the extremes seen per drive (NaN ignored). Empty when
            the network does not expose its drives (it has no ``run`` returning them).
    """

    dataset: str
    n_samples: int
    n_classes: int
    accuracy: dict[str, float]
    confusion: dict[str, list[list[int]]]
    samples_per_second: dict[str, float]
    gap: float | None
    variability: dict[str, Any] | None = field(default=None)
    nonfinite_rows: dict[str, int] = field(default_factory=dict)
    accuracy_passes: dict[str, list[float]] = field(default_factory=dict)
    accuracy_std: dict[str, float] = field(default_factory=dict)
    domain: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (plain dicts, lists, numbers and strings)."""
        return dataclasses.asdict(self)


def evaluate(
    net: torch.nn.Module,
    data: ArrayDataset,
    *,
    modes: Sequence[Any] | None = None,
    batch_size: int = 1024,
    variability: Any = None,
    n_draws: int = 1,
    passes: int = 1,
) -> EvaluationReport:
    """Classify ``data`` with ``net`` in each mode, under ``torch.no_grad()`` in eval mode.

    Args:
        net: A module mapping x (batch, n_features) to logits (batch, k), called as
            ``net(x, mode=mode)`` (``net(x)`` for a mode of None), e.g. a ``DeviceNetwork``.
        data: Labelled data (integer ``y``).
        modes: Execution modes to score; default ``(Surrogate(), TrueDevice())`` from
            ``quasineuron.network.modes``. Their report keys (:func:`mode_name`) must differ.
        batch_size: Samples per forward pass.
        variability: A ``Variability`` (or a sequence of them) of the true devices. Each
            mode that runs the true device is scored again on ``net.with_variability(v)``
            for every setting, giving the spread of accuracy across device instances.
        n_draws: With a single ``variability``, how many instances to draw (seeds
            ``seed, seed + 1, ...``).
        passes: How many times to score each mode that runs the true device. A stochastic
            device (:func:`is_stochastic`) gives another accuracy on every pass; the report
            gives their mean, standard deviation and each of them. Modes that run only the
            twin are deterministic and scored once.

    While scoring, the drives each layer applies (``net.run`` returns them; no second
    forward pass) are compared with the layer's characterised domain, and the report's
    ``domain`` says which fraction fell outside and how far.

    A sample whose output row holds inf or NaN (a device that overflowed or diverged) is
    scored as a wrong prediction, counted in ``nonfinite_rows``, and a
    :class:`~quasineuron.errors.NonFiniteOutputWarning` with the count is issued once per mode
    (and once per mode over the variability draws).

    Returns:
        The report; ``gap`` is surrogate minus device accuracy.

    Raises:
        ValueError: For regression targets, bad options or duplicate mode names.
        TypeError: If ``variability`` is given but ``net`` has no ``with_variability``.
    """
    if not isinstance(data, ArrayDataset):
        raise TypeError(f"data must be an ArrayDataset, got {type(data).__name__}")
    if not data.is_classification:
        raise ValueError(
            "evaluate() scores classification and needs integer labels y of shape (n,); "
            f"{data.name!r} holds floating targets"
        )
    if len(data) == 0:
        raise ValueError(f"data {data.name!r} is empty")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if isinstance(n_draws, bool) or not isinstance(n_draws, int) or n_draws < 1:
        raise ValueError(f"n_draws must be an int >= 1, got {n_draws!r}")
    if isinstance(passes, bool) or not isinstance(passes, int) or passes < 1:
        raise ValueError(
            f"passes must be an int >= 1, got {passes!r}; use passes=5 or so to see the "
            "spread a noisy device gives, passes=1 for a deterministic one"
        )
    modes = _default_modes() if modes is None else tuple(modes)
    if not modes:
        raise ValueError("modes is empty; e.g. modes=(Surrogate(), TrueDevice())")
    names = [mode_name(m) for m in modes]
    if len(set(names)) != len(names):
        raise ValueError(
            f"modes have duplicate report names {names}; score modes that share a name "
            f"(e.g. Direct(adjoint=True) and Direct()) in separate evaluate() calls"
        )
    settings = _variability_settings(net, variability, n_draws)

    param = next(iter(net.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    x = data.x.to(device, dtype)
    y = data.y.to(device)

    accuracy: dict[str, float] = {}
    per_pass: dict[str, list[float]] = {}
    confusion: dict[str, list[list[int]]] = {}
    speed: dict[str, float] = {}
    n_classes = data.n_classes or 0
    nonfinite: dict[str, int] = {}
    boxes = _domain_boxes(net)
    domain: dict[str, Any] = {}
    for name, mode in zip(names, modes, strict=True):
        k = passes if _uses_true_device(mode, name) else 1
        tally = None if boxes is None else _DomainTally(boxes)
        accs, bad, seconds = [], 0, 0.0
        for i in range(k):
            with device_phase(f"evaluation:{name}"):  # rows sent to a true device, by mode
                pred, finite, dt = _predict(net, x, mode, batch_size, tally=tally)
            seconds += dt
            accs.append(_accuracy(pred, finite, y))
            bad += int((~finite).sum())
            if i == 0:
                nonfinite[name] = int((~finite).sum())
                if bool(finite.any()):
                    n_classes = max(n_classes, int(pred[finite].max()) + 1)
                confusion[name] = _confusion(y[finite], pred[finite], n_classes)
        if bad:
            _warn_nonfinite(bad, len(x) * k, name, data.name, draws=False)
        per_pass[name] = accs
        accuracy[name] = math.fsum(accs) / k
        speed[name] = len(x) * k / seconds if seconds > 0 else math.inf
        if tally is not None:
            domain[name] = tally.result()
    # matrices made before a wider prediction appeared are padded to the final size
    confusion = {k: _pad(v, n_classes) for k, v in confusion.items()}

    spread = None
    if settings:
        per_mode: dict[str, Any] = {}
        for name, mode in zip(names, modes, strict=True):
            if not _uses_true_device(mode, name):
                continue
            draw_accs: list[float] = []
            draw_bad: list[int] = []
            for setting in settings:
                # _variability_settings checked that the network has with_variability
                view = cast(Any, net).with_variability(setting)
                with device_phase(f"evaluation:{name}"):
                    pred, finite, _ = _predict(view, x, mode, batch_size)
                draw_accs.append(_accuracy(pred, finite, y))
                draw_bad.append(int((~finite).sum()))
            if sum(draw_bad):
                _warn_nonfinite(sum(draw_bad), len(x) * len(settings), name, data.name, draws=True)
            t = torch.tensor(draw_accs, dtype=torch.float64)
            per_mode[name] = {
                "accuracy": draw_accs,
                "mean": t.mean().item(),
                "std": t.std(correction=0).item(),
                "min": t.min().item(),
                "max": t.max().item(),
                "nonfinite_rows": draw_bad,
            }
        spread = {"settings": [dataclasses.asdict(s) for s in settings], "modes": per_mode}

    gap = None
    if "surrogate" in accuracy and "device" in accuracy:
        gap = accuracy["surrogate"] - accuracy["device"]
    return EvaluationReport(
        dataset=data.name,
        n_samples=len(data),
        n_classes=n_classes,
        accuracy=accuracy,
        confusion=confusion,
        samples_per_second=speed,
        gap=gap,
        variability=spread,
        nonfinite_rows=nonfinite,
        accuracy_passes=per_pass,
        accuracy_std={
            k: torch.tensor(v, dtype=torch.float64).std(correction=0).item()
            for k, v in per_pass.items()
        },
        domain=domain,
    )


def is_stochastic(net: torch.nn.Module) -> bool:
    """Whether scoring ``net`` on its true devices can give another result each time.

    True when a layer's device declares ``stochastic = True`` or the network (a view from
    ``with_variability``) adds fresh output noise (``noise_std > 0``). Score such a network with
    ``evaluate(..., passes=k)`` to see the spread.

    Args:
        net: A ``DeviceNetwork`` or any module; one without ``layers`` is taken as
            deterministic.
    """
    variability = getattr(net, "variability", None)
    if getattr(variability, "noise_std", 0.0) > 0:
        return True
    layers = getattr(net, "layers", None) or ()
    return any(
        bool(getattr(getattr(layer, "device", None), "stochastic", False)) for layer in layers
    )


def _uses_true_device(mode: Any, name: str) -> bool:
    return bool(getattr(mode, "uses_true_device", name != "surrogate"))


def _domain_boxes(net: torch.nn.Module) -> list[Box] | None:
    """Each layer's characterised domain (the twin's box, else the device's), or None.

    None when ``net`` cannot report its drives: it needs ``run(x, mode=...)`` returning
    ``(logits, drives per layer)`` and ``layers`` with a ``device`` (and ``twin``) each.
    """
    layers = getattr(net, "layers", None)
    if not callable(getattr(net, "run", None)) or layers is None:
        return None
    boxes = []
    for layer in layers:
        twin = getattr(layer, "twin", None)
        box = getattr(twin if twin is not None else getattr(layer, "device", None), "domain", None)
        if not isinstance(box, Box):
            return None
        boxes.append(box)
    return boxes or None


class _DomainTally:
    """Running count of drive rows outside each layer's box, and the extremes per drive.

    The counts stay on the drives' torch device until :meth:`result`; a batch costs one host
    synchronisation on one flag per layer (whether anything was outside), after which the
    row-wise count runs only for the layers that need it.
    """

    def __init__(self, boxes: list[Box]) -> None:
        self.boxes = boxes
        self.bounds: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.n_outside: list[torch.Tensor] = []
        self.n_rows = [0] * len(boxes)
        self.lo: list[torch.Tensor] = []
        self.hi: list[torch.Tensor] = []

    def add(self, drives: Sequence[torch.Tensor]) -> None:
        """Count one batch: ``drives[i]`` of shape (batch, n_neurons, n_drives) for layer i."""
        if len(drives) != len(self.boxes):
            raise ValueError(
                f"net.run returned drives for {len(drives)} layers but the network has "
                f"{len(self.boxes)}; run must return (logits, one drive tensor per layer)"
            )
        if self.bounds is None:
            ref = drives[0]
            self.bounds = [b.tensors(dtype=ref.dtype, device=ref.device) for b in self.boxes]
            inf = torch.tensor(math.inf, dtype=ref.dtype, device=ref.device)
            zero = torch.zeros((), dtype=torch.int64, device=ref.device)
            self.n_outside = [zero.clone() for _ in self.boxes]
            self.lo = [inf.expand(b.dim).clone() for b in self.boxes]
            self.hi = [(-inf).expand(b.dim).clone() for b in self.boxes]
        # One pass per layer for the per-drive extremes (NaN propagates into them), then one
        # host sync for the whole batch on a few flags: the row-wise count runs only for the
        # layers where something was outside.
        batch = []
        for u, (low, high) in zip(drives, self.bounds, strict=True):
            rows = u.detach().reshape(-1, low.shape[0])
            low, high = low.to(rows.dtype), high.to(rows.dtype)
            if rows.shape[0]:
                lo, hi = torch.aminmax(rows, dim=0)
                out = ((lo < low) | (hi > high) | lo.isnan() | hi.isnan()).any()
            else:
                lo, hi, out = (
                    low.new_full(low.shape, math.inf),
                    high.new_full(low.shape, -math.inf),
                    low.new_zeros((), dtype=torch.bool),
                )
            batch.append((rows, low, high, lo, hi, out))
        flags = torch.stack([b[-1] for b in batch]).tolist()
        for i, ((rows, low, high, lo, hi, _), flag) in enumerate(zip(batch, flags, strict=True)):
            self.n_rows[i] += rows.shape[0]
            if flag:
                # NaN compares False, so a NaN drive is not inside: it counts as outside
                inside = ((rows >= low) & (rows <= high)).all(dim=1)
                self.n_outside[i] += (~inside).sum()
                nan = rows.isnan()
                big = torch.tensor(math.inf, dtype=rows.dtype, device=rows.device)
                lo = torch.where(nan, big, rows).amin(dim=0)
                hi = torch.where(nan, -big, rows).amax(dim=0)
            self.lo[i] = torch.minimum(self.lo[i], lo)
            self.hi[i] = torch.maximum(self.hi[i], hi)

    def result(self) -> dict[str, Any]:
        """The mode's entry of ``EvaluationReport.domain`` (see there)."""
        layers: list[dict[str, Any]] = []
        for i, box in enumerate(self.boxes):
            n_out = int(self.n_outside[i]) if self.bounds is not None else 0
            n = self.n_rows[i]
            layers.append(
                {
                    "outside_fraction": n_out / n if n else 0.0,
                    "n_outside": n_out,
                    "n_rows": n,
                    "min": self.lo[i].tolist() if self.bounds is not None else [],
                    "max": self.hi[i].tolist() if self.bounds is not None else [],
                    "low": list(box.low),
                    "high": list(box.high),
                }
            )
        total = sum(self.n_rows)
        n_out = sum(entry["n_outside"] for entry in layers)
        return {
            "outside_fraction": n_out / total if total else 0.0,
            "n_outside": n_out,
            "n_rows": total,
            "layers": layers,
        }


def _default_modes() -> tuple[Any, ...]:
    try:
        from quasineuron.network.modes import Surrogate, TrueDevice
    except ImportError as exc:  # pragma: no cover - the network package ships with the library
        raise ImportError(
            f"the default modes need quasineuron.network.modes ({exc}); pass modes=... "
        ) from exc
    return (Surrogate(), TrueDevice())


def _variability_settings(net: torch.nn.Module, variability: Any, n_draws: int) -> list[Any]:
    if variability is None:
        if n_draws != 1:
            raise ValueError("n_draws needs variability=Variability(...)")
        return []
    if not callable(getattr(net, "with_variability", None)):
        raise TypeError(
            f"variability needs a network with a with_variability() method (a DeviceNetwork), "
            f"got {type(net).__name__}"
        )
    if isinstance(variability, Sequence):
        if n_draws != 1:
            raise ValueError("give either a sequence of variabilities or n_draws, not both")
        return list(variability)
    if not dataclasses.is_dataclass(variability):
        raise TypeError(f"variability must be a Variability, got {variability!r}")
    if n_draws == 1:
        return [variability]
    base: Any = variability  # a dataclass with a seed field, such as Variability
    return [dataclasses.replace(base, seed=base.seed + i) for i in range(n_draws)]


@torch.no_grad()
def _predict(
    net: torch.nn.Module,
    x: torch.Tensor,
    mode: Any,
    batch_size: int,
    *,
    tally: _DomainTally | None = None,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Predicted classes (n,), whether each output row was finite (n,) bool, and seconds.

    The class of a row that is not finite is meaningless (argmax picks an inf, or whatever
    NaN compares to); callers must score it by the mask. With a ``tally``, the forward pass is
    ``net.run``, whose drives are counted against the domain.
    """
    was_training = net.training
    net.eval()
    try:
        preds, finite = [], []
        _sync(x.device)
        t0 = time.perf_counter()
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size]
            if tally is not None:
                # a domain tally is only made for networks with run() (a DeviceNetwork)
                run = cast(Any, net).run
                out, drives = run(xb) if mode is None else run(xb, mode=mode)
                tally.add(drives)
            else:
                out = net(xb) if mode is None else net(xb, mode=mode)
            if out.ndim != 2 or len(out) != len(xb):
                raise ValueError(
                    f"net must return logits of shape (batch, k) = ({len(xb)}, k), got "
                    f"{tuple(out.shape)}"
                )
            preds.append(out.argmax(dim=1))
            finite.append(out.isfinite().all(dim=1))
        _sync(x.device)
        seconds = time.perf_counter() - t0
    finally:
        net.train(was_training)
    return torch.cat(preds), torch.cat(finite), seconds


def _accuracy(pred: torch.Tensor, finite: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of all rows that are finite and right: a non-finite row is always wrong."""
    return ((pred == y) & finite).double().mean().item()


def _warn_nonfinite(n_bad: int, n_total: int, mode: str, dataset: str, *, draws: bool) -> None:
    over = " over the variability draws" if draws else ""
    warnings.warn(
        f"mode {mode!r}: {n_bad} of {n_total} rows of {dataset!r}{over} gave non-finite (inf or "
        f"NaN) outputs; they are scored as wrong predictions (see nonfinite_rows in the report). "
        f"The device overflowed or diverged for those inputs: check its numerics and the drive "
        f"range the network feeds it",
        NonFiniteOutputWarning,
        stacklevel=3,  # the caller of evaluate()
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _confusion(y: torch.Tensor, pred: torch.Tensor, n_classes: int) -> list[list[int]]:
    counts = torch.bincount(y * n_classes + pred, minlength=n_classes * n_classes)
    return counts.reshape(n_classes, n_classes).tolist()


def _pad(cm: list[list[int]], n: int) -> list[list[int]]:
    rows = [row + [0] * (n - len(row)) for row in cm]
    return rows + [[0] * n for _ in range(n - len(rows))]
