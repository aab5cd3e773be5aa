"""Multi-scale patch discriminator (pix2pix-like), optionally conditioned on keypoint heatmaps."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import kp2gaussian
from ..utils import reject_unknown_options


class DiscDownBlock2d(nn.Module):
    """4x4 conv (optionally spectral-normalised), instance norm, leaky ReLU, optional 2x2 avg pool."""

    def __init__(self, in_features: int, out_features: int, norm: bool = False, kernel_size: int = 4,
                 pool: bool = False, sn: bool = False):
        super().__init__()
        conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size)
        self.conv = nn.utils.spectral_norm(conv) if sn else conv
        self.norm = nn.InstanceNorm2d(out_features, affine=True) if norm else None
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        if self.norm is not None:
            out = self.norm(out)
        out = F.leaky_relu(out, 0.2)
        return F.avg_pool2d(out, (2, 2)) if self.pool else out


class Discriminator(nn.Module):
    """Patch discriminator. ``(B, C, H, W)`` (+ keypoints) -> (feature maps, ``(B, 1, h, w)`` logits).

    With ``use_kp`` the keypoint Gaussians (K channels) are concatenated to the image.
    """

    def __init__(self, num_channels: int = 3, block_expansion: int = 64, num_blocks: int = 4,
                 max_features: int = 512, sn: bool = False, use_kp: bool = False, num_kp: int = 10,
                 kp_variance: float = 0.01, **unknown):
        reject_unknown_options(Discriminator.__init__, unknown)
        super().__init__()
        blocks = []
        for i in range(num_blocks):
            cin = num_channels + num_kp * use_kp if i == 0 else min(max_features, block_expansion * (2 ** i))
            blocks.append(DiscDownBlock2d(cin, min(max_features, block_expansion * (2 ** (i + 1))), norm=(i != 0),
                                          kernel_size=4, pool=(i != num_blocks - 1), sn=sn))
        self.down_blocks = nn.ModuleList(blocks)
        conv = nn.Conv2d(min(max_features, block_expansion * (2 ** num_blocks)), 1, kernel_size=1)
        self.conv = nn.utils.spectral_norm(conv) if sn else conv
        self.use_kp = use_kp
        self.kp_variance = kp_variance

    def forward(self, x: torch.Tensor, kp: Optional[Dict[str, torch.Tensor]] = None
                ) -> Tuple[List[torch.Tensor], torch.Tensor]:
        out = x
        if self.use_kp:
            out = torch.cat([out, kp2gaussian(kp, x.shape[2:], self.kp_variance).to(x.dtype)], dim=1)
        feature_maps = []
        for block in self.down_blocks:
            out = block(out)
            feature_maps.append(out)
        return feature_maps, self.conv(out)


def scale_name(scale: float) -> str:
    """``1``/``1.0`` -> ``"1"``, ``0.5`` -> ``"0.5"`` (the official key names, e.g. ``prediction_1``)."""
    return str(int(scale)) if float(scale).is_integer() else str(float(scale))


class MultiScaleDiscriminator(nn.Module):
    """One :class:`Discriminator` per image scale.

    ``forward(pyramid, kp)`` takes ``{"prediction_<scale>": (B, C, H_s, W_s)}`` and returns
    ``feature_maps_<scale>`` and ``prediction_map_<scale>`` for each scale.
    """

    def __init__(self, scales: Sequence[float] = (1,), **kwargs):
        super().__init__()
        self.scales = list(scales)
        self.discs = nn.ModuleDict({scale_name(s).replace(".", "-"): Discriminator(**kwargs) for s in self.scales})

    def forward(self, x: Dict[str, torch.Tensor], kp: Optional[Dict[str, torch.Tensor]] = None
                ) -> Dict[str, object]:
        out: Dict[str, object] = {}
        for name, disc in self.discs.items():
            scale = name.replace("-", ".")
            feature_maps, prediction_map = disc(x["prediction_" + scale], kp)
            out["feature_maps_" + scale] = feature_maps
            out["prediction_map_" + scale] = prediction_map
        return out
