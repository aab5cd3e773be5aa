"""The typed configuration's schema: dataclasses for the model, dataset and training, one field per key of
our YAML files (read, validated and written by :mod:`dagan.config`, which re-exports every name here)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

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
