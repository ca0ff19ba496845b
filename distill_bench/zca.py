"""ZCA whitening as a data option, fitted with Kornia's ``ZCAWhitening``.

MTT (Cazenavette et al., "Dataset Distillation by Matching Training Trajectories", CVPR 2022)
whitens CIFAR images after channel normalisation with Kornia's ZCA, ``eps = 0.1``, fitted on
the training images, and feeds the test images through the same map. Kornia computes

    x_zca = (x - mu) @ T,    T = U diag(1 / sqrt(S + eps)) U^T,

with ``U, S`` the eigenvectors and eigenvalues of the unbiased covariance of the flattened
images. ``Preprocessing`` (``distill_bench.synthetic``) applies ``(flat - mean) @ transform.T``,
so the stored ``transform`` is Kornia's ``T`` transposed: the two maps are then the same
computation, not merely equal up to the rounding that makes ``T`` slightly asymmetric.

Here the whitening is fitted on the images the method may see (its ``shots`` subset), never
on data outside its budget; the synthetic set carries the fit so the evaluator whitens test
images identically.
"""
from __future__ import annotations

import dataclasses
import logging

import torch
from kornia.enhance import ZCAWhitening

from distill_bench.method import RealSubset

logger = logging.getLogger(__name__)

ZCA_EPS = 0.1  # MTT's regulariser of the covariance eigenvalues


def fit_zca(images: torch.Tensor, eps: float = ZCA_EPS) -> dict:
    """Fit ZCA whitening on ``images`` (N, C, H, W), N >= 2.

    Returns:
        ``{"mean": (D,), "transform": (D, D)}`` on the CPU in float32, D = C * H * W, in
        the form ``Preprocessing.zca`` expects.
    """
    if images.dim() != 4:
        raise ValueError(f"fit_zca needs images (N, C, H, W), got {tuple(images.shape)}")
    if images.shape[0] < 2:
        raise ValueError(f"ZCA needs at least 2 images to estimate a covariance, got "
                         f"{images.shape[0]}; use more shots or turn ZCA off")
    if not eps > 0:
        raise ValueError(f"ZCA eps={eps!r} must be positive (MTT uses {ZCA_EPS})")
    zca = ZCAWhitening(eps=float(eps)).fit(images.float())
    mean = zca.mean_vector.reshape(-1)                    # (D,)
    transform = zca.transform_matrix.t().contiguous()     # (D, D), Kornia's T transposed
    logger.info("fitted ZCA (eps %g) on %d images of dimension %d", eps,
                images.shape[0], mean.numel())
    return {"mean": mean.cpu(), "transform": transform.cpu()}


def apply_zca(images: torch.Tensor, zca: dict) -> torch.Tensor:
    """Whiten already normalised ``images`` (N, C, H, W) with a fit from ``fit_zca``."""
    mean = zca["mean"].to(images.device, images.dtype)
    transform = zca["transform"].to(images.device, images.dtype)
    flat = images.flatten(1) - mean                       # (N, D)
    return (flat @ transform.T).view(images.shape)


def whiten(real: RealSubset, eps: float = ZCA_EPS) -> RealSubset:
    """The subset whitened with a ZCA fitted on its own images.

    The returned subset's ``preprocessing`` carries the fit, so a ``SyntheticSet`` built
    from it makes the evaluator whiten the test images the same way.
    """
    if real.preprocessing.zca is not None:
        raise ValueError("these images are already ZCA-whitened; whiten them once")
    zca = fit_zca(real.images, eps)
    prep = dataclasses.replace(real.preprocessing, zca=zca)
    return dataclasses.replace(real, images=apply_zca(real.images, zca), preprocessing=prep)

