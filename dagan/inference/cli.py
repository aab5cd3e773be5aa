"""``demo.py``: animate a portrait with a driving video and write an mp4 (streaming, audio kept).

With no arguments it runs the embedded default: the scikit-image astronaut driven by a generated
head-motion clip, through the small shipped checkpoint (or a labelled untrained fallback).

The flow is split into small functions (:func:`build_parser`, :func:`load_model`, :func:`prepare_source`,
:func:`open_driving`, :func:`run`) so other front-ends (a camera ``--stream`` mode, a web app) can reuse
them.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..cliutil import DashUnderscoreParser, run_cli, setup_logging
from ..errors import CheckpointError, InputError
from ..io.video import camera_input, open_camera
from ..models.dagan import DaGAN
from .animator import Animator
from ..faces import (DEFAULT_MARGIN, FACE_BACKENDS, BoxSmoother, DrivingCropper, FaceDetector, crop_square,
                    find_best_frame, largest_face, load_face_backend, paste_back, square_box)
from .guide import GUIDE_DETECT_EVERY, GUIDE_MODES, GUIDE_STREAM_DETECT_EVERY, resolve_guide
from ..io.images import load_image, resize_image
from .loading import DEFAULT_CHECKPOINT, FALLBACK_CONFIG, REPO_ROOT, UNTRAINED_NOTE  # noqa: F401 (used by the app)
from .loading import resolve_runtime
from .loading import load_model as _load_model
from .pipeline import BackgroundWriter, StreamStats, stream
from .synthetic import ASTRONAUT_FACE_BOX, DEFAULT_FPS, DEFAULT_SECONDS, astronaut, synthetic_driving
from ..io.video import (DepthWriter, VideoReader, VideoWriter, check_output_path, check_video_output_extension,
                    colorize_depth, is_image_path)

logger = logging.getLogger("dagan")
#: driving frames are handed to a face-guided Animator at least this large, so the landmarks are found on a
#: face of useful size (the Animator resizes them to the network's size)
GUIDE_FRAME_SIZE = 256


def build_parser() -> argparse.ArgumentParser:
    p = DashUnderscoreParser(
        prog="demo.py", description="Animate a portrait with a driving video and write an mp4 (streaming, the "
        "driving audio is kept). With no arguments: the built-in astronaut demo. Every option accepts dashes or "
        "underscores (--source-image = --source_image).")
    g = p.add_argument_group("model")
    g.add_argument("--config", help="official-format (or our) config YAML; use with --checkpoint for official weights")
    g.add_argument("--checkpoint", help="official checkpoint.pth.tar (with --config), or our format: a folder "
                   "from save_pretrained or a .pt file (config included). Default: the shipped small model")
    g.add_argument("--depth_checkpoint", nargs="+", metavar="PATH",
                   help="face-depth weights: a folder (encoder.pth + depth.pth) or two files ENCODER DECODER; "
                   "default: looked for next to --checkpoint")
    g.add_argument("--trust_checkpoint", action="store_true",
                   help="allow checkpoints that hold arbitrary Python objects (only for files you trust)")
    g = p.add_argument_group("inputs and outputs")
    g.add_argument("--source_image", help="portrait to animate (PNG/JPEG/WebP/...); default: the astronaut")
    g.add_argument("--driving_video", help="driving video (any size/fps/pixel format); default: a generated "
                   "head-motion clip of the astronaut")
    g.add_argument("--result_video", default="result.mp4", help="output video (default: result.mp4)")
    g.add_argument("--overwrite", action="store_true", help="replace existing output files")
    g.add_argument("--save_depth", metavar="PATH", help="also write the driving depth: .mp4 (colour map) or .npz "
                   "(raw float16, key 'depth' (T, H, W)), aligned frame for frame")
    g.add_argument("--side_by_side", action="store_true", help="write source | driving | driving depth | result")
    g.add_argument("--max_frames", type=int, help="animate at most this many driving frames")
    g.add_argument("--size", type=int, default=256,
                   help="side of the output video in pixels (default: 256; the network may run smaller: the source "
                   "is warped at this size). With --paste-back the face is rendered at the crop's full resolution")
    g = p.add_argument_group("motion")
    mode = g.add_mutually_exclusive_group()
    mode.add_argument("--relative", dest="relative", action="store_true", default=True,
                      help="relative keypoint motion (default)")
    mode.add_argument("--absolute", dest="relative", action="store_false", help="absolute driving keypoints")
    scale = g.add_mutually_exclusive_group()
    scale.add_argument("--adapt_scale", dest="adapt_scale", action="store_true", default=True,
                       help="scale relative motion by the keypoint hull areas (default on)")
    scale.add_argument("--no_adapt_scale", dest="adapt_scale", action="store_false")
    best = g.add_mutually_exclusive_group()
    best.add_argument("--find_best_frame", action="store_true",
                      help="anchor relative motion at the driving frame whose face landmarks best match the "
                      "source (face backend, see --face_backend)")
    best.add_argument("--best_frame", type=int, metavar="N", help="anchor relative motion at driving frame N")
    g.add_argument("--guide", choices=GUIDE_MODES, default="auto",
                   help="face-guided head motion: the driving face's landmarks (face backend) set the head's "
                   "scale, turn and position, the keypoints the rest. auto (default): on when a face backend is "
                   "installed; on: required; off: keypoints only (the official behaviour). Relative motion only")
    g.add_argument("--mouth_gain", type=float, default=1.0, metavar="G",
                   help="with the guide: multiply the lower lip and jaw's own motion by G (> 1 opens the mouth "
                   "wider than the model alone does; default 1). For models with keypoints on landmarks, such as "
                   "the shipped one")
    g.add_argument("--guide_detect_every", type=int, default=None, metavar="N",
                   help="with the guide: detect the driving face on every N-th frame and track its landmarks in "
                   f"between (faster, a little less exact; default {GUIDE_DETECT_EVERY}, with --stream "
                   f"{GUIDE_STREAM_DETECT_EVERY})")
    g.add_argument("--smooth", nargs="?", type=float, const=1.0, default=None, metavar="MIN_CUTOFF",
                   help="smooth the driving keypoints over time (One-Euro filter; off by default). The value is the "
                   "cut-off at rest in Hz: lower = smoother, more lag (default when given: 1.0)")
    g.add_argument("--smooth_beta", type=float, default=1.0,
                   help="with --smooth: how fast the cut-off rises with keypoint speed (higher = less lag; default 1.0)")
    g = p.add_argument_group("faces")
    crop = g.add_mutually_exclusive_group()
    crop.add_argument("--crop", dest="crop", action="store_true", default=False,
                      help="detect and crop the face in the source and every driving frame (face backend; "
                      "full-size photos are detected on a downscaled copy and cropped at full resolution)")
    crop.add_argument("--no_crop", dest="crop", action="store_false", help="use whole frames (default)")
    g.add_argument("--paste_back", action="store_true",
                   help="blend the animated face back into the full-resolution source image")
    g.add_argument("--face_backend", choices=FACE_BACKENDS, default="auto",
                   help="auto (default: dlib when installed, offline), dlib, or face-alignment (needs its weights)")
    g.add_argument("--face_index", default="largest", metavar="N|largest",
                   help="which face of a source photo with several: largest (default) or N counted from the left "
                   "(0 = leftmost)")
    g.add_argument("--margin", type=float, default=DEFAULT_MARGIN, help="crop side / face size (default: 1.8)")
    g.add_argument("--detect_every", type=int, default=1, help="run the face detector every N driving frames (default: 1)")
    g.add_argument("--smoothing", type=float, default=0.2,
                   help="driving crop box smoothing: weight of each new detection in (0, 1] (default: 0.2)")
    g = p.add_argument_group("runtime")
    g.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    g.add_argument("--cpu", action="store_true", help="same as --device cpu (official flag)")
    g.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="precision of the network's conv bodies (always on the fast path, see dagan.fast): auto "
                   "(default: bfloat16 on CPUs with AVX-512 BF16/AMX, float16 on CUDA, else float32), or one of them")
    g.add_argument("--batch_size", type=int, default=None,
                   help="driving frames per forward pass (default: 4 for networks up to 128 px, 1 above: "
                   "at 256 px a batch of 4 costs ~160 MiB more and is no faster on a CPU)")
    g.add_argument("--seed", type=int, default=0, help="seed of the generated default driving clip")
    g.add_argument("--quiet", action="store_true", help="no progress bar or info lines")
    g.add_argument("--debug", action="store_true", help="show tracebacks")
    g = p.add_argument_group("realtime streaming")
    g.add_argument("--stream", action="store_true", help="realtime mode: --driving_video may be a camera (0, /dev/videoN) "
         "or a file played at its fps; late frames are dropped (see dagan.inference.pipeline)")
    g.add_argument("--latency_budget_ms", type=float, default=200.0,
         help="with --stream: drop a frame that waited longer than this (0: never; default: 200)")
    return p


# --------------------------------------------------------------------------------------------- model
def _depth_files(args) -> dict:
    paths = args.depth_checkpoint
    if paths:
        if len(paths) == 1:
            if not os.path.isdir(paths[0]):
                raise CheckpointError(f"--depth_checkpoint {paths[0]} is not a folder: give a folder or two files "
                                      f"(encoder decoder)")
            return {"depth_dir": paths[0]}
        if len(paths) == 2:
            return {"depth_encoder": paths[0], "depth_decoder": paths[1]}
        raise CheckpointError("--depth_checkpoint takes a folder or two files (encoder decoder)")
    from ..checkpoints import OFFICIAL_DEPTH_FILES

    folder = os.path.dirname(os.path.abspath(args.checkpoint))
    for enc, dec in OFFICIAL_DEPTH_FILES:
        if os.path.isfile(os.path.join(folder, enc)) and os.path.isfile(os.path.join(folder, dec)):
            logger.info("using face-depth weights %s and %s from %s", enc, dec, folder)
            return {"depth_encoder": os.path.join(folder, enc), "depth_decoder": os.path.join(folder, dec)}
    return {}


def load_model(args) -> Tuple[DaGAN, str]:
    """The model named by ``--config/--checkpoint/--depth_checkpoint``, or the shipped default
    (:func:`dagan.inference.loading.load_model`). Returns the model (on the CPU) and a one-line description."""
    official = args.config is not None and args.checkpoint is not None and not os.path.isdir(args.checkpoint)
    return _load_model(args.checkpoint, args.config, _depth_files(args) if official else None,
                       bool(getattr(args, "trust_checkpoint", False)))


def runtime(args) -> Tuple[torch.device, torch.dtype]:
    """The device and precision of ``--device/--cpu/--dtype``."""
    return resolve_runtime("cpu" if getattr(args, "cpu", False) else args.device, getattr(args, "dtype", "auto"))


# -------------------------------------------------------------------------------------------- inputs
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


def output_size(args, model_size: int, source: Source) -> int:
    """Side of the rendered face: ``--size``, or with ``--paste-back`` the crop's full-resolution side."""
    if args.paste_back and source.box is not None:
        return max(8, int(round(source.box[2])))
    size = getattr(args, "size", None) or model_size
    if size < 8:
        raise InputError(f"--size must be at least 8 pixels, got {size}")
    return int(size)


