"""Evaluation protocols: reconstruction, cross-identity and the official DaGAN pair lists.

* **reconstruction** (FOMM/DaGAN): every test video is driven by itself from its frame 0, every frame is a
  driving frame and its own ground truth. Absolute driving keypoints (as ``reconstruction.py`` did).
  Metrics: L1, PSNR, SSIM, LPIPS, AKD, AED, and CSIM to the source frame.
* **cross-identity**: video ``i``'s frame 0 is animated by video ``i + 1``, or, with ``sources`` (portrait
  images), every source by every video (relative motion, adapted scale, anchored at the first driving frame,
  as the demo does). There is no ground truth, so the metrics are CSIM (identity kept from the source), AKD
  against the driving frames, AKD-motion (landmark displacements from the first frame compared), and the
  face-backend motion report of :mod:`dagan.evaluation.face_metrics` (detection rate, identity distances,
  motion-transfer error, scale drift, mouth-opening correlation, sharpness); the repeat-source baseline is the
  "frozen result" those numbers are compared with.
* **pairs** (``pairs=list.csv``, the official ``vox_evaluation.csv`` / ``vox_cross_id_evaluation.csv``
  layout): one (source frame, driving frame) pair per row, absolute keypoints; the paths' part after
  ``test/`` is looked up under the data folder. Same-identity lists use the reconstruction metrics with the
  driving frame as ground truth, cross-identity lists the cross-identity metrics. Pairs are grouped by their
  driving video for the per-video means.

Every metric is kept per frame; the report holds the frame-pooled mean (the papers' convention) and the mean
of per-video means. Each system (checkpoint A, optional checkpoint B, the repeat-source baseline whose
output is the source frame) sees exactly the same frames. Videos are sliced over ``torchrun`` ranks and
rank 0 merges the rows, so N processes write the same report as one.
"""
from __future__ import annotations

import csv
import functools
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..distributed import distributed_env, gather_lists
from ..errors import DatasetError, InputError, MissingWeightsError
from ..inference.animator import MOTIONS, Animator
from ..inference.guide import GUIDE_MODES, resolve_guide
from ..inference.landmark_motion import DEFAULT_MOUTH_FILL, MOUTH_FILLS
from . import face_metrics as FM
from . import metrics as M

logger = logging.getLogger("dagan")
PathLike = Union[str, os.PathLike]
PROTOCOLS = ("reconstruction", "cross-identity")
RECONSTRUCTION_METRICS = ("l1", "psnr", "ssim", "lpips", "akd", "aed", "csim")
CROSS_IDENTITY_METRICS = ("csim", "akd", "akd_motion") + FM.MOTION_METRICS
#: metrics with one value per item (clip) instead of one per frame
PER_ITEM_METRICS = FM.CLIP_METRICS
#: metrics that need identity embeddings from the face backend
_EMBEDDING_METRICS = ("id_dist_source", "id_match_source", "id_dist_driving")
#: for each metric, whether larger is better (used to pick the worst videos and in the figure)
HIGHER_IS_BETTER = {"l1": False, "psnr": True, "ssim": True, "lpips": False, "akd": False, "akd_motion": False,
                    "aed": False, "csim": True, **FM.MOTION_HIGHER_IS_BETTER,
                    "motion_ratio": False}
BASELINE = "repeat_source"
REPORT_FORMAT = "dagan-eval-1"


