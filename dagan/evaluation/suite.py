"""The metric suite of an evaluation: which of the papers' metrics and face metrics can run here (third-party
weights present or not) and how each frame is scored."""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch

from ..errors import MissingWeightsError
from . import face_metrics as FM
from . import metrics as M
from .settings import (_EMBEDDING_METRICS, CROSS_IDENTITY_METRICS, PER_ITEM_METRICS, RECONSTRUCTION_METRICS,
                       EvalSettings)

logger = logging.getLogger("dagan")


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
        off = self.turned_off()
        return [m for m in self.wanted if avail.get(m, True) and m not in off]

    def turned_off(self) -> Dict[str, str]:
        """The metrics that the settings turn off, with why (derived: the settings of a suite may be replaced)."""
        return {"still_sharpness": "disabled (--still_frames 0)"} if self.settings.still_frames == 0 else {}

    @property
    def motion_active(self) -> List[str]:
        return [m for m in self.active if m in FM.MOTION_METRICS]

    def status(self) -> Dict[str, Dict[str, object]]:
        out: Dict[str, Dict[str, object]] = {}
        for m in self.wanted:
            if m not in self.active:
                reason = self.skipped.get(m) or self.turned_off().get(m, "not configured")
                out[m] = {"status": f"skipped: {reason}"}
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


