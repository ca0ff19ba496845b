"""Benchmark the evaluator's training loop against a plain reference loop (issue 7).

The reference trains the way the field's original evaluation code does: one ConvNet-3 at a
time in fp32, mini-batches of 256 drawn by a shuffling ``DataLoader``, DSA augmentation per
batch (one family per batch, parameters per image), SGD lr 0.01, momentum 0.9, weight decay
5e-4, lr x0.1 at half of the epochs, the loss read back after every step. It is written
here from that description; it shares only the network and the DSA module with the
evaluator, so any difference in speed comes from the loop.

In one run on one machine the script measures:

1. **Speed.** On random tensors with CIFAR-10 shapes (3x32x32, 10 classes) at each ``ipc``:
   images-epochs per second of the reference and of each evaluator variant (``fp32`` is the
   default path; ``bf16`` autocast; ``+compile`` trains through ``torch.compile``;
   ``+batched`` trains the runs as one ``vmap``-ed computation), their ratio from wall-clock
   and from process CPU time (the latter is less disturbed by other load), and the fraction
   of the machine's peak each reaches: the peak is a square matrix-multiply rate measured
   here in fp32 and bf16, and a network's training FLOPs per image come from its layer
   shapes (convolutions and linear layers; 3x the forward, less the first layer's input
   gradient, which is never computed). Each timing follows an untimed one-epoch warm-up
   (which also fills ``torch.compile``'s caches).
2. **Accuracy.** A random real subset of ``cifar10-jpeg75`` (ipc 10, from
   ``$DISTILL_BENCH_DATA``) trained by the reference and by the fastest variant at the same
   seeds (the same initial weights; each loop draws its own batches), test accuracies side
   by side, so a speed-up never costs accuracy unnoticed.

The machine (CPU model, cores, threads, torch version, GPU, load average at start and end)
goes with the results, to stdout and, with ``--output``, to a Markdown (``.md``) or JSON
(``.json``) file.

Usage (from the repository root, no installation needed):
    python benchmarks/evaluator.py --output benchmarks/results-cpu.md
    python benchmarks/evaluator.py --device cuda --output benchmarks/results-gpu.md
    python benchmarks/evaluator.py --epochs 3 --ipc 1,10 --real-epochs 5 --real-runs 1
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # runnable from a fresh clone without installing
    sys.path.insert(0, str(REPO))

from distill_bench.augment import DSA, DSAConfig, default_strategy  # noqa: E402
from distill_bench.data import RealDataset, load_dataset  # noqa: E402
from distill_bench.evaluator import evaluate, get_protocol, run_seed  # noqa: E402
from distill_bench.networks import create_backbone  # noqa: E402
from distill_bench.provenance import git_revision  # noqa: E402
from distill_bench.synthetic import Preprocessing, SyntheticSet  # noqa: E402

NUM_CLASSES = 10
IMAGE_SHAPE = (3, 32, 32)            # CIFAR-10
BACKBONE = "convnet"
REAL_DATASET = "cifar10-jpeg75"
# fp32+compile, fp32+batched and bf16+batched are options (--variants); on the 2-core CPU
# fp32+compile measured 1.04-1.06x the reference and the batched ones were slower than one
# network at a time
DEFAULT_VARIANTS = "fp32,bf16,bf16+compile"
MIN_IMAGE_EPOCHS = 5000              # per network, when --epochs is not given
PEAK_SECONDS = 1.0                   # time spent per matrix-multiply measurement


@dataclass
class Variant:
    """One way of running the evaluator, parsed from e.g. ``bf16+batched``."""
    name: str
    precision: str = "fp32"          # fp32 | bf16
    batched_runs: bool = False       # train the runs as one vmap-ed computation
    compile_model: bool = False      # train through torch.compile

    @classmethod
    def parse(cls, name: str) -> "Variant":
        parts = name.split("+")
        if parts[0] not in ("fp32", "bf16") or set(parts[1:]) - {"batched", "compile"}:
            raise ValueError(f"variant {name!r} is not known; write a precision (fp32 or "
                             f"bf16) optionally followed by '+batched' or '+compile', "
                             f"e.g. bf16+compile")
        if {"batched", "compile"} <= set(parts[1:]):
            raise ValueError(f"variant {name!r}: '+batched' and '+compile' do not combine; "
                             f"choose one")
        return cls(name, parts[0], "batched" in parts[1:], "compile" in parts[1:])

    @property
    def options(self) -> dict:
        """``evaluate``'s keyword arguments for this variant."""
        return {"precision": self.precision, "batched_runs": self.batched_runs,
                "compile_model": self.compile_model}


def usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@dataclass
class SpeedRow:
    """Training throughput of one loop at one ipc."""
    ipc: int
    loop: str                        # "reference" or an evaluator variant
    precision: str
    epochs: int
    networks: int
    wall_seconds: float
    cpu_seconds: float               # process CPU time (all threads)
    image_epochs_per_s: float = 0.0
    ratio_wall: float = 1.0          # throughput / reference throughput, wall clock
    ratio_cpu: float = 1.0           # the same from process CPU time
    gflops: float = 0.0              # achieved training FLOP rate
    peak_fraction: float = 0.0       # of the matrix-multiply peak in this precision


@dataclass
class AccuracyRow:
    """Test accuracies of one loop on the real subset."""
    loop: str
    precision: str
    test_acc: list[float] = field(default_factory=list)   # percent, one per run
    seconds: float = 0.0


# ---------------------------------------------------------------------------------------
# the machine


def cpu_model() -> str:
    """The CPU's model name, read the way every result row records it."""
    from distill_bench.provenance import hardware

    return hardware("cpu")["cpu"]


def machine(device: str) -> dict:
    """What the numbers were measured on."""
    info = {"cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "cpus_usable": usable_cpus(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "platform": platform.platform(),
            "device": device, "git": git_revision(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
        info["matmul_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
    return info


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(dtype: torch.dtype, device: str) -> float:
    """Best square matrix-multiply rate (GFLOP/s) over three ``PEAK_SECONDS`` bursts."""
    size = 8192 if torch.device(device).type == "cuda" else 2048
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    a @ b  # warm-up
    best = 0.0
    for _ in range(3):
        sync(device)
        started, count = time.perf_counter(), 0
        while time.perf_counter() - started < PEAK_SECONDS:
            for _ in range(10):  # a GPU queues these; sync once per ten
                a @ b
            count += 10
            sync(device)
        best = max(best, 2 * size ** 3 * count / (time.perf_counter() - started) / 1e9)
    return best


def training_flops(model: nn.Module, image_shape: tuple[int, ...]) -> float:
    """FLOPs to train on one image: convolutions and linear layers, from their shapes.

    Forward ``f`` = 2 x multiply-adds; training = forward + weight gradients (``f``) +
    input gradients (``f``) for every layer but the first (its input needs none).
    Normalisation, activations and pooling are left out (few FLOPs, not few seconds).
    """
    per_layer: list[float] = []

    def count(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            k = module.in_channels // module.groups * math.prod(module.kernel_size)
            per_layer.append(2.0 * output[0].numel() * k)
        elif isinstance(module, nn.Linear):
            per_layer.append(2.0 * module.in_features * module.out_features)

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(1, *image_shape))
    for hook in hooks:
        hook.remove()
    return 3 * sum(per_layer) - (per_layer[0] if per_layer else 0.0)


# ---------------------------------------------------------------------------------------
# the reference loop


def reference_train(images: torch.Tensor, labels: torch.Tensor, epochs: int, seed: int,
                    device: str) -> tuple[nn.Module, float]:
    """Train one ConvNet the plain way; returns it and its last epoch's mean loss."""
    torch.manual_seed(seed)  # the evaluator's initialisation for this seed
    net = create_backbone(BACKBONE, NUM_CLASSES, images.shape[1], images.shape[-1])
    net = net.to(device)
    shuffle = torch.Generator().manual_seed(seed)
    loader = DataLoader(TensorDataset(images, labels), batch_size=256, shuffle=True,
                        generator=shuffle)
    dsa = DSA(DSAConfig(strategy=default_strategy(images.shape[1])))
    draws = torch.Generator(device).manual_seed(seed)
    lr = 0.01
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    loss_avg = float("nan")
    for epoch in range(epochs):
        if epoch == epochs // 2:  # x0.1 once, at half
            for group in optimizer.param_groups:
                group["lr"] = lr * 0.1
        net.train()
        loss_sum, seen = 0.0, 0
        for x, y in loader:
            x = dsa(x, draws)
            loss = F.cross_entropy(net(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(y)
            seen += len(y)
        loss_avg = loss_sum / seen
    return net, loss_avg


@torch.no_grad()
def reference_test(net: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Test accuracy (percent) in batches of 500, fp32."""
    net.eval()
    correct = 0
    for start in range(0, len(images), 500):
        logits = net(images[start:start + 500])
        correct += int((logits.argmax(1) == labels[start:start + 500]).sum())
    return 100.0 * correct / len(images)


# ---------------------------------------------------------------------------------------
# the speed measurement


def random_set(ipc: int, device: str) -> tuple[SyntheticSet, RealDataset]:
    """Random images with CIFAR-10 shapes as a synthetic set, and a stand-in dataset
    (10 test images, so testing costs nothing) for ``evaluate``."""
    gen = torch.Generator().manual_seed(ipc)
    images = torch.randn(NUM_CLASSES * ipc, *IMAGE_SHAPE, generator=gen)
    labels = torch.arange(NUM_CLASSES).repeat_interleave(ipc)
    stats = (0.5,) * IMAGE_SHAPE[0], (0.25,) * IMAGE_SHAPE[0]
    few = torch.randint(0, 256, (NUM_CLASSES, *IMAGE_SHAPE), generator=gen,
                        dtype=torch.uint8)
    classes = [f"class{c}" for c in range(NUM_CLASSES)]
    data = RealDataset("random-cifar-shapes", few, torch.arange(NUM_CLASSES), few,
                       torch.arange(NUM_CLASSES), classes, "0" * 64, "memory", *stats)
    syn = SyntheticSet(images, labels, NUM_CLASSES, data.name, Preprocessing(*stats))
    return syn, data


def timed(fn, device: str) -> tuple[float, float, object]:
    sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu, out


def time_reference(syn: SyntheticSet, epochs: int, networks: int, device: str) -> SpeedRow:
    images, labels = syn.syn_images.to(device), syn.syn_labels.to(device)
    reference_train(images, labels, 1, 0, device)  # warm-up

    def train_all():
        for run in range(networks):
            reference_train(images, labels, epochs, run_seed(0, run), device)
    wall, cpu, _ = timed(train_all, device)
    return SpeedRow(syn.ipc, "reference", "fp32", epochs, networks, wall, cpu)


def time_variant(variant: Variant, syn: SyntheticSet, data: RealDataset, epochs: int,
                 networks: int, device: str) -> SpeedRow:
    protocol = get_protocol("standard", epochs=epochs, num_eval_runs=networks)

    def run(p):
        return evaluate(syn, data, p, BACKBONE, seed=0, device=device, progress=False,
                        **variant.options)
    run(protocol.replace(epochs=1))  # warm-up
    wall, cpu, _ = timed(lambda: run(protocol), device)  # testing 10 images: negligible
    return SpeedRow(syn.ipc, variant.name, variant.precision, epochs, networks, wall, cpu)


def finish_rows(rows: list[SpeedRow], flops: float, peaks: dict[str, float]) -> None:
    """Fill in throughput, ratios to the reference and the fraction of the peak."""
    refs = {r.ipc: r for r in rows if r.loop == "reference"}
    for row in rows:
        images = NUM_CLASSES * row.ipc * row.epochs * row.networks
        row.image_epochs_per_s = images / row.wall_seconds
        row.gflops = row.image_epochs_per_s * flops / 1e9
        row.peak_fraction = row.gflops / peaks[row.precision]
        ref = refs.get(row.ipc)
        if ref is not None:
            ref_images = NUM_CLASSES * ref.ipc * ref.epochs * ref.networks
            row.ratio_wall = row.image_epochs_per_s / (ref_images / ref.wall_seconds)
            row.ratio_cpu = (images / row.cpu_seconds) / (ref_images / ref.cpu_seconds)


def default_epochs(ipc: int) -> int:
    """At least 20 epochs and ``MIN_IMAGE_EPOCHS`` images-epochs per network."""
    return max(20, math.ceil(MIN_IMAGE_EPOCHS / (NUM_CLASSES * ipc)))


def measure_speed(args, variants: list[Variant], flops: float,
                  peaks: dict[str, float]) -> list[SpeedRow]:
    rows = []
    for ipc in args.ipc:
        epochs = args.epochs or default_epochs(ipc)
        syn, data = random_set(ipc, args.device)
        print(f"# speed: ipc {ipc}, {epochs} epochs, {args.networks} networks per loop",
              flush=True)
        loops = [("reference", None)] + [(v.name, v) for v in variants]
        for name, variant in loops:
            if variant is None:
                row = time_reference(syn, epochs, args.networks, args.device)
            else:
                row = time_variant(variant, syn, data, epochs, args.networks, args.device)
            print(f"#   {name}: {row.wall_seconds:.1f} s", flush=True)
            rows.append(row)
    finish_rows(rows, flops, peaks)
    return rows


# ---------------------------------------------------------------------------------------
# the accuracy comparison


def real_subset(data: RealDataset, ipc: int, seed: int) -> SyntheticSet:
    """``ipc`` random training images per class, normalised, as a synthetic set."""
    gen = torch.Generator().manual_seed(seed)
    picked = []
    for c in range(data.num_classes):
        pool = (data.train_labels == c).nonzero().flatten()
        picked.append(pool[torch.randperm(len(pool), generator=gen)[:ipc]])
    idx = torch.cat(picked)
    prep = Preprocessing(data.mean, data.std)
    return SyntheticSet(prep(data.train_images[idx]), data.train_labels[idx].clone(),
                        data.num_classes, data.name, prep)


def first_test_images(data: RealDataset, per_class: int) -> RealDataset:
    """``data`` with only the first ``per_class`` test images of each class."""
    keep = torch.cat([(data.test_labels == c).nonzero().flatten()[:per_class]
                      for c in range(data.num_classes)]).sort().values
    return dataclasses.replace(data, test_images=data.test_images[keep],
                               test_labels=data.test_labels[keep])


def compare_accuracy(args, variant: Variant) -> list[AccuracyRow]:
    data = load_dataset(REAL_DATASET, args.data_root)
    if args.real_test_per_class:
        data = first_test_images(data, args.real_test_per_class)
    syn = real_subset(data, args.real_ipc, args.seed)
    x_test = syn.preprocessing(data.test_images).to(args.device)
    y_test = data.test_labels.to(args.device)
    images, labels = syn.syn_images.to(args.device), syn.syn_labels.to(args.device)
    print(f"# accuracy: {REAL_DATASET} random subset, ipc {args.real_ipc}, "
          f"{args.real_epochs} epochs, {args.real_runs} runs per loop, "
          f"{len(y_test)} test images", flush=True)

    ref = AccuracyRow("reference", "fp32")
    started = time.perf_counter()
    for run in range(args.real_runs):
        net, _ = reference_train(images, labels, args.real_epochs,
                                 run_seed(args.seed, run), args.device)
        ref.test_acc.append(reference_test(net, x_test, y_test))
        print(f"#   reference run {run}: {ref.test_acc[-1]:.2f}%", flush=True)
    ref.seconds = time.perf_counter() - started

    ours = AccuracyRow(variant.name, variant.precision)
    protocol = get_protocol("standard", epochs=args.real_epochs,
                            num_eval_runs=args.real_runs)
    started = time.perf_counter()

    def report_run(result) -> None:
        ours.test_acc.append(result.test_acc)
        print(f"#   {variant.name} run {result.run}: {result.test_acc:.2f}%", flush=True)
    evaluate(syn, data, protocol, BACKBONE, seed=args.seed, device=args.device,
             progress=False, on_run=report_run, **variant.options)
    ours.seconds = time.perf_counter() - started
    return [ref, ours]


def fastest(rows: list[SpeedRow], prefer_ipc: int = 10) -> str:
    """The variant with the best wall-clock ratio at ``prefer_ipc`` (else the first ipc)."""
    ours = [r for r in rows if r.loop != "reference"]
    at = [r for r in ours if r.ipc == prefer_ipc] or [r for r in ours if r.ipc == ours[0].ipc]
    return max(at, key=lambda r: r.ratio_wall).loop


# ---------------------------------------------------------------------------------------
# reporting


def mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def speed_table(rows: list[SpeedRow]) -> list[str]:
    lines = ["| ipc | loop | epochs | networks | images-epochs/s | x reference (wall) "
             "| x reference (CPU time) | GFLOP/s | of peak |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.ipc} | {r.loop} | {r.epochs} | {r.networks} "
                     f"| {r.image_epochs_per_s:.1f} | {r.ratio_wall:.2f} | {r.ratio_cpu:.2f} "
                     f"| {r.gflops:.1f} | {100 * r.peak_fraction:.0f}% |")
    return lines


def accuracy_table(rows: list[AccuracyRow]) -> list[str]:
    lines = ["| loop | precision | test accuracy % (mean ± std) | runs | seconds |",
             "|---|---|---|---|---:|"]
    for r in rows:
        mean, std = mean_std(r.test_acc)
        runs = ", ".join(f"{a:.2f}" for a in r.test_acc)
        lines.append(f"| {r.loop} | {r.precision} | {mean:.2f} ± {std:.2f} | {runs} "
                     f"| {r.seconds:.0f} |")
    if len(rows) == 2 and rows[0].test_acc and rows[1].test_acc:
        (m0, s0), (m1, s1) = mean_std(rows[0].test_acc), mean_std(rows[1].test_acc)
        within = abs(m1 - m0) <= max(s0, s1)
        lines.append("")
        lines.append(f"Difference {m1 - m0:+.2f} points: "
                     f"{'within' if within else 'NOT within'} one standard deviation "
                     f"({max(s0, s1):.2f}).")
    return lines


def machine_lines(info: dict) -> list[str]:
    keys = ["cpu", "cpu_count", "cpus_usable", "gpu", "torch", "torch_threads", "python",
            "platform", "device", "cudnn_allow_tf32", "git", "date", "load_average_start",
            "load_average_end", "peak_gflops_fp32", "peak_gflops_bf16",
            "train_gflop_per_image", "seconds"]
    return [f"- {k}: {info[k]}" for k in keys if k in info]


def report(info: dict, speed: list[SpeedRow], acc: list[AccuracyRow]) -> str:
    parts = ["# Evaluator benchmark", "", "Command: `" + info["command"] + "`", "",
             "## Machine", "", *machine_lines(info), ""]
    if speed:
        parts += ["## Training speed (random CIFAR-10-shaped sets)", "", *speed_table(speed),
                  ""]
    if acc:
        parts += [f"## Accuracy ({REAL_DATASET}, random subset)", "", *accuracy_table(acc),
                  ""]
    return "\n".join(parts)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs per speed measurement (default: at least 20 and "
                        f"{MIN_IMAGE_EPOCHS} images-epochs per network)")
    p.add_argument("--ipc", default="1,10,50", help="comma-separated ipc values")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--output", help="also write the report here (.md or .json)")
    p.add_argument("--variants", default=DEFAULT_VARIANTS,
                   help=f"evaluator variants to time (default {DEFAULT_VARIANTS})")
    p.add_argument("--networks", type=int, default=5,
                   help="networks trained per loop and ipc (the protocol's 5 runs)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default all)")
    p.add_argument("--real-ipc", type=int, default=10)
    p.add_argument("--real-epochs", type=int, default=1000,
                   help="epochs of the accuracy comparison (0 skips it)")
    p.add_argument("--real-runs", type=int, default=5)
    p.add_argument("--real-test-per-class", type=int, default=0,
                   help="test on the first N test images of each class (default 0: all)")
    p.add_argument("--real-variant", default="fastest",
                   help="evaluator variant compared for accuracy (default: the fastest "
                        "at ipc 10 in this run)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-root", default=None,
                   help="data folder (default $DISTILL_BENCH_DATA)")
    args = p.parse_args(argv)
    try:
        args.ipc = [int(v) for v in args.ipc.split(",") if v.strip()]
    except ValueError:
        p.error(f"--ipc {args.ipc!r}: give comma-separated integers, e.g. 1,10,50")
    if any(i < 1 for i in args.ipc):
        p.error(f"--ipc {args.ipc}: every ipc must be >= 1")
    if args.epochs is not None and args.epochs < 1:
        p.error(f"--epochs {args.epochs}: must be >= 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {args.device}: no CUDA device is available; use --device cpu")
    try:
        args.variant_list = [Variant.parse(v) for v in args.variants.split(",") if v]
    except ValueError as err:
        p.error(str(err))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    info = machine(args.device)
    info["command"] = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if argv is None \
        else " ".join(["evaluator.py", *argv])
    info["load_average_start"] = load_average()
    peaks = {"fp32": matmul_peak(torch.float32, args.device),
             "bf16": matmul_peak(torch.bfloat16, args.device)}
    flops = training_flops(create_backbone(BACKBONE, NUM_CLASSES, 3, 32), IMAGE_SHAPE)
    info.update(peak_gflops_fp32=round(peaks["fp32"], 1),
                peak_gflops_bf16=round(peaks["bf16"], 1),
                train_gflop_per_image=round(flops / 1e9, 4))
    print(f"# peak matmul: {peaks['fp32']:.1f} GFLOP/s fp32, {peaks['bf16']:.1f} bf16; "
          f"ConvNet-3 training {flops / 1e9:.4f} GFLOP/image", flush=True)

    speed = measure_speed(args, args.variant_list, flops, peaks) if args.ipc else []
    acc = []
    if args.real_epochs > 0:
        name = fastest(speed) if (args.real_variant == "fastest" and speed) else \
            (args.variant_list[0].name if args.real_variant == "fastest"
             else args.real_variant)
        acc = compare_accuracy(args, Variant.parse(name))

    info["load_average_end"] = load_average()
    info["seconds"] = round(time.perf_counter() - started, 1)
    text = report(info, speed, acc)
    print(text)
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix == ".json":
            blob = {"machine": info, "speed": [asdict(r) for r in speed],
                    "accuracy": [asdict(r) for r in acc]}
            out.write_text(json.dumps(blob, indent=2) + "\n")
        else:
            out.write_text(text + "\n")
        print(f"# written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
