"""DaGAN generators: :class:`DepthAwareGenerator` (official default) and its SPADE-decoder variant.

Both share one encoder / dense-motion / attention definition; only the decoder differs. The work is split
into a source-only part (:meth:`DepthAwareGenerator.encode_source`, computed once per portrait) and a
per-frame part (:meth:`DepthAwareGenerator.generate`), whose composition is exactly the official
forward pass (:meth:`DepthAwareGenerator.forward`).
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

from ..nn import DownBlock2d, ResBlock2d, SameBlock2d, UpBlock2d, deform_image_exact, deform_input
from ..utils import reject_unknown_options
from .attention import DepthAwareAttention
from .motion import DenseMotionNetwork

KP = Dict[str, torch.Tensor]


def _channels(block_expansion: int, max_features: int, level: int) -> int:
    return min(max_features, block_expansion * (2 ** level))


def _encoder(in_features: int, block_expansion: int, max_features: int, num_down_blocks: int):
    first = SameBlock2d(in_features, block_expansion, kernel_size=(7, 7), padding=(3, 3))
    down = nn.ModuleList([
        DownBlock2d(_channels(block_expansion, max_features, i), _channels(block_expansion, max_features, i + 1),
                    kernel_size=(3, 3), padding=(1, 1))
        for i in range(num_down_blocks)
    ])
    return first, down


class DepthAwareGenerator(nn.Module):
    """Keypoint-driven generator with depth-aware cross-modal attention (DaGAN, CVPR 2022).

    Inputs of :meth:`forward`: ``source_image (B, 3, H, W)`` in [0, 1]; ``kp_driving``/``kp_source``
    with ``value (B, K, 2)`` and ``jacobian (B, K, 2, 2)``; ``source_depth (B, 1, H, W)`` disparity in
    (0, 1). ``driving_depth`` is accepted for API parity and unused, as in the official model (the driver's
    face shape must not leak into the identity).

    Output dict: ``prediction (B, 3, H, W)`` in (0, 1), ``deformed (B, 3, H, W)``, ``deformation
    (B, h, w, 2)``, ``mask``, ``sparse_deformed``, ``occlusion_map`` (see :class:`DenseMotionNetwork`).
    """

    def __init__(self, num_channels: int, num_kp: int, block_expansion: int, max_features: int,
                 num_down_blocks: int, num_bottleneck_blocks: int, estimate_occlusion_map: bool = False,
                 dense_motion_params: Optional[dict] = None, estimate_jacobian: bool = False,
                 attention: str = "sdpa", attention_chunk: int = 4096, **unknown):
        reject_unknown_options(DepthAwareGenerator.__init__, unknown)
        super().__init__()
        self.dense_motion_network = None
        if dense_motion_params is not None:
            self.dense_motion_network = DenseMotionNetwork(num_kp=num_kp, num_channels=num_channels,
                                                           estimate_occlusion_map=estimate_occlusion_map,
                                                           **dense_motion_params)
        self.first, self.down_blocks = _encoder(num_channels, block_expansion, max_features, num_down_blocks)
        self.src_first, self.src_down_blocks = _encoder(1, block_expansion, max_features, num_down_blocks)
        bottleneck_features = _channels(block_expansion, max_features, num_down_blocks)
        self.AttnModule = self._build_attention(bottleneck_features, attention, attention_chunk)
        self.num_channels = num_channels
        self.num_down_blocks = num_down_blocks
        self.block_expansion = block_expansion
        self.max_features = max_features
        self.estimate_occlusion_map = estimate_occlusion_map
        self._build_decoder(num_bottleneck_blocks)

    def _build_attention(self, channels: int, impl: str, chunk: int) -> nn.Module:
        """The bottleneck attention block (DaGAN++ overrides it with its windowed level attention)."""
        return DepthAwareAttention(channels, impl=impl, chunk=chunk)

    # ------------------------------------------------------------------------------------- decoder
    def _build_decoder(self, num_bottleneck_blocks: int) -> None:
        be, mf, nd = self.block_expansion, self.max_features, self.num_down_blocks
        self.up_blocks = nn.ModuleList([
            UpBlock2d(_channels(be, mf, nd - i), _channels(be, mf, nd - i - 1), kernel_size=(3, 3), padding=(1, 1))
            for i in range(nd)
        ])
        self.bottleneck = nn.Sequential()
        for i in range(num_bottleneck_blocks):
            self.bottleneck.add_module(f"r{i}", ResBlock2d(_channels(be, mf, nd), kernel_size=(3, 3), padding=(1, 1)))
        self.final = nn.Conv2d(be, self.num_channels, kernel_size=(7, 7), padding=(3, 3))

    copies_source = False  # whether decode() takes the exactly warped source (the SPADE output blend)

    def decode(self, feature: torch.Tensor, deformed_image: torch.Tensor,
               occlusion_map: Optional[torch.Tensor], exact: Optional[torch.Tensor] = None,
               parts: Optional[Dict[str, torch.Tensor]] = None) -> torch.Tensor:
        """Attended bottleneck features ``(B, C, h, w)`` -> image ``(B, 3, H, W)`` in (0, 1). A decoder with
        an output blend also puts ``decoded`` and ``blend_mask`` into ``parts`` when given."""
        out = self.bottleneck(feature)
        for block in self.up_blocks:
            out = block(out)
        return torch.sigmoid(self.final(out))

    # ------------------------------------------------------------------------------------- encoder
    def encode_source(self, source_image: torch.Tensor, source_depth: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Everything that depends only on the source: appearance features, depth features, attention
        queries and the source at motion resolution. ``(B, 3, H, W), (B, 1, H, W) -> dict``."""
        feat = self.first(source_image)
        for block in self.down_blocks:
            feat = block(feat)
        depth_feat = self.src_first(source_depth)
        for block in self.src_down_blocks:
            depth_feat = block(depth_feat)
        cache = {"source_image": source_image, "appearance": feat, "depth_feat": depth_feat,
                 "query": self.AttnModule.project_query(depth_feat)}
        if self.dense_motion_network is not None:
            cache["source_small"] = self.dense_motion_network.downsample(source_image)
        return cache

    # ----------------------------------------------------------------------------------- per frame
    def generate(self, cache: Dict[str, torch.Tensor], kp_source: KP, kp_driving: KP) -> Dict[str, torch.Tensor]:
        """Per-frame part from an :meth:`encode_source` cache. Batch of the cache may be 1 (broadcast)."""
        source_image = cache["source_image"]
        b = kp_driving["value"].shape[0]
        if source_image.shape[0] != b:
            cache = {k: v.expand(b, *v.shape[1:]) for k, v in cache.items()}
            source_image = cache["source_image"]
            kp_source = {k: v.expand(b, *v.shape[1:]) for k, v in kp_source.items()}
        if self.dense_motion_network is None:
            output = {"prediction": self.decode(cache["appearance"], source_image, None, None, {})}
            return render_at_output_size(output, cache)
        motion = self.dense_motion_network(source_image, kp_driving=kp_driving, kp_source=kp_source,
                                           source_small=cache.get("source_small"))
        output = self.decode_motion(cache, motion["deformation"], motion.get("occlusion_map"))
        output.update(motion)
        return output

    def decode_motion(self, cache: Dict[str, torch.Tensor], deformation: torch.Tensor,
                      occlusion_map: Optional[torch.Tensor]) -> Dict[str, torch.Tensor]:
        """The render from a dense motion: the source features warped along ``deformation`` ``(B, h, w, 2)``
        (``grid_sample`` coordinates), masked by ``occlusion_map`` ``(B, 1, h', w')`` in [0, 1] (None: all
        visible), attended and decoded. Returns ``prediction`` (and ``deformed``, the decoder's parts; at the
        output size when the cache holds ``source_full``). Used by :meth:`generate` with the keypoints' dense
        motion, and by callers that bring their own motion (the landmark stage's mouth fill)."""
        b = deformation.shape[0]
        if cache["source_image"].shape[0] != b:
            cache = {k: v.expand(b, *v.shape[1:]) for k, v in cache.items()}
        source_image = cache["source_image"]
        output: Dict[str, torch.Tensor] = {"deformation": deformation}
        out = deform_input(cache["appearance"], deformation)
        if occlusion_map is not None:
            occ = occlusion_map
            if out.shape[2:] != occ.shape[2:]:
                occ = F.interpolate(occ, size=out.shape[2:], mode="bilinear", align_corners=False)
            out = out * occ
        out = self.AttnModule(None, out, query=cache["query"])
        deformed_image = deform_input(source_image, deformation)
        output["deformed"] = deformed_image
        if self.copies_source:
            output["deformed_exact"] = deform_image_exact(source_image, deformation)
        output["prediction"] = self.decode(out, deformed_image, occlusion_map, output.get("deformed_exact"), output)
        return render_at_output_size(output, cache)

    def forward(self, source_image: torch.Tensor, kp_driving: KP, kp_source: KP, source_depth: torch.Tensor,
                driving_depth: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        return self.generate(self.encode_source(source_image, source_depth), kp_source, kp_driving)


def render_at_output_size(output: Dict[str, torch.Tensor], cache: Dict[str, torch.Tensor]
                          ) -> Dict[str, torch.Tensor]:
    """When the source cache holds ``source_full``, keep the model-size prediction as ``prediction_model`` and
    render ``prediction`` at the output size (:func:`render_output`). Returns ``output``."""
    if "source_full" in cache:
        output["prediction_model"] = output["prediction"]
        output["prediction"] = render_output(output, cache["source_full"])
    return output


def render_output(output: Dict[str, torch.Tensor], source_full: torch.Tensor) -> torch.Tensor:
    """The prediction at the resolution of ``source_full`` ``(B, 3, H', W')`` (the source portrait at the
    output size, e.g. 256 px for a 64 px network).

    With an output blend (``decoded``, ``blend_mask`` and ``deformation`` in ``output``) the full-resolution
    source is warped along the upsampled dense motion (:func:`deform_image_exact`) and mixed with the
    upsampled decoder image where the mask says the source cannot be copied:
    ``m_up * warp(source_full) + (1 - m_up) * decoded_up``, so copied pixels keep the source's sharpness.
    Without one (official models) the prediction itself is upsampled (bicubic).
    """
    size = tuple(source_full.shape[2:])
    if "blend_mask" in output and "deformation" in output:
        decoded = F.interpolate(output["decoded"], size=size, mode="bicubic", align_corners=False).clamp(0, 1)
        mask = F.interpolate(output["blend_mask"], size=size, mode="bilinear", align_corners=False)
        exact = deform_image_exact(source_full.to(decoded.dtype), output["deformation"])
        return decoded + mask * (exact - decoded)
    if tuple(output["prediction"].shape[2:]) == size:
        return output["prediction"]
    return F.interpolate(output["prediction"], size=size, mode="bicubic", align_corners=False).clamp(0, 1)


# ------------------------------------------------------------------------------------------------ SPADE
class SPADE(nn.Module):
    """Spatially-adaptive normalisation: instance norm modulated by convs of a label map."""

    def __init__(self, norm_nc: int, label_nc: int, hidden: int = 128):
        super().__init__()
        self.param_free_norm = nn.InstanceNorm2d(norm_nc, affine=False)
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, hidden, kernel_size=3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, norm_nc, kernel_size=3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, norm_nc, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        segmap = F.interpolate(segmap, size=x.shape[2:], mode="nearest")
        actv = self.mlp_shared(segmap)
        return self.param_free_norm(x) * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class SPADEResnetBlock(nn.Module):
    """Residual block of two spectrally-normalised convs, each after SPADE + leaky ReLU."""

    def __init__(self, fin: int, fout: int, label_nc: int, hidden: int = 128):
        super().__init__()
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        self.conv_0 = spectral_norm(nn.Conv2d(fin, fmiddle, kernel_size=3, padding=1))
        self.conv_1 = spectral_norm(nn.Conv2d(fmiddle, fout, kernel_size=3, padding=1))
        self.norm_0 = SPADE(fin, label_nc, hidden)
        self.norm_1 = SPADE(fmiddle, label_nc, hidden)
        if self.learned_shortcut:
            self.conv_s = spectral_norm(nn.Conv2d(fin, fout, kernel_size=1, bias=False))
            self.norm_s = SPADE(fin, label_nc, hidden)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        shortcut = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
        return shortcut + dx


class SPADEDecoder(nn.Module):
    """The official SPADE decoder: label map = [compressed features (4 ch), occluded warped source (3 ch)].

    Feature ``(B, ic, h, w)`` -> image ``(B, 3, 4h, 4w)``; official sizes ``ic = 256, oc = 64``.
    """

    def __init__(self, ic: int, oc: int, num_channels: int = 3, compressed: int = 4, hidden: int = 128,
                 num_middle: int = 3, output_blend: bool = False):
        super().__init__()
        label_nc = num_channels + compressed
        self.compress = nn.Conv2d(ic, compressed, 3, padding=1)
        self.fc = nn.Conv2d(ic, 2 * ic, 3, padding=1)
        for i in range(num_middle):
            self.add_module(f"G_middle_{i}", SPADEResnetBlock(2 * ic, 2 * ic, label_nc, hidden))
        self.num_middle = num_middle
        self.up_0 = SPADEResnetBlock(2 * ic, ic, label_nc, hidden)
        self.up_1 = SPADEResnetBlock(ic, oc, label_nc, hidden)
        self.conv_img = nn.Conv2d(oc, num_channels, 3, padding=1)
        self.conv_blend = None
        if output_blend:  # not in the official model: a per-pixel mask that copies the warped source
            self.conv_blend = nn.Conv2d(oc, 1, 3, padding=1)
            nn.init.zeros_(self.conv_blend.weight)  # starts as a near-plain decoder (mask 0.05 everywhere)
            nn.init.constant_(self.conv_blend.bias, -3.0)

    def forward(self, feature: torch.Tensor, image: torch.Tensor, skip: Optional[torch.Tensor] = None,
                return_parts: bool = False):
        """``skip`` (default ``image``) is what the output blend copies, when the decoder has one. With
        ``return_parts`` (blend decoders) returns ``(blended, decoded, blend_mask)``."""
        seg = torch.cat([F.interpolate(self.compress(feature), size=image.shape[2:]), image], dim=1)
        x = self.fc(feature)
        for i in range(self.num_middle):
            x = getattr(self, f"G_middle_{i}")(x, seg)
        x = self.up_0(F.interpolate(x, scale_factor=2.0), seg)
        x = F.leaky_relu(self.up_1(F.interpolate(x, scale_factor=2.0), seg), 0.2)
        out = torch.sigmoid(self.conv_img(x))
        if self.conv_blend is None:
            return out
        mask = torch.sigmoid(self.conv_blend(x))
        blended = out + mask * ((image if skip is None else skip) - out)
        return (blended, out, mask) if return_parts else blended


class SPADEDepthAwareGenerator(DepthAwareGenerator):
    """DaGAN with the SPADE decoder (official ``SPADEDepthAwareGenerator``); needs ``num_down_blocks == 2``.

    ``output_blend=True`` (not official; off by default) adds a learned per-pixel mask ``m`` at the output:
    ``prediction = m * deformed_exact + (1 - m) * decoded``, so visible source pixels can be copied instead of
    being re-synthesised by the decoder (sharper output from small models). ``deformed_exact`` is the source
    warped at full resolution by :func:`deform_image_exact` (the official ``deformed`` resizes the sampling
    grid itself, which shifts and blurs the image by up to a pixel even when nothing moves).
    """

    def __init__(self, *args, spade_hidden: int = 128, output_blend: bool = False, **kwargs):
        self._spade_hidden = spade_hidden
        self.copies_source = output_blend
        super().__init__(*args, **kwargs)

    def _build_decoder(self, num_bottleneck_blocks: int) -> None:
        if self.num_down_blocks != 2:
            raise ValueError("the SPADE decoder upsamples x4: it needs num_down_blocks == 2")
        ic = _channels(self.block_expansion, self.max_features, self.num_down_blocks)
        self.decoder = SPADEDecoder(ic, self.block_expansion, self.num_channels, hidden=self._spade_hidden,
                                    output_blend=self.copies_source)

    def decode(self, feature: torch.Tensor, deformed_image: torch.Tensor,
               occlusion_map: Optional[torch.Tensor], exact: Optional[torch.Tensor] = None,
               parts: Optional[Dict[str, torch.Tensor]] = None) -> torch.Tensor:
        masked = deformed_image
        if occlusion_map is not None:
            if deformed_image.shape[2:] != occlusion_map.shape[2:]:
                occlusion_map = F.interpolate(occlusion_map, size=deformed_image.shape[2:], mode="bilinear",
                                              align_corners=False)
            masked = deformed_image * occlusion_map
        skip = deformed_image if exact is None else exact
        if parts is None or not self.copies_source:
            return self.decoder(feature, masked, skip=skip)
        prediction, parts["decoded"], parts["blend_mask"] = self.decoder(feature, masked, skip=skip, return_parts=True)
        return prediction
