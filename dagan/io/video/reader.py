"""Streaming video I/O through ffmpeg, one frame in memory at a time: the one video decoder of the toolkit
(files for training, evaluation and the demo, and cameras), and the encoder.

* :class:`VideoReader` decodes any size / fps / pixel format (grey, yuv420p, 10-bit, ...) to ``(H, W, 3)``
  uint8 RGB frames, one per decoded frame (variable frame rates are not resampled to a constant one, which
  would duplicate or drop frames), knows the fps, the declared length and whether there is an audio track,
  and notices a truncated file (fewer decodable frames than the container declares). :func:`decode_video`
  (a whole clip at a size, for training) and :func:`open_camera` are built on it.
* :class:`VideoWriter` encodes H.264 (VP9 for ``.webm``) into a temporary file next to the target and renames
  it at the end, after checking ffmpeg's exit status (a failure raises :class:`~dagan.errors.OutputError` with
  ffmpeg's message); on any error the temporary file is removed, so no partial output is ever left behind. The audio track of
  another file (the driving video) can be copied in.

Truncated inputs are an error (:class:`~dagan.errors.InputError`), not a warning: a result that silently
stops early is worse than a clear message.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import InputError, OutputError
from ..utils import default_file_mode

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
    """

    def __init__(self, path: PathLike, max_frames: Optional[int] = None, check_complete: bool = True,
                 input_params: Sequence[str] = (), live: bool = False):
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
        self.check_complete = check_complete and not live
        self.frames_read = 0
        try:
            # passthrough: one output frame per decoded frame (variable frame rate clips are not resampled
            # to a constant rate, which would duplicate frames)
            gen = imageio_ffmpeg.read_frames(self.path, pix_fmt="rgb24", input_params=list(input_params),
                                             output_params=[] if live else ["-fps_mode", "passthrough"])
            meta = next(gen)
        except (IOError, OSError, RuntimeError, StopIteration) as exc:
            raise InputError(f"cannot read video {self.path}: not a video file or no video stream "
                             f"({_first_line(exc)})") from None
        self._gen = gen
        self.meta = meta
        self.size: Tuple[int, int] = tuple(int(v) for v in meta["size"])  # type: ignore[assignment]
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


def decode_video(path: PathLike, size: Sequence[int]) -> Tuple[np.ndarray, int]:
    """A whole video file at ``size = (H, W)`` (:func:`~dagan.io.images.fit_frames`, in blocks as frames
    arrive): ``(frames (T, H, W, 3) uint8, declared frame count or 0)``. A file that stops decoding early
    keeps the frames read so far (a warning says so); one without any frame raises :class:`InputError`."""
    from .images import fit_frames

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


def check_output_path(path: PathLike, overwrite: bool = False, inputs: Tuple[Optional[PathLike], ...] = ()) -> str:
    """Validate an output path: never one of the inputs; an existing file only with ``overwrite``."""
    path = os.fspath(path)
    for src in inputs:
        if src is not None and os.path.exists(os.fspath(src)) and os.path.exists(path) \
                and os.path.samefile(path, os.fspath(src)):
            raise OutputError(f"output {path} is one of the inputs: choose another name")
    if os.path.isdir(path):
        raise OutputError(f"output {path} is a directory: give a file name such as result.mp4")
    if os.path.exists(path) and not overwrite:
        raise OutputError(f"{path} already exists: pass --overwrite to replace it or choose another name")
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.exists(folder) and not os.access(folder, os.W_OK):
        raise OutputError(f"cannot write to folder {folder}")
    return path


#: output containers the writer can fill: extension -> (video codec, extra encoder options)
VIDEO_OUTPUT_CODECS = {
    ".mp4": ("libx264", ["-preset", "veryfast", "-movflags", "+faststart"]),
    ".m4v": ("libx264", ["-preset", "veryfast", "-movflags", "+faststart"]),
    ".mov": ("libx264", ["-preset", "veryfast", "-movflags", "+faststart"]),
    ".mkv": ("libx264", ["-preset", "veryfast"]),
    ".avi": ("libx264", ["-preset", "veryfast"]),
    ".flv": ("libx264", ["-preset", "veryfast"]),
    ".webm": ("libvpx-vp9", ["-b:v", "0", "-deadline", "realtime", "-cpu-used", "8"]),
}
VIDEO_OUTPUT_EXTENSIONS = tuple(VIDEO_OUTPUT_CODECS)


