"""Camera geometry for self-supervised depth: back-projection, projection, Rodrigues, warping.

Conventions (monodepth2):

* pixel ``(u, v)`` = (column, row) index; intrinsics ``K`` ``(B, 3, 3)`` are in pixels of the image being
  warped; depth is the camera-space ``z`` (not the ray length);
* a pose ``T`` ``(B, 4, 4)`` maps points from the *target* camera into the *source* camera, so that a
  target pixel can look up its colour in the source frame;
* normalised sampling coordinates use ``align_corners=True`` (pixel 0 -> -1, pixel ``W - 1`` -> +1), and
  :func:`warp` passes ``align_corners=True`` to ``grid_sample`` explicitly: the official code relied on a
  default that changed in torch 1.3.

Everything here is a plain differentiable function of tensors; run it in float32 (see :func:`warp`).

Example::

    >>> import torch
    >>> K = torch.tensor([[[32.0, 0, 15.5], [0, 32.0, 15.5], [0, 0, 1]]])
    >>> depth = torch.full((1, 1, 32, 32), 2.0)
    >>> T = transformation_from_parameters(torch.zeros(1, 1, 3), torch.zeros(1, 1, 3))
    >>> image = torch.rand(1, 3, 32, 32)
    >>> torch.allclose(warp(image, depth, T, K)[0], image, atol=1e-5)
    True
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

__all__ = ["pixel_grid", "backproject", "project", "axisangle_to_matrix", "translation_matrix",
           "transformation_from_parameters", "warp", "scale_intrinsics"]


def pixel_grid(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Homogeneous pixel coordinates ``(3, H * W)``: rows ``u`` (column index), ``v`` (row index), 1."""
    v, u = torch.meshgrid(torch.arange(height, device=device, dtype=dtype),
                          torch.arange(width, device=device, dtype=dtype), indexing="ij")
    return torch.stack([u.reshape(-1), v.reshape(-1), torch.ones_like(u).reshape(-1)], 0)


def backproject(depth: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Lift every pixel to a 3-D point in its camera.

    depth: ``(B, 1, H, W)`` camera-space z > 0; intrinsics: ``(B, 3, 3)`` in pixels.
    Returns homogeneous points ``(B, 4, H * W)``.
    """
    b, _, h, w = depth.shape
    pix = pixel_grid(h, w, depth.device, depth.dtype)
    rays = torch.linalg.inv(intrinsics) @ pix  # (B, 3, HW): points at depth 1
    points = rays * depth.reshape(b, 1, -1)
    return torch.cat([points, torch.ones_like(points[:, :1])], 1)


def project(points: torch.Tensor, intrinsics: torch.Tensor, pose: torch.Tensor, height: int, width: int,
            eps: float = 1e-7) -> torch.Tensor:
    """Move homogeneous points ``(B, 4, N)`` by ``pose`` ``(B, 4, 4)``, project them with ``intrinsics``
    ``(B, 3, 3)`` and return ``grid_sample`` coordinates ``(B, H, W, 2)`` (x, y) in [-1, 1] for
    ``align_corners=True``; ``N`` must be ``H * W``."""
    cam = (pose @ points)[:, :3]
    pix = intrinsics @ cam
    uv = pix[:, :2] / (pix[:, 2:3] + eps)
    scale = torch.tensor([width - 1, height - 1], dtype=uv.dtype, device=uv.device).view(1, 2, 1)
    grid = uv / scale * 2 - 1
    return grid.reshape(points.shape[0], 2, height, width).permute(0, 2, 3, 1)


def axisangle_to_matrix(axisangle: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula: axis-angle ``(B, 1, 3)`` or ``(B, 3)`` (direction = axis, norm = angle in
    radians) -> homogeneous rotation ``(B, 4, 4)``. ``R = I + sin(a) [k]x + (1 - cos(a)) [k]x^2``."""
    vec = axisangle.reshape(-1, 3)
    angle = vec.norm(dim=1, keepdim=True)
    axis = vec / (angle + 1e-7)
    x, y, z = axis.unbind(1)
    zero = torch.zeros_like(x)
    cross = torch.stack([torch.stack([zero, -z, y], 1),
                         torch.stack([z, zero, -x], 1),
                         torch.stack([-y, x, zero], 1)], 1)  # (B, 3, 3) skew matrix [k]x
    s, c = torch.sin(angle).unsqueeze(-1), torch.cos(angle).unsqueeze(-1)
    eye = torch.eye(3, dtype=vec.dtype, device=vec.device).expand_as(cross)
    rot3 = eye + s * cross + (1 - c) * (cross @ cross)
    out = torch.zeros(vec.shape[0], 4, 4, dtype=vec.dtype, device=vec.device)
    out[:, :3, :3] = rot3
    out[:, 3, 3] = 1
    return out


def translation_matrix(translation: torch.Tensor) -> torch.Tensor:
    """``(B, 1, 3)`` or ``(B, 3)`` translation -> homogeneous ``(B, 4, 4)``."""
    t = translation.reshape(-1, 3)
    out = torch.eye(4, dtype=t.dtype, device=t.device).repeat(t.shape[0], 1, 1)
    out[:, :3, 3] = t
    return out


def transformation_from_parameters(axisangle: torch.Tensor, translation: torch.Tensor,
                                   invert: bool = False) -> torch.Tensor:
    """Pose-net output -> ``(B, 4, 4)`` rigid transform ``T(t) @ R``; with ``invert`` its exact inverse
    ``R^T @ T(-t)``."""
    rot = axisangle_to_matrix(axisangle)
    t = translation.reshape(-1, 3)
    if invert:
        return rot.transpose(1, 2) @ translation_matrix(-t)
    return translation_matrix(t) @ rot


def scale_intrinsics(intrinsics: torch.Tensor, sx: float, sy: float) -> torch.Tensor:
    """Intrinsics of an image resized by ``(sx, sy)`` (``align_corners=True`` pixel centres)."""
    out = intrinsics.clone()
    out[:, 0] = out[:, 0] * sx
    out[:, 1] = out[:, 1] * sy
    return out


def warp(source: torch.Tensor, depth: torch.Tensor, pose: torch.Tensor, intrinsics: torch.Tensor,
         padding_mode: str = "border") -> Tuple[torch.Tensor, torch.Tensor]:
    """Synthesise the target view from ``source``.

    source: ``(B, C, H, W)``; depth: ``(B, 1, H, W)`` of the *target* view; pose: ``(B, 4, 4)`` target ->
    source camera; intrinsics ``(B, 3, 3)`` in pixels. Returns ``(warped (B, C, H, W), grid (B, H, W, 2))``;
    grid points outside [-1, 1] fell outside the source image. Computed in float32 whatever the inputs.
    """
    h, w = depth.shape[-2:]
    with torch.autocast(device_type=depth.device.type, enabled=False):
        points = backproject(depth.float(), intrinsics.float())
        grid = project(points, intrinsics.float(), pose.float(), h, w)
        warped = F.grid_sample(source.float(), grid, mode="bilinear", padding_mode=padding_mode,
                               align_corners=True)
    return warped, grid
