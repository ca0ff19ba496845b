"""Differentiable Siamese Augmentation (DSA, Zhao & Bilen, ICML 2021) on Kornia.

Six families with the protocol's parameters (PROTOCOL.md section 2):

| family | operation | parameter |
|---|---|---|
| color  | brightness ``x + (u - 0.5)``, saturation ``(x - m_px) * 2u + m_px``,
           contrast ``(x - m_img) * (u + 0.5) + m_img`` | three u ~ U[0, 1] |
| crop   | integer translation, zero padding | up to +-round(0.125 * size) px |
| cutout | zero a square of side round(0.5 * size) | centre uniform |
| flip   | horizontal flip | p = 0.5 |
| scale  | affine scale, zero padding | sx, sy ~ U[1/1.2, 1.2] |
| rotate | affine rotation, zero padding | angle ~ U[-15, 15] degrees |

``m_px`` is the mean over channels at each pixel, ``m_img`` the mean over the whole image;
the three colour operations are applied in that order. These are the protocol's formulas,
not Kornia's ``adjust_*``: its contrast scales ``x`` about 0 rather than the image mean, its
saturation scales the HSV saturation (keeping the maximum channel, not the mean), and it
clamps to [0, 1], which is wrong for our normalised pixels.

Sampling is kept apart from applying (as in Kornia): ``sample`` draws an ``AugParams`` from
a private ``torch.Generator`` and never touches the global RNG; ``apply`` replays it. A draw
of batch size 1 broadcasts over any batch, which is the siamese mode of matching: one family
and one set of parameters for every image of the real and the synthetic batch. At evaluation
each image gets its own parameters (one family per batch).

Geometry: ``scale`` samples the input at ``s`` times the output coordinates about the image
centre (so ``s > 1`` shrinks the picture), as the reference's ``affine_grid`` with
``diag(sx, sy)`` does; ``rotate`` turns about the centre. Both go through Kornia's
``warp_affine`` (bilinear, zero padding, ``align_corners=True``). ``crop`` and ``cutout`` are
exact integer operations (padding and indexing, a mask), so they copy or zero pixels without
interpolation. Every family is differentiable in the pixels.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from kornia.geometry.transform import get_affine_matrix2d, hflip, warp_affine

FAMILIES = ("color", "crop", "cutout", "flip", "scale", "rotate")
DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"
DIGIT_STRATEGY = "color_crop_cutout_scale_rotate"  # no flips for digits


@dataclass
class DSAConfig:
    """Ranges of the DSA families (the protocol's values by default)."""
    strategy: str = DEFAULT_STRATEGY  # families joined by "_", or "none"
    brightness: float = 1.0      # x + (u - 0.5) * brightness
    saturation: float = 2.0      # factor u * saturation
    contrast: float = 0.5        # factor u + contrast
    crop: float = 0.125          # max shift, fraction of the size
    cutout: float = 0.5          # square side, fraction of the size
    flip: float = 0.5            # flip probability
    scale: float = 1.2           # factors in [1/scale, scale]
    rotate: float = 15.0         # max angle, degrees

    def __post_init__(self):
        for name in self.families:
            if name not in FAMILIES:
                raise ValueError(f"augmentation family {name!r} in strategy "
                                 f"{self.strategy!r} is not known; choose from {FAMILIES} "
                                 f"joined by '_', or 'none'")
        bounds = {"crop": (0.0, 0.5), "cutout": (0.0, 1.0), "flip": (0.0, 1.0)}
        for name, (lo, hi) in bounds.items():
            value = getattr(self, name)
            if not lo <= value <= hi:
                raise ValueError(f"DSAConfig {name}={value} is outside [{lo}, {hi}]")
        if self.scale < 1.0:
            raise ValueError(f"DSAConfig scale={self.scale} must be >= 1 "
                             f"(factors are drawn from [1/scale, scale])")

    @property
    def families(self) -> list[str]:
        if self.strategy.lower() in ("none", ""):
            return []
        return [f for f in self.strategy.split("_") if f]


@dataclass
class AugParams:
    """One draw: a family and its parameters, per image (N, ...) or shared (1, ...).

    Values by family: ``color``: ``brightness``, ``saturation``, ``contrast`` (N,) in
    [0, 1]; ``crop``: ``shift`` (N, 2) integer (dx, dy) pixels; ``cutout``: ``centre``
    (N, 2) integer (cy, cx); ``flip``: ``flip`` (N,) bool; ``scale``: ``scale`` (N, 2)
    (sx, sy); ``rotate``: ``angle`` (N,) degrees; ``none``: a placeholder.
    """
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
        >>> real = dsa.apply(torch.rand(8, 3, 32, 32), p)
        >>> syn = dsa.apply(torch.rand(2, 3, 32, 32), p)  # same transform
    """

    def __init__(self, config: DSAConfig | None = None):
        self.config = config or DSAConfig()

    def sample(self, batch_size: int, generator: torch.Generator, image_size: int,
               family: str | None = None, device: torch.device | str = "cpu") -> AugParams:
        """Draw a family (unless given) and its parameters for ``batch_size`` images.

        Numbers are drawn on the generator's device (so a CUDA generator works) and the
        parameters are returned on ``device``.
        """
        cfg = self.config
        gdev = generator.device
        if family is None:
            fams = cfg.families
            if not fams:
                return AugParams("none", {"_": torch.zeros(batch_size, device=device)})
            pick = torch.randint(len(fams), (1,), generator=generator, device=gdev)
            family = fams[int(pick)]

        def u(*shape: int) -> torch.Tensor:
            return torch.rand(batch_size, *shape, generator=generator, device=gdev)

        def ints(low: int, high: int, *shape: int) -> torch.Tensor:  # low..high inclusive
            return torch.randint(low, high + 1, (batch_size, *shape), generator=generator,
                                 device=gdev)

        if family == "color":
            values = {"brightness": u(), "saturation": u(), "contrast": u()}
        elif family == "crop":
            shift = int(image_size * cfg.crop + 0.5)
            values = {"shift": ints(-shift, shift, 2)}
        elif family == "cutout":
            # centres 0..size for an even side, 0..size-1 for an odd one: the square then
            # reaches each border equally often
            side = int(image_size * cfg.cutout + 0.5)
            values = {"centre": ints(0, image_size - side % 2, 2)}
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
        return AugParams(family, {k: t.to(device) for k, t in values.items()})

    def apply(self, x: torch.Tensor, params: AugParams) -> torch.Tensor:
        """Apply a draw to ``x`` (N, C, H, W); batch-1 draws are shared by all N images."""
        n = x.shape[0]
        if params.batch_size not in (1, n):
            raise ValueError(f"augmentation drawn for {params.batch_size} images, "
                             f"applied to {n}; draw for 1 (siamese) or for {n}")
        v = {k: t.to(x.device).expand(n, *t.shape[1:]) for k, t in params.values.items()}
        fam = params.family
        if fam == "none":
            return x
        if fam == "color":
            return self._color(x, v)
        if fam == "crop":
            return _translate(x, v["shift"], int(x.shape[-1] * self.config.crop + 0.5))
        if fam == "cutout":
            return self._cutout(x, v["centre"])
        if fam == "flip":
            return torch.where(v["flip"].view(n, 1, 1, 1), hflip(x), x)
        if fam in ("scale", "rotate"):
            return _affine(x, v.get("scale"), v.get("angle"))
        raise ValueError(f"augmentation family {fam!r} is not known; choose from {FAMILIES}")

    def _color(self, x: torch.Tensor, v: dict[str, torch.Tensor]) -> torch.Tensor:
        n = x.shape[0]
        cfg = self.config
        factor = {k: t.to(x.dtype).view(n, 1, 1, 1) for k, t in v.items()}

        # brightness, saturation (about the per-pixel channel mean), contrast (image mean)
        x = x + (factor["brightness"] - 0.5) * cfg.brightness
        pixel_mean = x.mean(dim=1, keepdim=True)
        x = (x - pixel_mean) * (factor["saturation"] * cfg.saturation) + pixel_mean
        image_mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - image_mean) * (factor["contrast"] + cfg.contrast) + image_mean

    def _cutout(self, x: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        side = int(h * self.config.cutout + 0.5)
        top = (centre[:, 0] - side // 2).view(n, 1, 1)
        left = (centre[:, 1] - side // 2).view(n, 1, 1)
        ys = torch.arange(h, device=x.device).view(1, h, 1)
        xs = torch.arange(w, device=x.device).view(1, 1, w)
        inside = ((ys >= top) & (ys < top + side)
                  & (xs >= left) & (xs < left + side))          # (N, H, W)
        return x * (~inside).unsqueeze(1).to(x.dtype)

    def __call__(self, x: torch.Tensor, generator: torch.Generator,
                 siamese: bool = False) -> torch.Tensor:
        """Sample (per image, or shared if ``siamese``) and apply in one call."""
        params = self.sample(1 if siamese else x.shape[0], generator, x.shape[-1],
                             device=x.device)
        return self.apply(x, params)


def _translate(x: torch.Tensor, shift: torch.Tensor, limit: int) -> torch.Tensor:
    """Move image i by ``shift[i] = (dx, dy)`` whole pixels, filling with zeros.

    Shifts are clamped to ``[-limit, limit]`` (the sampler's range); padding by that known
    bound, not by the largest shift drawn, keeps a GPU from waiting to read the shifts.
    """
    n, c, h, w = x.shape
    pad = max(0, limit)
    shift = shift.long().clamp(-pad, pad)
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = (pad - shift[:, 1:2] + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    cols = (pad - shift[:, 0:1] + torch.arange(w, device=x.device)).view(n, 1, 1, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    chans = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return padded[batch, chans, rows, cols]


def _affine(x: torch.Tensor, scale: torch.Tensor | None,
            angle: torch.Tensor | None) -> torch.Tensor:
    """Scale (input sampled at ``s`` x the output coordinates) or rotate about the centre."""
    n, _, h, w = x.shape
    dev = x.device
    centre = torch.tensor([(w - 1) / 2, (h - 1) / 2], device=dev).expand(n, 2)
    zoom = torch.ones(n, 2, device=dev) if scale is None else 1.0 / scale.float()
    degrees = torch.zeros(n, device=dev) if angle is None else angle.float()
    matrix = get_affine_matrix2d(torch.zeros(n, 2, device=dev), centre, zoom, degrees)
    return warp_affine(x, matrix[:, :2].to(x.dtype), (h, w), mode="bilinear",
                       padding_mode="zeros", align_corners=True)


def default_strategy(channels: int) -> str:
    """The field's DSA strategy for a dataset: no flips for 1-channel digits."""
    return DIGIT_STRATEGY if channels == 1 else DEFAULT_STRATEGY
