"""A tiny MNIST for tests: a few real digits per class written as IDX files.

Real digits are taken from the MNIST files under ``$DISTILL_BENCH_DATA`` when present;
otherwise (a fresh clone without data) class-specific generated patterns stand in, so
tests run everywhere. Point ``DISTILL_BENCH_DATA`` at the returned root (and
``DISTILL_BENCH_CACHE`` somewhere temporary) to load it as the dataset ``mnist``.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

FILES = {True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def write_idx(path: Path, array: np.ndarray) -> None:
    """An unsigned-byte IDX file (the MNIST format)."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def _read_idx(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _real_split(train: bool) -> tuple[np.ndarray, np.ndarray] | None:
    root = os.environ.get("DISTILL_BENCH_DATA")
    if not root:
        return None
    base = Path(root) / "MNIST" / "raw"
    images, labels = (base / name for name in FILES[train])
    if not (images.exists() and labels.exists()):
        return None
    return _read_idx(images), _read_idx(labels)


def _generated_split(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Blurry class templates plus noise: learnable, digit-sized, deterministic."""
    rng = np.random.default_rng(1234)
    templates = rng.random((10, 7, 7)).repeat(4, axis=1).repeat(4, axis=2)  # 28 x 28
    noise = np.random.default_rng(seed).normal(0, 0.15, (10, per_class, 28, 28))
    images = np.clip(templates[:, None] + noise, 0, 1) * 255
    labels = np.arange(10).repeat(per_class)
    return images.reshape(-1, 28, 28).astype(np.uint8), labels.astype(np.uint8)


def _take(split, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    images, labels = split
    rng = np.random.default_rng(seed)
    picked = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class]
                             for c in range(10)])
    return images[picked], labels[picked]


def tiny_mnist(root: Path, train_per_class: int = 20, test_per_class: int = 10) -> Path:
    """Write ``root/MNIST/raw/*`` with a class-balanced tiny MNIST; returns ``root``."""
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for train, per_class in ((True, train_per_class), (False, test_per_class)):
        real = _real_split(train)
        seed = 0 if train else 1
        images, labels = (_take(real, per_class, seed) if real is not None
                          else _generated_split(per_class, seed))
        write_idx(raw / FILES[train][0], images)
        write_idx(raw / FILES[train][1], labels)
    return Path(root)


def tiny_env(tmp_path: Path, **sizes) -> dict:
    """Environment for a subprocess (or monkeypatch) that sees only the tiny MNIST."""
    root = tiny_mnist(tmp_path / "data", **sizes)
    return {"DISTILL_BENCH_DATA": str(root), "DISTILL_BENCH_CACHE": str(tmp_path / "cache"),
            "DISTILL_BENCH_TEACHERS": str(tmp_path / "teachers"),
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
