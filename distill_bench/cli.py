"""``distill-bench``: list, run, evaluate, leaderboard, teacher.

Examples::

    distill-bench list
    distill-bench run --method random --dataset cifar10-jpeg75 --ipc 1,10 --shots all
    distill-bench evaluate results/synthetic/<set>.pt --protocol standard
    distill-bench leaderboard --format markdown
    distill-bench run --config configs/random/cifar10-jpeg75-ipc1.yaml --seed 1
    distill-bench leaderboard --write
    distill-bench plot accuracy --dataset cifar10-jpeg75
    distill-bench plot grid results/synthetic/<set>.pt
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from distill_bench import __version__
from distill_bench.data.readers import DataFileError
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
            if name == "datasets":
                doc = obj.note or obj.how_to_get
            elif name == "protocols":
                doc = (f"{obj.epochs} epochs, {obj.optimizer} lr {obj.lr}, augment "
                       f"{obj.augment}, {obj.num_eval_runs} runs"
                       + ("" if obj.comparable else "  [NOT COMPARABLE]"))
            elif getattr(obj, "__doc__", None):
                doc = obj.__doc__.strip().splitlines()[0]
            print(f"  {item:<16} {doc}")


def cmd_run(args) -> None:
    from distill_bench.data import load_dataset
    from distill_bench.evaluator import get_protocol
    from distill_bench.method import create_method, get_method
    from distill_bench.networks import BACKBONES
    from distill_bench.runner import Cell, run_cell
    from distill_bench.config import (check_expected, dump_config, printable_config,
                                      resolve_run_args, save_cell_config)

    args = resolve_run_args(args)  # defaults < --config < flags; options typed
    if args.print_config:
        print(dump_config(printable_config(args)), end="")
        return
    protocol_options = {"num_eval_runs": args.num_eval_runs, "epochs": args.epochs}
    protocol_options = {k: v for k, v in protocol_options.items() if v is not None}
    if protocol_options:
        logger.warning("protocol %r changed by %s: rows are marked not comparable",
                       args.protocol, protocol_options)
    if args.protocol == "quick":
        logger.warning("protocol 'quick' is a CPU-sized smoke test; its numbers are NOT "
                       "comparable with the standard protocol or published results")
    options = args.options
    # check every name and value before the first cell runs (a typo must not wait hours)
    for method in args.method:
        get_method(method)
    for backbone in args.backbone:
        BACKBONES.get(backbone)
    get_protocol(args.protocol)
    speed = {"compile_model": args.compile_model, "batched_runs": args.batched_runs}
    cells = [Cell(method, args.dataset, ipc, args.shots, backbone, args.protocol, seed,
                  args.precision, options, protocol_options, **speed)
             for seed in args.seed for method in args.method
             for backbone in args.backbone for ipc in args.ipc]
    for cell in cells:  # impossible (ipc, shots) pairs fail now, not after loading data
        create_method(cell.method, **cell.method_options).check_cell(cell.ipc, cell.shots)
    data = load_dataset(args.dataset, args.data_root)
    for cell in cells:
        check_expected(cell, data, args.expect)
        rows = run_cell(cell, args.results_dir, data=data, device=args.device,
                        progress=not args.no_progress)
        save_cell_config(cell, args.results_dir, data)
        for row in rows:
            print(f"{row['method']} {row['dataset']} ipc={row['ipc']} "
                  f"shots={row['shots']} {row['backbone']} {row['protocol']} "
                  f"seed={row['seed']} run={row['run']}: {row['test_acc']:.2f}%")
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
                    device=args.device, progress=not args.no_progress,
                    compile_model=args.compile_model, batched_runs=args.batched_runs)
    accs = [r.test_acc for r in runs]
    mean = sum(accs) / len(accs)
    std = (sum((a - mean) ** 2 for a in accs) / len(accs)) ** 0.5
    print(f"{args.file}: {protocol.name} {args.backbone}: {mean:.2f} +- {std:.2f} "
          f"over {len(accs)} runs ({', '.join(f'{a:.2f}' for a in accs)})")


def cmd_leaderboard(args) -> None:
    from distill_bench.leaderboard import build_leaderboard, export, write_leaderboard_files
    from distill_bench.results import ResultStore

    store = ResultStore(args.results_dir)
    board = build_leaderboard(store.rows(), sort=getattr(args, "sort", None),
                              dataset=args.dataset, ipc=args.ipc, shots=args.shots,
                              method=args.method, protocol=args.protocol,
                              backbone=args.backbone,
                              precision=getattr(args, "precision", None))
    text = export(board, args.format, full=getattr(args, "full", False))
    if getattr(args, "write", False) or getattr(args, "write_default", False):
        plots = getattr(args, "write", False) and not getattr(args, "no_plots", False)
        for path in write_leaderboard_files(store.dir, plots=plots):
            logger.info("wrote %s", path)
    if args.output:
        _write(Path(args.output), text)
    print(text, end="")


def cmd_plot(args) -> None:
    from distill_bench.results import ResultStore

    if args.plot == "accuracy":
        from distill_bench.plots import plot_accuracy

        store = ResultStore(args.results_dir)
        output = args.output or store.dir / "plots" / f"{args.dataset}-accuracy"
        paths = plot_accuracy(store.rows(), args.dataset, output, whole=args.whole,
                              backbone=args.backbone, protocol=args.protocol,
                              precision=args.precision)
    else:
        from distill_bench.data import load_dataset
        from distill_bench.data.readers import DataFileError
        from distill_bench.plots import plot_grid
        from distill_bench.synthetic import SyntheticSet

        syn = SyntheticSet.load(args.file)
        try:  # class names for the rows, if the dataset is at hand
            classes = load_dataset(syn.dataset, args.data_root).classes
        except (DataFileError, UnknownNameError, OSError) as err:
            logger.info("no class names (%s); rows are labelled by index", err)
            classes = None
        output = args.output or Path(args.file).with_suffix(".png")
        paths = [plot_grid(syn, output, classes, args.max_per_class)]
    for path in paths:
        print(path)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def cmd_teacher(args) -> None:
    from distill_bench.data import load_dataset
    from methods.deepkkt.method import TeacherOptions
    from methods.deepkkt.teacher import get_teacher

    data = load_dataset(args.dataset, args.data_root)
    options = TeacherOptions(teacher_epochs=args.epochs or 0,
                             teacher_backbone=args.backbone or "convnet")
    _, info = get_teacher(data, options.teacher_recipe(data.channels), args.seed, args.device,
                          train_if_missing=not args.show)
    print(json.dumps(info, indent=1))


def cmd_deepkkt(args) -> None:
    from distill_bench.config import coerce_options, set_options
    from distill_bench.data import load_dataset
    from methods.deepkkt import generate

    # options first: a typo in --set fails before the dataset is read
    options = coerce_options(generate.DeepKKTConfig, set_options(args.set))
    cfg = generate.config_with(iterations=args.iterations, teacher_epochs=args.teacher_epochs,
                               **options)
    data = load_dataset(args.dataset, args.data_root)
    out = Path(args.output)
    if args.action == "generate":
        a, b = (_csv(args.classes) + [None])[:2]
        if b is None:
            raise ValueError(f"--classes {args.classes!r}: give two classes, e.g. cat,dog")
        path = generate.generate_mix(data, a, b, args.delta, args.num, out, cfg, args.seed,
                                     args.device)
    else:
        path = generate.edit_image(data, args.index, args.target, out, cfg, args.seed,
                                   args.device)
    print(f"wrote {path}")


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

    def evaluation_options() -> argparse.ArgumentParser:
        # a fresh parent per subcommand: argparse parents share their actions, so
        # run's "not given" defaults must not leak into evaluate's
        evaluation = argparse.ArgumentParser(add_help=False)
        evaluation.add_argument("--protocol", default="standard", help="evaluation preset, "
                                "see `distill-bench list protocols` (default standard)")
        evaluation.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                                help="bf16 autocast: about 2x faster on CPU; recorded per row "
                                "(default fp32)")
        evaluation.add_argument("--num-eval-runs", type=int,
                                help="override the protocol's runs")
        evaluation.add_argument("--epochs", type=int, help="override the protocol's epochs "
                                "(rows become not comparable)")
        evaluation.add_argument("--compile", dest="compile_model", action="store_true",
                                help="train through torch.compile (faster on CPU after a "
                                "compile of up to a minute); recorded per row")
        evaluation.add_argument("--batched-runs", action="store_true",
                                help="train the runs as one vmap-ed computation (for a GPU "
                                "at small ipc); recorded per row")
        evaluation.add_argument("--no-progress", action="store_true")
        return evaluation

    p = sub.add_parser("run", parents=[common, evaluation_options()],
                       help="distil and evaluate a grid")
    p.add_argument("--method", type=_csv, help="one or more, comma separated")
    # run's defaults live in config.RUN_DEFAULTS (a --config file may set them)
    p.add_argument("--dataset", help="default cifar10-jpeg75")
    p.add_argument("--ipc", type=_ints, help="images per class, e.g. 1,10 (default 1)")
    p.add_argument("--shots", help="real images per class the method may see: 0, an "
                   "integer, or all (default all)")
    p.add_argument("--backbone", type=_csv, help="evaluation network(s) (default convnet)")
    p.add_argument("--seed", type=_ints, help="seed(s) of the cell (default 0)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="method option override (repeatable)")
    p.add_argument("--config", metavar="FILE", help="YAML run config (configs/, or one "
                   "saved in <results>/configs/); flags given here override it")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config as YAML and exit")
    # None = "not given", so that --config values stand unless a flag is typed
    p.set_defaults(func=cmd_run, dataset=None, ipc=None, shots=None, backbone=None,
                   protocol=None, seed=None, precision=None)

    p = sub.add_parser("evaluate", parents=[common, evaluation_options()],
                       help="evaluate a saved set")
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
    p.add_argument("--precision", type=_csv)
    p.add_argument("--sort", type=_csv, help="columns, e.g. gain_over_random or "
                   "acc_mean:asc (numbers sort best-first by default)")
    p.add_argument("--full", action="store_true", help="every column in markdown/latex")
    p.add_argument("--write", action="store_true", help="regenerate leaderboard.csv, "
                   "README.md and plots/ in the results folder")
    p.add_argument("--no-plots", action="store_true", help="with --write: skip plots")
    p.set_defaults(func=cmd_leaderboard)

    p = sub.add_parser("plot", help="accuracy against ipc, or an image grid of a set")
    plots = p.add_subparsers(dest="plot", required=True)
    q = plots.add_parser("accuracy", parents=[common], help="accuracy vs ipc per method")
    q.add_argument("--dataset", required=True)
    q.add_argument("--backbone", help="default: convnet if present")
    q.add_argument("--protocol", help="default: standard if present")
    q.add_argument("--precision", help="default: fp32 if present")
    q.add_argument("--whole", type=float, help="whole-training-set accuracy (%%) to draw; "
                   "default: from rows of method 'whole', if any")
    q.add_argument("--output", help="file stem (default <results>/plots/<dataset>-accuracy)"
                   "; writes .png and .svg")
    q.set_defaults(func=cmd_plot)
    q = plots.add_parser("grid", parents=[common], help="image grid of a synthetic set")
    q.add_argument("file", help="a saved synthetic set (.pt)")
    q.add_argument("--output", help="PNG or SVG file (default: beside FILE, .png)")
    q.add_argument("--max-per-class", type=int, default=10)
    q.set_defaults(func=cmd_plot)

    p = sub.add_parser("teacher", parents=[common], help="train or show a DeepKKT teacher")
    p.add_argument("--dataset", default="cifar10-jpeg75")
    p.add_argument("--backbone", help="default convnet")
    p.add_argument("--epochs", type=int, help="default: the recipe's (15)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--show", action="store_true", help="only show a cached teacher")
    p.set_defaults(func=cmd_teacher)

    p = sub.add_parser("deepkkt", help="DSV generation for a soft label of two classes, or "
                       "editing an image toward a class")
    actions = p.add_subparsers(dest="action", required=True)
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--dataset", default="cifar10-jpeg75")
    shared.add_argument("--iterations", type=int, default=200)
    shared.add_argument("--teacher-epochs", type=int, help="default: the recipe's (15)")
    shared.add_argument("--seed", type=int, default=0)
    shared.add_argument("--output", default="results/deepkkt-generation")
    shared.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="DeepKKT option override (repeatable)")
    q = actions.add_parser("generate", parents=[common, shared],
                           help="images whose teacher prediction mixes two classes")
    q.add_argument("--classes", default="cat,dog", help="the two classes to mix")
    q.add_argument("--delta", type=float, default=0.5, help="weight of the second class")
    q.add_argument("--num", type=int, default=4, help="number of images")
    q.set_defaults(func=cmd_deepkkt)
    q = actions.add_parser("edit", parents=[common, shared],
                           help="edit a training image toward another class")
    q.add_argument("--index", type=int, default=0, help="training image index")
    q.add_argument("--target", default="1", help="target class (name or index)")
    q.set_defaults(func=cmd_deepkkt)
    _show_defaults(parser)
    return parser


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """Every subcommand's --help says its options' defaults (None and flags say nothing)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _show_defaults(sub)
            continue
        default, text = action.default, action.help or ""
        if (not action.option_strings or default in (None, argparse.SUPPRESS)
                or isinstance(default, bool) or "default" in text):
            continue
        shown = ",".join(map(str, default)) if isinstance(default, list) else default
        action.help = f"{text} (default: {shown})".strip()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        args.func(args)
    except (UnknownNameError, DataFileError, ValueError, FileNotFoundError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
