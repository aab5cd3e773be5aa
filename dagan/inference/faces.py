"""Face handling: detection (face-alignment, or any injected detector), square crops with margin,
a temporally smoothed crop box for driving videos, paste-back with a soft mask, and the official
``--find_best_frame`` landmark matching.

Boxes are ``(x0, y0, x1, y1)`` for detections and ``(x0, y0, side)`` (float pixels) for square crops.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import List, Optional, Protocol, Sequence, Tuple

import numpy as np

from ..errors import InputError, MissingWeightsError, NoFaceError

logger = logging.getLogger("dagan")

#: files face-alignment 1.5 loads (SFD detector + 2D FAN landmarks) and where it downloads them from
FACE_ALIGNMENT_FILES = {
    "s3fd-619a316812.pth": "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",
    "2DFAN4-11f355bf06.pth.tar": "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar",
}
DEFAULT_MARGIN = 1.8  # crop side / face size, the value used to prepare the shared sample clips
NO_FACE_HINT = "use --no-crop to animate the whole frame, or crop the face yourself"

Box = Tuple[float, float, float]


@dataclass
class Face:
    """One detection: ``box`` ``(x0, y0, x1, y1)`` in pixels, ``score``, optional ``landmarks`` ``(68, 2)``."""

    box: np.ndarray
    score: float = 1.0
    landmarks: Optional[np.ndarray] = None

    @property
    def size(self) -> float:
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))


class FaceDetector(Protocol):
    """What the demo needs from a detector (inject your own, e.g. in tests or apps)."""

    def detect(self, image: np.ndarray, landmarks: bool = False) -> List[Face]:
        """Faces in ``image`` ``(H, W, 3)`` uint8, largest first; ``landmarks=True`` fills ``Face.landmarks``."""


def face_alignment_weights_dir() -> str:
    """Where face-alignment keeps its weights: ``$TORCH_HOME/hub/checkpoints`` (default ``~/.cache/torch``)."""
    import torch.hub

    return os.path.join(torch.hub.get_dir(), "checkpoints")


def missing_face_alignment_files() -> List[str]:
    folder = face_alignment_weights_dir()
    return [name for name in FACE_ALIGNMENT_FILES if not os.path.isfile(os.path.join(folder, name))]


class FaceAlignmentDetector:
    """:class:`FaceDetector` backed by face-alignment (S3FD boxes, 2D-FAN 68 landmarks).

    Never downloads: when a weight file is absent it raises :class:`MissingWeightsError` naming the files
    and the folder they belong in.
    """

    def __init__(self, device: str = "cpu", min_score: float = 0.5):
        missing = missing_face_alignment_files()
        if missing:
            folder = face_alignment_weights_dir()
            urls = " ".join(FACE_ALIGNMENT_FILES[m] for m in missing)
            raise MissingWeightsError(
                f"face detection needs the face-alignment weights {', '.join(missing)} in {folder} (download "
                f"{urls} there, or set TORCH_HOME), or run with --no-crop")
        import face_alignment

        folder = face_alignment_weights_dir()
        try:
            self._fa = face_alignment.FaceAlignment(
                face_alignment.LandmarksType.TWO_D, device=str(device), flip_input=False, compile=False,
                face_detector="sfd", face_detector_kwargs={
                    "path_to_detector": os.path.join(folder, "s3fd-619a316812.pth"), "filter_threshold": min_score})
        except (RuntimeError, KeyError, ValueError, EOFError, OSError) as exc:
            raise MissingWeightsError(f"face-alignment weights in {folder} could not be loaded "
                                      f"({type(exc).__name__}: {str(exc)[:160]}); delete and download them again"
                                      ) from None

    def detect(self, image: np.ndarray, landmarks: bool = False) -> List[Face]:
        boxes = self._fa.face_detector.detect_from_image(np.ascontiguousarray(image))  # RGB: S3FD flips to BGR itself
        faces = [Face(np.asarray(b[:4], dtype=np.float64), float(b[4]) if len(b) > 4 else 1.0) for b in boxes]
        faces.sort(key=lambda f: -f.size)
        if landmarks and faces:
            det = [np.append(f.box, f.score) for f in faces]
            points, _, _ = self._fa.get_landmarks_from_image(image, detected_faces=det, return_bboxes=True)
            for face, pts in zip(faces, points or []):
                face.landmarks = np.asarray(pts[:, :2], dtype=np.float64)
        return faces


def largest_face(detector: FaceDetector, image: np.ndarray, what: str = "image", landmarks: bool = False) -> Face:
    faces = detector.detect(image, landmarks=landmarks)
    if not faces:
        raise NoFaceError(f"no face found in {what}: {NO_FACE_HINT}")
    return faces[0]


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


def normalize_landmarks(points: np.ndarray) -> np.ndarray:
    """Official ``find_best_frame`` normalisation: centre ``(N, 2)`` landmarks on their mean and divide by
    the square root of their convex-hull area."""
    from ..models.dagan import convex_hull_area

    points = np.asarray(points, dtype=np.float64)
    area = convex_hull_area(points)
    centred = points - points.mean(axis=0, keepdims=True)
    return centred / np.sqrt(area) if area > 0 else centred


def find_best_frame(detector: FaceDetector, source: np.ndarray, frames, progress=None) -> int:
    """Index of the driving frame whose normalised landmarks are closest (L2) to the source's.

    ``frames``: any iterable of ``(H, W, 3)`` uint8 (streamed; only landmarks are kept). Frames without a
    face are skipped; :class:`NoFaceError` when the source or every frame has none.
    """
    src = largest_face(detector, source, "the source image", landmarks=True)
    if src.landmarks is None:
        raise NoFaceError(f"no face landmarks found in the source image: {NO_FACE_HINT}")
    kp_source = normalize_landmarks(src.landmarks)
    best, best_dist = -1, np.inf
    for index, frame in enumerate(frames):
        faces = detector.detect(frame, landmarks=True)
        if faces and faces[0].landmarks is not None:
            dist = float(((normalize_landmarks(faces[0].landmarks) - kp_source) ** 2).sum())
            if dist < best_dist:
                best, best_dist = index, dist
        if progress is not None:
            progress.update(1)
    if best < 0:
        raise NoFaceError(f"no face found in any driving frame: {NO_FACE_HINT}")
    return best
