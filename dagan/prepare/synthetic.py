"""Raw videos with known faces, for tests and benchmarks of :mod:`dagan.prepare`: already-cropped face clips
(e.g. the shared 256 px samples) pasted off-centre into a large still background, as a phone or a webcam would
frame a face. The face's place and size in the raw video are then known exactly."""
from __future__ import annotations

import contextlib
from typing import Sequence, Tuple

import numpy as np

from ..io.video import VideoReader, VideoWriter


def background(size: Tuple[int, int], seed: int = 0) -> np.ndarray:
    """A smooth random colour field ``(H, W, 3)`` uint8 for ``size`` ``(W, H)`` (no face in it)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = rng.integers(40, 200, size=(6, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize(tuple(size), Image.BICUBIC))


def composite_video(clips: Sequence[str], out: str, frame_size: Tuple[int, int] = (720, 1280),
                    corner: Tuple[int, int] = (400, 760), frames: int = 48, seed: int = 0) -> str:
    """Write ``out``: the first ``frames`` frames of each of ``clips`` in turn (one after the other, same place),
    pasted with their top-left corner at ``corner`` ``(x, y)`` into a still background of ``frame_size``
    ``(W, H)``, at the first clip's fps. Returns ``out``."""
    still = background(frame_size, seed)
    x, y = corner
    with contextlib.ExitStack() as stack:
        writer = None
        for path in clips:
            reader = VideoReader(path, max_frames=frames)
            if writer is None:
                writer = stack.enter_context(VideoWriter(out, reader.fps))
            for frame in reader:
                canvas = still.copy()
                canvas[y:y + frame.shape[0], x:x + frame.shape[1]] = frame
                writer.write(canvas)
    return out
