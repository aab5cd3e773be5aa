"""The papers' image and motion metrics, computed per frame in batches on any device.

Every function takes ``pred`` and ``gt`` as ``(B, 3, H, W)`` float tensors in [0, 1] and returns one value
per frame ``(B,)``; averaging (frame-pooled or per video) is the caller's job (:mod:`dagan.evaluation.evaluate`).

=========  ==============================================================================================
L1         mean ``|pred - gt|`` over pixels and channels, on [0, 1]
PSNR       ``10 * log10(data_range**2 / MSE)`` per frame (capped at ``max_db`` where MSE is 0)
SSIM       scikit-image ``structural_similarity`` (7x7 uniform window, sample covariance, per-channel mean)
           with an explicit ``data_range``; the papers' old ``compare_ssim`` silently used 2.0 for floats
LPIPS      ``lpips`` v0.1 (AlexNet by default), when the package and its backbone weights are installed
AKD        mean absolute difference of the 68x2 face-alignment landmark coordinates, in pixels
AKD-motion the same on landmark displacements from the first frame (cross-identity pose/expression agreement)
AED        squared L2 distance between unit identity embeddings of prediction and ground truth
CSIM       cosine similarity between the identity embeddings of the source and the prediction
=========  ==============================================================================================

Third-party networks (face-alignment, LPIPS, the identity model) are never downloaded here: they load from
files on disk, or are injected as callables (tests use tiny random ones). When one is missing the metric is
reported as ``"skipped: <reason>"`` rather than failing the whole evaluation.
"""
from __future__ import annotations

import hashlib
import logging
import os
import warnings
from typing import Callable, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError, MissingWeightsError

logger = logging.getLogger("dagan")

PathLike = Union[str, os.PathLike]
Landmarks = Optional[np.ndarray]  # (68, 2) pixel coordinates, or None when no face was found
LandmarkDetector = Callable[[torch.Tensor], List[Landmarks]]
IdentityEmbedder = Callable[[torch.Tensor], torch.Tensor]

#: torchvision backbone files ``lpips`` looks for under ``torch.hub.get_dir()/checkpoints``
LPIPS_BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth",
                        "squeeze": "squeezenet1_1-b8a52dc0.pth"}


def _check_pair(pred: torch.Tensor, gt: torch.Tensor) -> None:
    for name, t in (("pred", pred), ("gt", gt)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4 or not t.is_floating_point():
            raise InputError(f"{name} must be a float tensor of shape (B, C, H, W) in [0, 1]")
    if pred.shape != gt.shape:
        raise InputError(f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} must have the same shape")


def _accum_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float32 if t.device.type == "mps" else torch.float64


# ----------------------------------------------------------------------------------------- pixels
def l1_per_frame(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per frame. ``pred, gt: (B, C, H, W)`` in [0, 1] -> ``(B,)``."""
    _check_pair(pred, gt)
    dt = _accum_dtype(pred)
    return (pred.to(dt) - gt.to(dt)).abs().flatten(1).mean(1)


def psnr_per_frame(pred: torch.Tensor, gt: torch.Tensor, data_range: float = 1.0,
                   max_db: float = 100.0) -> torch.Tensor:
    """PSNR in dB per frame, ``10 log10(data_range^2 / MSE)``; a frame with MSE 0 gets ``max_db``.

    ``pred, gt: (B, C, H, W)`` -> ``(B,)``. The cap keeps means finite (an exact copy, such as the
    repeat-source baseline on the source frame itself, would otherwise be +inf).
    """
    _check_pair(pred, gt)
    dt = _accum_dtype(pred)
    mse = (pred.to(dt) - gt.to(dt)).pow(2).flatten(1).mean(1)
    psnr = 10.0 * torch.log10(float(data_range) ** 2 / mse.clamp_min(1e-300))
    return psnr.clamp(max=max_db)


def ssim_per_frame(pred: torch.Tensor, gt: torch.Tensor, data_range: float = 1.0, win_size: int = 7,
                   k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Mean SSIM per frame, equal to ``skimage.metrics.structural_similarity(p, g, channel_axis=-1,
    data_range=data_range)`` (uniform ``win_size`` window, sample covariance, border of ``win_size // 2``
    ignored, channels averaged). ``pred, gt: (B, C, H, W)`` -> ``(B,)``.

    ``data_range`` must be given explicitly by callers that want to match a paper: the old
    ``compare_ssim(..., multichannel=True)`` used 2.0 for float images, new scikit-image requires it.
    """
    _check_pair(pred, gt)
    if win_size % 2 == 0 or win_size < 3:
        raise InputError(f"SSIM win_size must be odd and >= 3, got {win_size}")
    if min(pred.shape[-2:]) < win_size:
        raise InputError(f"SSIM needs frames of at least {win_size}x{win_size}, got {tuple(pred.shape[-2:])}")
    if data_range <= 0:
        raise InputError(f"SSIM data_range must be positive, got {data_range}")
    dt = _accum_dtype(pred)
    x, y = pred.to(dt), gt.to(dt)
    b, c = x.shape[:2]
    # one image per channel; the valid-mode box filter is exactly skimage's filtered map with its border cropped
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=0).flatten(0, 1).unsqueeze(1)
    pooled = F.avg_pool2d(stack, win_size, stride=1)
    ux, uy, uxx, uyy, uxy = pooled.view(5, b, c, *pooled.shape[-2:])
    n = win_size * win_size
    cov_norm = n / (n - 1.0)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3))


