"""Same-identity reconstruction on held-out clips vs the repeat-source baseline; prints JSON.

Protocol (FOMM/DaGAN "reconstruction"): each held-out video is driven from its own first frame, with every
frame as driving; the baseline outputs the source frame for every frame. Frames are resized exactly as in
training (centre crop to square, antialiased resize to the model size). Metrics are frame-pooled means on
[0, 1] (SSIM with data_range 1.0, 7x7 window), over all frames and over frames 1.. (frame 0 is the source,
which the baseline copies perfectly).

    python benchmarks/heldout_reconstruction.py --model checkpoints/dagan-small \
        --config configs/dagan-small/dagan-small.yaml --data ../shared/data
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dagan import DaGAN  # noqa: E402
from dagan.config import load_config  # noqa: E402
from dagan.evaluation.metrics import l1_per_frame, psnr_per_frame, ssim_per_frame  # noqa: E402
from dagan.training.datasets import VideoFramesDataset  # noqa: E402


def _scores(pred: torch.Tensor, gt: torch.Tensor) -> dict:
    pred = (pred.clamp(0, 1) * 255).round() / 255  # 8-bit output, as written to video
    per = {"l1": l1_per_frame(pred, gt), "psnr": psnr_per_frame(pred, gt), "ssim": ssim_per_frame(pred, gt)}
    return {"all_frames": {k: float(v.mean()) for k, v in per.items()},
            "without_frame0": {k: float(v[1:].mean()) for k, v in per.items()}}


@torch.no_grad()
def evaluate(model: DaGAN, dataset: VideoFramesDataset, relative: bool) -> dict:
    results = {}
    for index, path in enumerate(dataset.paths):
        video = dataset.read_video(index)
        source = video[:1]
        t0 = time.perf_counter()
        pred = model.animate(source, video, relative=relative, adapt_movement_scale=relative, batch_size=16)
        seconds = time.perf_counter() - t0
        results[path.name] = {"frames": int(video.shape[0]), "model": _scores(pred, video),
                              "repeat_source_baseline": _scores(source.expand_as(video), video),
                              "model_fps_cpu": round(video.shape[0] / seconds, 1)}
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="model dir or training checkpoint")
    p.add_argument("--config", required=True, help="training config (its dataset section defines the split)")
    p.add_argument("--data", default=None, help="dataset root (default: the config's)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    model = DaGAN.from_pretrained(args.model).eval()
    size = model.config.image_size
    cfg.dataset.frame_shape = [size, size, 3]
    test = VideoFramesDataset.from_config(cfg.dataset, "test", root=args.data or cfg.dataset.root_dir)
    out = {"model": args.model, "image_size": size, "protocol": "reconstruction, source = frame 0",
           "absolute": evaluate(model, test, relative=False), "relative": evaluate(model, test, relative=True)}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
