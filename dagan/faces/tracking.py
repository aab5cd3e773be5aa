"""Landmarks along a video: detect every few frames and fit the landmarks in a moving box in between."""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

from ..errors import InputError
from .backends import Face, FaceDetector
from .selection import select_face


class LandmarkTracker:
    """A :class:`FaceDetector` for the frames of one video, in order, when landmarks are asked for: the
    detector runs on every ``detect_every``-th frame, and in between the landmarks are fitted in the last
    face's box moved with its landmarks (the backend's ``fit_landmarks``; dlib: ~4 ms instead of ~9 ms a
    256 px frame). It detects again when the last frame had no face, when the backend cannot fit landmarks in
    a box, and when a fitted face jumps (its landmarks' centre moves, or their size changes, by more than
    ``max_change`` of their size). It follows the largest face. Call :meth:`reset` before another video.
    Without ``landmarks`` it just detects."""

    def __init__(self, detector: FaceDetector, detect_every: int = 10, max_change: float = 0.2):
        if int(detect_every) < 1:
            raise InputError(f"detect_every must be >= 1, got {detect_every}")
        self.detector = detector
        self.detect_every = int(detect_every)
        self.max_change = float(max_change)
        self.reset()

    def reset(self) -> None:
        self.last: Optional[Face] = None
        self.box_offset: Optional[np.ndarray] = None  # the detector's box relative to the landmarks' extent
        self.since_detection = 0
        self.detections = 0

    @staticmethod
    def _extent(points: np.ndarray) -> Tuple[np.ndarray, float]:
        low, high = points.min(0), points.max(0)
        return (low + high) / 2.0, float((high - low).max())

    def _track(self, image: np.ndarray) -> Optional[Face]:
        if (self.last is None or self.box_offset is None or self.since_detection + 1 >= self.detect_every
                or not hasattr(self.detector, "fit_landmarks")):
            return None
        centre, size = self._extent(self.last.landmarks)
        box = np.tile(centre, 2) + self.box_offset * size
        face = self.detector.fit_landmarks(image, box, self.last.score)
        new_centre, new_size = self._extent(face.landmarks)
        if (abs(new_size / max(size, 1e-6) - 1.0) > self.max_change
                or np.abs(new_centre - centre).max() > self.max_change * size):
            return None
        return face

    def detect(self, image: np.ndarray, landmarks: bool = False) -> List[Face]:
        if not landmarks:
            return self.detector.detect(image, landmarks=False)
        face = self._track(image)
        if face is not None:
            self.since_detection += 1
            self.last = face
            return [face]
        faces = self.detector.detect(image, landmarks=True)
        self.detections += 1
        self.since_detection = 0
        self.last = select_face(faces)
        self.box_offset = None
        if self.last is not None and self.last.landmarks is not None:
            centre, size = self._extent(self.last.landmarks)
            self.box_offset = (np.asarray(self.last.box, np.float64) - np.tile(centre, 2)) / max(size, 1e-6)
        return faces
