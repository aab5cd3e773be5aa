"""Synthetic videos with known depth, for checking self-supervised depth training without faces.

A textured sphere floats in front of a textured plane; a pinhole camera with known intrinsics moves by a
small, known rigid motion from frame to frame. Frames are rendered by numpy ray casting (independent of
:mod:`dagan.training.geometry`, so they can test it), with 2x2 supersampling; the true camera-space depth
of every frame is returned with it.

Example::

    >>> video = render_video(SceneParams.random(0), num_frames=3, size=32)
    >>> video.frames.shape, video.depth.shape, video.intrinsics.shape
    ((3, 32, 32, 3), (3, 32, 32), (3, 3))
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
import torch
from scipy import ndimage

__all__ = ["SceneParams", "SyntheticVideo", "render_video", "make_texture", "rotation_matrix",
           "SyntheticDepthDataset", "intrinsics_for"]


def make_texture(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """Colourful multi-octave noise ``(size, size, 3)`` in [0, 1], tileable (wrap-around blur)."""
    tex = np.zeros((size, size, 3))
    for sigma, weight in ((16.0, 1.0), (6.0, 0.7), (2.5, 0.5)):
        noise = rng.standard_normal((size, size, 3))
        layer = ndimage.gaussian_filter(noise, (sigma, sigma, 0), mode="wrap")
        tex += weight * layer / (layer.std() + 1e-8)
    tex = (tex - tex.min()) / (tex.max() - tex.min())
    return np.clip(0.1 + 0.8 * tex, 0, 1)


def rotation_matrix(rotvec: Sequence[float]) -> np.ndarray:
    """Axis-angle ``(3,)`` -> ``(3, 3)`` rotation (Rodrigues, numpy)."""
    v = np.asarray(rotvec, dtype=np.float64)
    angle = np.linalg.norm(v)
    if angle < 1e-12:
        return np.eye(3)
    k = v / angle
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def intrinsics_for(size: int, focal: float = 1.0) -> np.ndarray:
    """Pinhole ``(3, 3)`` for a ``size`` x ``size`` image: ``f = focal * size``, centred principal point."""
    f = focal * size
    c = (size - 1) / 2
    return np.array([[f, 0, c], [0, f, c], [0, 0, 1]], dtype=np.float64)


@dataclass
class SceneParams:
    """A sphere (centre, radius) before the plane ``z = plane_z`` and a camera path.

    The camera centre of frame ``t`` is ``velocity * t``; its orientation is ``rotvec_rate * t`` (axis-angle,
    radians), so consecutive frames differ by a fixed small rigid motion.
    """

    sphere_centre: np.ndarray
    sphere_radius: float
    plane_z: float
    velocity: np.ndarray
    rotvec_rate: np.ndarray
    seed: int

    @classmethod
    def random(cls, seed: int, step: float = 0.08) -> "SceneParams":
        rng = np.random.default_rng(seed)
        direction = rng.standard_normal(3) * np.array([1.0, 1.0, 0.3])
        velocity = step * direction / np.linalg.norm(direction)
        return cls(sphere_centre=np.array([rng.uniform(-0.35, 0.35), rng.uniform(-0.35, 0.35), rng.uniform(2.2, 2.8)]),
                   sphere_radius=float(rng.uniform(0.6, 0.85)), plane_z=float(rng.uniform(4.5, 5.5)),
                   velocity=velocity, rotvec_rate=rng.uniform(-0.01, 0.01, 3), seed=seed)


@dataclass
class SyntheticVideo:
    frames: np.ndarray  # (T, H, W, 3) float32 in [0, 1]
    depth: np.ndarray  # (T, H, W) float32 camera-space z
    intrinsics: np.ndarray  # (3, 3) pixels
    cam_to_world: np.ndarray  # (T, 4, 4)

    def relative_pose(self, target: int, source: int) -> np.ndarray:
        """``(4, 4)`` transform from the target camera to the source camera."""
        return np.linalg.inv(self.cam_to_world[source]) @ self.cam_to_world[target]


def _sample(texture: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear, wrapping texture lookup at texture-pixel coordinates -> ``(..., 3)``."""
    coords = np.stack([v.ravel(), u.ravel()])
    out = [ndimage.map_coordinates(texture[..., c], coords, order=1, mode="grid-wrap") for c in range(3)]
    return np.stack(out, -1).reshape(u.shape + (3,))


