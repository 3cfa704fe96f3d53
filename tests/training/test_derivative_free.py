"""Derivative-free training of black-box networks.

CMA-ES, Nelder–Mead, differential evolution, particle swarm and ant colony (ACO_R).
"""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest
import torch

import quasineuron as qn
from quasineuron.training import (
    CMAES,
    AntColony,
    DifferentialEvolution,
    NelderMead,
    ParticleSwarm,
    optimize_weights,
    population_forward,
)


def black_tanh(u: np.ndarray) -> np.ndarray:
    """A module-level numpy function, so worker processes can unpickle it."""
    return np.tanh(u)


def black_box(**kw) -> qn.BlackBoxDevice:
    return qn.BlackBoxDevice(
        black_tanh, n_in=1, n_out=1, domain=qn.Box((-3.0,), (3.0,)), vectorized=True, **kw
    )


def device_accuracy(net, data) -> float:
    out = net(data.x.to(torch.float64), mode=qn.TrueDevice())
    return (out.argmax(dim=1) == data.y).double().mean().item()


XOR = qn.xor(n_per_corner=4, noise=0.1, seed=0)

# Each optimiser with its budget (candidate evaluations) on noisy XOR, a 2-4-2 black-box net.
CASES = [
    (CMAES(sigma0=1.0, popsize=16), 1000),
    (NelderMead(step=2.0), 1000),
    (DifferentialEvolution(popsize=16, init_std=0.5), 1000),
    (ParticleSwarm(popsize=16, init_std=0.5), 1000),
    (AntColony(n_ants=16, archive_size=20, init_std=0.5), 1000),
]
IDS = ["cmaes", "nelder_mead", "de", "pso", "aco"]


@pytest.mark.parametrize(("optimizer", "budget"), CASES, ids=IDS)
def test_each_optimiser_trains_a_black_box_net_above_chance(optimizer, budget):
    net = qn.DeviceNetwork(black_box(), (2, 4, 2), seed=0, dtype=torch.float64)
    # The starting weights score below the threshold: an optimiser that returned x0 fails.
    assert device_accuracy(net, XOR) < 0.75
    res = optimize_weights(
        net, XOR, optimizer=optimizer, budget=budget, seed=0, target_loss=0.05, progress=False
    )
    assert res.n_evaluations <= budget
    assert device_accuracy(net, XOR) >= 0.75  # chance is 0.5
    losses = [h.loss for h in res.history]
    assert losses == sorted(losses, reverse=True)  # best-so-far never gets worse
    # 16 samples x 6 neurons per candidate, all on the true device.
    assert res.device_evaluations == res.n_evaluations * 16 * 6


def test_population_forward_matches_one_network_per_candidate():
    net = qn.DeviceNetwork(black_box(), (3, 4, 2), seed=1, dtype=torch.float64)
    params = [p for p in net.parameters() if p.requires_grad]
    flat = torch.nn.utils.parameters_to_vector(params).detach()
    gen = torch.Generator().manual_seed(0)
    cands = flat + 0.3 * torch.randn(5, flat.numel(), generator=gen, dtype=torch.float64)
    x = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    out, rows = population_forward(net, cands, x, mode=qn.TrueDevice())
    assert rows == 5 * 7 * (4 + 2)
    expected = []
    for c in cands:
        torch.nn.utils.vector_to_parameters(c, params)
        expected.append(net(x, mode=qn.TrueDevice()))
    torch.testing.assert_close(out, torch.stack(expected))


def test_runs_are_seeded_and_leave_the_global_rng_alone():
    np.random.seed(123)
    state = np.random.get_state()[1].copy()
    results = []
    for _ in range(2):
        net = qn.DeviceNetwork(black_box(), (2, 2, 2), seed=0, dtype=torch.float64)
        res = optimize_weights(
            net, XOR, optimizer=CMAES(sigma0=0.5, popsize=8), budget=80, seed=3, progress=False
        )
        results.append(res.weights)
    torch.testing.assert_close(results[0], results[1])
    np.testing.assert_array_equal(np.random.get_state()[1], state)


