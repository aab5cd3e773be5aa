"""Animate from :class:`~dagan.inference.pipeline.AnimateOptions`: :func:`run` for files (read, crop, animate,
composite, paste back, write), :func:`stream_animator` and :func:`run_stream` for the live modes."""
from __future__ import annotations

import contextlib
import logging
from typing import Callable, Iterable, List, Optional, Tuple

import numpy as np

from ...errors import InputError
from ...faces import paste_back
from ...io.images import resize_image
from ...io.video import (DepthWriter, VideoReader, VideoWriter, camera_input, check_output_path, colorize_depth,
                         open_camera)
from ...models.dagan import DaGAN
from ..animator import Animator
from .inputs import (Detector, Source, cached_detector, driving_size, face_guide, find_anchor, frame_processor,
                     load_model, motion_faces, open_driving, output_size, prepare_source)
from .options import AnimateOptions, default_batch_size
from .overlap import BackgroundWriter, StreamStats, stream

logger = logging.getLogger("dagan")
OnFrame = Callable[[int, Optional[int]], None]


def build_animator(options: AnimateOptions, model: DaGAN, render_size: int, fps: float,
                   guide, stream: bool = False, faces=None, **runtime) -> Animator:
    """The :class:`~dagan.Animator` of ``options`` for ``model``, rendering at ``render_size``, with the face
    ``guide`` (or None) and the landmark stage's detector ``faces`` (None: keypoint motion); ``runtime``:
    ``device``, ``dtype`` and, for files, ``batch_size``."""
    motion = "keypoints" if faces is None else options.motion
    return Animator(model, output_size=render_size, guide=guide, motion=motion, face_detector=faces, **runtime,
                    **options.animator_settings(fps, stream=stream))


def motion_description(animator: Animator) -> str:
    """What moves the portrait, for the log line."""
    if animator.stage_active:
        return f"landmark motion stage (mouth fill: {animator.stage.mouth_fill})"
    return "keypoint motion" + (", face-guided" if animator.guide is not None else "")


# ------------------------------------------------------------------------------------------- output
def compose(options: AnimateOptions, source: Source, item: dict, depth_range: Optional[List[float]] = None
            ) -> np.ndarray:
    """The output frame for one animated item (``prediction``/``driving``/``driving_depth``): pasted back into
    the full source with ``paste_back``, beside source | driving | driving depth with ``side_by_side``.

    ``depth_range``: a list that holds the colour-map range of the depth panel; empty on the first call,
    where it is set from the first frame, so colours keep their meaning over the whole clip."""
    from PIL import Image

    result = item["prediction"]
    if options.paste_back:
        if source.box is not None:
            result = paste_back(source.full, result, source.box)
        else:
            h, w = source.full.shape[:2]
            result = np.asarray(Image.fromarray(result).resize((w, h), Image.BICUBIC))
    if not options.side_by_side:
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
        width = max(1, int(round(result.shape[1] * size / result.shape[0])))
        result = np.asarray(Image.fromarray(result).resize((width, size), Image.BICUBIC))
    return np.concatenate(panels + [result], axis=1)


# -------------------------------------------------------------------------------------------- files
def run(options: AnimateOptions, detector_factory: Optional[Detector] = None,
        on_frame: Optional[OnFrame] = None) -> str:
    """Animate and write ``options.result_video`` (and ``save_depth``); returns the result's path.

    ``detector_factory``: builds the face detector (default: the ``face_backend``); ``on_frame(done, total)``,
    when given, is called in the calling thread after each animated frame (``total``: the expected frame
    count, None when unknown), e.g. by the web app's progress bar. With ``options.stream``: :func:`run_stream`."""
    if options.stream:
        return run_stream(options, detector_factory)
    options.check_files()
    device, dtype = options.runtime()
    detector = cached_detector(options, device, detector_factory)
    model, description = load_model(options)
    size = model.image_size
    source = prepare_source(options, size, detector)
    out_size = output_size(options, size, source)
    source = source.at(out_size)
    guide = face_guide(options, detector)
    faces = motion_faces(options, detector)
    frame_size = driving_size(size, guide or faces)
    driving = open_driving(options, frame_size, detector)
    animator = build_animator(options, model, out_size, driving.fps, guide, faces=faces, device=device, dtype=dtype,
                              batch_size=default_batch_size(options.batch_size, size))
    animator.set_source(source.image)
    logger.info("%s, %d px, on %s (%s), %s", description, size, animator.device,
                str(animator.dtype).replace("torch.", ""), motion_description(animator))
    anchor = find_anchor(options, frame_size, source, detector)
    if anchor is not None:
        animator.set_anchor(anchor)
    cut = None
    if options.max_frames is not None and driving.total is not None and driving.reader is not None:
        declared = driving.reader.declared_frames
        if declared is None or options.max_frames < declared:
            cut = driving.total / driving.fps
    progress = _progress(driving.total, options.quiet)
    with contextlib.ExitStack() as stack:
        depth_out = stack.enter_context(DepthWriter(options.save_depth, driving.fps)) if options.save_depth else None
        out = stack.enter_context(VideoWriter(options.result_video, driving.fps, audio_from=driving.audio_from,
                                              audio_codec=driving.audio_codec, max_seconds=cut))
        depth_range: List[float] = []

        def emit(item: dict) -> None:
            out.write(compose(options, source, item, depth_range))
            if depth_out is not None:
                depth_out.write(item["driving_depth"])
            progress.update(1)

        # decode (ffmpeg's process, resized here), inference (here) and encode (writer thread) overlap
        with BackgroundWriter(emit) as writer:
            # the driving depth (a network pass per frame) only when a depth panel or file asks for it
            details = bool(options.side_by_side or options.save_depth)
            results = animator.animate_stream(driving.frames, details=details)
            for done, item in enumerate(results, start=1):
                writer.put(item if details else {"prediction": item})
                if on_frame is not None:
                    on_frame(done, driving.total)
        progress.close()
    audio = ", audio copied" if driving.audio_from else ""
    extra = f"; depth in {options.save_depth}" if options.save_depth else ""
    if not options.quiet:
        print(f"wrote {options.result_video} ({out.frames_written} frames at {driving.fps:g} fps{audio}){extra}")
    return options.result_video


