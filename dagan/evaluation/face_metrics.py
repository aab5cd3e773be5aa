"""Face metrics from an offline face backend (dlib by default): landmarks and identity for AKD/AED/CSIM, and
the cross-identity motion report.

Every frame is analysed once (:class:`FaceAnalyzer` caches by content, so the repeat-source baseline's
identical frames cost one detection). Landmarks are the 68 iBUG points; distances that compare two faces are
expressed in units of each face's inter-ocular distance ``iod`` (between the two eye centres, the means of
points 36-41 and 42-47), so faces of different sizes compare.

Cross-identity, for a result ``r`` driven by ``d`` (``L(t)``: landmarks of frame ``t``; frame 0 is the anchor):

=================  ===========================================================================================
face_detected      1 where the backend finds a face in the result frame, else 0
id_dist_source     Euclidean distance of the identity embeddings result -> source (dlib: < 0.6 = same person)
id_match_source    1 where ``id_dist_source < 0.6``; frames without a face count as 0
id_dist_driving    the same distance result -> driving frame (low = the driver's identity leaks in)
motion_error       mean over the 68 points of ``|(L_r(t) - L_r(0)) / iod_r(0) - (L_d(t) - L_d(0)) / iod_d(0)|``
                   (Euclidean per point); for the frozen baseline it is the driving motion itself
scale_drift        ``|iod_r(t) / iod_r(0) - iod_d(t) / iod_d(0)|``
mouth_corr         per clip: Pearson correlation over time of the inner-lip opening ``|L(62) - L(66)| / iod``
                   of result and driving (undefined, so left out, when either does not move)
mouth_amp          per clip: standard deviation of the result's inner-lip opening over the driver's (1 = the
                   mouth opens as far as the driver's; undefined when the driver's mouth does not move)
eye_corr           per clip: Pearson correlation over time of the eye opening (eye aspect ratio, mean of both
                   eyes) of result and driving; only for clips whose driver's eye opening varies (standard
                   deviation >= :data:`EYE_VARIES`: a blink, a squint), else undefined
sharpness          variance of the Laplacian of the result's face box over the same for the source's face
                   box resized to the result's box size (1 = as sharp as the source)
still_sharpness    per clip: the same sharpness, averaged over the frames made when the source is driven by
                   ``EvalSettings.still_frames`` copies of itself (a still driver: the result should be the
                   source, 1); one value per source, repeated for each of its clips
=================  ===========================================================================================
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..faces import DLIB_SAME_PERSON_DISTANCE, Face, backend_name
from .metrics import Landmarks, to_uint8_hwc

#: cross-identity face metrics, in report order (those in :data:`CLIP_METRICS` are one value per clip)
MOTION_METRICS = ("face_detected", "id_dist_source", "id_match_source", "id_dist_driving", "motion_error",
                  "scale_drift", "mouth_corr", "mouth_amp", "eye_corr", "sharpness", "still_sharpness")
#: the cross-identity metrics with one value per clip
CLIP_METRICS = ("mouth_corr", "mouth_amp", "eye_corr", "still_sharpness")
#: a driver's eye opening (eye aspect ratio) "varies" above this standard deviation over the clip: dlib's
#: jitter on an open eye is about 0.01, a blink takes the ratio from ~0.3 to ~0.1
EYE_VARIES = 0.025
#: for each, whether larger is better
MOTION_HIGHER_IS_BETTER = {"face_detected": True, "id_dist_source": False, "id_match_source": True,
                           "id_dist_driving": True, "motion_error": False, "scale_drift": False,
                           "mouth_corr": True, "mouth_amp": True, "eye_corr": True, "sharpness": True,
                           "still_sharpness": True}
BACKEND_NOTE = ("dlib numbers (HOG + 68-point shape predictor, ResNet identity embedding) are not comparable "
                "with the papers' FAN/OpenFace numbers")


class FaceAnalyzer:
    """Detect the largest face of frames with landmarks (and embeddings when the backend has them).

    Call with ``(B, 3, H, W)`` in [0, 1] (or a list of ``(H, W, 3)`` uint8); returns one :class:`Face` or
    ``None`` per frame. Results are cached by frame content (``cache`` frames, least recently used dropped).
    """

    def __init__(self, backend, embeddings: bool = True, cache: int = 256):
        self.backend = backend
        self.name = backend_name(backend)
        self.embeddings = bool(embeddings) and self.name == "dlib"
        self.cache: "OrderedDict[bytes, Optional[Face]]" = OrderedDict()
        self.cache_size = int(cache)
        self.frames_analysed = 0

    @staticmethod
    def key(image: np.ndarray) -> bytes:
        """The cache key of a frame: a digest of its content and shape."""
        return hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).digest() + \
            bytes(str(image.shape), "ascii")

    def analyse_image(self, image: np.ndarray) -> Optional[Face]:
        key = self.key(image)
        if key in self.cache:
            self.cache.move_to_end(key)
            return self.cache[key]
        kwargs = {"embedding": True} if self.embeddings else {}
        faces = self.backend.detect(image, landmarks=True, **kwargs)
        face = faces[0] if faces and faces[0].landmarks is not None else None
        self.frames_analysed += 1
        self.cache[key] = face
        if len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return face

    def __call__(self, frames) -> List[Optional[Face]]:
        images = to_uint8_hwc(frames) if isinstance(frames, torch.Tensor) else frames
        return [self.analyse_image(image) for image in images]

    def detect(self, image: np.ndarray, landmarks: bool = False) -> List[Face]:
        """The face detector interface (:class:`~dagan.faces.FaceDetector`) over the cache: the
        largest face with landmarks, or none."""
        face = self.analyse_image(image)
        return [] if face is None else [face]


class BackendLandmarks:
    """AKD landmark detector over a :class:`FaceAnalyzer`: ``(B, 3, H, W)`` -> ``(68, 2)`` or None per frame."""

    def __init__(self, analyzer: FaceAnalyzer):
        self.analyzer = analyzer
        self.name = f"{analyzer.name} 68 landmarks"

    def __call__(self, frames: torch.Tensor) -> List[Landmarks]:
        return [None if f is None else f.landmarks for f in self.analyzer(frames)]


class BackendIdentity:
    """AED/CSIM identity embedder over a :class:`FaceAnalyzer` (dlib's 128-d face embedding of the largest
    face): ``(B, 3, H, W)`` -> ``(B, 128)``, rows of NaN where no face is found (left out of the means)."""

    dim = 128

    def __init__(self, analyzer: FaceAnalyzer):
        self.analyzer = analyzer
        self.name = f"{analyzer.name} face embedding (128-d)"

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        rows = [np.full(self.dim, np.nan) if f is None or f.embedding is None else f.embedding
                for f in self.analyzer(frames)]
        return torch.from_numpy(np.stack(rows))


# -------------------------------------------------------------------------------------------- geometry
def interocular(landmarks: np.ndarray) -> float:
    """Distance between the eye centres (means of points 36-41 and 42-47) of ``(68, 2)`` landmarks."""
    points = np.asarray(landmarks, dtype=np.float64)
    return float(np.linalg.norm(points[36:42].mean(0) - points[42:48].mean(0)))


def mouth_opening(landmarks: np.ndarray) -> float:
    """Inner-lip opening ``|L(62) - L(66)|`` over the inter-ocular distance."""
    points = np.asarray(landmarks, dtype=np.float64)
    return float(np.linalg.norm(points[62] - points[66])) / max(interocular(points), 1e-6)


def eye_opening(landmarks: np.ndarray) -> float:
    """Eye aspect ratio ``(|L37 - L41| + |L38 - L40|) / (2 |L36 - L39|)``, the mean of both eyes (right eye
    42-47 likewise): about 0.3 open, under 0.15 closed."""
    points = np.asarray(landmarks, dtype=np.float64)

    def ratio(a: int) -> float:
        height = np.linalg.norm(points[a + 1] - points[a + 5]) + np.linalg.norm(points[a + 2] - points[a + 4])
        return float(height / max(2.0 * np.linalg.norm(points[a] - points[a + 3]), 1e-6))

    return 0.5 * (ratio(36) + ratio(42))


def amplitude_ratio(result: Sequence[float], driving: Sequence[float]) -> Optional[float]:
    """Standard deviation of ``result`` over that of ``driving``; None when shorter than 3 or the driver's is
    (near) constant."""
    r, d = np.asarray(result, np.float64), np.asarray(driving, np.float64)
    if len(r) < 3 or len(r) != len(d) or d.std() < 1e-6:
        return None
    return float(r.std() / d.std())


def motion_error(result: np.ndarray, driving: np.ndarray, result_anchor: np.ndarray,
                 driving_anchor: np.ndarray) -> float:
    """Mean Euclidean difference of the 68 landmark displacements from the anchors, each in units of its own
    anchor's inter-ocular distance (0 = the result moves exactly like the driving face)."""
    r = (np.asarray(result, np.float64) - result_anchor) / max(interocular(result_anchor), 1e-6)
    d = (np.asarray(driving, np.float64) - driving_anchor) / max(interocular(driving_anchor), 1e-6)
    return float(np.linalg.norm(r - d, axis=1).mean())