def check_video_output_extension(path: PathLike, what: str = "output video") -> str:
    """Refuse an output name whose extension the writer cannot encode, before any work is done."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in VIDEO_OUTPUT_CODECS:
        raise OutputError(f"{what} {path}: cannot write {ext or 'files without an extension'} "
                          f"(use one of {', '.join(VIDEO_OUTPUT_EXTENSIONS)})")
    return path


def _audio_codec_for(container: str, codec: Optional[str]) -> str:
    if container in (".mp4", ".m4v", ".mov") and codec in ("aac", "mp3", "alac"):
        return "copy"
    if container == ".mkv":
        return "copy"
    if container == ".webm":
        return "copy" if codec in ("opus", "vorbis") else "libopus"
    return "aac"


class _Encoder:
    """One ffmpeg process fed raw RGB frames on stdin; its exit status and stderr are checked at the end.

    stderr goes to a temporary file (a pipe could fill up and block ffmpeg); ffmpeg runs in its own session,
    so Ctrl-C reaches only Python, which then kills it.
    """

    def __init__(self, cmd: List[str], target: str):
        import subprocess

        self.target = target
        self._stderr = tempfile.TemporaryFile()
        try:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr,
                                          start_new_session=True)
        except OSError as exc:
            self._stderr.close()
            raise OutputError(f"cannot start ffmpeg to write {target}: {exc}") from None

    def _error(self, what: str) -> OutputError:
        self._stderr.seek(0)
        text = self._stderr.read().decode("utf-8", "replace")
        return OutputError(f"{what} {self.target} failed (ffmpeg exit status {self._proc.returncode}): "
                           f"{ffmpeg_message(text)}")

    def write(self, frame: np.ndarray) -> None:
        """Send one contiguous ``(H, W, 3)`` uint8 frame; a dead ffmpeg raises :class:`OutputError`."""
        try:
            self._proc.stdin.write(memoryview(frame).cast("B"))
        except OSError:
            self._proc.wait()
            raise self._error("writing") from None

    def finish(self) -> None:
        """Close stdin, wait for ffmpeg and raise :class:`OutputError` unless it exited with status 0."""
        try:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
            if self._proc.wait() != 0:
                raise self._error("encoding")
        finally:
            self._stderr.close()

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self._proc.kill()
        with contextlib.suppress(OSError):
            self._proc.stdin.close()
        self._proc.wait()
        self._stderr.close()


def ffmpeg_message(stderr: str) -> str:
    """The telling line of ffmpeg's stderr (its first error), without the ``[muxer @ 0x...]`` prefix."""
    import re

    lines = [re.sub(r"^\[[^\]]*@ 0x[0-9a-fA-F]+\]\s*", "", line).strip() for line in stderr.splitlines()]
    lines = [line for line in lines if line and not line.startswith(("Conversion failed", "Error opening output"))]
    return (lines[0] if lines else "no error message")[:300]