def test_patience_stops_early_and_val_data_is_scored_apart():
    net = qn.DeviceNetwork(black_box(), (2, 2, 2), seed=0, dtype=torch.float64)
    res = optimize_weights(
        net,
        XOR,
        optimizer=DifferentialEvolution(popsize=8, init_std=1e-6, radius=1e-5),
        budget=10_000,
        patience=3,
        min_delta=1e-3,
        val_data=XOR,
        val_every=2,
        seed=0,
        progress=False,
    )
    assert res.stopped_early and res.n_evaluations < 10_000
    assert res.history[-1].val_accuracy is not None
    assert res.val_device_evaluations > 0
    assert res.to_dict()["n_evaluations"] == res.n_evaluations


def test_surrogate_mode_never_calls_the_device():
    dev = black_box()
    twin = qn.FormulaDevice(torch.tanh, n_in=1, n_out=1, domain=qn.Box((-3.0,), (3.0,)))
    net = qn.DeviceNetwork(dev, (2, 2, 2), twin=twin, seed=0, dtype=torch.float64)
    res = optimize_weights(
        net, XOR, optimizer=CMAES(popsize=4), budget=8, mode=qn.Surrogate(), progress=False
    )
    assert dev.n_evaluations == 0 and res.device_evaluations == 0


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: CMAES(sigma0=0), "sigma0"),
        (lambda: CMAES(popsize=1), "popsize"),
        (lambda: NelderMead(budget=0), "budget"),
        (lambda: DifferentialEvolution(popsize=2), "popsize"),
        (lambda: DifferentialEvolution(recombination=2.0), "recombination"),
        (lambda: ParticleSwarm(popsize=1), "popsize"),
        (lambda: ParticleSwarm(init_std=-1.0), "init_std"),
        (lambda: ParticleSwarm(omega=float("nan")), "omega"),
        (lambda: ParticleSwarm(budget=0), "budget"),
        (lambda: AntColony(n_ants=0), "n_ants"),
        (lambda: AntColony(archive_size=1), "archive_size"),
        (lambda: AntColony(q=0.0), "q"),
        (lambda: AntColony(xi=-0.5), "xi"),
        (lambda: AntColony(init_std=0.0), "init_std"),
    ],
)
def test_bad_specs_say_what_was_wrong(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_wrong_optimizer_type_is_rejected():
    net = qn.DeviceNetwork(black_box(), (2, 2), seed=0)
    with pytest.raises(TypeError, match="CMAES"):
        optimize_weights(net, XOR, optimizer="cma")  # type: ignore[arg-type]


def test_black_box_worker_pool_gives_the_serial_result():
    u = np.linspace(-3, 3, 64).reshape(-1, 1)
    with black_box(workers=2, min_parallel_batch=8, start_method="fork") as dev:
        y = dev.evaluate_numpy(u)
        assert dev._pool is not None  # the batch went to the pool
        copy = pickle.loads(pickle.dumps(dev))  # the pool itself is not pickled
    assert copy._pool is None and dev._pool is None
    np.testing.assert_array_equal(y, np.tanh(u))
    assert dev.n_evaluations == 64


def test_black_box_workers_need_a_picklable_function():
    with pytest.raises(TypeError, match="module level"):
        qn.BlackBoxDevice(lambda u: u, n_in=1, n_out=1, domain=qn.Box((-1.0,), (1.0,)), workers=2)


# ---------------------------------------------------------------------------------------------
# Particle swarm and ant colony on a convex quadratic: linear regression through a counting
# black box. The MSE of a linear neuron is a convex quadratic in (w, b), zero at the truth.

W_TRUE, B_TRUE = (1.5, -2.0, 0.5), 0.7


def identity_box() -> qn.BlackBoxDevice:
    return qn.BlackBoxDevice(
        lambda u: u, n_in=1, n_out=1, domain=qn.Box((-50.0,), (50.0,)), vectorized=True
    )


def regression_data() -> qn.ArrayDataset:
    x = torch.randn(12, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = x @ torch.tensor(W_TRUE, dtype=torch.float64)[:, None] + B_TRUE
    return qn.ArrayDataset(x, y)


def quadratic_run(optimizer, *, budget: int, seed: int = 0):
    dev = identity_box()
    net = qn.DeviceNetwork(dev, (3, 1), readout_affine=False, seed=0, dtype=torch.float64)
    data = regression_data()
    with torch.no_grad():
        start = torch.nn.functional.mse_loss(net(data.x, mode=qn.TrueDevice()), data.y).item()
    dev.n_evaluations = 0
    res = optimize_weights(
        net, data, optimizer=optimizer, loss="mse", budget=budget, seed=seed, progress=False
    )
    return res, start, dev.n_evaluations


SWARMS = [
    ParticleSwarm(popsize=16, init_std=0.5),
    AntColony(n_ants=16, archive_size=20, q=0.1, init_std=0.5),
]


@pytest.mark.parametrize("optimizer", SWARMS, ids=["pso", "aco"])
def test_swarm_optimisers_solve_a_convex_quadratic_within_the_budget(optimizer):
    # 1001 is a multiple of neither the swarm nor the archive: the last round is cut.
    res, start, rows = quadratic_run(optimizer, budget=1001)
    assert start > 1.0
    assert res.loss < 1e-6
    w = torch.cat([p.detach().reshape(-1) for p in res.network.parameters()])
    torch.testing.assert_close(
        w, torch.tensor([*W_TRUE, B_TRUE], dtype=torch.float64), atol=1e-3, rtol=0
    )
    # The budget is spent exactly, counted by the device itself: 12 samples x 1 neuron each.
    assert res.n_evaluations == 1001
    assert rows == 1001 * 12 == res.device_evaluations


@pytest.mark.parametrize("optimizer", SWARMS, ids=["pso", "aco"])
def test_swarm_optimisers_are_reproducible_for_a_seed(optimizer):
    np.random.seed(7)
    state = np.random.get_state()[1].copy()
    a, _, _ = quadratic_run(optimizer, budget=96, seed=3)
    b, _, _ = quadratic_run(optimizer, budget=96, seed=3)
    c, _, _ = quadratic_run(optimizer, budget=96, seed=4)
    torch.testing.assert_close(a.weights, b.weights, rtol=0, atol=0)
    assert [h.loss for h in a.history] == [h.loss for h in b.history]
    assert not torch.equal(a.weights, c.weights)  # the seed is used
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # global RNG untouched


def test_particle_swarm_without_nevergrad_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "nevergrad", None)  # makes `import nevergrad` fail
    with pytest.raises(ImportError, match=r"quasineuron\[swarm\]"):
        ParticleSwarm().run(lambda w: np.zeros(len(w)), np.zeros(2), budget=4, seed=0)


def test_committed_digits_comparison_is_consistent():
    """The committed comparison: same budget for all, means and stds of its own seeds."""
    import json
    import statistics
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "docs/results/derivative-free-digits/metrics.json"
    m = json.loads(path.read_text())
    assert set(m["optimizers"]) == {
        "cmaes",
        "nelder_mead",
        "differential_evolution",
        "particle_swarm",
        "ant_colony",
    }
    budget, n_train = m["budget"]["candidate_evaluations"], m["data"]["train"]
    for name, r in m["optimizers"].items():
        assert [run["seed"] for run in r["runs"]] == m["seeds"] and len(m["seeds"]) >= 3, name
        for run in r["runs"]:
            # scipy's differential evolution runs whole generations, so it may stop up to one
            # population short of the budget; the others spend it exactly.
            short = m["budget"]["population"] if name == "differential_evolution" else 0
            assert budget - short <= run["candidate_evaluations"] <= budget, name
            # Every candidate scored on the full training split through 10 device neurons.
            assert run["device_evaluations"] == run["candidate_evaluations"] * n_train * 10, name
        for key in ("val_accuracy", "test_accuracy"):
            values = [run[key] for run in r["runs"]]
            assert r[key]["mean"] == pytest.approx(statistics.fmean(values)), name
            assert r[key]["std"] == pytest.approx(statistics.stdev(values)), name
        # The chosen setting is the best of those tried on the validation split.
        tried = m["selection"]["per_optimizer"][name]["tried"]
        chosen = max(tried, key=lambda t: t["val_accuracy"])["optimizer"]
        assert r["optimizer"] == chosen == r["runs"][0]["optimizer"], name


@pytest.mark.slow  # about 6 s of CPU: 15 tiny optimiser runs on the digits
def test_compare_command_writes_the_committed_layout(tmp_path):
    """`blackbox_digits.py --compare` (tiny budget) writes what the committed file holds."""
    import importlib.util
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("bbd", root / "examples/blackbox_digits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    n_threads = torch.get_num_threads()
    try:
        module.main(["--compare", "--quick", "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(n_threads)
    new = json.loads((tmp_path / "derivative-free-digits/metrics.json").read_text())
    committed = json.loads((root / "docs/results/derivative-free-digits/metrics.json").read_text())
    assert new.keys() == committed.keys()
    assert new["optimizers"].keys() == committed["optimizers"].keys()
    for name, r in new["optimizers"].items():
        assert r.keys() == committed["optimizers"][name].keys()
        assert r["runs"][0].keys() == committed["optimizers"][name]["runs"][0].keys()
        assert r["runs"][0]["candidate_evaluations"] <= 128  # --quick's budget


@pytest.mark.parametrize(("optimizer", "budget"), CASES[:3], ids=IDS[:3])
def test_population_strategy_asks_the_same_candidates_as_optimize_weights(optimizer, budget):
    # full-data batches: each generation of the strategy is a round of optimize_weights
    budget = 200
    net_a = qn.DeviceNetwork(black_box(), (2, 4, 2), seed=0, dtype=torch.float64)
    res = optimize_weights(net_a, XOR, optimizer=optimizer, budget=budget, progress=False)
    net_b = qn.DeviceNetwork(black_box(), (2, 4, 2), seed=0, dtype=torch.float64)
    losses = []

    class Record(qn.training.Callback):
        def on_step(self, state, output):
            losses.append(output.loss)

    strategy = qn.training.Population(optimizer, budget=budget)
    out = qn.training.fit(
        net_b,
        XOR,
        strategy,
        epochs=len(res.history),
        batch_size=len(XOR),
        shuffle=False,  # the same order: the batch losses are summed in the same order
        progress=False,
        callbacks=[Record()],
    )
    assert strategy.evaluations == res.n_evaluations
    best_so_far = np.minimum.accumulate(np.array(losses, dtype=float))
    np.testing.assert_array_equal(best_so_far, [h.loss for h in res.history])
    assert out.history[-1].train_accuracy is not None


def test_population_strategy_trains_with_fit_and_refuses_checkpoints(tmp_path):
    net = qn.DeviceNetwork(black_box(), (2, 4, 2), seed=0, dtype=torch.float64)
    strategy = qn.training.Population(CMAES(sigma0=1.0, popsize=16), budget=800)
    qn.training.fit(net, XOR, strategy, epochs=50, batch_size=16, progress=False)
    assert device_accuracy(net, XOR) >= 0.75
    with pytest.raises(NotImplementedError, match="checkpoint"):
        qn.training.fit(
            net,
            XOR,
            qn.training.Population(CMAES(), budget=32),
            epochs=1,
            batch_size=16,
            checkpoint_dir=tmp_path,
            progress=False,
        )
