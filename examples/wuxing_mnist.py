"""Wuxing networks on MNIST: train with method 1, method 2, mixed, BPTT or the steady-state twin,
then score on the time simulation.

Two steps, so that training (CPU) and scoring (the time simulation of 10,000 test images, which
a GPU does in seconds) can run on different machines:

    python examples/wuxing_mnist.py train --name wuxing-model1-method2 --model MODEL1 \\
        --method method2 --data-dir <mnist folder> --out docs/results
    python examples/wuxing_mnist.py score docs/results/wuxing-model1-method2 --data-dir <...>

``train`` holds out the last 6,000 training images for validation (the epoch kept is chosen on
it, scored on the steady state) and never reads the test set. It writes ``model.safetensors``
(coefficients and per-neuron K), ``model.json`` (wiring, settings, training history) and a
checkpoint after every epoch (left only by a run that did not end normally). ``validate``
scores trained runs on the validation split (on the time simulation or the steady state;
appended to ``validation.json``), for choices between runs. ``average`` writes a run whose
coefficients are the mean of those of several runs of one network (fine-tuned from a common
ancestor). ``keep`` copies the candidate run that validates best to a new name, with the
choice recorded. ``score`` reads the test set once and writes ``metrics.json`` with
``accuracy.device`` (the time simulation), ``accuracy.surrogate`` (the steady-state twin), their
gap and the agreement of the two predictions.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from quasineuron.data import RandomShift
from quasineuron.data.mnist import load_mnist
from quasineuron.devices.ode import Heun
from quasineuron.surrogate.io import load_surrogate, save_surrogate
from quasineuron.training.config import Cosine
from quasineuron.wuxing import (
    MODEL1_SIZES,
    MODEL2_SIZES,
    Backprop,
    Method1,
    Method2,
    Mixed,
    SimConfig,
    TargetCoding,
    WuxingNetwork,
    adder_wiring,
    evaluate,
    model_wiring,
    predict,
    train,
)
from quasineuron.wuxing.twin import NeuronTwin, fit_neuron_twin

N_VAL = 6000


def load_twin(folder: str | Path) -> NeuronTwin:
    """The neuron twin saved by the ``twin`` command."""
    folder = Path(folder)
    info = json.loads((folder / "twin.json").read_text())
    return NeuronTwin(torch.tensor(info["gain"]), load_surrogate(folder / "correction.safetensors"))


def cmd_twin(a: argparse.Namespace) -> None:
    torch.set_num_threads(a.threads)
    net = WuxingNetwork(model_wiring("MODEL1"))
    t0 = time.perf_counter()
    twin, rep = fit_neuron_twin(net, n_samples=a.n_samples, max_steps=a.max_steps, seed=a.seed)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    save_surrogate(twin.correction, out / "correction.safetensors")
    info = {"gain": twin.gain.tolist(), "report": vars(rep) if hasattr(rep, "__dict__") else
            {f: getattr(rep, f) for f in rep.__dataclass_fields__},
            "fit_seconds": time.perf_counter() - t0, "n_samples": a.n_samples,
            "max_steps": a.max_steps, "seed": a.seed,
            "command": " ".join(["python", "examples/wuxing_mnist.py", *sys.argv[1:]])}  # fmt: skip
    (out / "twin.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info["report"]))


def build(spec: dict[str, Any], config: SimConfig, device: str = "cpu") -> WuxingNetwork:
    """The network described by ``spec`` (the ``network`` entry of model.json)."""
    if spec["wiring"] == "adder":
        sizes = MODEL1_SIZES if spec["model"] == "MODEL1" else MODEL2_SIZES
        fan_in, receiving = spec["fan_in"], spec["receiving"]
        # fill every adder: a receiving interface sums up to fan_in links
        ratios = [min(1.0, 0.999 * fan_in * receiving / n) for n in sizes[:-1]]
        wiring = adder_wiring(
            sizes, link_ratio=ratios, fan_in=fan_in, receiving=receiving, seed=spec["seed"]
        )
    else:
        wiring = model_wiring(spec["model"], seed=spec["seed"])
    return WuxingNetwork(wiring, config=config, c0=spec["c0"]).to(device)


def _split(data_dir: str | None) -> tuple[Any, Any]:
    train_set, test_set = load_mnist(data_dir)
    x, y = torch.as_tensor(train_set.x), torch.as_tensor(train_set.y)
    return (x[:-N_VAL], y[:-N_VAL], x[-N_VAL:], y[-N_VAL:]), test_set


def _method(a: argparse.Namespace) -> Method1 | Method2 | Mixed | Backprop:
    target = TargetCoding(kind="softmax", beta=a.beta, error_scale=a.error_scale)
    c_range = (-a.c_max, a.c_max)
    est = a.estimate
    m2 = Method2(kt=a.kt, eta=a.eta, c_range=c_range, target=target, estimate=est,
                 step=a.m2_step, reversal=a.reversal)  # fmt: skip
    m1 = Method1(kt=a.kt, eta=a.eta1, eta_i=a.eta_i, target=target, estimate=est)
    if a.method == "method2":
        return m2
    if a.method == "method1":
        return m1
    if a.method == "mixed":
        return Mixed(method1=m1, method2=m2, target=target, estimate=est)
    through = "time" if a.method == "bptt" else "steady"
    return Backprop(lr=a.lr, c_range=c_range, target=target, through=through,
                    weight_decay=a.weight_decay, k_lr=a.k_lr)  # fmt: skip


def _init_info(init: str | None) -> dict[str, Any] | None:
    """Provenance of the run a continued run started from: its history, its command, the cost
    of the whole chain up to it, and the same summary of the run it started from (``init``)."""
    if not init:
        return None
    doc = json.loads((Path(init) / "model.json").read_text())
    prev = doc.get("init") or {}
    return {
        "name": doc["name"],
        "history": doc["history"],
        "train_seconds": doc["train_seconds"] + prev.get("train_seconds", 0.0),
        "train_samples_seen": doc["train_samples_seen"] + prev.get("train_samples_seen", 0),
        "command": doc["command"],
        "init": prev or None,
    }


def _init_spec(init: str, model: str | None, fan_in: int | None) -> dict[str, Any]:
    """The network of the run in ``init`` (its wiring seed included: ``--seed`` then only
    seeds the training); ``--model``/``--fan-in``, where given (not None), must agree with it."""
    spec = json.loads((Path(init) / "model.json").read_text())["network"]
    given = {"model": model, "fan_in": fan_in}
    clash = [k for k, v in given.items() if v is not None and v != spec[k]]
    if clash:
        raise SystemExit(f"--init {init}: its network {spec} differs in {clash} from the flags")
    return spec


def cmd_train(a: argparse.Namespace) -> None:
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    (xtr, ytr, xva, yva), _ = _split(a.data_dir)
    if a.n_train:
        xtr, ytr = xtr[: a.n_train], ytr[: a.n_train]
    xva, yva = xva[: a.n_val], yva[: a.n_val]
    # adjoint gradients need the state clip off (SimConfig); every other run keeps the default
    adjoint = {"adjoint": True, "clip": None} if a.adjoint else {}
    config = SimConfig(
        T=a.T, solver=_solver(a.dt, a.compile), readout=a.readout, input_scale=a.input_scale,
        **adjoint,
    )  # fmt: skip
    if a.init:  # a continued run keeps the wiring of the run it starts from
        spec = _init_spec(a.init, a.model, a.fan_in)
    else:
        fan_in = a.fan_in or 0
        spec = {
            "model": a.model or "MODEL1",
            "wiring": "adder" if fan_in else "one-to-one",
            "fan_in": fan_in,
            "receiving": 3,
            "seed": a.seed,
            "c0": a.c0,
        }
    a.model, a.fan_in = spec["model"], spec["fan_in"]  # the args saved with the run: its network
    net = build(spec, config, a.device)
    if a.c_init == "uniform":
        with torch.no_grad():
            g = torch.Generator().manual_seed(a.seed)
            net.c.copy_(torch.empty(net.c.shape).uniform_(-a.c0, a.c0, generator=g))
    if a.init:
        state = load_file(str(Path(a.init) / "model.safetensors"))
        with torch.no_grad():
            net.c.copy_(state["c"].to(a.device))
            net.K.copy_(state["K"].to(a.device))
            net.update_rest_states()
    method = _method(a)
    init_info = _init_info(a.init)  # before a run that continues in place overwrites it
    out = Path(a.out) / a.name
    out.mkdir(parents=True, exist_ok=True)
    history: list[dict[str, Any]] = []
    t0 = time.perf_counter()

    def save(tag: str) -> None:
        save_file({"c": net.c.detach().cpu().contiguous(), "K": net.K.detach().cpu().contiguous()},
                  str(out / f"{tag}.safetensors"))  # fmt: skip

    def on_epoch(epoch: int, acc: float | None) -> None:
        history.append({"epoch": epoch, f"val_accuracy_{a.val_mode}": acc,
                        "seconds": time.perf_counter() - t0,
                        "images": len(losses) * a.batch_size})  # fmt: skip
        save("checkpoint")
        print(f"epoch {epoch}: val {acc:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)

    losses: list[float] = []

    def on_step(i: int, rep: Any) -> None:
        losses.append(rep.loss)
        if i % a.log_every == 0:
            print(f"step {i}: loss {rep.loss:.4f} acc {rep.accuracy:.3f} "
                  f"diverged {rep.n_diverged}", flush=True)  # fmt: skip

    neuron = load_twin(a.twin).to(a.device) if a.twin else None
    schedule = Cosine() if a.schedule == "cosine" else None
    x, y = xtr.to(a.device), ytr.to(a.device)
    res = train(
        net, x, y, method=method, epochs=a.epochs, batch_size=a.batch_size, seed=a.seed,
        val=(xva.to(a.device), yva.to(a.device)), val_mode=a.val_mode, callback=on_step,
        epoch_callback=on_epoch, max_seconds=a.time_limit, neuron=neuron, schedule=schedule,
        augment=RandomShift(a.shift) if a.shift else None, max_samples=a.max_images,
    )  # fmt: skip
    save("model")
    doc = {
        "name": a.name,
        "network": spec,
        "wiring": net.wiring.describe(),
        "train_config": {
            "T": a.T,
            "dt": a.dt,
            "readout": a.readout,
            "input_scale": a.input_scale,
            "adjoint": a.adjoint,
            "compile": a.compile,
        },  # fmt: skip
        "method": {"kind": a.method, "repr": repr(method)},
        "args": {k: v for k, v in vars(a).items() if k != "func"},
        "history": history,
        "best_epoch": res.best_epoch,
        "epochs_planned": res.epochs_planned,
        "val_mode": a.val_mode,
        f"val_accuracy_{a.val_mode}": list(res.val_accuracy),
        "train_seconds": res.seconds,
        "train_samples_per_second": res.samples_per_second,
        "train_samples_seen": res.samples_seen,
        "loss_per_step": losses,
        "diverged_steps": sum(s.n_diverged for s in res.steps),
        "command": " ".join(["python", "examples/wuxing_mnist.py", *sys.argv[1:]]),
        "init": init_info,
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": a.threads,
            "device": a.device,
        },  # fmt: skip
    }
    (out / "model.json").write_text(json.dumps(doc, indent=1))
    (out / "checkpoint.safetensors").unlink(missing_ok=True)  # model.* now hold the run
    print(json.dumps({"name": a.name, "val": list(res.val_accuracy), "s": res.seconds}))


COMPILE_HELP = "time simulation: 5 compiled whole-network steps per call"


def _solver(dt: float, compile: bool) -> Heun:
    """Heun steps, five whole-network steps per ``torch.compile``'d call with ``--compile``."""
    return Heun(dt=dt, compile=True, unroll=5) if compile else Heun(dt=dt)


