"""Face handling, used by inference, training and evaluation alike.

* :mod:`~dagan.faces.backends`: detection backends behind one interface (dlib offline by default,
  face-alignment), boxes, 68 landmarks, identity embeddings;
* :mod:`~dagan.faces.selection`: which face of several (:func:`select_face`), :func:`find_best_frame`;
* :mod:`~dagan.faces.crop`: square crops with margin, a smoothed driving crop box, paste-back;
* :mod:`~dagan.faces.tracking`: landmarks along a video, detected every few frames and tracked in between.
"""
from .backends import (DLIB_MODEL_FILES, DLIB_SAME_PERSON_DISTANCE, FACE_ALIGNMENT_FILES, FACE_BACKENDS,
                       FACES_EXTRA_HINT, DlibFaceBackend, Face, FaceAlignmentDetector, FaceDetector, backend_name,
                       dlib_model_dir, face_alignment_weights_dir, load_face_backend, missing_face_alignment_files)
from .crop import DEFAULT_MARGIN, Box, BoxSmoother, DrivingCropper, crop_square, paste_back, soft_mask, square_box
from .selection import NO_FACE_HINT, find_best_frame, largest_face, normalize_landmarks, select_face
from .tracking import LandmarkTracker

__all__ = ["DLIB_MODEL_FILES", "DLIB_SAME_PERSON_DISTANCE", "FACE_ALIGNMENT_FILES", "FACE_BACKENDS", "FACES_EXTRA_HINT",
           "DlibFaceBackend", "Face", "FaceAlignmentDetector", "FaceDetector", "backend_name", "dlib_model_dir",
           "face_alignment_weights_dir", "load_face_backend", "missing_face_alignment_files", "DEFAULT_MARGIN", "Box",
           "BoxSmoother", "DrivingCropper", "crop_square", "paste_back", "soft_mask", "square_box", "NO_FACE_HINT",
           "find_best_frame", "largest_face", "normalize_landmarks", "select_face", "LandmarkTracker"]
