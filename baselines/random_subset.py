"""``random``: ``ipc`` real training images per class, drawn from the shots subset.

The reference every distillation method must beat under the same protocol (DD-Ranking).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from distill_bench.method import DistillationMethod, MethodConfig, register_method


@dataclass
class RandomConfig(MethodConfig):
    """No options: the seed decides which images are drawn."""


@register_method("random")
class RandomSubset(DistillationMethod):
    """A class-balanced random subset of the real images the budget allows."""
    needs_real = "ipc"
    Config = RandomConfig

    def distill(self, real, ipc, seed, context):
        gen = torch.Generator().manual_seed(seed + 1)
        picked = []
        for c in range(real.num_classes):
            pool = (real.labels == c).nonzero().flatten()
            if len(pool) < ipc:
                raise ValueError(f"random needs ipc={ipc} real images per class but the "
                                 f"budget shots={real.shots} gives {len(pool)} for class {c}; "
                                 f"use shots >= {ipc} or 'all'")
            picked.append(pool[torch.randperm(len(pool), generator=gen)[:ipc]])
        idx = torch.cat(picked)
        return self.make_set(real, real.images[idx], real.labels[idx],
                             provenance={"train_indices": real.indices[idx].tolist()})