def smoothing(args, fps: float):
    """The keypoint smoothing the options ask for (None: off)."""
    if getattr(args, "smooth", None) is None:
        return None
    from .smoothing import OneEuroSettings

    return OneEuroSettings(min_cutoff=args.smooth, beta=args.smooth_beta, fps=fps or 25.0)


def face_guide(args, detector: Callable[[], FaceDetector]) -> Optional[FaceDetector]:
    """The detector that guides head motion (``--guide``, :func:`~dagan.inference.guide.resolve_guide`), or
    None; relative motion only (``--absolute --guide on`` is an error)."""
    mode = getattr(args, "guide", "off") or "off"
    if not getattr(args, "relative", True):
        if mode == "on":
            raise InputError("--guide on works with relative motion: leave out --absolute")
        if mode == "auto":
            return None
    return resolve_guide(mode, detector)


def guide_detect_every(args, stream: bool = False) -> int:
    """``--guide_detect_every``, or its default: every frame for a file, every 10th in realtime."""
    value = getattr(args, "guide_detect_every", None)
    if value is None:
        return GUIDE_STREAM_DETECT_EVERY if stream else GUIDE_DETECT_EVERY
    if value < 1:
        raise InputError(f"--guide_detect_every must be at least 1, got {value}")
    return int(value)


