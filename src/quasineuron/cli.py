"""The ``quasineuron`` command: the pipeline functions with arguments.

Sub-commands:
    characterize DEVICE --out DIR   sweep + twin + fidelity report for one device
    run CONFIG.toml --out DIR       the whole pipeline from a validated TOML config
    demo --out DIR                  the whole pipeline on the embedded default data set
    devices                         list the built-in and registered devices

Every failure ends in one line on stderr, ``quasineuron COMMAND: error: ...``, and exit status
2 (130 when interrupted); the global ``--traceback`` flag re-raises instead.
"""

from __future__ import annotations

import argparse
import ast
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["main"]

#: Exit status of every failure, as argparse uses for bad arguments.
EXIT_ERROR = 2
#: Exit status after Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, like every other failure."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _parse_option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(
            f"device option must look like KEY=VALUE (e.g. eps=0.05), got {text!r}"
        )
    try:
        parsed: Any = ast.literal_eval(value)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        parsed = value  # a bare word is a string, e.g. activation=sigmoid
    return key.strip(), parsed


def _int_at_least(low: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _run_folder_flags(p: argparse.ArgumentParser) -> None:
    folder = p.add_mutually_exclusive_group()
    folder.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run files in a non-empty --out and start afresh",
    )
    folder.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted run in --out (same config): sweep, twin, training",
    )


def _allow_import_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow-import",
        action="append",
        default=[],
        metavar="PKG",
        help="let a 'module:attribute' device spec import and call code from the top-level "
        "package PKG (repeatable); without it only built-in and registered devices run",
    )


