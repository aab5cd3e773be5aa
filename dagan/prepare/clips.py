"""The crop of a face track and the clip files, as ``train.py`` reads them (``root/train|test/<clip>``).

The crop (the FOMM/DaGAN protocol, one fixed box per clip so the crop never jitters): the union of the
track's face boxes, enlarged, made square, clamped into the frame, or padded with black where it cannot fit,
resized with antialiasing. The side is ``max(enlarge x median face size, UNION_BORDER x union extent)``: the
face keeps the scale of the shared sample clips (``enlarge`` 1.8 puts the face box at about 0.55 of the frame)
and the union of all its positions stays inside with a border. Near a frame's edge the square is shifted inside;
larger than the frame it is shrunk to the frame while the union still fits, and padded only beyond that.

Clips are written under a temporary name and renamed when complete: mp4 (H.264, CRF 18, the source fps,
optionally its audio) through :class:`~dagan.io.video.VideoWriter`, or a folder of PNG frames.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

from ..errors import InputError, OutputError
from ..faces import crop_square
from ..io.video import VideoReader, VideoWriter
from .tracks import FaceTrack, VideoInfo, union_box

#: the crop covers the union of the face boxes with this much to spare
UNION_BORDER = 1.15
CLIP_FORMATS = ("mp4", "png")
#: the columns of metadata.csv (FOMM's vox-metadata.csv, plus the source file and the frame count)
METADATA_COLUMNS = ("video_id", "source", "person_id", "start", "end", "frames", "bbox", "fps", "width", "height",
                    "partition")


@dataclass
class Clip:
    """One clip to write: frames ``start .. end - 1`` of the video file ``source``, cropped to ``box``
    ``(x0, y0, side)`` (integer pixels of the full-resolution frame, may reach outside it: that part is black)."""

    name: str
    source: str
    person: str
    start: int
    end: int
    box: Tuple[int, int, int]
    partition: str

    def row(self, info: VideoInfo) -> Dict[str, object]:
        """The clip's line of ``metadata.csv``; ``bbox`` is ``left-top-right-bottom`` as in FOMM's file."""
        x0, y0, side = self.box
        return {"video_id": self.name, "source": self.source, "person_id": self.person, "start": self.start,
                "end": self.end, "frames": self.end - self.start, "bbox": f"{x0}-{y0}-{x0 + side}-{y0 + side}",
                "fps": round(info.fps, 3), "width": info.size[0], "height": info.size[1], "partition": self.partition}


def crop_box(boxes: np.ndarray, frame_size: Tuple[int, int], enlarge: float) -> Tuple[int, int, int]:
    """The crop ``(x0, y0, side)`` of a track: ``boxes`` ``(T, 4)`` face boxes ``(x0, y0, x1, y1)`` (NaN rows
    ignored) in a frame of ``frame_size`` ``(W, H)``. Square, centred on the union of the boxes; a side larger
    than the frame is shrunk to fit as long as the union still fits (no black bars), and the square is shifted
    into the frame along each axis where it fits (else it stays centred and :func:`crop_frame` pads)."""
    boxes = np.asarray(boxes, dtype=np.float64)
    boxes = boxes[~np.isnan(boxes).any(axis=1)]
    union = union_box(boxes)
    sizes = (boxes[:, 2:] - boxes[:, :2]).max(axis=1)
    extent = float((union[2:] - union[:2]).max())
    side = max(enlarge * float(np.median(sizes)), UNION_BORDER * extent)
    side = int(round(max(min(side, float(min(frame_size))), extent)))
    corner = []
    for axis, limit in enumerate(frame_size):
        start = (union[axis] + union[axis + 2]) / 2.0 - side / 2.0
        if side <= limit:
            start = min(max(start, 0.0), limit - side)
        corner.append(int(round(start)))
    return corner[0], corner[1], side


def crop_frame(frame: np.ndarray, box: Tuple[float, float, float], size: int) -> np.ndarray:
    """``frame`` ``(H, W, 3)`` uint8 cut to ``box`` ``(x0, y0, side)`` (pixels, black outside the frame) and
    resized to ``(size, size, 3)`` uint8 with antialiasing (:func:`~dagan.faces.crop_square`)."""
    x0, y0, side = box
    height, width = frame.shape[:2]
    left, top = max(0, int(np.ceil(-x0))), max(0, int(np.ceil(-y0)))
    right, bottom = max(0, int(np.ceil(x0 + side - width))), max(0, int(np.ceil(y0 + side - height)))
    if left or top or right or bottom:
        frame = np.pad(frame, ((top, bottom), (left, right), (0, 0)))
    return crop_square(frame, (x0 + left, y0 + top, side), size)


def clip_name(person: str, video: str, start: int, end: int) -> str:
    """FOMM's clip naming: ``person#video#start#end`` (frame numbers zero-padded to 6 digits)."""
    return f"{person}#{video}#{start:06d}#{end:06d}"


def clip_path(out: str, clip: Clip, fmt: str) -> str:
    return os.path.join(out, clip.partition, clip.name + (".mp4" if fmt == "mp4" else ""))


