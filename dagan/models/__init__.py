"""All networks (one definition each) and the :class:`DaGAN` module that owns them."""
from .attention import DepthAwareAttention, cross_attention
from .dagan import (DaGAN, SourceState, anchor_motion, build_discriminator, build_generator, movement_scale,
                    normalize_kp, relative_motion)
from .depth import DepthDecoder, DepthEncoder, PoseNet, disp_to_depth
from .discriminator import Discriminator, MultiScaleDiscriminator
from .generator import DepthAwareGenerator, SPADEDepthAwareGenerator
from .keypoints import KPDetector
from .motion import DenseMotionNetwork, sparse_motions

__all__ = [
    "DaGAN", "SourceState", "build_discriminator", "build_generator", "normalize_kp", "movement_scale",
    "anchor_motion", "relative_motion",
    "DepthAwareAttention", "cross_attention", "DepthDecoder", "DepthEncoder", "PoseNet", "disp_to_depth",
    "Discriminator", "MultiScaleDiscriminator", "DepthAwareGenerator", "SPADEDepthAwareGenerator", "KPDetector",
    "DenseMotionNetwork", "sparse_motions",
]
