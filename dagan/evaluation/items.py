"""The items of an evaluation: which source is animated by which driving frames (reconstruction, cross-identity,
the official pair lists), read from a data folder with :mod:`dagan.io.clips`."""
from __future__ import annotations

import csv
import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import DatasetError, InputError
from .settings import EvalSettings

logger = logging.getLogger("dagan")
PathLike = Union[str, os.PathLike]


# ------------------------------------------------------------------------------------------- data
def iter_video_frames(path: PathLike, size: int, max_frames: Optional[int] = None) -> Iterator[np.ndarray]:
    """Stream a clip (video file or folder of frames) as ``(size, size, 3)`` uint8 frames
    (:func:`dagan.io.clips.iter_clip_frames`)."""
    from ..io.clips import iter_clip_frames

    return iter_clip_frames(path, size, max_frames)


@functools.lru_cache(maxsize=2)
def _decoded_clip(path: str, size: int) -> np.ndarray:
    """A pair list's video file, decoded once at ``size`` (its frames are addressed one by one)."""
    from ..io.video import decode_video

    return decode_video(path, (size, size))[0]


def read_frame(path: Path, size: int) -> np.ndarray:
    """One frame addressed like the official pair lists: ``<video>/<frame file>``; the video may be a frame
    folder (the file is read) or a video file (the frame file's number is the index)."""
    from ..io.images import read_image, resize_image

    try:
        if path.is_file():
            return resize_image(read_image(path), size)
        video = path.parent
        if video.is_file():
            index = int(path.stem)
            frames = _decoded_clip(str(video), size)
            if index >= len(frames):
                raise InputError(f"{path}: frame {index} is past the end of {video} ({len(frames)} frames)")
            return frames[index]
    except InputError:
        raise
    except ValueError:
        raise InputError(f"{path}: cannot read it or parse a frame number from {path.name!r}") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    raise InputError(f"pair frame not found: {path}")


def list_test_videos(data: PathLike, names: Sequence[str] = ()) -> List[Path]:
    """The test clips of ``data`` (:func:`dagan.io.clips.list_clips`; ``names``: a flat root's test clips)."""
    from ..io.clips import list_clips

    return list_clips(data, "test", test_clips=names)


def read_pairs(path: PathLike) -> List[Tuple[str, str]]:
    """(source, driving) frame paths of an official pair list, each cut to the part after ``test/``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"pairs file not found: {path}")
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise InputError(f"pairs file {path} is empty")
    header = [h.strip().lower() for h in rows[0]]
    if "source" not in header or "driving" not in header:
        raise InputError(f"pairs file {path} needs a header with 'source' and 'driving' columns, got {rows[0]}")
    si, di = header.index("source"), header.index("driving")
    pairs = []
    for n, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(si, di):
            raise InputError(f"pairs file {path} line {n}: expected source and driving paths, got {row}")
        pairs.append((_after_test(row[si]), _after_test(row[di])))
    if not pairs:
        raise InputError(f"pairs file {path} lists no pairs")
    return pairs


def video_name(entry: str) -> str:
    """A video's name in the report: its file or folder name without a video extension (official frame
    folders are called ``<id>#<yt>#<start>#<end>.mp4``)."""
    from ..io.video import VIDEO_EXTENSIONS

    base = os.path.basename(os.path.normpath(entry))
    root, ext = os.path.splitext(base)
    return root if ext.lower() in VIDEO_EXTENSIONS else base


def _after_test(p: str) -> str:
    p = p.strip().replace("\\", "/")
    marker = "/test/"
    if marker in "/" + p:
        p = ("/" + p).rsplit(marker, 1)[1]
    return p.lstrip("/")


@dataclass
class Item:
    """One unit of work: a source frame and a stream of driving frames (uint8 HWC at model size)."""

    name: str
    group: str
    source: Callable[[], np.ndarray]
    driving: Callable[[], Iterator[np.ndarray]]
    relative: bool
    folder: str = ""  # where --save-frames puts this item's outputs (relative to <out>/frames/<system>/)
    source_frame: Optional[int] = None  # index of the source inside the driving stream (reconstruction: 0)


def build_items(data: PathLike, size: int, settings: EvalSettings, pairs: Optional[PathLike] = None) -> List[Item]:
    """The work list of a protocol, in a fixed order (the same in every process)."""
    mf = settings.max_frames
    if pairs is not None:
        root = Path(data)
        if (root / "test").is_dir():
            root = root / "test"
        listed = read_pairs(pairs)
        groups: List[str] = []
        for _, drv in listed:
            g = video_name(drv.split("/")[0])
            if g not in groups:
                groups.append(g)
        keep = set(groups[:settings.max_videos] if settings.max_videos else groups)
        items = []
        for n, (src, drv) in enumerate(listed):
            group = video_name(drv.split("/")[0])
            if group not in keep:
                continue
            items.append(Item(name=f"{n:05d}:{src}->{drv}", group=group,
                              source=lambda p=root / src: read_frame(p, size),
                              driving=lambda p=root / drv: iter([read_frame(p, size)]), relative=False,
                              folder=f"pairs/{n:05d}"))
        return items
    videos = list_test_videos(data, [video_name(v) for v in settings.videos or ()])
    if settings.videos:
        wanted = [video_name(v) for v in settings.videos]
        found = {video_name(v.name): v for v in videos}
        missing = [w for w in wanted if w not in found]
        if missing:
            raise DatasetError(f"video {missing[0]!r} is not in {data} (have: {', '.join(sorted(found))})")
        videos = [found[w] for w in wanted]
    if settings.max_videos:
        videos = videos[:settings.max_videos]
    names = [video_name(v.name) for v in videos]
    if settings.protocol == "reconstruction":
        return [Item(name=n, group=n, source=lambda v=v: next(iter_video_frames(v, size, 1)),
                     driving=lambda v=v: iter_video_frames(v, size, mf), relative=False, folder=n, source_frame=0)
                for v, n in zip(videos, names)]
    if settings.sources:
        items = []
        for src in settings.sources:
            stem = Path(src).stem
            for v, n in zip(videos, names):
                items.append(Item(name=f"{stem}<-{n}", group=f"{stem}<-{n}",
                                  source=lambda p=Path(src): read_frame(p, size),
                                  driving=lambda v=v: iter_video_frames(v, size, mf), relative=True,
                                  folder=f"{stem}_by_{n}"))
        return items
    if len(videos) < 2:
        raise DatasetError("the cross-identity protocol needs at least two videos (each is driven by the next)")
    items = []
    for i, (v, n) in enumerate(zip(videos, names)):
        j = (i + 1) % len(videos)
        items.append(Item(name=f"{n}<-{names[j]}", group=n, source=lambda v=v: next(iter_video_frames(v, size, 1)),
                          driving=lambda d=videos[j]: iter_video_frames(d, size, mf), relative=True,
                          folder=f"{n}_by_{names[j]}"))
    return items