def driving_size(model_size: int, guide: Optional[FaceDetector]) -> int:
    """Side of the driving frames handed to the Animator: the network's, or at least
    :data:`GUIDE_FRAME_SIZE` when a face guide needs the landmarks."""
    return max(model_size, GUIDE_FRAME_SIZE) if guide is not None else model_size


def prepare_source(args, size: int, detector: Optional[Callable[[], FaceDetector]]) -> Source:
    if args.source_image is None:
        full = astronaut()
        box = square_box(ASTRONAUT_FACE_BOX, full.shape[:2], args.margin)
        return Source(full, box, crop_square(full, box, size))
    full = load_image(args.source_image)
    if args.crop:
        face = largest_face(detector(), full, f"source image {args.source_image}",
                            index=_face_index(getattr(args, "face_index", "largest")))
        box = square_box(face.box, full.shape[:2], args.margin)
        return Source(full, box, crop_square(full, box, size))
    return Source(full, None, resize_image(full, size))


def _face_index(value):
    if value in (None, "largest"):
        return "largest"
    try:
        index = int(value)
    except (TypeError, ValueError):
        raise InputError(f"--face_index takes a number or 'largest', got {value!r}") from None
    if index < 0:
        raise InputError(f"--face_index must be >= 0 (0 = leftmost face), got {index}")
    return index


