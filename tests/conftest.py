"""Shared fixtures: the real data root, small real and toy datasets, an isolated cache.

The real data root is ``$DISTILL_BENCH_DATA``, else ``<repo>/../shared/data``; tests that
need it are skipped, with the reason, when it is missing.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch

from distill_bench.data import RealDataset, load_dataset

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_ROOT = REPO.parent / "shared" / "data"


def real_data_root() -> Path:
    """``$DISTILL_BENCH_DATA``, else the shared data folder beside the repository."""
    return Path(os.environ.get("DISTILL_BENCH_DATA") or DEFAULT_DATA_ROOT)


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = real_data_root()
    if not (root / "SHA256SUMS").is_file():
        pytest.skip(f"real data root {root} not found (no SHA256SUMS there); set "
                    "DISTILL_BENCH_DATA to the shared data folder to run real-data tests")
    return root


@pytest.fixture(scope="session")
def sha256sums(data_root: Path) -> dict[str, str]:
    """``relative path -> hex digest`` from the data root's ``SHA256SUMS``."""
    sums = {}
    for line in (data_root / "SHA256SUMS").read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.strip().lstrip("*")] = digest
    return sums


@pytest.fixture(scope="session")
def mnist(data_root: Path) -> RealDataset:
    return load_dataset("mnist", data_root)


@pytest.fixture(scope="session")
def cifar10_jpeg(data_root: Path) -> RealDataset:
    return load_dataset("cifar10-jpeg75", data_root)


def shrink_test(data: RealDataset, per_class: int) -> RealDataset:
    """The same dataset with only the first ``per_class`` test images of each class
    (the training split, checksum and statistics are untouched)."""
    keep = torch.cat([(data.test_labels == c).nonzero().flatten()[:per_class]
                      for c in range(data.num_classes)]).sort().values
    return dataclasses.replace(data, test_images=data.test_images[keep],
                               test_labels=data.test_labels[keep])


@pytest.fixture(scope="session")
def small_mnist(mnist: RealDataset) -> RealDataset:
    return shrink_test(mnist, 50)


@pytest.fixture(scope="session")
def small_cifar10_jpeg(cifar10_jpeg: RealDataset) -> RealDataset:
    return shrink_test(cifar10_jpeg, 30)


@pytest.fixture
def tmp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point ``$DISTILL_BENCH_CACHE`` at a fresh folder so no real cache is touched."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("DISTILL_BENCH_CACHE", str(cache))
    return cache


def make_toy_dataset(num_classes: int = 3, per_class: int = 4, test_per_class: int = 5,
                     channels: int = 1, size: int = 8, name: str = "toy",
                     seed: int = 0) -> RealDataset:
    """A tiny in-memory dataset whose classes differ in brightness (easy to learn)."""
    gen = torch.Generator().manual_seed(seed)

    def split(n):
        labels = torch.arange(num_classes).repeat_interleave(n)
        level = (labels.float() + 0.5) / num_classes * 255  # class -> mean brightness
        noise = torch.randint(-20, 21, (len(labels), channels, size, size), generator=gen)
        images = (level.view(-1, 1, 1, 1) + noise).clamp(0, 255).to(torch.uint8)
        return images, labels

    train_x, train_y = split(per_class)
    test_x, test_y = split(test_per_class)
    scaled = train_x.float() / 255
    return RealDataset(name, train_x, train_y, test_x, test_y,
                       [f"class{c}" for c in range(num_classes)], "0" * 64, "memory",
                       tuple(scaled.mean(dim=(0, 2, 3)).tolist()),
                       tuple(scaled.std(dim=(0, 2, 3)).tolist()))


@pytest.fixture
def toy() -> RealDataset:
    return make_toy_dataset()