def _traceback_flag(p: argparse.ArgumentParser, *, default: Any) -> None:
    p.add_argument(
        "--traceback",
        action="store_true",
        default=default,
        help="re-raise errors with their Python traceback (for bug reports)",
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="quasineuron",
        description="Train networks of devices that only approximately behave like neurons.",
    )
    _traceback_flag(parser, default=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ch = sub.add_parser(
        "characterize",
        help="sweep a device over its domain, fit a twin, report its fidelity",
        description="Sweep DEVICE over its domain (resumable), fit a surrogate twin, and write "
        "report.json, response.png, error.png, the sweep store and the twin into --out.",
    )
    ch.add_argument(
        "device",
        nargs="?",
        default=None,
        help="built-in or registered name (see 'quasineuron devices'), or module:attribute "
        "with --allow-import; leave out with --measurements",
    )
    ch.add_argument(
        "--measurements",
        type=Path,
        default=None,
        metavar="FILE",
        help="no device: read measured data (CSV, HDF5, NetCDF) as the sweep and fit the twin "
        "on it; needs --drives and --outputs",
    )
    ch.add_argument("--drives", nargs="+", default=None, metavar="COLUMN", help="drive columns")
    ch.add_argument("--outputs", nargs="+", default=None, metavar="COLUMN", help="output columns")
    ch.add_argument("--out", required=True, type=Path, help="output folder")
    ch.add_argument(
        "-o",
        "--option",
        action="append",
        default=[],
        type=_parse_option,
        metavar="KEY=VALUE",
        help="device option, repeatable (e.g. -o eps=0.05)",
    )
    _allow_import_flag(ch)
    ch.add_argument("--sampler", choices=["auto", "grid", "sobol", "random", "lhs"], default="auto")
    ch.add_argument(
        "--points", type=_int_at_least(0), default=0, help="number of points (0: default)"
    )
    ch.add_argument("--batch-size", type=_int_at_least(1), default=4096)
    ch.add_argument(
        "--workers",
        type=_int_at_least(0),
        default=0,
        help="local worker processes (0: none); started only once the sweep has run longer "
        "than starting them costs (~2 s), otherwise it stays in-process and says so",
    )
    ch.add_argument(
        "--force-workers",
        action="store_true",
        help="start the --workers processes up front, however cheap the device",
    )
    ch.add_argument(
        "--timeout",
        type=_positive_float,
        default=None,
        help="seconds a point may take; hung points are recorded as TIMEOUT (default: no limit)",
    )
    ch.add_argument("--twin", choices=["auto", "mlp", "spline"], default="auto")
    ch.add_argument("--seed", type=int, default=0)
    ch.add_argument("--strict", action="store_true", help="stop at the first failing point")
    ch.add_argument(
        "--overwrite", action="store_true", help="replace a store made for another sweep"
    )
    ch.add_argument(
        "--repeats",
        type=_int_at_least(1),
        default=1,
        help="evaluations per point; above 1 the report gives the noise floor",
    )
    ch.add_argument(
        "--repair",
        action="store_true",
        help="recompute the damaged chunks of a store that fails its checksums",
    )
    ch.add_argument("--no-progress", action="store_true")
    _traceback_flag(ch, default=argparse.SUPPRESS)

    run = sub.add_parser("run", help="run the whole pipeline from a TOML config")
    run.add_argument("config", type=Path, help="the TOML run configuration")
    run.add_argument(
        "--out",
        required=True,
        type=Path,
        help="run folder; refused if it holds another run (see --overwrite, --resume)",
    )
    run.add_argument("--data-dir", type=Path, default=None, help="folder with MNIST files")
    run.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: small training and test subsets, one epoch (or batch budget) per stage",
    )
    _allow_import_flag(run)
    _run_folder_flags(run)
    run.add_argument("--no-progress", action="store_true")
    _traceback_flag(run, default=argparse.SUPPRESS)

    demo = sub.add_parser("demo", help="the whole pipeline on the embedded digits data set")
    demo.add_argument(
        "--out",
        required=True,
        type=Path,
        help="run folder; refused if it holds another run (see --overwrite, --resume)",
    )
    _run_folder_flags(demo)
    demo.add_argument("--no-progress", action="store_true")
    _traceback_flag(demo, default=argparse.SUPPRESS)

    score = sub.add_parser(
        "score", help="score a complete run's saved network on the test set, once (recorded)"
    )
    score.add_argument("run", type=Path, help="a complete run folder")
    score.add_argument("--data-dir", type=Path, default=None, help="folder with MNIST files")
    score.add_argument(
        "--again",
        action="store_true",
        help="read the test set of a run scored before (the read is counted in scores.json)",
    )
    _traceback_flag(score, default=argparse.SUPPRESS)

    rep = sub.add_parser(
        "reproduce", help="re-run a result from the config stored beside its metrics.json"
    )
    rep.add_argument(
        "result",
        type=Path,
        help="a result folder (its reproduce.json or config), a result's name under "
        "docs/results, or a TOML config",
    )
    rep.add_argument("--out", required=True, type=Path, help="folder for the new run")
    rep.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: small training subset, one epoch (or batch budget) per stage",
    )
    rep.add_argument("--data-dir", type=Path, default=None, help="folder with MNIST files")
    rep.add_argument("--no-progress", action="store_true")
    _traceback_flag(rep, default=argparse.SUPPRESS)

    real = sub.add_parser(
        "realism",
        help="the realism suite: which training route works on which flawed device",
        description="Train each scenario (a device with one flaw) by each of its routes on "
        "every seed, score it on the true device beside an ordinary tanh MLP of the same "
        "shape, and write DIR/metrics.json. The full suite on digits takes minutes.",
    )
    real.add_argument(
        "--out", type=Path, default=None, help="folder for metrics.json (required unless --table)"
    )
    real.add_argument(
        "--table",
        type=Path,
        default=None,
        metavar="METRICS",
        help="print the Markdown results table of a saved metrics.json (no training) and exit",
    )
    real.add_argument("--data", choices=["digits", "mnist"], default="digits")
    real.add_argument(
        "--data-dir", type=Path, default=None, help="folder with MNIST files (--data mnist)"
    )
    real.add_argument(
        "--seeds",
        type=_int_at_least(0),
        nargs="+",
        default=None,
        metavar="SEED",
        help="seeds of every scenario and route (default 0 1 2; --quick: 0)",
    )
    real.add_argument(
        "--scenario",
        action="append",
        default=None,
        metavar="NAME",
        help="run only this scenario, repeatable (default: all)",
    )
    real.add_argument(
        "--skip-route",
        action="append",
        default=None,
        metavar="ROUTE",
        help="leave this route out of every scenario, repeatable (e.g. derivative-free on "
        "MNIST, where CMA-ES over a 784-8-10 network does not fit the suite's budget)",
    )
    real.add_argument(
        "--epochs", type=_int_at_least(1), default=None, help="epochs (default 20; --quick: 1)"
    )
    real.add_argument("--hidden", type=_int_at_least(1), default=32, help="hidden neurons")
    real.add_argument(
        "--max-train",
        type=_int_at_least(10),
        default=None,
        help="train on the first this many samples (default all; --quick: 300)",
    )
    real.add_argument(
        "--validation",
        action="store_true",
        help="score on held-out training images (the last sixth, at most 5000) instead of "
        "the test set: the way to choose a route or a setting",
    )
    real.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: one seed, one epoch, 300 training samples (numbers mean nothing)",
    )
    _traceback_flag(real, default=argparse.SUPPRESS)

    devices = sub.add_parser("devices", help="list the built-in and registered devices")
    _traceback_flag(devices, default=argparse.SUPPRESS)
    return parser


