"""RGB-D keypoint detector: hourglass heatmaps, soft-argmax keypoints, heatmap-weighted Jacobians."""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import AntiAliasInterpolation2d, Hourglass, make_coordinate_grid


class KPDetector(nn.Module):
    """Unsupervised keypoints (+ local affine Jacobians) from an RGB-D frame.

    Args:
        block_expansion, max_features, num_blocks: hourglass widths/depth.
        num_kp: number of keypoints K.
        num_channels: input channels (4 for DaGAN: RGB first, depth fourth).
        temperature: softmax temperature of the heatmaps (0.1).
        estimate_jacobian: also predict 2x2 Jacobians.
        scale_factor: the hourglass runs on the anti-aliased, downscaled input.
        pad: padding of the 7x7 keypoint conv (0 in the official model).

    Input ``(B, num_channels, H, W)``; output ``{"value": (B, K, 2) in [-1, 1], "jacobian": (B, K, 2, 2),
    "heatmap": (B, K, h, w)}`` (the heatmap is returned for visualisation; it is not part of the official
    output).
    """

    def __init__(self, block_expansion: int, num_kp: int, num_channels: int, max_features: int, num_blocks: int,
                 temperature: float, estimate_jacobian: bool = False, scale_factor: float = 1.0,
                 single_jacobian_map: bool = False, pad: int = 0):
        super().__init__()
        self.predictor = Hourglass(block_expansion, in_features=num_channels, max_features=max_features,
                                   num_blocks=num_blocks)
        self.kp = nn.Conv2d(self.predictor.out_filters, num_kp, kernel_size=(7, 7), padding=pad)
        if estimate_jacobian:
            self.num_jacobian_maps = 1 if single_jacobian_map else num_kp
            self.jacobian = nn.Conv2d(self.predictor.out_filters, 4 * self.num_jacobian_maps, kernel_size=(7, 7),
                                      padding=pad)
            with torch.no_grad():  # start at identity Jacobians
                self.jacobian.weight.zero_()
                self.jacobian.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 1.0] * self.num_jacobian_maps))
        else:
            self.jacobian = None
        self.num_kp = num_kp
        self.temperature = temperature
        self.scale_factor = scale_factor
        if scale_factor != 1:
            self.down = AntiAliasInterpolation2d(num_channels, scale_factor)

    def gaussian2kp(self, heatmap: torch.Tensor) -> torch.Tensor:
        """Soft-argmax: expected coordinate of each ``(B, K, h, w)`` heatmap -> ``(B, K, 2)``."""
        grid = make_coordinate_grid(heatmap.shape[2:], heatmap.dtype, heatmap.device)
        return (heatmap.unsqueeze(-1) * grid).sum(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        if self.scale_factor != 1:
            x = self.down(x)
        feature_map = self.predictor(x)
        prediction = self.kp(feature_map)
        b, k, h, w = prediction.shape
        heatmap = F.softmax(prediction.view(b, k, -1) / self.temperature, dim=2).view(b, k, h, w)
        out = {"value": self.gaussian2kp(heatmap), "heatmap": heatmap}
        if self.jacobian is not None:
            jacobian_map = self.jacobian(feature_map).reshape(b, self.num_jacobian_maps, 4, h, w)
            jacobian = (heatmap.unsqueeze(2) * jacobian_map).view(b, k, 4, -1).sum(dim=-1)
            out["jacobian"] = jacobian.view(b, k, 2, 2)
        return out
