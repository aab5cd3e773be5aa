"""Streaming video encoding through ffmpeg: :class:`VideoWriter` encodes H.264 (VP9 for ``.webm``) into a
temporary file next to the target and renames it at the end, after checking ffmpeg's exit status (a failure
raises :class:`~dagan.errors.OutputError` with ffmpeg's message); on any error the temporary file is removed,
so no partial output is ever left behind. The audio track of another file (the driving video) can be copied in.
Output paths and extensions are checked before any work is done (:func:`check_output_path`,
:func:`check_video_output_extension`).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import List, Optional, Tuple

import numpy as np

from ...errors import InputError, OutputError
from ...utils import default_file_mode
from .reader import PathLike, ffmpeg_exe

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
    ``max_seconds`` cuts the audio to the video length when only part of the driving video is used;
    ``audio_start`` (s) takes the audio from that point of ``audio_from`` on (a clip cut out of a longer video).

    Example::

        >>> with VideoWriter("result.mp4", fps=25, audio_from="driving.mp4") as out:
        ...     for frame in frames:
        ...         out.write(frame)
    """

    def __init__(self, path: PathLike, fps: float, audio_from: Optional[PathLike] = None,
                 audio_codec: Optional[str] = None, overwrite: bool = True, crf: int = 18,
                 max_seconds: Optional[float] = None, audio_start: float = 0.0):
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
        self.audio_start = max(0.0, float(audio_start))
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
            seek = ["-ss", f"{self.audio_start:.6f}"] if self.audio_start > 0 else []
            cmd += seek + ["-i", self.audio_from, "-map", "0:v:0", "-map", "1:a:0?",
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



def _default_permissions(path: str) -> None:
    """Temporary files are created 0600; give results the permissions a plain ``open()`` would."""
    with contextlib.suppress(OSError):
        os.chmod(path, default_file_mode())
