"""The embedded default inputs of ``demo.py``: needs no files and no network.

Source: ``skimage.data.astronaut()`` (public domain, shipped with scikit-image). Driving, two kinds:

* :func:`talking_driving` (the demo's default when a face backend is installed): the astronaut turning,
  nodding and tilting along a seeded head-motion path while talking (the mouth opens and closes in
  syllable-like bursts) and blinking every two to three seconds. Made with the landmark motion stage
  (:class:`~dagan.inference.landmark_motion.LandmarkMotion`): the astronaut's own 68 landmarks are posed and
  given a mouth opening and closed eyelids, over a generic face relief (a smooth bump around the nose), and
  the stage draws each frame (a dark mouth cavity).
* :func:`synthetic_driving` (no face detector needed): the same head-motion path only; the face is treated as a
  plane rotated in 3-D about its centre and seen through a pinhole camera, a soft ellipse blends the moving head
  into the still background. The face box of the astronaut is known.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Tuple

import numpy as np
import torch
import torch.nn.functional as F

#: face box ``(x0, y0, x1, y1)`` of ``skimage.data.astronaut()`` (512x512), from an OpenCV Haar detection
ASTRONAUT_FACE_BOX = (177.0, 66.0, 272.0, 161.0)
DEFAULT_FPS = 25.0
DEFAULT_SECONDS = 3.0


def astronaut() -> np.ndarray:
    """``skimage.data.astronaut()``: ``(512, 512, 3)`` uint8."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


@dataclass(frozen=True)
class HeadPose:
    """Rotation angles in radians: ``yaw`` turns left/right, ``pitch`` nods, ``roll`` tilts."""

    yaw: float
    pitch: float
    roll: float


def head_motion_path(num_frames: int, fps: float = DEFAULT_FPS, seed: int = 0,
                     amplitude: Tuple[float, float, float] = (0.30, 0.18, 0.12)) -> np.ndarray:
    """A smooth seeded ``(num_frames, 3)`` path of (yaw, pitch, roll) in radians that starts at 0.

    Each angle is a sum of two sines with seeded periods (1.2-3 s) and phases, minus its value at t=0,
    so the first frame is the neutral pose (it anchors relative motion).
    """
    rng = np.random.default_rng(seed)
    t = np.arange(num_frames, dtype=np.float64) / float(fps)
    path = np.zeros((num_frames, 3))
    for axis in range(3):
        periods = rng.uniform(1.2, 3.0, size=2)
        phases = rng.uniform(0, 2 * np.pi, size=2)
        weights = np.array([0.7, 0.3])
        wave = sum(w * np.sin(2 * np.pi * t / p + ph) for w, p, ph in zip(weights, periods, phases))
        start = sum(w * np.sin(ph) for w, ph in zip(weights, phases))
        path[:, axis] = amplitude[axis] * (wave - start)
    return path


def _rotation(pose: HeadPose) -> np.ndarray:
    cy, sy = np.cos(pose.yaw), np.sin(pose.yaw)
    cp, sp = np.cos(pose.pitch), np.sin(pose.pitch)
    cr, sr = np.cos(pose.roll), np.sin(pose.roll)
    yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    roll = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return roll @ pitch @ yaw


