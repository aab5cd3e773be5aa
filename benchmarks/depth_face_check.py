"""Does the predicted depth look like a face? Checked on held-out frames with the offline face landmarks.

For every ``--stride``-th frame of the given clips: the 68 dlib landmarks are found on the frame, the depth
network's disparity (larger = nearer) is sampled at them (bilinear, at the model's input size), and

* (a) ``nose_nearer_than_jaw``: the disparity at the nose tip (landmark 30) exceeds the mean along the jaw
  line (landmarks 0-16);
* (b) ``relief_spearman``: the Spearman rank correlation, per frame, between the disparity at 16 landmarks and
  a generic face relief (nose tip nearest, then the nose base, lips, chin, nose bridge, mouth corners, inner
  then outer eye corners, jaw, jaw ends farthest).

Prints JSON (per clip and overall) and writes it with ``--out``. Targets of the shipped model: (a) >= 95 %
of frames, (b) mean >= 0.6.

    python benchmarks/depth_face_check.py --model checkpoints/dagan-small --data ../shared/data \\
        --videos drv_lp_d9_audio_256 [--random-depth] [--depth-dir runs/depth/] [--out result.json]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dagan import DaGAN  # noqa: E402
from dagan.faces import load_face_backend  # noqa: E402
from dagan.io.images import resize_image  # noqa: E402
from dagan.io.video import VideoReader  # noqa: E402
from dagan.training.face_sfm import sample_map  # noqa: E402
from common import print_report  # noqa: E402

#: generic face relief: landmark -> nearness rank (higher = nearer the camera)
RELIEF = {30: 10.0, 33: 9.5, 51: 9.0, 57: 9.0, 8: 8.0, 27: 7.0, 48: 6.0, 54: 6.0, 39: 5.0, 42: 5.0, 36: 4.0,
          45: 4.0, 4: 3.0, 12: 3.0, 0: 2.0, 16: 2.0}


def sample_disparity(disp: torch.Tensor, points: np.ndarray) -> np.ndarray:
    """``disp`` ``(1, 1, S, S)`` at ``points`` ``(N, 2)`` in pixels of the ``S``-px frame -> ``(N,)`` (bilinear,
    the depth trainer's own sampling of the landmark term)."""
    grid = torch.as_tensor(np.asarray(points, dtype=np.float32))[None]
    return sample_map(disp.float(), grid).view(-1).numpy().astype(np.float64)


def frame_scores(disp: torch.Tensor, landmarks: np.ndarray) -> dict:
    from scipy.stats import spearmanr

    jaw = sample_disparity(disp, landmarks[0:17]).mean()
    ids = sorted(RELIEF)
    values = sample_disparity(disp, landmarks[ids])
    nose = values[ids.index(30)]
    rho = spearmanr(values, [RELIEF[i] for i in ids]).statistic
    return {"nose_nearer": bool(nose > jaw), "spearman": None if not np.isfinite(rho) else float(rho)}


@torch.no_grad()
def check(model: DaGAN, data: str, videos, stride: int, max_frames: int, backend) -> dict:
    size = model.image_size
    out = {"clips": {}, "frames": 0, "frames_without_face": 0}
    nose_all, rho_all = [], []
    for name in videos:
        path = os.path.join(data, name if os.path.splitext(name)[1] else name + ".mp4")
        nose, rho, missed = [], [], 0
        for index, frame in enumerate(VideoReader(path, max_frames=max_frames)):
            if index % stride:
                continue
            faces = backend.detect(frame, landmarks=True)
            if not faces:
                missed += 1
                continue
            scale = size / frame.shape[0]
            model_frame = resize_image(frame, size)
            x = torch.from_numpy(np.array(model_frame)).permute(2, 0, 1)[None].float() / 255.0
            disp = model.estimate_depth(x)
            scores = frame_scores(disp, faces[0].landmarks * scale)
            nose.append(scores["nose_nearer"])
            if scores["spearman"] is not None:
                rho.append(scores["spearman"])
        out["clips"][name] = {"frames": len(nose), "frames_without_face": missed,
                              "nose_nearer_than_jaw": float(np.mean(nose)) if nose else None,
                              "relief_spearman_mean": float(np.mean(rho)) if rho else None}
        out["frames"] += len(nose)
        out["frames_without_face"] += missed
        nose_all += nose
        rho_all += rho
    out["nose_nearer_than_jaw"] = float(np.mean(nose_all)) if nose_all else None
    out["relief_spearman_mean"] = float(np.mean(rho_all)) if rho_all else None
    out["targets"] = {"nose_nearer_than_jaw": ">= 0.95", "relief_spearman_mean": ">= 0.6"}
    out["meets_targets"] = bool(nose_all and out["nose_nearer_than_jaw"] >= 0.95
                                and out["relief_spearman_mean"] is not None and out["relief_spearman_mean"] >= 0.6)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="our-format model (folder or .pt, training checkpoints included)")
    p.add_argument("--depth-dir", help="use these face-depth weights instead (encoder.pth + depth.pth, official "
                                       "layout, e.g. a depth training run folder)")
    p.add_argument("--random-depth", action="store_true", help="re-initialise the depth network (a baseline)")
    p.add_argument("--data", required=True, help="folder holding the clips")
    p.add_argument("--videos", nargs="+", required=True, help="held-out clip names")
    p.add_argument("--stride", type=int, default=5, help="use every N-th frame (default 5)")
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args()
    torch.manual_seed(args.seed)
    model = DaGAN.from_pretrained(args.model).eval()
    label = args.model
    if args.depth_dir:
        from dagan.training.trainer import load_depth_checkpoint

        load_depth_checkpoint(model, args.depth_dir)
        label += f" + depth {args.depth_dir}"
    if args.random_depth:
        for module in list(model.depth_encoder.modules()) + list(model.depth_decoder.modules()):
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        label += " (depth re-initialised)"
    started = time.time()
    result = check(model, args.data, args.videos, args.stride, args.max_frames, load_face_backend("dlib"))
    result = {"benchmark": "depth_face_check", "model": label, "image_size": model.image_size,
              "stride": args.stride, **result, "seconds": round(time.time() - started, 1)}
    print_report(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
