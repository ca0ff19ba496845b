"""Training and testing loops shared by the evaluator, teachers and experts.

Data stays in memory as tensors; batches are drawn with a private ``torch.Generator``.
``precision="bf16"`` runs forward and backward under CPU/GPU autocast (parameters and the
optimiser stay fp32); it is an option because it changes numerics, and results record it.
"""
from __future__ import annotations

import contextlib
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

PRECISIONS = ("fp32", "bf16")
Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def autocast(precision: str, device: torch.device | str = "cpu"):
    """Context for the requested precision (``fp32``: no autocast)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not known; choose one of {PRECISIONS}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for hard (N,) or soft (N, C) targets, in fp32."""
    return F.cross_entropy(logits.float(), targets)


def random_flip_crop(x: torch.Tensor, generator: torch.Generator, pad: int = 4,
                     flip: bool = True) -> torch.Tensor:
    """Per-image horizontal flip (p=0.5, if ``flip``) and random crop after zero padding."""
    n, c, h, w = x.shape
    if flip:
        mask = torch.rand(n, generator=generator, device=x.device) < 0.5
        x = torch.where(mask.view(n, 1, 1, 1), x.flip(3), x)
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device)).view(n, 1, 1, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    chans = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return padded[batch, chans, rows, cols]


def train_epoch(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                optimizer: torch.optim.Optimizer, batch_size: int,
                generator: torch.Generator, augment: Augment | None = None,
                precision: str = "fp32") -> float:
    """One pass over ``images`` in shuffled mini-batches; returns the mean loss."""
    model.train()
    n = images.shape[0]
    order = torch.randperm(n, generator=generator, device=images.device)
    total, seen = 0.0, 0
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        x, y = images[idx], targets[idx]
        if augment is not None:
            x = augment(x, generator)
        with autocast(precision, images.device):
            loss = soft_cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(idx)
        seen += len(idx)
    return total / seen


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 1000,
            precision: str = "fp32") -> torch.Tensor:
    """Logits for ``images`` in large batches, model in eval mode: (N, C) fp32."""
    model.eval()
    outs = []
    for start in range(0, images.shape[0], batch_size):
        with autocast(precision, images.device):
            outs.append(model(images[start:start + batch_size]).float())
    return torch.cat(outs)


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             num_classes: int, batch_size: int = 1000,
             precision: str = "fp32") -> tuple[float, list[float]]:
    """Top-1 accuracy (fraction) overall and per class."""
    correct = predict(model, images, batch_size, precision).argmax(1) == labels
    per_class = []
    for c in range(num_classes):
        mask = labels == c
        per_class.append(correct[mask].float().mean().item() if mask.any() else float("nan"))
    return correct.float().mean().item(), per_class