def load_run(
    run: Path, T: float, dt: float, readout: str, device: str, compile: bool = False
) -> tuple[dict[str, Any], WuxingNetwork]:
    """A trained run's model.json and its network, simulated with the given window."""
    doc = json.loads((run / "model.json").read_text())
    config = SimConfig(T=T, solver=_solver(dt, compile), readout=readout,
                       input_scale=doc["train_config"]["input_scale"])  # fmt: skip
    net = build(doc["network"], config, device)
    state = load_file(str(run / "model.safetensors"))
    with torch.no_grad():
        net.c.copy_(state["c"].to(device))
        net.K.copy_(state["K"].to(device))
        net.update_rest_states()
    return doc, net


def cmd_average(a: argparse.Namespace) -> None:
    """One network whose coefficients are the mean of those of several runs of the same network
    (weight averaging of fine-tuned runs that share an ancestor); validate it like any run."""
    runs = [Path(r) for r in a.runs]
    if len(runs) < 2:
        raise SystemExit("average needs at least two runs")
    docs = [json.loads((r / "model.json").read_text()) for r in runs]
    states = [load_file(str(r / "model.safetensors")) for r in runs]
    for run, doc, state in zip(runs[1:], docs[1:], states[1:], strict=True):
        if doc["network"] != docs[0]["network"] or not torch.equal(state["K"], states[0]["K"]):
            raise SystemExit(f"{run}: not the network of {runs[0]} (wiring or K differ)")
        if doc["train_config"]["input_scale"] != docs[0]["train_config"]["input_scale"]:
            raise SystemExit(f"{run}: its input scale differs from that of {runs[0]}")
    c = torch.stack([state["c"] for state in states]).mean(0)
    out = Path(a.out) / a.name
    out.mkdir(parents=True, exist_ok=True)
    save_file({"c": c.contiguous(), "K": states[0]["K"].contiguous()},
              str(out / "model.safetensors"))  # fmt: skip
    doc = {k: docs[0][k] for k in ("network", "wiring")}
    for key in ("train_config", "method", "args"):  # what all the runs share, nothing else
        doc[key] = {k: v for k, v in docs[0][key].items() if all(d[key].get(k) == v for d in docs)}
    doc.update({
        "name": a.name, "history": [], "loss_per_step": [], "train_seconds": 0.0,
        "train_samples_seen": 0, "diverged_steps": 0, "init": None,
        "averaged": [{k: d.get(k) for k in ("name", "command", "train_seconds",
                                             "train_samples_seen", "init")} for d in docs],
        "command": " ".join(["python", "examples/wuxing_mnist.py", *sys.argv[1:]]),
    })  # fmt: skip
    (out / "model.json").write_text(json.dumps(doc, indent=1))
    print(json.dumps({"name": a.name, "averaged": [d["name"] for d in docs]}))


