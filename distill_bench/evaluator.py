"""The evaluator: train fresh networks on a synthetic set, report final test accuracy.

Protocols are named presets, written into every result row:

| protocol | epochs | augmentation | optimiser | runs | comparable |
|---|---|---|---|---|---|
| ``standard`` | 1000 | DSA, per image | SGD lr 0.01, momentum 0.9, wd 5e-4, x0.1 at half | 5 | yes |
| ``dc``       | 300  | none | same | 5 | yes (DC's own protocol) |
| ``dsv-paper``| 1000 | DSA | Adam lr 1e-4 (Deep Support Vectors' retraining) | 5 | paper preset |
| ``quick``    | 300  | DSA | as standard | 2 | **no**: a CPU smoke-test size |

The accuracy reported is the final network's (never the best over checkpoints, which would
select on the test set). A learned learning rate carried by the set replaces the protocol's;
its preprocessing (normalisation, ZCA) is applied to the test images.

Speed options of ``evaluate`` (issue 7; ``benchmarks/evaluator.py`` measures them against a
plain reference loop). Each one that changes numerics is an argument, to be recorded with
the result:

- ``precision="bf16"``: autocast forward and backward (about 1.5-2x on a CPU with bf16
  instructions).
- ``batched_runs=True``: the runs train together as one ``torch.func.vmap`` computation
  (``training.StackedModels``). Each run draws the same batches, augmentations and initial
  weights as when trained alone, so results differ only by floating-point summation order;
  runs finish (and reach ``on_run``) together, and each one's ``seconds`` is the shared time
  divided by the number of runs. It removes per-run Python and kernel-launch overhead, which
  is what limits a GPU at small ``ipc``; on CPU the grouped convolutions it turns into were
  slower than one network at a time.
- ``compile_model=True``: train through ``torch.compile`` (one compiled network per
  evaluation, reused by its runs; the first call of each batch shape compiles, which takes
  seconds to a minute and needs a C++ compiler on CPU). On CPU at ipc 1 it took a ConvNet-3
  step from 25.7 to 20.4 ms in bf16 and from 42.7 to 37.4 ms in fp32 (its own fusion
  replaces ``Pool2x2`` there).

Always on, as they leave every result bit-identical: 2x2 average pooling by
``training.Pool2x2`` on CPU (5-13% off a ConvNet-3 step at ipc 1), and loss sums kept on the
device (no synchronisation per step).
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import time
from dataclasses import dataclass

import torch

from distill_bench.augment import DSA, DSAConfig, default_strategy
from distill_bench.data import RealDataset
from distill_bench.networks import create_backbone
from distill_bench.registry import Registry
from distill_bench.synthetic import SyntheticSet
from distill_bench.training import (StackedModels, accuracy, train_epoch,
                                    train_epoch_stacked, use_fast_pooling)

logger = logging.getLogger(__name__)

PROTOCOLS = Registry("protocol")


@dataclass(frozen=True)
class Protocol:
    """An evaluation protocol; every field is recorded with each result."""
    name: str
    epochs: int = 1000
    optimizer: str = "sgd"          # sgd | adam
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_decay_at: float = 0.5        # fraction of epochs where lr is multiplied by 0.1
    batch_size: int = 256
    num_eval_runs: int = 5
    augment: str = "dsa"            # dsa | none
    use_learned_lr: bool = True
    comparable: bool = True         # False: never compare with published numbers
    test_batch_size: int = 500

    def replace(self, **changes) -> "Protocol":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


for _p in (Protocol("standard"),
           Protocol("dc", epochs=300, augment="none"),
           Protocol("dsv-paper", optimizer="adam", lr=1e-4, momentum=0.0, weight_decay=0.0,
                    lr_decay_at=1.0),
           Protocol("quick", epochs=300, num_eval_runs=2, comparable=False)):
    PROTOCOLS.register(_p.name, _p)


def get_protocol(name: str, **overrides) -> Protocol:
    """A preset by name with overrides (``None`` values ignored). The runner marks rows of
    an overridden protocol not comparable, whatever the override."""
    base: Protocol = PROTOCOLS.get(name)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return base.replace(**overrides) if overrides else base


def list_protocols(pattern: str = "*") -> list[str]:
    return PROTOCOLS.list(pattern)


@dataclass
class EvalRun:
    """One trained network's outcome."""
    run: int
    test_acc: float            # percent
    test_acc_per_class: list[float]
    train_loss: float
    seconds: float


def _optimizer(protocol: Protocol, params, lr: float) -> torch.optim.Optimizer:
    if protocol.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=protocol.momentum,
                               weight_decay=protocol.weight_decay)
    if protocol.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=protocol.weight_decay)
    raise ValueError(f"protocol optimizer={protocol.optimizer!r}; choose sgd or adam")


def run_seed(seed: int, run: int) -> int:
    """The seed of evaluation run ``run`` of a cell seeded ``seed`` (stable, distinct)."""
    return seed * 1000 + run


