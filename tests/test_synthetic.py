"""The synthetic set and its one-file format, preprocessing (normalisation and ZCA)."""
from __future__ import annotations

import pytest
import torch

from distill_bench.synthetic import Preprocessing, SyntheticSet


def _zca(dim: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(dim, dim, generator=gen)
    return {"mean": torch.randn(dim, generator=gen), "transform": a @ a.T / dim}


def _set(**kwargs) -> SyntheticSet:
    gen = torch.Generator().manual_seed(1)
    args = dict(syn_images=torch.randn(6, 3, 4, 4, generator=gen),
                syn_labels=torch.softmax(torch.randn(6, 3, generator=gen), 1),
                num_classes=3, dataset="toy",
                preprocessing=Preprocessing((0.5, 0.4, 0.3), (0.2, 0.25, 0.3), _zca(48)))
    args.update(kwargs)
    return SyntheticSet(**args)


def test_round_trip_keeps_everything(tmp_path):
    syn = _set(eval_lr=0.0123, eval_augment="none",
               extras={"lambdas": torch.arange(6.0), "note": "kept"},
               provenance={"method": "m", "config": {"a": 1}, "seed": 4})
    path = syn.save(tmp_path / "sub" / "set.pt")
    assert path.exists() and not list(path.parent.glob(".*.tmp"))
    back = SyntheticSet.load(path)
    assert torch.equal(back.syn_images, syn.syn_images)
    assert torch.equal(back.syn_labels, syn.syn_labels) and back.syn_labels.dim() == 2
    assert back.eval_lr == 0.0123 and back.eval_augment == "none"
    assert back.num_classes == 3 and back.dataset == "toy"
    assert torch.equal(back.extras["lambdas"], torch.arange(6.0))
    assert back.extras["note"] == "kept"
    assert back.provenance == {"method": "m", "config": {"a": 1}, "seed": 4}
    assert isinstance(back.preprocessing, Preprocessing)
    assert back.preprocessing.mean == (0.5, 0.4, 0.3)
    assert torch.equal(back.preprocessing.zca["transform"], syn.preprocessing.zca["transform"])
    pixels = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    assert torch.equal(back.preprocessing(pixels), syn.preprocessing(pixels))


def test_hard_labels_and_ipc():
    syn = _set(syn_labels=torch.tensor([0, 0, 1, 1, 2, 2]))
    assert syn.ipc == 2 and syn.hard_labels.tolist() == [0, 0, 1, 1, 2, 2]
    soft = _set(syn_labels=torch.eye(3).repeat(2, 1))
    assert soft.hard_labels.tolist() == [0, 1, 2, 0, 1, 2] and soft.ipc == 2


def test_preprocessing_normalises_then_whitens():
    zca = _zca(12)
    prep = Preprocessing((0.5,), (0.25,), zca)
    pixels = torch.randint(0, 256, (5, 3, 2, 2), dtype=torch.uint8)
    normed = (pixels.float() / 255 - 0.5) / 0.25
    expected = ((normed.flatten(1) - zca["mean"]) @ zca["transform"].T).view(5, 3, 2, 2)
    torch.testing.assert_close(prep(pixels), expected)
    torch.testing.assert_close(Preprocessing((0.5,), (0.25,))(pixels), normed)


def test_invalid_sets_are_refused():
    with pytest.raises(ValueError, match="syn_labels"):
        _set(syn_labels=torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        _set(syn_images=torch.zeros(6, 16))
    bad = torch.zeros(6, 3, 4, 4)
    bad[2, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        _set(syn_images=bad)


def test_corrupt_missing_and_foreign_files(tmp_path):
    path = _set().save(tmp_path / "set.pt")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="not a readable synthetic set") as err:
        SyntheticSet.load(path)
    assert str(path) in str(err.value)

    with pytest.raises(FileNotFoundError, match="no synthetic set"):
        SyntheticSet.load(tmp_path / "absent.pt")

    foreign = tmp_path / "foreign.pt"
    torch.save({"syn_images": torch.zeros(1)}, foreign)
    with pytest.raises(ValueError, match="format_version") as err:
        SyntheticSet.load(foreign)
    assert str(foreign) in str(err.value)