def _val_result(run: Path, by: str) -> dict[str, Any]:
    """A run's validation accuracy and the settings it was measured with: the best epoch of its
    in-training validation (``by="training"``, time simulation only) or its last ``validate``
    result (``by="validate"``)."""
    if by == "validate":
        path = run / "validation.json"
        if not path.exists():
            raise SystemExit(f"{run}: no validation.json (run `validate` on it first)")
        last = json.loads(path.read_text())[-1]
        return {k: last[k] for k in ("accuracy", "mode", "T", "dt", "readout", "n_val")}
    doc = json.loads((run / "model.json").read_text())
    if not doc.get("val_accuracy_time"):
        raise SystemExit(f"{run}: not validated on the time simulation while training "
                         "(train with --val-mode time, or keep --by validate)")  # fmt: skip
    tc = doc["train_config"]
    return {"accuracy": max(doc["val_accuracy_time"]), "mode": "time", "T": tc["T"],
            "dt": tc["dt"], "readout": tc["readout"], "n_val": doc["args"]["n_val"]}  # fmt: skip


def cmd_keep(a: argparse.Namespace) -> None:
    """Copy the candidate run with the best validation accuracy to ``--out/--name``, with the
    choice recorded in its model.json (``trained_as``, ``selection``, ``selection_rule``; in its
    metrics.json too when the candidate was scored, the score being the same network's). With
    ``--start`` (the run the candidates continue; its last ``validate`` result) a candidate must
    validate better than it, or nothing is kept; likewise for each ``--beat`` run (e.g. the best
    network so far, from another chain of stages). All are compared on the same validation
    settings. The test set is not read."""
    cands = [Path(r) for r in a.runs]
    if len({c.name for c in cands}) < len(cands):
        raise SystemExit(f"keep: candidates are told apart by folder name; two share one: {a.runs}")
    results = {c.name: _val_result(c, a.by) for c in cands}
    bars = {f"{Path(a.start).name} (the start)": Path(a.start)} if a.start else {}
    bars.update({f"{Path(r).name} (to beat)": Path(r) for r in a.beat})
    if {r.resolve() for r in bars.values()} & {c.resolve() for c in cands}:
        raise SystemExit("keep: a --start or --beat run is also a candidate")
    results.update({key: _val_result(run, "validate") for key, run in bars.items()})
    settings = {
        k: {key: v for key, v in r.items() if key != "accuracy"} for k, r in results.items()
    }
    if len({json.dumps(s, sort_keys=True) for s in settings.values()}) > 1:
        raise SystemExit(f"keep: validated on different settings, not comparable: {settings}")
    vals = {k: r["accuracy"] for k, r in results.items()}
    best = max(cands, key=lambda c: vals[c.name])
    s = next(iter(settings.values()))
    mode = {"time": "time simulation", "steady": "steady state"}[s["mode"]]
    rule = (f"best validation accuracy ({mode}, T = {s['T']:g}, dt = {s['dt']:g}, "
            f"{s['n_val']:,} images) among the candidates")  # fmt: skip
    if bars:
        if vals[best.name] <= max(vals[key] for key in bars):
            raise SystemExit(f"{a.name}: no candidate beats {', '.join(map(str, bars.values()))} "
                             f"on validation ({vals}); nothing kept")  # fmt: skip
        rule += "".join(" and the run they start from" if key.endswith("(the start)")
                        else f" and {run.name}" for key, run in bars.items())  # fmt: skip
    out = Path(a.out) / a.name
    if out.resolve() in {c.resolve() for c in cands}:
        raise SystemExit(f"keep: --name {a.name} is one of the candidates")
    record = {"name": a.name, "trained_as": best.name, "selection": vals, "selection_rule": rule}
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(best, out)
    for file in ("model.json", "metrics.json"):  # a scored candidate's test score comes along
        if (out / file).exists():
            doc = json.loads((out / file).read_text())
            (out / file).write_text(json.dumps({**doc, **record}, indent=1))
    print(json.dumps({"name": a.name, "kept": best.name, "selection": vals}), flush=True)