def _render(params: SceneParams, tex_sphere: np.ndarray, tex_plane: np.ndarray, intrinsics: np.ndarray,
            cam_to_world: np.ndarray, size: int, supersample: int):
    n = size * supersample
    offs = (np.arange(n) + 0.5) / supersample - 0.5  # sub-pixel centres in output pixel units
    u, v = np.meshgrid(offs, offs)
    rays_cam = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(intrinsics).T  # z = 1
    rot, centre = cam_to_world[:3, :3], cam_to_world[:3, 3]
    rays = rays_cam @ rot.T  # world directions, length = camera-z per unit t
    # plane z = plane_z
    t_plane = (params.plane_z - centre[2]) / rays[..., 2]
    # sphere |c + t d - s| = r
    oc = centre - params.sphere_centre
    a = (rays ** 2).sum(-1)
    b = 2 * (rays @ oc)
    c = oc @ oc - params.sphere_radius ** 2
    disc = b * b - 4 * a * c
    hit = disc > 0
    t_sphere = np.where(hit, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), np.inf)
    hit &= t_sphere > 0
    t = np.where(hit, t_sphere, t_plane)  # camera-space depth because rays_cam has z = 1
    points = centre + t[..., None] * rays
    ts = tex_sphere.shape[0]
    normal = (points - params.sphere_centre) / params.sphere_radius
    lon = np.arctan2(normal[..., 0], -normal[..., 2])
    lat = np.arcsin(np.clip(normal[..., 1], -1, 1))
    col_sphere = _sample(tex_sphere, (lon / np.pi + 1) * ts, (lat / np.pi + 0.5) * ts)
    light = np.array([-0.4, -0.5, -0.77])
    shade = 0.75 + 0.25 * np.clip(normal @ (light / np.linalg.norm(light)), 0, 1)
    col_sphere = col_sphere * shade[..., None]
    tp = tex_plane.shape[0]
    col_plane = _sample(tex_plane, (points[..., 0] / 6 + 0.5) * tp, (points[..., 1] / 6 + 0.5) * tp)
    colour = np.where(hit[..., None], col_sphere, col_plane)
    s = supersample
    colour = colour.reshape(size, s, size, s, 3).mean((1, 3))
    depth = t.reshape(size, s, size, s).mean((1, 3))  # smooth surfaces: ~ the pixel-centre depth
    return colour.astype(np.float32), depth.astype(np.float32)


def render_video(params: SceneParams, num_frames: int = 8, size: int = 64, focal: float = 1.0,
                 supersample: int = 2) -> SyntheticVideo:
    """Render ``num_frames`` frames of the scene at ``size`` x ``size`` with ``f = focal * size``."""
    rng = np.random.default_rng(params.seed + 12345)
    tex_sphere, tex_plane = make_texture(rng), make_texture(rng)
    intrinsics = intrinsics_for(size, focal)
    frames, depths, poses = [], [], []
    start = -(num_frames - 1) / 2  # centre the path on the start position
    for i in range(num_frames):
        t = start + i
        pose = np.eye(4)
        pose[:3, :3] = rotation_matrix(params.rotvec_rate * t)
        pose[:3, 3] = params.velocity * t
        colour, depth = _render(params, tex_sphere, tex_plane, intrinsics, pose, size, supersample)
        frames.append(colour)
        depths.append(depth)
        poses.append(pose)
    return SyntheticVideo(np.stack(frames), np.stack(depths), intrinsics, np.stack(poses))


class SyntheticDepthDataset(torch.utils.data.Dataset):
    """Frame windows of synthetic videos in the depth trainer's layout.

    Item (like :class:`~dagan.training.datasets.VideoFramesDataset` windows): ``"frame_<o>"`` ``(3, H, W)``
    float in [0, 1] for each offset ``o`` in ``frame_ids``, ``"depth"`` ``(1, H, W)`` true depth of the target
    (offset 0) and ``"intrinsics"`` ``(3, 3)``. Deterministic (no augmentation).
    """

    def __init__(self, num_videos: int = 8, num_frames: int = 8, size: int = 64, frame_ids: Sequence[int] = (0, -1, 1),
                 seed: int = 0, focal: float = 1.0, step: float = 0.08):
        self.frame_ids = list(frame_ids)
        self.videos: List[SyntheticVideo] = [
            render_video(SceneParams.random(seed * 1000 + i, step=step), num_frames, size, focal)
            for i in range(num_videos)]
        lo, hi = -min(self.frame_ids), max(self.frame_ids)
        self.index = [(v, t) for v in range(num_videos) for t in range(lo, num_frames - hi)]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        v, t = self.index[i]
        video = self.videos[v]
        out = {f"frame_{k}": torch.from_numpy(np.ascontiguousarray(video.frames[t + k].transpose(2, 0, 1)))
               for k in self.frame_ids}
        out.update(depth=torch.from_numpy(video.depth[t][None].copy()),
                   intrinsics=torch.from_numpy(video.intrinsics.astype(np.float32)))
        return out


def spearman(pred: np.ndarray, truth: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    """Spearman rank correlation of two maps (0 for a constant map, whose ranks are all tied)."""
    from scipy.stats import rankdata

    a, b = np.asarray(pred, np.float64).ravel(), np.asarray(truth, np.float64).ravel()
    if mask is not None:
        a, b = a[mask.ravel()], b[mask.ravel()]
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    ra, rb = rankdata(a), rankdata(b)
    return float(np.corrcoef(ra, rb)[0, 1])
