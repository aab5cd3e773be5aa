"""Face-guided head motion: the driving face's landmarks set the global motion of the keypoints.

A small keypoint detector trained on a handful of people follows a driver's head only partly (the shipped
model's keypoint hull follows about 60 % of a zoom, ``benchmarks/kp_scale_response.py``), so results of a
driver who leans in or turns move too little and drift in size. 68-point face landmarks (dlib, offline) follow
the head on any face. :class:`LandmarkGuide` splits each driving frame's keypoint motion (relative to the
anchor frame) into

* a **global motion** ``(A, t)`` (a similarity by default, or an affine map): replaced by the one fitted to
  the driving frame's landmarks (:data:`GLOBAL_POINTS`) against the anchor's, and
* the **non-rigid residual** of the keypoint positions (eyes, jaw, the parts that move on their own): kept from
  the keypoints, or taken from the landmarks for keypoints a model was trained to put on landmarks
  (``train.kp_landmarks``).

For relative motion the global part turns and scales the *source's* keypoints about their own centre (see
:func:`guide_keypoints`). The Jacobians (each keypoint's local affine motion) become the anchor's under the
landmarks' global motion, ``A_lm J_anchor`` (moving the source: ``A_lm J_source``): the detector's own Jacobian changes follow a new face even less
than its positions (shipped model, held-out clips: keeping them on top gave a scale drift of 0.043 against
0.032 on a turning driver, 0.018 against 0.020 on one who leans in, and motion errors 0.36 / 0.33 against
0.35 / 0.31). Frames without a face keep the last landmarks seen.
Coordinates are the keypoints' normalised ``[-1, 1]`` image coordinates.
"""
from __future__ import annotations

import logging
from typing import Callable, Dict, Optional, Sequence, Tuple, TypeVar

import numpy as np
import torch

from ..errors import InputError, MissingWeightsError
from ..models.dagan import relative_motion

logger = logging.getLogger("dagan")
T = TypeVar("T")

KP = Dict[str, torch.Tensor]

#: the face-guide settings of ``demo.py --guide`` and the evaluation: on when a face backend loads, always, never
GUIDE_MODES: Tuple[str, ...] = ("auto", "on", "off")


def resolve_guide(mode: str, load: Callable[[], T]) -> Optional[T]:
    """The ``--guide`` policy, one place for the demo, the evaluation and the benchmarks: ``off`` -> None;
    ``on`` -> ``load()`` (its :class:`~dagan.errors.MissingWeightsError` propagates); ``auto`` -> ``load()``,
    or None with a logged line when no face backend is installed."""
    if mode not in GUIDE_MODES:
        raise InputError(f"--guide must be one of {', '.join(GUIDE_MODES)}, got {mode!r}")
    if mode == "off":
        return None
    try:
        return load()
    except MissingWeightsError as exc:
        if mode == "on":
            raise
        logger.info("face-guided motion is off (%s)", exc)
        return None


#: the landmarks the head's global motion is fitted to: the face outline above the chin (0-4, 12-16), brows
#: (17-26), nose (27-35) and eyes (36-47); not the mouth and chin (48-67, 5-11), which move on their own.
#: On the held-out clips this set gave lower motion error and scale drift than the nose and eye corners alone
#: (the shipped model's numbers are in checkpoints/README.md)
GLOBAL_POINTS: Tuple[int, ...] = tuple(range(0, 5)) + tuple(range(12, 48))
#: the fitted global motion: a similarity (turn, scale, shift); "affine" also squashes along one axis (a nod,
#: a turn), which followed a turning driver's face width better but overshot a driver who leans in
DEFAULT_FIT = "similarity"
#: the guide's face detector runs on every n-th driving frame, the landmarks are tracked in between
#: (:class:`~dagan.faces.LandmarkTracker`): every frame by default (rendering a file), every 10th in
#: realtime (``demo.py --stream``), where tracking's ~5 ms a frame less matter. Held-out d14 | d9 with release
#: 3, every frame against every 10th: motion 0.307 | 0.354 against 0.307 | 0.357, mouth 0.22 | 0.33 against
#: 0.22 | 0.30, scale drift equal
GUIDE_DETECT_EVERY = 1
GUIDE_STREAM_DETECT_EVERY = 10
#: landmarks of the lower jaw and lower lip (iBUG numbering): tied keypoints on these open the mouth, and
#: ``mouth_gain`` scales their own motion
MOUTH_GAIN_POINTS: Tuple[int, ...] = tuple(range(5, 12)) + tuple(range(55, 60)) + tuple(range(65, 68))
MAX_MOUTH_GAIN = 10.0


