"""Generation and editing with DSVs (Deep Support Vectors, Sec. 5): labels as latents.

- ``generate_mix``: from noise, synthesise images for the soft label
  ``y = (1 - delta) e_a + delta e_b``, fusing two classes;
- ``edit_image``: start from a real training image of one class and optimise it toward
  another label under the same losses, which changes its class-defining cues.

Both run the DeepKKT losses of ``synthesize`` against the dataset's cached teacher and save
a PNG (and the tensors) into an output folder.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from distill_bench.data import RealDataset
from distill_bench.synthetic import Preprocessing
from distill_bench.plots import to_pixels
from methods.deepkkt.diagnostics import save_grid
from methods.deepkkt.method import DeepKKTConfig, synthesize
from methods.deepkkt.teacher import get_teacher

logger = logging.getLogger(__name__)


def class_index(data: RealDataset, name: str | int) -> int:
    """A class given by index or by name."""
    if isinstance(name, int) or str(name).isdigit():
        index = int(name)
        if not 0 <= index < data.num_classes:
            raise ValueError(f"class {index} out of range 0..{data.num_classes - 1}")
        return index
    if name not in data.classes:
        raise ValueError(f"class {name!r} is not one of {data.classes}")
    return data.classes.index(name)


def _setup(data: RealDataset, cfg: DeepKKTConfig, device: str):
    teacher, _ = get_teacher(data, cfg.teacher_recipe(data.channels), cfg.teacher_seed,
                             device)
    prep = Preprocessing(data.mean, data.std)
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    return teacher, prep, ((0 - mean) / std, (1 - mean) / std)


def generate_mix(data: RealDataset, class_a: str | int, class_b: str | int, delta: float,
                 num: int, out_dir: Path, cfg: DeepKKTConfig | None = None, seed: int = 0,
                 device: str = "cpu") -> Path:
    """Images for the soft label mixing two classes; returns the PNG path."""
    if not 0.0 <= delta <= 1.0:
        raise ValueError(f"delta={delta}: the mixing weight must lie in [0, 1]")
    cfg = cfg or DeepKKTConfig(eta_aug=0.0)
    a, b = class_index(data, class_a), class_index(data, class_b)
    teacher, prep, bounds = _setup(data, cfg, device)
    gen = torch.Generator().manual_seed(seed)
    x0 = cfg.noise_std * torch.randn(num, data.channels, data.image_size, data.image_size,
                                     generator=gen)
    target = torch.zeros(num, data.num_classes)
    target[:, a], target[:, b] = 1 - delta, delta
    target[:, a] += 1 - target.sum(1)  # a == b: the whole mass on a
    state = synthesize(teacher, x0, target, cfg, gen, bounds)
    with torch.no_grad():
        probs = teacher(state.x).softmax(1)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"mix-{data.classes[a]}-{data.classes[b]}-d{delta:g}"
    torch.save({"images": state.x, "target": target, "teacher_probs": probs},
               out_dir / f"{stem}.pt")
    labels = torch.zeros(num, dtype=torch.long)
    title = (f"{data.classes[a]} x{1 - delta:g} + {data.classes[b]} x{delta:g}; teacher p(a), "
             f"p(b) = {probs[:, a].mean():.2f}, {probs[:, b].mean():.2f}")
    return save_grid(to_pixels(state.x, prep), labels, out_dir / f"{stem}.png", [stem], title)


def edit_image(data: RealDataset, index: int, target: str | int, out_dir: Path,
               cfg: DeepKKTConfig | None = None, seed: int = 0, device: str = "cpu") -> Path:
    """Edit training image ``index`` toward class ``target``; PNG of before and after."""
    if not 0 <= index < len(data.train_images):
        raise ValueError(f"index={index} out of range 0..{len(data.train_images) - 1}")
    cfg = cfg or DeepKKTConfig(eta_aug=0.0)
    t = class_index(data, target)
    teacher, prep, bounds = _setup(data, cfg, device)
    x0 = prep(data.train_images[index:index + 1])
    gen = torch.Generator().manual_seed(seed)
    state = synthesize(teacher, x0, torch.tensor([t]), cfg, gen, bounds)
    with torch.no_grad():
        before = teacher(x0).softmax(1)[0]
        after = teacher(state.x).softmax(1)[0]
    source = int(data.train_labels[index])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"edit-{index}-{data.classes[source]}-to-{data.classes[t]}"
    pair = torch.cat([to_pixels(x0, prep), to_pixels(state.x, prep)])
    title = (f"{data.classes[source]} -> {data.classes[t]}: teacher p(target) "
             f"{before[t]:.2f} -> {after[t]:.2f}")
    torch.save({"before": x0, "after": state.x, "p_before": before, "p_after": after},
               out_dir / f"{stem}.pt")
    return save_grid(pair, torch.zeros(2, dtype=torch.long), out_dir / f"{stem}.png",
                     ["before | after"], title)


def config_with(**overrides) -> DeepKKTConfig:
    """A ``DeepKKTConfig`` for generation (no augmentation term unless asked)."""
    base = DeepKKTConfig(eta_aug=0.0)
    return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})