def evaluate(syn: SyntheticSet, data: RealDataset, protocol: Protocol, backbone: str = "convnet",
             seed: int = 0, runs: list[int] | None = None, precision: str = "fp32",
             device: str = "cpu", progress: bool = True, on_run=None,
             batched_runs: bool = False, compile_model: bool = False) -> list[EvalRun]:
    """Train ``protocol.num_eval_runs`` fresh networks on ``syn``; test each on ``data``.

    Args:
        runs: run indices to do (default all); lets an interrupted cell resume.
        on_run: called with each ``EvalRun`` as soon as it finishes (to store it at once).
        batched_runs: train the runs together as one batched computation (see the module
            docstring); changes numerics slightly, so record it with the results.
        compile_model: train through ``torch.compile`` (see the module docstring); changes
            numerics slightly, so record it with the results.
    """
    if syn.dataset != data.name:
        raise ValueError(f"synthetic set is for dataset {syn.dataset!r}, not {data.name!r}")
    if batched_runs and compile_model:
        raise ValueError("batched_runs=True with compile_model=True is not supported; "
                         "choose one (batched_runs for a GPU, compile_model for a CPU)")
    runs = list(range(protocol.num_eval_runs)) if runs is None else runs
    job = _Job(syn, data, protocol, backbone, seed, precision, device, progress,
               compile_model)
    groups = ([runs] if runs else []) if batched_runs else [[run] for run in runs]
    results = []
    for group in groups:
        for result in job.train_and_test(group):
            logger.info("eval run %d: test acc %.2f%%  final loss %.4f  %.0f s", result.run,
                        result.test_acc, result.train_loss, result.seconds)
            results.append(result)
            if on_run is not None:
                on_run(result)
    return results


class _Job:
    """One synthetic set under one protocol: what every evaluation run shares."""

    def __init__(self, syn: SyntheticSet, data: RealDataset, protocol: Protocol,
                 backbone: str, seed: int, precision: str, device: str, progress: bool,
                 compile_model: bool = False):
        self.data, self.protocol, self.backbone = data, protocol, backbone
        self.seed, self.precision, self.device = seed, precision, device
        self.progress, self.compile_model = progress, compile_model
        self.compiled: tuple[torch.nn.Module, torch.nn.Module] | None = None
        self.x_syn, self.y_syn = syn.syn_images.to(device), syn.syn_labels.to(device)
        self.x_test = syn.preprocessing(data.test_images).to(device)
        self.y_test = data.test_labels.to(device)
        learned = syn.eval_lr is not None and protocol.use_learned_lr
        self.lr = syn.eval_lr if learned else protocol.lr
        self.augment = None
        if protocol.augment == "dsa" and syn.eval_augment != "none":
            # called as augment(x, generator): per-image draws
            self.augment = DSA(DSAConfig(strategy=default_strategy(data.channels)))
        elif protocol.augment not in ("dsa", "none"):
            raise ValueError(f"protocol augment={protocol.augment!r}; choose dsa or none")
        self.decay_epoch = int(protocol.epochs * protocol.lr_decay_at)

    def network(self, run: int) -> tuple[torch.nn.Module, torch.Generator]:
        """Run ``run``'s freshly initialised network and its private generator."""
        torch.manual_seed(run_seed(self.seed, run))
        gen = torch.Generator(self.device).manual_seed(run_seed(self.seed, run))
        data = self.data
        model = create_backbone(self.backbone, data.num_classes, data.channels,
                                data.image_size).to(self.device)
        if torch.device(self.device).type == "cpu" and not self.compile_model:
            use_fast_pooling(model)  # bit-identical results, faster on CPU
        return model, gen

    def epochs(self, runs: list[int]):
        epochs = range(self.protocol.epochs)
        if self.progress:
            from tqdm.auto import tqdm
            label = ",".join(map(str, runs))
            epochs = tqdm(epochs, desc=f"eval run {label}", leave=False, unit="ep")
        return epochs

    def trainee(self, model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
        """The module whose parameters train, and what computes its forward: ``model``
        itself, or (``compile_model``) one compiled network that every run of the job
        reuses, so it is compiled once per batch shape, not once per run."""
        if not self.compile_model:
            return model, model
        if self.compiled is None:
            host = copy.deepcopy(model)
            self.compiled = host, torch.compile(host, dynamic=False)
        host, forward = self.compiled
        host.load_state_dict(model.state_dict())
        return host, forward

    def train(self, runs: list[int]) -> tuple[list[torch.nn.Module], list[float]]:
        """Train the networks of ``runs``: one alone, or several stacked."""
        models, gens = zip(*(self.network(run) for run in runs))
        stacked = StackedModels(list(models)) if len(runs) > 1 else None
        host, forward = self.trainee(models[0])
        params = stacked.parameters() if stacked is not None else host.parameters()
        opt = _optimizer(self.protocol, params, self.lr)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, [self.decay_epoch], 0.1)
        batch = self.protocol.batch_size
        losses = [float("nan")] * len(runs)
        for _ in self.epochs(runs):
            if stacked is not None:
                losses = train_epoch_stacked(stacked, self.x_syn, self.y_syn, opt, batch,
                                             list(gens), self.augment, self.precision)
            else:
                losses = [train_epoch(forward, self.x_syn, self.y_syn, opt, batch,
                                      gens[0], self.augment, self.precision)]
            sched.step()
        if stacked is not None:
            stacked.unstack()
        if host is not models[0]:
            models[0].load_state_dict(host.state_dict())
        for run, loss in zip(runs, losses):
            if loss != loss or loss == float("inf"):
                raise FloatingPointError(f"evaluation run {run} diverged (loss {loss}); "
                                         f"lr {self.lr} may be too large for this set")
        return list(models), losses

    def train_and_test(self, runs: list[int]) -> list[EvalRun]:
        """Train the networks of ``runs`` together, then test each one."""
        started = time.time()
        models, losses = self.train(runs)
        tests = [accuracy(model, self.x_test, self.y_test, self.data.num_classes,
                          self.protocol.test_batch_size, self.precision) for model in models]
        share = (time.time() - started) / len(runs)  # stacked runs share their time
        return [EvalRun(run, 100 * acc, [100 * a for a in per_class], loss, share)
                for run, (acc, per_class), loss in zip(runs, tests, losses)]
