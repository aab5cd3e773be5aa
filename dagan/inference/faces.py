"""Face handling: detection backends, square crops with margin, a temporally smoothed crop box for
driving videos, paste-back with a soft mask, and the official ``--find_best_frame`` landmark matching.

Two backends give boxes, the 68 iBUG landmarks and (dlib only) a 128-d identity embedding:

* ``dlib`` (default, offline): dlib's HOG frontal face detector, ``shape_predictor_68_face_landmarks`` and
  ``dlib_face_recognition_resnet_model_v1`` from the ``face_recognition_models`` package (CC0). Install with
  ``pip install -e ".[faces]"``. Detection runs on a copy resized so its longer side is at most
  ``detect_size`` and its shorter side at least ``min_size`` (the HOG detector misses faces under ~80 px);
  boxes and landmarks are mapped back to the full-resolution image.
* ``face-alignment`` (S3FD + 2D-FAN-4): needs its weights on disk; never downloads.

Any object with a ``detect(image, landmarks=False)`` method can be injected instead (tests, apps).

Boxes are ``(x0, y0, x1, y1)`` for detections and ``(x0, y0, side)`` (float pixels) for square crops.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import List, Optional, Protocol, Sequence, Tuple, Union

import numpy as np

from ..errors import InputError, MissingWeightsError, NoFaceError

logger = logging.getLogger("dagan")

FACES_EXTRA_HINT = 'pip install -e ".[faces]" (dlib-bin + face_recognition_models, offline)'
#: the backends :func:`load_face_backend` knows, "auto" first
FACE_BACKENDS = ("auto", "dlib", "face-alignment")
#: files the dlib backend loads from the ``face_recognition_models`` package
DLIB_MODEL_FILES = {"landmarks": "shape_predictor_68_face_landmarks.dat",
                    "identity": "dlib_face_recognition_resnet_model_v1.dat"}
#: the usual "same person" threshold on the Euclidean distance of two dlib embeddings
DLIB_SAME_PERSON_DISTANCE = 0.6
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
    embedding: Optional[np.ndarray] = None  # (128,) identity embedding (dlib backend, ``embedding=True``)

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

    name = "face-alignment"

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


def dlib_model_dir() -> Optional[str]:
    """The ``models`` folder of the installed ``face_recognition_models`` package, or None.

    Found without importing the package (its ``__init__`` needs ``pkg_resources``, gone from new setuptools)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.join(list(spec.submodule_search_locations)[0], "models")