def cached_detector(args, device, detector_factory: Optional[Callable[[], FaceDetector]] = None
                    ) -> Callable[[], FaceDetector]:
    """The face detector of ``detector_factory`` (default: the face backend the options ask for), built on the
    first call and then reused."""
    cached: dict = {}

    def detector() -> FaceDetector:
        if "detector" not in cached:
            cached["detector"] = (detector_factory or face_backend_factory(args, device))()
        return cached["detector"]

    return detector


def face_backend_factory(args, device) -> Callable[[], FaceDetector]:
    """The face backend the options ask for, built on first use (the default demo never needs one)."""
    return lambda: load_face_backend(getattr(args, "face_backend", "auto"), device=str(device))


@dataclass
class Driving:
    frames: Iterator[np.ndarray]  # model-size (S, S, 3) uint8, streamed
    fps: float
    total: Optional[int]
    audio_from: Optional[str]
    audio_codec: Optional[str]
    reader: Optional[VideoReader]


def open_driving(args, size: int, detector: Optional[Callable[[], FaceDetector]]) -> Driving:
    """Open the driving clip as a stream of model-size frames (cropped with a smooth box when ``--crop``)."""
    if args.driving_video is None:
        count = int(DEFAULT_SECONDS * DEFAULT_FPS)
        if args.max_frames is not None:
            count = min(count, args.max_frames)
        return Driving(synthetic_driving(count, size=size, seed=args.seed), DEFAULT_FPS, count, None, None, None)
    if is_image_path(args.driving_video):
        raise InputError(f"--driving_video {args.driving_video} is an image: give a video file")
    reader = VideoReader(args.driving_video, max_frames=args.max_frames)
    reader.check_integrity()
    process = _frame_processor(args, size, detector)
    frames = (process(frame) for frame in reader)
    audio = reader.path if reader.has_audio else None
    return Driving(frames, reader.fps, reader.expected_frames, audio, reader.audio_codec, reader)


def _frame_processor(args, size: int, detector) -> Callable[[np.ndarray], np.ndarray]:
    if args.crop:
        return DrivingCropper(detector(), size, margin=args.margin, detect_every=args.detect_every,
                              smoother=BoxSmoother(alpha=args.smoothing))
    return lambda frame: resize_image(frame, size)


