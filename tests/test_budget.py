"""The real-data budget: ``shots`` images per class, class-balanced, drawn from the seed."""
from __future__ import annotations

import pytest
import torch

from conftest import make_toy_dataset
from distill_bench.budget import draw_shots, parse_shots, real_subset
from distill_bench.synthetic import Preprocessing

LABELS = torch.tensor([0, 1, 2] * 6 + [2, 2])  # class sizes 6, 6, 8


@pytest.mark.parametrize("value, expected", [(0, 0), (3, 3), ("5", 5), ("all", "all"),
                                             (" ALL ", "all")])
def test_parse_shots(value, expected):
    assert parse_shots(value) == expected


@pytest.mark.parametrize("bad", [-1, "-2", 2.5, "2.5", "some", True, None])
def test_parse_shots_rejects(bad):
    with pytest.raises(ValueError, match="shots=") as err:
        parse_shots(bad)
    assert "non-negative integer or 'all'" in str(err.value)


def test_zero_shots_is_empty():
    assert draw_shots(LABELS, 3, 0, seed=0).numel() == 0


def test_all_shots_is_everything():
    assert draw_shots(LABELS, 3, "all", seed=0).tolist() == list(range(len(LABELS)))


def test_k_shots_is_class_balanced_and_unique():
    idx = draw_shots(LABELS, 3, 4, seed=1)
    assert torch.bincount(LABELS[idx], minlength=3).tolist() == [4, 4, 4]
    assert len(set(idx.tolist())) == 12 and idx.tolist() == sorted(idx.tolist())


def test_shots_are_deterministic_per_seed():
    same = [draw_shots(LABELS, 3, 2, seed=7).tolist() for _ in range(2)]
    assert same[0] == same[1]
    draws = {tuple(draw_shots(LABELS, 3, 2, seed=s).tolist()) for s in range(10)}
    assert len(draws) > 1, "different seeds should draw different subsets"


def test_more_shots_than_a_class_holds_is_an_error():
    with pytest.raises(ValueError, match="class 0 has only 6") as err:
        draw_shots(LABELS, 3, 7, seed=0)
    assert "at most 6" in str(err.value)


def test_real_subset_hands_over_exactly_the_drawn_images():
    data = make_toy_dataset(num_classes=3, per_class=5)
    real = real_subset(data, 2, seed=3)
    expected_idx = draw_shots(data.train_labels, 3, 2, seed=3)
    assert torch.equal(real.indices, expected_idx)
    assert real.images.shape == (6, 1, 8, 8) and real.shots == 2
    assert torch.equal(real.labels, data.train_labels[expected_idx])
    torch.testing.assert_close(real.images, data.normalize(data.train_images[expected_idx]))
    assert real.data_checksum == data.checksum and real.num_classes == 3
    assert real.preprocessing == Preprocessing(data.mean, data.std)
    assert real.of_class(1).shape[0] == 2

    none = real_subset(data, 0, seed=3)
    assert none.images.shape == (0, 1, 8, 8) and none.labels.numel() == 0
    assert real_subset(data, "all", seed=3).images.shape[0] == 15
