import pytest
import torch
from scale_helpers import ddp_digits_run, small_digits_net

import quasineuron as qn
from quasineuron.training.distributed import launch_local, train_distributed

EPOCHS, BATCH, SEED = 3, 101, 0  # 101 splits 51/50: uneven shards exercise the loss scaling


def test_train_distributed_without_a_process_group_says_how_to_launch(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    train, _ = qn.load_digits()
    with pytest.raises(RuntimeError, match="torchrun"):
        train_distributed(small_digits_net(), train.subset(range(8)), epochs=1)


def test_launch_local_rejects_bad_nprocs():
    with pytest.raises(ValueError, match="nprocs"):
        launch_local(print, nprocs=0)


@pytest.mark.slow  # two spawned ranks importing torch, 3 epochs of digits
def test_two_rank_ddp_matches_single_process_training(tmp_path, time_limit):
    launch_local(
        ddp_digits_run,
        str(tmp_path),
        nprocs=2,
        timeout=80,
        epochs=EPOCHS,
        batch_size=BATCH,
        seed=SEED,
    )
    train, test = qn.load_digits()
    net = small_digits_net()
    single = qn.train(
        net,
        train,
        val_data=test,
        epochs=EPOCHS,
        batch_size=BATCH,
        seed=SEED,
        lr=1e-2,
        progress=False,
        mode=qn.Direct(),
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for got in ranks:
        for k, v in net.state_dict().items():
            torch.testing.assert_close(got["state"][k], v, rtol=1e-6, atol=1e-8)
        for m_ddp, m_one in zip(got["history"], single.history, strict=True):
            assert abs(m_ddp["val_accuracy"] - m_one.val_accuracy) <= 0.002
            assert abs(m_ddp["train_accuracy"] - m_one.train_accuracy) <= 0.002
            assert m_ddp["train_loss"] == pytest.approx(m_one.train_loss, rel=1e-6)
    assert single.final.val_accuracy > 0.8  # it learned something


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_train_distributed_runs_on_cuda_with_one_rank(tmp_path, time_limit):
    launch_local(
        ddp_digits_run, str(tmp_path), nprocs=1, timeout=80, epochs=1, batch_size=64, seed=0
    )
    assert torch.load(tmp_path / "rank0.pt")["state"]["layers.0.connection.w"].is_cuda
