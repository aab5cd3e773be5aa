"""Losses of self-supervised face-depth training (monodepth2 / Face-Depth-Network, DaGAN++ uncertainty).

* :func:`dssim` -- ``clamp((1 - SSIM) / 2, 0, 1)`` with the one SSIM of the toolkit
  (:func:`dagan.training.losses.ssim`: 3x3 mean pooling, reflection padding, ``C1 = 0.01**2``, ``C2 = 0.03**2``);
* :func:`photometric_error` -- ``pe = 0.85 * dssim + 0.15 * L1``, channel-averaged, per pixel;
* :func:`uncertainty_weighted` -- DaGAN++ ``pe / sigma + log sigma`` with ``sigma = softplus(u) + 1e-3``;
* :func:`min_reprojection` -- per-pixel minimum over the warped sources, auto-masking with the
  unwarped (identity) errors plus tiny noise;
* :func:`edge_aware_smoothness` -- ``|d disp*| * exp(-mean_c |d I|)`` on mean-normalised disparity.

All maps are ``(B, 1, H, W)``; images ``(B, 3, H, W)`` in [0, 1].

Example::

    >>> import torch
    >>> img = torch.rand(2, 3, 16, 16)
    >>> float(photometric_error(img, img).abs().max()) < 1e-6
    True
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F

from .losses import dssim

__all__ = ["dssim", "photometric_error", "uncertainty_weighted", "min_reprojection",
           "edge_aware_smoothness", "SIGMA_FLOOR"]

SIGMA_FLOOR = 1e-3


def photometric_error(pred: torch.Tensor, target: torch.Tensor, ssim_weight: float = 0.85) -> torch.Tensor:
    """``ssim_weight * dssim + (1 - ssim_weight) * L1``, channel mean: ``(B, C, H, W)`` x2 -> ``(B, 1, H, W)``."""
    l1 = (target - pred).abs().mean(1, keepdim=True)
    if ssim_weight == 0:
        return l1
    return ssim_weight * dssim(pred, target).mean(1, keepdim=True) + (1 - ssim_weight) * l1


def uncertainty_weighted(pe: torch.Tensor, uncertainty: torch.Tensor) -> torch.Tensor:
    """DaGAN++ heteroscedastic photometric loss ``pe / sigma + log sigma``, ``sigma = softplus(u) + 1e-3``.

    pe, uncertainty: same shape (``(B, N, H, W)``); the log term stops sigma from growing without bound,
    so pixels that no rigid warp explains get a large sigma and a small weight.
    """
    sigma = F.softplus(uncertainty) + SIGMA_FLOOR
    return pe / sigma + torch.log(sigma)


def min_reprojection(reprojection: torch.Tensor, identity: Optional[torch.Tensor] = None,
                     uncertainty: Optional[torch.Tensor] = None, noise: float = 1e-5,
                     generator: Optional[torch.Generator] = None) -> Dict[str, torch.Tensor]:
    """Per-pixel minimum reprojection with auto-masking.

    reprojection: ``(B, N, H, W)`` photometric errors of the N warped sources; identity: ``(B, N, H, W)``
    errors of the *unwarped* sources (auto-mask; ``None`` disables it), to which ``noise`` * N(0, 1) is added
    to break ties with static pixels; uncertainty: ``(B, N, H, W)`` log-scale maps (DaGAN++) or ``None``.

    The source with the lowest ``pe`` wins each pixel; a pixel where an unwarped source wins (static scene,
    camera-fixed objects, no motion) keeps that constant error and so gets no gradient. With uncertainty,
    a warped winner contributes ``pe / sigma + log sigma`` instead of ``pe``.

    Returns ``{"loss": scalar, "automask": (B, 1, H, W) float 1 where a warped source won, "selection":
    (B, 1, H, W) long index of the winner (>= N: identity)}``.
    """
    n = reprojection.shape[1]
    candidates = reprojection
    if identity is not None:
        jitter = torch.randn(identity.shape, generator=generator, device=identity.device, dtype=identity.dtype)
        candidates = torch.cat([reprojection, identity + noise * jitter], 1)
    best, selection = candidates.min(1, keepdim=True)
    automask = (selection < n).to(reprojection.dtype)
    if uncertainty is None:
        per_pixel = best
    else:
        weighted = uncertainty_weighted(reprojection, uncertainty)
        chosen = torch.gather(weighted, 1, selection.clamp(max=n - 1))
        per_pixel = torch.where(selection < n, chosen, best)
    return {"loss": per_pixel.mean(), "automask": automask, "selection": selection}


def edge_aware_smoothness(disp: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Edge-aware first-order smoothness of mean-normalised disparity.

    disp: ``(B, 1, H, W)``; image: ``(B, 3, H, W)`` at the same size. Scalar
    ``mean(|dx d*| exp(-mean_c |dx I|)) + mean(|dy d*| exp(-mean_c |dy I|))`` with ``d* = d / mean(d)``;
    zero for any constant disparity.
    """
    norm = disp / (disp.mean((2, 3), keepdim=True) + 1e-7)
    dx = (norm[..., :, :-1] - norm[..., :, 1:]).abs()
    dy = (norm[..., :-1, :] - norm[..., 1:, :]).abs()
    ix = (image[..., :, :-1] - image[..., :, 1:]).abs().mean(1, keepdim=True)
    iy = (image[..., :-1, :] - image[..., 1:, :]).abs().mean(1, keepdim=True)
    return (dx * torch.exp(-ix)).mean() + (dy * torch.exp(-iy)).mean()