# --------------------------------------------------------------------------------------------- live
def stream_animator(options: AnimateOptions, detector_factory: Optional[Detector] = None,
                    fps: Optional[float] = None) -> Tuple[Animator, str, Callable[[np.ndarray], np.ndarray]]:
    """The :class:`~dagan.Animator` of the live modes (``demo.py --stream``, the web app's webcam), set up as
    :func:`run` sets up the file demo (model, runtime, ``size``, ``smooth`` at ``fps``): the source of
    ``source_image`` set and the kernels warmed up; the first frame it animates anchors relative motion.
    Returns it, a one-line model description, and what each live driving frame goes through before the
    animator: the face crop with a smoothed box (``crop``), else a resize to the size the animator needs."""
    options.check_source()
    device, dtype = options.runtime()
    model, description = load_model(options)
    detector = cached_detector(options, device, detector_factory)
    source = prepare_source(options, model.image_size, detector)
    source = source.at(output_size(options, model.image_size, source))
    animator = build_animator(options, model, source.image.shape[0], fps or 30.0, face_guide(options, detector),
                              stream=True, faces=motion_faces(options, detector), device=device, dtype=dtype)
    animator.set_source(source.image)
    animator(source.image)  # warm the kernels up before the clock starts; the first live frame anchors motion
    animator.reset()
    prepare = frame_processor(options, driving_size(animator.size, animator.face_detector), detector)
    return animator, description, prepare


def run_stream(options: AnimateOptions, detector_factory: Optional[Detector] = None,
               stats: Optional[StreamStats] = None) -> str:
    """``demo.py --stream``: animate a camera (``driving_video`` ``0``/``/dev/videoN``) or a file played at its
    own frame rate, dropping frames that would exceed ``latency_budget_ms``; the animated frames go to
    ``result_video`` (a dropped frame repeats the last result, so timing and audio stay in sync). ``stats``:
    collects the latencies and counts (a fresh :class:`StreamStats` when not given)."""
    if options.driving_video is None:
        raise InputError("--stream needs --driving_video (a camera index, /dev/videoN or a video file)")
    file_only = [flag for flag, given in (("--paste_back", options.paste_back),
                                          ("--side_by_side", options.side_by_side),
                                          ("--save_depth", options.save_depth),
                                          ("--find_best_frame", options.find_best_frame),
                                          ("--best_frame", options.best_frame is not None)) if given]
    if file_only:
        raise InputError(f"--stream writes the animated face only: {', '.join(file_only)} need the file mode "
                         f"(leave out --stream)")
    camera = camera_input(options.driving_video) is not None
    check_output_path(options.result_video, options.overwrite,
                      (options.source_image,) + (() if camera else (options.driving_video,)))
    if camera:
        frames: Iterable[np.ndarray] = open_camera(options.driving_video)
        fps, audio = 30.0, None
    else:
        reader = VideoReader(options.driving_video, max_frames=options.max_frames)
        frames, fps, audio = reader, reader.fps, (reader.path if reader.has_audio else None)
    animator, description, process = stream_animator(options, detector_factory, fps)
    if options.max_frames is not None:
        frames = (f for i, f in zip(range(options.max_frames), frames))
    budget = options.latency_budget_ms if options.latency_budget_ms and options.latency_budget_ms > 0 else None
    stats = StreamStats() if stats is None else stats
    logger.info("%s, %d px, streaming on %s at %g fps, latency budget %s", description, animator.size, animator.device,
                fps, f"{budget:g} ms" if budget else "none")
    # cropping / resizing run with the animation (the stream's reader thread only reads: a reader thread
    # that resized with torch slowed the 2-core demo down), and only on the frames that are animated
    last: Optional[np.ndarray] = None
    with VideoWriter(options.result_video, fps, audio_from=audio) as out:
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
    if not options.quiet:
        print(f"wrote {options.result_video}: {summary['frames_out']} of {summary['frames_in']} frames animated, "
              f"latency p50 {summary['latency_p50_ms']} ms / p95 {summary['latency_p95_ms']} ms, "
              f"{summary['frames_per_s']} frames/s")
    return options.result_video


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