def _device(name: str) -> str:
    return name if name != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")


def cmd_validate(a: argparse.Namespace) -> None:
    """Validation accuracy of trained runs (the held-out training images, never the test set)."""
    torch.set_num_threads(a.threads)
    device = _device(a.device)
    (_, _, xva, yva), _ = _split(a.data_dir)
    x, y = xva[: a.n_val].to(device), yva[: a.n_val].to(device)
    for run in map(Path, a.runs):
        doc, net = load_run(run, a.T, a.dt, a.readout, device, a.compile)
        t0 = time.perf_counter()
        acc = evaluate(net, x, y, batch_size=a.batch_size, mode=a.mode)
        path = run / "validation.json"
        vals = json.loads(path.read_text()) if path.exists() else []
        vals.append({
            "accuracy": acc, "mode": a.mode, "T": a.T, "dt": a.dt, "readout": a.readout,
            "n_val": x.shape[0], "seconds": time.perf_counter() - t0, "device": device,
            "command": " ".join(["python", "examples/wuxing_mnist.py", "validate", str(run),
                                 f"--mode {a.mode} --T {a.T} --dt {a.dt} --n-val {a.n_val}"]
                                + (["--compile"] if a.compile else [])),
            "compile": a.compile,
        })  # fmt: skip
        path.write_text(json.dumps(vals, indent=1))
        print(json.dumps({"name": doc["name"], "val_accuracy": acc, "mode": a.mode}), flush=True)


