"""Face shape from a talking-head clip's own motion: sparse, label-free depth targets for face-depth training.

The photometric loss of monodepth2 constrains depth through parallax between nearby frames. Talking heads
hardly turn, so between frames a few apart the nose moves a fraction of a pixel against the cheeks and that
loss barely constrains the relief. Over a *whole* clip, though, the head turns and nods by several degrees,
and the 68 face landmarks (the offline dlib tools) track those points through every frame. Structure from
motion on the tracks recovers their 3D shape with no depth label:

1. **Rigid factorisation** (Tomasi-Kanade, affine camera): the centred 2D tracks of the rigid landmarks
   (jaw sides, brows, nose, eyes; the mouth and chin move with speech) form a ``2F x P`` matrix of rank 3,
   ``W = M S``; its SVD gives motion ``M`` and shape ``S`` up to a 3x3 matrix ``A``.
2. **Metric upgrade**: ``Q = A A^T`` is solved linearly from every frame's camera rows being orthogonal and of
   equal norm (weak perspective); ``Q`` must be positive definite. A clip in which the head never turns
   leaves ``Q`` indefinite: such a clip gives no targets (:class:`ShapeFromMotionError`).
3. The non-rigid landmarks (mouth, chin) are triangulated from the recovered cameras (least squares over
   frames: their mean position).
4. Per frame, the *nearness* of each landmark is its coordinate along that frame's viewing axis.

An affine camera cannot tell a shape from its mirror image in depth (the two explain the same tracks); the
one prior used here picks the mirror in which the nose tip is nearer than the jaw line. The depth scale is
not determined either (small rotations trade against relief depth), so the targets are used with a
scale- and shift-invariant loss (:func:`landmark_nearness_loss`: one minus the Pearson correlation per frame).

:func:`clip_landmarks` finds (and caches) a clip's landmarks at the file's own resolution and maps them to the
training frame with the dataset's centre crop + resize; :func:`nearness_targets` factorises them.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DatasetError, InputError
from ..faces import select_face
from ..io.clips import clip_name, iter_clip_frames

logger = logging.getLogger("dagan")
PathLike = Union[str, os.PathLike]

__all__ = ["RIGID_LANDMARKS", "ShapeFromMotionError", "FaceShape", "factorize", "fit_points", "clip_landmarks",
           "clips_landmarks", "nearness_targets", "landmark_nearness_loss", "sample_map"]

#: landmarks that move with the head only (jaw sides, brows, nose, eyes), in the 68-point iBUG layout
RIGID_LANDMARKS: Tuple[int, ...] = tuple(range(0, 5)) + tuple(range(12, 48))
NOSE_TIP, JAW = 30, tuple(range(0, 17))
#: below this spread of head rotation (radians, about 3 degrees) the nose's parallax against the jaw is a few
#: pixels at 256 px, comparable to the landmarks' own jitter (about 1 px): the shape is not trusted
MIN_TURN = 0.05
CACHE_VERSION = 1


class ShapeFromMotionError(DatasetError):
    """The clip's landmark tracks do not determine a 3D shape (too few frames, or the head never turns)."""


@dataclass
class FaceShape:
    """Result of :func:`factorize` for a clip of ``F`` frames (``F_ok`` of them with landmarks).

    points: ``(68, 3)`` shape (x, y image-aligned, z towards the camera; pixels of the tracks, scale of z
    undetermined); nearness: ``(F, 68)`` per-frame coordinate of each landmark along that frame's viewing
    axis (larger = nearer; NaN for frames without landmarks); rms: reprojection error of the rigid
    landmarks (pixels); turn: spread of the recovered head rotation (radians, a motion-strength gauge)."""

    points: np.ndarray
    nearness: np.ndarray
    rms: float
    turn: float