class VideoWriter:
    """Write ``(H, W, 3)`` uint8 frames to a video, streaming, atomically.

    The file is encoded under a temporary name in the target folder and renamed to ``path`` when the
    ``with`` block ends without error; on error the temporary file is deleted. Odd frame sizes are padded
    by one pixel (H.264 needs even sizes).

    ``audio_from``: copy the first audio track of this file (e.g. the driving video) into the result;
    ``max_seconds`` cuts the audio to the video length when only part of the driving video is used.

    Example::

        >>> with VideoWriter("result.mp4", fps=25, audio_from="driving.mp4") as out:
        ...     for frame in frames:
        ...         out.write(frame)
    """

    def __init__(self, path: PathLike, fps: float, audio_from: Optional[PathLike] = None,
                 audio_codec: Optional[str] = None, overwrite: bool = True, crf: int = 18,
                 max_seconds: Optional[float] = None):
        self.path = check_video_output_extension(path)
        if not overwrite:
            check_output_path(self.path, overwrite=False)
        if not fps or fps <= 0:
            raise OutputError(f"invalid frame rate {fps} for {self.path}")
        self.fps = float(fps)
        self.audio_from = os.fspath(audio_from) if audio_from is not None else None
        self.audio_codec = audio_codec
        self.crf = int(crf)
        self.max_seconds = max_seconds
        self.frames_written = 0
        self._encoder = None
        self._tmp: Optional[str] = None
        self._size: Optional[Tuple[int, int]] = None

    def __enter__(self) -> "VideoWriter":
        folder = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(folder, exist_ok=True)
            ext = os.path.splitext(self.path)[1]
            fd, self._tmp = tempfile.mkstemp(prefix="." + os.path.basename(self.path) + ".partial.", suffix=ext,
                                             dir=folder)
            os.close(fd)
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {exc}") from None
        return self

    def _open(self, height: int, width: int) -> None:
        from fractions import Fraction

        ext = os.path.splitext(self.path)[1].lower()
        codec, options = VIDEO_OUTPUT_CODECS[ext]
        self._size = (width + width % 2, height + height % 2)
        cmd = [ffmpeg_exe(), "-y", "-v", "error", "-f", "rawvideo", "-vcodec", "rawvideo",
               "-s", f"{self._size[0]}x{self._size[1]}", "-pix_fmt", "rgb24",
               "-r", str(Fraction(self.fps).limit_denominator()), "-i", "-"]
        if self.audio_from is not None:
            cmd += ["-i", self.audio_from, "-map", "0:v:0", "-map", "1:a:0?",
                    "-acodec", _audio_codec_for(ext, self.audio_codec)]
        else:
            cmd += ["-an"]
        cmd += ["-vcodec", codec, "-pix_fmt", "yuv420p", "-crf", str(self.crf)] + options
        if self.max_seconds is not None and self.audio_from is not None:
            cmd += ["-t", f"{self.max_seconds:.6f}"]
        cmd += [self._tmp]
        self._encoder = _Encoder(cmd, self.path)

    def write(self, frame: np.ndarray) -> None:
        """Append one ``(H, W, 3)`` uint8 frame (all frames must have the size of the first)."""
        if self._tmp is None:
            raise OutputError("VideoWriter must be used as a context manager (with VideoWriter(...) as out:)")
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise InputError(f"frames to write must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
        if self._encoder is None:
            self._open(frame.shape[0], frame.shape[1])
        width, height = self._size
        if frame.shape[0] != height or frame.shape[1] != width:
            if frame.shape[0] + frame.shape[0] % 2 != height or frame.shape[1] + frame.shape[1] % 2 != width:
                raise InputError(f"frame {self.frames_written} is {frame.shape[1]}x{frame.shape[0]} but the video "
                                 f"is {width}x{height}")
            frame = np.pad(frame, ((0, height - frame.shape[0]), (0, width - frame.shape[1]), (0, 0)), mode="edge")
        self._encoder.write(np.ascontiguousarray(frame))
        self.frames_written += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        encoder, self._encoder = self._encoder, None
        try:
            if encoder is not None:
                if exc_type is None:
                    encoder.finish()
                else:
                    encoder.kill()
            if exc_type is None:
                if self.frames_written == 0:
                    raise OutputError(f"no frames were written to {self.path}")
                _default_permissions(self._tmp)
                os.replace(self._tmp, self.path)
                self._tmp = None
        finally:
            if self._tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(self._tmp)
                self._tmp = None


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


def _default_permissions(path: str) -> None:
    """Temporary files are created 0600; give results the permissions a plain ``open()`` would."""
    with contextlib.suppress(OSError):
        os.chmod(path, default_file_mode())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [line for line in text.splitlines() if line.strip() and "===" not in line]
    return (lines[0] if lines else type(exc).__name__)[:200]


# ---------------------------------------------------------------------------------------------- depth
_TURBO = (np.array([[0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943],
                    [0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604],
                    [0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973]]))


def colorize_depth(depth: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``(H, W)`` float depth (disparity: larger = nearer) -> ``(H, W, 3)`` uint8 with the Turbo colour map
    (polynomial fit by Mikhailov, 2019): far = blue, near = red. ``lo``/``hi`` fix the range."""
    x = np.clip((np.asarray(depth, dtype=np.float64) - lo) / max(hi - lo, 1e-8), 0.0, 1.0)
    powers = np.stack([np.ones_like(x), x, x ** 2, x ** 3, x ** 4, x ** 5], axis=-1)
    rgb = np.clip(powers @ _TURBO.T, 0.0, 1.0)
    return np.round(rgb * 255.0).astype(np.uint8)


class DepthWriter:
    """Stream per-frame depth maps ``(H, W)`` float to ``path``, atomically.

    * ``.mp4`` (or any video extension): colour-mapped for viewing; the value range is fixed from the
      first frame (1st-99th percentile, widened by 10 %) so colours mean the same depth in every frame.
    * ``.npz``: raw values as float16 under key ``depth`` ``(T, H, W)``, plus ``fps``. Frames are spooled to a
      temporary file while streaming and packed at the end, so memory stays flat.
    """

    def __init__(self, path: PathLike, fps: float):
        self.path = os.fspath(path)
        self.fps = float(fps)
        self.kind = "npz" if self.path.lower().endswith(".npz") else "video"
        if self.kind == "video" and not self.path.lower().endswith(VIDEO_OUTPUT_EXTENSIONS):
            raise OutputError(f"--save-depth must end in .mp4 (colour-mapped video) or .npz (raw float16), "
                              f"got {self.path}")
        self.range: Optional[Tuple[float, float]] = None
        self.frames_written = 0
        self._video: Optional[VideoWriter] = None
        self._spool = None
        self._shape: Optional[Tuple[int, int]] = None

    def __enter__(self) -> "DepthWriter":
        if self.kind == "video":
            self._video = VideoWriter(self.path, self.fps).__enter__()
        else:
            folder = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(folder, exist_ok=True)
            self._spool = tempfile.TemporaryFile(dir=folder)
        return self

    def write(self, depth: np.ndarray) -> None:
        depth = np.asarray(depth, dtype=np.float32)
        if self._shape is None:
            self._shape = depth.shape
        if self.kind == "video":
            if self.range is None:
                lo, hi = np.percentile(depth, [1, 99])
                pad = 0.1 * max(float(hi - lo), 1e-3)
                self.range = (float(lo) - pad, float(hi) + pad)
            self._video.write(colorize_depth(depth, *self.range))
        else:
            self._spool.write(depth.astype(np.float16).tobytes())
        self.frames_written += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.kind == "video":
            self._video.__exit__(exc_type, exc, tb)
            return
        spool, self._spool = self._spool, None
        try:
            if exc_type is None:
                if self.frames_written == 0:
                    raise OutputError(f"no depth frames were written to {self.path}")
                self._pack(spool)
        finally:
            spool.close()

    def _pack(self, spool) -> None:
        import zipfile

        from ..utils import atomic_write

        shape = (self.frames_written,) + tuple(self._shape)

        def write(fh):
            with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
                with archive.open("depth.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array_header_1_0(member, {"descr": np.lib.format.dtype_to_descr(
                        np.dtype(np.float16)), "fortran_order": False, "shape": shape})
                    spool.seek(0)
                    while True:
                        chunk = spool.read(1 << 22)
                        if not chunk:
                            break
                        member.write(chunk)
                with archive.open("fps.npy", "w") as member:
                    np.lib.format.write_array(member, np.asarray(self.fps, dtype=np.float64))

        atomic_write(self.path, write)
        _default_permissions(self.path)
