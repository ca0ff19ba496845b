"""Real datasets by name: where their files live, how to read them, and a tensor cache.

A dataset is decoded once into uint8 tensors and cached under ``$DISTILL_BENCH_CACHE``
(default ``~/.cache/distill_bench``), keyed by the SHA-256 of its source files, which is
also the ``data_checksum`` every result records. Normalisation statistics are computed from
the training split.

Data root: ``--data-root`` or ``$DISTILL_BENCH_DATA``; torchvision's layouts are accepted.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from distill_bench.data import readers
from distill_bench.data.readers import DataFileError
from distill_bench.registry import Registry

logger = logging.getLogger(__name__)

DATASETS = Registry("dataset")
DATA_ENV = "DISTILL_BENCH_DATA"
CACHE_ENV = "DISTILL_BENCH_CACHE"
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]
FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat",
                   "sandal", "shirt", "sneaker", "bag", "ankle-boot"]


@dataclass
class DatasetSpec:
    """How to find and read one dataset.

    Attributes:
        name: registered name, written into every result.
        candidates: relative paths (under the data root) that may hold the files; the first
            that exists is used.
        files: files (relative to the found path) whose bytes define the dataset; their
            SHA-256 is the data checksum.
        read: ``read(path, train) -> (images, labels, classes)``.
        how_to_get: one sentence for the error shown when the files are missing.
        note: fidelity remark shown by ``distill-bench list`` (e.g. lossy copies).
    """
    name: str
    candidates: tuple[str, ...]
    files: tuple[str, ...]
    read: Callable[[Path, bool], readers.Split]
    how_to_get: str
    note: str = ""


@dataclass
class RealDataset:
    """A decoded dataset: uint8 images, labels, class names and training statistics."""
    name: str
    train_images: torch.Tensor  # (N, C, H, W) uint8
    train_labels: torch.Tensor  # (N,) int64
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: list[str]
    checksum: str
    source: str
    mean: tuple[float, ...] = field(default=())
    std: tuple[float, ...] = field(default=())

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return self.train_images.shape[1]

    @property
    def image_size(self) -> int:
        return self.train_images.shape[-1]

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images -> float, standardised with the training split's statistics."""
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (images.float() / 255.0 - mean) / std


def get_data_root(data_root: str | os.PathLike | None = None) -> Path:
    """The data root: the argument, else ``$DISTILL_BENCH_DATA``, else ``./data``."""
    root = data_root or os.environ.get(DATA_ENV) or "data"
    return Path(root).expanduser()


def get_cache_dir() -> Path:
    path = Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "distill_bench"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _sha256(paths: list[Path]) -> str:
    """SHA-256 over the files' bytes in order (cached by path, size and mtime)."""
    digest = hashlib.sha256()
    memo_path = get_cache_dir() / "checksums.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    for path in paths:
        stat = path.stat()
        key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
        if key not in memo:
            file_digest = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    file_digest.update(chunk)
            memo[key] = file_digest.hexdigest()
        digest.update(memo[key].encode())
    _atomic_write_text(memo_path, json.dumps(memo, indent=0))
    return digest.hexdigest() if len(paths) > 1 else memo[key]


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _find(spec: DatasetSpec, root: Path) -> tuple[Path, list[Path]]:
    looked = []
    for candidate in spec.candidates:
        base = root / candidate
        looked.append(str(base))
        files = [base / f for f in spec.files] if spec.files else [base]
        present = [f.exists() or f.with_name(f.name + ".gz").exists() for f in files]
        if all(present):
            found = [f if f.exists() else f.with_name(f.name + ".gz") for f in files]
            return base, _expand_folders(found)
        if any(present):
            missing = [str(f) for f, ok in zip(files, present) if not ok]
            raise DataFileError(f"dataset {spec.name!r} is partial at {base}: missing "
                                f"{', '.join(missing)}. {spec.how_to_get}")
    raise DataFileError(
        f"dataset {spec.name!r} not found under the data root {root} (looked in: "
        f"{', '.join(looked)}). {spec.how_to_get} Set the root with --data-root or "
        f"${DATA_ENV}.")


def _expand_folders(paths: list[Path]) -> list[Path]:
    """Each folder (an image-folder tree) replaced by its files in sorted order."""
    out: list[Path] = []
    for path in paths:
        if not path.is_dir():
            out.append(path)
            continue
        inside = sorted(p for p in path.rglob("*") if p.is_file())
        if not inside:
            raise DataFileError(f"{path} is an empty folder; it should hold "
                                "train/<class>/* and test/<class>/* images")
        out += inside
    return out


