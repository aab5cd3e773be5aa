"""Streaming video decoding through ffmpeg, one frame in memory at a time: the one video decoder of the
toolkit (files for training, evaluation and the demo, and cameras).

:class:`VideoReader` decodes any size / fps / pixel format (grey, yuv420p, 10-bit, ...) to ``(H, W, 3)`` uint8
RGB frames, one per decoded frame (variable frame rates are not resampled to a constant one, which would
duplicate or drop frames), knows the fps, the declared length and whether there is an audio track, and notices
a truncated file (fewer decodable frames than the container declares). :func:`decode_video` (a whole clip at a
size, for training) and :func:`open_camera` are built on it.

Truncated inputs are an error (:class:`~dagan.errors.InputError`), not a warning: a result that silently
stops early is worse than a clear message.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from ...errors import InputError

logger = logging.getLogger("dagan")
PathLike = Union[str, os.PathLike]

#: a decode may come up this many frames short of the declared length (container rounding, audio tails)
TRUNCATION_TOLERANCE = (3, 0.05)
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".gif", ".mpg", ".mpeg", ".wmv", ".flv")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def is_image_path(path: PathLike) -> bool:
    return os.fspath(path).lower().endswith(IMAGE_EXTENSIONS)


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


class VideoReader:
    """Iterate over the frames of a video file as ``(H, W, 3)`` uint8 RGB arrays, streaming.

    Attributes: ``fps``, ``size`` ``(width, height)``, ``duration`` (s), ``declared_frames`` (from the
    container header, may be ``None``), ``audio_codec`` (``None`` without audio), ``frames_read``.

    Example::

        >>> reader = VideoReader("driving.mp4")
        >>> for frame in reader:            # frame: (H, W, 3) uint8
        ...     pass

    Iterating raises :class:`InputError` when no frame decodes, or (``check_complete=True``) when fewer
    frames decode than the header declares (truncated or corrupt file). ``max_frames`` stops early on
    purpose, which is not a truncation.

    ``filters``: an ffmpeg filter graph applied before the frames reach Python (e.g. ``"scale=480:-2"`` to
    decode a small copy for face detection without piping full-size frames); ``size`` is then the filtered
    size and ``source_size`` the decoded one. Filters that drop frames (``select``) leave the length
    unchecked.
    """

    def __init__(self, path: PathLike, max_frames: Optional[int] = None, check_complete: bool = True,
                 input_params: Sequence[str] = (), live: bool = False, filters: Optional[str] = None):
        import imageio_ffmpeg

        self.path = os.fspath(path)
        self.live = live  # a camera: no length, nothing to check against
        if not live or self.path.startswith("/dev/"):
            if not os.path.exists(self.path):
                raise InputError(f"{'camera' if live else 'video'} not found: {self.path}")
        if not live:
            if os.path.isdir(self.path):
                raise InputError(f"expected a video file but {self.path} is a directory")
            if os.path.getsize(self.path) == 0:
                raise InputError(f"video {self.path} is empty (0 bytes)")
        self.max_frames = None if max_frames is None else max(0, int(max_frames))
        self.check_complete = check_complete and not live and not (filters and "select" in filters)
        self.frames_read = 0
        try:
            # passthrough: one output frame per decoded frame (variable frame rate clips are not resampled
            # to a constant rate, which would duplicate frames)
            output_params = ([] if live else ["-fps_mode", "passthrough"]) + (["-vf", filters] if filters else [])
            gen = imageio_ffmpeg.read_frames(self.path, pix_fmt="rgb24", input_params=list(input_params),
                                             output_params=output_params)
            # it warns when the frames' size differs from the stream's: filters resize, and ffmpeg turns a phone
            # video upright by its rotation metadata; size and source_size below say both
            with _quiet_logger("imageio_ffmpeg"):
                meta = next(gen)
        except (IOError, OSError, RuntimeError, StopIteration) as exc:
            raise InputError(f"cannot read video {self.path}: not a video file or no video stream "
                             f"({_first_line(exc)})") from None
        self._gen = gen
        self.meta = meta
        self.size: Tuple[int, int] = tuple(int(v) for v in meta["size"])  # type: ignore[assignment]
        self.source_size: Tuple[int, int] = tuple(int(v) for v in meta.get("source_size") or meta["size"])
        fps = float(meta.get("fps") or 0.0)
        if not np.isfinite(fps) or fps <= 0:
            logger.warning("video %s declares no frame rate: using 25 fps", self.path)
            fps = 25.0
        self.fps = fps
        duration = meta.get("duration")
        self.duration = float(duration) if duration and np.isfinite(duration) and duration > 0 else None
        self.declared_frames = int(round(self.duration * self.fps)) if self.duration else None
        self.audio_codec: Optional[str] = meta.get("audio_codec")

    @property
    def has_audio(self) -> bool:
        return self.audio_codec is not None

    @property
    def expected_frames(self) -> Optional[int]:
        """How many frames iteration should yield (declared length capped by ``max_frames``)."""
        if self.declared_frames is None:
            return self.max_frames
        return self.declared_frames if self.max_frames is None else min(self.declared_frames, self.max_frames)

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._gen is None:
            raise InputError(f"video {self.path} was already read; open a new VideoReader")
        width, height = self.size
        gen, self._gen = self._gen, None
        try:
            while self.max_frames is None or self.frames_read < self.max_frames:
                try:
                    raw = next(gen)
                except StopIteration:
                    break
                except (RuntimeError, IOError) as exc:
                    raise InputError(f"video {self.path} is corrupt: decoding stopped after "
                                     f"{self.frames_read} frames ({_first_line(exc)})") from None
                self.frames_read += 1
                yield np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3)
        finally:
            gen.close()
        self._check_length()

    def check_integrity(self) -> int:
        """Count the video packets without decoding (fast) and raise :class:`InputError` when there are none
        or fewer than the header declares (a truncated file), before any work is spent on it. Returns the
        count. Iteration checks again on the decoded frames."""
        import imageio_ffmpeg

        try:
            count, _ = imageio_ffmpeg.count_frames_and_secs(self.path)
        except (RuntimeError, IOError, ValueError) as exc:
            raise InputError(f"video {self.path} is corrupt: {_first_line(exc)}") from None
        if count == 0:
            raise InputError(f"video {self.path} has no decodable frames")
        needed = self.expected_frames
        if self.check_complete and needed:
            slack = 0 if self.max_frames is not None and needed == self.max_frames else \
                max(TRUNCATION_TOLERANCE[0], int(TRUNCATION_TOLERANCE[1] * needed))
            if count < needed - slack:
                raise InputError(f"video {self.path} is truncated or corrupt: only {count} of the "
                                 f"{self.declared_frames} frames its header declares are present")
        return count

    def _check_length(self) -> None:
        if self.frames_read == 0:
            raise InputError(f"video {self.path} has no decodable frames")
        stopped_on_purpose = self.max_frames is not None and self.frames_read >= self.max_frames
        if self.check_complete and not stopped_on_purpose and self.declared_frames:
            slack = max(TRUNCATION_TOLERANCE[0], int(TRUNCATION_TOLERANCE[1] * self.declared_frames))
            if self.frames_read < self.declared_frames - slack:
                raise InputError(f"video {self.path} is truncated or corrupt: only {self.frames_read} of the "
                                 f"{self.declared_frames} frames its header declares could be decoded")

    def close(self) -> None:
        if self._gen is not None:
            self._gen.close()
            self._gen = None


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """Silence the warnings of logger ``name`` for the duration of the block."""
    log = logging.getLogger(name)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def decode_video(path: PathLike, size: Sequence[int]) -> Tuple[np.ndarray, int]:
    """A whole video file at ``size = (H, W)`` (:func:`~dagan.io.images.fit_frames`, in blocks as frames
    arrive): ``(frames (T, H, W, 3) uint8, declared frame count or 0)``. A file that stops decoding early
    keeps the frames read so far (a warning says so); one without any frame raises :class:`InputError`."""
    from ..images import fit_frames

    reader = VideoReader(path, check_complete=False)
    blocks, pending = [], []
    try:
        for frame in reader:
            pending.append(frame)
            if len(pending) == 64:
                blocks.append(fit_frames(np.stack(pending), size))
                pending = []
    except InputError as exc:
        if reader.frames_read == 0:
            raise
        logger.warning("video %s stopped decoding early: %s", reader.path, exc)
    if pending:
        blocks.append(fit_frames(np.stack(pending), size))
    frames = np.concatenate(blocks) if blocks else np.zeros((0, int(size[0]), int(size[1]), 3), np.uint8)
    return frames, reader.declared_frames or 0


def camera_input(spec: str) -> Optional[Tuple[str, List[str]]]:
    """``(ffmpeg input, input options)`` when ``spec`` names a camera (``"0"``, ``"/dev/video2"``), else None."""
    spec = str(spec)
    if spec.isdigit():
        if sys.platform.startswith("linux"):
            return f"/dev/video{spec}", ["-f", "v4l2"]
        if sys.platform == "darwin":
            return spec, ["-f", "avfoundation", "-framerate", "30"]
        if sys.platform.startswith("win"):
            return f"video={spec}", ["-f", "dshow"]
        raise InputError(f"camera {spec}: unsupported platform {sys.platform}; give a device path or a file")
    if spec.startswith("/dev/video"):
        return spec, ["-f", "v4l2"]
    return None


def open_camera(spec: str) -> Iterator[np.ndarray]:
    """Frames ``(H, W, 3)`` uint8 RGB from a camera (see :func:`camera_input`), through :class:`VideoReader`."""
    target = camera_input(spec)
    if target is None:
        raise InputError(f"{spec} is not a camera (use 0, 1, ... or /dev/videoN)")
    path, options = target
    try:
        reader = VideoReader(path, input_params=options, live=True)
    except InputError as exc:
        raise InputError(f"cannot open camera {spec}: {exc}") from None
    yield from reader


def read_video(path: PathLike, max_frames: Optional[int] = None) -> Tuple[np.ndarray, float]:
    """Whole video as ``(T, H, W, 3)`` uint8 and its fps (convenience for short clips; not streaming)."""
    reader = VideoReader(path, max_frames=max_frames)
    frames = np.stack(list(reader))
    return frames, reader.fps



def probe(path: PathLike) -> dict:
    """Frame count (decoded), fps, size and audio codec of a video: for tests and checks, reads the file."""
    import imageio_ffmpeg

    path = os.fspath(path)
    gen = imageio_ffmpeg.read_frames(path)
    meta = next(gen)
    gen.close()
    frames, seconds = imageio_ffmpeg.count_frames_and_secs(path)
    return {"frames": frames, "seconds": seconds, "fps": meta.get("fps"), "size": tuple(meta["size"]),
            "audio_codec": meta.get("audio_codec")}



def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [line for line in text.splitlines() if line.strip() and "===" not in line]
    return (lines[0] if lines else type(exc).__name__)[:200]