class DlibFaceBackend:
    """:class:`FaceDetector` backed by dlib (HOG boxes, 68 landmarks, 128-d identity embedding), offline.

    ``detect_size``: longest side of the copy the detector sees (full-size photos are downscaled: a 1200 px
    photo takes ~0.5 s at full size, ~40 ms at 640); ``min_size``: shortest side it is upscaled to (the HOG
    detector misses faces under ~80 px, so 64 px frames are upscaled to 256). ``upsample``: dlib's own pyramid
    upsampling (finds smaller faces, ~4x slower per step). Boxes and landmarks are in the input's pixels.
    """

    name = "dlib"

    def __init__(self, detect_size: int = 640, min_size: int = 256, upsample: int = 0, threshold: float = 0.0):
        try:
            import dlib
        except ImportError:
            raise MissingWeightsError(f"the dlib face backend needs dlib: {FACES_EXTRA_HINT}") from None
        folder = dlib_model_dir()
        if folder is None:
            raise MissingWeightsError(f"the dlib face backend needs the face_recognition_models package: "
                                      f"{FACES_EXTRA_HINT}")
        paths = {k: os.path.join(folder, f) for k, f in DLIB_MODEL_FILES.items()}
        missing = [p for p in paths.values() if not os.path.isfile(p)]
        if missing:
            raise MissingWeightsError(f"dlib model file(s) missing: {', '.join(missing)}; reinstall with "
                                      f"{FACES_EXTRA_HINT}")
        self.detect_size, self.min_size = int(detect_size), int(min_size)
        self.upsample, self.threshold = int(upsample), float(threshold)
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._landmarks = dlib.shape_predictor(paths["landmarks"])
        self._identity = None
        self._identity_path = paths["identity"]
        self.model_files = {k: os.path.basename(p) for k, p in paths.items()}

    def _work_scale(self, height: int, width: int) -> float:
        scale = min(1.0, self.detect_size / max(height, width))
        if min(height, width) * scale < self.min_size:
            scale = self.min_size / min(height, width)
        return scale

    def detect(self, image: np.ndarray, landmarks: bool = False, embedding: bool = False) -> List[Face]:
        """Faces in ``image`` ``(H, W, 3)`` uint8 RGB, largest first. ``landmarks``: fill ``Face.landmarks``
        ``(68, 2)``; ``embedding``: also ``Face.embedding`` ``(128,)`` (implies landmarks)."""
        work, scale_x, scale_y = self._work_image(image)
        rects, scores, _ = self._detector.run(work, self.upsample, self.threshold)
        faces = []
        for rect, score in zip(rects, scores):
            box = np.array([rect.left() / scale_x, rect.top() / scale_y, (rect.right() + 1) / scale_x,
                            (rect.bottom() + 1) / scale_y], dtype=np.float64)
            face = Face(box, float(score))
            if landmarks or embedding:
                shape = self._landmarks(work, rect)
                face.landmarks = self._points(shape, scale_x, scale_y)
                if embedding:
                    face.embedding = np.asarray(self.identity_model().compute_face_descriptor(work, shape, 0, 0.25),
                                                dtype=np.float64)
            faces.append(face)
        faces.sort(key=lambda f: -f.size)
        return faces

    def fit_landmarks(self, image: np.ndarray, box: Sequence[float], score: float = 1.0) -> Face:
        """The 68 landmarks of the face in ``box`` ``(x0, y0, x1, y1)`` (pixels of ``image``, e.g. the last
        frame's box moved with its landmarks), without running the detector: what :class:`LandmarkTracker`
        uses between detections (~2x faster than :meth:`detect` at 256 px)."""
        work, scale_x, scale_y = self._work_image(image)
        x0, y0, x1, y1 = [float(v) for v in box]
        rect = self._dlib.rectangle(int(round(x0 * scale_x)), int(round(y0 * scale_y)),
                                    int(round(x1 * scale_x)) - 1, int(round(y1 * scale_y)) - 1)
        face = Face(np.array([x0, y0, x1, y1], dtype=np.float64), float(score))
        face.landmarks = self._points(self._landmarks(work, rect), scale_x, scale_y)
        return face

    def _work_image(self, image: np.ndarray) -> Tuple[np.ndarray, float, float]:
        """The copy of ``image`` the detector sees and its scale in x and y."""
        from PIL import Image

        image = np.ascontiguousarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputError(f"face detection takes (H, W, 3) uint8 RGB images, got {image.shape} {image.dtype}")
        height, width = image.shape[:2]
        scale = self._work_scale(height, width)
        if abs(scale - 1.0) <= 1e-6:
            return image, 1.0, 1.0
        size = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
        work = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR if scale < 1 else Image.BICUBIC,
                                                        reducing_gap=None if scale >= 1 else 2.0))
        return work, size[0] / width, size[1] / height

    @staticmethod
    def _points(shape, scale_x: float, scale_y: float) -> np.ndarray:
        points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
        return points / np.array([scale_x, scale_y])

    def identity_model(self):
        if self._identity is None:  # 22 MB network, loaded on first use only
            self._identity = self._dlib.face_recognition_model_v1(self._identity_path)
        return self._identity


def load_face_backend(name: str = "auto", device: str = "cpu") -> FaceDetector:
    """The face backend ``name`` (one of :data:`FACE_BACKENDS`). ``"auto"``: dlib when installed (offline),
    else face-alignment when its weights are on disk, else :class:`MissingWeightsError` saying what to install."""
    if name not in FACE_BACKENDS:
        raise InputError(f"unknown face backend {name!r} (use {', '.join(FACE_BACKENDS)})")
    if name == "dlib":
        return DlibFaceBackend()
    if name == "face-alignment":
        return FaceAlignmentDetector(device=device)
    try:
        return DlibFaceBackend()
    except MissingWeightsError as dlib_error:
        if not missing_face_alignment_files():
            return FaceAlignmentDetector(device=device)
        raise MissingWeightsError(f"face tools need a face backend: {FACES_EXTRA_HINT}, or put the "
                                  f"face-alignment weights {', '.join(FACE_ALIGNMENT_FILES)} in "
                                  f"{face_alignment_weights_dir()}") from dlib_error


def backend_name(detector) -> str:
    """A short name of a detector for reports (``dlib``, ``face-alignment`` or the class name)."""
    return getattr(detector, "name", None) or type(detector).__name__


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
