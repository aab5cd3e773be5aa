"""DaGAN++ generator: depth-aware cross-modal attention at **every** decoder level, coarse to fine.

A U-Net over the DaGAN encoders (``design/daganpp.md`` §4/§7 defaults). For each encoder level ``l``
(``l = 0`` full resolution ... ``l = num_down_blocks`` the bottleneck):

* ``F_l = warp(E_l, T) * M``: the source appearance feature warped by the one dense flow ``T_{S<-D}``
  and masked by the one occlusion map ``M``, both resized to the level;
* ``D_l``: the source-depth encoder feature of the same size (queries; source-only, cached);
* ``G_l = F_l + gamma_l * softmax(relu(Wq D_l) relu(Wk F_l)^T) relu(Wv F_l)`` (:class:`LevelAttention`);
* the decoder starts from ``bottleneck(G_L)`` and, per up block, concatenates ``G_l`` as the skip.

**High-resolution levels.** Full attention scores grow as ``(HW)^2`` (1 GiB per sample at 128^2 in fp32,
17 GiB at 256^2). Levels with more than ``attention_full_max`` positions (default 64^2) therefore attend
within non-overlapping ``attention_window x attention_window`` windows (16 x 16 default): memory and
compute become linear in ``HW`` while the coarse levels, which see the whole face, keep full attention.
Within a window (or at a full level) the attention runs through :func:`~dagan.models.attention.cross_attention`,
so ``impl="sdpa"`` (fused) and ``impl="plain"`` (reference formula) stay interchangeable and are tested equal.
Window sides are the largest divisors of the level size not above ``attention_window`` (no padding/masks).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import ResBlock2d, UpBlock2d, deform_input
from ..utils import reject_unknown_options
from .attention import DepthAwareAttention, cross_attention
from .generator import DepthAwareGenerator, _channels, render_at_output_size

KP = Dict[str, torch.Tensor]


def _largest_divisor(size: int, limit: int) -> int:
    for d in range(min(size, limit), 0, -1):
        if size % d == 0:
            return d
    return 1


def window_partition(x: torch.Tensor, window: Tuple[int, int]) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, nW, wh * ww, C)`` token windows (``H % wh == 0``, ``W % ww == 0``)."""
    b, c, h, w = x.shape
    wh, ww = window
    x = x.view(b, c, h // wh, wh, w // ww, ww).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b, (h // wh) * (w // ww), wh * ww, c)


def window_merge(windows: torch.Tensor, window: Tuple[int, int], size: Tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(B, nW, wh * ww, C)`` -> ``(B, C, H, W)``."""
    b, _, _, c = windows.shape
    (wh, ww), (h, w) = window, size
    x = windows.view(b, h // wh, w // ww, wh, ww, c).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, c, h, w)


class LevelAttention(DepthAwareAttention):
    """:class:`DepthAwareAttention` that switches to local windows on large maps.

    ``forward(depth_feat, feat, query=None)``: ``depth_feat, feat (B, C, h, w)`` -> ``(B, C, h, w)``.
    When ``h * w > full_max`` and ``window > 0`` each ``wh x ww`` window attends only to itself; otherwise
    the block is exactly DaGAN's. :meth:`project_query` returns the layout :meth:`forward` expects for the
    same ``(h, w)``: ``(B, hw, C/8)`` (full) or ``(B, nW, wh * ww, C/8)`` (windowed), batch first either way.
    """

    def __init__(self, in_dim: int, impl: str = "sdpa", chunk: int = 4096, window: int = 16,
                 full_max: int = 64 * 64):
        super().__init__(in_dim, impl=impl, chunk=chunk)
        self.window = int(window)
        self.full_max = int(full_max)

    def window_shape(self, height: int, width: int) -> Optional[Tuple[int, int]]:
        """Window ``(wh, ww)`` used on an ``height x width`` map, or None for full attention."""
        if self.window <= 0 or height * width <= self.full_max:
            return None
        return _largest_divisor(height, self.window), _largest_divisor(width, self.window)

    def project_query(self, depth_feat: torch.Tensor) -> torch.Tensor:
        window = self.window_shape(*depth_feat.shape[2:])
        if window is None:
            return super().project_query(depth_feat)
        return window_partition(F.relu(self.query_conv(depth_feat)), window)

    def forward(self, depth_feat: Optional[torch.Tensor], feat: torch.Tensor,
                query: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, c, h, w = feat.shape
        window = self.window_shape(h, w)
        if window is None:
            return super().forward(depth_feat, feat, query)
        if query is None:
            query = self.project_query(depth_feat)
        if query.shape[0] != b:
            query = query.expand(b, *query.shape[1:])
        key = window_partition(F.relu(self.key_conv(feat)), window)
        value = window_partition(F.relu(self.value_conv(feat)), window)
        n_windows, tokens = key.shape[1], key.shape[2]
        attended = cross_attention(query.to(key.dtype).reshape(b * n_windows, tokens, -1),
                                   key.reshape(b * n_windows, tokens, -1),
                                   value.reshape(b * n_windows, tokens, c), self.impl, self.chunk)
        return self.gamma * window_merge(attended.view(b, n_windows, tokens, c), window, (h, w)) + feat


class DaGANPPGenerator(DepthAwareGenerator):
    """DaGAN++ generator (multi-level depth-aware attention); same interface as :class:`DepthAwareGenerator`.

    Inputs of :meth:`forward`: ``source_image (B, 3, H, W)`` in [0, 1]; keypoint dicts with ``value
    (B, K, 2)`` and ``jacobian (B, K, 2, 2)``; ``source_depth (B, 1, H, W)`` in (0, 1) (only the source
    depth is used, as in DaGAN). ``H, W`` must be divisible by ``2 ** num_down_blocks``.

    Levels ``l = 0..num_down_blocks`` have ``min(max_features, block_expansion * 2**l)`` channels at
    ``H / 2**l``. ``AttnModule`` is the bottleneck level's attention (DaGAN's name), ``skip_attention[l]``
    the one of level ``l < num_down_blocks``.

    Output dict as DaGAN's: ``prediction (B, 3, H, W)`` in (0, 1), ``deformed (B, 3, H, W)``,
    ``deformation (B, h, w, 2)``, ``mask``, ``sparse_deformed``, ``occlusion_map``.

    Example::

        >>> g = DaGANPPGenerator(num_channels=3, num_kp=5, block_expansion=16, max_features=64,
        ...                      num_down_blocks=3, num_bottleneck_blocks=1, estimate_occlusion_map=True,
        ...                      dense_motion_params=dict(block_expansion=16, max_features=64, num_blocks=3,
        ...                                               scale_factor=0.25))
        >>> cache = g.encode_source(source, source_depth)          # once per portrait
        >>> frame = g.generate(cache, kp_source, kp_driving)["prediction"]
    """

    def __init__(self, num_channels: int, num_kp: int, block_expansion: int, max_features: int,
                 num_down_blocks: int, num_bottleneck_blocks: int, estimate_occlusion_map: bool = False,
                 dense_motion_params: Optional[dict] = None, estimate_jacobian: bool = False,
                 attention: str = "sdpa", attention_chunk: int = 4096, attention_window: int = 16,
                 attention_full_max: int = 64 * 64, **unknown):
        reject_unknown_options(DaGANPPGenerator.__init__, unknown)
        if block_expansion < 8:
            raise ValueError(f"DaGAN++ attends at every level, so block_expansion must be >= 8 "
                             f"(attention projects to C/8), got {block_expansion}")
        self._attention_window, self._attention_full_max = attention_window, attention_full_max
        super().__init__(num_channels, num_kp, block_expansion, max_features, num_down_blocks,
                         num_bottleneck_blocks, estimate_occlusion_map=estimate_occlusion_map,
                         dense_motion_params=dense_motion_params, estimate_jacobian=estimate_jacobian,
                         attention=attention, attention_chunk=attention_chunk)
        self.skip_attention = nn.ModuleList([
            self._build_attention(_channels(block_expansion, max_features, level), attention, attention_chunk)
            for level in range(num_down_blocks)])

    def _build_attention(self, channels: int, impl: str, chunk: int) -> LevelAttention:
        return LevelAttention(channels, impl=impl, chunk=chunk, window=self._attention_window,
                              full_max=self._attention_full_max)

    @property
    def num_levels(self) -> int:
        return self.num_down_blocks + 1

    def level_attention(self, level: int) -> LevelAttention:
        """The attention block of ``level`` (0 = full resolution, ``num_down_blocks`` = bottleneck)."""
        return self.AttnModule if level == self.num_down_blocks else self.skip_attention[level]

    @property
    def cache_keys(self) -> Tuple[str, ...]:
        """The :meth:`encode_source` entries :meth:`generate` reads, in a fixed order (for exporters)."""
        levels = range(self.num_levels)
        keys = ("source_image", *(f"appearance_{lv}" for lv in levels), *(f"query_{lv}" for lv in levels))
        return keys + (("source_small",) if self.dense_motion_network is not None else ())

    def set_attention_impl(self, impl: str) -> None:
        """Switch every level between ``"sdpa"``, ``"chunked"`` and ``"plain"`` (same weights, same maths)."""
        for level in range(self.num_levels):
            self.level_attention(level).impl = impl

    # ------------------------------------------------------------------------------------- decoder
    def _build_decoder(self, num_bottleneck_blocks: int) -> None:
        be, mf, nd = self.block_expansion, self.max_features, self.num_down_blocks
        # up block i lands on level l = nd - 1 - i; from the second one on its input is [out, G_{l+1}]
        self.up_blocks = nn.ModuleList([
            UpBlock2d((1 if i == 0 else 2) * _channels(be, mf, nd - i), _channels(be, mf, nd - i - 1),
                      kernel_size=(3, 3), padding=(1, 1))
            for i in range(nd)
        ])
        self.bottleneck = nn.Sequential()
        for i in range(num_bottleneck_blocks):
            self.bottleneck.add_module(f"r{i}", ResBlock2d(_channels(be, mf, nd), kernel_size=(3, 3), padding=(1, 1)))
        self.final = nn.Conv2d(2 * be, self.num_channels, kernel_size=(7, 7), padding=(3, 3))

    def decode(self, feature, deformed_image=None, occlusion_map=None):
        raise NotImplementedError("DaGANPPGenerator decodes from every level: use decode_levels(skip_fn)")

    def decode_levels(self, skip) -> torch.Tensor:
        """Coarse-to-fine decoding; ``skip(level)`` returns the attended features ``G_level (B, C_l, h_l, w_l)``.

        Levels are requested lazily (bottleneck first), so only the current ones are alive at a time.
        Returns the image ``(B, 3, H, W)`` in (0, 1).
        """
        out = self.bottleneck(skip(self.num_down_blocks))
        for i, block in enumerate(self.up_blocks):
            out = torch.cat([block(out), skip(self.num_down_blocks - 1 - i)], dim=1)
        return torch.sigmoid(self.final(out))

    # ------------------------------------------------------------------------------------- encoder
    def encode_source(self, source_image: torch.Tensor, source_depth: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Source-only part, computed once per portrait: ``(B, 3, H, W), (B, 1, H, W) -> dict`` with
        ``appearance_l (B, C_l, H/2^l, W/2^l)``, ``depth_feat_l`` (same shape), ``query_l`` (see
        :meth:`LevelAttention.project_query`) for every level, ``source_image`` and ``source_small``.
        Every entry is batch-first, so a batch-1 cache broadcasts over any number of frames."""
        appearance = [self.first(source_image)]
        for block in self.down_blocks:
            appearance.append(block(appearance[-1]))
        depth = [self.src_first(source_depth)]
        for block in self.src_down_blocks:
            depth.append(block(depth[-1]))
        cache: Dict[str, torch.Tensor] = {"source_image": source_image}
        for level in range(self.num_levels):
            cache[f"appearance_{level}"] = appearance[level]
            cache[f"depth_feat_{level}"] = depth[level]
            cache[f"query_{level}"] = self.level_attention(level).project_query(depth[level])
        if self.dense_motion_network is not None:
            cache["source_small"] = self.dense_motion_network.downsample(source_image)
        return cache

    # ----------------------------------------------------------------------------------- per frame
    def warp_level(self, feature: torch.Tensor, deformation: Optional[torch.Tensor],
                   occlusion_map: Optional[torch.Tensor]) -> torch.Tensor:
        """``F_l``: ``feature (B, C, h, w)`` warped by ``deformation (B, h', w', 2)`` and masked by
        ``occlusion_map (B, 1, h'', w'')``, both resized (bilinearly) to ``(h, w)``."""
        if deformation is not None:
            feature = deform_input(feature, deformation)
        if occlusion_map is not None:
            if occlusion_map.shape[2:] != feature.shape[2:]:
                occlusion_map = F.interpolate(occlusion_map, size=feature.shape[2:], mode="bilinear",
                                              align_corners=False)
            feature = feature * occlusion_map
        return feature

    def attend_level(self, cache: Dict[str, torch.Tensor], level: int, deformation: Optional[torch.Tensor],
                     occlusion_map: Optional[torch.Tensor]) -> torch.Tensor:
        """``G_level = F_level + gamma * attn(query_level, F_level)``: ``(B, C_l, H/2^l, W/2^l)``."""
        warped = self.warp_level(cache[f"appearance_{level}"], deformation, occlusion_map)
        return self.level_attention(level)(None, warped, query=cache[f"query_{level}"])

    def _motion(self, cache: Dict[str, torch.Tensor], kp_source: KP, kp_driving: KP):
        """Broadcast a batch-1 cache to the frames, run the dense motion; ``(cache, motion dict)``."""
        b = kp_driving["value"].shape[0]
        if cache["source_image"].shape[0] != b:
            cache = {k: v.expand(b, *v.shape[1:]) for k, v in cache.items()}
            kp_source = {k: v.expand(b, *v.shape[1:]) for k, v in kp_source.items()}
        if self.dense_motion_network is None:
            return cache, {}
        motion = self.dense_motion_network(cache["source_image"], kp_driving=kp_driving, kp_source=kp_source,
                                           source_small=cache.get("source_small"))
        return cache, motion

    def generate(self, cache: Dict[str, torch.Tensor], kp_source: KP, kp_driving: KP) -> Dict[str, torch.Tensor]:
        """Per-frame part from an :meth:`encode_source` cache (batch 1 broadcasts over the frames)."""
        cache, motion = self._motion(cache, kp_source, kp_driving)
        output: Dict[str, torch.Tensor] = dict(motion)
        deformation, occlusion_map = motion.get("deformation"), motion.get("occlusion_map")
        if deformation is not None:
            output["deformed"] = deform_input(cache["source_image"], deformation)
        output["prediction"] = self.decode_levels(
            lambda level: self.attend_level(cache, level, deformation, occlusion_map))
        return render_at_output_size(output, cache)

    def level_features(self, cache: Dict[str, torch.Tensor], kp_source: KP, kp_driving: KP) -> List[torch.Tensor]:
        """The attended skips ``[G_0, ..., G_L]`` of one batch of frames (inspection and tests)."""
        cache, motion = self._motion(cache, kp_source, kp_driving)
        return [self.attend_level(cache, level, motion.get("deformation"), motion.get("occlusion_map"))
                for level in range(self.num_levels)]
