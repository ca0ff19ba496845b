"""The ``DistillationMethod`` contract and the method registry.

A method turns the real data it is allowed to see (the ``shots`` subset, see ``budget``) into
a ``SyntheticSet`` of ``ipc`` images per class. It registers under a name, either with the
``register_method`` decorator or, from an installed package, through the entry-point group
``distill_bench.methods`` (how ``baselines/`` and ``methods/`` register too)::

    [options.entry_points]
    distill_bench.methods =
        my-method = my_package.module:MyMethod
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch

from distill_bench.checkpoint import Checkpoint
from distill_bench.registry import Registry
from distill_bench.synthetic import Preprocessing, SyntheticSet

logger = logging.getLogger(__name__)

METHODS = Registry("method", entry_point_group="distill_bench.methods")


@dataclass
class MethodConfig:
    """Base of every method's settings; subclasses add typed, documented fields."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict | None) -> "MethodConfig":
        """Build from a mapping, rejecting unknown keys with the allowed ones."""
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown option(s) {unknown} for {cls.__name__}; "
                             f"allowed: {sorted(known)}")
        return cls(**values)


@dataclass
class RealSubset:
    """The real data a method may see: the class-balanced ``shots`` subset, preprocessed.

    Attributes:
        images: (N, C, H, W) float in the preprocessing's space (N = shots * classes, or
            the whole training split when shots is ``all``; may be 0).
        labels: (N,) int64.
        shots: the budget per class (int, or ``"all"``).
        indices: positions of these images in the training split.
    """
    dataset: str
    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    classes: list[str]
    shots: int | str
    indices: torch.Tensor
    preprocessing: Preprocessing
    data_checksum: str

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    def of_class(self, c: int) -> torch.Tensor:
        return self.images[self.labels == c]


@dataclass
class RunContext:
    """What the harness lends a method for one distillation.

    Attributes:
        device: where to compute.
        workdir: a folder for this cell's checkpoints and artifacts; it survives
            interruptions, so a method that saves state there can resume.
        teacher_data: callable returning the whole ``RealDataset``, for training a teacher
            and nothing else (DeepKKT's zero-shot setting: a classifier trained on the full
            training split, but no real image handed to the distillation). A method that
            calls it must record the teacher in ``info["teacher"]``.
        artifacts_dir: a folder for files kept with the result (diagnostics, pictures).
        log_every: iterations between progress lines.
        progress: whether to show progress bars.
        info: what the method reports back for the result row (budgets, teacher, ...).
    """
    device: torch.device
    workdir: Path
    teacher_data: Callable[[], Any] | None = None
    artifacts_dir: Path | None = None
    log_every: int = 100
    progress: bool = True
    info: dict = field(default_factory=dict)
    checkpoints: list = field(default_factory=list)

    def checkpoint(self, name: str, every: int, key: str = "") -> Checkpoint:
        """A ``Checkpoint`` in ``workdir``; the runner adds the time earlier processes spent
        on a state it resumes to the row's ``distill_seconds``."""
        ckpt = Checkpoint(self.workdir / name, every, key)
        self.checkpoints.append(ckpt)
        return ckpt

    @property
    def resumed_seconds(self) -> float:
        return sum(c.earlier_seconds for c in self.checkpoints)


class DistillationMethod:
    """Base class of every distillation method.

    Subclasses set ``name`` and ``Config`` and implement ``distill``. Construction takes
    a config object or keyword overrides of its fields.
    """
    name: ClassVar[str] = ""
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    needs_teacher: ClassVar[bool] = False
    # real images per class the method needs: "none" (works from shots=0), "some" (at
    # least one), or "ipc" (at least ipc: it picks real images); checked before data loads
    needs_real: ClassVar[str] = "none"
    # config fields a longer run may raise and continue from a shorter run's saved state
    # (e.g. "iterations"); the runner's work folder ignores them, so the same command with a
    # bigger budget resumes where the smaller one stopped instead of starting afresh
    extendable: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: MethodConfig | None = None, **overrides: Any):
        if config is None:
            config = self.Config.from_dict(overrides)
        elif overrides:
            config = dataclasses.replace(config, **overrides)
        self.config = config

    def distill(self, real: RealSubset, ipc: int, seed: int,
                context: RunContext) -> SyntheticSet:
        raise NotImplementedError

    def check_cell(self, ipc: int, shots: int | str) -> None:
        """Refuse an (ipc, shots) this method cannot run, before any data is loaded."""
        if shots == "all" or self.needs_real == "none":
            return
        if self.needs_real == "some" and shots < 1:
            raise ValueError(f"{self.name} learns from real images but shots={shots} gives "
                             f"none; use shots >= 1 or 'all'")
        if self.needs_real == "ipc" and shots < ipc:
            raise ValueError(f"{self.name} picks ipc={ipc} real images per class but "
                             f"shots={shots} allows {shots}; use shots >= {ipc} or 'all'")

    def budget(self) -> dict:
        """The compute budget this config uses and whether it is the paper's (for rows)."""
        return {}

    def make_set(self, real: RealSubset, images: torch.Tensor, labels: torch.Tensor,
                 **kwargs: Any) -> SyntheticSet:
        """Wrap results into a ``SyntheticSet`` with this method's provenance."""
        provenance = {"method": self.name, "config": self.config.to_dict(),
                      "shots": real.shots, "data_checksum": real.data_checksum}
        provenance.update(kwargs.pop("provenance", {}))
        return SyntheticSet(images.detach().cpu(), labels.detach().cpu(), real.num_classes,
                            real.dataset, real.preprocessing, provenance=provenance, **kwargs)


def register_method(name: str) -> Callable[[type], type]:
    """Class decorator: register a ``DistillationMethod`` subclass under ``name``."""
    def wrap(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, DistillationMethod)):
            raise TypeError(f"{cls!r} must subclass DistillationMethod to be registered")
        cls.name = name
        return METHODS.register(name, cls)
    return wrap


def get_method(name: str) -> type[DistillationMethod]:
    return METHODS.get(name)


def list_methods(pattern: str = "*") -> list[str]:
    return METHODS.list(pattern)


def create_method(name: str, **overrides: Any) -> DistillationMethod:
    """Instantiate a method, dropping options left as ``None`` (its defaults stand)."""
    return get_method(name)(**{k: v for k, v in overrides.items() if v is not None})
