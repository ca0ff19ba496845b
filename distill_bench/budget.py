"""The real-data budget: ``shots`` real training images per class a method may see.

``0`` means none (zero-shot: only a teacher, if the method uses one), an integer ``k`` a
class-balanced subset of ``k`` images per class drawn from the seed, ``"all"`` the whole
training split. The harness hands a method this subset and nothing else.
"""
from __future__ import annotations

import torch

from distill_bench.data import RealDataset
from distill_bench.method import RealSubset
from distill_bench.synthetic import Preprocessing

ALL = "all"


def parse_shots(value: int | str) -> int | str:
    """``"all"`` or a non-negative integer; anything else is a clear error."""
    if isinstance(value, str):
        if value.strip().lower() == ALL:
            return ALL
        try:
            value = int(value)
        except ValueError:
            raise ValueError(f"shots={value!r}: use a non-negative integer or 'all'") from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"shots={value!r}: use a non-negative integer or 'all'")
    return value


def draw_shots(labels: torch.Tensor, num_classes: int, shots: int | str,
               seed: int) -> torch.Tensor:
    """Indices of a class-balanced subset: ``shots`` per class, drawn from ``seed``."""
    shots = parse_shots(shots)
    if shots == ALL:
        return torch.arange(len(labels))
    gen = torch.Generator().manual_seed(seed)
    picked = []
    for c in range(num_classes):
        pool = (labels == c).nonzero().flatten()
        if shots > len(pool):
            raise ValueError(f"shots={shots} but class {c} has only {len(pool)} training "
                             f"images; use at most {len(pool)} or 'all'")
        picked.append(pool[torch.randperm(len(pool), generator=gen)[:shots]])
    return torch.cat(picked).sort().values


def real_subset(data: RealDataset, shots: int | str, seed: int,
                preprocessing: Preprocessing | None = None) -> RealSubset:
    """The ``RealSubset`` a method sees for a run with this ``shots`` and ``seed``."""
    shots = parse_shots(shots)
    prep = preprocessing or Preprocessing(data.mean, data.std)
    idx = draw_shots(data.train_labels, data.num_classes, shots, seed)
    return RealSubset(data.name, prep(data.train_images[idx]), data.train_labels[idx],
                      data.num_classes, list(data.classes), shots, idx, prep, data.checksum)
