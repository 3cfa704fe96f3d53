"""A mode is one class: defined here, outside the package, it runs in networks and evaluate.

Also: the one name of each built-in mode, and the registry that turns names back into modes.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from network_devices import tanh_device, wrong_twin

import quasineuron as qn
from quasineuron.data import ArrayDataset
from quasineuron.evaluation import evaluate, mode_name
from quasineuron.network import (
    MODES,
    AbstractMode,
    DeviceLayer,
    DeviceNetwork,
    Direct,
    PhysicsAware,
    Surrogate,
    TrueDevice,
    mode_from_name,
)

F64 = torch.float64


@dataclass(frozen=True)
class NoisyTwin(AbstractMode):
    """The twin's output plus seeded Gaussian noise: a crude model of a noisy chip."""

    std: float = 0.1
    seed: int = 0
    name = "noisy-twin"
    uses_true_device = False
    needs_twin = True

    def evaluate(self, layer, u):
        gen = torch.Generator().manual_seed(self.seed)
        noise = torch.randn(u.shape[0], layer.twin.n_out, generator=gen, dtype=F64)
        return layer.twin(u) + self.std * noise.to(u)


def test_a_mode_defined_outside_the_package_runs_a_layer(gen):
    layer = DeviceLayer(3, 4, device=tanh_device(), twin=wrong_twin(), dtype=F64)
    x = torch.rand(5, 3, generator=gen, dtype=F64)
    noise = torch.randn(20, 1, generator=torch.Generator().manual_seed(7), dtype=F64)
    expected = layer(x, mode=Surrogate()) + 0.3 * noise.reshape(5, 4)
    torch.testing.assert_close(layer(x, mode=NoisyTwin(std=0.3, seed=7)), expected)


def test_a_mode_defined_outside_the_package_trains_and_is_evaluated(gen):
    net = DeviceNetwork(tanh_device(), (3, 4, 2), twin=wrong_twin(), dtype=F64)
    x = torch.rand(8, 3, generator=gen, dtype=F64)
    # gradients flow through the twin: without noise, exactly Surrogate()'s
    net.check_mode(NoisyTwin(), training=True)
    net(x, mode=NoisyTwin(std=0.0)).sum().backward()
    noisy = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    net(x, mode=Surrogate()).sum().backward()
    for a, b in zip(noisy, (p.grad for p in net.parameters()), strict=True):
        torch.testing.assert_close(a, b)

    labels = net(x, mode=Surrogate()).argmax(1)
    report = evaluate(net, ArrayDataset(x, labels), modes=(Surrogate(), NoisyTwin(std=0.0)))
    assert report.accuracy == {"surrogate": 1.0, "noisy-twin": 1.0}
    result = qn.train(
        net, ArrayDataset(x, labels), mode=NoisyTwin(), epochs=1, batch_size=4, progress=False
    )
    assert len(result.history) == 1


def test_a_new_mode_inherits_the_twin_check():
    net = DeviceNetwork(tanh_device(name="chip-9"), (3, 2))
    with pytest.raises(ValueError, match="(?s)NoisyTwin.*'chip-9'.*fit_surrogate"):
        net(torch.rand(2, 3), mode=NoisyTwin())


def test_a_mode_class_without_a_name_fails_when_defined():
    with pytest.raises(TypeError, match="name = "):

        class Nameless(AbstractMode):
            uses_true_device = False
            needs_twin = False

            def evaluate(self, layer, u):
                return u

    with pytest.raises(TypeError, match="kebab-case.*'snake-named'"):

        class SnakeNamed(AbstractMode):
            name = "snake_named"
            uses_true_device = False
            needs_twin = False

            def evaluate(self, layer, u):
                return u

    with pytest.raises(TypeError, match="needs_twin"):

        class Unsure(AbstractMode):
            name = "unsure"
            uses_true_device = False

            def evaluate(self, layer, u):
                return u


BUILT_IN = {"surrogate": Surrogate(), "device": TrueDevice(), "physics-aware": PhysicsAware()}
BUILT_IN["direct"] = Direct()


def test_each_built_in_mode_has_one_name_used_by_reports_and_the_registry():
    assert list(MODES) == list(BUILT_IN)
    for name, mode in BUILT_IN.items():
        assert mode.name == name
        assert mode_name(mode) == name  # the report key
        assert mode_from_name(name) == mode
    with pytest.warns(DeprecationWarning, match="'physics-aware' instead"):
        assert mode_from_name("physics_aware") == PhysicsAware()  # older spelling
    assert Direct(adjoint=True).name == "direct"


def test_mode_from_name_lists_the_names_it_knows():
    with pytest.raises(ValueError, match="'surrogate', 'device', 'physics-aware', 'direct'"):
        mode_from_name("true_device")
    with pytest.raises(TypeError, match="string"):
        mode_from_name(TrueDevice)
    with pytest.raises(TypeError):
        MODES["noisy-twin"] = NoisyTwin  # read-only: no global registration
