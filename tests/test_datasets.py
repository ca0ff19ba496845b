"""Named datasets on the real files in the shared data folder, and the data root rules.

Checksums are compared with the data folder's ``SHA256SUMS``: one file's checksum is its
SHA-256; several files' is the SHA-256 of their hex digests, in the dataset's file order.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from distill_bench.data import DATASETS, get_data_root, list_datasets
from distill_bench.data.datasets import _find, _sha256

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]


def combined(digests: list[str]) -> str:
    return hashlib.sha256("".join(digests).encode()).hexdigest()


def test_builtin_datasets_are_listed():
    names = list_datasets()
    for name in ("mnist", "fashion-mnist", "cifar10", "cifar100", "svhn", "cifar10-jpeg75"):
        assert name in names
    assert list_datasets("cifar*") == sorted(n for n in names if n.startswith("cifar"))
    assert "lossy" in DATASETS.get("cifar10-jpeg75").note


def test_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("DISTILL_BENCH_DATA", str(tmp_path / "env"))
    assert get_data_root(tmp_path / "arg") == tmp_path / "arg"
    assert get_data_root() == tmp_path / "env"
    monkeypatch.delenv("DISTILL_BENCH_DATA")
    assert str(get_data_root()) == "data"


def test_mnist_real(mnist, sha256sums):
    assert mnist.train_images.shape == (60000, 1, 28, 28)
    assert mnist.test_images.shape == (10000, 1, 28, 28)
    assert mnist.train_images.dtype == torch.uint8 and mnist.train_labels.dtype == torch.int64
    assert mnist.classes == [str(i) for i in range(10)]
    assert torch.bincount(mnist.train_labels).tolist()[:2] == [5923, 6742]  # official counts
    assert mnist.checksum == combined([sha256sums[f"MNIST/raw/{f}"] for f in MNIST_FILES])
    # the statistics the field uses for MNIST (PROTOCOL.md): 0.1307 / 0.3081
    assert mnist.mean[0] == pytest.approx(0.1307, abs=1e-4)
    assert mnist.std[0] == pytest.approx(0.3081, abs=1e-4)


def test_cifar10_jpeg_real(cifar10_jpeg, sha256sums):
    data = cifar10_jpeg
    assert data.train_images.shape == (50000, 3, 32, 32)
    assert data.test_images.shape == (10000, 3, 32, 32)
    assert data.classes == CIFAR10_CLASSES
    assert torch.bincount(data.train_labels).tolist() == [5000] * 10
    assert torch.bincount(data.test_labels).tolist() == [1000] * 10
    assert data.checksum == sha256sums["cifar10-jpeg75.zip"]
    # training-split statistics stated in the data README
    np.testing.assert_allclose(data.mean, (0.4913, 0.4821, 0.4465), atol=2e-4)
    np.testing.assert_allclose(data.std, (0.2452, 0.2428, 0.2606), atol=2e-4)
    normed = data.normalize(data.train_images[::25])  # every class (the split is sorted)
    assert normed.mean().abs() < 0.1 and (normed.std() - 1).abs() < 0.1


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10-jpeg75"])
def test_checksums_hashed_afresh_match_sha256sums(name, data_root, sha256sums, tmp_cache):
    """With an empty memo the files are really hashed (not read back from a cache)."""
    spec = DATASETS.get(name)
    base, files = _find(spec, data_root)
    relative = [str(f.relative_to(data_root)) for f in files]
    expected = [sha256sums[r] for r in relative]
    got = _sha256(files)
    assert got == (expected[0] if len(files) == 1 else combined(expected))
