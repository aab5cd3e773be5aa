"""What changes the numbers of an evaluation (:class:`EvalSettings`, saved in the report) and the names it
uses: protocols, metric lists, the baseline's name."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional

from ..errors import InputError
from ..inference.animator import MOTIONS
from ..inference.guide import GUIDE_MODES
from ..inference.landmark_motion import DEFAULT_MOUTH_FILL, MOUTH_FILLS
from . import face_metrics as FM

PROTOCOLS = ("reconstruction", "cross-identity")
RECONSTRUCTION_METRICS = ("l1", "psnr", "ssim", "lpips", "akd", "aed", "csim")
CROSS_IDENTITY_METRICS = ("csim", "akd", "akd_motion") + FM.MOTION_METRICS
#: metrics with one value per item (clip) instead of one per frame
PER_ITEM_METRICS = FM.CLIP_METRICS
#: metrics that need identity embeddings from the face backend
_EMBEDDING_METRICS = ("id_dist_source", "id_match_source", "id_dist_driving")
#: for each metric, whether larger is better (used to pick the worst videos and in the figure)
HIGHER_IS_BETTER = {"l1": False, "psnr": True, "ssim": True, "lpips": False, "akd": False, "akd_motion": False,
                    "aed": False, "csim": True, **FM.MOTION_HIGHER_IS_BETTER,
                    "motion_ratio": False}
BASELINE = "repeat_source"
REPORT_FORMAT = "dagan-eval-1"


@dataclass
class EvalSettings:
    """Everything that changes the numbers; saved in the report."""

    protocol: str = "reconstruction"
    batch_size: int = 16
    ssim_data_range: float = 1.0
    psnr_max_db: float = 100.0
    quantize: bool = True  # outputs rounded down to 8 bits, as the papers' saved PNG strips were
    lpips_legacy_range: bool = False
    adapt_movement_scale: bool = True  # cross-identity videos only
    max_videos: Optional[int] = None
    max_frames: Optional[int] = None
    seed: int = 0
    thumbnails: int = 6
    # leave the source frame itself out of the means (the papers keep it; a copy of it scores perfectly)
    exclude_source_frame: bool = False
    skip_bad_videos: bool = False  # record unreadable/truncated videos in the report instead of stopping
    # cross-identity: portrait images animated by every video (default: each video's frame 0 by the next video)
    sources: Optional[List[str]] = None
    videos: Optional[List[str]] = None  # only these videos of the data folder (names, without extension)
    # frames are read, rendered and scored at this size (default: the models' size); the models still run at
    # their own size and render at this one (see DaGAN.prepare_source's source_full), as demo.py --size does
    output_size: Optional[int] = None
    # face-guided head motion as in demo.py --guide: auto (on when a face backend loads), on, off
    guide: str = "auto"
    mouth_gain: float = 1.0  # with the guide, as demo.py --mouth_gain
    # what moves the portrait, as demo.py --motion (Animator's ``motion``): keypoints, landmarks or auto; with the
    # landmark stage, what fills an opening mouth (demo.py --mouth_fill)
    motion: str = "keypoints"
    mouth_fill: str = DEFAULT_MOUTH_FILL
    # cross-identity still-driver check: each source driven by this many copies of itself (0 = no check)
    still_frames: int = 20

    def __post_init__(self):
        if self.protocol not in PROTOCOLS:
            raise InputError(f"unknown protocol {self.protocol!r} (use {' or '.join(PROTOCOLS)})")
        if self.batch_size < 1:
            raise InputError(f"batch size must be >= 1, got {self.batch_size}")
        if self.ssim_data_range <= 0:
            raise InputError(f"SSIM data range must be positive, got {self.ssim_data_range}")
        if self.sources is not None:
            if self.protocol != "cross-identity":
                raise InputError("source images (--sources) go with --protocol cross-identity")
            self.sources = [os.fspath(p) for p in self.sources]
            missing = [p for p in self.sources if not os.path.isfile(p)]
            if missing:
                raise InputError(f"source image not found: {missing[0]}")
            if not self.sources:
                raise InputError("--sources lists no image")
        if self.guide not in GUIDE_MODES:
            raise InputError(f"guide must be one of {', '.join(GUIDE_MODES)}, got {self.guide!r}")
        if self.motion not in MOTIONS:
            raise InputError(f"motion must be one of {', '.join(MOTIONS)}, got {self.motion!r}")
        if self.mouth_fill not in MOUTH_FILLS:
            raise InputError(f"mouth fill must be one of {', '.join(MOUTH_FILLS)}, got {self.mouth_fill!r}")
        if self.output_size is not None and self.output_size < 8:
            raise InputError(f"output size must be >= 8, got {self.output_size}")
        if self.still_frames < 0:
            raise InputError(f"still frames must be >= 0, got {self.still_frames}")
        for name in ("max_videos", "max_frames"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"{name.replace('_', '-')} must be >= 1, got {value}")