def scale_drift(result: np.ndarray, driving: np.ndarray, result_anchor: np.ndarray,
                driving_anchor: np.ndarray) -> float:
    """``|iod_r(t) / iod_r(0) - iod_d(t) / iod_d(0)|``: the face growing or shrinking unlike the driver's."""
    return abs(interocular(result) / max(interocular(result_anchor), 1e-6)
               - interocular(driving) / max(interocular(driving_anchor), 1e-6))


def pearson(a: Sequence[float], b: Sequence[float]) -> Optional[float]:
    """Pearson correlation of two equally long series; None when shorter than 3 or either is constant."""
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(x) < 3 or len(x) != len(y):
        return None
    x, y = x - x.mean(), y - y.mean()
    norm = np.sqrt((x * x).sum() * (y * y).sum())
    if norm < 1e-12:
        return None
    return float((x * y).sum() / norm)


def laplacian_variance(image: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of the grey version of ``(H, W, 3)`` uint8 (or grey) ``image``."""
    from scipy.ndimage import laplace

    grey = np.asarray(image, np.float64)
    if grey.ndim == 3:
        grey = grey @ np.array([0.299, 0.587, 0.114])
    return float(laplace(grey, mode="reflect").var())


def face_crop(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The part of ``image`` inside ``box`` ``(x0, y0, x1, y1)``, clipped to the image (at least 3x3)."""
    h, w = image.shape[:2]
    x0, y0 = int(np.clip(np.floor(box[0]), 0, w - 3)), int(np.clip(np.floor(box[1]), 0, h - 3))
    x1, y1 = int(np.clip(np.ceil(box[2]), x0 + 3, w)), int(np.clip(np.ceil(box[3]), y0 + 3, h))
    return image[y0:y1, x0:x1]


def sharpness_ratio(result: np.ndarray, result_face: Face, source: np.ndarray, source_face: Face) -> float:
    """Laplacian variance of the result's face box over the source's face box resized to the same size."""
    from PIL import Image

    crop = face_crop(result, result_face.box)
    reference = np.asarray(Image.fromarray(np.ascontiguousarray(face_crop(source, source_face.box))).resize(
        (crop.shape[1], crop.shape[0]), Image.BICUBIC, reducing_gap=None))
    return laplacian_variance(crop) / max(laplacian_variance(reference), 1e-9)


def mean_sharpness(results: Sequence[np.ndarray], result_faces: Sequence[Optional[Face]], source: np.ndarray,
                   source_face: Optional[Face]) -> Optional[float]:
    """Mean :func:`sharpness_ratio` over the result frames with a face (None when none has one, or the source
    has none): the still-driver check scores the frames made from copies of the source this way."""
    if source_face is None:
        return None
    values = [sharpness_ratio(r, f, source, source_face) for r, f in zip(results, result_faces) if f is not None]
    return float(np.mean(values)) if values else None


# ------------------------------------------------------------------------------------ per clip state
class MotionTracker:
    """The cross-identity face metrics of one (clip, system): feed batches of result frames with their driving
    faces; :meth:`finish` adds the per-clip mouth correlation. Anchors are the first frame where both the
    result and the driving frame have a face."""

    def __init__(self, source_image: np.ndarray, source_face: Optional[Face]):
        self.source_image = source_image
        self.source_face = source_face
        self.anchor_r: Optional[np.ndarray] = None
        self.anchor_d: Optional[np.ndarray] = None
        self.mouth_r: List[float] = []
        self.mouth_d: List[float] = []
        self.eye_r: List[float] = []
        self.eye_d: List[float] = []

    def update(self, results: np.ndarray, result_faces: Sequence[Optional[Face]],
               driving_faces: Sequence[Optional[Face]]) -> Dict[str, List[Optional[float]]]:
        """``results`` ``(B, H, W, 3)`` uint8 with their faces and the driving frames' faces -> per-frame values."""
        out: Dict[str, List[Optional[float]]] = {m: [] for m in MOTION_METRICS if m not in CLIP_METRICS}
        src_emb = None if self.source_face is None else self.source_face.embedding
        for image, fr, fd in zip(results, result_faces, driving_faces):
            out["face_detected"].append(0.0 if fr is None else 1.0)
            d_src = None
            if fr is not None and fr.embedding is not None and src_emb is not None:
                d_src = float(np.linalg.norm(fr.embedding - src_emb))
            out["id_dist_source"].append(d_src)
            out["id_match_source"].append(None if src_emb is None else
                                          float(d_src is not None and d_src < DLIB_SAME_PERSON_DISTANCE))
            both = fr is not None and fd is not None
            out["id_dist_driving"].append(float(np.linalg.norm(fr.embedding - fd.embedding)) if both and
                                          fr.embedding is not None and fd.embedding is not None else None)
            if both and self.anchor_r is None:
                self.anchor_r, self.anchor_d = fr.landmarks, fd.landmarks
            if both:
                out["motion_error"].append(motion_error(fr.landmarks, fd.landmarks, self.anchor_r, self.anchor_d))
                out["scale_drift"].append(scale_drift(fr.landmarks, fd.landmarks, self.anchor_r, self.anchor_d))
                self.mouth_r.append(mouth_opening(fr.landmarks))
                self.mouth_d.append(mouth_opening(fd.landmarks))
                self.eye_r.append(eye_opening(fr.landmarks))
                self.eye_d.append(eye_opening(fd.landmarks))
            else:
                out["motion_error"].append(None)
                out["scale_drift"].append(None)
            out["sharpness"].append(sharpness_ratio(image, fr, self.source_image, self.source_face)
                                    if fr is not None and self.source_face is not None else None)
        return out

    def finish(self) -> Dict[str, List[Optional[float]]]:
        eyes_vary = len(self.eye_d) >= 3 and float(np.std(self.eye_d)) >= EYE_VARIES
        return {"mouth_corr": [pearson(self.mouth_r, self.mouth_d)],
                "mouth_amp": [amplitude_ratio(self.mouth_r, self.mouth_d)],
                "eye_corr": [pearson(self.eye_r, self.eye_d) if eyes_vary else None]}
