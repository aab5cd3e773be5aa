"""Training data: VoxCeleb-style videos (frame folders or video files) and still-portrait warp pairs.

Layout (the FOMM/DaGAN family)::

    root/train/<video>/0000000.png ...     a folder of frames (sorted by name), or
    root/train/<video>.mp4                 a video file (.mp4 .mov .gif .avi .mkv .webm)
    root/test/...                          same for the test split

A **flat** root (video files or frame folders directly in ``root``, no ``train/``/``test/``) is split by the
one rule of :func:`dagan.io.clips.list_clips`: the names listed in ``test_videos`` form the test split; when
that list is empty, one video in five (by a CRC32 hash of its name, at least one) is held out.
``exclude_videos`` drops names from both splits. This is how ``configs/tiny-cpu.yaml`` uses the flat folder
``../shared/data``. Clips are read by :mod:`dagan.io.clips`.

Every sample is addressed by a **global sample number** ``n``: ``n // len(ds)`` is the epoch, the item is
taken from a per-epoch permutation seeded by ``(seed, epoch)``, and all randomness of the sample (frame
indices, augmentation, warps) comes from a generator seeded by ``(seed, n)``. ``ds[n]`` is therefore the same
in any process, worker or resumed run, which makes resuming a training run exact.

Frames are read and resized by :mod:`dagan.io` (the readers of evaluation and the demo: 16-bit images scaled,
alpha composited over white; centre-cropped to the target aspect, then antialiased bilinear) to
``frame_shape`` and returned as float32 ``(3, H, W)`` in [0, 1]. Unreadable frames are skipped and counted (``sample["skipped"]``),
never fatal: only a dataset without any usable video raises :class:`~dagan.errors.DatasetError`.
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from ..config import AugmentationConfig, DatasetConfig, TransformConfig
from ..errors import DatasetError
from ..io.images import fit_frames, read_image
from ..io.clips import FrameFolder, list_clips, open_clip
from ..io.video import IMAGE_EXTENSIONS

logger = logging.getLogger("dagan")
PathLike = Union[str, os.PathLike]


# ------------------------------------------------------------------------------------- augmentation
def _sample_rng(seed: int, n: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(n), 0x5EED])


class Augmented(NamedTuple):
    """What :func:`augment_frames` returns."""

    frames: torch.Tensor
    time_flip: bool
    points: Optional[torch.Tensor]


def augment_frames(frames: torch.Tensor, aug: Optional[AugmentationConfig], rng: np.random.Generator,
                   points: Optional[torch.Tensor] = None) -> Augmented:
    """Apply one random flip, colour jitter (kornia), zoom/shift and shape warp identically to ``(N, 3, H, W)``
    frames in [0, 1]; ``points`` ``(..., 2)`` (x, y pixel centres) follow the flip and the zoom/shift (the
    shape warp cannot move points: a ``ValueError``).

    Returns the frames, whether the caller should flip time (``aug.time_flip`` drew yes) and the moved
    points. The draws come from ``rng`` only, so the result is a pure function of the sample's seed.
    """
    draws = rng.random(6)
    if aug is None:
        return Augmented(frames, False, points)
    if points is not None and aug.shape_warp is not None:
        raise ValueError("points cannot follow the shape warp augmentation")
    import kornia.enhance as KE

    w = frames.shape[-1]
    if aug.horizontal_flip and draws[0] < 0.5:
        frames = frames.flip(-1)
        if points is not None:
            points = torch.stack([(w - 1) - points[..., 0], points[..., 1]], -1)
    time_flip = bool(aug.time_flip and draws[1] < 0.5)
    if aug.brightness > 0:
        frames = KE.adjust_brightness(frames, float((draws[2] * 2 - 1) * aug.brightness), clip_output=True)
    if aug.contrast > 0:
        frames = KE.adjust_contrast(frames, float(1 + (draws[3] * 2 - 1) * aug.contrast), clip_output=True)
    if aug.saturation > 0:
        frames = KE.adjust_saturation(frames, float(1 + (draws[4] * 2 - 1) * aug.saturation))
    if aug.hue > 0:  # kornia takes the hue shift in radians; the config's 0.1 is a fraction of the circle
        frames = KE.adjust_hue(frames, float((draws[5] * 2 - 1) * aug.hue * 2 * np.pi))
    zoom_lo, zoom_hi = (float(z) for z in aug.zoom)
    if zoom_lo != 1.0 or zoom_hi != 1.0 or aug.translate > 0:
        zoom = zoom_lo + (zoom_hi - zoom_lo) * rng.random()
        matrix = _zoom_shift_matrix(frames, zoom, aug.translate * (rng.random(2) * 2 - 1))
        frames = _warp_affine(frames, matrix)
        if points is not None:
            m = matrix[0].to(points.dtype)
            points = points @ m[:, :2].T + m[:, 2]
    if aug.shape_warp is not None:
        frames = _shared_warp(frames, aug.shape_warp, rng)
    return Augmented(frames.clamp(0, 1), time_flip, points)


def _shared_warp(frames: torch.Tensor, warp: TransformConfig, rng: np.random.Generator) -> torch.Tensor:
    """One random smooth warp (affine + TPS), drawn from ``rng``, applied to every frame of ``frames``."""
    from .transforms import RandomWarp

    gen = torch.Generator().manual_seed(int(rng.integers(0, 2 ** 62)))
    shape = RandomWarp(1, warp.sigma_affine, warp.sigma_tps, warp.points_tps, generator=gen)
    return shape.expand(frames.shape[0]).warp_image(frames, padding_mode="border")


def _zoom_shift_matrix(frames: torch.Tensor, zoom: float, shift: np.ndarray) -> torch.Tensor:
    """``(N, 2, 3)`` pixel-coordinate affine map that scales ``frames`` by ``zoom`` about the centre and moves
    them by ``shift`` (fractions of W, H): a point ``p`` of the input lands on ``M [p, 1]``."""
    import kornia.geometry.transform as KT

    n, _, h, w = frames.shape
    center = torch.tensor([[(w - 1) / 2, (h - 1) / 2]], dtype=frames.dtype).expand(n, 2)
    matrix = KT.get_rotation_matrix2d(center, torch.zeros(n, dtype=frames.dtype),
                                      torch.full((n, 2), zoom, dtype=frames.dtype))
    matrix[:, 0, 2] += float(shift[0]) * w
    matrix[:, 1, 2] += float(shift[1]) * h
    return matrix


def _warp_affine(frames: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    import kornia.geometry.transform as KT

    return KT.warp_affine(frames, matrix, tuple(frames.shape[-2:]), padding_mode="border", align_corners=True)


def _to_tensor(frames: np.ndarray) -> torch.Tensor:
    """``(N, H, W, 3)`` uint8 -> ``(N, 3, H, W)`` float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255.0)