def fit_similarity(src: torch.Tensor, dst: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Least-squares similarity ``dst ~ A src + t`` (``A = s R``, no reflection) of point sets ``(B, N, 2)``
    (Umeyama's closed form). Returns ``A (B, 2, 2)`` and ``t (B, 2)``; float64 inside."""
    src64, dst64 = src.double(), dst.double()
    mu_s, mu_d = src64.mean(1, keepdim=True), dst64.mean(1, keepdim=True)
    xs, xd = src64 - mu_s, dst64 - mu_d
    # for a similarity A = [[a, -b], [b, a]] the least-squares a, b have a closed form
    var = (xs ** 2).sum((1, 2)).clamp_min(1e-12)
    a = (xs * xd).sum((1, 2)) / var
    b = (xs[..., 0] * xd[..., 1] - xs[..., 1] * xd[..., 0]).sum(1) / var
    A = torch.stack([torch.stack([a, -b], -1), torch.stack([b, a], -1)], -2)
    t = mu_d[:, 0] - torch.einsum("bij,bj->bi", A, mu_s[:, 0])
    return A.to(src.dtype), t.to(src.dtype)


def fit_affine(src: torch.Tensor, dst: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Least-squares affine map ``dst ~ A src + t`` of point sets ``(B, N, 2)`` (N >= 3, not collinear): the
    weak-perspective image of a planar motion, so it also holds turns and nods, which squash the face along one
    axis. Returns ``A (B, 2, 2)`` and ``t (B, 2)``; float64 inside."""
    src64, dst64 = src.double(), dst.double()
    mu_s, mu_d = src64.mean(1, keepdim=True), dst64.mean(1, keepdim=True)
    xs, xd = src64 - mu_s, dst64 - mu_d
    cov = xs.transpose(1, 2) @ xs + 1e-9 * torch.eye(2, dtype=torch.float64)
    A = torch.linalg.solve(cov, xs.transpose(1, 2) @ xd).transpose(1, 2)
    t = mu_d[:, 0] - torch.einsum("bij,bj->bi", A, mu_s[:, 0])
    return A.to(src.dtype), t.to(src.dtype)


def pixels_to_normalized(points: np.ndarray, width: int, height: int, grid: int) -> np.ndarray:
    """Pixel coordinates ``(..., 2)`` (x, y) in an image ``width x height`` -> the ``[-1, 1]`` coordinates of
    the keypoints of a model working at ``grid x grid`` pixels (``-1 + 2 i / (grid - 1)`` at pixel centre ``i``
    of the resized image)."""
    points = np.asarray(points, np.float64)
    at_grid = (points + 0.5) * (grid / np.array([width, height], np.float64)) - 0.5
    return at_grid * (2.0 / max(grid - 1, 1)) - 1.0


def face_points(face, width: int, height: int, grid: int) -> Optional[np.ndarray]:
    """The guide's landmarks of a detected face (a :class:`~dagan.faces.Face` or None) in an image
    ``width x height``: ``(68, 2)`` keypoint coordinates of a ``grid``-pixel model, or None (no face or no
    landmarks)."""
    if face is None or getattr(face, "landmarks", None) is None:
        return None
    return pixels_to_normalized(face.landmarks, width, height, grid)


FITS = {"similarity": fit_similarity, "affine": fit_affine}


def guide_keypoints(kp_driving: KP, kp_anchor: KP, lm_anchor: torch.Tensor, lm_driving: torch.Tensor,
                    fit: str = DEFAULT_FIT, points: Sequence[int] = GLOBAL_POINTS,
                    tied: Sequence[Tuple[int, int]] = (), kp_source: Optional[KP] = None,
                    scale: float = 1.0, mouth_gain: float = 1.0) -> KP:
    """Replace the global motion of ``kp_driving`` (``(T, K, 2)`` values, ``(T, K, 2, 2)`` Jacobians)
    relative to ``kp_anchor`` (batch 1) by the one of the landmarks ``lm_driving (T, 68, 2)`` relative to
    ``lm_anchor (1, 68, 2)`` (normalised coordinates), fitted (``fit``: ``"affine"`` or ``"similarity"``) on
    the landmarks ``points``.

    Without ``kp_source`` the result is the driving frame's keypoints under the landmark motion,
    ``A_lm (kp_anchor + r) + t_lm`` with the non-rigid residual ``r = A_kp^-1 (kp_d - t_kp) - kp_anchor``, and
    the Jacobians ``A_lm J_anchor``.
    With ``kp_source`` (batch 1) and the relative-motion ``scale``, it is the final normalised keypoints that
    move the source (what :meth:`DaGAN.render` takes, in place of :func:`~dagan.models.dagan.relative_motion`'s):
    the landmarks' global motion turns, scales and shears the *source's* keypoints about their own centre,
    ``c_s + A_lm (kp_source - c_s) + scale (delta + A_lm r)``, ``delta`` the motion of the anchor keypoints'
    centre, with the Jacobians ``A_lm J_source``. Relative motion alone would carry the driver's keypoint
    layout over to the source: a zoom of a driver whose eyes sit wider apart than the source's would widen the
    source's eyes by more than the zoom.

    ``tied``: ``(keypoint, landmark)`` pairs of a model trained with keypoints on landmarks
    (``train.kp_landmarks``); the residual of those keypoints is their landmark's (so without ``kp_source``
    they keep their offset from the landmark, turned and scaled with the face, and otherwise move with it).
    ``mouth_gain`` multiplies that residual for tied keypoints on the lower jaw and lip
    (:data:`MOUTH_GAIN_POINTS`): > 1 opens the result's mouth wider than the model alone would."""
    value = kp_driving["value"].float()
    frames = value.shape[0]
    anchor = kp_anchor["value"].float().expand(frames, -1, -1)
    lm_anchor = lm_anchor.float().expand(frames, -1, -1)
    lm_driving = lm_driving.float()
    a_kp, t_kp = FITS[fit](anchor, value)
    a_lm, t_lm = FITS[fit](lm_anchor[:, list(points)], lm_driving[:, list(points)])
    a_kp_inv = torch.inverse(a_kp)
    residual = torch.einsum("bij,bkj->bki", a_kp_inv, value - t_kp[:, None]) - anchor
    if tied:  # a tied keypoint's own motion is its landmark's, less the landmarks' global motion
        kp_index, lm_index = [k for k, _ in tied], [m for _, m in tied]
        lm_residual = torch.einsum("bij,bkj->bki", torch.inverse(a_lm),
                                   lm_driving[:, lm_index] - t_lm[:, None]) - lm_anchor[:, lm_index]
        gain = torch.tensor([mouth_gain if m in MOUTH_GAIN_POINTS else 1.0 for m in lm_index],
                            dtype=lm_residual.dtype, device=lm_residual.device)
        residual = residual.clone()
        residual[:, kp_index] = lm_residual * gain[:, None]
    moved = lambda x: torch.einsum("bij,bkj->bki", a_lm, x)  # noqa: E731
    if kp_source is None:
        guided = moved(anchor + residual) + t_lm[:, None]
        shapes = kp_anchor.get("jacobian")
    else:
        source = kp_source["value"].float().expand(frames, -1, -1)
        centre_s = source.mean(1, keepdim=True)
        centre_d = anchor.mean(1, keepdim=True)
        delta = moved(centre_d) + t_lm[:, None] - centre_d
        guided = centre_s + moved(source - centre_s) + scale * (delta + moved(residual))
        shapes = kp_source.get("jacobian")
    out = {"value": guided}
    if "jacobian" in kp_driving:  # the anchor's (or the source's) local shapes under the landmarks' global motion
        out["jacobian"] = torch.matmul(a_lm[:, None], shapes.float())
    return out


def stack_landmarks(landmarks: Sequence[Optional[np.ndarray]]) -> torch.Tensor:
    """Each frame's guide landmarks (``(68, 2)`` keypoint coordinates, None: no face found) as one
    ``(T, 68, 2)`` float32 tensor, NaN rows for the frames without a face (what :class:`LandmarkGuide` takes)."""
    rows = [None if lm is None else torch.as_tensor(np.asarray(lm), dtype=torch.float32) for lm in landmarks]
    shape = next((r.shape for r in rows if r is not None), (68, 2))
    return torch.stack([torch.full(shape, float("nan")) if r is None else r for r in rows])


class LandmarkGuide:
    """The face guide as a motion stage of relative motion: the driving keypoints and landmarks of a batch of
    frames in, the normalised keypoints that move the source out (:func:`guide_keypoints`, then
    :meth:`DaGAN.render`).

    :meth:`set_anchor` takes the anchor frame's landmarks, its keypoints, the source's keypoints and the
    movement scale (from :func:`~dagan.models.dagan.anchor_motion`); calling the guide with the keypoints and
    landmarks of the next frames, in order, returns their normalised keypoints. A frame without a face (NaN
    landmarks) keeps the last landmarks seen; without an anchor face the guide passes the motion through:
    plain relative motion (:func:`~dagan.models.dagan.relative_motion`).
    """

    def __init__(self, points: Sequence[int] = GLOBAL_POINTS, fit: str = DEFAULT_FIT,
                 tied: Sequence[Tuple[int, int]] = (), mouth_gain: float = 1.0):
        if fit not in FITS:
            raise ValueError(f"unknown fit {fit!r}: one of {sorted(FITS)}")
        if not 0.0 <= float(mouth_gain) <= MAX_MOUTH_GAIN:
            raise InputError(f"mouth gain must be in [0, {MAX_MOUTH_GAIN:g}], got {mouth_gain}")
        self.mouth_gain = float(mouth_gain)
        self.points = [int(p) for p in points]
        self.fit = fit
        self.tied = [(int(k), int(m)) for k, m in tied]
        self.reset()

    def reset(self) -> None:
        self.anchor: Optional[torch.Tensor] = None
        self.kp_anchor: Optional[KP] = None
        self.last: Optional[torch.Tensor] = None
        self.missing = 0
        self.kp_source: Optional[KP] = None
        self.scale = 1.0

    @property
    def active(self) -> bool:
        return self.anchor is not None and self.kp_anchor is not None

    def set_anchor(self, landmarks: Optional[np.ndarray], kp_anchor: KP, kp_source: KP, scale: float = 1.0) -> None:
        """Anchor relative motion: the anchor frame's landmarks ``(68, 2)`` in keypoint coordinates
        (:func:`pixels_to_normalized`; None: no face, the guide passes the motion through), its keypoints
        (batch 1), the source's keypoints (batch 1) and the movement scale."""
        self.reset()
        self.anchor = None if landmarks is None else torch.as_tensor(np.asarray(landmarks), dtype=torch.float32)
        self.last = self.anchor
        self.kp_anchor = {k: v[:1].detach().float() for k, v in kp_anchor.items()}
        self.kp_source = {k: v[:1].detach().float() for k, v in kp_source.items()}
        self.scale = float(scale)

    def __call__(self, kp_driving: KP, landmarks: torch.Tensor) -> KP:
        """``kp_driving`` (``(T, K, 2)`` values, ``(T, K, 2, 2)`` Jacobians) and ``landmarks (T, 68, 2)``
        (:func:`stack_landmarks`; NaN rows: no face) of consecutive frames -> their normalised keypoints."""
        if self.kp_anchor is None or self.kp_source is None:
            raise RuntimeError("LandmarkGuide needs an anchor: call set_anchor() first")
        frames = kp_driving["value"].shape[0]
        if landmarks.shape[0] != frames:
            raise InputError(f"got landmarks of {landmarks.shape[0]} frames for keypoints of {frames}")
        device = kp_driving["value"].device
        kp_anchor = {k: v.to(device) for k, v in self.kp_anchor.items()}
        kp_source = {k: v.to(device) for k, v in self.kp_source.items()}
        if not self.active:
            return relative_motion(kp_source, kp_driving, kp_anchor, self.scale)
        rows = []
        for points in landmarks.float().cpu():
            if torch.isnan(points).any():
                self.missing += 1
            else:
                self.last = points
            rows.append(self.last)
        return guide_keypoints(kp_driving, kp_anchor, self.anchor[None].to(device), torch.stack(rows).to(device),
                               self.fit, self.points, self.tied, kp_source, self.scale, self.mouth_gain)