def plan_clips(tracks: Sequence[FaceTrack], info: VideoInfo, source: str, video: str, persons: Sequence[str],
               partitions: Sequence[str], enlarge: float) -> List[Clip]:
    """One :class:`Clip` per track of the video file ``source`` (named ``video`` in clip names); ``persons[i]``
    and ``partitions[i]`` are the person id and the split of ``tracks[i]``."""
    clips = []
    for track, person, partition in zip(tracks, persons, partitions):
        box = crop_box(track.boxes, info.size, enlarge)
        clips.append(Clip(clip_name(person, video, track.start, track.end), source, person, track.start,
                          track.end, box, partition))
    return clips


class _PngFolder:
    """PNG frames ``0000000.png ...`` written into a hidden temporary folder, renamed to ``path`` when complete
    (an interrupted clip never looks like a finished one; ``train.py`` skips hidden folders)."""

    def __init__(self, path: str):
        self.path = path
        self.frames_written = 0

    def __enter__(self) -> "_PngFolder":
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, exist_ok=True)
        self.tmp = tempfile.mkdtemp(prefix="." + os.path.basename(self.path) + ".partial.", dir=parent)
        return self

    def write(self, frame: np.ndarray) -> None:
        from PIL import Image

        Image.fromarray(frame).save(os.path.join(self.tmp, f"{self.frames_written:07d}.png"), compress_level=1)
        self.frames_written += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None and self.frames_written:
            try:
                os.replace(self.tmp, self.path)
                return
            except OSError as error:
                shutil.rmtree(self.tmp, ignore_errors=True)
                raise OutputError(f"cannot write {self.path}: {error}") from None
        shutil.rmtree(self.tmp, ignore_errors=True)


def _region(boxes: Sequence[Tuple[int, int, int]], frame_size: Tuple[int, int]) -> Tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)``: the part of a ``frame_size`` ``(W, H)`` frame that ``boxes`` ``(x0, y0, side)`` cover."""
    width, height = frame_size
    x0 = max(0, min(b[0] for b in boxes))
    y0 = max(0, min(b[1] for b in boxes))
    x1 = min(width, max(b[0] + b[2] for b in boxes))
    y1 = min(height, max(b[1] + b[2] for b in boxes))
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def write_clips(path: str, clips: Sequence[Clip], info: VideoInfo, out: str, size: int = 256, fmt: str = "mp4",
                audio: bool = False, decode_threads: int = 0) -> int:
    """Write ``clips`` (frame ranges of video ``path``, in order, not overlapping) under ``out`` in one pass over
    the full-resolution video; only the frames of the clips reach Python (ffmpeg's ``select``). Returns the
    number of source frames decoded. A clip whose file exists is not in ``clips`` (the caller resumes).
    ``decode_threads``: ffmpeg's decoding threads (0: its choice; 1 is cheaper when workers run side by side)."""
    clips = sorted(clips, key=lambda c: c.start)
    passes: List[List[Clip]] = []  # clips of one pass do not overlap (tracks from files may)
    for clip in clips:
        free = next((p for p in passes if p[-1].end <= clip.start), None)
        if free is None:
            passes.append([clip])
        else:
            free.append(clip)
    return max([_write_pass(path, p, info, out, size, fmt, audio, decode_threads) for p in passes], default=0)


def _write_pass(path: str, clips: Sequence[Clip], info: VideoInfo, out: str, size: int, fmt: str, audio: bool,
                decode_threads: int) -> int:
    """:func:`write_clips` for clips that do not overlap, in order: one decoding of the video."""
    # ffmpeg drops the frames outside the clips, crops to the region the clips' boxes cover and scales it so
    # that the smallest box is `size` pixels: only those pixels reach Python, where the crop is then (nearly) 1:1
    x0, y0, x1, y1 = _region([c.box for c in clips], info.size)
    zoom = min(1.0, size / min(c.box[2] for c in clips))
    scaled = (max(2, int(round((x1 - x0) * zoom))), max(2, int(round((y1 - y0) * zoom))))
    zoom_x, zoom_y = scaled[0] / (x1 - x0), scaled[1] / (y1 - y0)
    ranges = "+".join(f"between(n,{c.start},{c.end - 1})" for c in clips)
    reader = VideoReader(path, input_params=["-threads", str(decode_threads)],
                         filters=f"select='{ranges}',crop={x1 - x0}:{y1 - y0}:{x0}:{y0}:exact=1,"
                                 f"scale={scaled[0]}:{scaled[1]}:flags=lanczos")
    shifted = {c.name: ((c.box[0] - x0) * zoom_x, (c.box[1] - y0) * zoom_y, c.box[2] * (zoom_x + zoom_y) / 2.0)
               for c in clips}
    frames = iter(reader)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(frames.close)  # stops ffmpeg when the last clip is done or on error
        for clip in clips:
            target = clip_path(out, clip, fmt)
            if fmt == "png":
                writer = _PngFolder(target)
            else:
                writer = VideoWriter(target, info.fps, crf=18, audio_from=path if audio and info.has_audio else None,
                                     audio_start=clip.start / info.fps, max_seconds=(clip.end - clip.start) / info.fps)
            with writer:
                for _ in range(clip.end - clip.start):
                    frame = next(frames, None)
                    if frame is None:
                        raise InputError(f"video {path} ended before frame {clip.end - 1} of clip {clip.name}")
                    writer.write(crop_frame(frame, shifted[clip.name], size))
    return clips[-1].end
