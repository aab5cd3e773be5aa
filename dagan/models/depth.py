"""Face-depth network (monodepth2-style) and the pose network used to train it.

* :class:`DepthEncoder` -- a torchvision-compatible :class:`ResNet` (10/18/34/50/...; 10 = one block per stage) held as ``encoder``; input is normalised with
  the scalar ``(x - 0.45) / 0.225`` like the official code.
* :class:`DepthDecoder` -- multi-scale sigmoid disparity decoder; its ``decoder`` ModuleList keeps the
  official order (upconv 4,0 / 4,1 / ... / 0,1, then one head per scale) so ``depth.pth`` loads as is.
* :func:`disp_to_depth` -- sigmoid disparity to metric-free depth in ``[min_depth, max_depth]``.
* :class:`PoseNet` -- two-frame ResNet encoder + pose decoder predicting axis-angle, translation, learned
  (differentiable) intrinsics, and optionally per-pixel uncertainty maps (DaGAN++).

State-dict keys match the official files: ``encoder.conv1.weight`` ... and ``decoder.N.conv.conv.weight``.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_RESNETS = {10: "resnet10", 18: "resnet18", 34: "resnet34", 50: "resnet50", 101: "resnet101", 152: "resnet152"}
_BLOCKS = {10: (False, [1, 1, 1, 1]), 18: (False, [2, 2, 2, 2]), 34: (False, [3, 4, 6, 3]),
           50: (True, [3, 4, 6, 3]), 101: (True, [3, 4, 23, 3]), 152: (True, [3, 8, 36, 3])}
DEC_CHANNELS = (16, 32, 64, 128, 256)


class BasicBlock(nn.Module):
    """torchvision's ResNet basic block (same attribute names, same construction order): two 3x3 convs."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    """torchvision's ResNet bottleneck block (1x1, strided 3x3, 1x1 with 4x the channels)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    """The torchvision ResNet (``torchvision.models.resnet.ResNet`` with default arguments): same module names,
    state-dict keys (``fc`` included, unused here) and initialisation in the same order, so a seed gives the same
    weights. Defined here so that inference does not import torchvision (~165 MiB of resident memory)."""

    def __init__(self, bottleneck: bool, layers: Sequence[int], num_classes: int = 1000):
        super().__init__()
        block = Bottleneck if bottleneck else BasicBlock
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)


def _resnet(num_layers: int, pretrained: bool) -> nn.Module:
    """A ResNet (:class:`ResNet`); ImageNet weights only when asked for (torchvision's, which must be in the
    torch hub cache)."""
    from ..errors import MissingWeightsError

    model = ResNet(*_BLOCKS[num_layers])
    if not pretrained:
        return model
    if num_layers == 10:  # one BasicBlock per stage: a light face-depth backbone for small CPU models
        raise MissingWeightsError("there are no ImageNet weights for ResNet-10; set pretrained_encoder: false")
    import torchvision

    weights_enum = torchvision.models.get_model_weights(_RESNETS[num_layers]).DEFAULT
    try:
        model.load_state_dict(weights_enum.get_state_dict(progress=False))
    except (OSError, RuntimeError) as exc:  # no network / no cached file
        cache = torch.hub.get_dir()
        raise MissingWeightsError(
            f"ImageNet weights for {_RESNETS[num_layers]} are not available ({type(exc).__name__}); put "
            f"{weights_enum.url.rsplit('/', 1)[-1]} into {cache}/checkpoints/ or set pretrained_encoder: false"
        ) from None
    return model


