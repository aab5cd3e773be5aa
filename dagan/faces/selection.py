"""Which face: pick one of several detections, fail clearly when there is none, and the official
``--find_best_frame`` landmark matching."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np

from ..errors import InputError, NoFaceError
from .backends import Face, FaceDetector

NO_FACE_HINT = "use --no-crop to animate the whole frame, or crop the face yourself"


def select_face(faces: Sequence[Face], index: Union[int, str, None] = "largest") -> Optional[Face]:
    """Pick one of ``faces``: ``"largest"``/None (default), or ``index`` counted from the left (0 = the
    leftmost face). None when there is no face; :class:`InputError` when ``index`` is past the last face."""
    if not faces:
        return None
    if index in (None, "largest"):
        return max(faces, key=lambda f: f.size)
    index = int(index)
    ordered = sorted(faces, key=lambda f: (f.box[0] + f.box[2]) / 2.0)
    if not 0 <= index < len(ordered):
        raise InputError(f"--face-index {index}: the image holds {len(ordered)} face(s) (0 = leftmost)")
    return ordered[index]


def largest_face(detector: FaceDetector, image: np.ndarray, what: str = "image", landmarks: bool = False,
                 index: Union[int, str, None] = "largest") -> Face:
    """The chosen face of ``image`` (see :func:`select_face`); :class:`NoFaceError` when there is none."""
    face = select_face(detector.detect(image, landmarks=landmarks), index)
    if face is None:
        raise NoFaceError(f"no face found in {what}: {NO_FACE_HINT}")
    return face


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
