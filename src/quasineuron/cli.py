"""The ``quasineuron`` command: the pipeline functions with arguments.

Sub-commands:
    characterize DEVICE --out DIR   sweep + twin + fidelity report for one device
    run CONFIG.toml --out DIR       the whole pipeline from a validated TOML config
    demo --out DIR                  the whole pipeline on the embedded default data set
    devices                         list the built-in devices
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _parse_option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(
            f"device option must look like KEY=VALUE (e.g. eps=0.05), got {text!r}"
        )
    try:
        parsed: Any = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        parsed = value  # a bare word is a string, e.g. activation=sigmoid
    return key.strip(), parsed


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quasineuron",
        description="Train networks of devices that only approximately behave like neurons.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ch = sub.add_parser(
        "characterize",
        help="sweep a device over its domain, fit a twin, report its fidelity",
        description="Sweep DEVICE over its domain (resumable), fit a surrogate twin, and write "
        "report.json, response.png, error.png, the sweep store and the twin into --out.",
    )
    ch.add_argument("device", help="built-in name (see 'quasineuron devices') or module:function")
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
    ch.add_argument("--sampler", choices=["auto", "grid", "sobol", "random", "lhs"], default="auto")
    ch.add_argument("--points", type=int, default=0, help="number of points (0: default)")
    ch.add_argument("--batch-size", type=int, default=4096)
    ch.add_argument("--workers", type=int, default=0, help="local worker processes")
    ch.add_argument(
        "--timeout", type=float, default=None, help="seconds a point may take (default: no limit)"
    )
    ch.add_argument("--twin", choices=["auto", "mlp", "spline"], default="auto")
    ch.add_argument("--seed", type=int, default=0)
    ch.add_argument("--strict", action="store_true", help="stop at the first failing point")
    ch.add_argument(
        "--overwrite", action="store_true", help="replace a store made for another sweep"
    )
    ch.add_argument("--no-progress", action="store_true")

    run = sub.add_parser("run", help="run the whole pipeline from a TOML config")
    run.add_argument("config", type=Path)
    run.add_argument("--out", required=True, type=Path)
    run.add_argument("--data-dir", type=Path, default=None, help="folder with MNIST files")
    run.add_argument("--no-progress", action="store_true")

    demo = sub.add_parser("demo", help="the whole pipeline on the embedded digits data set")
    demo.add_argument("--out", required=True, type=Path)
    demo.add_argument("--no-progress", action="store_true")

    sub.add_parser("devices", help="list the built-in devices")
    return parser


def _characterize(args: argparse.Namespace) -> int:
    from quasineuron.devices.library import make_device
    from quasineuron.pipeline import characterize, make_sampler

    options = dict(args.option)
    device = make_device(args.device, **options)
    sampler = make_sampler(args.sampler, device.n_in, points=args.points, seed=args.seed)
    result = characterize(
        device,
        args.out,
        sampler=sampler,
        batch_size=args.batch_size,
        workers=args.workers,
        timeout=args.timeout,
        twin_kind=args.twin,
        seed=args.seed,
        progress=not args.no_progress,
        overwrite=args.overwrite,
        strict=args.strict,
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
    from quasineuron.pipeline import run_pipeline

    config = load_config(args.config)
    metrics = run_pipeline(config, args.out, data_dir=args.data_dir, progress=not args.no_progress)
    _print_metrics(metrics, args.out)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from quasineuron.pipeline import demo_config, run_pipeline

    metrics = run_pipeline(demo_config(), args.out, progress=not args.no_progress)
    _print_metrics(metrics, args.out)
    return 0


def _print_metrics(metrics: dict[str, Any], out: Path) -> None:
    acc = metrics["accuracy"]
    parts = [f"{k}={100 * v:.2f}%" for k, v in acc.items() if v is not None]
    print(f"test accuracy: {', '.join(parts)}; gap={100 * metrics['gap']:+.2f} pp")
    print(f"run folder: {out} (metrics.json, summary.md, plots)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``quasineuron`` console script.

    Returns:
        The process exit status: 0 on success, 2 on bad input.
    """
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command == "devices":
        from quasineuron.devices.library import available_devices

        print("\n".join(available_devices()))
        return 0
    handlers = {"characterize": _characterize, "run": _run, "demo": _demo}
    try:
        return handlers[args.command](args)
    except (ValueError, TypeError, FileNotFoundError, ConnectionError) as exc:
        # Bad input gets its message, not a traceback; bugs still raise.
        print(f"quasineuron {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
