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
"""
from __future__ import annotations

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
from distill_bench.training import accuracy, train_epoch

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
             device: str = "cpu", progress: bool = True, on_run=None) -> list[EvalRun]:
    """Train ``protocol.num_eval_runs`` fresh networks on ``syn``; test each on ``data``.

    Args:
        runs: run indices to do (default all); lets an interrupted cell resume.
        on_run: called with each ``EvalRun`` as soon as it finishes (to store it at once).
    """
    if syn.dataset != data.name:
        raise ValueError(f"synthetic set is for dataset {syn.dataset!r}, not {data.name!r}")
    runs = list(range(protocol.num_eval_runs)) if runs is None else runs
    x_syn, y_syn = syn.syn_images.to(device), syn.syn_labels.to(device)
    x_test = syn.preprocessing(data.test_images).to(device)
    y_test = data.test_labels.to(device)
    lr = syn.eval_lr if (syn.eval_lr is not None and protocol.use_learned_lr) else protocol.lr
    augment = None
    if protocol.augment == "dsa" and syn.eval_augment != "none":
        dsa = DSA(DSAConfig(strategy=default_strategy(data.channels)))
        augment = lambda x, g: dsa(x, g)  # noqa: E731  (per-image draws)
    elif protocol.augment not in ("dsa", "none"):
        raise ValueError(f"protocol augment={protocol.augment!r}; choose dsa or none")
    decay_epoch = int(protocol.epochs * protocol.lr_decay_at)

    results = []
    for run in runs:
        started = time.time()
        torch.manual_seed(run_seed(seed, run))
        gen = torch.Generator(device).manual_seed(run_seed(seed, run))
        model = create_backbone(backbone, data.num_classes, data.channels,
                                data.image_size).to(device)
        opt = _optimizer(protocol, model.parameters(), lr)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, [decay_epoch], 0.1)
        epochs = range(protocol.epochs)
        if progress:
            from tqdm.auto import tqdm
            epochs = tqdm(epochs, desc=f"eval run {run}", leave=False, unit="ep")
        loss = float("nan")
        for _ in epochs:
            loss = train_epoch(model, x_syn, y_syn, opt, protocol.batch_size, gen,
                               augment, precision)
            sched.step()
        if loss != loss or loss == float("inf"):
            raise FloatingPointError(f"evaluation run {run} diverged (loss {loss}); "
                                     f"lr {lr} may be too large for this set")
        acc, per_class = accuracy(model, x_test, y_test, data.num_classes,
                                  protocol.test_batch_size, precision)
        result = EvalRun(run, 100 * acc, [100 * a for a in per_class], loss,
                         time.time() - started)
        logger.info("eval run %d: test acc %.2f%%  final loss %.4f  %.0f s",
                    run, result.test_acc, loss, result.seconds)
        results.append(result)
        if on_run is not None:
            on_run(result)
    return results