class DepthEncoder(nn.Module):
    """ResNet feature pyramid for depth (or, with ``num_input_images > 1``, for pose).

    Input ``(B, 3 * num_input_images, H, W)`` in [0, 1]; output five maps at strides 2, 4, 8, 16, 32 with
    ``num_ch_enc`` channels (64, 64, 128, 256, 512 for ResNet-18; x4 for the last four of ResNet-50).
    """

    def __init__(self, num_layers: int = 18, pretrained: bool = False, num_input_images: int = 1):
        super().__init__()
        if num_layers not in _RESNETS:
            raise ValueError(f"num_layers must be one of {sorted(_RESNETS)}, got {num_layers}")
        self.num_layers = num_layers
        self.num_ch_enc = np.array([64, 64, 128, 256, 512])
        if num_layers > 34:
            self.num_ch_enc[1:] *= 4
        self.encoder = _resnet(num_layers, pretrained)
        if num_input_images > 1:
            old = self.encoder.conv1.weight.data
            self.encoder.conv1 = nn.Conv2d(3 * num_input_images, 64, kernel_size=7, stride=2, padding=3, bias=False)
            # ImageNet filters repeated for each frame and scaled so activations keep their magnitude
            self.encoder.conv1.weight.data = torch.cat([old] * num_input_images, 1) / num_input_images

    def forward(self, image: torch.Tensor) -> List[torch.Tensor]:
        enc = self.encoder
        x = (image - 0.45) / 0.225
        f0 = enc.relu(enc.bn1(enc.conv1(x)))
        f1 = enc.layer1(enc.maxpool(f0))
        f2 = enc.layer2(f1)
        f3 = enc.layer3(f2)
        f4 = enc.layer4(f3)
        return [f0, f1, f2, f3, f4]


class Conv3x3(nn.Module):
    """3x3 convolution with 1-pixel reflection padding (keeps ``conv`` as the official attribute)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.pad = nn.ReflectionPad2d(1)
        self.conv = nn.Conv2d(int(in_channels), int(out_channels), 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pad(x))


class ConvBlock(nn.Module):
    """Conv3x3 followed by ELU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = Conv3x3(in_channels, out_channels)
        self.nonlin = nn.ELU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlin(self.conv(x))


class DepthDecoder(nn.Module):
    """Multi-scale disparity decoder.

    Input: the five encoder maps. Output: ``{("disp", s): (B, C_out, H / 2**s, W / 2**s)}`` for each
    ``s`` in ``scales``, sigmoid in (0, 1) (larger = nearer). ``H`` and ``W`` must be multiples of 32.
    """

    def __init__(self, num_ch_enc: Sequence[int], scales: Sequence[int] = range(4), num_output_channels: int = 1,
                 use_skips: bool = True):
        super().__init__()
        self.scales = list(scales)
        self.use_skips = use_skips
        self.num_ch_enc = [int(c) for c in num_ch_enc]
        layers: List[nn.Module] = []
        self._upconv: Dict[Tuple[int, int], int] = {}
        for i in range(4, -1, -1):
            cin = self.num_ch_enc[-1] if i == 4 else DEC_CHANNELS[i + 1]
            self._upconv[(i, 0)] = len(layers)
            layers.append(ConvBlock(cin, DEC_CHANNELS[i]))
            cin = DEC_CHANNELS[i] + (self.num_ch_enc[i - 1] if use_skips and i > 0 else 0)
            self._upconv[(i, 1)] = len(layers)
            layers.append(ConvBlock(cin, DEC_CHANNELS[i]))
        self._dispconv: Dict[int, int] = {}
        for s in self.scales:
            self._dispconv[s] = len(layers)
            layers.append(Conv3x3(DEC_CHANNELS[s], num_output_channels))
        self.decoder = nn.ModuleList(layers)

    def forward(self, features: List[torch.Tensor]) -> Dict[Tuple[str, int], torch.Tensor]:
        outputs: Dict[Tuple[str, int], torch.Tensor] = {}
        x = features[-1]
        for i in range(4, -1, -1):
            x = self.decoder[self._upconv[(i, 0)]](x)
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            if self.use_skips and i > 0:
                x = torch.cat([x, features[i - 1]], 1)
            x = self.decoder[self._upconv[(i, 1)]](x)
            if i in self._dispconv:
                outputs[("disp", i)] = torch.sigmoid(self.decoder[self._dispconv[i]](x))
        return outputs


