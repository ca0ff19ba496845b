"""What the matching baselines (DC, DSA, DM) share: the outer loop over iterations.

DC (Zhao et al., ICLR 2021), DSA (Zhao & Bilen, ICML 2021) and DM (Zhao & Bilen, WACV
2023) all learn ``ipc`` images per class by SGD on the pixels: each iteration draws a fresh
randomly initialised network and real class batches, computes a matching loss against the
synthetic images and takes one (DM) or several (DC's outer loop) optimiser steps on them.
``MatchingMethod`` runs that loop; subclasses implement ``iteration``.

Shared conventions:
- Randomness comes from one private ``torch.Generator`` seeded by the cell's seed: real
  batches, augmentation draws, and the seed of each fresh network (built under a forked
  global RNG, so the caller's global state is left as it was).
- State (images, optimiser, generator, iteration, loss curve) is saved every
  ``checkpoint_every`` iterations in ``context.workdir`` and at the end; a rerun resumes from
  it and gives the same images as an uninterrupted run. The checkpoint key leaves out
  ``iterations``, so a longer run continues a shorter finished one.
- Real batches are drawn without replacement from the ``shots`` subset; a class with fewer
  than ``batch_real`` images contributes all of them.
- ``init="real"`` needs at least ``ipc`` real images per class and raises otherwise
  (naming ``shots`` and ``ipc``); ``init="noise"`` starts from N(0, 1) in normalised space.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from distill_bench.augment import DSA as Augmentation
from distill_bench.augment import DSAConfig as AugmentationConfig
from distill_bench.augment import default_strategy
from distill_bench.checkpoint import Checkpoint, rng_state, set_rng_state
from distill_bench.method import (DistillationMethod, MethodConfig, RealSubset,
                                  RunContext)
from distill_bench.networks import create_backbone
from distill_bench.results import config_hash
from distill_bench.synthetic import SyntheticSet

logger = logging.getLogger(__name__)

INITS = ("real", "noise")
BN_REAL_PER_CLASS = 16  # real images per class that set BatchNorm statistics (DC's value)


@dataclass
class MatchingConfig(MethodConfig):
    """Settings every matching baseline has (subclasses set the papers' defaults)."""
    iterations: int = 1000          # outer iterations, each with a fresh network
    batch_real: int = 256           # real images per class and matching step
    lr_img: float = 0.1             # SGD learning rate on the pixels
    momentum: float = 0.5           # SGD momentum on the pixels
    init: str = "real"              # "real" (ipc real images per class) or "noise"
    dsa_strategy: str = "auto"      # "auto" (dataset's DSA default), "none", or families
    backbone: str = "convnet"       # network drawn afresh every iteration
    width: int | None = None        # its width (None: the backbone's default, 128)
    checkpoint_every: int = 10      # iterations between saved states (0: never)

    def __post_init__(self):
        _check_int("iterations", self.iterations, 0)
        _check_int("batch_real", self.batch_real, 1)
        _check_int("checkpoint_every", self.checkpoint_every, 0)
        if self.width is not None:
            _check_int("width", self.width, 1)
        if not self.lr_img > 0:
            raise ValueError(f"lr_img={self.lr_img} must be > 0")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum={self.momentum} must be in [0, 1)")
        if self.init not in INITS:
            raise ValueError(f"init={self.init!r} is not known; choose one of {INITS}")
        if self.dsa_strategy != "auto":
            AugmentationConfig(strategy=self.dsa_strategy)  # raises on unknown families


class RealPools:
    """The real images by class, on the device, with random batches drawn on demand."""

    def __init__(self, real: RealSubset, device: torch.device):
        self.images = real.images.to(device)
        self.by_class = [(real.labels == c).nonzero().flatten()
                         for c in range(real.num_classes)]

    def count(self, c: int) -> int:
        return len(self.by_class[c])

    def draw(self, c: int, n: int, generator: torch.Generator) -> torch.Tensor:
        """Up to ``n`` distinct random images of class ``c``: (min(n, count), C, H, W)."""
        pool = self.by_class[c]
        pick = pool[torch.randperm(len(pool), generator=generator)[:n]]
        return self.images[pick.to(self.images.device)]


@dataclass
class MatchingRun:
    """Everything one distillation's iterations need."""
    real: RealSubset
    pools: RealPools
    ipc: int
    syn_images: torch.Tensor           # (classes * ipc, C, H, W), requires grad
    syn_labels: torch.Tensor           # (classes * ipc,) class-major: 0..0, 1..1, ...
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    augment: Augmentation | None       # None: no augmentation
    new_network: Callable[[], nn.Module]
    device: torch.device

    @property
    def num_classes(self) -> int:
        return self.real.num_classes

    def syn_of_class(self, c: int) -> torch.Tensor:
        return self.syn_images[c * self.ipc:(c + 1) * self.ipc]

    def siamese_pair(self, x_real: torch.Tensor,
                     x_syn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both batches under one shared augmentation draw (DSA's siamese mode)."""
        if self.augment is None:
            return x_real, x_syn
        params = self.augment.sample(1, self.generator, x_real.shape[-1], device=self.device)
        return self.augment.apply(x_real, params), self.augment.apply(x_syn, params)


class MatchingMethod(DistillationMethod):
    """Base of DC, DSA and DM: initialise, iterate with checkpoints, wrap the set.

    Subclasses set ``PAPER_BUDGET`` (the papers' budget fields) and implement
    ``iteration``, which updates ``run.syn_images`` and returns the iteration's mean loss.
    """
    Config = MatchingConfig
    PAPER_BUDGET: ClassVar[dict] = {}
    extendable = ("iterations", "checkpoint_every")  # no schedule depends on the total

    @property
    def needs_real(self) -> str:  # real initialisation picks ipc real images per class
        return "ipc" if self.config.init == "real" else "some"

    def iteration(self, run: MatchingRun) -> float:
        raise NotImplementedError

    def describe_loops(self, ipc: int) -> dict:
        """Per-ipc budget fields (DC's loop counts); none by default."""
        return {}

    def budget(self) -> dict:
        cfg = self.config
        used = {k: getattr(cfg, k) for k in self.PAPER_BUDGET}
        used["width"] = cfg.width
        ipc = getattr(self, "_ipc", None)
        if ipc is not None:
            used.update(self.describe_loops(ipc))
        below = [k for k, v in self.PAPER_BUDGET.items() if used[k] < v]
        if cfg.width is not None and cfg.width < 128:
            below.append("width")
        used["paper_budget"] = not below and not self._loops_below_rule(ipc)
        return used

    def _loops_below_rule(self, ipc: int | None) -> bool:
        return False

    def distill(self, real: RealSubset, ipc: int, seed: int,
                context: RunContext) -> SyntheticSet:
        cfg = self.config
        _check_real(self.name, real)
        self._ipc = ipc
        run = self._start(real, ipc, seed, context.device)
        ckpt = context.checkpoint(f"{self.name}-state.pt", cfg.checkpoint_every,
                                  key=self._checkpoint_key(real, ipc, seed))
        start, curve = self._resume(ckpt, run)

        steps = range(start, cfg.iterations)
        if context.progress:
            from tqdm.auto import tqdm
            steps = tqdm(steps, desc=self.name, initial=start, total=cfg.iterations,
                         leave=False, unit="it")
        started, loss = time.time(), float("nan")
        for it in steps:
            loss = self.iteration(run)
            if not torch.isfinite(run.syn_images).all():
                raise FloatingPointError(f"{self.name}: syn_images became NaN/inf at "
                                         f"iteration {it + 1} (loss {loss}); lower lr_img="
                                         f"{cfg.lr_img}")
            done = it + 1
            if done % max(1, context.log_every) == 0 or done in (1, cfg.iterations):
                curve.append((done, loss))
                rate = (time.time() - started) / (done - start)
                logger.info("%s iteration %d/%d: loss %.4f (%.2f s/iteration)",
                            self.name, done, cfg.iterations, loss, rate)
            if ckpt.due(done):
                self._save(ckpt, run, done, curve)
        if cfg.checkpoint_every > 0:
            self._save(ckpt, run, cfg.iterations, curve)

        # the real batch a class could fill (below batch_real when shots is smaller)
        used = min(min(cfg.batch_real, run.pools.count(c)) for c in range(real.num_classes))
        context.info.update({**self.describe_loops(ipc), "batch_real_used": used})
        return self.make_set(real, run.syn_images, run.syn_labels,
                             provenance={"loss_curve": curve})

    def _start(self, real: RealSubset, ipc: int, seed: int,
               device: torch.device) -> MatchingRun:
        cfg = self.config
        gen = torch.Generator().manual_seed(seed)
        pools = RealPools(real, device)
        images, labels = init_syn_images(self.name, real, pools, ipc, cfg.init, gen)
        images = images.to(device).requires_grad_(True)
        optimizer = torch.optim.SGD([images], lr=cfg.lr_img, momentum=cfg.momentum)
        strategy = (default_strategy(real.channels) if cfg.dsa_strategy == "auto"
                    else cfg.dsa_strategy)
        augment = Augmentation(AugmentationConfig(strategy=strategy))
        augment = augment if augment.config.families else None

        def new_network() -> nn.Module:
            return fresh_network(cfg.backbone, real, cfg.width, gen).to(device)

        return MatchingRun(real, pools, ipc, images, labels.to(device), optimizer, gen,
                           augment, new_network, device)

    def _checkpoint_key(self, real: RealSubset, ipc: int, seed: int) -> str:
        cfg = dataclasses.asdict(self.config)
        for name in self.extendable:
            cfg.pop(name)
        return config_hash({"method": self.name, "config": cfg, "ipc": ipc, "seed": seed,
                            "shots": real.shots, "data": real.data_checksum,
                            "num_real": len(real.labels)})

    def _resume(self, ckpt: Checkpoint, run: MatchingRun) -> tuple[int, list]:
        state = ckpt.load()
        if state is None:
            return 0, []
        if state["iteration"] > self.config.iterations:
            logger.warning("%s: checkpoint %s is at iteration %d, past iterations=%d; "
                           "starting afresh", self.name, ckpt.path, state["iteration"],
                           self.config.iterations)
            return 0, []
        with torch.no_grad():
            run.syn_images.copy_(state["syn_images"])
        run.optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"], run.generator)
        return state["iteration"], list(state["loss_curve"])

    def _save(self, ckpt: Checkpoint, run: MatchingRun, iteration: int, curve: list) -> None:
        ckpt.save({"iteration": iteration, "syn_images": run.syn_images.detach().cpu(),
                   "optimizer": _to_cpu(run.optimizer.state_dict()),
                   "rng": rng_state(run.generator), "loss_curve": list(curve)})


def _check_real(name: str, real: RealSubset) -> None:
    empty = [c for c in range(real.num_classes) if not bool((real.labels == c).any())]
    if empty:
        raise ValueError(f"{name} matches real data, but shots={real.shots} gives no real "
                         f"image for class(es) {empty[:10]}; use shots >= 1 or 'all'")


def init_syn_images(name: str, real: RealSubset, pools: RealPools, ipc: int, init: str,
                    generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial ``syn_images`` (classes * ipc, C, H, W) on CPU and class-major labels."""
    shape = (real.num_classes * ipc, real.channels, real.image_size, real.image_size)
    labels = torch.arange(real.num_classes).repeat_interleave(ipc)
    if init == "noise":
        return torch.randn(shape, generator=generator), labels
    if init != "real":
        raise ValueError(f"init={init!r} is not known; choose one of {INITS}")
    images = []
    for c in range(real.num_classes):
        if pools.count(c) < ipc:
            raise ValueError(f"{name} with init='real' needs ipc={ipc} real images per "
                             f"class, but shots={real.shots} gives {pools.count(c)} for "
                             f"class {c}; use shots >= {ipc}, or init='noise' "
                             f"(--set init=noise)")
        images.append(pools.draw(c, ipc, generator).cpu())
    return torch.cat(images).clone(), labels


def fresh_network(backbone: str, real: RealSubset, width: int | None,
                  generator: torch.Generator) -> nn.Module:
    """A randomly initialised network whose weights depend only on ``generator``."""
    seed = int(torch.randint(2 ** 62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        try:
            return create_backbone(backbone, real.num_classes, real.channels,
                                   real.image_size, width=width)
        except TypeError as err:
            raise ValueError(f"backbone {backbone!r} does not take width={width} ({err}); "
                             f"leave width unset for it") from err


def has_batchnorm(net: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


@torch.no_grad()
def freeze_batchnorm(net: nn.Module, images: torch.Tensor) -> None:
    """Set every BatchNorm's running statistics to those of ``images`` and freeze them.

    DC runs one train-mode forward pass on 16 real images per class and puts the BatchNorm
    layers in eval mode; with momentum 0.1 on a fresh network that leaves the running
    statistics 90% at their initial values. We make them exactly the batch's statistics
    (cumulative averaging over one batch), which is what freezing intends.
    """
    layers = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    net(images)
    for m, momentum in zip(layers, momenta):
        m.momentum = momentum
        m.eval()


def train_network(net: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
                  labels: torch.Tensor, epochs: int, batch_size: int,
                  generator: torch.Generator, augment: Augmentation | None) -> None:
    """Epochs of minibatch SGD on ``images``, with per-image augmentation if given."""
    net.train()
    n = images.shape[0]
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator).to(images.device)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            x = images[idx]
            if augment is not None:
                x = augment(x, generator)  # independent draw per image
            loss = F.cross_entropy(net(x), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


def _check_int(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}={value!r} must be an integer >= {low}")


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj
