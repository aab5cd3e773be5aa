#!/usr/bin/env python
"""Feed the frames of a video file through an :class:`~dagan.Animator` as a live stream and report
latency percentiles (p50/p95) and frames/s as JSON.

By default every frame is animated as fast as possible (throughput and latency of the per-frame path). With
``--realtime`` the file plays at its own frame rate like a camera: only the newest frame is kept and frames
older than ``--budget_ms`` are dropped, which is how an avatar app keeps up.

Examples::

    python examples/stream_frames.py --driving_video drive.mp4 --source_image me.png
    python examples/stream_frames.py --driving_video drive.mp4 --checkpoint model_dir --dtype bfloat16 \\
        --realtime --budget_ms 200 --output streamed.mp4
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dagan import Animator, DaGAN, DaganError, load_config  # noqa: E402
from dagan.io.images import load_image, resize_image  # noqa: E402
from dagan.inference.pipeline import StreamStats, stream  # noqa: E402
from dagan.io.video import VideoReader, VideoWriter  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def build_model(args) -> DaGAN:
    if args.checkpoint:
        return DaGAN.from_pretrained(args.checkpoint)
    torch.manual_seed(0)  # untrained: useful for timing only
    return DaGAN(load_config(args.config).model)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--driving_video", required=True)
    p.add_argument("--source_image", help="portrait (default: the first driving frame)")
    p.add_argument("--checkpoint", help="our model directory or .pt (default: untrained --config model)")
    p.add_argument("--config", default=str(REPO / "configs" / "dagan-tiny.yaml"))
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--device", default="auto")
    p.add_argument("--plain", action="store_true", help="Animator(fast=False): the plain model (compare with the fast path)")
    p.add_argument("--realtime", action="store_true", help="play the file at its fps and drop late frames")
    p.add_argument("--budget_ms", type=float, help="latency budget per frame (with --realtime)")
    p.add_argument("--max_frames", type=int)
    p.add_argument("--warmup", type=int, default=2, help="frames animated before measuring")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--output", help="also write the animated frames to this video")
    args = p.parse_args(argv)
    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        model = build_model(args)
        animator = Animator(model, device=args.device, dtype=args.dtype, fast=not args.plain)
        reader = VideoReader(args.driving_video, max_frames=args.max_frames)
        size = model.image_size
        frames = (resize_image(frame, size) for frame in reader)
        first = next(frames)
        animator.set_source(load_image(args.source_image) if args.source_image else first)
        for _ in range(args.warmup):  # the first frame anchors motion; also warms the kernels up
            animator(first)
        stats = StreamStats()
        writer = VideoWriter(args.output, reader.fps) if args.output else None
        with writer if writer else contextlib.nullcontext():
            for item in stream(animator, frames, fps=reader.fps if args.realtime else None,
                               budget_ms=args.budget_ms, stats=stats):
                if writer:
                    writer.write(item.output)
        summary = stats.summary()
        summary.update(video=args.driving_video, fps_of_video=reader.fps, image_size=size,
                       dtype=str(animator.dtype).replace("torch.", ""), fast_path=not args.plain, realtime=args.realtime,
                       threads=torch.get_num_threads())
    except DaganError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
