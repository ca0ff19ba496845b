"""Expert trajectories for trajectory matching (MTT, Cazenavette et al., CVPR 2022, Sec. 3).

An expert is a backbone trained on the real images a method may see (its ``shots`` subset)
with plain SGD (lr 0.01, no momentum, no weight decay) and DSA augmentation drawn per
image. After every epoch its parameters are flattened into one vector ``theta*_t``; the
trajectory ``theta*_0 .. theta*_E`` (``t = 0`` is the initialisation) is what the student
of Eq. 2 starts from and is compared against.

Experts are cached under ``<cache>/experts/`` (``$DISTILL_BENCH_CACHE``, default
``~/.cache/distill_bench``) in a folder keyed by everything that shapes them: dataset and
its checksum, the indices of the subset, the preprocessing (normalisation, ZCA), backbone,
recipe and seed. One file per expert holds its snapshots and its full-precision training
state, rewritten atomically after every epoch, so an interrupted expert resumes at its last
epoch and a longer run extends the cached ones (the recipe has no schedule, so the first
``E`` epochs do not depend on how many follow). Snapshots may be stored in half precision.

Note: two processes training the same expert at once both do the work; the last writer wins.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from distill_bench.augment import DSA, DSAConfig, default_strategy
from distill_bench.data.datasets import get_cache_dir
from distill_bench.method import RealSubset
from distill_bench.networks import create_backbone
from distill_bench.results import config_hash
from distill_bench.training import train_epoch

logger = logging.getLogger(__name__)

STORAGE = {"fp32": torch.float32, "fp16": torch.float16}
AUGMENTS = ("dsa", "none")


@dataclass(frozen=True)
class ExpertRecipe:
    """How an expert is trained; every field is part of the cache key."""
    backbone: str = "convnet"    # registered backbone; must have no buffers (no BatchNorm)
    width: int | None = None     # backbone width (None: the backbone's own default)
    lr: float = 0.01             # SGD learning rate (MTT's lr_teacher)
    momentum: float = 0.0        # MTT trains experts without momentum
    weight_decay: float = 0.0    # and without weight decay
    batch_size: int = 256        # real images per SGD step
    augment: str = "dsa"         # dsa (per-image draws) | none
    storage: str = "fp32"        # dtype of stored snapshots: fp32 | fp16 (half the disk)

    def __post_init__(self):
        if self.augment not in AUGMENTS:
            raise ValueError(f"expert augment={self.augment!r}; choose one of {AUGMENTS}")
        if self.storage not in STORAGE:
            raise ValueError(f"expert storage={self.storage!r}; choose one of "
                             f"{sorted(STORAGE)}")
        if not self.lr > 0:
            raise ValueError(f"expert lr={self.lr!r} must be positive (MTT: 0.01)")
        if self.batch_size < 1:
            raise ValueError(f"expert batch_size={self.batch_size!r} must be >= 1")


def build_backbone(recipe: ExpertRecipe, real: RealSubset) -> nn.Module:
    """The recipe's backbone for ``real``'s shape, on the CPU, from the global RNG."""
    return create_backbone(recipe.backbone, real.num_classes, real.channels,
                           real.image_size, width=recipe.width)


def check_backbone(model: nn.Module, name: str) -> None:
    """Trajectories hold parameters only; running statistics would be silently lost."""
    buffers = [n for n, _ in model.named_buffers()]
    if buffers:
        raise ValueError(f"backbone {name!r} has buffers {buffers[:3]} (BatchNorm running "
                         f"statistics), which a parameter trajectory cannot carry; use a "
                         f"backbone without them, e.g. 'convnet' (instance norm)")


def flat_params(model: nn.Module) -> torch.Tensor:
    """All parameters in ``named_parameters`` order as one detached vector: (P,)."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def expert_seed(seed: int, index: int) -> int:
    """Seed of expert ``index`` among experts seeded ``seed`` (stable, distinct)."""
    return seed * 100_003 + index


