"""Generator-training losses (FOMM / DaGAN), each a plain function, weights taken from the config.

* image pyramid + perceptual loss (VGG19 relu1_1..relu5_1, ImageNet-normalised input) or the offline
  substitute (multi-scale L1 + SSIM) when no VGG19 weights are on disk;
* LSGAN generator/discriminator losses and discriminator feature matching;
* equivariance of keypoint values and Jacobians under a random TPS warp;
* keypoint distance (keypoints of one frame kept >= 0.2 apart);
* mouth terms from face landmarks (the blend mask hands the mouth to the decoder; L1 over the mouth);
* depth consistency (the depth of the generated frame follows the driving frame's depth).

All images are ``(B, 3, H, W)`` in [0, 1].
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MissingWeightsError
from ..nn import AntiAliasInterpolation2d

KP = Dict[str, torch.Tensor]
VGG19_FILE = "vgg19-dcbb9e9d.pth"  # torchvision's ImageNet VGG19 weights


# ------------------------------------------------------------------------------------------ pyramid
class ImagePyramid(nn.Module):
    """Anti-aliased downscales: ``(B, C, H, W)`` -> ``{"prediction_<s>": (B, C, sH, sW)}`` for each scale."""

    def __init__(self, scales: Sequence[float], num_channels: int = 3):
        super().__init__()
        from ..models.discriminator import scale_name

        self.scales = list(scales)
        self.downs = nn.ModuleDict({scale_name(s).replace(".", "-"): AntiAliasInterpolation2d(num_channels, float(s))
                                    for s in self.scales})

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"prediction_" + name.replace("-", "."): down(x) for name, down in self.downs.items()}


# --------------------------------------------------------------------------------------- perceptual
def vgg19_weights_path(path: Optional[str] = None) -> str:
    """Where the VGG19 weights are: ``path`` if given, else the torch hub cache. Raise a clear
    :class:`MissingWeightsError` (what to download, where to put it) when the file is absent."""
    if path:
        if not os.path.isfile(path):
            raise MissingWeightsError(f"VGG19 weights not found at train.vgg19_weights = {path}")
        return path
    hub = os.path.join(torch.hub.get_dir(), "checkpoints", VGG19_FILE)
    if os.path.isfile(hub):
        return hub
    raise MissingWeightsError(
        f"VGG19 weights for the perceptual loss are missing: put {VGG19_FILE} "
        f"(https://download.pytorch.org/models/{VGG19_FILE}) at {hub} or set train.vgg19_weights, "
        f"or use the offline substitute: train.perceptual_backbone: none with loss_weights.l1_pyramid/ssim_pyramid")


class Vgg19Features(nn.Module):
    """Frozen VGG19 trunk returning relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 of ``(B, 3, H, W)`` in [0, 1]."""

    SLICES = ((0, 2), (2, 7), (7, 12), (12, 21), (21, 30))

    def __init__(self, weights_path: Optional[str] = None, load: bool = True):
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers

        path = vgg19_weights_path(weights_path) if load else None
        features = make_layers(cfgs["E"])  # VGG19's conv trunk (the classifier is not needed)
        if path is not None:
            from ..checkpoints import load_file

            state = load_file(path)
            features.load_state_dict({k[len("features."):]: v for k, v in state.items()
                                      if k.startswith("features.")})
        self.slices = nn.ModuleList([features[a:b] for a, b in self.SLICES])
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "Vgg19Features":
        return super().train(False)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        out = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        feats = []
        for block in self.slices:
            out = block(out)
            feats.append(out)
        return feats


def perceptual_loss(vgg: nn.Module, pyramid_real: Dict[str, torch.Tensor], pyramid_fake: Dict[str, torch.Tensor],
                    weights: Sequence[float]) -> torch.Tensor:
    """``sum_scales sum_i w_i |vgg_i(fake) - vgg_i(real)|`` (FOMM), real features detached."""
    total = 0.0
    for key in pyramid_real:
        fake_feats = vgg(pyramid_fake[key])
        with torch.no_grad():
            real_feats = vgg(pyramid_real[key])
        for w, f, r in zip(weights, fake_feats, real_feats):
            if w:
                total = total + w * (f - r.detach()).abs().mean()
    return torch.as_tensor(total)


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 3) -> torch.Tensor:
    """Per-pixel SSIM map of ``(B, C, H, W)`` images in [0, 1] (mean-pooled window, reflection padded,
    C1 = 0.01^2, C2 = 0.03^2, as monodepth2)."""
    pad = window // 2
    x = F.pad(x, (pad,) * 4, mode="reflect")
    y = F.pad(y, (pad,) * 4, mode="reflect")
    mu_x, mu_y = F.avg_pool2d(x, window, 1), F.avg_pool2d(y, window, 1)
    sigma_x = F.avg_pool2d(x * x, window, 1) - mu_x ** 2
    sigma_y = F.avg_pool2d(y * y, window, 1) - mu_y ** 2
    sigma_xy = F.avg_pool2d(x * y, window, 1) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    num = (2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)
    den = (mu_x ** 2 + mu_y ** 2 + c1) * (sigma_x + sigma_y + c2)
    return num / den


def dssim(x: torch.Tensor, y: torch.Tensor, window: int = 3) -> torch.Tensor:
    """Structural dissimilarity ``clamp((1 - SSIM(x, y)) / 2, 0, 1)`` per pixel and channel:
    ``(B, C, H, W)`` x2 in [0, 1] -> ``(B, C, H, W)`` in [0, 1] (0 where the images are equal)."""
    return torch.clamp((1 - ssim(x, y, window)) / 2, 0, 1)


def pyramid_l1_loss(pyramid_real: Dict[str, torch.Tensor], pyramid_fake: Dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum over scales of the mean absolute error (offline substitute for the VGG pyramid)."""
    return sum((pyramid_fake[k] - pyramid_real[k].detach()).abs().mean() for k in pyramid_real)