def _characterize_measured(args: argparse.Namespace) -> int:
    from quasineuron.config import parse_config
    from quasineuron.pipeline import characterize_measured, prepare_output_folder

    if args.device is not None:
        raise ValueError(
            f"give either a DEVICE ({args.device!r}) or --measurements, not both: measured data "
            "stands for a device you cannot run"
        )
    if not args.drives or not args.outputs:
        raise ValueError("--measurements needs --drives COLUMN... and --outputs COLUMN...")
    swept = [
        flag
        for flag, value, default in (
            ("--option", args.option, []),
            ("--sampler", args.sampler, "auto"),
            ("--points", args.points, 0),
            ("--workers", args.workers, 0),
            ("--timeout", args.timeout, None),
            ("--repeats", args.repeats, 1),
        )
        if value != default
    ]
    if swept:
        raise ValueError(
            f"{swept[0]} sweeps a device; with --measurements the file is the sweep (remove it)"
        )
    config = parse_config(
        {
            "device": {
                "measurements": {
                    "path": str(args.measurements),
                    "drives": list(args.drives),
                    "outputs": list(args.outputs),
                }
            },
            "twin": {"kind": args.twin, "seed": args.seed},
        },
        source="the command line",
    )
    prepare_output_folder(args.out)
    result = characterize_measured(config, args.out)
    rep = result.fit.report
    noise = f", noise floor {[round(v, 6) for v in rep.noise_floor]}" if rep.noise_floor else ""
    print(
        f"{result.table.n_points} measurements ({result.table.n_failed} failed); twin "
        f"{rep.kind}, NRMSE {rep.nrmse:.3e} on held-out measurements{noise}"
    )
    print(f"wrote {args.out / 'report.json'}")
    return 0


def _characterize(args: argparse.Namespace) -> int:
    from quasineuron.devices.library import make_device
    from quasineuron.pipeline import characterize, make_sampler, prepare_output_folder

    if args.measurements is not None:
        return _characterize_measured(args)
    if args.device is None:
        raise ValueError("give a DEVICE to sweep, or --measurements FILE with measured data")
    if args.drives or args.outputs:
        raise ValueError("--drives and --outputs name the columns of --measurements FILE")
    prepare_output_folder(args.out)
    options = dict(args.option)
    device = make_device(args.device, allow_import=tuple(args.allow_import), **options)
    sampler = make_sampler(args.sampler, device.n_in, points=args.points, seed=args.seed)
    result = characterize(
        device,
        args.out,
        sampler=sampler,
        batch_size=args.batch_size,
        workers=args.workers,
        force_workers=args.force_workers,
        timeout=args.timeout,
        twin_kind=args.twin,
        seed=args.seed,
        progress=not args.no_progress,
        overwrite=args.overwrite,
        strict=args.strict,
        repair=args.repair,
        repeats=args.repeats,
    )
    rep = result.report
    print(
        f"{device.name}: {rep['sweep']['n_points']} points, {rep['sweep']['n_failed']} failed; "
        f"{rep['twin']['kind']} twin held-out nrmse={rep['twin']['nrmse']:.3g} "
        f"rmse={rep['twin']['rmse']:.3g} max_abs={rep['twin']['max_abs']:.3g} "
        f"r2={rep['twin']['r2']:.6f}\nreport: {result.folder / 'report.json'}"
    )
    return 0


