"""How fast ``demo.py`` animates with each way of moving the portrait, in one run: the file demo (read, detect,
animate, encode with the driving audio) and ``--stream`` (a file played at its own frame rate, frames dropped
past the latency budget), at ``--size`` output.

    python benchmarks/motion_speed.py --data ../shared/data --source source_lp_d6frame0_256.png \\
        --video drv_lp_d14_audio_256 --frames 200 --motions landmarks keypoints --out result.json

``keypoints`` is the model's keypoint motion with the face guide (the default before the landmark stage).
For the file demo, ``frames_per_s`` counts from the first animated frame to the last (the steady rate a user
sees on the progress bar); ``wall_s`` is the whole call, model loading and the source's set-up included.
Prints JSON.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import print_report  # noqa: E402

from dagan.inference.pipeline import AnimateOptions, run, run_stream  # noqa: E402
from dagan.inference.pipeline.overlap import StreamStats  # noqa: E402


def file_demo(options: AnimateOptions) -> dict:
    stamps = []
    started = time.perf_counter()
    run(options, on_frame=lambda done, total: stamps.append(time.perf_counter()))
    wall = time.perf_counter() - started
    steady = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else None
    return {"frames": len(stamps), "frames_per_s": None if steady is None else round(steady, 2),
            "wall_s": round(wall, 2), "first_frame_s": round(stamps[0] - started, 2) if stamps else None}


def stream_demo(options: AnimateOptions) -> dict:
    stats = StreamStats()
    run_stream(options, stats=stats)
    return stats.summary()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--source", default="source_lp_d6frame0_256.png")
    p.add_argument("--video", default="drv_lp_d14_audio_256")
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--motions", nargs="+", default=["landmarks", "keypoints"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    report = {"benchmark": "motion_speed", "source": args.source, "video": args.video, "frames": args.frames,
              "size": args.size, "threads": args.threads, "torch": torch.__version__, "file": {}, "stream": {}}
    with tempfile.TemporaryDirectory() as folder:
        base = AnimateOptions(source_image=os.path.join(args.data, args.source),
                              driving_video=os.path.join(args.data, args.video + ".mp4"), max_frames=args.frames,
                              size=args.size, quiet=True, overwrite=True, guide="on")
        for motion in args.motions:  # a warm-up run first, so neither side pays the first load
            run(base.replace(motion=motion, result_video=os.path.join(folder, "warm.mp4"), max_frames=8))
            report["file"][motion] = file_demo(base.replace(motion=motion,
                                                            result_video=os.path.join(folder, f"{motion}.mp4")))
            report["stream"][motion] = stream_demo(base.replace(
                motion=motion, stream=True, result_video=os.path.join(folder, f"{motion}_stream.mp4")))
    if {"landmarks", "keypoints"} <= set(args.motions):
        report["file_speedup"] = round(report["file"]["landmarks"]["frames_per_s"]
                                       / report["file"]["keypoints"]["frames_per_s"], 2)
    report["targets"] = {"file frames/s": ">= 25", "stream frames/s": ">= 20"}
    print_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
