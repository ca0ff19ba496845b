"""Differentiable Siamese Augmentation (DSA, Zhao & Bilen, ICML 2021) on Kornia.

Six families with the protocol's parameters (see PROTOCOL.md section 2):

| family | operation | parameter |
|---|---|---|
| color  | brightness ``x + (u - 0.5)``, saturation ``(x - m_px) * 2u + m_px``,
           contrast ``(x - m_img) * (u + 0.5) + m_img`` | three u ~ U[0, 1] |
| crop   | integer translation, zero padding | up to +-round(0.125 * size) px |
| cutout | zero a square of side round(0.5 * size) | centre uniform |
| flip   | horizontal flip | p = 0.5 |
| scale  | affine scale, zero padding | sx, sy ~ U[1/1.2, 1.2] |
| rotate | affine rotation, zero padding | angle ~ U[-15, 15] degrees |

Sampling is kept apart from applying (as in Kornia): ``sample`` draws an ``AugParams`` from a
private ``torch.Generator``; ``apply`` replays it. A draw of batch size 1 broadcasts over any
batch, which is the siamese mode used in matching: one family and one set of parameters for
every image of the real and the synthetic batch. At evaluation each image gets its own draw
(one family per batch). The colour operations follow the protocol's formulas, which differ
from Kornia's ``adjust_*`` parameterisations. Geometric operations use Kornia's ``warp_affine``
on pixel-space affine matrices, so everything is differentiable in the pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from kornia.geometry.transform import get_affine_matrix2d, hflip, warp_affine

FAMILIES = ("color", "crop", "cutout", "flip", "scale", "rotate")
DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"
DIGIT_STRATEGY = "color_crop_cutout_scale_rotate"  # no flips for digits


@dataclass
class DSAConfig:
    """Ranges of the DSA families (the protocol's values by default)."""
    strategy: str = DEFAULT_STRATEGY
    brightness: float = 1.0      # x + (u - 0.5) * brightness
    saturation: float = 2.0      # factor u * saturation
    contrast: float = 0.5        # factor u + contrast
    crop: float = 0.125          # max shift, fraction of the size
    cutout: float = 0.5          # square side, fraction of the size
    flip: float = 0.5            # flip probability
    scale: float = 1.2           # factors in [1/scale, scale]
    rotate: float = 15.0         # degrees

    def __post_init__(self):
        for name in self.families:
            if name not in FAMILIES:
                raise ValueError(f"augmentation family {name!r} in strategy "
                                 f"{self.strategy!r} is not known; choose from {FAMILIES}")

    @property
    def families(self) -> list[str]:
        return [f for f in self.strategy.split("_") if f] if self.strategy != "none" else []


@dataclass
class AugParams:
    """One draw: a family and its per-image (or shared, batch 1) parameters."""
    family: str
    values: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return next(iter(self.values.values())).shape[0]


class DSA:
    """Sample and apply DSA transforms.

    Example:
        >>> dsa = DSA()
        >>> g = torch.Generator().manual_seed(0)
        >>> p = dsa.sample(1, g, image_size=32)          # siamese draw
        >>> real, syn = dsa.apply(torch.rand(8, 3, 32, 32), p), dsa.apply(torch.rand(2, 3, 32, 32), p)
    """

    def __init__(self, config: DSAConfig | None = None):
        self.config = config or DSAConfig()

    def sample(self, batch_size: int, generator: torch.Generator, image_size: int,
               family: str | None = None, device: torch.device | str = "cpu") -> AugParams:
        """Draw a family (unless given) and its parameters for ``batch_size`` images."""
        cfg = self.config
        if family is None:
            fams = cfg.families
            if not fams:
                return AugParams("none", {"_": torch.zeros(batch_size, device=device)})
            family = fams[int(torch.randint(len(fams), (1,), generator=generator))]
        u = lambda *shape: torch.rand(batch_size, *shape, generator=generator,  # noqa: E731
                                      device=device)
        if family == "color":
            values = {"brightness": u(), "saturation": u(), "contrast": u()}
        elif family == "crop":
            shift = int(image_size * cfg.crop + 0.5)
            values = {"shift": torch.randint(-shift, shift + 1, (batch_size, 2),
                                             generator=generator, device=device).float()}
        elif family == "cutout":
            values = {"centre": torch.floor(u(2) * image_size)}
        elif family == "flip":
            values = {"flip": u() < cfg.flip}
        elif family == "scale":
            lo = 1.0 / cfg.scale
            values = {"scale": u(2) * (cfg.scale - lo) + lo}
        elif family == "rotate":
            values = {"angle": (u() - 0.5) * 2 * cfg.rotate}
        else:
            raise ValueError(f"augmentation family {family!r} is not known; "
                             f"choose from {FAMILIES}")
        return AugParams(family, values)

    def apply(self, x: torch.Tensor, params: AugParams) -> torch.Tensor:
        """Apply a draw to ``x`` (N, C, H, W); batch-1 draws are shared by all N images."""
        n, _, h, w = x.shape
        v = {k: t.to(x.device).expand(n, *t.shape[1:]) if t.shape[0] == 1 else t
             for k, t in params.values.items()}
        if params.batch_size not in (1, n):
            raise ValueError(f"augmentation drawn for {params.batch_size} images, "
                             f"applied to {n}; draw for 1 (siamese) or for {n}")
        fam = params.family
        if fam == "none":
            return x
        if fam == "color":
            return self._color(x, v)
        if fam == "flip":
            return torch.where(v["flip"].view(n, 1, 1, 1), hflip(x), x)
        if fam == "cutout":
            side = int(h * self.config.cutout + 0.5)
            ys = torch.arange(h, device=x.device).view(1, h, 1)
            xs = torch.arange(w, device=x.device).view(1, 1, w)
            cy, cx = v["centre"][:, 0].view(n, 1, 1), v["centre"][:, 1].view(n, 1, 1)
            half = side // 2
            inside = ((ys >= cy - half) & (ys < cy - half + side)
                      & (xs >= cx - half) & (xs < cx - half + side))
            return x * (~inside).unsqueeze(1).to(x.dtype)
        # geometric families: one pixel-space affine matrix per image
        zeros = torch.zeros(n, 2, device=x.device)
        ones = torch.ones(n, 2, device=x.device)
        angle = torch.zeros(n, device=x.device)
        centre = torch.tensor([(w - 1) / 2, (h - 1) / 2], device=x.device).expand(n, 2)
        translation, scale = zeros, ones
        if fam == "crop":
            translation = v["shift"]
        elif fam == "scale":
            scale = 1.0 / v["scale"]  # protocol: sampling grid scaled by s, image by 1/s
        elif fam == "rotate":
            angle = v["angle"]
        matrix = get_affine_matrix2d(translation, centre, scale, angle)[:, :2]
        return warp_affine(x, matrix.to(x.dtype), (h, w), mode="bilinear",
                           padding_mode="zeros", align_corners=True)

    def _color(self, x: torch.Tensor, v: dict[str, torch.Tensor]) -> torch.Tensor:
        n = x.shape[0]
        cfg = self.config
        x = x + (v["brightness"].view(n, 1, 1, 1) - 0.5) * cfg.brightness
        pixel_mean = x.mean(dim=1, keepdim=True)
        x = (x - pixel_mean) * (v["saturation"].view(n, 1, 1, 1) * cfg.saturation) + pixel_mean
        image_mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - image_mean) * (v["contrast"].view(n, 1, 1, 1) + cfg.contrast) + image_mean

    def __call__(self, x: torch.Tensor, generator: torch.Generator,
                 siamese: bool = False) -> torch.Tensor:
        """Sample (per image, or shared if ``siamese``) and apply in one call."""
        params = self.sample(1 if siamese else x.shape[0], generator, x.shape[-1],
                             device=x.device)
        return self.apply(x, params)


def default_strategy(channels: int) -> str:
    """The field's DSA strategy for a dataset: no flips for 1-channel digits."""
    return DIGIT_STRATEGY if channels == 1 else DEFAULT_STRATEGY


_ = math  # math kept for angle helpers in extensions
