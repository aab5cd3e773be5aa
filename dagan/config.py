"""Typed configuration: dataclasses for the model, dataset and training, YAML in and out.

Two file formats are read:

* **ours** (``configs/*.yaml``): top-level sections ``model``, ``dataset``, ``train`` (and further task
  sections), mirroring the dataclasses below one to one;
* **official DaGAN / FOMM** files: ``model_params`` with ``common_params``, ``kp_detector_params``,
  ``generator_params`` (incl. ``dense_motion_params``) and ``discriminator_params``, plus
  ``dataset_params`` and ``train_params``. Sections the toolkit has no use for (``animate_params``,
  ``visualizer_params``, ...) are kept out of the typed config.

Unknown keys and values of the wrong type raise :class:`~dagan.errors.ConfigError` naming the full key
(``model.generator.block_expansion``), so a typo never silently falls back to a default.

A file of ours may start from another one: ``base: dagan-tiny.yaml`` (a path relative to the file; when
there is no such file, the shipped config of that name in the repository's ``configs/``) loads that file
first and deep-merges the rest of this one over it (mappings merge key by key; lists and scalars replace),
so variants hold only their differences. Saved configs are always written fully resolved.

Example::

    >>> from dagan.config import load_config
    >>> cfg = load_config("configs/dagan-vox-256.yaml")
    >>> cfg.model.num_kp
    15
"""
from __future__ import annotations

import dataclasses
import logging
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

import yaml

from .errors import ConfigError

logger = logging.getLogger("dagan")
GENERATOR_TYPES = ("DepthAwareGenerator", "SPADEDepthAwareGenerator", "DaGANPPGenerator")
MODEL_TYPES = ("dagan", "daganpp")


# ----------------------------------------------------------------------------------------------- model
@dataclass
class DepthConfig:
    """Face-depth network (monodepth2-style ResNet encoder + multi-scale disparity decoder)."""

    num_layers: int = 18  # 18 (official weights_19), 50, or 10 (light, for small CPU models)
    scales: List[int] = field(default_factory=lambda: [0, 1, 2, 3])
    pretrained_encoder: bool = False  # ImageNet init of the ResNet (needs torchvision weights on disk)
    uncertainty: bool = False  # DaGAN++: pose net predicts per-pixel uncertainty maps (training only)


@dataclass
class KeypointConfig:
    """RGB-D keypoint detector (hourglass at ``scale_factor`` of the input, soft-argmax, Jacobians)."""

    block_expansion: int = 32
    max_features: int = 1024
    num_blocks: int = 5
    temperature: float = 0.1
    scale_factor: float = 0.25
    pad: int = 0
    single_jacobian_map: bool = False


@dataclass
class DenseMotionConfig:
    """Dense motion network (FOMM hourglass over keypoint heatmaps and deformed sources)."""

    block_expansion: int = 64
    max_features: int = 1024
    num_blocks: int = 5
    scale_factor: float = 0.25
    kp_variance: float = 0.01


@dataclass
class GeneratorConfig:
    """Depth-aware generator. ``type`` picks the decoder: plain, SPADE, or DaGAN++ multi-level."""

    type: str = "DepthAwareGenerator"
    block_expansion: int = 64
    max_features: int = 512
    num_down_blocks: int = 2
    num_bottleneck_blocks: int = 6
    estimate_occlusion_map: bool = True
    dense_motion: DenseMotionConfig = field(default_factory=DenseMotionConfig)
    # attention implementation: "sdpa" (fused, never materialises HWxHW in fp32 when a kernel exists),
    # "chunked" (queries in blocks), or "plain" (the official formula; reference only)
    attention: str = "sdpa"
    attention_chunk: int = 4096
    # DaGAN++ only: window side for local attention at levels larger than attention_full_max (0 = full)
    attention_window: int = 16
    attention_full_max: int = 64 * 64
    spade_hidden: int = 128
    # SPADE decoder only, not in the official model: blend the output with the warped source image through a
    # learned per-pixel mask (see SPADEDepthAwareGenerator)
    output_blend: bool = False


