"""Longer synthetic check of self-supervised depth training; prints one JSON object.

A textured sphere before a textured plane, rendered by numpy ray casting under small known camera motion
(:mod:`dagan.training.synthetic_depth`). Trains the depth + pose nets on those videos for ``--steps`` and
reports the Spearman rank correlation between predicted disparity and true inverse depth on held-out
scenes for the trained net, the untrained net and a constant map, the median step time, and (in learned
intrinsics mode) the learned focal length against the true one.

    python benchmarks/depth_synthetic.py --steps 600 --intrinsics fixed
    python benchmarks/depth_synthetic.py --steps 600 --intrinsics learned --uncertainty
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dagan.config import config_from_dict  # noqa: E402
from dagan.training.depth_trainer import DepthTrainingModel, load_depth_weights, train  # noqa: E402
from dagan.training.synthetic_depth import SyntheticDepthDataset, spearman  # noqa: E402


def _score(model, frames, nearness):
    model.eval()
    with torch.no_grad():
        disp = model.depth_decoder(model.depth_encoder(frames))[("disp", 0)][:, 0].numpy()
    return float(np.mean([spearman(d, t) for d, t in zip(disp, nearness)]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--layers", type=int, default=10, help="ResNet depth of the depth and pose encoders")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--scales", type=int, nargs="+", default=[0])
    p.add_argument("--intrinsics", choices=["fixed", "learned"], default="fixed")
    p.add_argument("--uncertainty", action="store_true", help="DaGAN++ uncertainty-aware loss")
    p.add_argument("--videos", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    cfg = config_from_dict({"task": "depth", "model": {"image_size": args.size, "depth": {"num_layers": args.layers}},
                            "depth_train": {"lr": args.lr, "batch_size": args.batch, "intrinsics": args.intrinsics,
                                            "fixed_focal": 1.0, "scales": args.scales, "seed": args.seed,
                                            "uncertainty": args.uncertainty, "save_every": 10 ** 9}})
    t0 = time.perf_counter()
    train_set = SyntheticDepthDataset(num_videos=args.videos, num_frames=8, size=args.size, seed=args.seed)
    test_set = SyntheticDepthDataset(num_videos=6, num_frames=3, size=args.size, seed=args.seed + 99)
    render_s = time.perf_counter() - t0
    frames = torch.stack([test_set[i]["frame_0"] for i in range(len(test_set))])
    nearness = [1 / test_set[i]["depth"][0].numpy() for i in range(len(test_set))]

    torch.manual_seed(args.seed)
    untrained = _score(DepthTrainingModel(cfg.model, cfg.depth_train), frames, nearness)
    constant = float(np.mean([spearman(np.full_like(t, 0.5), t) for t in nearness]))
    with tempfile.TemporaryDirectory() as run:
        t0 = time.perf_counter()
        result = train(cfg, train_set, run, device=args.device, max_steps=args.steps, progress=False,
                       tensorboard=False)
        train_s = time.perf_counter() - t0
        model = load_depth_weights(DepthTrainingModel(cfg.model, cfg.depth_train), run)
        ckpt = torch.load(os.path.join(run, "checkpoint.pt"), weights_only=False)
    trained = _score(model, frames, nearness)
    report = {"steps": args.steps, "size": args.size, "layers": args.layers, "batch": args.batch, "lr": args.lr,
              "scales": args.scales, "intrinsics": args.intrinsics, "uncertainty": args.uncertainty,
              "spearman_trained": round(trained, 4), "spearman_untrained": round(untrained, 4),
              "spearman_constant": round(constant, 4), "final_loss": round(result["loss"], 5),
              "step_time_s_median": round(result["step_time"], 4), "train_s": round(train_s, 1),
              "render_s": round(render_s, 2), "device": str(args.device), "threads": args.threads,
              "torch": torch.__version__}
    if args.intrinsics == "learned":
        model.pose_net.load_state_dict(ckpt["pose_net"])
        with torch.no_grad():
            item = test_set[0]
            _, _, k, _ = model.pose_net(item["frame_0"][None], item["frame_1"][None])
        report["fx_learned_over_true"] = round(float(k[0, 0, 0]) / (1.0 * args.size), 4)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
