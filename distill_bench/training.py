"""Training and testing loops shared by the evaluator, teachers and experts.

Data stays in memory as tensors; batches are drawn with a private ``torch.Generator``.
``precision="bf16"`` runs forward and backward under CPU/GPU autocast (parameters and the
optimiser stay fp32); it is an option because it changes numerics, and results record it.

Speed (issue 7, measured with ``benchmarks/evaluator.py``):

- ``use_fast_pooling`` swaps 2x2 average pooling for ``Pool2x2``, which sums the four inputs
  in the order PyTorch's CPU kernel does and scales by 1/4 exactly, so results are
  bit-identical; a ConvNet-3 training step at ipc 1 on CPU took 5-13% less time (most in
  bf16, where the stock kernel is slowest).
- ``StackedModels`` trains several networks of one architecture as one ``torch.func.vmap``
  computation (convolutions become grouped ones); ``train_epoch_stacked`` draws each
  network's batches and augmentations from its own generator in the order ``train_epoch``
  does, so it matches one-at-a-time training up to floating-point summation order.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

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
    # the loss sum stays a float64 tensor (what ``float`` arithmetic gives, bit for bit)
    # so a GPU is not synchronised once per step
    total = torch.zeros((), dtype=torch.float64, device=images.device)
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
        total += loss.detach().double() * len(idx)
    return total.item() / n


class StackedModels:
    """``K`` networks of one architecture as one batched computation (``torch.func``).

    The parameters and buffers are stacked along a new leading dimension (new leaf
    tensors, to be given to one optimiser); ``unstack`` copies them back into the
    networks. BatchNorm running statistics are updated per network.

    Example:
        >>> nets = [nn.Linear(4, 2) for _ in range(3)]
        >>> stacked = StackedModels(nets)
        >>> stacked(torch.randn(3, 8, 4)).shape        # (K, B, ...) -> (K, B, out)
        torch.Size([3, 8, 2])
    """

    def __init__(self, models: list[nn.Module]):
        if not models:
            raise ValueError("StackedModels needs at least one network, got none")
        self.models = models
        self.params, self.buffers = stack_module_state(models)
        self._base = copy.deepcopy(models[0]).to("meta")  # the architecture, no storage

        def one(params, buffers, x):
            return functional_call(self._base, (params, buffers), (x,))
        self._forward = vmap(one)

    def __len__(self) -> int:
        return len(self.models)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(self.params, self.buffers, x)

    def parameters(self) -> list[torch.Tensor]:
        return list(self.params.values())

    def train(self, mode: bool = True) -> "StackedModels":
        self._base.train(mode)
        return self

    @torch.no_grad()
    def unstack(self) -> list[nn.Module]:
        """Copy the stacked parameters and buffers back into the ``K`` networks."""
        for k, model in enumerate(self.models):
            for name, tensor in model.named_parameters():
                tensor.copy_(self.params[name][k])
            for name, tensor in model.named_buffers():
                tensor.copy_(self.buffers[name][k])
        return self.models


def train_epoch_stacked(stacked: StackedModels, images: torch.Tensor, targets: torch.Tensor,
                        optimizer: torch.optim.Optimizer, batch_size: int,
                        generators: list[torch.Generator], augment: Augment | None = None,
                        precision: str = "fp32") -> list[float]:
    """``train_epoch`` for ``K`` stacked networks at once; returns each one's mean loss.

    Network ``k`` sees the batches and augmentations ``train_epoch`` would draw from
    ``generators[k]`` (same calls, same order); the summed loss gives each network the
    gradient of its own mean loss.
    """
    k = len(stacked)
    if len(generators) != k:
        raise ValueError(f"{len(generators)} generators for {k} stacked networks; "
                         f"give one generator per network")
    stacked.train()
    n = images.shape[0]
    orders = [torch.randperm(n, generator=g, device=images.device) for g in generators]
    total = torch.zeros(k, dtype=torch.float64, device=images.device)
    for start in range(0, n, batch_size):
        xs, ys = [], []
        for order, gen in zip(orders, generators):
            idx = order[start:start + batch_size]
            x = images[idx]
            xs.append(augment(x, gen) if augment is not None else x)
            ys.append(targets[idx])
        x, y = torch.stack(xs), torch.stack(ys)          # (K, B, C, H, W), (K, B[, C])
        with autocast(precision, images.device):
            logits = stacked(x)                          # (K, B, classes)
        losses = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(0, 1),
                                 reduction="none").view(k, -1).mean(1)   # (K,)
        optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        optimizer.step()
        total += losses.detach().double() * x.shape[1]
    return (total / n).tolist()


class Pool2x2(torch.autograd.Function):
    """2x2 average pooling, stride 2, bit-identical to ``F.avg_pool2d(x, 2)``.

    The forward adds the window's four inputs in the kernel's order (row by row, in fp32
    for half-precision inputs) and scales by 1/4, which is exact; the backward spreads
    ``grad / 4`` over each window. Odd trailing rows and columns are dropped, as the
    stock kernel does. Works on any leading dimensions (and under ``vmap``).
    """
    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
        x = x[..., :h, :w]
        wide = torch.float32 if x.dtype in (torch.bfloat16, torch.float16) else x.dtype
        total = x[..., 0::2, 0::2].to(wide) + x[..., 0::2, 1::2]
        total += x[..., 1::2, 0::2]
        total += x[..., 1::2, 1::2]
        return total.mul_(0.25).to(x.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.in_size = inputs[0].shape[-2:]

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        h2, w2 = grad.shape[-2:]
        lead = grad.shape[:-2]
        spread = (grad * 0.25).unsqueeze(-1).unsqueeze(-3)     # (..., h2, 1, w2, 1)
        spread = spread.expand(*lead, h2, 2, w2, 2).reshape(*lead, 2 * h2, 2 * w2)
        h, w = ctx.in_size
        if (h, w) != (2 * h2, 2 * w2):
            spread = F.pad(spread, (0, w - 2 * w2, 0, h - 2 * h2))
        return spread


class FastAvgPool2d(nn.Module):
    """Drop-in for ``nn.AvgPool2d(2)`` computed by ``Pool2x2``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return Pool2x2.apply(x)


def _is_plain_2x2(module: nn.Module) -> bool:
    def pair(v):
        return tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    return (type(module) is nn.AvgPool2d and pair(module.kernel_size) == (2, 2)
            and pair(module.stride or module.kernel_size) == (2, 2)
            and pair(module.padding) == (0, 0) and not module.ceil_mode
            and module.divisor_override is None)


def use_fast_pooling(model: nn.Module) -> int:
    """Replace every plain ``nn.AvgPool2d(2)`` in ``model`` by ``FastAvgPool2d`` (same
    results, bit for bit); returns how many were replaced."""
    swaps = [(parent, name) for parent in model.modules()
             for name, child in parent.named_children() if _is_plain_2x2(child)]
    for parent, name in swaps:
        setattr(parent, name, FastAvgPool2d())
    return len(swaps)


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