def _run(args: argparse.Namespace) -> int:
    from quasineuron.config import load_config

    config = load_config(args.config)  # before the pipeline's imports: config errors stay quick
    if args.quick:
        from quasineuron.protocol import quick_config

        config = quick_config(config)
    from quasineuron.pipeline import run_pipeline

    metrics = run_pipeline(
        config,
        args.out,
        data_dir=args.data_dir,
        progress=not args.no_progress,
        allow_import=tuple(args.allow_import),
        overwrite=args.overwrite,
        resume=args.resume,
    )
    _print_metrics(metrics, args.out)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from quasineuron.pipeline import demo_config, run_pipeline

    metrics = run_pipeline(
        demo_config(),
        args.out,
        progress=not args.no_progress,
        overwrite=args.overwrite,
        resume=args.resume,
    )
    _print_metrics(metrics, args.out)
    return 0


def _score(args: argparse.Namespace) -> int:
    from quasineuron.protocol import score_run

    reading = score_run(args.run, data_dir=args.data_dir, again=args.again)
    parts = [f"{k}={100 * v:.2f}%" for k, v in reading["accuracy"].items() if v is not None]
    print(f"test accuracy: {', '.join(parts)} (test reads of this run: {reading['test_reads']})")
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    import json

    from quasineuron.protocol import reproduce_entry, run_reproduce

    result = args.result
    if not result.exists() and (Path("docs/results") / result).is_dir():
        result = Path("docs/results") / result  # a result's name, from the repository root
    if result.is_file() and result.suffix == ".toml":  # a config itself, e.g. an example's
        from quasineuron.pipeline import run_pipeline
        from quasineuron.protocol import reproduce_config

        config = reproduce_config(result, quick=args.quick)
        metrics = run_pipeline(
            config, args.out, data_dir=args.data_dir, progress=not args.no_progress
        )
        _print_metrics(metrics, args.out)
        return 0
    entry = reproduce_entry(result)  # a malformed or missing entry stops here, before any run
    path = run_reproduce(
        entry.folder,
        out=args.out,
        quick=args.quick,
        data_dir=args.data_dir,
        progress=not args.no_progress,
    )
    if entry.config is not None:
        _print_metrics(json.loads(path.read_text(encoding="utf-8")), args.out)
    else:
        print(f"metrics: {path}")
    return 0


def _print_metrics(metrics: dict[str, Any], out: Path) -> None:
    if "vary" in metrics:  # a grid: one line per value
        for point in metrics["per_value"]:
            acc = point["accuracy"]
            modes = [k.removesuffix("_mean") for k in acc if k.endswith("_mean")]
            parts = [
                f"{m}={100 * acc[m + '_mean']:.2f}±{100 * acc[m + '_std']:.2f}%" for m in modes
            ]
            print(f"{metrics['vary']} = {point['value']!r}: {', '.join(parts)}")
        print(f"experiment folder: {out} (metrics.json; one subfolder per value)")
        return
    acc = metrics["accuracy"]
    parts = [f"{k}={100 * v:.2f}%" for k, v in acc.items() if v is not None]
    gap = "" if metrics.get("gap") is None else f"; gap={100 * metrics['gap']:+.2f} pp"
    print(f"test accuracy: {', '.join(parts)}{gap}")
    print(f"run folder: {out} (metrics.json, summary.md, plots)")