@dataclass
class DiscriminatorConfig:
    """Multi-scale patch discriminator (pix2pix-like), optionally conditioned on keypoint heatmaps."""

    scales: List[float] = field(default_factory=lambda: [1])
    block_expansion: int = 32
    max_features: int = 512
    num_blocks: int = 4
    use_kp: bool = True
    sn: bool = False
    kp_variance: float = 0.01


@dataclass
class ModelConfig:
    """Everything that shapes the networks; saved with the weights."""

    type: str = "dagan"
    image_size: int = 256
    num_kp: int = 15
    num_channels: int = 3
    estimate_jacobian: bool = True
    depth: DepthConfig = field(default_factory=DepthConfig)
    kp_detector: KeypointConfig = field(default_factory=KeypointConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    # [[keypoint, landmark], ...]: keypoints trained to sit on these of the 68 face landmarks
    # (train.kp_landmarks); the face guide moves them with their landmarks
    kp_landmarks: List[List[int]] = field(default_factory=list)


# --------------------------------------------------------------------------------------- dataset/train
@dataclass
class TransformConfig:
    sigma_affine: float = 0.05
    sigma_tps: float = 0.005
    points_tps: int = 5


@dataclass
class AugmentationConfig:
    horizontal_flip: bool = True
    time_flip: bool = True
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1
    hue: float = 0.1
    # geometric jitter, identical on both frames: zoom factor drawn in [zoom[0], zoom[1]] (> 1 zooms in),
    # shift of up to ``translate`` x the frame size; the defaults leave frames untouched
    zoom: List[float] = field(default_factory=lambda: [1.0, 1.0])
    translate: float = 0.0
    # "new face shapes": one random smooth warp (affine + TPS) applied identically to every frame of a
    # sample. The motion between the frames is kept, the face's proportions change: with few identities it
    # keeps the keypoint detector and the decoder from memorising them. None (default) = off.
    shape_warp: Optional[TransformConfig] = None


@dataclass
class DatasetConfig:
    root_dir: str = ""
    frame_shape: List[int] = field(default_factory=lambda: [256, 256, 3])
    id_sampling: bool = False
    num_repeats: int = 1
    mode: str = "videos"  # "videos" | "image_pairs" | "mixed"
    image_dirs: List[str] = field(default_factory=list)  # portraits for "image_pairs" / "mixed"
    image_pairs_fraction: float = 0.0
    # the random smooth warp that makes a source/driving pair from one still image (small: mostly teaches the
    # generator to copy the source's appearance; large: also teaches the motion path, less precisely)
    image_pairs_warp: TransformConfig = field(
        default_factory=lambda: TransformConfig(sigma_affine=0.08, sigma_tps=0.01, points_tps=3))
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    max_frame_gap: int = 0  # depth training: neighbour distance (0 = unrestricted for generator pairs)
    num_workers: int = 0
    # flat roots (no train/ test/ subfolders): names held out as the test split (empty = 1 in 5 by hash)
    test_videos: List[str] = field(default_factory=list)
    exclude_videos: List[str] = field(default_factory=list)  # names dropped from both splits


@dataclass
class LossWeights:
    generator_gan: float = 1.0
    discriminator_gan: float = 1.0
    feature_matching: List[float] = field(default_factory=lambda: [10.0, 10.0, 10.0, 10.0])
    perceptual: List[float] = field(default_factory=lambda: [10.0, 10.0, 10.0, 10.0, 10.0])
    equivariance_value: float = 10.0
    equivariance_jacobian: float = 10.0
    kp_distance: float = 10.0
    kp_prior: float = 0.0
    kp_scale: float = 0.0
    depth_constraint: float = 0.0
    kp_landmarks: float = 0.0  # L1 of the keypoints listed in train.kp_landmarks to their face landmarks
    # mouth terms on video pairs (landmarks found offline): the output-blend mask inside the driving frame's
    # mouth (pushed down: the decoder renders the mouth), and L1 over the mouth
    mouth_blend: float = 0.0
    mouth_l1: float = 0.0
    # offline substitute for the VGG pyramid when no VGG19 weights are on disk (see README)
    l1_pyramid: float = 0.0
    ssim_pyramid: float = 0.0


@dataclass
class TrainConfig:
    num_epochs: int = 150
    num_repeats: int = 75
    epoch_milestones: List[int] = field(default_factory=list)
    lr_generator: float = 2.0e-4
    lr_discriminator: float = 2.0e-4
    lr_kp_detector: float = 2.0e-4
    batch_size: int = 4
    scales: List[float] = field(default_factory=lambda: [1, 0.5, 0.25, 0.125])
    transform_params: TransformConfig = field(default_factory=TransformConfig)
    loss_weights: LossWeights = field(default_factory=LossWeights)
    perceptual_backbone: str = "vgg19"  # "vgg19" (needs weights) | "none" (use l1/ssim pyramid)
    vgg19_weights: Optional[str] = None
    seed: int = 0
    max_steps: int = 0  # 0 = run the epochs
    log_every: int = 10
    image_every: int = 100
    save_every: int = 500
    # also keep checkpoint-<step>.pt every keep_every steps (0 = never), the last keep_last of them (0 = all):
    # the checkpoints train.py --export --average takes
    keep_every: int = 0
    keep_last: int = 0
    amp: bool = False
    amp_dtype: str = "auto"  # auto | bfloat16 | float16
    grad_clip: float = 0.0
    max_bad_steps: int = 10
    train_depth: bool = False  # joint training of the depth network (DaGAN freezes it)
    depth_checkpoint: Optional[str] = None
    init_checkpoint: Optional[str] = None  # fine-tune from our or an official checkpoint
    # only these networks of init_checkpoint (e.g. [kp_detector, depth_encoder, depth_decoder]); empty = all.
    # Lets a run with a new generator start from a previous run's keypoint detector.
    init_networks: List[str] = field(default_factory=list)
    # parameters the config adds to init_checkpoint's networks (key prefixes, e.g.
    # generator.decoder.conv_blend): they may be missing from the file and keep their fresh initialisation
    init_new_keys: List[str] = field(default_factory=list)
    # train at the output resolution (0 = off): the dataset gives frames of this size (dataset.frame_shape),
    # the networks see them downsampled to model.image_size, and the prediction the losses compare with the
    # full-size driving frame is rendered at this size (warped full-size source + blend), as at inference
    output_size: int = 0
    # [[keypoint, landmark], ...]: tie these keypoints to these of the 68 dlib face landmarks (found once per
    # training clip, offline, cached in landmark_cache or ~/.cache/dagan/landmarks), weighted by
    # loss_weights.kp_landmarks. Unsupervised keypoints of a small model need not land on the mouth, and then
    # no keypoint moves when the mouth opens; a keypoint tied to the lower lip does
    kp_landmarks: List[List[int]] = field(default_factory=list)
    landmark_cache: str = ""
    # loss_weights.mouth_blend only where the two mouths open differently (weighted by losses.mouth_change),
    # so the sharp source mouth is still copied when the driver's matches it
    mouth_blend_on_change: bool = False


@dataclass
class DepthTrainConfig:
    """Self-supervised face-depth training (monodepth2-style, see ``face_depth.md``)."""

    lr: float = 1.0e-4
    batch_size: int = 8
    num_epochs: int = 20
    step_milestones: List[int] = field(default_factory=lambda: [15])
    frame_ids: List[int] = field(default_factory=lambda: [0, -1, 1])
    scales: List[int] = field(default_factory=lambda: [0, 1, 2, 3])
    min_depth: float = 0.1
    max_depth: float = 100.0
    ssim_weight: float = 0.85
    smoothness_weight: float = 1.0e-3
    automask: bool = True
    intrinsics: str = "learned"  # learned | fixed
    fixed_focal: float = 1.0  # fx = fy = fixed_focal * width when intrinsics == fixed
    uncertainty: bool = False  # DaGAN++ uncertainty-aware photometric loss
    # weight of the sparse landmark depth loss: each training clip's face shape recovered from its own
    # landmark tracks (shape from motion, dagan.training.face_sfm); 0 = the plain photometric recipe
    landmark_weight: float = 0.0
    landmark_cache: str = ""  # where the per-clip landmarks are cached ("" = ~/.cache/dagan/landmarks)
    seed: int = 0
    max_steps: int = 0
    log_every: int = 10
    image_every: int = 100
    save_every: int = 500
    keep_every: int = 0  # as train.keep_every / keep_last
    keep_last: int = 0
    amp: bool = False
    amp_dtype: str = "auto"
    grad_clip: float = 0.0
    max_bad_steps: int = 10


@dataclass
class Config:
    """The whole config of a run. ``task`` says what ``train.py`` does with it."""

    task: str = "generator"  # generator | depth
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    depth_train: DepthTrainConfig = field(default_factory=DepthTrainConfig)
    # written by train.py --export: source run, step, averaged checkpoints, weights file and its sha256.
    # Describes a model; training ignores it (a new run starts with none)
    provenance: Dict[str, Any] = field(default_factory=dict)


#: keys that older files and checkpoints hold but nothing reads any more: skipped (logged) when reading
_RETIRED_KEYS = {"TrainConfig": ("checkpoint_freq",), "DatasetConfig": ("pairs_list", "frames_per_sample")}


# ------------------------------------------------------------------------------------------- parsing
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (recursing into dataclasses/lists), or raise."""
    origin = typing.get_origin(tp)
    if origin in (Union, getattr(types, "UnionType", Union)):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping (section), got {type(value).__name__}")
        return _from_dict(tp, value, key)
    if origin in (list, List, tuple, Tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {type(value).__name__} {value!r}")
        (item_tp,) = typing.get_args(tp)[:1] or (Any,)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {type(value).__name__}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected true/false, got {type(value).__name__} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"config key '{key}': expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}': expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}': expected a string, got {type(value).__name__} {value!r}")
        return value
    return value


def _from_dict(cls: Any, data: Dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key in _RETIRED_KEYS.get(cls.__name__, ()):
            logger.info("config key '%s' is no longer used: ignored", full)
            continue
        if key not in names:
            close = [n for n in names if n.replace("_", "") == str(key).replace("_", "").replace("-", "")]
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(sorted(names))})"
            raise ConfigError(f"unknown config key '{full}'{hint}")
        kwargs[key] = _coerce(value, hints[key], full)
    obj = cls(**kwargs)
    _validate(obj, prefix)
    return obj


def _validate(obj: Any, prefix: str) -> None:
    """Value checks that types alone cannot express."""

    def bad(key: str, msg: str) -> None:
        raise ConfigError(f"config key '{prefix + '.' if prefix else ''}{key}': {msg}")

    if isinstance(obj, ModelConfig):
        if obj.type not in MODEL_TYPES:
            bad("type", f"must be one of {MODEL_TYPES}, got {obj.type!r}")
        if obj.num_kp < 1:
            bad("num_kp", f"must be >= 1, got {obj.num_kp}")
        if obj.image_size < 64 or obj.image_size % 32:
            bad("image_size", f"must be a multiple of 32 and at least 64 (the depth network needs it), "
                              f"got {obj.image_size}")
        if obj.num_channels != 3:
            bad("num_channels", f"only RGB (3) is supported, got {obj.num_channels}")
        for pair in obj.kp_landmarks:
            if len(pair) != 2 or not 0 <= pair[0] < obj.num_kp or not 0 <= pair[1] < 68:
                bad("kp_landmarks", f"{pair} is not [keypoint < {obj.num_kp}, landmark < 68]")
        if obj.type == "daganpp" and obj.generator.type != "DaGANPPGenerator":
            obj.generator.type = "DaGANPPGenerator"
        if obj.generator.type == "DaGANPPGenerator" and obj.generator.block_expansion < 8:
            bad("generator.block_expansion", "DaGAN++ attends at every level (projects to C/8): must be >= 8, "
                f"got {obj.generator.block_expansion}")
    elif isinstance(obj, DepthConfig):
        if obj.num_layers not in (10, 18, 34, 50, 101, 152):
            bad("num_layers", f"must be a ResNet depth (10, 18, 34, 50, 101, 152), got {obj.num_layers}")
        if not obj.scales or any(s not in (0, 1, 2, 3) for s in obj.scales) or 0 not in obj.scales:
            bad("scales", f"must be a subset of [0, 1, 2, 3] containing 0, got {obj.scales}")
    elif isinstance(obj, GeneratorConfig):
        if obj.type not in GENERATOR_TYPES:
            bad("type", f"must be one of {GENERATOR_TYPES}, got {obj.type!r}")
        if obj.attention not in ("sdpa", "chunked", "plain"):
            bad("attention", f"must be 'sdpa', 'chunked' or 'plain', got {obj.attention!r}")
        if obj.output_blend and obj.type != "SPADEDepthAwareGenerator":
            bad("output_blend", f"is only available with type SPADEDepthAwareGenerator, not {obj.type!r}")
        for key in ("block_expansion", "max_features", "num_down_blocks"):
            if getattr(obj, key) < 1:
                bad(key, f"must be >= 1, got {getattr(obj, key)}")
        if min(obj.max_features, obj.block_expansion * 2 ** obj.num_down_blocks) < 8:
            bad("block_expansion", "the bottleneck needs >= 8 channels (attention projects to C/8)")
        for key in ("attention_window", "attention_full_max"):
            if getattr(obj, key) < 0:
                bad(key, f"must be >= 0, got {getattr(obj, key)}")
    elif isinstance(obj, KeypointConfig):
        if obj.temperature <= 0:
            bad("temperature", f"must be > 0, got {obj.temperature}")
        if not 0 < obj.scale_factor <= 1:
            bad("scale_factor", f"must be in (0, 1], got {obj.scale_factor}")
    elif isinstance(obj, DenseMotionConfig):
        if not 0 < obj.scale_factor <= 1:
            bad("scale_factor", f"must be in (0, 1], got {obj.scale_factor}")
    elif isinstance(obj, AugmentationConfig):
        if len(obj.zoom) != 2 or not 0 < obj.zoom[0] <= obj.zoom[1]:
            bad("zoom", f"must be [low, high] with 0 < low <= high, got {obj.zoom}")
        if not 0 <= obj.translate < 1:
            bad("translate", f"must be in [0, 1), got {obj.translate}")
    elif isinstance(obj, Config):
        if obj.task not in ("generator", "depth"):
            bad("task", f"must be 'generator' or 'depth', got {obj.task!r}")
    elif isinstance(obj, TrainConfig):
        if obj.batch_size < 1:
            bad("batch_size", f"must be >= 1, got {obj.batch_size}")
        if obj.perceptual_backbone not in ("vgg19", "none"):
            bad("perceptual_backbone", f"must be 'vgg19' or 'none', got {obj.perceptual_backbone!r}")
        known = ("depth_encoder", "depth_decoder", "kp_detector", "generator", "discriminator")
        for name in obj.init_networks:
            if name not in known:
                bad("init_networks", f"unknown network {name!r} (known: {', '.join(known)})")
    if isinstance(obj, (TrainConfig, DepthTrainConfig)):
        for key in ("keep_every", "keep_last"):
            if getattr(obj, key) < 0:
                bad(key, f"must be >= 0, got {getattr(obj, key)}")
    if isinstance(obj, DepthTrainConfig):
        if obj.intrinsics not in ("learned", "fixed"):
            bad("intrinsics", f"must be 'learned' or 'fixed', got {obj.intrinsics!r}")
        if 0 not in obj.frame_ids or len(obj.frame_ids) < 2:
            bad("frame_ids", f"must contain 0 and at least one neighbour, got {obj.frame_ids}")


def config_from_dict(data: Dict[str, Any], cls: Any = Config, prefix: str = "") -> Any:
    """Build a typed config from a plain dict (our format), validating every key."""
    if not isinstance(data, dict):
        raise ConfigError(f"config must be a mapping at the top level, got {type(data).__name__}")
    return _from_dict(cls, data, prefix)


def config_to_dict(cfg: Any) -> Dict[str, Any]:
    """Plain-dict form of any config dataclass (for YAML and checkpoints)."""
    return dataclasses.asdict(cfg)


# --------------------------------------------------------------------------------- official format
_OFFICIAL_SECTIONS_IGNORED = ("reconstruction_params", "animate_params", "visualizer_params", "train_params_depth")


def _pick(section: Dict[str, Any], allowed: Tuple[str, ...], where: str) -> Dict[str, Any]:
    unknown = sorted(set(section) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown config key '{where}.{unknown[0]}' in official config "
                          f"(known: {', '.join(allowed)})")
    return {k: v for k, v in section.items() if k in allowed}


def _section(data: Dict[str, Any], name: str, where: str) -> Dict[str, Any]:
    value = data.get(name) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"config key '{where}.{name}': expected a mapping, got {type(value).__name__}")
    return value


def official_to_dict(data: Dict[str, Any]) -> Dict[str, Any]:
    """Translate an official DaGAN/FOMM config (``model_params`` ...) into our dict layout."""
    mp = _section(data, "model_params", "")
    common = _pick(_section(mp, "common_params", "model_params"), ("num_kp", "num_channels", "estimate_jacobian"),
                   "model_params.common_params")
    kp = _pick(_section(mp, "kp_detector_params", "model_params"),
               ("temperature", "block_expansion", "max_features", "scale_factor", "num_blocks", "pad",
                "single_jacobian_map"), "model_params.kp_detector_params")
    gen_raw = dict(_section(mp, "generator_params", "model_params"))
    dm = _pick(_section(gen_raw, "dense_motion_params", "model_params.generator_params"),
               ("block_expansion", "max_features", "num_blocks", "scale_factor", "kp_variance"),
               "model_params.generator_params.dense_motion_params")
    gen_raw.pop("dense_motion_params", None)
    gen = _pick(gen_raw, ("block_expansion", "max_features", "num_down_blocks", "num_bottleneck_blocks",
                          "estimate_occlusion_map"), "model_params.generator_params")
    disc = _pick(_section(mp, "discriminator_params", "model_params"),
                 ("scales", "block_expansion", "max_features", "num_blocks", "use_kp", "sn", "kp_variance"),
                 "model_params.discriminator_params")
    model: Dict[str, Any] = dict(common)
    model.update(kp_detector=kp, generator=dict(gen, dense_motion=dm), discriminator=disc)

    out: Dict[str, Any] = {"model": model}
    ds = dict(_section(data, "dataset_params", ""))
    if ds:
        aug = ds.pop("augmentation_params", {}) or {}
        flat_aug = {}
        flat_aug.update(aug.get("flip_param", {}) or {})
        flat_aug.update(aug.get("jitter_param", {}) or {})
        ds = _pick(ds, ("root_dir", "frame_shape", "id_sampling", "pairs_list", "num_repeats"), "dataset_params")
        ds.pop("pairs_list", None)  # the official evaluation pairs: not a training setting
        ds["augmentation"] = flat_aug
        out["dataset"] = ds
        shape = ds.get("frame_shape")
        if isinstance(shape, (list, tuple)) and shape and isinstance(shape[0], int):
            model["image_size"] = shape[0]
    tp = dict(_section(data, "train_params", ""))
    if tp:
        out["train"] = _pick(tp, ("num_epochs", "num_repeats", "epoch_milestones", "lr_generator",
                                  "lr_discriminator", "lr_kp_detector", "batch_size", "scales", "checkpoint_freq",
                                  "transform_params", "loss_weights"), "train_params")
        out["train"].pop("checkpoint_freq", None)  # the official per-epoch saves; ours: train.save_every
    return out


def is_official(data: Dict[str, Any]) -> bool:
    return isinstance(data, dict) and "model_params" in data


def read_yaml(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """Read a YAML file with the safe loader; a clear ConfigError for missing/invalid files."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, "r", encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not a text file") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def merge_config_dicts(base: Dict[str, Any], override: Dict[str, Any]) -> Dict[str, Any]:
    """Deep merge: mappings merge key by key (recursively), anything else in ``override`` replaces."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_config_dicts(out[key], value)
        else:
            out[key] = value
    return out


#: The repository's ``configs/`` folder (beside the ``dagan`` package in a checkout or an editable install).
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
#: Environment variable: more folders (``os.pathsep``-separated) where a ``base:`` is looked for.
CONFIG_PATH_ENV = "DAGAN_CONFIG_PATH"


def base_candidates(name: str, folder: Union[str, os.PathLike] = ".") -> List[str]:
    """Every path where ``base: name`` of a config in ``folder`` is looked for, in order.

    Beside the file first (``name`` relative to ``folder``), then in each folder of ``$DAGAN_CONFIG_PATH``,
    then in the repository's ``configs/`` (as written, then by file name in ``configs/`` and its subfolders,
    so a config copied out of the repository still finds the shipped one it names). An absolute ``name`` is
    the one candidate.
    """
    if os.path.isabs(name):
        return [os.path.normpath(name)]
    out = [os.path.abspath(os.path.join(os.fspath(folder), name))]
    roots = [d for d in os.environ.get(CONFIG_PATH_ENV, "").split(os.pathsep) if d] + [CONFIGS_DIR]
    for root in roots:
        out.append(os.path.abspath(os.path.join(root, name)))
    if os.path.isdir(CONFIGS_DIR):
        leaf = os.path.basename(name)
        subfolders = sorted(e.path for e in os.scandir(CONFIGS_DIR) if e.is_dir())
        out.extend(os.path.join(d, leaf) for d in [CONFIGS_DIR] + subfolders)
    return list(dict.fromkeys(out))  # in order, each once


def find_base(name: str, folder: Union[str, os.PathLike] = ".") -> str:
    """The file ``base: name`` refers to (see :func:`base_candidates`); a ConfigError lists every place looked."""
    candidates = base_candidates(name, folder)
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise ConfigError(f"config key 'base': {name} not found; looked in: {', '.join(candidates)} "
                      f"(a base is found beside the config, in ${CONFIG_PATH_ENV}, or in {CONFIGS_DIR})")


def resolve_base(data: Dict[str, Any], folder: Union[str, os.PathLike] = ".", _seen: Tuple[str, ...] = ()
                 ) -> Dict[str, Any]:
    """``data`` with its ``base:`` chain applied (``base`` paths are looked up by :func:`find_base`: relative to
    ``folder``, the folder of the file that names them, then the shipped configs); the result has no ``base``
    key."""
    if "base" not in data:
        return data
    name = data["base"]
    if not isinstance(name, str) or not name:
        raise ConfigError(f"config key 'base': expected the path of another config file, got {name!r}")
    path = find_base(name, folder)
    if path in _seen:
        raise ConfigError(f"config key 'base': {path} includes itself (chain: {' -> '.join(_seen + (path,))})")
    parent = read_yaml(path)
    if is_official(parent):
        raise ConfigError(f"config key 'base': {path} is an official-format file; a base must be one of ours")
    parent = resolve_base(parent, os.path.dirname(path), _seen + (path,))
    return merge_config_dicts(parent, {k: v for k, v in data.items() if k != "base"})


def load_config(source: Union[str, os.PathLike, Dict[str, Any], Config, ModelConfig]) -> Config:
    """Load a :class:`Config` from a YAML path, a dict (ours or official) or a config object.

    A bare :class:`ModelConfig` is wrapped into a full :class:`Config` with default train settings. A
    ``base:`` key is resolved first (relative to the file; for a dict, to the working directory).
    """
    if isinstance(source, Config):
        return source
    if isinstance(source, ModelConfig):
        return Config(model=source)
    if isinstance(source, dict):
        data = resolve_base(source)
    else:
        data = resolve_base(read_yaml(source), os.path.dirname(os.path.abspath(os.fspath(source))),
                            (os.path.abspath(os.fspath(source)),))
    if is_official(data):
        unknown = sorted(set(data) - {"model_params", "dataset_params", "train_params",
                                       *_OFFICIAL_SECTIONS_IGNORED})
        if unknown:
            raise ConfigError(f"unknown config key '{unknown[0]}' in official config")
        data = official_to_dict(data)
    return config_from_dict(data)


def save_config(cfg: Any, path: Union[str, os.PathLike]) -> None:
    """Write a config dataclass as YAML (atomically)."""
    from .utils import atomic_write_bytes

    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
    atomic_write_bytes(path, text.encode("utf-8"))
