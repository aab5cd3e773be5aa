"""Do the keypoints follow the face's scale? The cause of scale drift, measured on held-out frames.

Relative motion moves the portrait's keypoints by the driver's keypoint motion, so a result can grow with a
driver who leans in only if the driver's keypoints spread out with the face. For every ``--stride``-th frame:

* ``synthetic``: the frame zoomed about its centre by each ``--zooms`` factor (bilinear resampling of the
  full-size frame, then the model's input size, as at inference); the keypoint hull's fitted scale change
  (least squares about the centroids) and ``sqrt(det)`` of the relative Jacobians ``J_z inv(J_0)``, each as a
  ``response``: its log over the zoom's log (1 = follows the zoom exactly, 0 = ignores it, < 0 = inverted);
* ``clip``: over the real clip, the slope of the keypoints' fitted scale (relative to the first frame) on the
  driver's own scale change, the inter-ocular distance of the offline 68 landmarks (1 = follows it).

Prints JSON per clip and writes it with ``--out``.

    python benchmarks/kp_scale_response.py --model checkpoints/dagan-small --data ../shared/data \\
        --videos drv_lp_d9_audio_256 drv_lp_d14_audio_256 [--stride 5] [--out result.json]
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dagan import DaGAN  # noqa: E402
from dagan.evaluation.face_metrics import BackendLandmarks, FaceAnalyzer, interocular  # noqa: E402
from dagan.faces import DlibFaceBackend  # noqa: E402
from dagan.io.images import image_to_tensor, resize_tensor  # noqa: E402
from dagan.io.video import VideoReader  # noqa: E402
from common import print_report  # noqa: E402


def hull_scale(kp: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Least-squares scale ``s`` of ``kp - mean`` onto ``reference - mean``, ``(B, K, 2)`` each -> ``(B,)``."""
    a, b = kp - kp.mean(1, keepdim=True), reference - reference.mean(1, keepdim=True)
    return (a * b).sum((1, 2)) / (b * b).sum((1, 2)).clamp(min=1e-12)


def zoom(frames: torch.Tensor, factor: float) -> torch.Tensor:
    """``(B, 3, H, W)`` magnified by ``factor`` about the centre (edges repeated when shrinking)."""
    theta = frames.new_tensor([[1 / factor, 0.0, 0.0], [0.0, 1 / factor, 0.0]]).expand(frames.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(frames.shape), align_corners=False)
    return F.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=False)


@torch.no_grad()
def keypoints(model: DaGAN, frames: torch.Tensor) -> Dict[str, torch.Tensor]:
    size = model.image_size
    return model.detect_keypoints(resize_tensor(frames, (size, size)))


def clip_report(model: DaGAN, landmarks: BackendLandmarks, path: str, stride: int, zooms: List[float]) -> dict:
    frames = list(VideoReader(path))[::stride]
    batch = torch.cat([image_to_tensor(f) for f in frames])
    base = keypoints(model, batch)
    synthetic = {}
    for factor in zooms:
        kp = keypoints(model, zoom(batch, factor))
        scale = hull_scale(kp["value"], base["value"])
        jac = torch.det(kp["jacobian"] @ torch.inverse(base["jacobian"])).clamp(min=1e-6).sqrt().mean(1)
        log_zoom = float(np.log(factor))
        synthetic[str(factor)] = {"kp_scale": round(float(scale.mean()), 4),
                                  "kp_response": round(float(torch.log(scale.clamp(min=1e-6)).mean()) / log_zoom, 3),
                                  "jacobian_scale": round(float(jac.mean()), 4),
                                  "jacobian_response": round(float(torch.log(jac).mean()) / log_zoom, 3)}
    found = landmarks(batch)
    first = next((i for i, lm in enumerate(found) if lm is not None), None)
    clip = None
    if first is not None:
        kp_scale = hull_scale(base["value"], base["value"][first:first + 1].expand_as(base["value"])).numpy()
        rows = [(interocular(lm) / interocular(found[first]), kp_scale[i]) for i, lm in enumerate(found)
                if lm is not None]
        face, kps = np.log(np.array(rows)).T
        slope = float((face * kps).sum() / max((face * face).sum(), 1e-12))
        clip = {"frames": len(rows), "face_scale_range": [round(float(np.exp(face.min())), 3),
                                                          round(float(np.exp(face.max())), 3)],
                "kp_slope_on_face_scale": round(slope, 3),
                "corr": round(float(np.corrcoef(face, kps)[0, 1]), 3) if face.std() > 0 and kps.std() > 0 else None}
    return {"frames": len(frames), "synthetic": synthetic, "clip": clip}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="checkpoints/dagan-small")
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--videos", nargs="+", default=["drv_lp_d9_audio_256", "drv_lp_d14_audio_256"])
    p.add_argument("--stride", type=int, default=5)
    p.add_argument("--zooms", type=float, nargs="+", default=[0.9, 1.1])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out")
    args = p.parse_args(argv)
    if args.stride < 1 or any(z <= 0 or z == 1 for z in args.zooms):
        raise SystemExit("error: --stride must be >= 1 and every --zooms factor positive and not 1")
    torch.set_num_threads(args.threads)
    model = DaGAN.from_pretrained(args.model).eval()
    landmarks = BackendLandmarks(FaceAnalyzer(DlibFaceBackend(), embeddings=False))
    report = {"benchmark": "kp_scale_response", "model": args.model, "stride": args.stride, "clips": {}}
    for name in args.videos:
        path = os.path.join(args.data, name if os.path.splitext(name)[1] else name + ".mp4")
        if not os.path.exists(path):
            raise SystemExit(f"error: no clip {path}")
        report["clips"][name] = clip_report(model, landmarks, path, args.stride, args.zooms)
    print_report(report, args.out)


if __name__ == "__main__":
    main()
