"""Teachers: the trained classifiers DeepKKT distils from.

The stationarity condition of DeepKKT (Deep Support Vectors, Eq. 6) holds for a network
trained to a stationary point of ``sum_i L_i + (wd / 2) |theta|^2``, so weight decay is part
of the recipe. The paper's CIFAR recipe: Adam, lr 1e-3, weight decay 5e-3, flip and crop.
It gives no epoch count or schedule; ours anneals the lr to zero (cosine) so that the
network ends near a stationary point.

A teacher is cached by (dataset, backbone, recipe, seed): the file name holds a hash of all
of them, and the file holds the recipe, the data checksum and the test accuracy.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from distill_bench.data import RealDataset
from distill_bench.networks import create_backbone
from distill_bench.training import accuracy, random_flip_crop, train_epoch

logger = logging.getLogger(__name__)

TEACHER_ENV = "DISTILL_BENCH_TEACHERS"
DEFAULT_TEACHER_DIR = Path(__file__).resolve().parents[2] / "results" / "teachers"


@dataclass(frozen=True)
class TeacherRecipe:
    """How a teacher is trained (defaults: the paper's CIFAR recipe plus our schedule)."""
    backbone: str = "convnet"
    optimizer: str = "adam"        # adam | sgd
    lr: float = 1e-3
    weight_decay: float = 5e-3     # L2 added to the gradient (torch's weight_decay)
    epochs: int = 15
    batch_size: int = 128
    schedule: str = "cosine"       # cosine | constant
    augment: str = "flip_crop"     # flip_crop | crop | none
    precision: str = "bf16"        # autocast for speed on CPU; recorded

    def key(self, dataset: str, checksum: str, seed: int) -> str:
        blob = json.dumps({"dataset": dataset, "checksum": checksum, "seed": seed,
                           **dataclasses.asdict(self)}, sort_keys=True)
        return f"{dataset}-{self.backbone}-s{seed}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def get_teacher_dir() -> Path:
    return Path(os.environ.get(TEACHER_ENV, DEFAULT_TEACHER_DIR))


def _augment_fn(name: str, data: RealDataset):
    if name == "none":
        return None
    if name not in ("flip_crop", "crop"):
        raise ValueError(f"teacher augment={name!r}; choose flip_crop, crop or none")
    flip = name == "flip_crop" and data.channels == 3  # digits are never flipped
    return lambda x, g: random_flip_crop(x, g, flip=flip)


def train_teacher(data: RealDataset, recipe: TeacherRecipe, seed: int = 0,
                  device: str = "cpu") -> dict:
    """Train a teacher on the whole training split; returns the saved blob."""
    torch.manual_seed(seed)
    gen = torch.Generator(device).manual_seed(seed)
    model = create_backbone(recipe.backbone, data.num_classes, data.channels,
                            data.image_size).to(device)
    params = model.parameters()
    if recipe.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    elif recipe.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=recipe.lr, momentum=0.9,
                              weight_decay=recipe.weight_decay)
    else:
        raise ValueError(f"teacher optimizer={recipe.optimizer!r}; choose adam or sgd")
    sched = None
    if recipe.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, recipe.epochs)
    x = data.normalize(data.train_images).to(device)
    y = data.train_labels.to(device)
    augment = _augment_fn(recipe.augment, data)
    started = time.time()
    for epoch in range(recipe.epochs):
        loss = train_epoch(model, x, y, opt, recipe.batch_size, gen, augment, recipe.precision)
        if sched is not None:
            sched.step()
        logger.info("teacher epoch %d/%d  loss %.4f  %.0f s", epoch + 1, recipe.epochs,
                    loss, time.time() - started)
    x_test = data.normalize(data.test_images).to(device)
    acc, per_class = accuracy(model, x_test, data.test_labels.to(device), data.num_classes)
    return {"state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
            "recipe": dataclasses.asdict(recipe), "dataset": data.name,
            "data_checksum": data.checksum, "seed": seed, "test_acc": acc,
            "test_acc_per_class": per_class, "train_seconds": time.time() - started,
            "num_classes": data.num_classes, "channels": data.channels,
            "image_size": data.image_size, "num_train_images": int(len(y))}


def get_teacher(data: RealDataset, recipe: TeacherRecipe = TeacherRecipe(), seed: int = 0,
                device: str = "cpu", train_if_missing: bool = True):
    """The cached teacher for (dataset, recipe, seed), training it once if needed.

    Returns ``(model, info)``; ``info`` is the saved blob without the weights.
    """
    path = get_teacher_dir() / f"{recipe.key(data.name, data.checksum, seed)}.pt"
    if path.exists():
        blob = torch.load(path, weights_only=False)
    elif train_if_missing:
        logger.info("training teacher %s (cached at %s)", path.stem, path)
        blob = train_teacher(data, recipe, seed, device)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save(blob, tmp)
        os.replace(tmp, path)
    else:
        raise FileNotFoundError(f"no teacher at {path}; train it with `distill-bench teacher "
                                f"--dataset {data.name}`")
    model = create_backbone(recipe.backbone, blob["num_classes"], blob["channels"],
                            blob["image_size"]).to(device)
    model.load_state_dict(blob["state_dict"])
    model.eval()
    info = {k: v for k, v in blob.items() if k != "state_dict"}
    info["path"] = str(path)
    return model, info