class _SeededItems(Dataset):
    """Base: ``len`` items per epoch; ``ds[n]`` for any ``n >= 0`` (epoch ``n // len``), seeded by ``n``."""

    num_items: int = 0

    def __init__(self, num_repeats: int, seed: int):
        if num_repeats < 1:
            raise DatasetError(f"num_repeats must be >= 1, got {num_repeats}")
        self.num_repeats = int(num_repeats)
        self.seed = int(seed)
        self._perm: Tuple[int, Optional[np.ndarray]] = (-1, None)

    def __len__(self) -> int:
        return self.num_items * self.num_repeats

    def item_of(self, n: int) -> int:
        """The item (video/identity/image index) that global sample number ``n`` reads."""
        length = len(self)
        epoch, pos = divmod(int(n), length)
        if self._perm[0] != epoch:
            perm = np.random.default_rng([self.seed & 0xFFFFFFFF, epoch, 0xE90C]).permutation(length)
            self._perm = (epoch, perm)
        return int(self._perm[1][pos]) % self.num_items


# ------------------------------------------------------------------------------------------ datasets
class VideoFramesDataset(_SeededItems):
    """Frames from videos under ``root/<split>/`` (see the module docstring for the layout).

    Args:
        root: dataset root.
        split: ``"train"`` or ``"test"``.
        frame_shape: ``(H, W)`` (a trailing channel count is ignored).
        id_sampling: one item per identity (name up to the first ``#``), a random video of it per sample.
        num_repeats: items per epoch = ``num_repeats x`` videos (or identities).
        frame_offsets: ``None`` -> a random (source, driving) pair of one video: two indices drawn uniformly
            with replacement and sorted (``max_frame_gap`` > 0 bounds their distance). A tuple such as
            ``(0, -1, 1)`` -> a window around a random centre ``t``: keys ``frame_0``, ``frame_-1``, ``frame_1``.
        augment: flip / time flip / colour jitter config, or ``None``. Time flip swaps source and driving
            (pairs only).
        seed: all randomness derives from ``(seed, n)``.
        point_targets: ``{video name: (points (F, P, 2), values (F, P) or None)}``: per-frame points (x, y
            pixels of the ``frame_shape`` frame; NaN: none), e.g. face landmarks, optionally with a value
            each (the landmark depth targets of :mod:`dagan.training.face_sfm`); a video missing here gets
            NaN rows.

    ``ds[n]`` returns ``{"source": (3, H, W), "driving": (3, H, W)}`` (or the window keys) float32 in [0, 1],
    plus ``"video"`` (video index), ``"frame_index"`` (LongTensor of the frame indices read) and ``"skipped"``
    (unreadable frames/videos skipped while making this sample); with ``point_targets``, ``"points"``
    ``(N, P, 2)`` (moved with the flip and zoom/shift) and ``"point_values"`` ``(N, P)`` of the sample's N
    frames in the order of the frame keys (source, driving; or ``frame_offsets``).
    """

    def __init__(self, root: PathLike, split: str = "train", frame_shape: Sequence[int] = (256, 256),
                 id_sampling: bool = False, num_repeats: int = 1, frame_offsets: Optional[Sequence[int]] = None,
                 augment: Optional[AugmentationConfig] = None, seed: int = 0, max_frame_gap: int = 0,
                 test_videos: Sequence[str] = (), exclude_videos: Sequence[str] = (),
                 point_targets: Optional[Mapping[str, Tuple[np.ndarray, np.ndarray]]] = None):
        super().__init__(num_repeats, seed)
        self.size = (int(frame_shape[0]), int(frame_shape[1]))
        if min(self.size) < 1:
            raise DatasetError(f"frame_shape must be positive, got {tuple(frame_shape)}")
        self.paths = list_clips(root, split, test_videos, exclude_videos)
        self.videos = [open_clip(p, self.size) for p in self.paths]
        self.frame_offsets = tuple(int(o) for o in frame_offsets) if frame_offsets is not None else None
        if self.frame_offsets is not None and not self.frame_offsets:
            raise DatasetError("frame_offsets must hold at least one offset")
        self.window = (max(self.frame_offsets) - min(self.frame_offsets) + 1) if self.frame_offsets else 2
        self.augment = augment
        self.point_targets = dict(point_targets) if point_targets is not None else None
        if self.point_targets is not None:
            if augment is not None and augment.shape_warp is not None:
                raise DatasetError("point targets cannot follow the shape warp augmentation (dataset.augmentation"
                                   ".shape_warp): turn it off")
            self._num_points = max((v[0].shape[1] for v in self.point_targets.values()), default=0)
        self.max_frame_gap = int(max_frame_gap)
        self.id_sampling = id_sampling
        if id_sampling:
            ids: "OrderedDict[str, List[int]]" = OrderedDict()
            for i, v in enumerate(self.videos):
                ids.setdefault(v.name.split("#")[0], []).append(i)
            self.identities = list(ids.values())
        else:
            self.identities = [[i] for i in range(len(self.videos))]
        self.num_items = len(self.identities)
        too_short = [v.name for v in self.videos if isinstance(v, FrameFolder) and v.num_frames() < self.window]
        if too_short and len(too_short) == len(self.videos):
            raise DatasetError(f"every video is shorter than the {self.window} frames a sample needs "
                               f"(e.g. {too_short[0]} has {self.videos[0].num_frames()})")
        for name in too_short:
            logger.warning("video %s has fewer than %d frames: it is skipped", name, self.window)
        self._unusable = {self.videos.index(v) for v in self.videos if v.name in set(too_short)}

    @classmethod
    def from_config(cls, cfg: DatasetConfig, split: str = "train", seed: int = 0, augment: bool = True,
                    frame_offsets: Optional[Sequence[int]] = None, root: Optional[PathLike] = None,
                    point_targets: Optional[Mapping[str, Tuple[np.ndarray, np.ndarray]]] = None
                    ) -> "VideoFramesDataset":
        return cls(root if root is not None else cfg.root_dir, split, cfg.frame_shape[:2], cfg.id_sampling,
                   cfg.num_repeats if split == "train" else 1, frame_offsets,
                   cfg.augmentation if augment and split == "train" else None, seed, cfg.max_frame_gap,
                   cfg.test_videos, cfg.exclude_videos, point_targets)

    def _frame_indices(self, num_frames: int, rng: np.random.Generator) -> List[int]:
        if self.frame_offsets is not None:
            lo, hi = -min(self.frame_offsets), num_frames - max(self.frame_offsets)
            centre = int(rng.integers(lo, hi))
            return [centre + o for o in self.frame_offsets]
        if self.max_frame_gap > 0:
            first = int(rng.integers(0, num_frames))
            second = int(np.clip(first + rng.integers(-self.max_frame_gap, self.max_frame_gap + 1), 0,
                                 num_frames - 1))
            return sorted([first, second])
        return sorted(int(i) for i in rng.integers(0, num_frames, size=2))

    def _read(self, video_index: int, rng: np.random.Generator) -> Optional[Tuple[np.ndarray, List[int], int]]:
        """Frames of one sample from one video, or ``None`` if the video is unusable. Up to 3 attempts."""
        video = self.videos[video_index]
        skipped = 0
        try:
            num = video.num_frames()
        except (OSError, ValueError, RuntimeError) as exc:
            logger.warning("skipping unreadable video %s: %s", video.path, exc)
            self._unusable.add(video_index)
            return None
        if num < self.window:
            logger.warning("video %s has %d frame(s), fewer than the %d a sample needs: skipped", video.path, num,
                           self.window)
            self._unusable.add(video_index)
            return None
        for _ in range(3):
            indices = self._frame_indices(num, rng)
            try:
                return np.stack([video.frame(i) for i in indices]), indices, skipped
            except (OSError, ValueError, RuntimeError, SyntaxError) as exc:
                skipped += 1
                logger.warning("skipping unreadable frame of %s (%s)", video.path, str(exc)[:120])
        return None

    def __getitem__(self, n: int) -> Dict[str, torch.Tensor]:
        rng = _sample_rng(self.seed, n)
        item = self.item_of(n)
        skipped = 0
        candidates = self.identities[item]
        for attempt in range(len(self.videos) + 1):
            usable = [v for v in candidates if v not in self._unusable]
            if not usable:
                skipped += 1
                usable = [v for v in range(len(self.videos)) if v not in self._unusable]
                if not usable:
                    raise DatasetError("no usable video left in the dataset (all unreadable or too short)")
            video_index = usable[int(rng.integers(0, len(usable)))]
            got = self._read(video_index, rng)
            if got is not None:
                frames, indices, bad = got
                skipped += bad
                break
            skipped += 1
            candidates = usable
        else:
            raise DatasetError("no usable video left in the dataset (all unreadable or too short)")
        points = values = None
        if self.point_targets is not None:
            points, values = self._points_of(video_index, indices)
        tensor, time_flip, points = augment_frames(_to_tensor(frames), self.augment, rng, points)
        out: Dict[str, torch.Tensor] = {"video": torch.tensor(video_index), "skipped": torch.tensor(skipped)}
        if self.frame_offsets is None and time_flip:
            tensor, indices = tensor.flip(0), indices[::-1]
            if points is not None:
                points, values = points.flip(0), values.flip(0)
        if points is not None:
            out["points"], out["point_values"] = points, values
        if self.frame_offsets is None:
            out["source"], out["driving"] = tensor[0], tensor[1]
        else:
            for o, frame in zip(self.frame_offsets, tensor):
                out[f"frame_{o}"] = frame
        out["frame_index"] = torch.tensor(indices)
        return out

    def empty_points(self, frames: int = 2) -> Tuple[torch.Tensor, torch.Tensor]:
        """NaN ``points`` / ``point_values`` for a sample of ``frames`` frames without targets."""
        return (torch.full((frames, self._num_points, 2), float("nan")),
                torch.full((frames, self._num_points), float("nan")))

    def _points_of(self, video_index: int, indices: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
        points, values = self.empty_points(len(indices))
        target = self.point_targets.get(self.videos[video_index].name)
        if target is None:
            return points, values
        for row, index in enumerate(indices):
            if index < len(target[0]):
                points[row] = torch.from_numpy(np.asarray(target[0][index], dtype=np.float32))
                if target[1] is not None:
                    values[row] = torch.from_numpy(np.asarray(target[1][index], dtype=np.float32))
        return points, values

    def read_video(self, video_index: int) -> torch.Tensor:
        """Every frame of one video as ``(T, 3, H, W)`` float32 in [0, 1] (for evaluation)."""
        video = self.videos[video_index]
        return _to_tensor(np.stack([video.frame(i) for i in range(video.num_frames())]))


class ImagePairsDataset(_SeededItems):
    """Source/driving pairs made from still portraits by two random smooth warps (affine + TPS).

    Useful when videos are scarce: the model learns to follow a known motion between two views of one
    face. ``ds[n]`` -> ``{"source", "driving": (3, H, W) float32 in [0, 1], "skipped"}``.
    """

    def __init__(self, image_paths: Sequence[PathLike], frame_shape: Sequence[int] = (256, 256),
                 num_repeats: int = 1, augment: Optional[AugmentationConfig] = None, seed: int = 0,
                 warp: Optional[TransformConfig] = None):
        super().__init__(num_repeats, seed)
        self.size = (int(frame_shape[0]), int(frame_shape[1]))
        self.paths = [Path(p) for p in image_paths]
        if not self.paths:
            raise DatasetError("image_pairs mode needs at least one portrait (dataset.image_dirs)")
        self.num_items = len(self.paths)
        self.augment = augment
        self.warp = warp or TransformConfig(sigma_affine=0.08, sigma_tps=0.01, points_tps=3)
        self._images: Dict[int, torch.Tensor] = {}

    @classmethod
    def from_dirs(cls, dirs: Sequence[PathLike], **kwargs) -> "ImagePairsDataset":
        paths: List[Path] = []
        for d in dirs:
            d = Path(d)
            if d.is_file():
                paths.append(d)
            elif d.is_dir():
                paths.extend(sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS))
            else:
                raise DatasetError(f"portrait folder not found: {d}")
        return cls(paths, **kwargs)

    def _image(self, index: int) -> torch.Tensor:
        if index not in self._images:
            image = fit_frames(read_image(self.paths[index])[None], self.size)
            self._images[index] = _to_tensor(image)[0]
        return self._images[index]

    def __getitem__(self, n: int) -> Dict[str, torch.Tensor]:
        from .transforms import RandomWarp

        rng = _sample_rng(self.seed, n)
        skipped = 0
        item = self.item_of(n)
        image = None
        for offset in range(self.num_items):
            index = (item + offset) % self.num_items
            try:
                image = self._image(index)
                break
            except (OSError, ValueError, SyntaxError) as exc:
                skipped += 1
                logger.warning("skipping unreadable portrait %s (%s)", self.paths[index], str(exc)[:120])
        if image is None:
            raise DatasetError("no readable portrait in image_pairs data")
        gen = torch.Generator().manual_seed(int(rng.integers(0, 2 ** 62)))
        warp = RandomWarp(2, self.warp.sigma_affine, self.warp.sigma_tps, self.warp.points_tps, generator=gen)
        pair = warp.warp_image(image.unsqueeze(0).expand(2, -1, -1, -1), padding_mode="border")
        pair = augment_frames(pair, self.augment, rng).frames
        return {"source": pair[0], "driving": pair[1], "video": torch.tensor(-1 - index),
                "frame_index": torch.tensor([0, 0]), "skipped": torch.tensor(skipped)}


