"""Random smooth warps (affine + thin-plate spline) for the equivariance losses and portrait pairs.

The warp follows FOMM's ``Transform``: ``T(p) = A p + b + sum_i w_i U(|p - c_i|_1)`` with
``A, b ~ I + N(0, sigma_affine)``, control points ``c_i`` on a ``points_tps x points_tps`` grid in
[-1, 1]^2, weights ``w_i ~ N(0, sigma_tps)`` and ``U(r) = r^2 log(r + 1e-6)`` (the official code uses the
L1 distance). :meth:`RandomWarp.jacobian` is the exact analytic derivative (checked against autograd in the
tests), so no ``create_graph`` double backward is needed.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ..nn import make_coordinate_grid

_EPS = 1e-6


class RandomWarp:
    """A batch of ``B`` random smooth warps of the plane (coordinates in [-1, 1], x first).

    Args:
        batch: number of independent warps ``B``.
        sigma_affine: std of the affine noise around the identity (official 0.05).
        sigma_tps: std of the TPS weights (official 0.005); 0 disables the TPS part.
        points_tps: control points per side (official 5).
        generator: a seeded :class:`torch.Generator` (CPU) so that warps are reproducible.

    Example::

        >>> warp = RandomWarp(2, 0.05, 0.005, 5, generator=torch.Generator().manual_seed(0))
        >>> warped = warp.warp_image(torch.rand(2, 3, 64, 64))   # (2, 3, 64, 64)
    """

    def __init__(self, batch: int, sigma_affine: float = 0.05, sigma_tps: float = 0.005, points_tps: int = 5,
                 generator: Optional[torch.Generator] = None, device=None):
        eye = torch.eye(2, 3)
        noise = torch.randn(batch, 2, 3, generator=generator) * sigma_affine
        self.theta = (noise + eye).to(device)  # (B, 2, 3)
        self.tps = sigma_tps > 0 and points_tps > 0
        if self.tps:
            self.control_points = make_coordinate_grid((points_tps, points_tps)).view(-1, 2).to(device)  # (P, 2)
            self.control_params = (torch.randn(batch, 1, points_tps ** 2, generator=generator)
                                   * sigma_tps).to(device)  # (B, 1, P)
        self.batch = batch

    def expand(self, batch: int) -> "RandomWarp":
        """This single warp (``B == 1``) repeated for ``batch`` images, in place; returns ``self``."""
        if self.batch != 1:
            raise ValueError(f"only a single warp can be expanded, this holds {self.batch}")
        self.theta = self.theta.expand(batch, -1, -1)
        if self.tps:
            self.control_params = self.control_params.expand(batch, -1, -1)
        self.batch = batch
        return self

    def warp_coordinates(self, coordinates: torch.Tensor) -> torch.Tensor:
        """Map points ``(B, N, 2)`` (or ``(1, N, 2)``, broadcast) through the warps -> ``(B, N, 2)``."""
        theta = self.theta.to(coordinates)
        out = torch.einsum("bij,bnj->bni", theta[:, :, :2], coordinates.expand(self.batch, -1, -1))
        out = out + theta[:, :, 2].unsqueeze(1)
        if self.tps:
            diff = coordinates.unsqueeze(2) - self.control_points.to(coordinates).view(1, 1, -1, 2)  # (B,N,P,2)
            r = diff.abs().sum(-1)
            u = r ** 2 * torch.log(r + _EPS)
            out = out + (u * self.control_params.to(coordinates)).sum(dim=2, keepdim=True)
        return out

    def jacobian(self, coordinates: torch.Tensor) -> torch.Tensor:
        """d warp / d point at ``(B, N, 2)`` points -> ``(B, N, 2, 2)`` (row = output coordinate)."""
        theta = self.theta.to(coordinates)
        b, n = self.batch, coordinates.shape[1]
        jac = theta[:, :, :2].unsqueeze(1).expand(b, n, 2, 2)
        if self.tps:
            diff = coordinates.unsqueeze(2) - self.control_points.to(coordinates).view(1, 1, -1, 2)
            r = diff.abs().sum(-1)
            du_dr = 2 * r * torch.log(r + _EPS) + r ** 2 / (r + _EPS)
            grad = (du_dr * self.control_params.to(coordinates)).unsqueeze(-1) * torch.sign(diff)  # (B,N,P,2)
            # the TPS term is added to both output coordinates, so both rows get the same gradient
            jac = jac + grad.sum(dim=2).unsqueeze(2).expand(b, n, 2, 2)
        return jac

    def warp_image(self, image: torch.Tensor, padding_mode: str = "reflection") -> torch.Tensor:
        """Warp ``(B, C, H, W)`` images: ``out(p) = image(T(p))`` (backward warping, as FOMM)."""
        b, _, h, w = image.shape
        grid = make_coordinate_grid((h, w), image.dtype, image.device).view(1, h * w, 2)
        grid = self.warp_coordinates(grid).view(b, h, w, 2)
        return F.grid_sample(image, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)