def cmd_score(a: argparse.Namespace) -> None:
    if a.threads:
        torch.set_num_threads(a.threads)
    device = _device(a.device)
    _, test_set = _split(a.data_dir)
    x = torch.as_tensor(test_set.x)[: a.n_test].to(device)
    y = torch.as_tensor(test_set.y)[: a.n_test]
    modes = a.modes.split(",")
    for run in a.runs:
        run = Path(run)
        doc, net = load_run(run, a.T, a.dt, a.readout, device, a.compile)
        twin_dir = doc["args"].get("twin")
        neuron = load_twin(twin_dir).to(device) if twin_dir else None
        pred_file = run / "predictions.safetensors"
        preds = load_file(str(pred_file)) if pred_file.exists() else {}
        mpath = run / "metrics.json"
        metrics = json.loads(mpath.read_text()) if mpath.exists() else {}
        for mode in modes:
            t0 = time.perf_counter()
            preds[mode] = predict(
                net,
                x,
                batch_size=a.batch_size,
                neuron=neuron,
                mode="time" if mode == "time" else "steady",
            ).cpu()
            metrics.setdefault("score_seconds", {})[mode] = time.perf_counter() - t0
            metrics.setdefault("score_machine", {})[mode] = {
                "device": device, "platform": platform.platform(),
                "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
            }  # fmt: skip
        save_file({k: v.contiguous() for k, v in preds.items()}, str(pred_file))
        n = x.shape[0]
        acc = {k: float((v == y).double().mean()) for k, v in preds.items()}
        metrics.update({
            "name": doc["name"],
            "accuracy": {"device": acc.get("time"), "surrogate": acc.get("surrogate")},
            "n_test": n,
            "device": "time simulation of the whole network (Heun), T, dt and read-out below; "
                      "the test set is scored once",
            "surrogate": ("network of neuron twins (fitted steady-state map)" if neuron is not None
                          else "layer-by-layer steady state (Newton per neuron)"),
            "score_config": {"T": a.T, "dt": a.dt, "readout": a.readout,
                             "compile": a.compile},  # fmt: skip
            "train": {k: doc[k] for k in ("method", "network", "wiring", "train_config",
                                          "best_epoch", "epochs_planned", "val_mode",
                                          "val_accuracy_steady", "val_accuracy_time",
                                          "history", "train_seconds",
                                          "train_samples_per_second", "train_samples_seen",
                                          "diverged_steps", "command", "machine", "init",
                                          "selection", "selection_rule", "averaged")
                      if k in doc},
            "command": " ".join(["python", "examples/wuxing_mnist.py", "score", str(run),
                                 f"--T {a.T} --dt {a.dt} --readout {a.readout}"]
                                + (["--compile"] if a.compile else [])),
        })  # fmt: skip
        if "time" in preds:
            metrics["diverged"] = int((preds["time"] < 0).sum())
        if "time" in preds and "surrogate" in preds:
            metrics["gap"] = acc["surrogate"] - acc["time"]
            metrics["agreement"] = float((preds["time"] == preds["surrogate"]).double().mean())
        mpath.write_text(json.dumps(metrics, indent=1))
        print(json.dumps({"name": doc["name"], **metrics["accuracy"],
                          "agree": metrics.get("agreement")}), flush=True)  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train one network, choose the epoch on validation")
    t.add_argument("--name", required=True)
    t.add_argument("--model", choices=["MODEL1", "MODEL2"],
                   help="default MODEL1, or the network of the --init run")  # fmt: skip
    t.add_argument("--method", required=True,
                   choices=["method1", "method2", "mixed", "bptt", "twin"])  # fmt: skip
    t.add_argument("--estimate", default="steady", choices=["steady", "window"],
                   help="signals of methods 1/2: steady states or time integrals")  # fmt: skip
    t.add_argument(
        "--fan-in", type=int, help="adders of this fan-in (default 0: none; or the --init run's)"
    )
    t.add_argument("--data-dir", default=None)
    t.add_argument("--out", default="docs/results")
    t.add_argument("--epochs", type=int, default=1)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--n-train", type=int, default=0, help="first N training images (0: all)")
    t.add_argument("--n-val", type=int, default=2000)
    t.add_argument("--eta", type=float, default=20.0, help="method 2 step")
    t.add_argument("--m2-step", default="additive", choices=["additive", "adaptive"])
    t.add_argument("--reversal", default="rest", choices=["rest", "operating"],
                   help="method 2 (steady): reversed neurons linearised at rest (paper) or "
                   "at their forward neuron's operating point (ours)")  # fmt: skip
    t.add_argument("--eta1", type=float, default=2.0, help="method 1 proportional gain")
    t.add_argument("--eta-i", type=float, default=0.0, help="method 1 integral gain")
    t.add_argument("--kt", type=float, default=1.0)
    t.add_argument("--lr", type=float, default=0.05, help="Adam learning rate (bptt, twin)")
    t.add_argument("--weight-decay", type=float, default=0.0,
                   help="bptt, twin: decoupled weight decay of c (AdamW; 0: Adam)")  # fmt: skip
    t.add_argument("--k-lr", type=float, default=0.0,
                   help="bptt: Adam learning rate of the neurons' K parameters, trained with "
                   "c (0: K fixed, the paper's network) [ours]")  # fmt: skip
    t.add_argument("--shift", type=int, default=0,
                   help="augment training images by random shifts of up to N pixels")  # fmt: skip
    t.add_argument("--beta", type=float, default=20.0)
    t.add_argument("--error-scale", type=float, default=0.05,
                   help="injected error scale: keeps the reversed network near rest")  # fmt: skip
    t.add_argument("--c-max", type=float, default=3.0)
    t.add_argument("--c0", type=float, default=1.0)
    t.add_argument("--c-init", default="uniform", choices=["uniform", "const"])
    t.add_argument("--input-scale", type=float, default=1.0)
    t.add_argument("--T", type=float, default=40.0, help="window (bptt)")
    t.add_argument("--dt", type=float, default=0.1)
    t.add_argument("--readout", default="final", choices=["final", "mean"])
    t.add_argument("--adjoint", action="store_true",
                   help="bptt: adjoint gradients (less memory; no state clip)")  # fmt: skip
    t.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--device", default="cpu")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--log-every", type=int, default=20)
    t.add_argument("--time-limit", type=float, default=None, help="training budget, seconds")
    t.add_argument(
        "--max-images",
        type=int,
        default=None,
        help="training budget in images (whole batches), the same on every machine",
    )
    t.add_argument("--schedule", default="constant", choices=["constant", "cosine"],
                   help="step size: constant, or cosine decay after the first epoch over the "
                   "epochs that fit --time-limit (or --epochs); with --max-images, cosine "
                   "decay over all the steps of that budget")  # fmt: skip
    t.add_argument("--val-mode", default="steady", choices=["steady", "time"],
                   help="validation on the exact steady state (cheap on CPU) or on the time "
                   "simulation at --T (the device; cheap on a GPU)")  # fmt: skip
    t.add_argument("--init", default=None, help="run folder to continue from (its model)")
    t.add_argument("--twin", default=None,
                   help="folder of a neuron twin (twin command): train through it")  # fmt: skip
    t.set_defaults(func=cmd_train)
    w = sub.add_parser("twin", help="fit the neuron twin (steady-state map) once")
    w.add_argument("--out", default="docs/results/wuxing-neuron-twin")
    w.add_argument("--n-samples", type=int, default=30000)
    w.add_argument("--max-steps", type=int, default=600)
    w.add_argument("--threads", type=int, default=1)
    w.add_argument("--seed", type=int, default=0)
    w.set_defaults(func=cmd_twin)
    s = sub.add_parser("score", help="score trained runs on the test set (once)")
    s.add_argument("runs", nargs="+")
    s.add_argument("--data-dir", default=None)
    s.add_argument("--T", type=float, default=40.0)
    s.add_argument("--dt", type=float, default=0.1)
    s.add_argument("--readout", default="final", choices=["final", "mean"])
    s.add_argument("--n-test", type=int, default=10000)
    s.add_argument("--batch-size", type=int, default=1000)
    s.add_argument("--device", default="auto")
    s.add_argument("--threads", type=int, default=0,
                   help="CPU threads (0: torch's default; use 1 beside other runs)")  # fmt: skip
    s.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    s.add_argument("--modes", default="time,surrogate",
                   help="'time': the time simulation (accuracy.device); 'surrogate': the run's "
                   "neuron twin if it has one, else the exact steady state")  # fmt: skip
    s.set_defaults(func=cmd_score)
    v = sub.add_parser("validate", help="validation accuracy of trained runs (no test images)")
    v.add_argument("runs", nargs="+")
    v.add_argument("--data-dir", default=None)
    v.add_argument("--mode", default="time", choices=["time", "steady"])
    v.add_argument("--T", type=float, default=40.0)
    v.add_argument("--dt", type=float, default=0.1)
    v.add_argument("--readout", default="final", choices=["final", "mean"])
    v.add_argument("--n-val", type=int, default=1000)
    v.add_argument("--batch-size", type=int, default=250)
    v.add_argument("--threads", type=int, default=1)
    v.add_argument("--device", default="auto")
    v.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    v.set_defaults(func=cmd_validate)
    g = sub.add_parser("average", help="one network: the mean coefficients of several runs")
    g.add_argument("runs", nargs="+")
    g.add_argument("--name", required=True)
    g.add_argument("--out", default="docs/results")
    g.set_defaults(func=cmd_average)
    k = sub.add_parser("keep", help="copy the candidate run that validates best to a new name")
    k.add_argument("runs", nargs="+", help="candidate run folders")
    k.add_argument("--name", required=True)
    k.add_argument("--out", default="docs/results")
    k.add_argument(
        "--start",
        default=None,
        help="the run the candidates continue: one must validate better than it",
    )
    k.add_argument("--beat", action="append", default=[], metavar="RUN",
                   help="another run (e.g. the best so far) that the kept candidate must "
                   "validate better than; repeatable")  # fmt: skip
    k.add_argument(
        "--by",
        default="training",
        choices=["training", "validate"],
        help="training: each run's in-training validation (--val-mode time); "
        "validate: each run's last `validate` result",
    )
    k.set_defaults(func=cmd_keep)
    a = p.parse_args(argv)
    if getattr(a, "epochs", 1) < 1 or not math.isfinite(getattr(a, "eta", 1.0)):
        p.error("--epochs must be >= 1")
    a.func(a)


if __name__ == "__main__":
    main()
