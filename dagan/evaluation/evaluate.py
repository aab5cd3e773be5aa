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

The settings are in :mod:`.settings`, the items in :mod:`.items`, the metric suite in :mod:`.suite` and the
systems in :mod:`.systems`; this module runs them.
"""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..distributed import distributed_env, gather_lists
from ..errors import DatasetError, InputError
from . import face_metrics as FM
from . import metrics as M
from .items import Item, build_items, iter_video_frames, list_test_videos, read_frame, read_pairs, video_name
from .settings import (BASELINE, CROSS_IDENTITY_METRICS, HIGHER_IS_BETTER, PER_ITEM_METRICS, PROTOCOLS,
                       RECONSTRUCTION_METRICS, REPORT_FORMAT, EvalSettings)
from .suite import MetricSuite, build_metric_suite
from .systems import AnimatorSystem, RepeatSource, system_faces

logger = logging.getLogger("dagan")
PathLike = Union[str, os.PathLike]
__all__ = ["EvalSettings", "MetricSuite", "build_metric_suite", "run_evaluation", "evaluate_item", "aggregate",
           "AnimatorSystem", "RepeatSource", "system_faces", "Item", "build_items", "iter_video_frames",
           "list_test_videos", "read_frame", "read_pairs", "video_name", "BASELINE", "CROSS_IDENTITY_METRICS",
           "HIGHER_IS_BETTER", "PER_ITEM_METRICS", "PROTOCOLS", "RECONSTRUCTION_METRICS", "REPORT_FORMAT"]


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


def _score_output(pred: torch.Tensor, quantize: bool) -> torch.Tensor:
    """A system's output as it is scored: float in [0, 1], rounded down to 8 bits with ``quantize``."""
    pred = pred.float().clamp(0, 1)
    return M.quantize_8bit(pred) if quantize else pred


def still_driver_sharpness(system: Callable, source: torch.Tensor, suite: MetricSuite, frames: int) -> Optional[float]:
    """The still-driver check of one system: ``source`` ``(1, 3, H, W)`` driven by ``frames`` copies of itself
    (relative motion, anchored at the source); the mean sharpness of the results against the source
    (:func:`~dagan.evaluation.face_metrics.mean_sharpness`; 1 = the result is as sharp as the portrait)."""
    settings = suite.settings
    system.start(source, source, True)
    images: List[np.ndarray] = []
    for start in range(0, frames, settings.batch_size):
        count = min(settings.batch_size, frames - start)
        images.extend(M.to_uint8_hwc(_score_output(system(source.expand(count, -1, -1, -1)), settings.quantize)))
    source_image = M.to_uint8_hwc(source)[0]
    return FM.mean_sharpness(images, suite.faces(images), source_image, suite.faces([source_image])[0])


@torch.no_grad()
def evaluate_item(item: Item, systems: Dict[str, Callable], suite: MetricSuite, device: torch.device,
                  frames_dir: Optional[PathLike] = None, still_cache: Optional[dict] = None) -> dict:
    """Run every system on one item; returns its per-frame rows (plain Python, picklable). With ``frames_dir``
    every output frame is also saved as ``<frames_dir>/<system>/<item folder>/<index>.png``. ``still_cache``
    keeps the still-driver check of each (system, source) across the items that share a source."""
    settings = suite.settings
    source = _to_tensor([item.source()], device)
    src_emb = suite.identity(source) if suite.identity is not None and "csim" in suite.active else None
    trackers: Dict[str, FM.MotionTracker] = {}
    if suite.motion_active:
        source_image = M.to_uint8_hwc(source)[0]
        source_face = suite.faces([source_image])[0]
        trackers = {name: FM.MotionTracker(source_image, source_face) for name in systems}
    values: Dict[str, Dict[str, List[Optional[float]]]] = {name: {} for name in systems}
    if "still_sharpness" in suite.active and item.relative:  # a motion metric: source_image is set above
        still_cache = {} if still_cache is None else still_cache
        digest = FM.FaceAnalyzer.key(source_image)
        for name, system in systems.items():
            if (name, digest) not in still_cache:
                still_cache[name, digest] = still_driver_sharpness(system, source, suite, settings.still_frames)
            values[name]["still_sharpness"] = [still_cache[name, digest]]
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
            pred = _score_output(system(gt), settings.quantize)
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
    still_cache: dict = {}
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=len(local_items), desc="evaluate", unit="item", leave=False)
    for it in local_items:
        try:
            results.append(evaluate_item(it, systems, suite, device, frames_dir, still_cache))
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

