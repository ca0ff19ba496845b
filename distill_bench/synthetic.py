"""The synthetic set: what every method returns and the evaluator consumes.

It carries everything needed to evaluate it the way its method intended: images, hard or
soft labels, the learning rate it wants at evaluation (if it learned one), the preprocessing
its pixels live in (normalisation, optional ZCA), its augmentation at evaluation, method
extras (DeepKKT's lambdas, ...) and provenance. One ``.pt`` file holds all of it.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

FORMAT_VERSION = 1


@dataclass
class Preprocessing:
    """How real pixels in [0, 1] map to the space the synthetic images live in.

    ``x -> (x - mean) / std``, then, if ``zca`` is set, ZCA whitening with the stored
    ``zca["mean"]`` (D,) and ``zca["transform"]`` (D, D) over flattened images.
    """
    mean: tuple[float, ...]
    std: tuple[float, ...]
    zca: dict | None = None

    def __call__(self, images_uint8: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        x = (images_uint8.float() / 255.0 - mean) / std
        if self.zca is not None:
            shape = x.shape
            flat = x.flatten(1) - self.zca["mean"]
            x = (flat @ self.zca["transform"].T).view(shape)
        return x


@dataclass
class SyntheticSet:
    """A distilled dataset and what its evaluation needs.

    Attributes:
        syn_images: (N, C, H, W) float, in the space ``preprocessing`` defines.
        syn_labels: (N,) int64 class indices, or (N, num_classes) float soft labels.
        num_classes: number of classes of the dataset.
        dataset: registered name of the real dataset.
        preprocessing: the map from real pixels to this space (applied to test data too).
        eval_lr: learning rate learned by the method (MTT), used instead of the protocol's.
        eval_augment: ``None`` (the protocol decides), or ``"none"`` to forbid augmentation.
        extras: method outputs kept with the set (e.g. DeepKKT's ``lambdas``).
        provenance: method, config, seed, shots, data checksum, versions, times.
    """
    syn_images: torch.Tensor
    syn_labels: torch.Tensor
    num_classes: int
    dataset: str
    preprocessing: Preprocessing
    eval_lr: float | None = None
    eval_augment: str | None = None
    extras: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)

    def __post_init__(self):
        n = self.syn_images.shape[0]
        if self.syn_images.dim() != 4:
            raise ValueError(f"syn_images must be (N, C, H, W), got {tuple(self.syn_images.shape)}")
        if self.syn_labels.shape[0] != n:
            raise ValueError(f"{n} syn_images but {self.syn_labels.shape[0]} syn_labels")
        if not torch.isfinite(self.syn_images).all():
            raise ValueError("syn_images contain NaN or inf; the distillation diverged")

    @property
    def hard_labels(self) -> torch.Tensor:
        """Class indices (argmax of soft labels)."""
        return self.syn_labels if self.syn_labels.dim() == 1 else self.syn_labels.argmax(1)

    @property
    def ipc(self) -> int:
        """Images per class (the largest class count)."""
        return int(torch.bincount(self.hard_labels, minlength=self.num_classes).max())

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically to ``path`` (``.pt``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        blob = {k: getattr(self, k) for k in self.__dataclass_fields__}
        blob["syn_images"] = self.syn_images.detach().cpu()
        blob["syn_labels"] = self.syn_labels.detach().cpu()
        blob["preprocessing"] = asdict(self.preprocessing)
        blob["format_version"] = FORMAT_VERSION
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save(blob, tmp)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SyntheticSet":
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no synthetic set at {path}")
        try:
            blob = torch.load(path, weights_only=False)
        except Exception as err:
            raise ValueError(f"{path} is not a readable synthetic set ({err})") from err
        if not isinstance(blob, dict) or blob.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path} is not a distill_bench synthetic set "
                             f"(format_version {FORMAT_VERSION} expected)")
        blob.pop("format_version")
        blob["preprocessing"] = Preprocessing(**blob["preprocessing"])
        return cls(**blob)