def find_anchor(args, size: int, source: Source, detector) -> Optional[np.ndarray]:
    """The driving frame (at ``size``, as the main pass hands them over) that anchors relative motion
    (``--find_best_frame``/``--best_frame``), found in streaming passes over the driving video; None = the first
    frame."""
    if not (args.find_best_frame or args.best_frame is not None):
        return None

    def raw_frames() -> Iterator[np.ndarray]:
        if args.driving_video is None:
            count = int(DEFAULT_SECONDS * DEFAULT_FPS)
            return synthetic_driving(count if args.max_frames is None else min(count, args.max_frames), size=size,
                                     seed=args.seed)
        return iter(VideoReader(args.driving_video, max_frames=args.max_frames))

    index = args.best_frame
    if index is None:
        index = find_best_frame(detector(), source.full, raw_frames())
        logger.info("best matching driving frame: %d", index)
    process = (lambda frame: frame) if args.driving_video is None else _frame_processor(args, size, detector)
    count = 0
    for count, frame in enumerate(raw_frames(), start=1):
        processed = process(frame)  # every frame: the crop box is smoothed exactly as in the main pass
        if count - 1 == index:
            return processed
    raise InputError(f"--best_frame {index} is past the end of the driving video ({count} frames)")


# ------------------------------------------------------------------------------------------- output
def compose(args, source: Source, item: dict, depth_range: Optional[List[float]] = None) -> np.ndarray:
    """The output frame for one animated item (``prediction``/``driving``/``driving_depth``).

    ``depth_range``: a list that holds the colour-map range of the depth panel; empty on the first call,
    where it is set from the first frame, so colours keep their meaning over the whole clip."""
    result = item["prediction"]
    if args.paste_back:
        if source.box is not None:
            result = paste_back(source.full, result, source.box)
        else:
            h, w = source.full.shape[:2]
            from PIL import Image

            result = np.asarray(Image.fromarray(result).resize((w, h), Image.BICUBIC))
    if not args.side_by_side:
        return result
    size = item["prediction"].shape[0]
    depth = item["driving_depth"]
    depth_range = [] if depth_range is None else depth_range
    if not depth_range:
        lo, hi = np.percentile(depth, [1, 99])
        pad = 0.1 * max(float(hi - lo), 1e-3)
        depth_range.extend([float(lo) - pad, float(hi) + pad])
    panels = [resize_image(p, size) for p in (source.image, item["driving"], colorize_depth(depth, *depth_range))]
    if result.shape[0] != size:
        from PIL import Image

        width = max(1, int(round(result.shape[1] * size / result.shape[0])))
        result = np.asarray(Image.fromarray(result).resize((width, size), Image.BICUBIC))
    return np.concatenate(panels + [result], axis=1)


