"""The :class:`DaGAN` module: owns the face-depth network, the RGB-D keypoint detector and the generator,
and exposes the official demo path as three calls (``estimate_depth``, ``detect_keypoints``, ``animate``); the
per-frame step is two halves, :meth:`DaGAN.drive` (driving depth and keypoints) and :meth:`DaGAN.render` (the
generator moved by normalised keypoints), so a caller can put its own motion stage between them.
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterator, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

from ..config import Config, ModelConfig, load_config
from ..errors import InputError
from .depth import DepthDecoder, DepthEncoder
from .discriminator import MultiScaleDiscriminator
from .generator import DepthAwareGenerator, SPADEDepthAwareGenerator
from .keypoints import KPDetector

logger = logging.getLogger("dagan")
KP = Dict[str, torch.Tensor]


def build_generator(cfg: ModelConfig) -> nn.Module:
    """The generator named by ``cfg.generator.type`` (one registry, one definition per network)."""
    g = cfg.generator
    kwargs = dict(num_channels=cfg.num_channels, num_kp=cfg.num_kp, block_expansion=g.block_expansion,
                  max_features=g.max_features, num_down_blocks=g.num_down_blocks,
                  num_bottleneck_blocks=g.num_bottleneck_blocks, estimate_occlusion_map=g.estimate_occlusion_map,
                  dense_motion_params=dict(block_expansion=g.dense_motion.block_expansion,
                                           max_features=g.dense_motion.max_features,
                                           num_blocks=g.dense_motion.num_blocks,
                                           scale_factor=g.dense_motion.scale_factor,
                                           kp_variance=g.dense_motion.kp_variance),
                  estimate_jacobian=cfg.estimate_jacobian, attention=g.attention, attention_chunk=g.attention_chunk)
    if g.type == "DepthAwareGenerator":
        return DepthAwareGenerator(**kwargs)
    if g.type == "SPADEDepthAwareGenerator":
        return SPADEDepthAwareGenerator(**kwargs, spade_hidden=g.spade_hidden, output_blend=g.output_blend)
    if g.type == "DaGANPPGenerator":
        from .generator_pp import DaGANPPGenerator

        return DaGANPPGenerator(**kwargs, attention_window=g.attention_window,
                                attention_full_max=g.attention_full_max)
    raise ValueError(f"unknown generator type {g.type!r}")


def build_discriminator(cfg: ModelConfig) -> MultiScaleDiscriminator:
    d = cfg.discriminator
    return MultiScaleDiscriminator(scales=d.scales, num_channels=cfg.num_channels, block_expansion=d.block_expansion,
                                   num_blocks=d.num_blocks, max_features=d.max_features, sn=d.sn, use_kp=d.use_kp,
                                   num_kp=cfg.num_kp, kp_variance=d.kp_variance)


def convex_hull_area(points: np.ndarray) -> float:
    """Area of the 2-D convex hull of ``(N, 2)`` points (0 for degenerate sets)."""
    from scipy.spatial import ConvexHull, QhullError

    try:
        return float(ConvexHull(points).volume)
    except (QhullError, ValueError):
        return 0.0


def movement_scale(kp_source_value: Any, kp_initial_value: Any) -> float:
    """The official adapt-movement scale ``sqrt(area(hull(kp_s))) / sqrt(area(hull(kp_d0)))`` of batch item 0
    (1.0 when a hull is degenerate). ``kp_*_value``: ``(B, K, 2)`` tensors or arrays.

    Not a tensor operation: computed once per source/anchor, outside the per-frame step (and outside exported
    graphs, which take it as an input)."""
    def first_points(value: Any) -> np.ndarray:
        if isinstance(value, torch.Tensor):
            value = value.detach().float().cpu().numpy()
        value = np.asarray(value, dtype=np.float64)
        return value.reshape(-1, value.shape[-2], 2)[0]

    src = convex_hull_area(first_points(kp_source_value))
    drv = convex_hull_area(first_points(kp_initial_value))
    return float(np.sqrt(src) / np.sqrt(drv)) if src > 0 and drv > 0 else 1.0


def anchor_motion(kp_source: Dict[str, Any], kp_anchor: Dict[str, Any], relative: bool = True,
                  adapt_movement_scale: bool = True) -> Tuple[Dict[str, Any], float]:
    """The one anchor and movement-scale set-up of relative motion, done once per source and anchor frame
    (:meth:`DaGAN.animate`, :class:`~dagan.Animator`, the export and :func:`normalize_kp` use it).

    ``kp_source``/``kp_anchor``: keypoints ``{"value": (B, K, 2), "jacobian": (B, K, 2, 2)}`` as tensors or
    arrays (the ONNX runner's). Returns the anchor's keypoints (batch item 0, float32, ``value`` and
    ``jacobian`` only) and the movement scale: :func:`movement_scale` for relative motion with
    ``adapt_movement_scale``, else 1.0 (absolute keypoints are never scaled)."""
    def first(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value[:1].detach().float()
        return np.ascontiguousarray(np.asarray(value)[:1], dtype=np.float32)

    kp = {k: first(v) for k, v in kp_anchor.items() if k in ("value", "jacobian")}
    scale = movement_scale(kp_source["value"], kp["value"]) if relative and adapt_movement_scale else 1.0
    return kp, scale


def relative_motion(kp_source: KP, kp_driving: KP, kp_initial: KP, scale: Union[float, torch.Tensor] = 1.0) -> KP:
    """Relative keypoint motion of the official demo, tensor ops only (traceable):
    ``value = (kp_d - kp_d0) * scale + kp_s`` ``(B, K, 2)`` and ``jacobian = J_d inv(J_d0) J_s`` ``(B, K, 2, 2)``;
    ``kp_initial``/``kp_source`` of batch 1 broadcast over the driving batch. Runs in float32 (the 2x2 inverses
    have no low-precision kernels), also under autocast."""
    device_type = kp_driving["value"].device.type
    region = (torch.autocast(device_type=device_type, enabled=False) if torch.is_autocast_enabled(device_type)
              else contextlib.nullcontext())
    with region:
        kp_source, kp_driving, kp_initial = ({k: v.float() for k, v in kp.items()}
                                             for kp in (kp_source, kp_driving, kp_initial))
        kp_new = {"value": (kp_driving["value"] - kp_initial["value"]) * scale + kp_source["value"]}
        if "jacobian" in kp_driving:
            jd = torch.matmul(kp_driving["jacobian"], torch.inverse(kp_initial["jacobian"]))
            kp_new["jacobian"] = torch.matmul(jd, kp_source["jacobian"])
    return kp_new


def normalize_kp(kp_source: KP, kp_driving: KP, kp_driving_initial: KP, relative: bool = True,
                 adapt_movement_scale: Union[bool, float, torch.Tensor] = True
                 ) -> Tuple[KP, Union[float, torch.Tensor]]:
    """Motion normalisation of the official demo (the one implementation; :meth:`DaGAN.drive` uses it):
    :func:`relative_motion` when ``relative``, else the driving keypoints unchanged.

    ``adapt_movement_scale``: True computes :func:`movement_scale` of the source and the anchor (relative
    motion only; absolute keypoints are not scaled), False means 1, a float or a ``(1,)`` tensor is used as
    is (exported graphs take it as an input).

    Returns the normalised keypoints and the scale used.
    """
    if isinstance(adapt_movement_scale, bool):
        scale = anchor_motion(kp_source, kp_driving_initial, relative, adapt_movement_scale)[1]
    elif isinstance(adapt_movement_scale, torch.Tensor):
        scale = adapt_movement_scale
    else:
        scale = float(adapt_movement_scale)
    if not relative:
        return {k: v for k, v in kp_driving.items() if k in ("value", "jacobian")}, scale
    return relative_motion(kp_source, kp_driving, kp_driving_initial, scale), scale


@dataclass
class SourceState:
    """Everything computed once per source portrait (see :meth:`DaGAN.prepare_source`)."""

    image: torch.Tensor  # (1, 3, H, W)
    depth: Optional[torch.Tensor]  # (1, 1, H, W); None where only the per-frame step needs the state
    kp: KP
    cache: Dict[str, torch.Tensor]


def _check_frames(frames: Any, name: str, channels: int = 3) -> torch.Tensor:
    if not isinstance(frames, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor of shape (B, {channels}, H, W), got {type(frames).__name__}")
    if frames.dim() != 4 or frames.shape[1] != channels:
        raise InputError(f"{name} must have shape (B, {channels}, H, W), got {tuple(frames.shape)}")
    if not frames.is_floating_point():
        raise InputError(f"{name} must be a float tensor in [0, 1], got dtype {frames.dtype}")
    return frames


class DaGAN(nn.Module):
    """Depth-aware talking-head model (DaGAN, or DaGAN++ with ``config.model.type == "daganpp"``).

    Sub-modules (names match the official files after loading): ``depth_encoder``, ``depth_decoder``,
    ``kp_detector``, ``generator``.

    Example::

        >>> model = DaGAN(load_config("configs/dagan-tiny.yaml"))
        >>> video = model.animate(source, driving)   # (1,3,H,W), (T,3,H,W) -> (T,3,H,W)
    """

    def __init__(self, config: Union[Config, ModelConfig, Dict[str, Any], str, os.PathLike]):
        super().__init__()
        cfg = load_config(config).model if not isinstance(config, ModelConfig) else config
        self.config = cfg
        # (keypoint, landmark) pairs of a model trained with keypoints on face landmarks (model.kp_landmarks;
        # the face guide moves those keypoints with their landmarks)
        self.kp_landmarks: Tuple[Tuple[int, int], ...] = tuple((int(k), int(m)) for k, m in cfg.kp_landmarks)
        self.depth_encoder = DepthEncoder(cfg.depth.num_layers, cfg.depth.pretrained_encoder)
        self.depth_decoder = DepthDecoder(self.depth_encoder.num_ch_enc, scales=cfg.depth.scales)
        k = cfg.kp_detector
        self.kp_detector = KPDetector(block_expansion=k.block_expansion, num_kp=cfg.num_kp,
                                      num_channels=cfg.num_channels + 1, max_features=k.max_features,
                                      num_blocks=k.num_blocks, temperature=k.temperature,
                                      estimate_jacobian=cfg.estimate_jacobian, scale_factor=k.scale_factor,
                                      single_jacobian_map=k.single_jacobian_map, pad=k.pad)
        self.generator = build_generator(cfg)
        self.eval()

    # -------------------------------------------------------------------------------------- basics
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def image_size(self) -> int:
        return self.config.image_size

    def estimate_depth(self, frames: torch.Tensor) -> torch.Tensor:
        """Face depth (sigmoid disparity, larger = nearer) of ``(B, 3, H, W)`` frames in [0, 1] ->
        ``(B, 1, H, W)`` in (0, 1). ``H`` and ``W`` must be multiples of 32."""
        frames = _check_frames(frames, "frames")
        if frames.shape[2] % 32 or frames.shape[3] % 32 or min(frames.shape[2:]) < 64:
            raise InputError(f"frame size must be a multiple of 32 and at least 64 for the depth network, got "
                             f"{tuple(frames.shape[2:])}")
        return self.depth_decoder(self.depth_encoder(frames))[("disp", 0)]

    def detect_keypoints(self, frames: torch.Tensor, depth: Optional[torch.Tensor] = None) -> KP:
        """RGB-D keypoints: ``{"value": (B, K, 2) in [-1, 1], "jacobian": (B, K, 2, 2)}``.

        ``depth`` ``(B, 1, H, W)`` is estimated when not given.
        """
        frames = _check_frames(frames, "frames")
        if depth is None:
            depth = self.estimate_depth(frames)
        out = self.kp_detector(torch.cat([frames, depth.to(frames.dtype)], dim=1))
        return {k: v for k, v in out.items() if k in ("value", "jacobian")}

    # ------------------------------------------------------------------------------------- animate
    def prepare_source(self, source: torch.Tensor, source_full: Optional[torch.Tensor] = None) -> SourceState:
        """Depth, keypoints and generator features of a ``(1, 3, H, W)`` source, computed once.

        ``source_full`` ``(1, 3, H', W')``: the same portrait at the output resolution; predictions then come
        out at ``H' x W'`` (see :func:`~dagan.models.generator.render_output`)."""
        source = _check_frames(source, "source")
        if source.shape[0] != 1:
            raise InputError(f"source must hold exactly one image, got a batch of {source.shape[0]}")
        depth = self.estimate_depth(source)
        kp = self.detect_keypoints(source, depth)
        cache = self.generator.encode_source(source, depth)
        if source_full is not None:
            source_full = _check_frames(source_full, "source_full")
            if source_full.shape[0] != 1:
                raise InputError(f"source_full must hold exactly one image, got a batch of {source_full.shape[0]}")
            cache["source_full"] = source_full.to(source.device)
        return SourceState(source, depth, kp, cache)

    def drive(self, state: SourceState, driving: torch.Tensor) -> Dict[str, Any]:
        """The driving half of the per-frame step: depth and keypoints of the driving frames. What moves the
        source is the caller's to decide (:func:`normalize_kp` in :meth:`animate_batch`; the face guide in
        :class:`~dagan.Animator`), then :meth:`render` draws it.

        ``state``: from :meth:`prepare_source`; ``driving``: ``(T, 3, H, W)`` in [0, 1], the size of
        ``state.image``. Returns ``{"driving_depth": (T, 1, H, W), "kp_driving": {"value": (T, K, 2),
        "jacobian": (T, K, 2, 2)}}`` (keypoints in float32).
        """
        driving = _check_frames(driving, "driving")
        if driving.shape[2:] != state.image.shape[2:]:
            raise InputError(f"driving frames are {tuple(driving.shape[2:])} but the source is "
                             f"{tuple(state.image.shape[2:])}: resize them to the same size")
        depth = self.estimate_depth(driving)
        kp_driving = {k: v.float() for k, v in self.detect_keypoints(driving, depth).items()}
        return {"driving_depth": depth, "kp_driving": kp_driving}

    def render(self, state: SourceState, kp_norm: KP) -> Dict[str, torch.Tensor]:
        """The render half of the per-frame step: the generator from the cached source features, moved by the
        normalised (source-frame) keypoints ``kp_norm`` (``{"value": (T, K, 2), "jacobian": (T, K, 2, 2)}``).
        Returns the generator's dict: ``prediction (T, 3, O, O)`` (``O``: the size of the source's
        ``source_full`` when :meth:`prepare_source` got one, else ``H``), ``deformation``, ``occlusion_map``, ..."""
        return self.generator.generate(state.cache, state.kp, kp_norm)

    def render_motion(self, state: SourceState, deformation: torch.Tensor,
                      occlusion_map: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """The generator moved by a dense motion instead of keypoints: ``deformation`` ``(T, h, w, 2)``
        (``grid_sample`` coordinates into the source), ``occlusion_map`` ``(T, 1, h', w')`` in [0, 1] (0: the
        decoder must draw it). Returns the generator's dict (``prediction``; ``prediction_model`` at the
        network's size when the source has a ``source_full``). Generators without a dense-motion decoder
        (DaGAN++) raise :class:`~dagan.errors.InputError`."""
        if not hasattr(self.generator, "decode_motion"):
            raise InputError(f"the {type(self.generator).__name__} generator renders from keypoints only")
        return self.generator.decode_motion(state.cache, deformation, occlusion_map)

    def animate_batch(self, state: SourceState, driving: torch.Tensor, kp_driving_initial: Optional[KP] = None,
                      relative: bool = True, adapt_movement_scale: Union[bool, float, torch.Tensor] = True,
                      return_details: bool = False):
        """The per-frame step of keypoint motion (used by :meth:`animate`, the exported frame graph and the
        benchmarks): :meth:`drive`, :func:`normalize_kp`, :meth:`render`.

        Args:
            state: from :meth:`prepare_source`.
            driving: ``(T, 3, H, W)`` in [0, 1], the size of ``state.image``.
            kp_driving_initial: the anchor of relative motion, ``{"value": (1, K, 2), "jacobian": (1, K, 2, 2)}``
                (default: the first frame of ``driving``).
            relative: relative motion (:func:`relative_motion`) or absolute driving keypoints.
            adapt_movement_scale: True computes :func:`movement_scale` of the source and the anchor, False
                means 1, a float or a ``(1,)`` tensor is used as is (exported graphs take it as an input).
            return_details: return the generator's dict plus ``driving_depth``, ``kp_driving``, ``kp_norm``
                and ``adapt_movement_scale`` instead of the predictions ``(T, 3, O, O)``.
        """
        motion = self.drive(state, driving)
        if kp_driving_initial is None:
            kp_driving_initial = {k: v[:1] for k, v in motion["kp_driving"].items()}
        kp_norm, scale = normalize_kp(state.kp, motion["kp_driving"], kp_driving_initial, relative,
                                      adapt_movement_scale)
        out = self.render(state, kp_norm)
        if not return_details:
            return out["prediction"]
        out.update(motion, kp_norm=kp_norm, adapt_movement_scale=scale)
        return out

    @torch.no_grad()
    def animate(self, source: torch.Tensor, driving: torch.Tensor, relative: bool = True,
                adapt_movement_scale: bool = True, batch_size: int = 1, return_details: bool = False):
        """The official demo computation: animate ``source (1, 3, H, W)`` with ``driving (T, 3, H, W)``,
        both in [0, 1]; the first driving frame anchors relative motion.

        Returns ``(T, 3, H, W)`` in (0, 1), or with ``return_details`` a dict of stacked intermediates
        (``prediction``, ``deformation``, ``occlusion_map``, ``kp_norm``, ...).
        """
        driving = _check_frames(driving, "driving")
        if driving.shape[0] == 0:
            raise InputError("driving video has no frames")
        state = self.prepare_source(source)
        # the hull-area scale depends only on the source and the anchor: set up once, not per batch
        kp_initial, scale = anchor_motion(state.kp, self.detect_keypoints(driving[:1]), relative,
                                          adapt_movement_scale)
        outs = [self.animate_batch(state, chunk, kp_initial, relative, scale, return_details)
                for chunk in driving.split(max(1, int(batch_size)))]
        if not return_details:
            return torch.cat(outs)
        return _stack_details(outs)

    # ---------------------------------------------------------------------------------- checkpoints
    @classmethod
    def from_official(cls, config, checkpoint, depth_encoder=None, depth_decoder=None, depth_dir=None,
                      map_location: Union[str, torch.device] = "cpu", trust_checkpoint: bool = False,
                      strict: bool = True) -> "DaGAN":
        """Load official DaGAN files (config YAML, ``checkpoint.pth.tar``, monodepth2-style
        ``encoder.pth``/``depth.pth``). See :func:`dagan.checkpoints.load_official`."""
        from ..checkpoints import load_official

        return load_official(cls, config, checkpoint, depth_encoder=depth_encoder, depth_decoder=depth_decoder,
                             depth_dir=depth_dir, map_location=map_location, trust_checkpoint=trust_checkpoint,
                             strict=strict)

    @classmethod
    def from_pretrained(cls, path: Union[str, os.PathLike], map_location: Union[str, torch.device] = "cpu",
                        trust_checkpoint: bool = False) -> "DaGAN":
        """Load our own format (a directory written by :meth:`save_pretrained`, or a single ``.pt`` file,
        training checkpoints included). No other argument is needed: the config travels with the weights."""
        from ..checkpoints import load_pretrained

        return load_pretrained(cls, path, map_location=map_location, trust_checkpoint=trust_checkpoint)

    def save_pretrained(self, path: Union[str, os.PathLike], safetensors: bool = False,
                        config: Optional[Config] = None, provenance: Optional[Dict[str, Any]] = None,
                        half: bool = False) -> str:
        """Write config + weights to directory ``path`` (atomically); returns the path. ``config`` (the full
        training config) and ``provenance`` make the directory self-describing (see
        :func:`dagan.checkpoints.save_pretrained`)."""
        from ..checkpoints import save_pretrained

        return save_pretrained(self, path, safetensors=safetensors, config=config, provenance=provenance, half=half)

    def iter_submodules(self) -> Iterator[Tuple[str, nn.Module]]:
        for name in ("depth_encoder", "depth_decoder", "kp_detector", "generator"):
            yield name, getattr(self, name)


def _stack_details(outs):
    details: Dict[str, Any] = {}
    for key in outs[0]:
        first = outs[0][key]
        if isinstance(first, torch.Tensor):
            details[key] = torch.cat([o[key] for o in outs])
        elif isinstance(first, dict):
            details[key] = {k: torch.cat([o[key][k] for o in outs]) for k in first}
        else:
            details[key] = first
    return details