@dataclass
class EvalSettings:
    """Everything that changes the numbers; saved in the report."""

    protocol: str = "reconstruction"
    batch_size: int = 16
    ssim_data_range: float = 1.0
    psnr_max_db: float = 100.0
    quantize: bool = True  # outputs rounded down to 8 bits, as the papers' saved PNG strips were
    lpips_legacy_range: bool = False
    adapt_movement_scale: bool = True  # cross-identity videos only
    max_videos: Optional[int] = None
    max_frames: Optional[int] = None
    seed: int = 0
    thumbnails: int = 6
    # leave the source frame itself out of the means (the papers keep it; a copy of it scores perfectly)
    exclude_source_frame: bool = False
    skip_bad_videos: bool = False  # record unreadable/truncated videos in the report instead of stopping
    # cross-identity: portrait images animated by every video (default: each video's frame 0 by the next video)
    sources: Optional[List[str]] = None
    videos: Optional[List[str]] = None  # only these videos of the data folder (names, without extension)
    # frames are read, rendered and scored at this size (default: the models' size); the models still run at
    # their own size and render at this one (see DaGAN.prepare_source's source_full), as demo.py --size does
    output_size: Optional[int] = None
    # face-guided head motion as in demo.py --guide: auto (on when a face backend loads), on, off
    guide: str = "auto"
    mouth_gain: float = 1.0  # with the guide, as demo.py --mouth_gain
    # what moves the portrait, as demo.py --motion (Animator's ``motion``): keypoints, landmarks or auto; with the
    # landmark stage, what fills an opening mouth (demo.py --mouth_fill)
    motion: str = "keypoints"
    mouth_fill: str = DEFAULT_MOUTH_FILL

    def __post_init__(self):
        if self.protocol not in PROTOCOLS:
            raise InputError(f"unknown protocol {self.protocol!r} (use {' or '.join(PROTOCOLS)})")
        if self.batch_size < 1:
            raise InputError(f"batch size must be >= 1, got {self.batch_size}")
        if self.ssim_data_range <= 0:
            raise InputError(f"SSIM data range must be positive, got {self.ssim_data_range}")
        if self.sources is not None:
            if self.protocol != "cross-identity":
                raise InputError("source images (--sources) go with --protocol cross-identity")
            self.sources = [os.fspath(p) for p in self.sources]
            missing = [p for p in self.sources if not os.path.isfile(p)]
            if missing:
                raise InputError(f"source image not found: {missing[0]}")
            if not self.sources:
                raise InputError("--sources lists no image")
        if self.guide not in GUIDE_MODES:
            raise InputError(f"guide must be one of {', '.join(GUIDE_MODES)}, got {self.guide!r}")
        if self.motion not in MOTIONS:
            raise InputError(f"motion must be one of {', '.join(MOTIONS)}, got {self.motion!r}")
        if self.mouth_fill not in MOUTH_FILLS:
            raise InputError(f"mouth fill must be one of {', '.join(MOUTH_FILLS)}, got {self.mouth_fill!r}")
        if self.output_size is not None and self.output_size < 8:
            raise InputError(f"output size must be >= 8, got {self.output_size}")
        for name in ("max_videos", "max_frames"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"{name.replace('_', '-')} must be >= 1, got {value}")


# ------------------------------------------------------------------------------------------- data
def iter_video_frames(path: PathLike, size: int, max_frames: Optional[int] = None) -> Iterator[np.ndarray]:
    """Stream a clip (video file or folder of frames) as ``(size, size, 3)`` uint8 frames
    (:func:`dagan.io.clips.iter_clip_frames`)."""
    from ..io.clips import iter_clip_frames

    return iter_clip_frames(path, size, max_frames)


@functools.lru_cache(maxsize=2)
def _decoded_clip(path: str, size: int) -> np.ndarray:
    """A pair list's video file, decoded once at ``size`` (its frames are addressed one by one)."""
    from ..io.video import decode_video

    return decode_video(path, (size, size))[0]


def read_frame(path: Path, size: int) -> np.ndarray:
    """One frame addressed like the official pair lists: ``<video>/<frame file>``; the video may be a frame
    folder (the file is read) or a video file (the frame file's number is the index)."""
    from ..io.images import read_image, resize_image

    try:
        if path.is_file():
            return resize_image(read_image(path), size)
        video = path.parent
        if video.is_file():
            index = int(path.stem)
            frames = _decoded_clip(str(video), size)
            if index >= len(frames):
                raise InputError(f"{path}: frame {index} is past the end of {video} ({len(frames)} frames)")
            return frames[index]
    except InputError:
        raise
    except ValueError:
        raise InputError(f"{path}: cannot read it or parse a frame number from {path.name!r}") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    raise InputError(f"pair frame not found: {path}")


def list_test_videos(data: PathLike, names: Sequence[str] = ()) -> List[Path]:
    """The test clips of ``data`` (:func:`dagan.io.clips.list_clips`; ``names``: a flat root's test clips)."""
    from ..io.clips import list_clips

    return list_clips(data, "test", test_clips=names)


def read_pairs(path: PathLike) -> List[Tuple[str, str]]:
    """(source, driving) frame paths of an official pair list, each cut to the part after ``test/``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"pairs file not found: {path}")
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise InputError(f"pairs file {path} is empty")
    header = [h.strip().lower() for h in rows[0]]
    if "source" not in header or "driving" not in header:
        raise InputError(f"pairs file {path} needs a header with 'source' and 'driving' columns, got {rows[0]}")
    si, di = header.index("source"), header.index("driving")
    pairs = []
    for n, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(si, di):
            raise InputError(f"pairs file {path} line {n}: expected source and driving paths, got {row}")
        pairs.append((_after_test(row[si]), _after_test(row[di])))
    if not pairs:
        raise InputError(f"pairs file {path} lists no pairs")
    return pairs


def video_name(entry: str) -> str:
    """A video's name in the report: its file or folder name without a video extension (official frame
    folders are called ``<id>#<yt>#<start>#<end>.mp4``)."""
    from ..io.video import VIDEO_EXTENSIONS

    base = os.path.basename(os.path.normpath(entry))
    root, ext = os.path.splitext(base)
    return root if ext.lower() in VIDEO_EXTENSIONS else base