class SyntheticHead:
    """Render the astronaut with a rotated head, cropped to a square box and resized to ``size``.

    ``image``: ``(H, W, 3)`` uint8 (default: the astronaut), ``face_box``: ``(x0, y0, x1, y1)`` of its face;
    ``crop_box``: ``(x0, y0, side)`` of the region rendered into each frame.
    """

    def __init__(self, image: np.ndarray = None, face_box=ASTRONAUT_FACE_BOX, crop_box=None, size: int = 256):
        from ..faces import square_box

        self.image = astronaut() if image is None else image
        x0, y0, x1, y1 = face_box
        self.centre = np.array([(x0 + x1) / 2.0, (y0 + y1) / 2.0])
        self.face_size = max(x1 - x0, y1 - y0)
        self.crop_box = crop_box if crop_box is not None else square_box(face_box, self.image.shape[:2])
        self.size = int(size)
        self.focal = 4.0 * self.face_size  # camera distance = focal: the neutral pose maps to itself
        h, w = self.image.shape[:2]
        self._image_t = torch.from_numpy(self.image).permute(2, 0, 1)[None].float()
        cx0, cy0, side = self.crop_box
        lin = (np.arange(self.size) + 0.5) / self.size * side
        gx, gy = np.meshgrid(cx0 + lin, cy0 + lin)
        self._pixels = np.stack([gx, gy], axis=-1)  # output pixel centres in image coordinates
        self._wh = np.array([w, h], dtype=np.float64)

    def render(self, pose: HeadPose) -> np.ndarray:
        """One ``(size, size, 3)`` uint8 frame of the head in ``pose``."""
        rot = _rotation(pose)
        normal = rot[:, 2]
        ab = (self._pixels - self.centre) / self.focal
        denom = normal[0] * ab[..., 0] + normal[1] * ab[..., 1] + normal[2]
        s = normal[2] * self.focal / denom
        points = np.stack([s * ab[..., 0], s * ab[..., 1], s - self.focal], axis=-1)
        local = points @ rot  # R^T p for every point: coordinates on the head plane
        src = self.centre + local[..., :2]
        # soft ellipse around the head: the head moves, the background stays
        rel = (local[..., :2]) / (self.face_size * np.array([0.95, 1.25]))
        head = np.clip((1.25 - np.sqrt((rel ** 2).sum(-1))) / 0.35, 0.0, 1.0)[..., None]
        still = self._pixels
        coords = head * src + (1 - head) * still
        grid = torch.from_numpy((coords + 0.5) / self._wh * 2 - 1).float()[None]
        out = F.grid_sample(self._image_t, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return out[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()

    def source(self) -> np.ndarray:
        """The neutral frame (identical to cropping the image), ``(size, size, 3)`` uint8."""
        return self.render(HeadPose(0.0, 0.0, 0.0))


def synthetic_driving(num_frames: int = int(DEFAULT_SECONDS * DEFAULT_FPS), size: int = 256, seed: int = 0,
                      fps: float = DEFAULT_FPS) -> Iterator[np.ndarray]:
    """The default driving clip: ``num_frames`` frames ``(size, size, 3)`` uint8 of the astronaut's head
    nodding, turning and tilting along :func:`head_motion_path` (generated lazily, one at a time)."""
    head = SyntheticHead(size=size)
    for yaw, pitch, roll in head_motion_path(num_frames, fps=fps, seed=seed):
        yield head.render(HeadPose(float(yaw), float(pitch), float(roll)))


def talking_path(num_frames: int, fps: float = DEFAULT_FPS, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Seeded ``(mouth, blink)`` curves of ``num_frames`` values in [0, 1], both 0 at frame 0: the mouth opens
    in bursts of 3-6 syllables a second separated by short pauses; the eyes close for ~0.2 s every 1.2-2 s,
    the first blink after 0.8 s."""
    rng = np.random.default_rng(seed + 1)
    t = np.arange(num_frames, dtype=np.float64) / float(fps)
    mouth = np.zeros(num_frames)
    start = 0.25
    while start < t[-1] if num_frames else False:
        length = rng.uniform(0.6, 1.4)
        rate = rng.uniform(3.0, 6.0)
        inside = (t >= start) & (t < start + length)
        mouth[inside] = np.abs(np.sin(np.pi * rate * (t[inside] - start))) * rng.uniform(0.6, 1.0)
        start += length + rng.uniform(0.2, 0.5)
    blink = np.zeros(num_frames)
    at = 0.8
    while num_frames and at < t[-1]:
        blink = np.maximum(blink, np.clip(1.0 - np.abs(t - at) / 0.1, 0.0, 1.0))
        at += rng.uniform(1.2, 2.0)
    return mouth, blink


def talking_driving(num_frames: int = int(DEFAULT_SECONDS * DEFAULT_FPS), size: int = 256, seed: int = 0,
                    fps: float = DEFAULT_FPS, detector=None) -> Iterator[np.ndarray]:
    """The default driving clip with a face backend: ``num_frames`` frames ``(size, size, 3)`` uint8 of the
    astronaut turning along :func:`head_motion_path` while talking and blinking (:func:`talking_path`).

    ``detector``: finds the astronaut's landmarks (default: :func:`~dagan.faces.load_face_backend`;
    :class:`~dagan.errors.MissingWeightsError` when none is installed)."""
    from ..faces import load_face_backend, select_face
    from .landmark_motion import LandmarkMotion, interocular_distance

    portrait = SyntheticHead(size=size).source()
    face = select_face((detector or load_face_backend("auto")).detect(portrait, landmarks=True))
    if face is None or face.landmarks is None:
        raise RuntimeError("the face backend finds no face in the astronaut")
    landmarks = torch.as_tensor(face.landmarks, dtype=torch.float32)
    iod = float(interocular_distance(landmarks))
    # a generic face relief: a smooth bump centred between the eyes and the nose tip
    centre = 0.5 * (landmarks[30] + landmarks[27])
    lin = torch.arange(size, dtype=torch.float32)
    gy, gx = torch.meshgrid(lin, lin, indexing="ij")
    relief = torch.exp(-((gx - centre[0]) ** 2 / (1.3 * iod) ** 2 + (gy - centre[1]) ** 2 / (1.8 * iod) ** 2))
    stage = LandmarkMotion(size, mouth_fill="dark")
    image = torch.from_numpy(portrait).permute(2, 0, 1)[None].float() / 255.0
    stage.set_source(image, landmarks.numpy(), relief[None, None])
    stage.set_anchor(landmarks.numpy())
    mouth, blink = talking_path(num_frames, fps, seed)
    lower = list(range(5, 12)) + list(range(55, 60)) + list(range(65, 68))
    jaw_share = torch.ones(68)
    jaw_share[[5, 11]], jaw_share[[6, 10]], jaw_share[[7, 9]] = 0.3, 0.6, 0.85
    for k, (yaw, pitch, roll) in enumerate(head_motion_path(num_frames, fps=fps, seed=seed)):
        rotation = torch.as_tensor(_rotation(HeadPose(float(yaw), float(pitch), float(roll))), dtype=torch.float32)
        points = landmarks.clone()
        points[lower, 1] += float(mouth[k]) * 0.32 * iod * jaw_share[lower]  # the jaw and lower lip drop
        points[[61, 62, 63], 1] -= float(mouth[k]) * 0.04 * iod
        for upper, low in ((37, 41), (38, 40), (43, 47), (44, 46)):  # upper lids down onto the lower ones
            points[upper] += float(blink[k]) * 0.9 * (landmarks[low] - landmarks[upper])
        posed = stage.rigid_targets(points, stage.depth_landmarks, torch.ones(1), rotation[None], torch.zeros(1, 2))
        frame = stage(posed)
        yield (frame[0].permute(1, 2, 0) * 255.0 + 0.5).clamp(0, 255).to(torch.uint8).numpy()
