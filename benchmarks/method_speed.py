"""Time the methods' distillation loops per iteration, and project their paper budgets.

For each method and ``ipc`` the script distils twice from the same real subset of
``cifar10-jpeg75`` (``--shots`` images per class), once with ``--short`` iterations and once
with ``--short + --extra``, in fresh temporary folders (no checkpoint is reused), and reports:

- seconds per iteration, ``(t_long - t_short) / extra``: what an iteration costs once the
  method is set up;
- set-up seconds, ``t_short - short x per-iteration``: teacher loading, expert training,
  candidate initialisation, repair, saving;
- the iterations of the method's default budget (the papers' for DC, DSA and DM; ours for
  DeepKKT; the ``cpu`` preset for MTT) and the hours they take at that rate here.

With ``--profile`` the longer run of each method also goes through ``torch.profiler`` and
the operators with the most CPU time are printed: where an iteration's time goes.

An untimed one-iteration run comes first (it loads the teacher and trains MTT's experts: 1
expert on the shots subset, in a temporary cache). DeepKKT needs the committed teacher
(``results/teachers``, or ``$DISTILL_BENCH_TEACHERS``).

Usage (from the repository root, no installation needed):
    python benchmarks/method_speed.py --output benchmarks/method-speed-cpu.md
    python benchmarks/method_speed.py --methods dm,dc --ipc 1 --shots 1 --extra 5
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # runnable from a fresh clone without installing
    sys.path.insert(0, str(REPO))

from distill_bench.budget import real_subset  # noqa: E402
from distill_bench.data import load_dataset  # noqa: E402
from distill_bench.method import RunContext, create_method  # noqa: E402
from distill_bench.provenance import git_revision, hardware  # noqa: E402

DATASET = "cifar10-jpeg75"
DEFAULT_METHODS = "deepkkt,dc,dsa,dm,mtt"
# options that keep each timing small and comparable; iterations are set by the script
SMALL = {"deepkkt": {"log_every": 10 ** 6, "checkpoint_every": 0, "repair_steps": 0},
         "dc": {"checkpoint_every": 0}, "dsa": {"checkpoint_every": 0},
         "dm": {"checkpoint_every": 0},
         "mtt": {"checkpoint_every": 0, "num_experts": 1}}


@dataclass
class Timing:
    method: str
    ipc: int
    shots: int
    short_seconds: float
    long_seconds: float
    extra: int
    short: int
    budget_iterations: int | None

    @property
    def per_iteration(self) -> float:
        return (self.long_seconds - self.short_seconds) / self.extra

    @property
    def setup(self) -> float:
        return max(0.0, self.short_seconds - self.short * self.per_iteration)

    @property
    def budget_hours(self) -> float | None:
        if not self.budget_iterations:
            return None
        return self.budget_iterations * self.per_iteration / 3600


def distill_seconds(name: str, options: dict, real, ipc: int, data, device: str,
                    profile: bool = False) -> float:
    method = create_method(name, **options)
    with tempfile.TemporaryDirectory(prefix="distill-bench-methods-") as tmp:
        context = RunContext(torch.device(device), Path(tmp), teacher_data=lambda: data,
                             artifacts_dir=Path(tmp) / "artifacts", progress=False)
        torch.manual_seed(0)
        started = time.perf_counter()
        if profile:
            from torch.profiler import ProfilerActivity, profile as torch_profile
            with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                method.distill(real, ipc, 0, context)
            seconds = time.perf_counter() - started
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
            return seconds
        method.distill(real, ipc, 0, context)
        return time.perf_counter() - started


def default_iterations(name: str, ipc: int) -> int | None:
    """Iterations of the method's default config at ``ipc`` (a config with unset fields,
    as MTT's, fills them through its ``resolve``)."""
    config = create_method(name).config
    if hasattr(config, "resolve"):
        config = config.resolve(ipc)
    return getattr(config, "iterations", None)


def time_method(name: str, ipc: int, shots: int, data, args: argparse.Namespace) -> Timing:
    real = real_subset(data, shots, seed=0)
    options = dict(SMALL.get(name, {}))
    # untimed warm-up: loads the teacher, trains and caches MTT's experts, fills caches
    seconds = distill_seconds(name, {**options, "iterations": 1}, real, ipc, data, args.device)
    print(f"#   {name} ipc {ipc}: warm-up (1 iteration) in {seconds:.1f} s", flush=True)
    times = []
    for i, count in enumerate((args.short, args.short + args.extra)):
        seconds = distill_seconds(name, {**options, "iterations": count}, real, ipc, data,
                                  args.device, profile=args.profile and i == 1)
        print(f"#   {name} ipc {ipc}: {count} iterations in {seconds:.1f} s", flush=True)
        times.append(seconds)
    return Timing(name, ipc, shots, times[0], times[1], args.extra, args.short,
                  default_iterations(name, ipc))


def report(rows: list[Timing], info: dict) -> str:
    lines = ["# Method benchmark", "", f"Command: `{info['command']}`", "",
             "## Machine", "", *[f"- {k}: {v}" for k, v in info.items() if k != "command"],
             "", f"## Seconds per iteration ({info['dataset']}, distilling from the shots "
             "subset)", "",
             "| method | ipc | shots | s / iteration | set-up s | default iterations "
             "| hours at that budget |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        hours = "-" if r.budget_hours is None else f"{r.budget_hours:.2f}"
        lines.append(f"| {r.method} | {r.ipc} | {r.shots} | {r.per_iteration:.3f} "
                     f"| {r.setup:.1f} | {r.budget_iterations or '-'} | {hours} |")
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default=DEFAULT_METHODS, help="comma-separated methods")
    p.add_argument("--ipc", default="1,10", help="comma-separated ipc values")
    p.add_argument("--shots", type=int, default=10, help="real images per class (>= ipc)")
    p.add_argument("--short", type=int, default=1, help="iterations of the first run")
    p.add_argument("--extra", type=int, default=10, help="more iterations in the second")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default all)")
    p.add_argument("--profile", action="store_true", help="print the top operators")
    p.add_argument("--output", help="also write the report (Markdown) here")
    p.add_argument("--dataset", default=DATASET)
    p.add_argument("--data-root", default=None, help="default $DISTILL_BENCH_DATA")
    args = p.parse_args(argv)
    args.methods = [m for m in args.methods.split(",") if m]
    args.ipc = [int(v) for v in args.ipc.split(",") if v]
    if args.extra < 1 or args.short < 1:
        p.error("--short and --extra must be >= 1")
    if any(i > args.shots for i in args.ipc):
        p.error(f"--shots {args.shots} is below an ipc of {args.ipc}; use shots >= ipc")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("DISTILL_BENCH_TEACHERS", str(REPO / "results" / "teachers"))
    data = load_dataset(args.dataset, args.data_root)
    info = {"command": " ".join(["method_speed.py", *(argv if argv is not None else sys.argv[1:])]),
            "cpu": hardware(args.device).get("cpu"), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "device": args.device,
            "dataset": args.dataset, "git": git_revision(),
            "load_average_start": [round(x, 2) for x in os.getloadavg()]}
    rows = []
    # the data is loaded: a temporary cache now only receives MTT's experts
    with tempfile.TemporaryDirectory(prefix="distill-bench-experts-") as cache:
        os.environ["DISTILL_BENCH_CACHE"] = cache
        for name in args.methods:
            for ipc in args.ipc:
                rows.append(time_method(name, ipc, args.shots, data, args))
    info["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    text = report(rows, info)
    print(text)
    if args.output:
        Path(args.output).write_text(text)
        print(f"# written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