def run(args, detector_factory: Optional[Callable[[], FaceDetector]] = None,
        on_frame: Optional[Callable[[int, Optional[int]], None]] = None) -> str:
    """Animate and write ``args.result_video``; returns its path.

    ``on_frame(done, total)``, when given, is called in the calling thread after each animated frame
    (``total``: the expected frame count, None when unknown), e.g. by the web app's progress bar."""
    if getattr(args, "stream", False):
        return run_stream(args, detector_factory)
    if args.max_frames is not None and args.max_frames < 1:
        raise InputError(f"--max_frames must be at least 1, got {args.max_frames}")
    if args.batch_size is not None and args.batch_size < 1:
        raise InputError(f"--batch_size must be at least 1, got {args.batch_size}")
    inputs = (args.source_image, args.driving_video)
    check_output_path(args.result_video, args.overwrite, inputs)
    if args.save_depth:
        check_output_path(args.save_depth, args.overwrite, inputs + (args.result_video,))
        if os.path.abspath(args.save_depth) == os.path.abspath(args.result_video):
            raise InputError("--save_depth must differ from --result_video")
    if args.source_image is not None and not os.path.exists(args.source_image):
        raise InputError(f"source image not found: {args.source_image}")
    if args.driving_video is not None and not os.path.exists(args.driving_video):
        raise InputError(f"driving video not found: {args.driving_video}")

    device, dtype = runtime(args)
    detector = cached_detector(args, device, detector_factory)
    model, description = load_model(args)
    size = model.image_size
    source = prepare_source(args, size, detector)
    out_size = output_size(args, size, source)
    source = source.at(out_size)
    guide = face_guide(args, detector)
    frame_size = driving_size(size, guide)
    driving = open_driving(args, frame_size, detector)
    animator = Animator(model, device=device, dtype=dtype, relative=args.relative,
                        adapt_movement_scale=args.adapt_scale, batch_size=default_batch_size(args.batch_size, size),
                        output_size=out_size, smooth=smoothing(args, driving.fps), guide=guide,
                        guide_detect_every=guide_detect_every(args), mouth_gain=args.mouth_gain)
    logger.info("%s, %d px, on %s (%s)%s", description, size, animator.device,
                str(animator.dtype).replace("torch.", ""), ", face-guided motion" if guide is not None else "")
    animator.set_source(source.image)
    anchor = find_anchor(args, frame_size, source, detector)
    if anchor is not None:
        animator.set_anchor(anchor)
    cut = None
    if args.max_frames is not None and driving.total is not None and driving.reader is not None:
        declared = driving.reader.declared_frames
        if declared is None or args.max_frames < declared:
            cut = driving.total / driving.fps
    progress = _progress(driving.total, args.quiet)
    with contextlib.ExitStack() as stack:
        depth_out = stack.enter_context(DepthWriter(args.save_depth, driving.fps)) if args.save_depth else None
        out = stack.enter_context(VideoWriter(args.result_video, driving.fps, audio_from=driving.audio_from,
                                              audio_codec=driving.audio_codec, max_seconds=cut))
        depth_range: List[float] = []

        def emit(item: dict) -> None:
            out.write(compose(args, source, item, depth_range))
            if depth_out is not None:
                depth_out.write(item["driving_depth"])
            progress.update(1)

        # decode (ffmpeg's process, resized here), inference (here) and encode (writer thread) overlap
        with BackgroundWriter(emit) as writer:
            for done, item in enumerate(animator.animate_stream(driving.frames, details=True), start=1):
                writer.put(item)
                if on_frame is not None:
                    on_frame(done, driving.total)
        progress.close()
    audio = ", audio copied" if driving.audio_from else ""
    extra = f"; depth in {args.save_depth}" if args.save_depth else ""
    if not args.quiet:
        print(f"wrote {args.result_video} ({out.frames_written} frames at {driving.fps:g} fps{audio}){extra}")
    return args.result_video


# ---------------------------------------------------------------------------------------- demo --stream
def stream_animator(args, detector_factory=None, fps: Optional[float] = None
                    ) -> Tuple[Animator, str, Callable[[np.ndarray], np.ndarray]]:
    """The :class:`~dagan.Animator` of the live modes (``demo.py --stream``, the web app's webcam), set up as
    :func:`run` sets up the file demo (:func:`load_model`, :func:`runtime`, ``--size``, ``--smooth`` at ``fps``):
    the source of ``--source_image`` set and the kernels warmed up; the first frame it animates anchors relative
    motion. Returns it, a one-line model description, and what each live driving frame goes through before the
    animator: the face crop with a smoothed box (``--crop``), else a resize to the size the animator needs."""
    if args.source_image is not None and not os.path.exists(args.source_image):
        raise InputError(f"source image not found: {args.source_image}")
    device, dtype = runtime(args)
    model, description = load_model(args)
    detector = cached_detector(args, device, detector_factory)
    source = prepare_source(args, model.image_size, detector)
    source = source.at(output_size(args, model.image_size, source))
    animator = Animator(model, device=device, dtype=dtype, relative=args.relative,
                        adapt_movement_scale=args.adapt_scale, output_size=source.image.shape[0],
                        smooth=smoothing(args, fps or 30.0), guide=face_guide(args, detector),
                        guide_detect_every=guide_detect_every(args, stream=True),
                        mouth_gain=args.mouth_gain)
    animator.set_source(source.image)
    animator(source.image)  # warm the kernels up before the clock starts; the first live frame anchors motion
    animator.reset()
    prepare = _frame_processor(args, driving_size(animator.size, animator.face_detector), detector)
    return animator, description, prepare


