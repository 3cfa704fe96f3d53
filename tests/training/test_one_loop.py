"""The one training loop: strategies, callbacks, model selection, budget, resume."""

from __future__ import annotations

import warnings

import pytest
import torch

import quasineuron as qn
from quasineuron.data import ArrayDataset
from quasineuron.errors import OutOfDomainWarning
from quasineuron.training import (
    AbstractStrategy,
    Adam,
    Callback,
    DomainMonitor,
    Gradient,
    StepOutput,
    WeightAveraging,
    fit,
)
from quasineuron.training.config import as_loss

F64 = torch.float64


class Interrupted(Exception):
    pass


def _data(n: int = 24, seed: int = 0) -> ArrayDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=F64)
    return ArrayDataset(x, (x[:, 0] + 0.5 * x[:, 1] > 0).long())


class Linear(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = torch.nn.Parameter(torch.randn(3, 2, generator=g, dtype=F64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w


class SignDescent(AbstractStrategy):
    """A new strategy, defined here and nowhere else: sign-of-gradient steps with momentum."""

    def __init__(self, lr: float) -> None:
        self.lr = lr
        self.velocity: torch.Tensor | None = None

    def setup(self, net, plan):
        self.velocity = torch.zeros_like(net.w)

    def step(self, net, xb, yb, step_index):
        out = net(xb)
        loss = torch.nn.functional.cross_entropy(out, yb)
        (g,) = torch.autograd.grad(loss, [net.w])
        with torch.no_grad():
            self.velocity = 0.5 * self.velocity + torch.sign(g)
            net.w -= self.lr * self.velocity
        return StepOutput(loss=loss.detach(), n_correct=(out.argmax(1) == yb).sum())

    def score(self, net, data, batch_size):
        with torch.no_grad():
            out = net(data.x)
        loss = torch.nn.functional.cross_entropy(out, data.y).item()
        return loss, (out.argmax(1) == data.y).double().mean().item()

    def state_dict(self):
        return {"velocity": self.velocity}

    def load_state_dict(self, state):
        self.velocity = state["velocity"]


def test_a_strategy_defined_in_a_test_trains_with_fit():
    data = _data()
    res = fit(Linear(), data, SignDescent(lr=0.05), epochs=8, batch_size=8, progress=False)
    assert res.history[-1].train_loss < 0.8 * res.history[0].train_loss
    assert res.samples_seen == 8 * len(data)


class Scripted(AbstractStrategy):
    """Each step sets the weight to the step number; validation scores come from a script."""

    def __init__(self, scores):
        self.scores = list(scores)
        self.scored = 0

    def step(self, net, xb, yb, step_index):
        with torch.no_grad():
            net.w.fill_(float(step_index + 1))
        return StepOutput(loss=0.0)

    def score(self, net, data, batch_size):
        self.scored += 1
        return self.scores[self.scored - 1]


def _scripted(scores, **kw):
    data = _data(n=8)
    net = Linear()
    res = fit(net, data, Scripted(scores), batch_size=8, val_data=data, progress=False, **kw)
    return res, float(net.w.detach()[0, 0])


def test_keep_best_ranks_by_accuracy_then_lower_loss_then_earlier():
    scores = [(0.5, 0.8), (0.4, 0.9), (0.3, 0.9), (0.1, 0.7), (0.3, 0.9)]
    res, w = _scripted(scores, epochs=5, keep="best")
    assert res.best_epoch == 3 and w == 3.0  # epoch 3's weights are back in the network
    res, w = _scripted(scores, epochs=5, keep="last")
    assert res.best_epoch == 3 and w == 5.0
    # regression (no accuracy): the lowest loss
    res, w = _scripted([(0.5, None), (0.2, None), (0.3, None)], epochs=3, keep="best")
    assert res.best_epoch == 2 and w == 2.0
    # patience counts epochs without improvement and implies keeping the best
    res, w = _scripted(scores, epochs=5, patience=1)
    assert res.stopped_early and len(res.history) == 4 and w == 3.0


def test_keep_best_or_start_undoes_a_run_that_does_not_beat_the_incoming_network(
    tmp_path,
):
    start = float(Linear().w.detach()[0, 0])
    # the first score is the incoming network's: no epoch beats 0.6, so it comes back unchanged
    res, w = _scripted([(0.5, 0.6), (0.4, 0.5), (0.5, 0.55)], epochs=2, keep="best-or-start")
    assert res.best_epoch == 0 and w == start and res.extras["start_val_accuracy"] == 0.6
    # an epoch that beats it is kept as with keep="best"
    res, w = _scripted([(0.5, 0.6), (0.4, 0.7), (0.5, 0.65)], epochs=2, keep="best-or-start")
    assert res.best_epoch == 1 and w == 1.0 and res.extras["start_val_accuracy"] == 0.6
    # a resumed run keeps the incoming network as the candidate without scoring it again
    data, net = _data(n=8), Linear()
    strategy = Scripted([(0.5, 0.6), (0.4, 0.5), (0.5, 0.55)])
    kw = dict(batch_size=8, val_data=data, progress=False, keep="best-or-start")
    fit(net, data, strategy, epochs=1, checkpoint_dir=tmp_path, **kw)
    strategy.scores, strategy.scored = [(0.5, 0.55)], 0
    res = fit(net, data, strategy, epochs=2, checkpoint_dir=tmp_path, resume=True, **kw)
    assert strategy.scored == 1 and res.best_epoch == 0
    assert float(net.w.detach()[0, 0]) == start
    # without validation data there is nothing to score the incoming network on: refused
    with pytest.raises(ValueError, match="best-or-start.*val_data"):
        fit(Linear(), data, Scripted([]), epochs=1, batch_size=8, keep="best-or-start")


def test_max_samples_is_a_budget_of_whole_batches():
    data = _data(n=8)
    seen = []

    class Count(Callback):
        def on_step(self, state, output):
            seen.append(state.step)

    res = fit(
        Linear(),
        data,
        Scripted([]),
        epochs=9,
        batch_size=4,
        max_samples=17,
        progress=False,
        callbacks=[Count()],
    )
    # ceil(17 / 4) = 5 steps: two epochs of 2 and one step of a third, which counts
    assert seen == [1, 2, 3, 4, 5] and res.samples_seen == 20 and len(res.history) == 3


def test_callbacks_are_called_in_order():
    events = []

    class Log(Callback):
        def on_train_begin(self, state):
            events.append("begin")

        def on_step(self, state, output):
            events.append(f"step{state.step}")

        def on_epoch(self, state, metrics):
            events.append(f"epoch{metrics.epoch}")
            return metrics.epoch == 2

        def on_train_end(self, state):
            events.append("end")

    res = fit(
        Linear(),
        _data(n=8),
        Scripted([]),
        epochs=5,
        batch_size=4,
        progress=False,
        callbacks=[Log(), lambda m: events.append(f"fn{m.epoch}")],
    )
    assert events == [
        "begin",
        "step1",
        "step2",
        "epoch1",
        "fn1",
        "step3",
        "step4",
        "epoch2",
        "fn2",
        "end",
    ]
    assert res.stopped_early and len(res.history) == 2


def test_weight_averaging_installs_the_mean_of_the_last_epochs():
    net = Linear()
    res = fit(
        net,
        _data(n=8),
        Scripted([]),
        epochs=5,
        batch_size=4,
        progress=False,
        callbacks=[WeightAveraging(last=3)],
    )
    # two steps per epoch: the weights end epochs 3, 4, 5 at 6, 8, 10
    assert torch.equal(net.w, torch.full((3, 2), (6.0 + 8.0 + 10.0) / 3, dtype=F64))
    assert res.extras["weight_averaging"] == {"epochs": [3, 4, 5]}
    for keep in ("best", "best-or-start"):
        with pytest.raises(ValueError, match=f"keep={keep!r}.*keep='last'"):
            fit(
                Linear(),
                _data(n=8),
                Scripted([(0.1, 0.5)]),
                epochs=1,
                batch_size=4,
                val_data=_data(n=8),
                keep=keep,
                progress=False,
                callbacks=[WeightAveraging(last=2)],
            )


def _identity_net() -> qn.DeviceNetwork:
    dev = qn.FormulaDevice(lambda u: u, n_in=1, n_out=1, domain=qn.Box((-1.0,), (1.0,)))
    net = qn.DeviceNetwork(dev, (2, 3), readout_affine=False, dtype=F64)
    with torch.no_grad():
        net.layers[0].map.weight.copy_(torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 2.0]]))
        net.layers[0].map.bias.zero_()
    return net