class MixedDataset(_SeededItems):
    """Videos plus portrait pairs: each sample is a portrait pair with probability ``image_fraction``."""

    def __init__(self, videos: VideoFramesDataset, images: ImagePairsDataset, image_fraction: float, seed: int = 0):
        super().__init__(1, seed)
        if not 0 <= image_fraction <= 1:
            raise DatasetError(f"image_pairs_fraction must be in [0, 1], got {image_fraction}")
        self.videos, self.images, self.image_fraction = videos, images, float(image_fraction)
        self.num_items = len(videos)

    def __getitem__(self, n: int) -> Dict[str, torch.Tensor]:
        if _sample_rng(self.seed, n).random() < self.image_fraction:
            item = self.images[n]
            if self.videos.point_targets is not None:  # a batch needs the same keys in every sample
                item["points"], item["point_values"] = self.videos.empty_points(2)
            return item
        return self.videos[n]


def _image_entry(entry: str, base: Path) -> str:
    """A ``dataset.image_dirs`` entry as a path: relative to the dataset root, absolute, or ``skimage:NAME``
    for one of scikit-image's bundled sample images (e.g. ``skimage:chelsea``; CC0 / public domain)."""
    if entry.startswith("skimage:"):
        import skimage.data

        name = entry[len("skimage:"):]
        matches = sorted(p for p in Path(skimage.data.__file__).parent.iterdir()
                         if p.stem == name and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not matches:
            raise DatasetError(f"no scikit-image sample image named {name!r} (dataset.image_dirs: {entry})")
        return str(matches[0])
    return entry if os.path.isabs(entry) else str(base / entry)


def build_dataset(cfg: DatasetConfig, split: str = "train", seed: int = 0, root: Optional[PathLike] = None,
                  point_targets: Optional[Mapping[str, Tuple[np.ndarray, Optional[np.ndarray]]]] = None
                  ) -> Dataset:
    """The generator-training dataset that ``cfg.mode`` asks for (``videos``, ``image_pairs`` or ``mixed``);
    ``point_targets``: per-video points (see :class:`VideoFramesDataset`), NaN for portrait pairs."""
    aug = cfg.augmentation if split == "train" else None
    if cfg.mode not in ("videos", "image_pairs", "mixed"):
        raise DatasetError(f"dataset.mode must be videos, image_pairs or mixed, got {cfg.mode!r}")
    base = Path(root if root is not None else cfg.root_dir)
    image_dirs = [_image_entry(d, base) for d in cfg.image_dirs]
    if cfg.mode == "image_pairs":
        return ImagePairsDataset.from_dirs(image_dirs, frame_shape=cfg.frame_shape[:2],
                                           num_repeats=cfg.num_repeats, augment=aug, seed=seed,
                                           warp=cfg.image_pairs_warp)
    videos = VideoFramesDataset.from_config(cfg, split, seed, root=root, point_targets=point_targets)
    if cfg.mode == "videos" or split != "train":
        return videos
    images = ImagePairsDataset.from_dirs(image_dirs, frame_shape=cfg.frame_shape[:2], num_repeats=1, augment=aug,
                                         seed=seed + 1, warp=cfg.image_pairs_warp)
    return MixedDataset(videos, images, cfg.image_pairs_fraction, seed)
