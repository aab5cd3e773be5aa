"""Dense motion: from sparse keypoint motions (+ Jacobians) to a dense backward flow and occlusion map."""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import AntiAliasInterpolation2d, Hourglass, kp2gaussian, make_coordinate_grid


def sparse_motions(spatial_size, kp_driving: Dict[str, torch.Tensor], kp_source: Dict[str, torch.Tensor]
                   ) -> torch.Tensor:
    """First-order local motions ``T_{S<-D}`` around every keypoint, plus the identity (background).

    Returns ``(B, K + 1, h, w, 2)`` sampling grids in [-1, 1]: index 0 is the identity, index ``k + 1`` is
    ``kp_s + J_s J_d^{-1} (z - kp_d)``.
    """
    value_d, value_s = kp_driving["value"], kp_source["value"]
    b, k = value_d.shape[:2]
    h, w = spatial_size
    identity = make_coordinate_grid((h, w), value_s.dtype, value_s.device).view(1, 1, h, w, 2)
    coords = identity - value_d.view(b, k, 1, 1, 2)
    if "jacobian" in kp_driving and kp_driving["jacobian"] is not None:
        jac = torch.matmul(kp_source["jacobian"], torch.inverse(kp_driving["jacobian"]))  # (B, K, 2, 2)
        coords = torch.einsum("bkij,bkhwj->bkhwi", jac, coords)
    driving_to_source = coords + value_s.view(b, k, 1, 1, 2)
    return torch.cat([identity.expand(b, 1, h, w, 2), driving_to_source], dim=1)


class DenseMotionNetwork(nn.Module):
    """Predicts a dense deformation ``(B, h, w, 2)`` and occlusion map ``(B, 1, h, w)`` at
    ``scale_factor`` of the source resolution, as softmax-weighted sums of the sparse motions.

    Inputs: ``source_image (B, C, H, W)`` in [0, 1], keypoint dicts with ``value (B, K, 2)`` and optional
    ``jacobian (B, K, 2, 2)``. Output dict: ``sparse_deformed (B, K+1, C, h, w)``, ``mask (B, K+1, h, w)``,
    ``deformation (B, h, w, 2)``, ``occlusion_map (B, 1, h, w)`` (when enabled).
    """

    def __init__(self, block_expansion: int, num_blocks: int, max_features: int, num_kp: int, num_channels: int,
                 estimate_occlusion_map: bool = False, scale_factor: float = 1.0, kp_variance: float = 0.01):
        super().__init__()
        self.hourglass = Hourglass(block_expansion=block_expansion, in_features=(num_kp + 1) * (num_channels + 1),
                                   max_features=max_features, num_blocks=num_blocks)
        self.mask = nn.Conv2d(self.hourglass.out_filters, num_kp + 1, kernel_size=(7, 7), padding=(3, 3))
        self.occlusion: Optional[nn.Conv2d] = None
        if estimate_occlusion_map:
            self.occlusion = nn.Conv2d(self.hourglass.out_filters, 1, kernel_size=(7, 7), padding=(3, 3))
        self.num_kp = num_kp
        self.scale_factor = scale_factor
        self.kp_variance = kp_variance
        if scale_factor != 1:
            self.down = AntiAliasInterpolation2d(num_channels, scale_factor)

    def downsample(self, source_image: torch.Tensor) -> torch.Tensor:
        """The source at the motion resolution (cacheable per source)."""
        return self.down(source_image) if self.scale_factor != 1 else source_image

    def heatmap_representation(self, spatial_size, kp_driving, kp_source) -> torch.Tensor:
        """Difference of keypoint Gaussians with a zero background channel: ``(B, K + 1, 1, h, w)``."""
        heat = (kp2gaussian(kp_driving, spatial_size, self.kp_variance)
                - kp2gaussian(kp_source, spatial_size, self.kp_variance))
        zeros = torch.zeros_like(heat[:, :1])
        return torch.cat([zeros, heat], dim=1).unsqueeze(2)

    def forward(self, source_image: torch.Tensor, kp_driving: Dict[str, torch.Tensor],
                kp_source: Dict[str, torch.Tensor], source_small: Optional[torch.Tensor] = None
                ) -> Dict[str, torch.Tensor]:
        source = self.downsample(source_image) if source_small is None else source_small
        b, c, h, w = source.shape
        k1 = self.num_kp + 1
        heatmap = self.heatmap_representation((h, w), kp_driving, kp_source)
        motions = sparse_motions((h, w), kp_driving, kp_source)  # (B, K+1, h, w, 2)
        # one grid_sample over all K+1 motions: the source is broadcast, not copied per keypoint
        repeated = source.unsqueeze(1).expand(b, k1, c, h, w).reshape(b * k1, c, h, w)
        deformed = F.grid_sample(repeated, motions.reshape(b * k1, h, w, 2), mode="bilinear",
                                 padding_mode="zeros", align_corners=False).view(b, k1, c, h, w)
        prediction = self.hourglass(torch.cat([heatmap, deformed], dim=2).view(b, -1, h, w))
        mask = F.softmax(self.mask(prediction), dim=1)
        deformation = torch.einsum("bkhw,bkhwi->bhwi", mask, motions)
        out = {"sparse_deformed": deformed, "mask": mask, "deformation": deformation}
        if self.occlusion is not None:
            out["occlusion_map"] = torch.sigmoid(self.occlusion(prediction))
        return out
