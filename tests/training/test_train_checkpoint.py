from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors import safe_open

from quasineuron.data import ArrayDataset
from quasineuron.errors import StoreCorruptError
from quasineuron.training import SGD, Adam, Cosine, train
from quasineuron.training.checkpoint import CHECKPOINT_NAME, load_checkpoint


class Interrupted(Exception):
    pass


class TinyNet(torch.nn.Module):
    def __init__(self, *, seed: int, fail_at_call: int | None = None):
        super().__init__()
        self.fail_at_call = fail_at_call
        g = torch.Generator().manual_seed(seed)
        self.hidden = torch.nn.Linear(6, 8)
        self.out = torch.nn.Linear(8, 3)
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x: torch.Tensor, *, mode: object = None) -> torch.Tensor:
        self.calls += 1
        if self.fail_at_call is not None and int(self.calls) == self.fail_at_call:
            raise Interrupted("power cut")
        return self.out(torch.tanh(self.hidden(x)))


def _data(n: int, seed: int) -> ArrayDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    return ArrayDataset(x, (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long(), name=f"d{seed}")


TRAIN, VAL = _data(40, 0), _data(16, 1)


def _run(tmp, *, epochs, seed_init, resume=False, optimizer=None, net=None, **kw):
    kw = {"schedule": Cosine(min_lr=1e-3), "patience": 10, **kw}
    return train(
        net or TinyNet(seed=seed_init),
        TRAIN,
        val_data=VAL,
        epochs=epochs,
        batch_size=8,
        optimizer=optimizer or Adam(lr=0.05),
        seed=3,
        checkpoint_dir=tmp,
        resume=resume,
        progress=False,
        **kw,
    )


@pytest.mark.parametrize("optimizer", [Adam(lr=0.05), SGD(lr=0.05, momentum=0.9)])
def test_resumed_run_is_bit_identical_to_an_uninterrupted_one(tmp_path, optimizer):
    opts = {"optimizer": optimizer, "schedule": None}
    full = _run(tmp_path / "full", epochs=3, seed_init=0, **opts)
    _run(tmp_path / "part", epochs=2, seed_init=0, **opts)
    resumed = _run(tmp_path / "part", epochs=3, seed_init=99, resume=True, **opts)
    assert resumed.resumed_from_epoch == 2 and len(resumed.history) == 3
    a, b = full.network.state_dict(), resumed.network.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    strip = [{**m.to_dict(), "seconds": 0} for m in full.history]
    assert strip == [{**m.to_dict(), "seconds": 0} for m in resumed.history]
    assert full.best_epoch == resumed.best_epoch
    # the checkpoints agree too (optimiser state included)
    ca = load_checkpoint(tmp_path / "full" / CHECKPOINT_NAME)
    cb = load_checkpoint(tmp_path / "part" / CHECKPOINT_NAME)
    for idx, state in ca.optimizer_state["state"].items():
        for key, value in state.items():
            other = cb.optimizer_state["state"][idx][key]
            assert torch.equal(value, other) if torch.is_tensor(value) else value == other


def test_run_with_schedule_interrupted_mid_epoch_resumes_bit_identically(tmp_path):
    full = _run(tmp_path / "full", epochs=3, seed_init=0)
    # 5 training + 2 validation batches per epoch: call 17 is in the middle of epoch 3
    with pytest.raises(Interrupted):
        _run(tmp_path / "cut", epochs=3, seed_init=0, net=TinyNet(seed=0, fail_at_call=17))
    assert load_checkpoint(tmp_path / "cut" / CHECKPOINT_NAME).meta["epoch"] == 2
    resumed = _run(tmp_path / "cut", epochs=3, seed_init=1, resume=True)
    assert resumed.resumed_from_epoch == 2
    for k, v in full.network.state_dict().items():
        assert torch.equal(v, resumed.network.state_dict()[k]), k
    with pytest.raises(ValueError, match="epochs: checkpoint 3, now 4"):
        _run(tmp_path / "cut", epochs=4, seed_init=1, resume=True)


def test_checkpoint_is_safetensors_with_json_metadata(tmp_path):
    _run(tmp_path, epochs=1, seed_init=0)
    path = tmp_path / CHECKPOINT_NAME
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        meta = json.loads(f.metadata()["quasineuron"])
    assert {"model/hidden.weight", "model/calls", "generator/state"} <= keys
    assert any(k.startswith("optimizer/0/") for k in keys)
    assert any(k.startswith("best_model/") for k in keys)
    assert meta["meta"]["epoch"] == 1 and len(meta["meta"]["history"]) == 1
    assert json.loads((tmp_path / "history.json").read_text())[0]["epoch"] == 1
    assert b"pickle" not in path.read_bytes()[:64]


def test_history_json_is_strict_json_when_a_loss_is_not_finite(tmp_path):
    class NaNWhenEvaluating(TinyNet):
        def forward(self, x, *, mode=None):
            out = super().forward(x, mode=mode)
            return out if self.training else out * torch.nan

    _run(tmp_path, epochs=1, seed_init=0, net=NaNWhenEvaluating(seed=0))

    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    history = json.loads((tmp_path / "history.json").read_text(), parse_constant=refuse)
    assert history[0]["val_loss"] is None  # NaN is written as null


def test_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    _run(tmp_path, epochs=1, seed_init=0, schedule=None)
    path = tmp_path / CHECKPOINT_NAME
    before = path.read_bytes()

    def crash(src, dst):
        raise OSError("simulated crash during rename")

    with monkeypatch.context() as m:
        m.setattr(os, "replace", crash)
        with pytest.raises(OSError, match="simulated crash"):
            _run(tmp_path, epochs=2, seed_init=0, schedule=None, resume=True)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME, "history.json"]
    # the surviving checkpoint still resumes to the uninterrupted result
    resumed = _run(tmp_path, epochs=2, seed_init=5, schedule=None, resume=True)
    full = _run(tmp_path / "full", epochs=2, seed_init=0, schedule=None)
    for k, v in full.network.state_dict().items():
        assert torch.equal(v, resumed.network.state_dict()[k])


def test_resume_without_checkpoint_starts_fresh_and_finished_run_is_a_no_op(tmp_path):
    first = _run(tmp_path, epochs=2, seed_init=0, resume=True)
    assert first.resumed_from_epoch == 0 and len(first.history) == 2
    again = _run(tmp_path, epochs=2, seed_init=7, resume=True)
    assert again.resumed_from_epoch == 2 and len(again.history) == 2
    for k, v in first.network.state_dict().items():
        assert torch.equal(v, again.network.state_dict()[k])


def test_resume_with_other_settings_or_network_is_refused(tmp_path):
    _run(tmp_path, epochs=1, seed_init=0, schedule=None)
    with pytest.raises(ValueError, match="optimizer: checkpoint 'Adam.*now 'SGD"):
        _run(tmp_path, epochs=2, seed_init=0, schedule=None, resume=True, optimizer=SGD())

    class Wider(TinyNet):
        def __init__(self, *, seed):
            super().__init__(seed=seed)
            self.hidden = torch.nn.Linear(6, 9)
            self.out = torch.nn.Linear(9, 3)

    with pytest.raises(ValueError, match="different network"):
        _run(tmp_path, epochs=2, seed_init=0, schedule=None, resume=True, net=Wider(seed=0))


def test_corrupt_checkpoint_is_reported(tmp_path):
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"not a checkpoint")
    with pytest.raises(StoreCorruptError, match="delete it"):
        _run(tmp_path, epochs=1, seed_init=0, resume=True)