def pyramid_ssim_loss(pyramid_real: Dict[str, torch.Tensor], pyramid_fake: Dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum over scales of ``mean((1 - SSIM) / 2)`` (0 for identical images, at most 1)."""
    return sum(dssim(pyramid_fake[k].float(), pyramid_real[k].detach().float()).mean() for k in pyramid_real)


# ---------------------------------------------------------------------------------------------- GAN
def lsgan_generator_loss(prediction_maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """``sum_scales mean((1 - D(fake))^2)``."""
    return sum(((1 - p) ** 2).mean() for p in prediction_maps)


def lsgan_discriminator_loss(real_maps: Sequence[torch.Tensor], fake_maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """``sum_scales mean((1 - D(real))^2 + D(fake)^2)``."""
    return sum(((1 - r) ** 2 + f ** 2).mean() for r, f in zip(real_maps, fake_maps))


def feature_matching_loss(real_features: Sequence[Sequence[torch.Tensor]], fake_features: Sequence[Sequence[torch.Tensor]],
                          weights: Sequence[float]) -> torch.Tensor:
    """``sum_scales sum_i w_i mean|D_i(real) - D_i(fake)|`` over discriminator feature maps (real detached)."""
    total = 0.0
    for real, fake in zip(real_features, fake_features):
        for w, r, f in zip(weights, real, fake):
            if w:
                total = total + w * (r.detach() - f).abs().mean()
    return torch.as_tensor(total)


# -------------------------------------------------------------------------------------- equivariance
def equivariance_value_loss(kp_driving: KP, kp_transformed: KP, warp) -> torch.Tensor:
    """``mean |kp(D) - T(kp(T^-1 D))|``: keypoints of the warped frame, mapped back by the warp ``T`` that
    made it (``warp.warp_image(D)``), must land on the keypoints of ``D``. Values ``(B, K, 2)``."""
    return (kp_driving["value"] - warp.warp_coordinates(kp_transformed["value"])).abs().mean()


def equivariance_jacobian_loss(kp_driving: KP, kp_transformed: KP, warp) -> torch.Tensor:
    """``mean |I - J_D^-1 (dT J_T)|`` with the warp's Jacobian ``dT`` at the transformed keypoints."""
    jac_transformed = torch.matmul(warp.jacobian(kp_transformed["value"]), kp_transformed["jacobian"])
    value = torch.matmul(torch.inverse(kp_driving["jacobian"].float()), jac_transformed.float())
    eye = torch.eye(2, dtype=value.dtype, device=value.device).view(1, 1, 2, 2)
    return (eye - value).abs().mean()


# ------------------------------------------------------------------------------------------ keypoints
def kp_distance_loss(kp: KP, margin: float = 0.2) -> torch.Tensor:
    """Push keypoints of one frame at least ``margin`` apart: mean over all ``K x K`` pairs (the diagonal
    counts as satisfied) of ``2 relu(margin - d) / margin``.

    The official loss is ``mean(1 - sign(d + 0.2 I - 0.2))``: the same value 2 for coincident points and 0
    beyond the margin, but a step function with zero gradient; this hinge keeps its scale and gives a gradient.
    """
    value = kp["value"]
    k = value.shape[1]
    diff = value.unsqueeze(2) - value.unsqueeze(1)
    dist = torch.sqrt((diff ** 2).sum(-1) + 1e-8)
    off_diag = 1 - torch.eye(k, dtype=dist.dtype, device=dist.device)
    return (2 * F.relu(margin - dist) / margin * off_diag).mean()


def landmark_keypoint_loss(kp: KP, points: torch.Tensor, pairs: Sequence[Sequence[int]], size: int) -> torch.Tensor:
    """Mean L1 between keypoints and face landmarks: ``pairs`` ``[[keypoint, landmark], ...]``, ``points``
    ``(B, 68, 2)`` landmark pixels of a ``size``-px frame (NaN rows: no landmarks, skipped), keypoints in
    [-1, 1] (pixel ``i`` of ``size`` at ``2 i / (size - 1) - 1``, as :func:`~dagan.nn.grid.make_coordinate_grid`)."""
    value = kp["value"]
    ks = [int(k) for k, _ in pairs]
    ls = [int(m) for _, m in pairs]
    target = points[:, ls].to(value.dtype) * (2.0 / (size - 1)) - 1
    ok = torch.isfinite(target).all(-1).all(-1)
    if not bool(ok.any()):
        return value.sum() * 0
    return (value[ok][:, ks] - target[ok]).abs().mean()


MOUTH_LANDMARKS = slice(48, 60)  # the outer lip contour of the 68-point scheme


def mouth_region(points: torch.Tensor, frame_size: int, size: int, margin: float = 0.4) -> torch.Tensor:
    """``(B, 1, size, size)`` soft ellipse over the mouth of each frame: centred on the outer lip landmarks
    (48-59) of ``points`` ``(B, 68, 2)`` (pixels of a ``frame_size``-px frame), half-axes their half-extent
    grown by ``margin`` plus one pixel (the height at least half the width), edge one pixel wide. Zero for frames without landmarks (NaN)."""
    lips = points[:, MOUTH_LANDMARKS].float() * (size / frame_size)
    ok = torch.isfinite(lips).all(-1).all(-1)
    lips = torch.where(ok[:, None, None], lips, torch.zeros_like(lips))
    lo, hi = lips.min(1).values, lips.max(1).values
    centre = (lo + hi) / 2 + 0.5 * (size / frame_size - 1)  # pixel centres of the two grids
    half = (hi - lo) / 2 * (1 + margin) + 1.0
    half = torch.stack([half[:, 0], torch.maximum(half[:, 1], half[:, 0] / 2)], 1)  # a closed mouth may open
    ax = torch.arange(size, dtype=lips.dtype, device=lips.device)
    dx = (ax[None, None, :] - centre[:, 0, None, None]) / half[:, 0, None, None]
    dy = (ax[None, :, None] - centre[:, 1, None, None]) / half[:, 1, None, None]
    radius = (dx ** 2 + dy ** 2).sqrt()
    edge = 1.0 / half.min(1).values.clamp(min=1.0)[:, None, None]
    region = ((1 - radius) / edge + 0.5).clamp(0, 1) * ok[:, None, None]
    return region[:, None]


def mouth_change(points_source: torch.Tensor, points_driving: torch.Tensor, full: float = 0.1) -> torch.Tensor:
    """``(B,)`` in [0, 1]: how differently open the two mouths are, ``|o_d - o_s| / full`` clipped, with ``o`` the
    inner-lip opening ``|L62 - L66|`` over the inter-ocular distance (the evaluation's mouth measure; 0.1 is
    about the 90th percentile of a talking clip). 0 for frames without landmarks."""
    def opening(p: torch.Tensor) -> torch.Tensor:
        iod = (p[:, 36:42].mean(1) - p[:, 42:48].mean(1)).norm(dim=-1).clamp(min=1e-6)
        return (p[:, 62] - p[:, 66]).norm(dim=-1) / iod

    change = ((opening(points_driving.float()) - opening(points_source.float())).abs() / full).clamp(0, 1)
    return torch.nan_to_num(change, nan=0.0)


def _region_means(values: torch.Tensor, region: torch.Tensor):
    """Per-frame mean of ``values`` ``(B, 1, H, W)`` weighted by ``region`` (same size) -> ``(means (B,), ok (B,))``,
    ``ok`` where the region is not empty."""
    area = region.flatten(1).sum(1)
    weighted = (values * region.to(values.dtype)).flatten(1).sum(1)
    return weighted / area.clamp(min=1e-6), area > 0


def mouth_blend_loss(blend_mask: torch.Tensor, region: torch.Tensor, weight: Optional[torch.Tensor] = None
                     ) -> torch.Tensor:
    """Mean output-blend mask ``(B, 1, h, w)`` inside the driving frame's mouth ``region`` (same size;
    :func:`mouth_region`), per frame times ``weight`` ``(B,)`` (e.g. :func:`mouth_change`; default 1),
    averaged over frames that have a region: low when the decoder, which can render a mouth the source does
    not show, owns the mouth instead of the copied source."""
    inside, ok = _region_means(blend_mask, region)
    if not bool(ok.any()):
        return blend_mask.sum() * 0
    if weight is not None:
        inside = inside * weight.to(inside.dtype)
    return inside[ok].mean()


def mouth_l1_loss(prediction: torch.Tensor, target: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the mouth ``region`` ``(B, 1, H, W)`` (:func:`mouth_region`) of frames that
    have one: the mouth is a few pixels of a 64 px frame, so the image losses hardly see whether it opens."""
    err, ok = _region_means((prediction - target).abs().mean(1, keepdim=True), region)
    if not bool(ok.any()):
        return prediction.sum() * 0
    return err[ok].mean()


# ---------------------------------------------------------------------------------------------- depth
def depth_consistency_loss(depth_generated: torch.Tensor, depth_driving: torch.Tensor) -> torch.Tensor:
    """``mean |depth(G(s, d)) - depth(d)|`` for ``(B, 1, H, W)`` disparity maps (driving detached): the
    generated face should have the driving frame's geometry (weight 0 by default, as DaGAN's
    ``depth_constraint``)."""
    return (depth_generated - depth_driving.detach()).abs().mean()