def digest(tensor: torch.Tensor) -> str:
    """Short SHA-256 of a tensor's bytes (identifies a subset by its indices)."""
    return hashlib.sha256(tensor.cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def expert_key(real: RealSubset, recipe: ExpertRecipe, seed: int,
               zca_eps: float | None) -> dict:
    """What the experts depend on (hashed into their cache folder's name)."""
    prep = real.preprocessing
    return {"dataset": real.dataset, "data_checksum": real.data_checksum,
            "shots": str(real.shots), "indices": digest(real.indices),
            "mean": list(prep.mean), "std": list(prep.std), "zca_eps": zca_eps,
            "recipe": dataclasses.asdict(recipe), "seed": seed}


@dataclass
class ExpertSet:
    """Trained experts on disk and a small in-memory cache of their trajectories.

    Attributes:
        paths: one file per expert.
        epochs: epochs each trajectory covers (it has ``epochs + 1`` snapshots).
        num_params: length P of every snapshot.
        in_memory: trajectories kept loaded at once (the paper's 100 x 51 x 320k floats
            are 6.5 GB; a few fit anywhere).
    """
    paths: list[Path]
    epochs: int
    num_params: int
    in_memory: int = 4
    _loaded: OrderedDict = dataclasses.field(default_factory=OrderedDict, repr=False)

    def __len__(self) -> int:
        return len(self.paths)

    def trajectory(self, index: int) -> torch.Tensor:
        """Snapshots ``theta*_0 .. theta*_epochs`` of expert ``index``: (epochs + 1, P)."""
        if index in self._loaded:
            self._loaded.move_to_end(index)
            return self._loaded[index]
        blob = torch.load(self.paths[index], weights_only=False)
        snaps = blob["snapshots"][:self.epochs + 1]
        self._loaded[index] = snaps
        while len(self._loaded) > self.in_memory:
            self._loaded.popitem(last=False)
        return snaps


def get_experts(real: RealSubset, recipe: ExpertRecipe, num_experts: int, epochs: int,
                seed: int, device: torch.device | str = "cpu", zca_eps: float | None = None,
                progress: bool = False) -> ExpertSet:
    """Experts ``0 .. num_experts - 1`` trained for ``epochs``, from the cache or trained.

    Args:
        real: the images the experts train on (already whitened if ZCA is on).
        zca_eps: the ZCA regulariser used on ``real`` (None: no ZCA); part of the key.
    """
    if num_experts < 1 or epochs < 1:
        raise ValueError(f"num_experts={num_experts} and epochs={epochs} must be >= 1")
    if real.images.shape[0] == 0:
        raise ValueError(f"experts need real images, but shots={real.shots!r} gives none; "
                         f"use shots >= 1 or 'all'")
    key = expert_key(real, recipe, seed, zca_eps)
    folder = (get_cache_dir() / "experts"
              / f"{real.dataset}-shots{real.shots}-{recipe.backbone}-{config_hash(key)}")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "key.json").write_text(json.dumps(key, indent=1))
    paths = []
    for index in range(num_experts):
        path = folder / f"expert_{index:03d}.pt"
        train_expert(real, recipe, expert_seed(seed, index), epochs, path, device,
                     progress, label=f"expert {index + 1}/{num_experts}")
        paths.append(path)
    with torch.random.fork_rng(devices=[]):  # counting must not move the global RNG
        num_params = sum(p.numel() for p in build_backbone(recipe, real).parameters())
    return ExpertSet(paths, epochs, num_params)


def train_expert(real: RealSubset, recipe: ExpertRecipe, seed: int, epochs: int,
                 path: Path, device: torch.device | str = "cpu", progress: bool = False,
                 label: str = "expert") -> None:
    """Train (or resume, or extend) one expert until ``path`` holds ``epochs`` epochs."""
    blob = _load(path)
    done = blob["epochs"] if blob else 0
    if done >= epochs:
        return

    # the same initialisation and data order whether resumed or not
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_backbone(recipe, real)
    check_backbone(model, recipe.backbone)
    model = model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                          weight_decay=recipe.weight_decay)
    gen = torch.Generator(device).manual_seed(seed)
    snapshots = [flat_params(model).cpu().to(STORAGE[recipe.storage])]
    losses: list[float] = []
    if blob:
        model.load_state_dict(blob["model"])
        opt.load_state_dict(blob["optimizer"])
        gen.set_state(blob["generator"])
        snapshots, losses = list(blob["snapshots"]), blob["losses"]
        logger.info("%s: resuming at epoch %d of %d (%s)", label, done, epochs, path)

    images, labels = real.images.to(device), real.labels.to(device)
    augment = None
    if recipe.augment == "dsa":
        dsa = DSA(DSAConfig(strategy=default_strategy(real.channels)))
        augment = lambda x, g: dsa(x, g)  # noqa: E731  (per-image draws)
    epoch_range = range(done, epochs)
    if progress:
        from tqdm.auto import tqdm
        epoch_range = tqdm(epoch_range, desc=label, leave=False, unit="ep")
    for epoch in epoch_range:
        started = time.time()
        loss = train_epoch(model, images, labels, opt, recipe.batch_size, gen, augment)
        if not torch.isfinite(torch.tensor(loss)):
            raise FloatingPointError(f"{label} diverged at epoch {epoch + 1} (loss {loss}); "
                                     f"epochs up to {epoch} are kept in {path}; lower the "
                                     f"expert lr ({recipe.lr})")
        snapshots.append(flat_params(model).cpu().to(STORAGE[recipe.storage]))
        losses.append(loss)
        _save(path, {"epochs": epoch + 1, "snapshots": torch.stack(snapshots),
                     "losses": losses, "model": model.state_dict(),
                     "optimizer": opt.state_dict(), "generator": gen.get_state(),
                     "seed": seed, "recipe": dataclasses.asdict(recipe),
                     "names": [n for n, _ in model.named_parameters()]})
        logger.info("%s epoch %d/%d: loss %.4f, %.1f s", label, epoch + 1, epochs, loss,
                    time.time() - started)


def _load(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        return torch.load(path, weights_only=False, map_location="cpu")
    except Exception as err:  # a corrupt file is retrained, never trusted
        logger.warning("ignoring unreadable expert %s (%s)", path, err)
        return None


def _save(path: Path, blob: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)
