"""Score a trained reaction-neuron network as one compiled mass-action network.

A :class:`~quasineuron.network.DeviceNetwork` of reaction neurons (``reaction-relu``,
``reaction-sigmoid``, ``reaction-saturating``) with linear connections and no affine read-out
is compiled into one reaction network (:func:`compile_network`) and driven to steady state
from random positive concentrations for every test image; its class is compared with the
closed form's (the true device's neurons reach the closed form's steady state).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from quasineuron.chemistry.compile import closed_form, compile_network, network_weights
from quasineuron.chemistry.network import MassAction
from quasineuron.chemistry.simulate import steady_state

__all__ = ["CHEMISTRY_ACTIVATIONS", "score_chemistry"]

#: Device name -> (activation of the compiled neuron, upper bound of its concentration). The
#: sigmoid and saturating neurons stay in [0, 1], and the steady-state solver takes each
#: species' root in that interval; the smoothed ReLU is unbounded (None).
CHEMISTRY_ACTIVATIONS: dict[str, tuple[str, float | None]] = {
    "reaction-relu": ("relu", None),
    "reaction-sigmoid": ("sigmoid", 1.0),
    "reaction-saturating": ("saturating", 1.0),
}

#: Test images simulated together: the state is (chunk, n_species) in float64, about 3.6 MB
#: for a 784-100-10 network, and the kinetics' work arrays are a few times that.
CHUNK = 500


def score_chemistry(
    net: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    device_name: str,
    eps: float,
    seed: int,
    name: str = "network",
) -> dict[str, Any]:
    """Compile ``net`` to chemistry and score it on ``(x, y)`` at steady state, in float64.

    Args:
        net: A trained :class:`~quasineuron.network.DeviceNetwork` of reaction neurons with
            linear connections and ``readout_affine=False``.
        x: Inputs, shape (n, n_0), all ≥ 0 (they are the input species' concentrations).
        y: Labels, shape (n,).
        device_name: The neuron's device name, a key of :data:`CHEMISTRY_ACTIVATIONS`.
        eps: The neurons' smoothing ε.
        seed: Seed of the random initial concentrations.
        name: Name of the compiled model.

    Returns:
        ``accuracy`` (the chemistry's), ``accuracy_closed_form``, ``agreement`` (fraction of
        images whose class equals the closed form's), ``max_abs_output_difference``
        (chemistry − closed form), ``max_abs_dxdt``, ``all_converged``, ``max_steps``, the
        compiled network's size and ``seconds``.

    Raises:
        ValueError: If the device is not a reaction neuron, the network does not compile
            (affine read-out, non-linear connection) or an input is negative.
    """
    if device_name not in CHEMISTRY_ACTIVATIONS:
        raise ValueError(
            f"device {device_name!r} has no chemistry to compile; evaluation.chemistry needs "
            f"one of {sorted(CHEMISTRY_ACTIVATIONS)}"
        )
    activation, upper = CHEMISTRY_ACTIVATIONS[device_name]
    x64 = torch.as_tensor(x).to(torch.float64)
    if bool((x64 < 0).any()):
        raise ValueError(
            "the inputs are the input species' concentrations and must be >= 0; got a "
            f"minimum of {float(x64.min()):.3g} (score unnormalised pixels in [0, 1])"
        )
    weights, biases = network_weights(net)
    weights = [w.to(torch.float64) for w in weights]
    biases = [b.to(torch.float64) for b in biases]
    closed = closed_form(weights, biases, x64, eps=eps, activation=activation)
    cn = compile_network(weights, biases, eps=eps, activation=activation, name=name)
    kin = MassAction(cn.network)
    gen = torch.Generator().manual_seed(seed)
    outs, steps, dxdt, converged = [], 0, 0.0, True
    t0 = time.perf_counter()
    for part in x64.split(CHUNK):
        if upper is None:
            r = steady_state(kin, cn.initial_state(part, generator=gen))
        else:
            x0 = cn.initial_state(part, generator=gen, low=0.01, high=0.99)
            r = steady_state(kin, x0, upper=upper)
        outs.append(cn.outputs(r.x))
        steps = max(steps, r.steps)
        dxdt = max(dxdt, float(r.residual.max()))
        converged = converged and bool(r.converged.all())
    seconds = time.perf_counter() - t0
    chem = torch.cat(outs)
    y = torch.as_tensor(y)
    cls = chem.argmax(1)
    out: dict[str, Any] = {
        "accuracy": float((cls == y).double().mean()),
        "accuracy_closed_form": float((closed.argmax(1) == y).double().mean()),
        "agreement": float((cls == closed.argmax(1)).double().mean()),
        "max_abs_output_difference": float((chem - closed).abs().max()),
        "n_test": int(y.shape[0]),
        "activation": activation,
        "eps": float(eps),
        **cn.network.describe(),
        "solver": "implicit steps of growing length to steady state, float64",
        "initial_state": "random uniform positive concentrations for non-input species",
        "max_steps": steps,
        "max_abs_dxdt": dxdt,
        "all_converged": converged,
        "seconds": seconds,
    }
    return out
