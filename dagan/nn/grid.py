"""Coordinate grids, keypoint Gaussians and feature warping.

Coordinates live in [-1, 1] x [-1, 1] with x first, as ``grid_sample`` expects. Pixel centres follow the
official code: ``x_i = 2 i / (W - 1) - 1`` (corner-aligned), while ``grid_sample`` itself is called with
``align_corners=False`` (the official default), so warps reproduce the official outputs exactly.
"""
from __future__ import annotations

from typing import Dict, Sequence

import torch
import torch.nn.functional as F


def make_coordinate_grid(spatial_size: Sequence[int], dtype: torch.dtype = torch.float32,
                         device: torch.device | str | None = None) -> torch.Tensor:
    """Meshgrid of ``(H, W, 2)`` with ``[..., 0] = x`` and ``[..., 1] = y``, both in [-1, 1].

    Example::

        >>> make_coordinate_grid((2, 3))[0, :, 0]
        tensor([-1.,  0.,  1.])
    """
    h, w = int(spatial_size[0]), int(spatial_size[1])
    x = torch.arange(w, dtype=dtype, device=device)
    y = torch.arange(h, dtype=dtype, device=device)
    x = 2 * (x / (w - 1)) - 1
    y = 2 * (y / (h - 1)) - 1
    yy = y.view(-1, 1).expand(h, w)
    xx = x.view(1, -1).expand(h, w)
    return torch.stack([xx, yy], dim=2)


def kp2gaussian(kp: Dict[str, torch.Tensor], spatial_size: Sequence[int], kp_variance: float) -> torch.Tensor:
    """Isotropic Gaussians around keypoints.

    Args:
        kp: ``{"value": (B, K, 2)}`` keypoints in [-1, 1].
        spatial_size: ``(H, W)`` of the output.
        kp_variance: variance in normalised units (0.01 in the official configs).

    Returns:
        ``(B, K, H, W)`` heatmaps with peak 1.
    """
    mean = kp["value"]
    grid = make_coordinate_grid(spatial_size, mean.dtype, mean.device)
    lead = mean.shape[:-1]
    diff = grid.view((1,) * len(lead) + grid.shape) - mean.view(*lead, 1, 1, 2)
    return torch.exp(-0.5 * (diff ** 2).sum(-1) / kp_variance)


def deform_input(inp: torch.Tensor, deformation: torch.Tensor) -> torch.Tensor:
    """Backward-warp ``inp`` (B, C, H, W) with a sampling grid ``deformation`` (B, h, w, 2).

    The grid is bilinearly resized to ``(H, W)`` when its size differs (official behaviour).
    """
    _, h_old, w_old, _ = deformation.shape
    _, _, h, w = inp.shape
    if h_old != h or w_old != w:
        deformation = F.interpolate(deformation.permute(0, 3, 1, 2), size=(h, w), mode="bilinear",
                                    align_corners=False).permute(0, 2, 3, 1)
    return F.grid_sample(inp, deformation.to(inp.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)


def deform_image_exact(inp: torch.Tensor, deformation: torch.Tensor) -> torch.Tensor:
    """Backward-warp ``inp`` (B, C, H, W) like :func:`deform_input`, but resize the *displacement*
    (``deformation`` minus the identity grid) instead of the grid, and sample with ``align_corners=True``
    (the convention of :func:`make_coordinate_grid`): a zero motion returns ``inp`` exactly. Borders repeat.
    Not the official warp; the output blend of the SPADE decoder copies pixels through it.
    """
    _, h_old, w_old, _ = deformation.shape
    _, _, h, w = inp.shape
    if (h_old, w_old) != (h, w):
        small = make_coordinate_grid((h_old, w_old), deformation.dtype, deformation.device)
        displacement = F.interpolate((deformation - small).permute(0, 3, 1, 2), size=(h, w), mode="bilinear",
                                     align_corners=True).permute(0, 2, 3, 1)
        deformation = make_coordinate_grid((h, w), deformation.dtype, deformation.device) + displacement
    return F.grid_sample(inp, deformation.to(inp.dtype), mode="bilinear", padding_mode="border",
                         align_corners=True)
