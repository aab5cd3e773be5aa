"""The inputs of one animation: the model, the face detector (built once, on first use), the source portrait
(cropped or resized), the driving reader (frames streamed at the size the Animator takes, cropped with a
smoothed box) and the anchor frame of relative motion (``find_best_frame`` / ``best_frame``)."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Tuple

import numpy as np

from ...errors import CheckpointError, InputError, MissingWeightsError
from ...faces import (BoxSmoother, DrivingCropper, FaceDetector, crop_square, find_best_frame, largest_face,
                      load_face_backend, square_box)
from ...io.images import load_image, resize_image
from ...io.video import VideoReader, is_image_path
from ...models.dagan import DaGAN
from ..animator import MOTIONS
from ..guide import resolve_guide
from ..landmark_motion import MOUTH_FILLS
from ..loading import load_model as _load_model
from ..synthetic import (ASTRONAUT_FACE_BOX, DEFAULT_FPS, DEFAULT_SECONDS, astronaut, synthetic_driving,
                         talking_driving)
from .options import AnimateOptions, face_index

logger = logging.getLogger("dagan")
#: driving frames are handed to a face-guided Animator at least this large, so the landmarks are found on a
#: face of useful size (the Animator resizes them to the network's size)
GUIDE_FRAME_SIZE = 256
Detector = Callable[[], FaceDetector]


# --------------------------------------------------------------------------------------------- model
def _depth_files(options: AnimateOptions) -> dict:
    paths = options.depth_checkpoint
    if paths:
        if len(paths) == 1:
            if not os.path.isdir(paths[0]):
                raise CheckpointError(f"--depth_checkpoint {paths[0]} is not a folder: give a folder or two files "
                                      f"(encoder decoder)")
            return {"depth_dir": paths[0]}
        if len(paths) == 2:
            return {"depth_encoder": paths[0], "depth_decoder": paths[1]}
        raise CheckpointError("--depth_checkpoint takes a folder or two files (encoder decoder)")
    from ...checkpoints import OFFICIAL_DEPTH_FILES

    folder = os.path.dirname(os.path.abspath(options.checkpoint))
    for enc, dec in OFFICIAL_DEPTH_FILES:
        if os.path.isfile(os.path.join(folder, enc)) and os.path.isfile(os.path.join(folder, dec)):
            logger.info("using face-depth weights %s and %s from %s", enc, dec, folder)
            return {"depth_encoder": os.path.join(folder, enc), "depth_decoder": os.path.join(folder, dec)}
    return {}


def load_model(options: AnimateOptions) -> Tuple[DaGAN, str]:
    """The model of ``config``/``checkpoint``/``depth_checkpoint``, or the shipped default
    (:func:`dagan.inference.loading.load_model`). Returns the model (on the CPU) and a one-line description."""
    official = options.config is not None and options.checkpoint is not None and not os.path.isdir(options.checkpoint)
    return _load_model(options.checkpoint, options.config, _depth_files(options) if official else None,
                       options.trust_checkpoint)


# --------------------------------------------------------------------------------------------- faces
def cached_detector(options: AnimateOptions, device, detector_factory: Optional[Detector] = None) -> Detector:
    """The face detector of ``detector_factory`` (default: the backend ``face_backend`` names), built on the
    first call and then reused (the default demo never needs one)."""
    cached: dict = {}

    def detector() -> FaceDetector:
        if "detector" not in cached:
            factory = detector_factory or (lambda: load_face_backend(options.face_backend, device=str(device)))
            cached["detector"] = factory()
        return cached["detector"]

    return detector


def face_guide(options: AnimateOptions, detector: Detector) -> Optional[FaceDetector]:
    """The detector that guides head motion (``guide``, :func:`~dagan.inference.guide.resolve_guide`), or
    None; relative motion only (``--absolute --guide on`` is an error)."""
    mode = options.guide or "off"
    if not options.relative:
        if mode == "on":
            raise InputError("--guide on works with relative motion: leave out --absolute")
        if mode == "auto":
            return None
    return resolve_guide(mode, detector)


def motion_faces(options: AnimateOptions, detector: Detector) -> Optional[FaceDetector]:
    """The detector of the landmark motion stage (``motion``): ``landmarks`` needs one (its
    :class:`~dagan.errors.MissingWeightsError` propagates) and relative motion; ``auto`` takes it when a face
    backend loads and the motion is relative, else None (the model's keypoints move the portrait);
    ``keypoints``: None."""
    if options.motion not in MOTIONS:
        raise InputError(f"--motion must be one of {', '.join(MOTIONS)}, got {options.motion!r}")
    if options.mouth_fill not in MOUTH_FILLS:
        raise InputError(f"--mouth_fill must be one of {', '.join(MOUTH_FILLS)}, got {options.mouth_fill!r}")
    if options.motion == "keypoints":
        return None
    if not options.relative:
        if options.motion == "landmarks":
            raise InputError("--motion landmarks works with relative motion: leave out --absolute")
        return None
    return resolve_guide("on" if options.motion == "landmarks" else "auto", detector)


def driving_size(model_size: int, guide: Optional[FaceDetector]) -> int:
    """Side of the driving frames handed to the Animator: the network's, or at least
    :data:`GUIDE_FRAME_SIZE` when a face guide or the landmark stage needs the landmarks."""
    return max(model_size, GUIDE_FRAME_SIZE) if guide is not None else model_size


# -------------------------------------------------------------------------------------------- source
@dataclass
class Source:
    """The source portrait: the full image, its crop box ``(x0, y0, side)`` (or None) and the model-size
    crop ``(S, S, 3)`` uint8 that is animated."""

    full: np.ndarray
    box: Optional[Tuple[float, float, float]]
    image: np.ndarray

    def at(self, size: int) -> "Source":
        """The same source with ``image`` cut from the full-resolution photo at ``size`` pixels."""
        image = crop_square(self.full, self.box, size) if self.box is not None else resize_image(self.full, size)
        return Source(self.full, self.box, image)


def prepare_source(options: AnimateOptions, size: int, detector: Optional[Detector]) -> Source:
    """The portrait of ``source_image`` (default: the astronaut, cropped at its known face box), cropped at
    its face with ``crop``, at ``size`` pixels."""
    if options.source_image is None:
        full = astronaut()
        box = square_box(ASTRONAUT_FACE_BOX, full.shape[:2], options.margin)
        return Source(full, box, crop_square(full, box, size))
    full = load_image(options.source_image)
    if options.crop:
        face = largest_face(detector(), full, f"source image {options.source_image}",
                            index=face_index(options.face_index))
        box = square_box(face.box, full.shape[:2], options.margin)
        return Source(full, box, crop_square(full, box, size))
    return Source(full, None, resize_image(full, size))


def output_size(options: AnimateOptions, model_size: int, source: Source) -> int:
    """Side of the rendered face: ``size``, or with ``paste_back`` the crop's full-resolution side."""
    if options.paste_back and source.box is not None:
        return max(8, int(round(source.box[2])))
    size = options.size or model_size
    if size < 8:
        raise InputError(f"--size must be at least 8 pixels, got {size}")
    return int(size)


# ------------------------------------------------------------------------------------------- driving
@dataclass
class Driving:
    frames: Iterator[np.ndarray]  # (S, S, 3) uint8 at the Animator's driving size, streamed
    fps: float
    total: Optional[int]
    audio_from: Optional[str]
    audio_codec: Optional[str]
    reader: Optional[VideoReader]


def frame_processor(options: AnimateOptions, size: int, detector: Optional[Detector]
                    ) -> Callable[[np.ndarray], np.ndarray]:
    """What each driving frame goes through before the Animator: the face crop with a smoothed box
    (``crop``), else a resize to ``size``."""
    if options.crop:
        return DrivingCropper(detector(), size, margin=options.margin, detect_every=options.detect_every,
                              smoother=BoxSmoother(alpha=options.smoothing))
    return lambda frame: resize_image(frame, size)


def _builtin_count(options: AnimateOptions) -> int:
    count = int(DEFAULT_SECONDS * DEFAULT_FPS)
    return count if options.max_frames is None else min(count, options.max_frames)


def builtin_driving(options: AnimateOptions, size: int, detector: Optional[Detector]) -> Iterator[np.ndarray]:
    """The built-in driving clip at ``size``: the astronaut talking, blinking and turning
    (:func:`~dagan.inference.synthetic.talking_driving`) when a face backend loads and the landmark stage may
    run (``motion`` is not ``keypoints``), else turning only (the keypoint path's built-in driver)."""
    count = _builtin_count(options)
    if detector is not None and options.motion != "keypoints":
        try:
            face_detector = detector()
        except MissingWeightsError as exc:
            logger.info("the built-in driver only turns its head (%s)", exc)
        else:
            return talking_driving(count, size=size, seed=options.seed, detector=face_detector)
    return synthetic_driving(count, size=size, seed=options.seed)


def open_driving(options: AnimateOptions, size: int, detector: Optional[Detector]) -> Driving:
    """Open the driving clip as a stream of ``size`` frames (cropped with a smooth box when ``crop``)."""
    if options.driving_video is None:
        count = _builtin_count(options)
        return Driving(builtin_driving(options, size, detector), DEFAULT_FPS, count, None, None, None)
    if is_image_path(options.driving_video):
        raise InputError(f"--driving_video {options.driving_video} is an image: give a video file")
    reader = VideoReader(options.driving_video, max_frames=options.max_frames)
    reader.check_integrity()
    process = frame_processor(options, size, detector)
    frames = (process(frame) for frame in reader)
    audio = reader.path if reader.has_audio else None
    return Driving(frames, reader.fps, reader.expected_frames, audio, reader.audio_codec, reader)


def find_anchor(options: AnimateOptions, size: int, source: Source, detector: Detector) -> Optional[np.ndarray]:
    """The driving frame (at ``size``, as the main pass hands them over) that anchors relative motion
    (``find_best_frame``/``best_frame``), found in streaming passes over the driving video; None = the first
    frame."""
    if not (options.find_best_frame or options.best_frame is not None):
        return None

    def raw_frames() -> Iterator[np.ndarray]:
        if options.driving_video is None:
            return builtin_driving(options, size, detector)
        return iter(VideoReader(options.driving_video, max_frames=options.max_frames))

    index = options.best_frame
    if index is None:
        index = find_best_frame(detector(), source.full, raw_frames())
        logger.info("best matching driving frame: %d", index)
    process = (lambda frame: frame) if options.driving_video is None else frame_processor(options, size, detector)
    count = 0
    for count, frame in enumerate(raw_frames(), start=1):
        processed = process(frame)  # every frame: the crop box is smoothed exactly as in the main pass
        if count - 1 == index:
            return processed
    raise InputError(f"--best_frame {index} is past the end of the driving video ({count} frames)")
