"""Readers of the official on-disk formats, on small files written here in those formats.

CIFAR-10/100 python pickles, SVHN ``.mat``, MNIST IDX (raw and ``.gz``) and image folders
(a directory and a zip), read through ``load_dataset`` with a temporary data root and cache;
then the errors for missing, partial and corrupt files, each of which must name the file.
"""
from __future__ import annotations

import gzip
import io
import pickle
import struct
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distill_bench.data import DataFileError, image_folder_dataset, load_dataset

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer",
                 "dog", "frog", "horse", "ship", "truck"]


# --- writers of the official formats ------------------------------------------------------

def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _keyed(d: dict, as_bytes: bool) -> dict:
    """Python-2 pickles (the official files) load with bytes keys under encoding='bytes'."""
    return {(k.encode() if as_bytes else k): v for k, v in d.items()}


def write_cifar10(folder: Path, per_batch: int = 4, test_n: int = 6,
                  bytes_keys: bool = True) -> dict[str, np.ndarray]:
    """``data_batch_1..5``, ``test_batch``, ``batches.meta``; returns what was written."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    out = {"train_x": [], "train_y": []}
    for i in range(1, 6):
        x = rng.integers(0, 256, (per_batch, 3, 32, 32), dtype=np.uint8)
        y = rng.integers(0, 10, per_batch).tolist()
        _dump(folder / f"data_batch_{i}", _keyed(
            {"batch_label": b"training batch", "data": x.reshape(per_batch, 3072),
             "labels": y, "filenames": [b"x.png"] * per_batch}, bytes_keys))
        out["train_x"].append(x)
        out["train_y"] += y
    x = rng.integers(0, 256, (test_n, 3, 32, 32), dtype=np.uint8)
    y = rng.integers(0, 10, test_n).tolist()
    _dump(folder / "test_batch", _keyed({"data": x.reshape(test_n, 3072), "labels": y},
                                        bytes_keys))
    names = [n.encode() for n in CIFAR10_NAMES] if bytes_keys else CIFAR10_NAMES
    _dump(folder / "batches.meta", _keyed({"label_names": names,
                                           "num_cases_per_batch": per_batch}, bytes_keys))
    return {"train_x": np.concatenate(out["train_x"]), "train_y": np.array(out["train_y"]),
            "test_x": x, "test_y": np.array(y)}


def write_cifar100(folder: Path, n_train: int = 8, n_test: int = 5) -> dict:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        fine = rng.integers(0, 100, n).tolist()
        _dump(folder / split, {b"data": x.reshape(n, 3072), b"fine_labels": fine,
                               b"coarse_labels": [f // 5 for f in fine]})
        out[split] = (x, np.array(fine))
    names = [f"fine{i:02d}".encode() for i in range(100)]
    _dump(folder / "meta", {b"fine_label_names": names,
                            b"coarse_label_names": [b"c"] * 20})
    return out


def write_svhn(folder: Path, n_train: int = 12, n_test: int = 4) -> dict:
    from scipy.io import savemat

    rng = np.random.default_rng(2)
    folder.mkdir(parents=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)  # the official (H, W, C, N)
        y = np.arange(n) % 10 + 1  # 1..10; the official files write digit 0 as 10
        savemat(folder / f"{split}_32x32.mat", {"X": x, "y": y.reshape(-1, 1).astype(np.uint8)})
        out[split] = (x, y)
    return out


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    return header + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_mnist(folder: Path, n_train: int = 12, n_test: int = 5,
                gz: bool = False) -> dict:
    rng = np.random.default_rng(3)
    folder.mkdir(parents=True)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        for name, arr in ((f"{prefix}-images-idx3-ubyte", x), (f"{prefix}-labels-idx1-ubyte", y)):
            blob = idx_bytes(arr)
            if gz:
                (folder / (name + ".gz")).write_bytes(gzip.compress(blob))
            else:
                (folder / name).write_bytes(blob)
        out[prefix] = (x, y)
    return out


def _image_bytes(array: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def toy_images(classes=("b_cat", "a_dog"), per_class: int = 2, size: int = 6,
               smooth: bool = False) -> dict[tuple[str, str], list[np.ndarray]]:
    """(split, class) -> HxWx3 uint8 images; ``smooth``: one colour per image (JPEG-safe)."""
    rng = np.random.default_rng(4)
    images = {}
    for split in ("train", "test"):
        for cls in classes:
            if smooth:
                images[split, cls] = [np.full((size, size, 3), rng.integers(0, 256, 3),
                                              dtype=np.uint8) for _ in range(per_class)]
            else:
                images[split, cls] = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                                      for _ in range(per_class)]
    return images


# --- the formats, read back -----------------------------------------------------------------

@pytest.mark.parametrize("bytes_keys", [True, False], ids=["py2-bytes-keys", "str-keys"])
def test_cifar10_python_batches(tmp_path, tmp_cache, bytes_keys):
    written = write_cifar10(tmp_path / "cifar-10-batches-py", bytes_keys=bytes_keys)
    data = load_dataset("cifar10", tmp_path)
    assert data.classes == CIFAR10_NAMES
    assert data.train_images.shape == (20, 3, 32, 32) and data.train_images.dtype == torch.uint8
    assert torch.equal(data.train_images, torch.from_numpy(written["train_x"]))
    assert data.train_labels.tolist() == written["train_y"].tolist()
    assert torch.equal(data.test_images, torch.from_numpy(written["test_x"]))
    assert data.test_labels.tolist() == written["test_y"].tolist()
    # normalisation statistics come from the training split
    scaled = written["train_x"].astype(np.float64) / 255
    np.testing.assert_allclose(data.mean, scaled.mean(axis=(0, 2, 3)), atol=1e-5)
    np.testing.assert_allclose(data.std, scaled.std(axis=(0, 2, 3), ddof=1), atol=1e-5)


def test_cifar10_torchvision_layout(tmp_path, tmp_cache):
    written = write_cifar10(tmp_path / "CIFAR10" / "cifar-10-batches-py")
    data = load_dataset("cifar10", tmp_path)
    assert torch.equal(data.test_images, torch.from_numpy(written["test_x"]))


def test_cifar100_fine_labels(tmp_path, tmp_cache):
    written = write_cifar100(tmp_path / "cifar-100-python")
    data = load_dataset("cifar100", tmp_path)
    assert data.num_classes == 100 and data.classes[7] == "fine07"
    train_x, train_y = written["train"]
    assert torch.equal(data.train_images, torch.from_numpy(train_x))
    assert data.train_labels.tolist() == train_y.tolist()  # fine, not coarse, labels
    assert data.test_labels.tolist() == written["test"][1].tolist()


def test_svhn_mat_label_ten_is_zero(tmp_path, tmp_cache):
    written = write_svhn(tmp_path / "SVHN")
    data = load_dataset("svhn", tmp_path)
    x, y = written["train"]
    assert data.train_images.shape == (12, 3, 32, 32)
    assert torch.equal(data.train_images[3], torch.from_numpy(x[..., 3].transpose(2, 0, 1)))
    assert data.train_labels.tolist() == (y % 10).tolist()
    assert 10 in y.tolist() and data.train_labels[y.tolist().index(10)] == 0
    assert set(data.train_labels.tolist()) == set(range(10))


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_mnist_idx(tmp_path, tmp_cache, gz):
    written = write_mnist(tmp_path / "MNIST" / "raw", gz=gz)
    data = load_dataset("mnist", tmp_path)
    x, y = written["train"]
    assert data.train_images.shape == (12, 1, 28, 28)
    assert torch.equal(data.train_images[:, 0], torch.from_numpy(x))
    assert data.train_labels.tolist() == y.tolist()
    assert data.test_images.shape == (5, 1, 28, 28)
    assert data.classes == [str(i) for i in range(10)]


def test_image_folder_directory_png(tmp_path, tmp_cache):
    images = toy_images()
    for (split, cls), arrays in images.items():
        (tmp_path / "tree" / split / cls).mkdir(parents=True)
        for i, arr in enumerate(arrays):
            (tmp_path / "tree" / split / cls / f"{i}.png").write_bytes(_image_bytes(arr, "PNG"))
    name = f"folder-{uuid.uuid4().hex[:8]}"
    image_folder_dataset(name, "tree")
    data = load_dataset(name, tmp_path)
    assert data.classes == ["a_dog", "b_cat"]  # sorted by folder name
    assert data.train_labels.tolist() == [0, 0, 1, 1]
    expected = np.stack(images["train", "a_dog"] + images["train", "b_cat"]).transpose(0, 3, 1, 2)
    assert torch.equal(data.train_images, torch.from_numpy(expected))  # PNG is lossless
    assert len(data.checksum) == 64

    # a changed image is a different dataset: new checksum, re-decoded
    arr = images["train", "a_dog"][0].copy()
    arr[0, 0] = 255 - arr[0, 0]
    (tmp_path / "tree" / "train" / "a_dog" / "0.png").write_bytes(_image_bytes(arr, "PNG"))
    changed = load_dataset(name, tmp_path)
    assert changed.checksum != data.checksum
    assert torch.equal(changed.train_images[0], torch.from_numpy(arr.transpose(2, 0, 1)))


def test_image_folder_zip_jpeg_with_top_folder_and_grey_mode(tmp_path, tmp_cache):
    images = toy_images(smooth=True)
    with zipfile.ZipFile(tmp_path / "toy.zip", "w") as archive:
        for (split, cls), arrays in images.items():
            for i, arr in enumerate(arrays):
                archive.writestr(f"toy/{split}/{cls}/{i:04d}.jpg", _image_bytes(arr, "JPEG"))
    name = f"zip-{uuid.uuid4().hex[:8]}"
    image_folder_dataset(name, "toy.zip")
    data = load_dataset(name, tmp_path)
    assert data.train_images.shape == (4, 3, 6, 6) and data.test_images.shape == (4, 3, 6, 6)
    expected = np.stack(images["test", "a_dog"] + images["test", "b_cat"]).transpose(0, 3, 1, 2)
    error = (data.test_images.int() - torch.from_numpy(expected).int()).abs().max()
    assert error <= 6, f"JPEG q95 of flat colours should be within a few levels, got {error}"

    grey = f"grey-{uuid.uuid4().hex[:8]}"
    image_folder_dataset(grey, "toy.zip", mode="L")
    assert load_dataset(grey, tmp_path).train_images.shape == (4, 1, 6, 6)


def test_cache_is_used_and_a_corrupt_cache_is_rebuilt(tmp_path, tmp_cache, monkeypatch):
    from distill_bench.data import DATASETS

    write_mnist(tmp_path / "MNIST" / "raw")
    first = load_dataset("mnist", tmp_path)
    caches = list(tmp_cache.glob("mnist-*.pt"))
    assert len(caches) == 1 and first.checksum[:16] in caches[0].name

    def no_decoding(base, train):
        raise AssertionError("decoded again although a cache exists")
    monkeypatch.setattr(DATASETS.get("mnist"), "read", no_decoding)
    assert torch.equal(load_dataset("mnist", tmp_path).train_images, first.train_images)

    monkeypatch.undo()
    monkeypatch.setenv("DISTILL_BENCH_CACHE", str(tmp_cache))
    caches[0].write_bytes(b"not a torch file")
    assert torch.equal(load_dataset("mnist", tmp_path).train_images, first.train_images)
    assert not list(tmp_cache.glob(".*.tmp")), "temporary cache files were left behind"


# --- errors: each names the file ----------------------------------------------------------

def test_missing_dataset_says_where_it_looked_and_how_to_fix(tmp_path, tmp_cache):
    with pytest.raises(DataFileError) as err:
        load_dataset("cifar10", tmp_path)
    message = str(err.value)
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert "DISTILL_BENCH_DATA" in message and "--data-root" in message
    assert "CIFAR-10 python version" in message  # the how-to-get sentence


def test_partial_cifar10_names_the_missing_file(tmp_path, tmp_cache):
    write_cifar10(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataFileError, match="partial") as err:
        load_dataset("cifar10", tmp_path)
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_3") in str(err.value)
    assert "data_batch_2" not in str(err.value)


def test_corrupt_cifar_pickle_names_the_file(tmp_path, tmp_cache):
    write_cifar10(tmp_path / "cifar-10-batches-py")
    bad = tmp_path / "cifar-10-batches-py" / "test_batch"
    bad.write_bytes(bad.read_bytes()[:100])  # cut short
    with pytest.raises(DataFileError) as err:
        load_dataset("cifar10", tmp_path)
    assert str(bad) in str(err.value)


def test_cifar_pickle_without_labels_names_the_file(tmp_path, tmp_cache):
    write_cifar100(tmp_path / "cifar-100-python")
    bad = tmp_path / "cifar-100-python" / "train"
    _dump(bad, {b"data": np.zeros((2, 3072), np.uint8), b"coarse_labels": [0, 1]})
    with pytest.raises(DataFileError, match="fine_labels") as err:
        load_dataset("cifar100", tmp_path)
    assert str(bad) in str(err.value)


@pytest.mark.parametrize("cut", [100, 10_000], ids=["in-header", "in-body"])
def test_truncated_idx_names_the_file(tmp_path, tmp_cache, cut):
    write_mnist(tmp_path / "MNIST" / "raw")
    bad = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    raw = bad.read_bytes()
    bad.write_bytes(raw[:10] if cut == 100 else raw[:-cut // 1000])
    with pytest.raises(DataFileError, match="truncated") as err:
        load_dataset("mnist", tmp_path)
    assert str(bad) in str(err.value)
    assert "MNIST/raw" in str(err.value)  # and how to provide the files


def test_bad_idx_magic_and_corrupt_gz_name_the_file(tmp_path, tmp_cache):
    write_mnist(tmp_path / "a" / "MNIST" / "raw")
    bad = tmp_path / "a" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    bad.write_bytes(b"\x00\x00\x0d\x01" + bad.read_bytes()[4:])  # float magic
    with pytest.raises(DataFileError, match="magic") as err:
        load_dataset("mnist", tmp_path / "a")
    assert str(bad) in str(err.value)

    write_mnist(tmp_path / "b" / "MNIST" / "raw", gz=True)
    bad_gz = tmp_path / "b" / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz"
    bad_gz.write_bytes(b"this is not gzip data")
    with pytest.raises(DataFileError) as err:
        load_dataset("mnist", tmp_path / "b")
    assert "train-labels-idx1-ubyte" in str(err.value)


def test_corrupt_zip_names_the_file(tmp_path, tmp_cache):
    bad = tmp_path / "cifar10-jpeg75.zip"
    bad.write_bytes(b"PK\x03\x04 but not really a zip archive" * 10)
    with pytest.raises(DataFileError, match="not a readable zip") as err:
        load_dataset("cifar10-jpeg75", tmp_path)
    assert str(bad) in str(err.value)


def test_undecodable_image_in_zip_names_the_member(tmp_path, tmp_cache):
    with zipfile.ZipFile(tmp_path / "cifar10-jpeg75.zip", "w") as archive:
        archive.writestr("train/cat/0000.jpg", _image_bytes(np.zeros((4, 4, 3), np.uint8), "JPEG"))
        archive.writestr("train/dog/0000.jpg", b"\xff\xd8 garbage, not a JPEG")
        archive.writestr("test/cat/0000.jpg", _image_bytes(np.zeros((4, 4, 3), np.uint8), "JPEG"))
    with pytest.raises(DataFileError) as err:
        load_dataset("cifar10-jpeg75", tmp_path)
    assert "train/dog/0000.jpg" in str(err.value) and "cifar10-jpeg75.zip" in str(err.value)


def test_image_folder_splits_with_different_classes_are_refused(tmp_path, tmp_cache):
    for split, classes in (("train", ("cat", "dog")), ("test", ("dog",))):
        for cls in classes:
            (tmp_path / "tree" / split / cls).mkdir(parents=True)
            (tmp_path / "tree" / split / cls / "0.png").write_bytes(
                _image_bytes(np.zeros((4, 4, 3), np.uint8), "PNG"))
    name = f"mismatch-{uuid.uuid4().hex[:8]}"
    image_folder_dataset(name, "tree")
    # otherwise test 'dog' would silently get label 0, which means 'cat' in training
    with pytest.raises(DataFileError, match="classes"):
        load_dataset(name, tmp_path)


def test_corrupt_svhn_mat_names_the_file(tmp_path, tmp_cache):
    write_svhn(tmp_path / "SVHN")
    bad = tmp_path / "SVHN" / "test_32x32.mat"
    bad.write_bytes(b"MATLAB 5.0 MAT-file, but then nothing useful")
    with pytest.raises(DataFileError) as err:
        load_dataset("svhn", tmp_path)
    assert str(bad) in str(err.value)


def test_hidden_files_and_macos_zip_metadata_are_not_images(tmp_path, tmp_cache):
    png = _image_bytes(np.full((4, 4, 3), 9, np.uint8), "PNG")
    with zipfile.ZipFile(tmp_path / "cifar10-jpeg75.zip", "w") as archive:
        for split in ("train", "test"):
            archive.writestr(f"{split}/cat/0000.png", png)
            archive.writestr(f"__MACOSX/{split}/cat/._0000.png", b"\x00\x05\x16\x07 resource fork")
            archive.writestr(f"{split}/cat/._0000.png", b"\x00\x05\x16\x07 resource fork")
    data = load_dataset("cifar10-jpeg75", tmp_path)
    assert data.train_images.shape == (1, 3, 4, 4) and data.classes == ["cat"]

    (tmp_path / "tree" / "train" / "cat").mkdir(parents=True)
    (tmp_path / "tree" / "test" / "cat").mkdir(parents=True)
    for split in ("train", "test"):
        (tmp_path / "tree" / split / "cat" / "0.png").write_bytes(png)
        (tmp_path / "tree" / split / "cat" / "._0.png").write_bytes(b"\x00\x05 not an image")
    name = f"hidden-{uuid.uuid4().hex[:8]}"
    image_folder_dataset(name, "tree")
    assert load_dataset(name, tmp_path).test_images.shape == (1, 3, 4, 4)