def default_batch_size(requested: Optional[int], network_size: int) -> int:
    """``--batch_size``, or by default 4 frames per pass for networks up to 128 px and 1 above (the
    official-size 256 px model: batch 4 adds ~160 MiB of activations to the demo's peak memory, measured
    1034 vs 877 MiB, for the same speed on a 2-core CPU)."""
    if requested is not None:
        return int(requested)
    return 4 if network_size <= 128 else 1


def run_stream(args, detector_factory=None) -> str:
    """``demo.py --stream``: animate a camera (``--driving_video 0``/``/dev/videoN``) or a file played at its
    own frame rate, dropping frames that would exceed ``--latency_budget_ms``; the animated frames go to
    ``--result_video`` (a dropped frame repeats the last result, so timing and audio stay in sync)."""
    if args.driving_video is None:
        raise InputError("--stream needs --driving_video (a camera index, /dev/videoN or a video file)")
    file_only = [flag for flag, given in (("--paste_back", args.paste_back), ("--side_by_side", args.side_by_side),
                                          ("--save_depth", args.save_depth),
                                          ("--find_best_frame", args.find_best_frame),
                                          ("--best_frame", args.best_frame is not None)) if given]
    if file_only:
        raise InputError(f"--stream writes the animated face only: {', '.join(file_only)} need the file mode "
                         f"(leave out --stream)")
    camera = camera_input(args.driving_video) is not None
    check_output_path(args.result_video, args.overwrite, (args.source_image,) + (() if camera else
                                                                                   (args.driving_video,)))
    if camera:
        frames: Iterable[np.ndarray] = open_camera(args.driving_video)
        fps, audio = 30.0, None
    else:
        reader = VideoReader(args.driving_video, max_frames=args.max_frames)
        frames, fps, audio = reader, reader.fps, (reader.path if reader.has_audio else None)
    animator, description, process = stream_animator(args, detector_factory, fps)
    if args.max_frames is not None:
        frames = (f for i, f in zip(range(args.max_frames), frames))
    budget = args.latency_budget_ms if args.latency_budget_ms and args.latency_budget_ms > 0 else None
    stats = StreamStats()
    logger.info("%s, %d px, streaming on %s at %g fps, latency budget %s", description, animator.size, animator.device,
                fps, f"{budget:g} ms" if budget else "none")
    # cropping / resizing run with the animation (the stream's reader thread only reads: a reader thread
    # that resized with torch slowed the 2-core demo down), and only on the frames that are animated
    last: Optional[np.ndarray] = None
    with VideoWriter(args.result_video, fps, audio_from=audio) as out:
        for item in stream(lambda frame: animator(process(frame)), frames, fps=fps, budget_ms=budget,
                           drop_stale=True, stats=stats):
            while last is not None and out.frames_written < item.index:  # fill dropped slots
                out.write(last)
            last = item.output
            out.write(last)
        while last is not None and out.frames_written < stats.arrived:
            out.write(last)
    if last is None:
        raise InputError("no frame could be animated within the latency budget")
    summary = stats.summary()
    if not args.quiet:
        print(f"wrote {args.result_video}: {summary['frames_out']} of {summary['frames_in']} frames animated, "
              f"latency p50 {summary['latency_p50_ms']} ms / p95 {summary['latency_p95_ms']} ms, "
              f"{summary['frames_per_s']} frames/s")
    return args.result_video


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: Optional[int], quiet: bool):
    if quiet:
        return _NoProgress()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoProgress()
    return tqdm(total=total, unit="frame", desc="animating", leave=False, dynamic_ncols=True)


def main(argv: Optional[Sequence[str]] = None, detector_factory: Optional[Callable[[], FaceDetector]] = None) -> int:
    """Entry point of ``demo.py``: returns the exit code (0, or 2 with one line on a user mistake)."""

    def _main(args_list: List[str]) -> int:
        args = build_parser().parse_args(args_list)
        setup_logging(quiet=args.quiet, debug=args.debug)
        check_video_output_extension(args.result_video, "--result_video")
        run(args, detector_factory)
        return 0

    return run_cli(_main, argv)