def test_domain_monitor_counts_drive_rows_outside_the_domain():
    net = _identity_net()
    # drives: neuron 0 = x0, neuron 1 = x1, neuron 2 = 2 (x0 + x1)
    x = torch.tensor([[0.5, 0.2], [1.5, 0.0], [-1.5, 0.1], [0.1, -0.2], [0.9, 0.9]], dtype=F64)
    # outside [-1, 1]: row 0: n2 = 1.4; row 1: n0 = 1.5, n2 = 3.0; row 2: n0 = -1.5,
    # n2 = -2.8; row 3: none; row 4: n2 = 3.6
    monitor = DomainMonitor(threshold=1.0)
    assert monitor.fractions(net, x, qn.TrueDevice()) == [6 / 15]
    data = ArrayDataset(x, torch.tensor([0, 1, 2, 0, 1]))
    strategy = Gradient(qn.TrueDevice(), optimizer=Adam(lr=1e-12), loss="mse")
    with pytest.warns(OutOfDomainWarning, match="40.0% of the drive rows of layer 0") as rec:
        res = fit(
            net,
            data,
            strategy,
            epochs=2,
            batch_size=4,
            progress=False,
            callbacks=[DomainMonitor(threshold=0.3)],
        )
    assert len([w for w in rec if w.category is OutOfDomainWarning]) == 1  # once, not per epoch
    assert [m.extras["out_of_domain"] for m in res.history] == [
        pytest.approx([6 / 15]),
        pytest.approx([6 / 15]),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit(
            net,
            data,
            strategy,
            epochs=1,
            batch_size=4,
            progress=False,
            callbacks=[DomainMonitor(threshold=0.4)],
        )


class InterruptAt(Callback):
    def __init__(self, step: int) -> None:
        self.at = step

    def on_step(self, state, output):
        if state.step == self.at:
            raise Interrupted("power cut")


def _jitter(xb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return xb + 0.1 * torch.randn(xb.shape, generator=gen, dtype=xb.dtype)


def _gradient_run(tmp, *, resume=False, cut=None):
    # averaging over epochs 2-4 spans the cut: the checkpoint must carry epoch 2's weights
    callbacks = [WeightAveraging(last=3)] + ([InterruptAt(cut)] if cut else [])
    net = Linear()
    strategy = Gradient(optimizer=Adam(lr=0.05), schedule=qn.Cosine(min_lr=1e-3))
    res = fit(
        net,
        _data(),
        strategy,
        epochs=4,
        batch_size=8,
        seed=3,
        val_data=_data(seed=1),
        checkpoint_dir=tmp,
        resume=resume,
        progress=False,
        callbacks=callbacks,
        augment=_jitter,
    )
    return res, net


def test_gradient_through_fit_resumes_bit_identically(tmp_path):
    full, net_full = _gradient_run(tmp_path / "full")
    with pytest.raises(Interrupted):
        _gradient_run(tmp_path / "cut", cut=8)  # 3 steps per epoch: in the middle of epoch 3
    resumed, net_resumed = _gradient_run(tmp_path / "cut", resume=True)
    assert resumed.resumed_from_epoch == 2
    assert torch.equal(net_full.w, net_resumed.w)  # averaged over epochs 2 to 4, both runs
    assert [m.train_loss for m in full.history] == [m.train_loss for m in resumed.history]
    assert resumed.samples_seen == full.samples_seen


def test_kebab_case_loss_names_and_the_old_spelling_warns():
    assert type(as_loss("cross-entropy")).__name__ == "CrossEntropy"
    with pytest.warns(DeprecationWarning, match="'cross-entropy'"):
        assert type(as_loss("cross_entropy")).__name__ == "CrossEntropy"


def test_bad_fit_options_are_clear_errors():
    with pytest.raises(TypeError, match="AbstractStrategy"):
        fit(Linear(), _data(), "adam", progress=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="keep must be"):
        fit(Linear(), _data(), Scripted([]), keep="first", progress=False)
    with pytest.raises(ValueError, match="max_samples"):
        fit(Linear(), _data(), Scripted([]), max_samples=0, progress=False)


def test_there_is_one_epoch_loop_in_the_package():
    from pathlib import Path

    src = Path(qn.__file__).parent
    loops = [
        (p.relative_to(src).as_posix(), i)
        for p in sorted(src.rglob("*.py"))
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if line.lstrip().startswith("for epoch in")
    ]
    assert [f for f, _ in loops] == ["training/loop.py"], loops