def _after_test(p: str) -> str:
    p = p.strip().replace("\\", "/")
    marker = "/test/"
    if marker in "/" + p:
        p = ("/" + p).rsplit(marker, 1)[1]
    return p.lstrip("/")


@dataclass
class Item:
    """One unit of work: a source frame and a stream of driving frames (uint8 HWC at model size)."""

    name: str
    group: str
    source: Callable[[], np.ndarray]
    driving: Callable[[], Iterator[np.ndarray]]
    relative: bool
    folder: str = ""  # where --save-frames puts this item's outputs (relative to <out>/frames/<system>/)
    source_frame: Optional[int] = None  # index of the source inside the driving stream (reconstruction: 0)


def build_items(data: PathLike, size: int, settings: EvalSettings, pairs: Optional[PathLike] = None) -> List[Item]:
    """The work list of a protocol, in a fixed order (the same in every process)."""
    mf = settings.max_frames
    if pairs is not None:
        root = Path(data)
        if (root / "test").is_dir():
            root = root / "test"
        listed = read_pairs(pairs)
        groups: List[str] = []
        for _, drv in listed:
            g = video_name(drv.split("/")[0])
            if g not in groups:
                groups.append(g)
        keep = set(groups[:settings.max_videos] if settings.max_videos else groups)
        items = []
        for n, (src, drv) in enumerate(listed):
            group = video_name(drv.split("/")[0])
            if group not in keep:
                continue
            items.append(Item(name=f"{n:05d}:{src}->{drv}", group=group,
                              source=lambda p=root / src: read_frame(p, size),
                              driving=lambda p=root / drv: iter([read_frame(p, size)]), relative=False,
                              folder=f"pairs/{n:05d}"))
        return items
    videos = list_test_videos(data, [video_name(v) for v in settings.videos or ()])
    if settings.videos:
        wanted = [video_name(v) for v in settings.videos]
        found = {video_name(v.name): v for v in videos}
        missing = [w for w in wanted if w not in found]
        if missing:
            raise DatasetError(f"video {missing[0]!r} is not in {data} (have: {', '.join(sorted(found))})")
        videos = [found[w] for w in wanted]
    if settings.max_videos:
        videos = videos[:settings.max_videos]
    names = [video_name(v.name) for v in videos]
    if settings.protocol == "reconstruction":
        return [Item(name=n, group=n, source=lambda v=v: next(iter_video_frames(v, size, 1)),
                     driving=lambda v=v: iter_video_frames(v, size, mf), relative=False, folder=n, source_frame=0)
                for v, n in zip(videos, names)]
    if settings.sources:
        items = []
        for src in settings.sources:
            stem = Path(src).stem
            for v, n in zip(videos, names):
                items.append(Item(name=f"{stem}<-{n}", group=f"{stem}<-{n}",
                                  source=lambda p=Path(src): read_frame(p, size),
                                  driving=lambda v=v: iter_video_frames(v, size, mf), relative=True,
                                  folder=f"{stem}_by_{n}"))
        return items
    if len(videos) < 2:
        raise DatasetError("the cross-identity protocol needs at least two videos (each is driven by the next)")
    items = []
    for i, (v, n) in enumerate(zip(videos, names)):
        j = (i + 1) % len(videos)
        items.append(Item(name=f"{n}<-{names[j]}", group=n, source=lambda v=v: next(iter_video_frames(v, size, 1)),
                          driving=lambda d=videos[j]: iter_video_frames(d, size, mf), relative=True,
                          folder=f"{n}_by_{names[j]}"))
    return items


