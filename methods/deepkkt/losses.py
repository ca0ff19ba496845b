"""The DeepKKT losses (Deep Support Vectors, Lee et al., NeurIPS 2024, Sec. 4.2, Eq. 7-10).

For a frozen classifier ``Phi(.; theta*)`` and candidates ``x_i`` with labels ``y_i`` and
multipliers ``lambda_i``:

- primal feasibility (Eq. 7): ``(1/n) sum_i m_i CE(Phi(x_i), y_i)``, ``m_i = 0`` once
  ``x_i`` is classified as ``y_i`` (a hinge-like mask);
- stationarity (Eq. 8): ``dist(theta*, -g)`` with ``g = grad_theta sum_i lambda_i L_i``,
  by default ``mean_j |theta*_j + g_j|`` over all parameters as one flat vector. ``g`` is
  the gradient of the lambda-weighted loss sum, so one backward pass with
  ``create_graph=True`` gives it (no per-example gradients);
- priors: total variation and an image-norm penalty.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DISTANCES = ("l1", "l2", "cosine")


def primal_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Masked cross-entropy: only misclassified candidates contribute (Eq. 7)."""
    hard = labels if labels.dim() == 1 else labels.argmax(1)
    wrong = (logits.argmax(1) != hard).float()
    return (wrong * F.cross_entropy(logits, labels, reduction="none")).mean()


def weighted_loss_gradient(model: nn.Module, params: list[torch.Tensor], logits: torch.Tensor,
                           labels: torch.Tensor, lambdas: torch.Tensor) -> torch.Tensor:
    """``grad_theta sum_i lambda_i CE_i`` as one flat vector, differentiable (create_graph)."""
    losses = F.cross_entropy(logits, labels, reduction="none")
    grads = torch.autograd.grad((lambdas * losses).sum(), params, create_graph=True)
    return torch.cat([g.reshape(-1) for g in grads])


def stationarity_distance(theta: torch.Tensor, grad: torch.Tensor,
                          distance: str = "l1") -> torch.Tensor:
    """Distance between ``theta*`` and ``-sum_i lambda_i grad L_i`` (Eq. 8)."""
    if distance == "l1":
        return (theta + grad).abs().mean()
    if distance == "l2":
        return (theta + grad).pow(2).mean()
    if distance == "cosine":
        return 1 + F.cosine_similarity(theta, grad, dim=0)
    raise ValueError(f"distance={distance!r} is not known; choose one of {DISTANCES}")


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels (anisotropic TV)."""
    dh = (x[..., 1:, :] - x[..., :-1, :]).abs().mean()
    dw = (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
    return dh + dw


def norm_prior(x: torch.Tensor) -> torch.Tensor:
    """Mean squared pixel value: discourages outlier pixels."""
    return x.pow(2).mean()


def prediction_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of each softmax prediction: (N,)."""
    logp = F.log_softmax(logits.float(), dim=1)
    return -(logp.exp() * logp).sum(1)
