"""Frames/s of the shipped model's architecture at other network sizes: what a larger network would cost the
demo. ``Animator`` (fast path, ``--dtype auto``, batch 4, 256 px output) on the built-in driving clip, random
weights (speed does not depend on them), best of two passes per size, one process.

    python benchmarks/network_size_fps.py [--sizes 64 96 128] [--frames 48] [--out result.json]
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dagan import DaGAN, load_config  # noqa: E402
from dagan.inference.animator import Animator  # noqa: E402
from dagan.inference.synthetic import astronaut, synthetic_driving  # noqa: E402
from common import print_report  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="checkpoints/dagan-small/config.yaml")
    p.add_argument("--sizes", nargs="+", type=int, default=[64, 96, 128])
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = load_config(args.config)
    frames = list(synthetic_driving(args.frames, size=256))
    fps = {}
    for size in args.sizes:
        model_config = copy.deepcopy(config.model)
        model_config.image_size = size
        torch.manual_seed(0)
        animator = Animator(DaGAN(model_config).eval(), device="cpu", dtype="auto", batch_size=4, output_size=256)
        animator.set_source(astronaut())
        list(animator.animate_stream(frames[:8]))  # warm-up
        best = 0.0
        for _ in range(2):
            animator.reset()
            start = time.perf_counter()
            count = sum(1 for _ in animator.animate_stream(frames))
            best = max(best, count / (time.perf_counter() - start))
        fps[str(size)] = round(best, 1)
    report = {"benchmark": "network_size_fps", "config": args.config, "threads": args.threads,
              "output_size": 256, "dtype": str(animator.dtype).replace("torch.", ""), "frames_per_s": fps}
    print_report(report, args.out)


if __name__ == "__main__":
    main()
