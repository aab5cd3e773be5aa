"""Square face crops with a margin, a temporally smoothed crop box for driving videos, and paste-back with a
soft mask. Boxes are ``(x0, y0, x1, y1)`` for detections and ``(x0, y0, side)`` (float pixels) for square crops.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError, NoFaceError
from .backends import FaceDetector
from .selection import NO_FACE_HINT

DEFAULT_MARGIN = 1.8  # crop side / face size, the value used to prepare the shared sample clips

Box = Tuple[float, float, float]


def square_box(face_box: Sequence[float], image_shape: Tuple[int, int], margin: float = DEFAULT_MARGIN) -> Box:
    """Square ``(x0, y0, side)`` centred on ``face_box`` with side ``margin * max(w, h)``, shrunk to fit
    the image and shifted to stay inside it. ``image_shape`` is ``(H, W)``."""
    x0, y0, x1, y1 = [float(v) for v in face_box[:4]]
    height, width = image_shape[:2]
    side = min(margin * max(x1 - x0, y1 - y0), float(height), float(width))
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    bx = min(max(cx - side / 2.0, 0.0), width - side)
    by = min(max(cy - side / 2.0, 0.0), height - side)
    return bx, by, side


def crop_square(image: np.ndarray, box: Box, size: int) -> np.ndarray:
    """Cut ``box`` ``(x0, y0, side)`` out of ``image`` ``(H, W, 3)`` uint8 and resize to ``(size, size, 3)``
    (sub-pixel accurate, so a smoothly moving box gives a smoothly moving crop)."""
    from PIL import Image

    x0, y0, side = box
    pil = Image.fromarray(image)
    out = pil.resize((size, size), Image.BICUBIC, box=(x0, y0, x0 + side, y0 + side), reducing_gap=None)
    return np.asarray(out)


class BoxSmoother:
    """Causal smoothing of a per-frame crop box (no look-ahead, so it streams).

    An exponential moving average of centre and side (``alpha`` = weight of the new detection) with a
    dead zone: changes smaller than ``deadzone`` x side are ignored, so a still head gives a box that does
    not move at all. Frames with no detection keep the last box.
    """

    def __init__(self, alpha: float = 0.2, deadzone: float = 0.02):
        if not 0 < alpha <= 1:
            raise InputError(f"box smoothing alpha must be in (0, 1], got {alpha}")
        self.alpha = float(alpha)
        self.deadzone = float(deadzone)
        self.state: Optional[np.ndarray] = None  # (cx, cy, side)

    def update(self, box: Optional[Box]) -> Optional[Box]:
        if box is not None:
            x0, y0, side = box
            new = np.array([x0 + side / 2.0, y0 + side / 2.0, side])
            if self.state is None:
                self.state = new
            else:
                target = self.state + self.alpha * (new - self.state)
                if np.abs(new - self.state).max() > self.deadzone * self.state[2]:
                    self.state = target
        if self.state is None:
            return None
        cx, cy, side = self.state
        return cx - side / 2.0, cy - side / 2.0, side


class DrivingCropper:
    """Per-frame face crop of a driving video: detect every ``detect_every`` frames, smooth the box,
    crop and resize to ``size``. Raises :class:`NoFaceError` when the first frame holds no face."""

    def __init__(self, detector: FaceDetector, size: int, margin: float = DEFAULT_MARGIN, detect_every: int = 1,
                 smoother: Optional[BoxSmoother] = None):
        self.detector = detector
        self.size = int(size)
        self.margin = margin
        self.detect_every = max(1, int(detect_every))
        self.smoother = smoother or BoxSmoother()
        self.index = 0
        self.boxes: List[Box] = []

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        box = None
        if self.index % self.detect_every == 0 or self.smoother.state is None:
            faces = self.detector.detect(frame)
            if faces:
                box = square_box(faces[0].box, frame.shape[:2], self.margin)
            elif self.smoother.state is None:
                raise NoFaceError(f"no face found in driving frame {self.index}: {NO_FACE_HINT}")
        smoothed = self.smoother.update(box)
        smoothed = square_box((smoothed[0], smoothed[1], smoothed[0] + smoothed[2], smoothed[1] + smoothed[2]),
                              frame.shape[:2], margin=1.0)
        self.boxes.append(smoothed)
        self.index += 1
        return crop_square(frame, smoothed, self.size)


def soft_mask(size: int, feather: float = 0.12) -> np.ndarray:
    """``(size, size)`` float32 weights: 1 in the middle, falling smoothly to 0 at the border over
    ``feather`` x size pixels (a rounded square, so the seams of a pasted face do not show)."""
    ramp = max(1.0, feather * size)
    coords = np.arange(size, dtype=np.float32) + 0.5
    edge = np.minimum(coords, size - coords) / ramp
    edge = np.clip(edge, 0.0, 1.0)
    edge = edge * edge * (3 - 2 * edge)  # smoothstep
    return np.outer(edge, edge).astype(np.float32)


def paste_back(background: np.ndarray, face: np.ndarray, box: Box, mask: Optional[np.ndarray] = None) -> np.ndarray:
    """Blend ``face`` ``(s, s, 3)`` uint8 into a copy of ``background`` ``(H, W, 3)`` uint8 at ``box``
    ``(x0, y0, side)`` with a soft mask. Returns a new ``(H, W, 3)`` uint8 image."""
    from PIL import Image

    x0, y0, side = box
    ix0, iy0 = int(round(x0)), int(round(y0))
    iside = int(round(side))
    h, w = background.shape[:2]
    iside = min(iside, w - ix0, h - iy0)
    resized = np.asarray(Image.fromarray(face).resize((iside, iside), Image.BICUBIC)).astype(np.float32)
    weights = soft_mask(iside) if mask is None else np.asarray(
        Image.fromarray((mask * 255).astype(np.uint8)).resize((iside, iside), Image.BILINEAR)).astype(np.float32) / 255
    out = background.copy()
    region = out[iy0:iy0 + iside, ix0:ix0 + iside].astype(np.float32)
    blended = weights[..., None] * resized + (1 - weights[..., None]) * region
    out[iy0:iy0 + iside, ix0:ix0 + iside] = np.clip(np.round(blended), 0, 255).astype(np.uint8)
    return out
