"""Tests of the DSA augmentation module against PROTOCOL.md section 2."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from kornia.enhance import adjust_contrast

from distill_bench.augment import (DEFAULT_STRATEGY, DIGIT_STRATEGY, FAMILIES, DSA,
                                   AugParams, DSAConfig, default_strategy)

SIZE = 32


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def ramp(n: int = 1, channels: int = 3, size: int = SIZE) -> torch.Tensor:
    """Distinct, non-symmetric images (so flips, shifts and rotations are visible)."""
    base = torch.arange(channels * size * size, dtype=torch.float32)
    base = torch.sin(base * 0.37) + base / base.numel()
    return base.view(1, channels, size, size).repeat(n, 1, 1, 1)


# --- siamese draws ----------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_batch1_draw_gives_identical_outputs_across_batches(family):
    dsa = DSA()
    image = ramp()
    for seed in range(5):
        params = dsa.sample(1, gen(seed), SIZE, family=family)
        real = dsa.apply(image.repeat(7, 1, 1, 1), params)
        syn = dsa.apply(image.repeat(2, 1, 1, 1), params)
        assert torch.equal(real, real[:1].expand_as(real))
        assert torch.equal(syn, real[:2])


def test_siamese_call_shares_one_draw_and_per_image_call_does_not():
    dsa = DSA(DSAConfig(strategy="color"))
    batch = ramp(6)
    shared = dsa(batch, gen(1), siamese=True)
    assert torch.equal(shared, shared[:1].expand_as(shared))
    per_image = dsa(batch, gen(1))
    assert not torch.allclose(per_image[0], per_image[1])


def test_draw_size_must_be_one_or_the_batch():
    dsa = DSA()
    params = dsa.sample(3, gen(), SIZE, family="rotate")
    with pytest.raises(ValueError, match="drawn for 3 images, applied to 5"):
        dsa.apply(ramp(5), params)


# --- gradients --------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("siamese", [True, False])
def test_gradients_reach_pixels(family, siamese):
    dsa = DSA()
    x = ramp(4).requires_grad_(True)
    params = dsa.sample(1 if siamese else 4, gen(3), SIZE, family=family)
    out = dsa.apply(x, params)
    weights = torch.randn(out.shape, generator=gen(9))
    (out * weights).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for i in range(4):  # every image receives a gradient
        assert x.grad[i].abs().sum() > 0


# --- ranges of the protocol table ------------------------------------------------------

def draws(family: str, n: int = 4000, size: int = SIZE) -> dict[str, torch.Tensor]:
    return DSA().sample(n, gen(11), size, family=family).values


def test_color_factors_are_uniform_on_unit_interval():
    for name, u in draws("color").items():
        assert u.min() >= 0 and u.max() <= 1, name
        assert u.min() < 0.01 and u.max() > 0.99, name
        assert abs(u.mean().item() - 0.5) < 0.03, name


@pytest.mark.parametrize("size,limit", [(32, 4), (28, 4), (64, 8)])  # 28: 3.5 -> 4
def test_crop_shift_is_integer_up_to_rounded_eighth(size, limit):
    shift = draws("crop", size=size)["shift"]
    assert shift.dtype == torch.int64
    for axis in range(2):
        assert set(shift[:, axis].tolist()) == set(range(-limit, limit + 1))


def test_cutout_centre_covers_the_image_symmetrically():
    centre = draws("cutout")["centre"]
    # side 16 is even: centres 0..32 put the square's edge from -8..8 to 24..40
    assert set(centre[:, 0].tolist()) == set(range(0, SIZE + 1))
    assert set(centre[:, 1].tolist()) == set(range(0, SIZE + 1))
    odd = DSA().sample(4000, gen(2), 27, family="cutout").values["centre"]  # side 14
    assert set(odd[:, 0].tolist()) == set(range(0, 28))


def test_cutout_zeroes_a_half_size_square():
    dsa = DSA()
    ones = torch.ones(1, 3, SIZE, SIZE)
    inner = dsa.apply(ones, AugParams("cutout", {"centre": torch.tensor([[16, 10]])}))
    assert (inner == 0).sum() == 3 * 16 * 16
    assert (inner[0, :, 8:24, 2:18] == 0).all()
    corner = dsa.apply(ones, AugParams("cutout", {"centre": torch.tensor([[0, 32]])}))
    assert (corner == 0).sum() == 3 * 8 * 8


def test_flip_probability_is_one_half():
    flips = draws("flip")["flip"]
    assert flips.dtype == torch.bool
    assert abs(flips.float().mean().item() - 0.5) < 0.03
    x = ramp(2)
    out = DSA().apply(x, AugParams("flip", {"flip": torch.tensor([True, False])}))
    assert torch.equal(out[0], x[0].flip(-1)) and torch.equal(out[1], x[1])


def test_scale_factors_are_independent_in_range():
    s = draws("scale")["scale"]
    assert s.shape == (4000, 2)
    assert s.min() >= 1 / 1.2 - 1e-6 and s.max() <= 1.2 + 1e-6
    assert s.min() < 1 / 1.2 + 0.005 and s.max() > 1.2 - 0.005
    assert abs(torch.corrcoef(s.T)[0, 1].item()) < 0.05


def test_rotation_angles_are_within_fifteen_degrees():
    angle = draws("rotate")["angle"]
    assert angle.min() >= -15 and angle.max() <= 15
    assert angle.min() < -14.9 and angle.max() > 14.9


def test_family_drawn_uniformly_and_digits_never_flip():
    dsa = DSA()
    g = gen(5)
    counts = {f: 0 for f in FAMILIES}
    for _ in range(1200):
        counts[dsa.sample(1, g, SIZE).family] += 1
    assert all(150 < c < 250 for c in counts.values()), counts
    digits = DSA(DSAConfig(strategy=default_strategy(1)))
    assert default_strategy(1) == DIGIT_STRATEGY and default_strategy(3) == DEFAULT_STRATEGY
    assert all(digits.sample(1, g, 28).family != "flip" for _ in range(300))


# --- the operations themselves ---------------------------------------------------------

def test_crop_is_an_exact_integer_translation_with_zeros():
    x = ramp(1)
    out = DSA().apply(x, AugParams("crop", {"shift": torch.tensor([[3, -2]])}))  # dx, dy
    expected = torch.zeros_like(x)
    expected[..., :SIZE - 2, 3:] = x[..., 2:, :SIZE - 3]
    assert torch.equal(out, expected)


def test_scale_samples_the_input_at_s_times_the_output_coordinates():
    x = ramp(2)
    s = torch.tensor([[1.15, 0.9], [0.85, 1.1]])
    out = DSA().apply(x, AugParams("scale", {"scale": s}))
    theta = torch.zeros(2, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = s[:, 0], s[:, 1]
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    expected = F.grid_sample(x, grid, align_corners=True, padding_mode="zeros")
    assert torch.allclose(out, expected, atol=1e-4)


def test_rotation_turns_about_the_centre():
    x = ramp(1, size=8)
    quarter = DSA().apply(x, AugParams("rotate", {"angle": torch.tensor([90.0])}))
    assert torch.allclose(quarter, torch.rot90(x, -1, (2, 3)), atol=1e-5)
    angle = torch.tensor([12.0])
    out = DSA().apply(ramp(1), AugParams("rotate", {"angle": angle}))
    r = math.radians(12.0)
    theta = torch.tensor([[[math.cos(r), math.sin(r), 0.0], [-math.sin(r), math.cos(r), 0.0]]])
    grid = F.affine_grid(theta, [1, 3, SIZE, SIZE], align_corners=True)
    assert torch.allclose(out, F.grid_sample(ramp(1), grid, align_corners=True), atol=1e-4)


def test_colour_follows_the_protocol_formulas():
    x = ramp(2) * 2 - 0.3  # normalised-space values, outside [0, 1]
    u = {"brightness": torch.tensor([0.2, 0.9]), "saturation": torch.tensor([0.1, 0.7]),
         "contrast": torch.tensor([0.4, 0.95])}
    out = DSA().apply(x, AugParams("color", u))
    for i in range(2):
        y = x[i] + (u["brightness"][i] - 0.5) * 1.0
        pixel_mean = y.mean(dim=0, keepdim=True)
        y = (y - pixel_mean) * (2 * u["saturation"][i]) + pixel_mean
        image_mean = y.mean()
        y = (y - image_mean) * (u["contrast"][i] + 0.5) + image_mean
        assert torch.allclose(out[i], y, atol=1e-5)
    assert out.min() < 0 or out.max() > 1  # no clamping to [0, 1]


def test_colour_contrast_differs_from_kornia_adjust_contrast():
    x = torch.rand(1, 3, SIZE, SIZE, generator=gen(4))
    u = {"brightness": torch.tensor([0.5]), "saturation": torch.tensor([0.5]),
         "contrast": torch.tensor([0.25])}  # identity brightness and saturation
    ours = DSA().apply(x, AugParams("color", u))
    assert torch.allclose(ours.mean(), x.mean(), atol=1e-5)  # contrast keeps the mean
    kornia = adjust_contrast(x, 0.75)  # scales about 0, which moves the mean
    assert not torch.allclose(ours, kornia, atol=1e-2)


def test_saturation_is_identity_on_one_channel():
    x = ramp(1, channels=1)
    u = {"brightness": torch.tensor([0.5]), "saturation": torch.tensor([0.1]),
         "contrast": torch.tensor([0.5])}
    assert torch.allclose(DSA().apply(x, AugParams("color", u)), x, atol=1e-6)


# --- randomness --------------------------------------------------------------------------

def test_sampling_leaves_the_global_rng_alone_and_is_reproducible():
    dsa = DSA()
    before = torch.get_rng_state()
    first = [dsa.sample(4, gen(7), SIZE) for _ in range(3)]
    out = dsa(ramp(4), gen(7))
    assert torch.equal(torch.get_rng_state(), before)
    again = [dsa.sample(4, gen(7), SIZE) for _ in range(3)]
    for a, b in zip(first, again):
        assert a.family == b.family
        assert all(torch.equal(a.values[k], b.values[k]) for k in a.values)
    assert torch.equal(out, dsa(ramp(4), gen(7)))


def test_strategy_none_is_identity_and_bad_settings_raise():
    x = ramp(2)
    assert torch.equal(DSA(DSAConfig(strategy="none"))(x, gen()), x)
    with pytest.raises(ValueError, match="'zoom'"):
        DSAConfig(strategy="color_zoom")
    with pytest.raises(ValueError, match="scale=0.5"):
        DSAConfig(scale=0.5)
    with pytest.raises(ValueError, match="family 'blur'"):
        DSA().sample(1, gen(), SIZE, family="blur")
