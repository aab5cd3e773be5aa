"""Face backends behind one interface (:class:`FaceDetector`): boxes, the 68 iBUG landmarks and (dlib only) a
128-d identity embedding.

* ``dlib`` (default, offline): dlib's HOG frontal face detector, ``shape_predictor_68_face_landmarks`` and
  ``dlib_face_recognition_resnet_model_v1`` from the ``face_recognition_models`` package (CC0). Install with
  the core install (``dlib-bin``, ``face_recognition_models``). Detection runs on a copy resized so its longer side is at most
  ``detect_size`` and its shorter side at least ``min_size`` (the HOG detector misses faces under ~80 px);
  boxes and landmarks are mapped back to the full-resolution image.
* ``face-alignment`` (S3FD + 2D-FAN-4): needs its weights on disk; never downloads.

Any object with a ``detect(image, landmarks=False)`` method can be injected instead (tests, apps).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional, Protocol, Sequence, Tuple

import numpy as np

from ..errors import InputError, MissingWeightsError

FACES_EXTRA_HINT = 'pip install dlib-bin face_recognition_models (part of the install: offline models inside)'
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