def _sym_row(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Coefficients of ``a^T Q b`` in the 6 unknowns of a symmetric ``Q``."""
    return np.array([a[0] * b[0], a[0] * b[1] + a[1] * b[0], a[0] * b[2] + a[2] * b[0], a[1] * b[1],
                     a[1] * b[2] + a[2] * b[1], a[2] * b[2]])


def factorize(tracks: np.ndarray, rigid: Sequence[int] = RIGID_LANDMARKS, min_frames: int = 20,
              min_turn: float = MIN_TURN) -> FaceShape:
    """3D face shape and per-frame landmark nearness from ``tracks`` ``(F, 68, 2)`` (NaN rows: no face).

    Raises :class:`ShapeFromMotionError` when fewer than ``min_frames`` frames have landmarks or the head's
    motion does not determine a shape (the metric upgrade is not positive definite, or the recovered head
    rotation spreads less than ``min_turn`` radians)."""
    tracks = np.asarray(tracks, dtype=np.float64)
    if tracks.ndim != 3 or tracks.shape[2] != 2:
        raise ValueError(f"tracks must be (F, P, 2), got {tracks.shape}")
    ok = np.isfinite(tracks).all(axis=(1, 2))
    n = int(ok.sum())
    if n < min_frames:
        raise ShapeFromMotionError(f"landmarks in {n} frame(s), fewer than the {min_frames} shape from motion needs")
    rigid = list(rigid)
    obs = tracks[ok]
    centre = obs[:, rigid].mean(1, keepdims=True)  # (n, 1, 2): the translation of each frame
    w = obs[:, rigid] - centre
    wm = np.concatenate([w[..., 0], w[..., 1]], 0)  # (2n, P)
    u, s, vt = np.linalg.svd(wm, full_matrices=False)
    motion = u[:, :3] * np.sqrt(s[:3])
    shape = np.sqrt(s[:3])[:, None] * vt[:3]
    rows, rhs = [], []
    for f in range(n):
        a, b = motion[f], motion[n + f]
        rows += [_sym_row(a, a) - _sym_row(b, b), _sym_row(a, b)]
        rhs += [0.0, 0.0]
    norm = (s[0] + s[1]) / (2 * n)  # fixes the overall scale: mean squared row norm of the upgraded cameras
    rows.append(sum(_sym_row(motion[f], motion[f]) + _sym_row(motion[n + f], motion[n + f]) for f in range(n)) / (2 * n))
    rhs.append(norm)
    q = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0]
    qm = np.array([[q[0], q[1], q[2]], [q[1], q[3], q[4]], [q[2], q[4], q[5]]])
    eig = np.linalg.eigvalsh(qm)
    if eig.min() <= 1e-9 * max(eig.max(), 1e-12):
        raise ShapeFromMotionError("the head does not turn enough in this clip to determine the face's shape")
    a = np.linalg.cholesky(qm)
    motion, shape = motion @ a, np.linalg.inv(a) @ shape
    # rotate the frame so that the mean camera looks along z: x, y image-aligned
    r1 = motion[:n].mean(0)
    r1 /= np.linalg.norm(r1)
    r2 = motion[n:].mean(0)
    r2 -= r1 * (r2 @ r1)
    r2 /= np.linalg.norm(r2)
    basis = np.stack([r1, r2, np.cross(r1, r2)])
    motion, shape = motion @ basis.T, basis @ shape
    cams = np.stack([motion[:n], motion[n:]], 1)  # (n, 2, 3)
    rms = float(np.sqrt(np.mean((np.einsum("fij,jp->fpi", cams, shape) - w) ** 2)))
    # every landmark's mean 3D position, least squares over the frames (rigid ones reproduce ``shape``)
    lhs = cams.reshape(2 * n, 3)
    rel = (obs - centre).transpose(0, 2, 1).reshape(2 * n, -1)  # (2n, 68)
    points = np.linalg.lstsq(lhs, rel, rcond=None)[0].T  # (68, 3)
    axis = np.cross(cams[:, 0], cams[:, 1])
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    nearness_ok = axis @ points.T  # (n, 68)
    if nearness_ok[:, NOSE_TIP].mean() < nearness_ok[:, list(JAW)].mean():
        points = points * np.array([1.0, 1.0, -1.0])  # the mirror in depth: the nose is the nearest point
        nearness_ok = -nearness_ok
    nearness = np.full((tracks.shape[0], tracks.shape[1]), np.nan)
    nearness[ok] = nearness_ok
    yaw = np.arctan2(axis[:, 0], axis[:, 2])
    pitch = np.arctan2(axis[:, 1], axis[:, 2])
    turn = float(np.hypot(yaw.std(), pitch.std()))
    if turn < min_turn:
        raise ShapeFromMotionError(f"the head turns too little in this clip ({turn:.3f} rad, under {min_turn}) "
                                   "to determine the face's shape")
    return FaceShape(points=points, nearness=nearness, rms=rms, turn=turn)


def fit_points(points: np.ndarray, src_hw: Tuple[int, int], size: Sequence[int]) -> np.ndarray:
    """Map pixel coordinates ``(..., 2)`` (x, y) of a ``src_hw`` frame through the dataset's resize policy
    (:func:`dagan.io.images.fit_frames`: centre crop to the aspect of ``size = (H, W)``, then resize)."""
    from ..io.images import fit_crop

    top, left, h, w = fit_crop(src_hw[0], src_hw[1], size)
    out_h, out_w = int(size[0]), int(size[1])
    pts = np.asarray(points, dtype=np.float64)
    x = (pts[..., 0] - left + 0.5) * out_w / w - 0.5
    y = (pts[..., 1] - top + 0.5) * out_h / h - 0.5
    return np.stack([x, y], -1)


def _cache_key(path: PathLike) -> str:
    st = os.stat(path)  # a frame folder's mtime changes when frames are added or removed
    ident = f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}|{CACHE_VERSION}"
    return hashlib.sha1(ident.encode()).hexdigest()[:20]


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "dagan", "landmarks")


def clip_landmarks(path: PathLike, size: Sequence[int], detector=None, cache_dir: Optional[PathLike] = None
                   ) -> np.ndarray:
    """The 68 landmarks of the largest face in every frame of a clip (video file or frame folder), in pixels
    of the training frame of ``size = (H, W)`` (the dataset's centre crop + resize): ``(F, 68, 2)`` float32,
    NaN rows where no face was found. The landmarks at the file's own resolution are cached under
    ``cache_dir`` (default ``~/.cache/dagan/landmarks``) by path, file size and mtime; ``detector``: a face
    backend with landmarks (default: the offline dlib one)."""
    from ..utils import atomic_write

    cache_dir = os.fspath(cache_dir) if cache_dir is not None else default_cache_dir()
    cache = os.path.join(cache_dir, _cache_key(path) + ".npz")
    if os.path.isfile(cache):
        with np.load(cache) as data:
            tracks, src_hw = data["tracks"], tuple(int(v) for v in data["frame_hw"])
    else:
        if detector is None:
            from ..faces import load_face_backend

            detector = load_face_backend("dlib")
        rows, src_hw = [], (0, 0)
        for frame in iter_clip_frames(path, check_complete=False):  # a truncated clip: as in training
            src_hw = frame.shape[:2]
            face = select_face([f for f in detector.detect(frame, landmarks=True) if f.landmarks is not None])
            rows.append(face.landmarks if face is not None else np.full((68, 2), np.nan))
        tracks = np.asarray(rows, dtype=np.float32).reshape(-1, 68, 2)
        atomic_write(cache, lambda fh: np.savez(fh, tracks=tracks, frame_hw=np.array(src_hw)))
    return fit_points(tracks, src_hw, size).astype(np.float32)


def clips_landmarks(paths: Sequence[PathLike], size: Sequence[int], cache_dir: Optional[PathLike] = None
                    ) -> Dict[str, np.ndarray]:
    """:func:`clip_landmarks` of several clips, ``{clip name (as the training dataset names it): points}``; a
    clip that cannot be read is left out with a warning (the dataset skips it too)."""
    out = {}
    for path in paths:
        try:
            out[clip_name(path)] = clip_landmarks(path, size, cache_dir=cache_dir)
        except (InputError, OSError) as exc:
            logger.warning("no landmarks for %s: %s", path, exc)
    return out


def nearness_targets(points: np.ndarray, name: str = "clip") -> Optional[np.ndarray]:
    """Per-frame landmark nearness ``(F, 68)`` float32 of a clip's landmark tracks (:func:`factorize`), or
    ``None`` (logged) when they do not determine a shape."""
    try:
        shape = factorize(points)
    except ShapeFromMotionError as exc:
        logger.warning("no landmark depth targets for %s: %s", name, exc)
        return None
    logger.info("face shape of %s: head turn %.3f rad, rigid reprojection error %.2f px", name, shape.turn,
                shape.rms)
    return shape.nearness.astype(np.float32)


def sample_map(values: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``values`` ``(B, 1, H, W)`` at ``points`` ``(B, P, 2)`` (x, y pixel centres) -> ``(B, P)``, bilinear."""
    h, w = values.shape[-2:]
    scale = torch.tensor([2.0 / w, 2.0 / h], dtype=values.dtype, device=values.device)
    grid = (points.to(values.dtype) + 0.5) * scale - 1
    out = F.grid_sample(values, grid.unsqueeze(1), mode="bilinear", padding_mode="border", align_corners=False)
    return out[:, 0, 0]


def landmark_nearness_loss(disp: torch.Tensor, points: torch.Tensor, nearness: torch.Tensor,
                           valid: Optional[torch.Tensor] = None, eps: float = 1e-6) -> torch.Tensor:
    """Scale- and shift-invariant sparse depth loss: ``1 - pearson(disp at points, nearness)`` averaged over
    the valid samples (``valid`` ``(B,)`` bool; rows with any NaN are invalid too). ``disp`` ``(B, 1, H, W)``
    (larger = nearer), ``points`` ``(B, P, 2)`` pixels of ``disp``, ``nearness`` ``(B, P)``. Zero when the
    disparity at the landmarks is any increasing affine function of the targets."""
    ok = torch.isfinite(points).all(-1).all(-1) & torch.isfinite(nearness).all(-1)
    if valid is not None:
        ok = ok & valid.bool()
    if not bool(ok.any()):
        return disp.sum() * 0
    d = sample_map(disp[ok].float(), points[ok].float())
    t = nearness[ok].float()
    d = d - d.mean(1, keepdim=True)
    t = t - t.mean(1, keepdim=True)
    r = (d * t).sum(1) / (d.norm(dim=1) * t.norm(dim=1) + eps)
    return (1 - r).mean()
