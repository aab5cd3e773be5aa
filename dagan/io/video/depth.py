"""Depth maps out: the Turbo colour map (:func:`colorize_depth`) and :class:`DepthWriter` (colour-mapped
video or raw float16 ``.npz``, written atomically)."""
from __future__ import annotations

import os
import tempfile
from typing import Optional, Tuple

import numpy as np

from ...errors import OutputError
from .reader import PathLike
from .writer import VIDEO_OUTPUT_EXTENSIONS, VideoWriter, _default_permissions


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

        from ...utils import atomic_write

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