def _realism(args: argparse.Namespace) -> int:
    import dataclasses
    import json
    import warnings

    import torch

    from quasineuron.realism import ROUTES, default_scenarios, markdown_table, run_realism

    if args.table is not None:
        if args.out is not None:
            raise ValueError("--table prints a saved run's table and trains nothing; drop --out")
        if not args.table.is_file():
            raise ValueError(
                f"--table {args.table} is not a file; give the metrics.json of a realism run"
            )
        print(markdown_table(json.loads(args.table.read_text())), end="")
        return 0
    if args.out is None:
        raise ValueError("realism needs --out DIR, the folder for metrics.json (or --table FILE)")
    if args.data == "digits" and args.data_dir is not None:
        raise ValueError("--data-dir is for --data mnist; digits is built in (drop --data-dir)")
    if args.data == "mnist" and args.data_dir is None:
        raise ValueError("--data mnist needs --data-dir DIR, the folder with the MNIST files")
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out} is a file; give a folder for metrics.json")
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {seeds} repeats a seed; give each seed once")
    epochs = args.epochs if args.epochs is not None else (1 if args.quick else 20)
    max_train = args.max_train if args.max_train is not None else (300 if args.quick else None)
    scenarios = default_scenarios()
    if args.scenario:
        known = {sc.name: sc for sc in scenarios}
        unknown = [n for n in args.scenario if n not in known]
        if unknown:
            raise ValueError(f"--scenario {unknown[0]!r} is not a scenario; known: {sorted(known)}")
        scenarios = tuple(known[n] for n in dict.fromkeys(args.scenario))
    if args.skip_route:
        unknown = sorted(set(args.skip_route) - {r.name for r in ROUTES})
        if unknown:
            raise ValueError(
                f"--skip-route {unknown[0]!r} is not a route; known: "
                f"{sorted(r.name for r in ROUTES)}"
            )
        kept = [
            dataclasses.replace(sc, routes=tuple(r for r in sc.routes if r not in args.skip_route))
            for sc in scenarios
        ]
        empty = [sc.name for sc in kept if not sc.routes]
        if empty:
            raise ValueError(f"--skip-route leaves scenario {empty[0]!r} no route to run")
        scenarios = tuple(kept)
    routes = ROUTES
    if args.quick:  # a smoke run: ten CMA-ES generations of 32 instead of about a hundred
        routes = tuple(dataclasses.replace(r, candidates=min(r.candidates, 320)) for r in ROUTES)
    # the networks are tiny: one thread avoids the cost of splitting each small matmul
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        # the suite provokes out-of-domain drives and non-finite outputs on purpose
        warnings.simplefilter("ignore")
        run_realism(
            args.out,
            seeds=seeds,
            routes=routes,
            data=args.data,
            data_dir=args.data_dir,
            scenarios=scenarios,
            epochs=epochs,
            hidden=args.hidden,
            max_train=max_train,
            validation=args.validation,
            log=lambda line: print(line, flush=True),
        )
    print(f"wrote {args.out / 'metrics.json'}")
    return 0


def _devices(args: argparse.Namespace) -> int:
    # The names only, without importing torch; equal to devices.available_devices().
    from quasineuron._device_names import device_names as available_devices

    print("\n".join(available_devices()))
    return 0


def _message(exc: BaseException) -> str:
    from quasineuron._messages import error_line

    text = error_line(exc)
    if isinstance(exc, MemoryError) and text == "MemoryError":
        text = "out of memory; use smaller sizes, batches or sweep points"
    if isinstance(exc, RuntimeError) and "can't allocate memory" in text:  # torch's allocator
        return f"out of memory ({text}); use smaller sizes, batches or sweep points"
    if not isinstance(exc, _expected()):
        # not a foreseen failure: say what it was and how to get the details
        text = f"{type(exc).__name__}: {text} (rerun with --traceback for details)"
    return text


def _expected() -> tuple[type[BaseException], ...]:
    from quasineuron import errors

    return (
        ValueError,  # bad input: unknown device, bad option, config errors, store mismatch
        errors.DeviceContractError,
        errors.NotDifferentiableError,
        OSError,  # unwritable or file --out, missing data, no network
        MemoryError,
        FloatingPointError,  # NaN training loss
        errors.SimulationError,
        errors.StoreCorruptError,  # includes IntegrityError
        errors.QuasineuronWarning,  # a warning turned into an error (-W error)
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``quasineuron`` console script.

    Args:
        argv: The arguments (without the program name); default ``sys.argv[1:]``.

    Returns:
        The process exit status: 0 on success, 2 on any failure (reported as one line on
        stderr), 130 when interrupted. With ``--traceback`` failures re-raise instead.
    """
    parser = _build_parser()
    args = parser.parse_args(argv)
    handlers = {
        "characterize": _characterize,
        "run": _run,
        "demo": _demo,
        "score": _score,
        "reproduce": _reproduce,
        "devices": _devices,
        "realism": _realism,
    }
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        if args.traceback:
            raise
        print(f"quasineuron {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if args.traceback:
            raise
        print(f"quasineuron {args.command}: error: {_message(exc)}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
