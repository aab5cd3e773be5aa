"""One clip source for training, evaluation and face-shape targets: a clip is a **folder of frames** (image files
in sorted-name order) or a **video file**; a dataset root holds clips, split into train and test by one rule.

The split rule (:func:`list_clips`):

* a root with a ``train/`` or ``test/`` folder is split by those folders (``root/<split>/<clip>``);
* a **flat** root (clips directly in it) is split by name: the clips listed in ``test_clips`` form the test
  split; with no list, one clip in five (by a CRC32 hash of its name, at least one) is held out;
* ``exclude`` drops names from both splits; ``split=None`` lists every clip of the root (both folders, or the
  whole flat root).

A clip's name is its folder's name or its file's stem. Frames are read by :mod:`dagan.io` (16-bit images scaled,
alpha composited over white; centre-cropped to the target aspect, then antialiased bilinear), so every
consumer sees the same frames.
"""
from __future__ import annotations

import logging
import os
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Set, Tuple, Union

import numpy as np

from ..errors import DatasetError, InputError
from .images import fit_frames, read_image, resize_image
from .video import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, VideoReader, decode_video

logger = logging.getLogger("dagan")
PathLike = Union[str, os.PathLike]
SPLITS = ("train", "test")
#: a video clip is decoded once (resized) and kept; evict beyond this many bytes per process
DEFAULT_CACHE_BYTES = 768 * 2 ** 20


# ---------------------------------------------------------------------------------------------- names
def is_clip(path: Path) -> bool:
    """A video file (by extension) or a folder, not hidden: a killed ``python -m dagan.prepare`` leaves
    ``.<name>.partial.*`` behind, and macOS copies put ``._<name>.mp4`` resource files beside each video."""
    if path.name.startswith("."):
        return False
    if path.is_file():
        return path.suffix.lower() in VIDEO_EXTENSIONS
    return path.is_dir()


def clip_name(path: PathLike) -> str:
    """A folder's name, a file's stem."""
    path = Path(path)
    return path.stem if path.is_file() else path.name


def frame_files(folder: PathLike) -> List[Path]:
    """The image files of a frame folder, in sorted-name order."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)


def split_names(names: Sequence[str], test_clips: Sequence[str] = ()) -> Tuple[Set[str], Set[str]]:
    """(train, test) names of a flat root: ``test_clips`` (each must exist), else one in five by CRC32."""
    if test_clips:
        test = {n for n in names if n in set(test_clips)}
        missing = sorted(set(test_clips) - set(names))
        if missing:
            raise DatasetError(f"test_videos names not found in the dataset root: {', '.join(missing)}")
    else:
        test = {n for n in names if zlib.crc32(n.encode()) % 5 == 0}
        if not test and len(names) > 1:
            test = {min(names, key=lambda n: zlib.crc32(n.encode()))}
    return set(names) - test, test


def list_clips(root: PathLike, split: Optional[str] = "train", test_clips: Sequence[str] = (),
               exclude: Sequence[str] = ()) -> List[Path]:
    """Clips (video files or frame folders) of ``split`` under ``root``, sorted by name (see the module
    docstring for the rule). Raises :class:`DatasetError` for a missing root or an empty split."""
    if split is not None and split not in SPLITS:
        raise DatasetError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root} (set dataset.root_dir or pass --data)")
    excluded = set(exclude)
    if (root / "train").is_dir() or (root / "test").is_dir():
        folders = [root / s for s in (SPLITS if split is None else (split,))]
        if split is not None and not folders[0].is_dir():
            raise DatasetError(f"dataset split folder not found: {folders[0]}")
        folder = folders[0] if split is not None else root
        entries = sorted((p for f in folders if f.is_dir() for p in f.iterdir() if is_clip(p)),
                         key=lambda p: (p.parent.name, p.name))
    else:
        folder = root
        entries = [p for p in sorted(root.iterdir()) if is_clip(p)]
        if split is not None:
            train, test = split_names([clip_name(p) for p in entries if clip_name(p) not in excluded], test_clips)
            keep = train if split == "train" else test
            entries = [p for p in entries if clip_name(p) in keep]
    entries = [p for p in entries if clip_name(p) not in excluded]
    if not entries:
        raise DatasetError(f"no videos in {folder} (split {split!r}): expected frame folders or "
                           f"{'/'.join(VIDEO_EXTENSIONS)} files")
    return entries


# -------------------------------------------------------------------------------------------- streaming
def iter_clip_frames(path: PathLike, size: Optional[int] = None, max_frames: Optional[int] = None,
                     check_complete: bool = True) -> Iterator[np.ndarray]:
    """Stream a clip as ``(H, W, 3)`` uint8 frames, one at a time: at their own resolution, or resized to
    ``(size, size)``. A truncated video file raises :class:`InputError` at its end, or with
    ``check_complete=False`` gives its decodable frames (as training reads it)."""
    path = Path(path)
    if path.is_dir():
        files = frame_files(path)
        if not files:
            raise InputError(f"frame folder {path} holds no images")
        frames: Iterator[np.ndarray] = (read_image(f) for f in (files if max_frames is None else files[:max_frames]))
    else:
        frames = iter(VideoReader(path, max_frames=max_frames, check_complete=check_complete))
    for frame in frames:
        yield frame if size is None else resize_image(frame, size)


# ------------------------------------------------------------------------------------- random access
class ClipSource:
    """One clip read by frame index, resized to ``size`` ``(H, W)`` (:func:`open_clip`)."""

    def __init__(self, path: PathLike, size: Tuple[int, int]):
        self.path = Path(path)
        self.name = clip_name(self.path)
        self.size = tuple(size)

    def num_frames(self) -> int:
        raise NotImplementedError

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` as ``(H, W, 3)`` uint8; ``OSError``/``ValueError`` when it cannot be read."""
        raise NotImplementedError