# ---------------------------------------------------------------------------------------- systems
class AnimatorSystem:
    """A DaGAN checkpoint driven as ``demo.py`` drives it, through :class:`~dagan.inference.animator.Animator`
    (plain float32 model, source prepared once, frames in batches, rendered at the frames' size).

    ``faces``: the face backend of face-guided motion and of the landmark stage (an object with
    ``detect(image, landmarks=True)``, e.g. the metric suite's cached :class:`FaceAnalyzer`), or None: keypoint
    motion only. Both are relative motion: items with absolute motion (same-identity reconstruction) run on the
    model's keypoints alone."""

    def __init__(self, model, settings: EvalSettings, faces=None, device: Union[str, torch.device] = "cpu",
                 output_size: Optional[int] = None):
        self.model, self.settings, self.faces = model, settings, faces
        self.device, self.output_size = device, output_size
        self.animators: Dict[bool, Animator] = {}
        self.animator: Optional[Animator] = None

    def _animator(self, relative: bool) -> Animator:
        if relative not in self.animators:
            s = self.settings
            guided = relative and self.faces is not None
            self.animators[relative] = Animator(
                self.model, device=self.device, dtype="float32", fast=False, relative=relative,
                adapt_movement_scale=s.adapt_movement_scale and relative, output_size=self.output_size,
                guide=self.faces if guided and s.guide != "off" else None,
                mouth_gain=s.mouth_gain if guided and s.guide != "off" else 1.0,
                motion=s.motion if guided else "keypoints", mouth_fill=s.mouth_fill, face_detector=self.faces)
        return self.animators[relative]

    @torch.no_grad()
    def start(self, source: torch.Tensor, first_driving: torch.Tensor, relative: bool) -> None:
        self.animator = self._animator(relative)
        self.animator.set_source(source[0])
        self.animator.set_anchor(first_driving[:1])

    @torch.no_grad()
    def __call__(self, driving: torch.Tensor) -> torch.Tensor:
        return self.animator.animate_tensor(driving)


class RepeatSource:
    """The trivial baseline: every output frame is the source frame."""

    def start(self, source: torch.Tensor, first_driving: torch.Tensor, relative: bool) -> None:
        self.source = source

    def __call__(self, driving: torch.Tensor) -> torch.Tensor:
        return self.source.expand(driving.shape[0], -1, -1, -1)


# ---------------------------------------------------------------------------------------- metrics
@dataclass
class MetricSuite:
    """Which metrics run, with which third-party models, and why the others are skipped."""

    protocol: str
    settings: EvalSettings
    lpips: Optional[M.LPIPSMetric] = None
    landmarks: Optional[M.LandmarkDetector] = None
    identity: Optional[M.IdentityEmbedder] = None
    faces: Optional[FM.FaceAnalyzer] = None  # the face backend behind the cross-identity motion report
    skipped: Dict[str, str] = field(default_factory=dict)

    @property
    def wanted(self) -> Tuple[str, ...]:
        return RECONSTRUCTION_METRICS if self.protocol == "reconstruction" else CROSS_IDENTITY_METRICS

    @property
    def active(self) -> List[str]:
        avail = {"lpips": self.lpips is not None, "akd": self.landmarks is not None,
                 "akd_motion": self.landmarks is not None, "aed": self.identity is not None, "csim": self.identity is not None}
        for m in FM.MOTION_METRICS:
            avail[m] = self.faces is not None and (m not in _EMBEDDING_METRICS or self.faces.embeddings)
        return [m for m in self.wanted if avail.get(m, True)]

    @property
    def motion_active(self) -> List[str]:
        return [m for m in self.active if m in FM.MOTION_METRICS]

    def status(self) -> Dict[str, Dict[str, object]]:
        out: Dict[str, Dict[str, object]] = {}
        for m in self.wanted:
            if m not in self.active:
                out[m] = {"status": f"skipped: {self.skipped.get(m, 'not configured')}"}
                continue
            info: Dict[str, object] = {"status": "ok"}
            model = {"lpips": self.lpips, "akd": self.landmarks, "akd_motion": self.landmarks, "aed": self.identity,
                     "csim": self.identity}.get(m, self.faces if m in FM.MOTION_METRICS else None)
            if model is not None:
                info["model"] = getattr(model, "name", None) or getattr(model, "__name__", type(model).__name__)
                digest = getattr(model, "digest", None)
                if digest:
                    info["sha256"] = digest
                analyzer = getattr(model, "analyzer", model)
                if isinstance(analyzer, FM.FaceAnalyzer):
                    info["backend"] = analyzer.name
                    if analyzer.name == "dlib":
                        info["note"] = FM.BACKEND_NOTE
            if m in PER_ITEM_METRICS:
                info["per"] = "item (one value per source/driving pair)"
            if m == "ssim":
                info.update(data_range=self.settings.ssim_data_range, window="7x7 uniform", channels="mean")
            if m == "psnr":
                info.update(data_range=1.0, max_db=self.settings.psnr_max_db)
            if m == "lpips":
                info["input_range"] = "[0, 1] (legacy)" if self.settings.lpips_legacy_range else "[-1, 1]"
            out[m] = info
        return out

    def compute(self, pred: torch.Tensor, gt: torch.Tensor, gt_landmarks, gt_embedding, source_embedding,
                anchors: Optional[dict] = None) -> Dict[str, List[Optional[float]]]:
        """Per-frame values of every active metric. ``pred, gt: (B, 3, H, W)`` in [0, 1]; ``anchors`` keeps the
        first frame's landmarks of one (item, system) across batches for AKD-motion."""
        s = self.settings
        out: Dict[str, List[Optional[float]]] = {}
        active = self.active
        if "l1" in active:
            out["l1"] = M.l1_per_frame(pred, gt).tolist()
        if "psnr" in active:
            out["psnr"] = M.psnr_per_frame(pred, gt, 1.0, s.psnr_max_db).tolist()
        if "ssim" in active:
            out["ssim"] = M.ssim_per_frame(pred, gt, s.ssim_data_range).tolist()
        if "lpips" in active:
            out["lpips"] = self.lpips(pred, gt).tolist()
        if "akd" in active or "akd_motion" in active:
            lm = self.landmarks(pred)
            if "akd" in active:
                out["akd"] = M.akd_per_frame(lm, gt_landmarks)
            if "akd_motion" in active:
                anchors = {} if anchors is None else anchors
                if "pred" not in anchors:
                    anchors.update(pred=lm[0], gt=gt_landmarks[0])
                out["akd_motion"] = M.motion_akd_per_frame(lm, gt_landmarks, anchors["pred"], anchors["gt"])
        if "aed" in active or "csim" in active:
            emb = self.identity(pred)
            if "aed" in active:
                out["aed"] = _finite(M.aed_per_frame(emb, gt_embedding).tolist())
            if "csim" in active:
                out["csim"] = _finite(M.csim_per_frame(emb, source_embedding).tolist())
        return out


