"""Training that meets non-finite values says which device, layer and drives, not the rate."""

import pytest
import torch

import quasineuron as qn


def _fails_above(u: torch.Tensor) -> torch.Tensor:
    # a device with a failure region inside its declared domain [-4, 4]: NaN above u = 1.5
    return torch.where(u > 1.5, torch.full_like(u, float("nan")), torch.tanh(u))


def _data(n: int = 64) -> qn.ArrayDataset:
    gen = torch.Generator().manual_seed(0)
    return qn.ArrayDataset(
        torch.rand(n, 4, generator=gen), torch.randint(0, 2, (n,), generator=gen)
    )


def _net(init_gain: float) -> qn.DeviceNetwork:
    dev = qn.FormulaDevice(
        _fails_above, n_in=1, n_out=1, domain=qn.Box((-4.0,), (4.0,)), name="fails-above"
    )
    return qn.DeviceNetwork(dev, (4, 8, 2), init_gain=init_gain, seed=0)


def test_a_device_failing_at_its_drives_is_named_with_layer_and_drives() -> None:
    net = _net(init_gain=8.0)  # large weights: some hidden drives land above 1.5
    with pytest.raises(FloatingPointError) as info:
        qn.train(net, _data(), mode=qn.Direct(), epochs=1, batch_size=16, progress=False)
    msg = str(info.value)
    assert msg.startswith("training loss became nan at step 1 of epoch 1")
    assert "device 'fails-above' in layer 0 of 2 returned non-finite outputs" in msg
    assert "InputClip" in msg and "learning rate" not in msg
    # the drives named are the failing ones: all above the failure threshold
    low = float(msg.split("with drives from [")[1].split("]")[0])
    assert low > 1.5


def test_the_weights_that_failed_are_left_as_they_were() -> None:
    net = _net(init_gain=8.0)
    before = {k: v.clone() for k, v in net.connection_state_dict().items()}
    with pytest.raises(FloatingPointError):
        qn.train(net, _data(), mode=qn.Direct(), epochs=1, batch_size=16, progress=False)
    for k, v in net.connection_state_dict().items():
        torch.testing.assert_close(v, before[k])  # stopped before the step that broke them


def test_a_network_that_stays_finite_explains_nothing() -> None:
    net = _net(init_gain=0.1)  # drives stay small
    assert net.explain_nonfinite(_data().x, mode=qn.Direct()) is None