def quantize_8bit(frames: torch.Tensor) -> torch.Tensor:
    """What saving an output as an 8-bit PNG did in the papers' code: ``floor(255 x) / 255`` (truncation)."""
    return torch.floor(frames.clamp(0, 1) * 255.0) / 255.0


def file_digest(path: PathLike, length: int = 16) -> str:
    """First ``length`` hex digits of the SHA-256 of a file (recorded next to each third-party model)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:length]


def hub_checkpoint_dir() -> str:
    """Where torch.hub (and the packages built on it) keep downloaded weights: ``$TORCH_HOME/hub/checkpoints``."""
    return os.path.join(torch.hub.get_dir(), "checkpoints")


# ------------------------------------------------------------------------------------------ LPIPS
class LPIPSMetric:
    """LPIPS distance per frame. ``model(a, b) -> (B, 1, 1, 1)`` takes images in [-1, 1].

    By default images are mapped from [0, 1] to [-1, 1] as ``lpips`` expects; ``legacy_range=True`` feeds
    [0, 1] unchanged, which is what the DaGAN authors' script did (no ``normalize=True``).
    """

    def __init__(self, model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], legacy_range: bool = False,
                 name: str = "custom", digest: Optional[str] = None):
        self.model = model
        self.legacy_range = legacy_range
        self.name = name
        self.digest = digest

    @classmethod
    def load(cls, net: str = "alex", device: Union[str, torch.device] = "cpu",
             legacy_range: bool = False) -> "LPIPSMetric":
        """The ``lpips`` package's v0.1 model. Raises :class:`MissingWeightsError` when the package or its
        torchvision backbone weights are absent (neither is downloaded here)."""
        try:
            import lpips  # optional dependency
        except ImportError:
            raise MissingWeightsError("the lpips package is not installed (pip install lpips)") from None
        if net not in LPIPS_BACKBONE_FILES:
            raise InputError(f"unknown LPIPS network {net!r} (use {', '.join(LPIPS_BACKBONE_FILES)})")
        backbone = os.path.join(hub_checkpoint_dir(), LPIPS_BACKBONE_FILES[net])
        if not os.path.exists(backbone):
            raise MissingWeightsError(f"LPIPS {net} backbone weights missing: put {LPIPS_BACKBONE_FILES[net]} "
                                      f"in {hub_checkpoint_dir()} (or set TORCH_HOME)")
        model = lpips.LPIPS(net=net, version="0.1", verbose=False).to(device).eval()
        return cls(model, legacy_range=legacy_range, name=f"lpips-v0.1-{net}", digest=file_digest(backbone))

    @torch.no_grad()
    def __call__(self, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        """``pred, gt: (B, 3, H, W)`` in [0, 1] -> ``(B,)``."""
        _check_pair(pred, gt)
        if not self.legacy_range:
            pred, gt = pred * 2 - 1, gt * 2 - 1
        return self.model(pred, gt).reshape(pred.shape[0], -1).mean(1).double()


# ---------------------------------------------------------------------------------- landmarks, AKD
def to_uint8_hwc(frames: torch.Tensor) -> np.ndarray:
    """``(B, 3, H, W)`` in [0, 1] -> ``(B, H, W, 3)`` uint8 (rounded)."""
    return (frames.detach().float().clamp(0, 1) * 255.0).round().byte().permute(0, 2, 3, 1).cpu().numpy()


class FaceAlignmentLandmarks:
    """68 2-D landmarks of the largest detected face (S3FD + 2D-FAN-4 from ``face_alignment``, loaded by
    :class:`dagan.faces.FaceAlignmentDetector`), as the pose-evaluation scripts computed them.
    Call with ``(B, 3, H, W)`` in [0, 1]; returns one ``(68, 2)`` array (pixels) or ``None`` per frame."""

    name = "face-alignment 2D-FAN-4 + S3FD"

    def __init__(self, device: Union[str, torch.device] = "cpu"):
        from ..faces import (FACE_ALIGNMENT_FILES, FaceAlignmentDetector, face_alignment_weights_dir,
                                       missing_face_alignment_files)

        folder = face_alignment_weights_dir()
        missing = missing_face_alignment_files()
        if missing:
            raise MissingWeightsError(f"AKD needs the face-alignment weights {' and '.join(missing)} in {folder} "
                                      f"(or set TORCH_HOME)")
        self.digest = ",".join(file_digest(os.path.join(folder, f)) for f in FACE_ALIGNMENT_FILES)
        self.detector = FaceAlignmentDetector(str(device))

    def __call__(self, frames: torch.Tensor) -> List[Landmarks]:
        out: List[Landmarks] = []
        for image in to_uint8_hwc(frames):
            faces = self.detector.detect(image, landmarks=True)
            out.append(faces[0].landmarks if faces and faces[0].landmarks is not None else None)
        return out


def akd_per_frame(lm_pred: Sequence[Landmarks], lm_gt: Sequence[Landmarks]) -> List[Optional[float]]:
    """Average keypoint distance: mean absolute difference over the 68x2 landmark coordinates (pixels) of
    each frame; ``None`` where either side has no face."""
    if len(lm_pred) != len(lm_gt):
        raise InputError(f"landmark lists differ in length: {len(lm_pred)} vs {len(lm_gt)}")
    out: List[Optional[float]] = []
    for p, g in zip(lm_pred, lm_gt):
        if p is None or g is None:
            out.append(None)
            continue
        p, g = np.asarray(p, dtype=np.float64), np.asarray(g, dtype=np.float64)
        if p.shape != g.shape:
            raise InputError(f"landmark arrays differ in shape: {p.shape} vs {g.shape}")
        out.append(float(np.abs(p - g).mean()))
    return out


def motion_akd_per_frame(lm_pred: Sequence[Landmarks], lm_gt: Sequence[Landmarks], pred_anchor: Landmarks,
                         gt_anchor: Landmarks) -> List[Optional[float]]:
    """AKD of landmark *motion*: mean ``|(p_t - p_0) - (g_t - g_0)|`` over the 68x2 coordinates, where
    ``p_0``/``g_0`` are the landmarks of the first output/driving frame. Cross-identity outputs keep the source's
    face shape, so this measures whether the pose and expression changes follow the driving video."""
    if pred_anchor is None or gt_anchor is None:
        return [None] * len(lm_pred)
    return akd_per_frame([None if p is None else np.asarray(p) - pred_anchor for p in lm_pred],
                         [None if g is None else np.asarray(g) - gt_anchor for g in lm_gt])


# ----------------------------------------------------------------------------------- identity, AED
class FileIdentityEmbedder:
    """An identity-embedding network loaded offline from a file given by the user.

    * ``.onnx`` (run with onnxruntime): e.g. an ArcFace ResNet exported by InsightFace (``w600k_r50.onnx``);
      input ``(B, 3, S, S)`` RGB, ``(255 x - mean) / std`` with ``mean = std = 127.5`` by default;
    * anything else is read as TorchScript (``torch.jit.load``), fed the same way.

    The whole frame is resized to ``S`` (from the model's input shape, or ``input_size``), without face
    detection, as the OpenFace AED script did. This is not the papers' OpenFace nn4.small2.v1: AED/CSIM values
    are comparable between runs with the same file (its digest is recorded), not with the papers' tables.
    """

    def __init__(self, path: PathLike, device: Union[str, torch.device] = "cpu", input_size: Optional[int] = None,
                 mean: float = 127.5, std: float = 127.5):
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise MissingWeightsError(f"identity model file not found: {path}")
        self.path, self.mean, self.std = path, float(mean), float(std)
        self.digest = file_digest(path)
        self.name = os.path.basename(path)
        self.device = torch.device(device)
        self.session = None
        if path.endswith(".onnx"):
            try:
                import onnxruntime
            except ImportError:
                raise MissingWeightsError("onnxruntime is needed for an .onnx identity model "
                                          "(pip install onnxruntime)") from None
            try:
                self.session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
            except Exception as exc:  # onnxruntime raises its own exception types
                raise InputError(f"cannot load identity model {path}: {str(exc)[:200]}") from None
            inp = self.session.get_inputs()[0]
            self.input_name = inp.name
            size = inp.shape[-1] if isinstance(inp.shape[-1], int) else None
        else:
            try:
                with warnings.catch_warnings():  # TorchScript is deprecated upstream but still the portable format
                    warnings.simplefilter("ignore", FutureWarning)
                    self.module = torch.jit.load(path, map_location=self.device).eval()
            except (RuntimeError, ValueError) as exc:
                raise InputError(f"cannot load identity model {path} as TorchScript or ONNX: "
                                 f"{str(exc).splitlines()[0][:200]}") from None
            size = None
        self.input_size = int(input_size or size or 112)

    @torch.no_grad()
    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [0, 1] -> ``(B, D)`` embeddings (not normalised)."""
        x = F.interpolate(frames.float(), size=(self.input_size, self.input_size), mode="bilinear",
                          align_corners=False, antialias=True)
        x = (x * 255.0 - self.mean) / self.std
        if self.session is not None:
            emb = self.session.run(None, {self.input_name: x.cpu().numpy().astype(np.float32)})[0]
            return torch.from_numpy(np.asarray(emb)).reshape(frames.shape[0], -1)
        return self.module(x.to(self.device)).reshape(frames.shape[0], -1).cpu()


def _unit(emb: torch.Tensor) -> torch.Tensor:
    return F.normalize(emb.double(), dim=-1)


def aed_per_frame(emb_pred: torch.Tensor, emb_gt: torch.Tensor) -> torch.Tensor:
    """Average euclidean distance term per frame: **squared** L2 between unit embeddings ``(B, D)`` -> ``(B,)``
    (in [0, 4])."""
    if emb_pred.shape != emb_gt.shape or emb_pred.dim() != 2:
        raise InputError(f"embeddings must both be (B, D), got {tuple(emb_pred.shape)} and {tuple(emb_gt.shape)}")
    return (_unit(emb_pred) - _unit(emb_gt)).pow(2).sum(-1)


def csim_per_frame(emb_pred: torch.Tensor, emb_source: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each prediction embedding ``(B, D)`` with the source's ``(1, D)`` or ``(B, D)``."""
    if emb_pred.dim() != 2 or emb_source.dim() != 2 or emb_source.shape[-1] != emb_pred.shape[-1]:
        raise InputError(f"embeddings must be (B, D) and (1|B, D), got {tuple(emb_pred.shape)} and "
                         f"{tuple(emb_source.shape)}")
    return (_unit(emb_pred) * _unit(emb_source)).sum(-1)