def load_dataset(name: str, data_root: str | os.PathLike | None = None,
                 use_cache: bool = True) -> RealDataset:
    """Load a registered dataset, decoding it once and caching the tensors."""
    spec: DatasetSpec = DATASETS.get(name)
    root = get_data_root(data_root)
    base, files = _find(spec, root)
    checksum = _sha256(files)
    cache_file = get_cache_dir() / f"{name}-{checksum[:16]}.pt"
    if use_cache and cache_file.exists():
        try:
            blob = torch.load(cache_file, weights_only=False)
            return RealDataset(**blob)
        except Exception as err:  # a corrupt cache is rebuilt, never trusted
            logger.warning("ignoring unreadable cache %s (%s)", cache_file, err)
    logger.info("decoding %s from %s (once; cached in %s)", name, base, cache_file)
    try:
        train_x, train_y, classes = spec.read(base, True)
        test_x, test_y, test_classes = spec.read(base, False)
    except DataFileError as err:
        raise DataFileError(f"dataset {name!r}: {err}. {spec.how_to_get}") from err
    if list(test_classes) != list(classes):
        raise DataFileError(f"dataset {name!r} at {base}: the test split's classes "
                            f"{list(test_classes)} differ from the training split's "
                            f"{list(classes)}; give both splits the same class folders")
    scaled = train_x.float() / 255.0
    mean = tuple(scaled.mean(dim=(0, 2, 3)).tolist())
    std = tuple(scaled.std(dim=(0, 2, 3)).tolist())
    data = RealDataset(name, train_x, train_y, test_x, test_y, list(classes), checksum,
                       str(base), mean, std)
    if use_cache:
        tmp = cache_file.with_name(f".{cache_file.name}.{os.getpid()}.tmp")
        torch.save(data.__dict__, tmp)
        os.replace(tmp, cache_file)
    return data


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    return DATASETS.register(spec.name, spec)


def list_datasets(pattern: str = "*") -> list[str]:
    return DATASETS.list(pattern)


# --- built-in datasets --------------------------------------------------------------------

def _idx(classes):
    return lambda base, train: readers.read_mnist_split(base, train, classes)


register_dataset(DatasetSpec(
    "mnist", ("MNIST/raw", "mnist/raw", "MNIST", "mnist"),
    ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
     "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    _idx([str(i) for i in range(10)]),
    "Put the four IDX files (optionally .gz) in <root>/MNIST/raw/, as torchvision does."))

register_dataset(DatasetSpec(
    "fashion-mnist", ("FashionMNIST/raw", "fashion-mnist/raw", "FashionMNIST"),
    ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
     "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    _idx(FASHION_CLASSES),
    "Put the four IDX files (optionally .gz) in <root>/FashionMNIST/raw/."))

register_dataset(DatasetSpec(
    "cifar10", ("cifar-10-batches-py", "CIFAR10/cifar-10-batches-py"),
    tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta"),
    readers.read_cifar10_split,
    "Extract the official 'CIFAR-10 python version' tarball into <root>/."))

register_dataset(DatasetSpec(
    "cifar100", ("cifar-100-python", "CIFAR100/cifar-100-python"),
    ("train", "test", "meta"), readers.read_cifar100_split,
    "Extract the official 'CIFAR-100 python version' tarball into <root>/."))

register_dataset(DatasetSpec(
    "svhn", ("SVHN", "svhn", "."), ("train_32x32.mat", "test_32x32.mat"),
    readers.read_svhn_split,
    "Put train_32x32.mat and test_32x32.mat (cropped digits) in <root>/SVHN/."))

register_dataset(DatasetSpec(
    "cifar10-jpeg75", ("cifar10-jpeg75.zip", "cifar10-jpeg75"), (),
    lambda base, train: readers.read_image_folder_split(base, "train" if train else "test"),
    "It ships as cifar10-jpeg75.zip in the shared data folder (../shared/data).",
    note="lossy JPEG (quality 75) copy of CIFAR-10; results are not plain CIFAR-10"))


def image_folder_dataset(name: str, path: str, mode: str = "RGB") -> DatasetSpec:
    """Register any ``split/class/image`` tree (folder or zip) under ``name``."""
    return register_dataset(DatasetSpec(
        name, (path,), (),
        lambda base, train: readers.read_image_folder_split(
            base, "train" if train else "test", mode),
        f"Provide {path} holding train/<class>/* and test/<class>/* images."))
