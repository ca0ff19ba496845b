"""Readers of the on-disk formats real datasets come in.

Each reader returns ``(images, labels, classes)`` for one split: ``images`` a uint8 tensor
(N, C, H, W), ``labels`` an int64 tensor (N,), ``classes`` the class names in label order.
Errors name the file, what was wrong and how to provide a good one.
"""
from __future__ import annotations

import gzip
import io
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import torch

Split = tuple[torch.Tensor, torch.Tensor, list[str]]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class DataFileError(RuntimeError):
    """A dataset file is missing, partial or corrupt."""


def _open_maybe_gz(path: Path):
    if path.exists():
        return open(path, "rb")
    gz = path.with_name(path.name + ".gz")
    if gz.exists():
        return gzip.open(gz, "rb")
    raise DataFileError(f"missing file {path} (nor {gz.name} beside it)")


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (the MNIST format): magic, dims, then uint8 data."""
    try:
        with _open_maybe_gz(Path(path)) as f:
            raw = f.read()
    except (OSError, EOFError) as err:  # a corrupt or cut .gz
        raise DataFileError(f"{path} (or its .gz) cannot be read ({err})") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataFileError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DataFileError(f"{path} is truncated inside its header ({len(raw)} bytes)")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    expected = int(np.prod(dims))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != expected:
        raise DataFileError(f"{path} is truncated or padded: header says {dims} "
                            f"({expected} bytes), file holds {data.size}")
    return data.reshape(dims)


def read_mnist_split(folder: Path, train: bool, classes: list[str]) -> Split:
    """MNIST-layout split from ``folder`` (holding ``train-images-idx3-ubyte`` etc.)."""
    prefix = "train" if train else "t10k"
    images = read_idx(folder / f"{prefix}-images-idx3-ubyte")
    labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte")
    if len(images) != len(labels):
        raise DataFileError(f"{folder}: {len(images)} images but {len(labels)} labels")
    images_t = torch.from_numpy(images.copy()).unsqueeze(1)
    return images_t, torch.from_numpy(labels.astype(np.int64)), classes


def _unpickle(path: Path) -> dict:
    if not path.exists():
        raise DataFileError(f"missing file {path}")
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")
    except Exception as err:
        raise DataFileError(f"{path} is not a readable CIFAR pickle ({err})") from err


def _key(d: dict, name: str, path: Path):
    for k in (name.encode(), name):
        if k in d:
            return d[k]
    raise DataFileError(f"{path}: CIFAR pickle lacks the field {name!r}; keys: {list(d)[:6]}")


def _cifar_images(batch: dict, path: Path) -> torch.Tensor:
    data = np.asarray(_key(batch, "data", path), dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072:
        raise DataFileError(f"{path}: data has shape {data.shape}, expected (N, 3072)")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())


def read_cifar10_split(folder: Path, train: bool) -> Split:
    """CIFAR-10 python version: ``data_batch_1..5``, ``test_batch``, ``batches.meta``."""
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    images, labels = [], []
    for name in names:
        batch = _unpickle(folder / name)
        images.append(_cifar_images(batch, folder / name))
        labels.append(torch.tensor(_key(batch, "labels", folder / name), dtype=torch.int64))
    meta = _unpickle(folder / "batches.meta")
    label_names = _key(meta, "label_names", folder / "batches.meta")
    classes = [c.decode() if isinstance(c, bytes) else c for c in label_names]
    return torch.cat(images), torch.cat(labels), classes


def read_cifar100_split(folder: Path, train: bool) -> Split:
    """CIFAR-100 python version: ``train``, ``test``, ``meta`` (fine labels)."""
    name = "train" if train else "test"
    batch = _unpickle(folder / name)
    meta = _unpickle(folder / "meta")
    classes = [c.decode() if isinstance(c, bytes) else c
               for c in _key(meta, "fine_label_names", folder / "meta")]
    labels = torch.tensor(_key(batch, "fine_labels", folder / name), dtype=torch.int64)
    return _cifar_images(batch, folder / name), labels, classes


def read_svhn_split(folder: Path, train: bool) -> Split:
    """SVHN cropped digits: ``train_32x32.mat`` / ``test_32x32.mat``; label 10 means 0."""
    from scipy.io import loadmat

    path = folder / ("train_32x32.mat" if train else "test_32x32.mat")
    if not path.exists():
        raise DataFileError(f"missing file {path}")
    try:
        mat = loadmat(path)
        x, y = mat["X"], mat["y"]
    except Exception as err:
        raise DataFileError(f"{path} is not a readable SVHN .mat file ({err})") from err
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1)))
    labels = torch.from_numpy(y.astype(np.int64).reshape(-1) % 10)
    return images.to(torch.uint8), labels, [str(i) for i in range(10)]


def _decode_image(data: bytes, name: str, mode: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert(mode))
    except Exception as err:
        raise DataFileError(f"cannot decode image {name} ({err})") from err


def _hidden(parts) -> bool:
    """Hidden files and macOS zip metadata (``._x.jpg``, ``__MACOSX/``) are not images."""
    return "__MACOSX" in parts or any(p.startswith(".") for p in parts[-2:])


def read_image_folder_split(source: Path, split: str, mode: str = "RGB") -> Split:
    """``split/class/image`` files in a directory or a zip; classes sorted by name.

    A single top-level folder inside a zip (``cifar10/train/...``) is looked through.
    """
    source = Path(source)
    entries: list[tuple[str, str]] = []  # (class, member name)
    if source.is_dir():
        base = source / split
        if not base.is_dir():
            raise DataFileError(f"{source} has no '{split}/' folder of class folders")
        for path in sorted(base.glob("*/*")):
            if path.suffix.lower() in IMAGE_SUFFIXES and not _hidden(path.parts[-2:]):
                entries.append((path.parent.name, str(path)))
        read = lambda member: Path(member).read_bytes()  # noqa: E731
        archive = None
    else:
        if not source.exists():
            raise DataFileError(f"missing file {source}")
        try:
            archive = zipfile.ZipFile(source)
            members = archive.namelist()
        except zipfile.BadZipFile as err:
            raise DataFileError(f"{source} is not a readable zip file ({err})") from err
        for member in sorted(members):
            parts = member.split("/")
            if len(parts) >= 3 and parts[-3] == split and not _hidden(parts) \
                    and Path(member).suffix.lower() in IMAGE_SUFFIXES:
                entries.append((parts[-2], member))
        read = archive.read
    if not entries:
        raise DataFileError(f"{source} holds no images under '{split}/<class>/'")
    classes = sorted({c for c, _ in entries})
    index = {c: i for i, c in enumerate(classes)}
    try:
        arrays = [_decode_image(read(m), f"{source}:{m}", mode) for _, m in entries]
    except (zipfile.BadZipFile, OSError) as err:
        raise DataFileError(f"{source} is partial or corrupt ({err})") from err
    finally:
        if archive is not None:
            archive.close()
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise DataFileError(f"{source}: images of several sizes {sorted(shapes)[:3]}; "
                            "resize them to one size first")
    stacked = np.stack(arrays)
    if stacked.ndim == 3:
        stacked = stacked[:, :, :, None]
    images = torch.from_numpy(stacked.transpose(0, 3, 1, 2).copy())
    labels = torch.tensor([index[c] for c, _ in entries], dtype=torch.int64)
    return images, labels, classes
