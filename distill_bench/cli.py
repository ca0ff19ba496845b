"""``distill-bench``: list, run, evaluate, leaderboard, teacher.

Examples::

    distill-bench list
    distill-bench run --method random --dataset cifar10-jpeg75 --ipc 1,10 --shots all
    distill-bench evaluate results/synthetic/<set>.pt --protocol standard
    distill-bench leaderboard --format markdown
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from distill_bench import __version__
from distill_bench.registry import UnknownNameError

logger = logging.getLogger("distill_bench")


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _ints(value: str) -> list[int]:
    try:
        return [int(v) for v in _csv(value)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: expected integers separated by commas")


def parse_value(text: str):
    """A typed value from the command line: bools, numbers, lists, else the string."""
    low = text.strip().lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null"):
        return None
    try:
        return json.loads(text)
    except ValueError:
        pass
    if "," in text:
        return [parse_value(v) for v in _csv(text)]
    return text


def _options(pairs: list[str] | None) -> dict:
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise SystemExit(f"error: --set {pair!r}: expected KEY=VALUE")
        key, value = pair.split("=", 1)
        out[key.strip().replace("-", "_")] = parse_value(value)
    return out


def cmd_list(args) -> None:
    from distill_bench.data.datasets import DATASETS
    from distill_bench.evaluator import PROTOCOLS
    from distill_bench.method import METHODS
    from distill_bench.networks import BACKBONES

    sections = {"methods": METHODS, "datasets": DATASETS, "backbones": BACKBONES,
                "protocols": PROTOCOLS}
    wanted = [args.what] if args.what else list(sections)
    for name in wanted:
        registry = sections[name]
        print(f"{name}:")
        for item in registry.list(args.pattern):
            obj = registry.get(item)
            doc = ""
            if name == "datasets" and obj.note:
                doc = obj.note
            elif name == "protocols":
                doc = (f"{obj.epochs} epochs, {obj.optimizer} lr {obj.lr}, augment "
                       f"{obj.augment}, {obj.num_eval_runs} runs"
                       + ("" if obj.comparable else "  [NOT COMPARABLE]"))
            elif getattr(obj, "__doc__", None):
                doc = obj.__doc__.strip().splitlines()[0]
            print(f"  {item:<16} {doc}")


def cmd_run(args) -> None:
    from distill_bench.data import load_dataset
    from distill_bench.runner import Cell, run_cell

    data = load_dataset(args.dataset, args.data_root)
    protocol_options = {"num_eval_runs": args.num_eval_runs, "epochs": args.epochs}
    protocol_options = {k: v for k, v in protocol_options.items() if v is not None}
    if protocol_options:
        logger.warning("protocol %r changed by %s: rows are marked not comparable",
                       args.protocol, protocol_options)
    if args.protocol == "quick":
        logger.warning("protocol 'quick' is a CPU-sized smoke test; its numbers are NOT "
                       "comparable with the standard protocol or published results")
    options = _options(args.set)
    for seed in args.seed:
        for method in args.method:
            for backbone in args.backbone:
                for ipc in args.ipc:
                    cell = Cell(method, args.dataset, ipc, args.shots, backbone,
                                args.protocol, seed, args.precision, options,
                                protocol_options)
                    rows = run_cell(cell, args.results_dir, data=data, device=args.device,
                                    progress=not args.no_progress)
                    for row in rows:
                        print(f"{row['method']} {row['dataset']} ipc={row['ipc']} "
                              f"shots={row['shots']} {row['backbone']} {row['protocol']} "
                              f"seed={row['seed']} run={row['run']}: "
                              f"{row['test_acc']:.2f}%")
    cmd_leaderboard(argparse.Namespace(
        format="markdown", output=None, dataset=args.dataset, ipc=None, shots=None,
        method=None, protocol=None, backbone=None, results_dir=args.results_dir,
        write_default=True))


def cmd_evaluate(args) -> None:
    from distill_bench.data import load_dataset
    from distill_bench.evaluator import evaluate, get_protocol
    from distill_bench.synthetic import SyntheticSet

    syn = SyntheticSet.load(args.file)
    data = load_dataset(syn.dataset, args.data_root)
    protocol = get_protocol(args.protocol, num_eval_runs=args.num_eval_runs, epochs=args.epochs)
    runs = evaluate(syn, data, protocol, args.backbone, args.seed, precision=args.precision,
                    device=args.device, progress=not args.no_progress)
    accs = [r.test_acc for r in runs]
    mean = sum(accs) / len(accs)
    std = (sum((a - mean) ** 2 for a in accs) / len(accs)) ** 0.5
    print(f"{args.file}: {protocol.name} {args.backbone}: {mean:.2f} +- {std:.2f} "
          f"over {len(accs)} runs ({', '.join(f'{a:.2f}' for a in accs)})")


def cmd_leaderboard(args) -> None:
    from distill_bench.leaderboard import build_leaderboard, export
    from distill_bench.results import ResultStore

    store = ResultStore(args.results_dir)
    board = build_leaderboard(store.rows(), dataset=args.dataset, ipc=args.ipc,
                              shots=args.shots, method=args.method, protocol=args.protocol,
                              backbone=args.backbone)
    text = export(board, args.format)
    if getattr(args, "write_default", False) or args.output:
        if getattr(args, "write_default", False):
            full = build_leaderboard(store.rows())
            _write(store.dir / "leaderboard.csv", export(full, "csv"))
        if args.output:
            _write(Path(args.output), text)
    print(text, end="")


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def cmd_teacher(args) -> None:
    from distill_bench.data import load_dataset
    from methods.deepkkt.teacher import TeacherRecipe, get_teacher

    data = load_dataset(args.dataset, args.data_root)
    recipe = TeacherRecipe(**{k: v for k, v in {"epochs": args.epochs,
                                                 "backbone": args.backbone}.items()
                              if v is not None})
    _, info = get_teacher(data, recipe, args.seed, args.device,
                          train_if_missing=not args.show)
    print(json.dumps(info, indent=1))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distill-bench", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=__version__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-root", help="folder of datasets (default $DISTILL_BENCH_DATA)")
    common.add_argument("--results-dir", help="results folder (default ./results)")
    common.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    common.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", parents=[common], help="methods, datasets, backbones, protocols")
    p.add_argument("what", nargs="?", choices=["methods", "datasets", "backbones", "protocols"])
    p.add_argument("--pattern", default="*", help="shell wildcard, e.g. 'd*'")
    p.set_defaults(func=cmd_list)

    evaluation = argparse.ArgumentParser(add_help=False)
    evaluation.add_argument("--protocol", default="standard")
    evaluation.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                            help="bf16 autocast: about 2x faster on CPU; recorded per row")
    evaluation.add_argument("--num-eval-runs", type=int, help="override the protocol's runs")
    evaluation.add_argument("--epochs", type=int, help="override the protocol's epochs "
                            "(rows become not comparable)")
    evaluation.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("run", parents=[common, evaluation], help="distil and evaluate a grid")
    p.add_argument("--method", type=_csv, required=True, help="one or more, comma separated")
    p.add_argument("--dataset", default="cifar10-jpeg75")
    p.add_argument("--ipc", type=_ints, default=[1], help="images per class, e.g. 1,10")
    p.add_argument("--shots", default="all", help="real images per class the method may "
                   "see: 0, an integer, or all")
    p.add_argument("--backbone", type=_csv, default=["convnet"])
    p.add_argument("--seed", type=_ints, default=[0])
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="method option override (repeatable)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("evaluate", parents=[common, evaluation], help="evaluate a saved set")
    p.add_argument("file")
    p.add_argument("--backbone", default="convnet")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("leaderboard", parents=[common], help="aggregate stored runs")
    p.add_argument("--format", default="markdown", choices=["csv", "markdown", "latex"])
    p.add_argument("--output", help="also write to this file")
    for key in ("dataset", "method", "protocol", "backbone", "shots"):
        p.add_argument(f"--{key}", type=_csv)
    p.add_argument("--ipc", type=_csv)
    p.set_defaults(func=cmd_leaderboard)

    p = sub.add_parser("teacher", parents=[common], help="train or show a DeepKKT teacher")
    p.add_argument("--dataset", default="cifar10-jpeg75")
    p.add_argument("--backbone")
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--show", action="store_true", help="only show a cached teacher")
    p.set_defaults(func=cmd_teacher)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        args.func(args)
    except (UnknownNameError, ValueError, FileNotFoundError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