def disp_to_depth(disp: torch.Tensor, min_depth: float = 0.1, max_depth: float = 100.0
                  ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Sigmoid disparity to (scaled disparity, depth), depth in ``[min_depth, max_depth]``."""
    min_disp, max_disp = 1.0 / max_depth, 1.0 / min_depth
    scaled = min_disp + (max_disp - min_disp) * disp
    return scaled, 1.0 / scaled


class PoseDecoder(nn.Module):
    """Relative camera motion (+ learned intrinsics, + optional uncertainty) from pose-encoder features.

    Returns ``axisangle (B, 1, 3)``, ``translation (B, 1, 3)``, ``intrinsics (B, 3, 3)`` in pixels for an
    image of ``(height, width)``, and ``uncertainty`` ``(B, 2, H, W)`` (log-scale, one map per frame of the
    pair) or ``None``.

    Unlike the official head (which truncates K to integers and so passes no gradient), K here stays
    differentiable; the principal point is an offset from the image centre (Gordon et al. 2019), so it
    starts inside the image.
    """

    def __init__(self, num_ch_enc: Sequence[int], uncertainty: bool = False):
        super().__init__()
        c = int(num_ch_enc[-1])
        self.squeeze = nn.Conv2d(c, 256, 1)
        self.pose0 = nn.Conv2d(256, 256, 3, 1, 1)
        self.pose1 = nn.Conv2d(256, 256, 3, 1, 1)
        self.pose2 = nn.Conv2d(256, 6, 1)
        self.focal = nn.Conv2d(256, 2, 3, 1, 1)
        self.offset = nn.Conv2d(256, 2, 3, 1, 1)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.uncertainty_head: Optional[nn.Module] = None
        if uncertainty:
            skip = int(num_ch_enc[1])
            self.uncertainty_head = nn.ModuleDict({
                "reduce": nn.Conv2d(c, 64, 1),
                "fuse": nn.Conv2d(64 + skip, 32, 3, 1, 1),
                "out": nn.Conv2d(32, 2, 3, 1, 1),
            })
            # near-zero start: sigma ~ constant at first, but every layer of the head still learns
            nn.init.normal_(self.uncertainty_head["out"].weight, std=1e-3)
            nn.init.zeros_(self.uncertainty_head["out"].bias)

    def forward(self, features: List[torch.Tensor], image_size: Tuple[int, int]):
        h, w = image_size
        feat = F.relu(self.squeeze(features[-1]))
        feat = F.relu(self.pose1(F.relu(self.pose0(feat))))
        out = 0.01 * self.pose2(feat).mean((2, 3)).view(-1, 1, 6)
        axisangle, translation = out[..., :3], out[..., 3:]
        size = torch.tensor([w, h], dtype=feat.dtype, device=feat.device)
        focal = F.softplus(self.focal(feat)).mean((2, 3)) * size  # (B, 2)
        centre = (0.5 + self.offset(feat).mean((2, 3))) * size
        zero, one = torch.zeros_like(focal[:, 0]), torch.ones_like(focal[:, 0])
        intrinsics = torch.stack([
            torch.stack([focal[:, 0], zero, centre[:, 0]], -1),
            torch.stack([zero, focal[:, 1], centre[:, 1]], -1),
            torch.stack([zero, zero, one], -1),
        ], 1)
        uncertainty = None
        if self.uncertainty_head is not None:
            head = self.uncertainty_head
            x = F.relu(head["reduce"](features[-1]))
            x = F.interpolate(x, size=features[1].shape[-2:], mode="bilinear", align_corners=False)
            x = F.relu(head["fuse"](torch.cat([x, features[1]], 1)))
            uncertainty = F.interpolate(head["out"](x), size=(h, w), mode="bilinear", align_corners=False)
        return axisangle, translation, intrinsics, uncertainty


class PoseNet(nn.Module):
    """Pose network for self-supervised depth training (not used at inference).

    ``forward(frame_a, frame_b)`` with both ``(B, 3, H, W)`` in [0, 1], in temporal order, returns
    ``(axisangle, translation, intrinsics, uncertainty)`` as :class:`PoseDecoder` describes.
    """

    def __init__(self, num_layers: int = 18, pretrained: bool = False, uncertainty: bool = False):
        super().__init__()
        self.encoder = DepthEncoder(num_layers, pretrained, num_input_images=2)
        self.decoder = PoseDecoder(self.encoder.num_ch_enc, uncertainty=uncertainty)

    def forward(self, frame_a: torch.Tensor, frame_b: torch.Tensor):
        feats = self.encoder(torch.cat([frame_a, frame_b], 1))
        return self.decoder(feats, tuple(frame_a.shape[-2:]))