def _finite(values: List[float]) -> List[Optional[float]]:
    """NaN (an identity embedding where the face backend found no face) -> None (left out of the means)."""
    return [v if math.isfinite(v) else None for v in values]


def build_metric_suite(protocol: str, settings: EvalSettings, device: Union[str, torch.device] = "cpu",
                       lpips: Union[str, M.LPIPSMetric, None] = "auto", landmarks: Union[str, Callable, None] = "auto",
                       identity: Union[str, os.PathLike, Callable, None] = "auto",
                       face_backend: Union[str, object] = "auto") -> MetricSuite:
    """Resolve the optional third-party metrics: ``"auto"`` loads from files on disk (or the offline face
    backend) and records a skip reason when they are absent, ``"off"``/``None`` skips, a callable is used as is
    (tests, custom models); for ``identity`` a path to an ONNX/TorchScript file loads it.

    ``face_backend``: ``"auto"``/``"dlib"``/``"face-alignment"`` (see
    :func:`dagan.faces.load_face_backend`) or a detector object. With ``landmarks="auto"`` it gives
    the AKD landmarks and the cross-identity motion report; with ``identity="auto"`` (dlib only) the AED/CSIM
    embeddings."""
    from ..faces import load_face_backend

    suite = MetricSuite(protocol, settings)
    analyzer: Optional[FM.FaceAnalyzer] = None
    if landmarks == "auto" or identity == "auto":
        try:
            backend = load_face_backend(face_backend, str(device)) if isinstance(face_backend, str) else face_backend
            analyzer = FM.FaceAnalyzer(backend)
        except MissingWeightsError as exc:
            suite.skipped["akd"] = str(exc)
            for m in FM.MOTION_METRICS:
                suite.skipped[m] = str(exc)
    wanted = suite.wanted
    if "lpips" in wanted:
        if isinstance(lpips, M.LPIPSMetric):
            suite.lpips = lpips
        elif lpips == "auto":
            try:
                suite.lpips = M.LPIPSMetric.load("alex", device, settings.lpips_legacy_range)
            except MissingWeightsError as exc:
                suite.skipped["lpips"] = str(exc)
        elif callable(lpips):
            suite.lpips = M.LPIPSMetric(lpips, settings.lpips_legacy_range)
        else:
            suite.skipped["lpips"] = "disabled (--lpips off)"
    if callable(landmarks):
        suite.landmarks = landmarks
    elif landmarks == "auto":
        if analyzer is not None:
            suite.landmarks = FM.BackendLandmarks(analyzer)
            suite.faces = analyzer
    else:
        suite.skipped["akd"] = "disabled (--landmarks off)"
        for m in FM.MOTION_METRICS:
            suite.skipped[m] = "disabled (--landmarks off)"
    if callable(identity):
        suite.identity = identity
    elif identity == "auto":
        if analyzer is not None and analyzer.embeddings:
            suite.identity = FM.BackendIdentity(analyzer)
        else:
            reason = (f"the {analyzer.name} face backend has no identity model" if analyzer is not None
                      else suite.skipped.get("akd", "no face backend")) + \
                " (use the dlib backend, or --identity-model FILE: an ArcFace-style .onnx or TorchScript file)"
            suite.skipped["aed"] = suite.skipped["csim"] = reason
    elif identity not in (None, "off"):
        suite.identity = M.FileIdentityEmbedder(identity, device=device)
    else:
        suite.skipped["aed"] = suite.skipped["csim"] = "disabled (--identity-model off)"
    for m in _EMBEDDING_METRICS:
        if analyzer is not None and not analyzer.embeddings and suite.faces is not None:
            suite.skipped[m] = f"the {analyzer.name} face backend has no identity model (use dlib)"
    return suite


