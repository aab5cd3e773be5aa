"""The options of one animation (``demo.py``, the web app): one typed dataclass, and what each front-end derives
from it (device and precision, batch size, keypoint smoothing, the guide's detection rate, the Animator's own
settings).

Messages name the ``demo.py`` flags (``--max_frames``), which the web app rewords for its page.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch

from ...errors import InputError
from ...faces import DEFAULT_MARGIN
from ...io.video import check_output_path
from ..guide import GUIDE_DETECT_EVERY, GUIDE_STREAM_DETECT_EVERY
from ..landmark_motion import DEFAULT_MOUTH_FILL
from ..loading import resolve_runtime


@dataclass
class AnimateOptions:
    """Everything that shapes one animation; the defaults are ``demo.py``'s (its parser takes them from here).

    ``source_image``/``driving_video``: paths, or None for the built-in astronaut / generated head motion (with
    ``stream``: ``driving_video`` may be a camera, ``"0"`` or ``/dev/videoN``). ``checkpoint``/``config``/
    ``depth_checkpoint``: the model (see :func:`dagan.inference.loading.load_model`; None: the shipped one).
    ``motion``: ``auto|landmarks|keypoints`` (see :class:`~dagan.Animator`); ``mouth_fill``: with the landmark
    stage, ``driver|dark|none``; ``guide``: ``auto|on|off`` (the keypoint motion's face guide); ``smooth``: the keypoint One-Euro filter's cut-off in Hz (None: off);
    ``face_index``: ``"largest"`` or N from the left; ``device``: ``auto|cpu|cuda[:N]|mps``;
    ``dtype``: ``auto|float32|bfloat16|float16``.
    """

    # model
    config: Optional[str] = None
    checkpoint: Optional[str] = None
    depth_checkpoint: Optional[Sequence[str]] = None
    trust_checkpoint: bool = False
    # inputs and outputs
    source_image: Optional[str] = None
    driving_video: Optional[str] = None
    result_video: str = "result.mp4"
    overwrite: bool = False
    save_depth: Optional[str] = None
    side_by_side: bool = False
    max_frames: Optional[int] = None
    size: int = 256
    # motion (passed to the Animator by animator_settings)
    relative: bool = True
    adapt_scale: bool = True
    find_best_frame: bool = False
    best_frame: Optional[int] = None
    motion: str = "auto"
    mouth_fill: str = DEFAULT_MOUTH_FILL
    guide: str = "auto"
    mouth_gain: float = 1.0
    guide_detect_every: Optional[int] = None
    smooth: Optional[float] = None
    smooth_beta: float = 1.0
    # faces
    crop: bool = False
    paste_back: bool = False
    face_backend: str = "auto"
    face_index: Union[int, str] = "largest"
    margin: float = DEFAULT_MARGIN
    detect_every: int = 1
    smoothing: float = 0.2
    # runtime
    device: str = "auto"
    dtype: str = "auto"
    batch_size: Optional[int] = None
    seed: int = 0
    quiet: bool = False
    # realtime
    stream: bool = False
    latency_budget_ms: float = 200.0

    def replace(self, **changes: Any) -> "AnimateOptions":
        """A copy with ``changes`` (field names; an unknown one is a :class:`TypeError`)."""
        return dataclasses.replace(self, **changes)

    def check_files(self) -> None:
        """The file mode's checks, before anything is loaded: counts in range, outputs writable (an existing
        one only with ``overwrite``, never an input), inputs present."""
        if self.max_frames is not None and self.max_frames < 1:
            raise InputError(f"--max_frames must be at least 1, got {self.max_frames}")
        if self.batch_size is not None and self.batch_size < 1:
            raise InputError(f"--batch_size must be at least 1, got {self.batch_size}")
        inputs = (self.source_image, self.driving_video)
        check_output_path(self.result_video, self.overwrite, inputs)
        if self.save_depth:
            check_output_path(self.save_depth, self.overwrite, inputs + (self.result_video,))
            if os.path.abspath(self.save_depth) == os.path.abspath(self.result_video):
                raise InputError("--save_depth must differ from --result_video")
        self.check_source()
        if self.driving_video is not None and not os.path.exists(self.driving_video):
            raise InputError(f"driving video not found: {self.driving_video}")

    def check_source(self) -> None:
        if self.source_image is not None and not os.path.exists(self.source_image):
            raise InputError(f"source image not found: {self.source_image}")

    def runtime(self) -> Tuple[torch.device, torch.dtype]:
        """The device and precision asked for."""
        return resolve_runtime(self.device, self.dtype)

    def animator_settings(self, fps: float, stream: bool = False) -> Dict[str, Any]:
        """The :class:`~dagan.Animator` keyword arguments that come from the options alone (motion mode,
        keypoint smoothing at ``fps``, the guide's detection rate and mouth gain); the pipeline adds the model,
        device, sizes and face guide."""
        return dict(relative=self.relative, adapt_movement_scale=self.adapt_scale, smooth=keypoint_smoothing(self, fps),
                    guide_detect_every=guide_detect_every(self, stream=stream), mouth_gain=self.mouth_gain,
                    mouth_fill=self.mouth_fill)


def keypoint_smoothing(options: AnimateOptions, fps: float):
    """The keypoint smoothing the options ask for (None: off)."""
    if options.smooth is None:
        return None
    from ..smoothing import OneEuroSettings

    return OneEuroSettings(min_cutoff=options.smooth, beta=options.smooth_beta, fps=fps or 25.0)


def guide_detect_every(options: AnimateOptions, stream: bool = False) -> int:
    """``guide_detect_every``, or its default: every frame for a file, every 10th in realtime."""
    value = options.guide_detect_every
    if value is None:
        return GUIDE_STREAM_DETECT_EVERY if stream else GUIDE_DETECT_EVERY
    if value < 1:
        raise InputError(f"--guide_detect_every must be at least 1, got {value}")
    return int(value)


def default_batch_size(requested: Optional[int], network_size: int) -> int:
    """``batch_size``, or by default 4 frames per pass for networks up to 128 px and 1 above (the
    official-size 256 px model: batch 4 adds ~160 MiB of activations to the demo's peak memory, measured
    1034 vs 877 MiB, for the same speed on a 2-core CPU)."""
    if requested is not None:
        return int(requested)
    return 4 if network_size <= 128 else 1


def face_index(value: Union[int, str, None]) -> Union[int, str]:
    """``face_index`` checked: ``"largest"`` or a number >= 0."""
    if value in (None, "largest"):
        return "largest"
    try:
        index = int(value)
    except (TypeError, ValueError):
        raise InputError(f"--face_index takes a number or 'largest', got {value!r}") from None
    if index < 0:
        raise InputError(f"--face_index must be >= 0 (0 = leftmost face), got {index}")
    return index
