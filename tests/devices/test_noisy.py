import pickle

import pytest
import torch

import quasineuron as qn


def _noisy(seed: int = 0) -> qn.Noisy:
    return qn.Noisy(qn.ideal_neuron("tanh", limit=2.0), std=0.05, seed=seed)


def test_noise_has_the_declared_std_around_the_device() -> None:
    u = torch.zeros(20_000, 1, dtype=torch.float64)
    y = _noisy()(u)
    assert abs(float(y.mean())) < 3 * 0.05 / 20_000**0.5 * 2
    assert abs(float(y.std()) - 0.05) < 0.05 * 0.03


def test_a_fresh_wrapper_replays_its_noise_and_a_pickle_continues_it() -> None:
    u = torch.linspace(-1, 1, 7, dtype=torch.float64).reshape(-1, 1)
    a, b = _noisy(seed=3), _noisy(seed=3)
    torch.testing.assert_close(a(u), b(u))
    copy = pickle.loads(pickle.dumps(a))
    torch.testing.assert_close(copy(u), a(u))
    assert not torch.equal(_noisy(seed=4)(u), _noisy(seed=3)(u))


def test_it_is_stochastic_and_passes_the_public_check() -> None:
    dev = _noisy()
    assert dev.stochastic and not dev.device.stochastic
    report = qn.check_device(dev)
    assert "rows" in report.skipped and "gradients" in report.skipped
    assert "contract" in report.passed and "pickle" in report.passed


def test_std_must_be_positive() -> None:
    with pytest.raises(ValueError, match="std must be a number > 0"):
        qn.Noisy(qn.ideal_neuron("tanh"), std=0.0)