def system_faces(settings: EvalSettings, suite: MetricSuite, device: Union[str, torch.device] = "cpu"):
    """The face backend of ``--guide`` and ``--motion`` for :class:`AnimatorSystem`: the metric suite's own
    (cached) face analyser when it has one, so every frame is analysed once, else the default face backend;
    None when neither the guide nor the landmark stage is wanted, or, with ``auto``, when no face backend loads
    (logged)."""
    mode = "on" if settings.motion == "landmarks" else settings.guide
    if settings.motion == "auto" and mode == "off":
        mode = "auto"
    if suite.faces is not None:
        return resolve_guide(mode, lambda: suite.faces)
    from ..faces import load_face_backend

    return resolve_guide(mode, lambda: FM.FaceAnalyzer(load_face_backend("auto", str(device)), embeddings=False))


# -------------------------------------------------------------------------------------- the loop
def _to_tensor(frames: Sequence[np.ndarray], device: torch.device) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` frames -> ``(B, 3, H, W)`` float in [0, 1] on ``device``."""
    x = torch.from_numpy(np.stack(frames)).to(device)
    return x.permute(0, 3, 1, 2).float() / 255.0


def _chunks(frames: Iterator[np.ndarray], size: int) -> Iterator[List[np.ndarray]]:
    chunk: List[np.ndarray] = []
    for frame in frames:
        chunk.append(frame)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _thumb(frame: torch.Tensor, size: int = 96) -> np.ndarray:
    """``(3, H, W)`` in [0, 1] -> ``(h, w, 3)`` uint8 no larger than ``size``."""
    x = frame[None].float()
    if max(x.shape[-2:]) > size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return M.to_uint8_hwc(x)[0]


class _Thumbnails:
    """Keep at most ``limit`` evenly spaced frames of a stream of unknown length (thinning by 2 when full)."""

    def __init__(self, limit: int):
        self.limit, self.stride, self.kept = max(1, limit), 1, []

    def offer(self, index: int, make: Callable[[], dict]) -> None:
        if index % self.stride:
            return
        self.kept.append(dict(index=index, **make()))
        if len(self.kept) > self.limit:
            self.stride *= 2
            self.kept = [k for k in self.kept if k["index"] % self.stride == 0]


def _save_frames(folder: str, first_index: int, frames: torch.Tensor) -> None:
    """Write ``(B, 3, H, W)`` frames in [0, 1] as ``<folder>/<index:07d>.png`` (8 bit, truncated like
    :func:`~dagan.evaluation.metrics.quantize_8bit`, so a saved frame scores what was scored)."""
    from PIL import Image

    from ..utils import atomic_write

    os.makedirs(folder, exist_ok=True)
    images = (frames.detach().float().clamp(0, 1) * 255.0).floor().byte().permute(0, 2, 3, 1).cpu().numpy()
    for k, image in enumerate(images):
        atomic_write(os.path.join(folder, f"{first_index + k:07d}.png"),
                     lambda fh, image=image: Image.fromarray(image).save(fh, format="PNG"))


@torch.no_grad()
def evaluate_item(item: Item, systems: Dict[str, Callable], suite: MetricSuite, device: torch.device,
                  frames_dir: Optional[PathLike] = None) -> dict:
    """Run every system on one item; returns its per-frame rows (plain Python, picklable). With ``frames_dir``
    every output frame is also saved as ``<frames_dir>/<system>/<item folder>/<index>.png``."""
    settings = suite.settings
    source = _to_tensor([item.source()], device)
    src_emb = suite.identity(source) if suite.identity is not None and "csim" in suite.active else None
    trackers: Dict[str, FM.MotionTracker] = {}
    if suite.motion_active:
        source_image = M.to_uint8_hwc(source)[0]
        source_face = suite.faces([source_image])[0]
        trackers = {name: FM.MotionTracker(source_image, source_face) for name in systems}
    values: Dict[str, Dict[str, List[Optional[float]]]] = {name: {} for name in systems}
    no_face = {"gt": 0, **{name: 0 for name in systems}}
    thumbs = _Thumbnails(settings.thumbnails)
    anchors: Dict[str, dict] = {name: {} for name in systems}
    started = False
    index = 0
    for chunk in _chunks(item.driving(), settings.batch_size):
        gt = _to_tensor(chunk, device)
        if not started:
            for system in systems.values():
                system.start(source, gt[:1], item.relative)
            started = True
        gt_lm = suite.landmarks(gt) if suite.landmarks is not None and "akd" in suite.active else None
        if gt_lm is not None:
            no_face["gt"] += sum(lm is None for lm in gt_lm)
        gt_emb = suite.identity(gt) if "aed" in suite.active else None
        gt_faces = suite.faces(gt) if trackers else None
        preds = {}
        for name, system in systems.items():
            pred = system(gt).float().clamp(0, 1)
            if settings.quantize:
                pred = M.quantize_8bit(pred)
            preds[name] = pred
            if frames_dir is not None:
                _save_frames(os.path.join(os.fspath(frames_dir), name, item.folder), index, pred)
            per_frame = suite.compute(pred, gt, gt_lm, gt_emb, src_emb, anchors[name])
            if trackers:
                images = M.to_uint8_hwc(pred)  # converted once: the analyser and the tracker read the same frames
                motion = trackers[name].update(images, suite.faces(images), gt_faces)
                per_frame.update({m: v for m, v in motion.items() if m in suite.active})
            if "akd" in per_frame and gt_lm is not None:
                no_face[name] += sum(v is None and g is not None for v, g in zip(per_frame["akd"], gt_lm))
            for metric, vals in per_frame.items():
                values[name].setdefault(metric, []).extend(vals)
        for k in range(gt.shape[0]):
            thumbs.offer(index + k, lambda k=k: dict(gt=_thumb(gt[k]), pred={n: _thumb(p[k]) for n, p in
                                                                             preds.items()}))
        index += gt.shape[0]
    if index == 0:
        raise InputError(f"{item.name}: no driving frames")
    for name, tracker in trackers.items():
        values[name].update({m: v for m, v in tracker.finish().items() if m in suite.active})
    if settings.exclude_source_frame and item.source_frame is not None and item.source_frame < index:
        for per_system in values.values():
            for vals in per_system.values():
                vals[item.source_frame] = None
    return dict(name=item.name, group=item.group, frames=index, values=values, no_face=no_face,
                source=_thumb(source[0]), thumbnails=thumbs.kept)


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(np.asarray(kept, dtype=np.float64))) if kept else None


def aggregate(results: List[dict], systems: Sequence[str], metric_names: Sequence[str]) -> Tuple[dict, List[dict]]:
    """Frame-pooled means, means of per-video means, and the per-video rows (in the items' order)."""
    groups: Dict[str, List[dict]] = {}
    for r in results:
        groups.setdefault(r["group"], []).append(r)
    videos = []
    for group, rs in groups.items():
        row = {"video": group, "items": len(rs), "frames": sum(r["frames"] for r in rs),
               "no_face_gt": sum(r["no_face"]["gt"] for r in rs), "metrics": {}}
        for s in systems:
            row["metrics"][s] = {m: _mean([v for r in rs for v in r["values"][s].get(m, [])]) for m in metric_names}
            row["metrics"][s]["no_face_pred"] = sum(r["no_face"][s] for r in rs)
        videos.append(row)
    overall = {}
    for s in systems:
        overall[s] = {}
        for m in metric_names:
            pooled = [v for r in results for v in r["values"][s].get(m, [])]
            used = [v for v in pooled if v is not None]
            per_video = [row["metrics"][s][m] for row in videos]
            overall[s][m] = {"frame_mean": _mean(pooled), "video_mean": _mean(per_video), "frames": len(used),
                             "frames_skipped": len(pooled) - len(used)}
    return overall, videos


# ------------------------------------------------------------------------------------ distributed
def run_evaluation(models: Dict[str, torch.nn.Module], data: PathLike, settings: Optional[EvalSettings] = None,
                   pairs: Optional[PathLike] = None, baseline: bool = True, suite: Optional[MetricSuite] = None,
                   device: Union[str, torch.device] = "cpu", progress: bool = False, sources: Optional[dict] = None,
                   image_size: Optional[int] = None, frames_dir: Optional[PathLike] = None) -> Optional[dict]:
    """Evaluate ``models`` (name -> :class:`~dagan.DaGAN`, same image size) on ``data``.

    Under ``torchrun`` (``WORLD_SIZE > 1``, process group already initialised) each rank takes every
    ``WORLD_SIZE``-th video group and rank 0 returns the merged report; other ranks return ``None``.
    Returns the report dict (see :func:`dagan.evaluation.report.write_report` for the files).
    ``image_size`` is only needed without models (baseline only); frames are resized to the models' size.
    ``frames_dir``: also save every output frame as PNG there (``<system>/<video>/<index>.png``).
    """
    settings = settings or EvalSettings()
    device = torch.device(device)
    if not models and not baseline:
        raise InputError("nothing to evaluate: give a checkpoint or keep the repeat-source baseline")
    sizes = {m.image_size for m in models.values()}
    if len(sizes) > 1:
        raise InputError(f"the checkpoints work at different image sizes {sorted(sizes)}: compare models of one size")
    size = sizes.pop() if sizes else int(image_size or 256)
    if image_size is not None and size != image_size:
        raise InputError(f"image_size {image_size} differs from the models' {size}")
    size = settings.output_size or size
    suite = suite or build_metric_suite(settings.protocol, settings, device)
    if not suite.active:
        logger.warning("no %s metric can run (%s): the report will only hold the frame grids",
                       settings.protocol, "; ".join(f"{k}: {v}" for k, v in suite.skipped.items()))
    torch.manual_seed(settings.seed)
    items = build_items(data, size, settings, pairs)
    env = distributed_env()
    rank, world = env.rank, env.world
    group_order: List[str] = []
    for it in items:
        if it.group not in group_order:
            group_order.append(it.group)
    mine = {g for k, g in enumerate(group_order) if k % world == rank}
    local_items = [it for it in items if it.group in mine]
    # only relative-motion items are guided (same-identity reconstruction is absolute): load no backend for none
    faces = system_faces(settings, suite, device) if models and any(it.relative for it in items) else None
    systems: Dict[str, Callable] = {name: AnimatorSystem(m.to(device), settings, faces, device, size)
                                    for name, m in models.items()}
    if baseline:
        systems[BASELINE] = RepeatSource()
    started = time.time()
    results = []
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=len(local_items), desc="evaluate", unit="item", leave=False)
    for it in local_items:
        try:
            results.append(evaluate_item(it, systems, suite, device, frames_dir))
        except InputError as exc:
            if not settings.skip_bad_videos:
                raise
            logger.warning("skipping %s: %s", it.name, exc)
            results.append({"name": it.name, "group": it.group, "error": str(exc)})
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    merged = gather_lists(results, env)
    if merged is None:
        return None
    order = {it.name: k for k, it in enumerate(items)}
    merged.sort(key=lambda r: order[r["name"]])
    failed = [{"item": r["name"], "video": r["group"], "error": r["error"]} for r in merged if "error" in r]
    merged = [r for r in merged if "error" not in r]
    if not merged:
        raise DatasetError(f"no item could be evaluated ({len(failed)} failed; first: {failed[0]['error']})")
    metric_names = suite.active
    overall, videos = aggregate(merged, list(systems), metric_names)
    if "face_detected" in metric_names:  # the face must hold in every pair, not on average
        for name in systems:
            rates = [_mean(r["values"][name].get("face_detected", [])) for r in merged]
            rates = [v for v in rates if v is not None]
            overall[name]["face_detected"]["worst_item"] = min(rates) if rates else None
    if baseline and "motion_error" in metric_names:
        # how much of the driving motion is missing, relative to not moving at all (frozen result = baseline)
        for rows in [overall] + [v["metrics"] for v in videos]:
            frozen = rows[BASELINE]["motion_error"]
            frozen = frozen["frame_mean"] if isinstance(frozen, dict) else frozen
            for name in systems:
                mine = rows[name]["motion_error"]
                mine = mine["frame_mean"] if isinstance(mine, dict) else mine
                ratio = mine / frozen if mine is not None and frozen else None
                rows[name]["motion_ratio"] = ({"frame_mean": ratio, "video_mean": None, "frames": 0,
                                               "frames_skipped": 0} if rows is overall else ratio)
    return {
        "format": REPORT_FORMAT,
        "protocol": "pairs/" + settings.protocol if pairs is not None else settings.protocol,
        "data": os.fspath(data),
        "pairs": os.fspath(pairs) if pairs is not None else None,
        "image_size": size,
        "settings": asdict(settings),
        "systems": {name: (sources or {}).get(name, {"kind": "model"}) for name in models}
        | ({BASELINE: {"kind": "baseline", "description": "every output frame is the source frame"}}
           if baseline else {}),
        "metrics": suite.status(),
        "overall": overall,
        "videos": videos,
        "items": len(merged),
        "skipped_items": failed,
        "frames": sum(r["frames"] for r in merged),
        "run": {"seconds": round(time.time() - started, 2), "world_size": world, "device": str(device),
                "torch": torch.__version__},
        "_results": merged,
    }
