from __future__ import annotations

import math

import pytest
import torch

from quasineuron.data import ArrayDataset, load_digits, regression_1d, xor
from quasineuron.training import MSE, SGD, Adam, Cosine, CrossEntropy, train


class TinyMLP(torch.nn.Module):
    """Stand-in for a DeviceNetwork: same forward signature, mode accepted and recorded."""

    def __init__(self, n_in: int, n_hidden: int, n_out: int, *, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w1 = torch.nn.Parameter(torch.randn(n_in, n_hidden, generator=g) / n_in**0.5)
        self.b1 = torch.nn.Parameter(torch.zeros(n_hidden))
        self.w2 = torch.nn.Parameter(torch.randn(n_hidden, n_out, generator=g) / n_hidden**0.5)
        self.b2 = torch.nn.Parameter(torch.zeros(n_out))
        self.modes_seen: list[object] = []

    def forward(self, x: torch.Tensor, *, mode: object = None) -> torch.Tensor:
        self.modes_seen.append(mode)
        return torch.tanh(x @ self.w1 + self.b1) @ self.w2 + self.b2


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def test_digits_mlp_reaches_90_percent(digits):
    train_set, test_set = digits
    net = TinyMLP(64, 32, 10, seed=0)
    result = train(net, train_set, epochs=5, batch_size=32, lr=1e-2, seed=0, progress=False)
    with torch.no_grad():
        acc = (net(test_set.x).argmax(1) == test_set.y).double().mean().item()
    assert acc >= 0.9
    assert result.history[-1].train_accuracy > 0.9
    assert [m.epoch for m in result.history] == [1, 2, 3, 4, 5]
    assert result.history[-1].train_loss < result.history[0].train_loss
    assert result.best_epoch is None and not result.stopped_early


def test_mode_is_passed_through_untouched():
    mode = object()
    net = TinyMLP(2, 4, 2)
    train(net, xor(), mode=mode, epochs=2, batch_size=2, val_data=xor(), progress=False)
    assert len(net.modes_seen) == 2 * (2 + 2)  # 2 epochs x (2 train + 2 val batches)
    assert all(m is mode for m in net.modes_seen)


def test_global_rng_untouched_and_runs_are_seeded():
    data = xor(n_per_corner=8, noise=0.1)
    state = torch.get_rng_state()
    a = train(TinyMLP(2, 4, 2), data, epochs=2, batch_size=4, seed=1, progress=False)
    assert torch.equal(torch.get_rng_state(), state)
    b = train(TinyMLP(2, 4, 2), data, epochs=2, batch_size=4, seed=1, progress=False)
    c = train(TinyMLP(2, 4, 2), data, epochs=2, batch_size=4, seed=2, progress=False)
    assert torch.equal(a.network.w1, b.network.w1)
    assert not torch.equal(a.network.w1, c.network.w1)


def test_mse_with_one_hot_targets_and_regression():
    data = xor(n_per_corner=16, noise=0.05)
    res = train(
        TinyMLP(2, 8, 2), data, loss="mse", epochs=30, batch_size=16, lr=3e-2, progress=False
    )
    assert res.history[-1].train_loss < 0.5 * res.history[0].train_loss
    assert res.history[-1].train_accuracy == 1.0
    reg = regression_1d(128, seed=0)
    res = train(
        TinyMLP(1, 16, 1),
        reg,
        loss=MSE(),
        epochs=20,
        batch_size=32,
        lr=3e-2,
        val_data=regression_1d(32, seed=1),
        progress=False,
    )
    assert res.history[-1].train_accuracy is None and res.history[-1].val_accuracy is None
    assert res.history[-1].val_loss < 0.1


def test_cosine_schedule_decays_to_min_lr():
    sched = Cosine(min_lr=1e-4)
    assert sched.lr_at(1e-2, 0, 10) == 1e-2
    assert math.isclose(sched.lr_at(1e-2, 10, 10), 1e-4)
    res = train(
        TinyMLP(2, 4, 2),
        xor(),
        epochs=4,
        batch_size=4,
        optimizer=SGD(lr=0.1),
        schedule=Cosine(),
        progress=False,
    )
    lrs = [m.lr for m in res.history]
    # one step per epoch: the first epoch runs at the base rate
    assert lrs[0] == 0.1 and all(a > b for a, b in zip(lrs[:-1], lrs[1:], strict=True))


def test_callback_can_stop_training():
    seen = []
    res = train(
        TinyMLP(2, 4, 2),
        xor(),
        epochs=10,
        batch_size=4,
        progress=False,
        callbacks=[lambda m: seen.append(m.epoch) or m.epoch == 3],
    )
    assert seen == [1, 2, 3] and len(res.history) == 3 and res.stopped_early


def test_early_stopping_restores_the_best_weights():
    data = xor(n_per_corner=8, noise=0.1, seed=0)
    flipped = ArrayDataset(data.x, 1 - data.y, name="flipped")  # val loss rises as we learn
    snapshots = {}
    net = TinyMLP(2, 8, 2, seed=0)

    def snapshot(m):
        snapshots[m.epoch] = {k: v.clone() for k, v in net.state_dict().items()}

    res = train(
        net,
        data,
        val_data=flipped,
        patience=2,
        epochs=50,
        batch_size=8,
        lr=5e-2,
        callbacks=[snapshot],
        progress=False,
    )
    val_losses = [m.val_loss for m in res.history]
    assert res.stopped_early and len(res.history) == res.best_epoch + 2 < 50
    assert res.best_epoch == 1 + val_losses.index(min(val_losses))
    for k, v in net.state_dict().items():
        assert torch.equal(v, snapshots[res.best_epoch][k])
    assert not torch.equal(net.w1, snapshots[len(res.history)]["w1"])


def test_bad_options_are_clear_errors():
    net, data = TinyMLP(2, 4, 2), xor()
    with pytest.raises(ValueError, match="patience needs val_data"):
        train(net, data, patience=2, progress=False)
    with pytest.raises(ValueError, match="conflicts with"):
        train(net, data, optimizer=Adam(lr=1e-3), lr=1e-2, progress=False)
    with pytest.raises(ValueError, match="unknown optimizer"):
        train(net, data, optimizer="lbfgs", progress=False)
    with pytest.raises(ValueError, match="unknown loss"):
        train(net, data, loss="hinge", progress=False)
    with pytest.raises(ValueError, match="epochs must be"):
        train(net, data, epochs=0, progress=False)
    with pytest.raises(ValueError, match="resume=True needs checkpoint_dir"):
        train(net, data, resume=True, progress=False)
    with pytest.raises(ValueError, match="labels need 3 classes"):
        train(net, ArrayDataset(data.x, torch.tensor([0, 1, 2, 0])), progress=False)
    with pytest.raises(ValueError, match="label_smoothing"):
        CrossEntropy(label_smoothing=1.5)
    with pytest.raises(ValueError, match="nesterov"):
        SGD(nesterov=True)


def test_non_finite_loss_raises():
    net = TinyMLP(2, 4, 2)
    with torch.no_grad():
        net.b2.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        train(net, xor(), epochs=1, progress=False)


def test_trains_under_no_grad_context_and_restores_train_flag():
    net = TinyMLP(2, 4, 2).eval()
    with torch.no_grad():
        res = train(net, xor(), epochs=2, batch_size=4, lr=0.1, progress=False)
    assert res.history[-1].train_loss != res.history[0].train_loss
    assert not net.training


def test_progress_bar_shows_loss_and_accuracy(capsys):
    train(TinyMLP(2, 4, 2), xor(n_per_corner=4), epochs=1, batch_size=4, progress=True)
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and "loss=" in err and "acc=" in err


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_adam_is_fused_on_cpu_and_steps_as_the_default_adam(weight_decay):
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(30, 7, generator=gen, dtype=torch.float64)
    ours, ref = torch.nn.Parameter(w.clone()), torch.nn.Parameter(w.clone())
    opt = Adam(lr=1e-2, weight_decay=weight_decay).build([ours])
    opt_ref = torch.optim.Adam([ref], lr=1e-2, weight_decay=weight_decay)
    assert opt.defaults["fused"] is True
    for _ in range(40):
        g = torch.randn(30, 7, generator=gen, dtype=torch.float64)
        ours.grad, ref.grad = g.clone(), g.clone()
        opt.step()
        opt_ref.step()
    assert (ours - ref).abs().max() < 1e-12
    assert (ours - w).abs().max() > 0.1  # it moved
