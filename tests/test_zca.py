"""ZCA whitening: parity with Kornia, the Preprocessing path the evaluator uses, guards."""
import pytest
import torch
from kornia.enhance import ZCAWhitening

from distill_bench.method import RealSubset
from distill_bench.synthetic import Preprocessing, SyntheticSet
from distill_bench.zca import ZCA_EPS, apply_zca, fit_zca, whiten

MEAN, STD = (0.3, 0.5), (0.2, 0.25)


def _uint8(n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 2, 4, 4), generator=gen, dtype=torch.uint8)


def _subset(n=40):
    prep = Preprocessing(MEAN, STD)
    labels = torch.arange(n) % 2
    return RealSubset("toy", prep(_uint8(n)), labels, 2, ["a", "b"], n // 2,
                      torch.arange(n), prep, "checksum")


def test_fit_shapes_and_kornia_parity():
    x = Preprocessing(MEAN, STD)(_uint8(50))
    zca = fit_zca(x)
    assert set(zca) == {"mean", "transform"}
    assert zca["mean"].shape == (32,) and zca["transform"].shape == (32, 32)
    expected = ZCAWhitening(eps=ZCA_EPS).fit(x)(x)
    torch.testing.assert_close(apply_zca(x, zca), expected, atol=1e-5, rtol=1e-5)


def test_preprocessing_whitens_test_images_like_kornia():
    train, test = _uint8(60, seed=1), _uint8(30, seed=2)
    plain = Preprocessing(MEAN, STD)
    kornia_zca = ZCAWhitening(eps=ZCA_EPS).fit(plain(train))
    prep = Preprocessing(MEAN, STD, zca=fit_zca(plain(train)))
    torch.testing.assert_close(prep(test), kornia_zca(plain(test)), atol=1e-5, rtol=1e-5)


def test_whitened_covariance_is_identity_for_tiny_eps():
    gen = torch.Generator().manual_seed(3)
    mixing = torch.randn(12, 12, generator=gen)
    x = (torch.randn(2000, 12, generator=gen) @ mixing).view(2000, 3, 2, 2)
    white = apply_zca(x, fit_zca(x, eps=1e-6)).flatten(1)
    cov = torch.cov(white.T)
    torch.testing.assert_close(cov, torch.eye(12), atol=1e-3, rtol=0)


def test_whiten_subset_carries_fit_and_set_round_trips(tmp_path):
    real = whiten(_subset())
    assert real.preprocessing.zca is not None
    torch.testing.assert_close(real.images, apply_zca(Preprocessing(MEAN, STD)(_uint8(40)),
                                                      real.preprocessing.zca))
    syn = SyntheticSet(real.images[:2], real.labels[:2], 2, "toy", real.preprocessing)
    loaded = SyntheticSet.load(syn.save(tmp_path / "set.pt"))
    test = _uint8(5, seed=4)
    torch.testing.assert_close(loaded.preprocessing(test), real.preprocessing(test))


def test_guards():
    with pytest.raises(ValueError, match="at least 2 images"):
        fit_zca(torch.zeros(1, 1, 2, 2))
    with pytest.raises(ValueError, match="eps"):
        fit_zca(torch.randn(4, 1, 2, 2), eps=0.0)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        fit_zca(torch.randn(4, 4))
    with pytest.raises(ValueError, match="already ZCA-whitened"):
        whiten(whiten(_subset()))