class FrameFolder(ClipSource):
    """A folder of image frames in sorted-name order. Frames are read on demand (nothing is cached)."""

    def __init__(self, path: PathLike, size: Tuple[int, int]):
        super().__init__(path, size)
        self.files = frame_files(self.path)

    def num_frames(self) -> int:
        return len(self.files)

    def frame(self, index: int) -> np.ndarray:
        return fit_frames(read_image(self.files[index])[None], self.size)[0]


class _ClipCache:
    """Per-process LRU of decoded clips, bounded in bytes."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES):
        self.max_bytes = max_bytes
        self.items: "OrderedDict[str, np.ndarray]" = OrderedDict()
        self.bytes = 0

    def get(self, key: str) -> Optional[np.ndarray]:
        clip = self.items.get(key)
        if clip is not None:
            self.items.move_to_end(key)
        return clip

    def put(self, key: str, clip: np.ndarray) -> None:
        self.items[key] = clip
        self.bytes += clip.nbytes
        while self.bytes > self.max_bytes and len(self.items) > 1:
            _, old = self.items.popitem(last=False)
            self.bytes -= old.nbytes


_CLIP_CACHE = _ClipCache()


class VideoFile(ClipSource):
    """A video file, decoded once per process (resized) and cached; a truncated file keeps what decodes."""

    def __init__(self, path: PathLike, size: Tuple[int, int]):
        super().__init__(path, size)
        self.key = f"{os.path.abspath(self.path)}@{self.size[0]}x{self.size[1]}"

    def _clip(self) -> np.ndarray:
        clip = _CLIP_CACHE.get(self.key)
        if clip is None:
            clip, expected = decode_video(self.path, self.size)
            if expected and len(clip) < 0.9 * expected:
                logger.warning("video %s is truncated: decoded %d of %d declared frames (using those)",
                               self.path, len(clip), expected)
            _CLIP_CACHE.put(self.key, clip)
        return clip

    def num_frames(self) -> int:
        return len(self._clip())

    def frame(self, index: int) -> np.ndarray:
        return self._clip()[index]


def open_clip(path: PathLike, size: Tuple[int, int]) -> ClipSource:
    """A clip for random access: a :class:`FrameFolder` or a :class:`VideoFile`."""
    path = Path(path)
    if path.is_dir():
        return FrameFolder(path, size)
    return VideoFile(path, size)
