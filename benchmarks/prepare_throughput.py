"""Throughput of ``python -m dagan.prepare`` on 720p raw video: source frames per second, all work included
(decoding twice, face detection and tracking, identity checks, cropping, H.264 encoding, metadata).

The raw videos are synthetic: shared 256 px face clips pasted off-centre into 720x1280 frames
(:func:`dagan.prepare.synthetic.composite_video`), made before the clock starts. The shared machine's load is
reported next to each timing (the 1-minute load average before and after; it counts this run's own processes too),
with the CPU time of the workers and their ffmpeg processes. ``--repeat`` runs it several times (the median is
reported too). Prints JSON; ``--out`` also writes it.

    python benchmarks/prepare_throughput.py --workers 2 --out benchmarks/results/prepare_throughput_720p_2workers.json
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import print_report  # noqa: E402

from dagan.prepare import PrepareOptions, prepare_dataset  # noqa: E402
from dagan.prepare.synthetic import composite_video  # noqa: E402

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data")
#: shared clip (frames: 200, 373, 447, 750) and where its top-left corner goes in the 720x1280 frame
CLIPS = (("drv_lp_d13_256.mp4", (400, 760)), ("drv_lp_d10_audio_256.mp4", (60, 200)),
         ("drv_lp_d14_audio_256.mp4", (300, 90)), ("drv_lp_d6_audio_256.mp4", (440, 980)))


def _timed_run(raw: str, out: str, workers: int) -> dict:
    load_before = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    summary = prepare_dataset(raw, out, PrepareOptions(), workers=workers, progress=False)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"videos": summary.videos, "source_frames": summary.frames, "clips": summary.clips,
            "seconds": round(seconds, 2), "source_frames_per_second": round(summary.frames / seconds, 1),
            "worker_and_ffmpeg_cpu_seconds": round(cpu, 1),
            "load_average_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=SHARED, help="folder of the shared sample clips")
    p.add_argument("--frames", type=int, default=300,
                   help="frames per raw video at most (one video per shared clip, 4 videos; d13 has 200)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeat", type=int, default=1, help="timed runs on the same raw videos")
    p.add_argument("--out", default=None, help="also write the JSON report here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        raw = os.path.join(folder, "raw")
        for seed, (clip, corner) in enumerate(CLIPS):
            composite_video([os.path.join(args.data, clip)], os.path.join(raw, f"person{seed}.mp4"), corner=corner,
                            frames=args.frames, seed=seed)
        runs = [_timed_run(raw, os.path.join(folder, f"out{n}"), args.workers) for n in range(args.repeat)]
    rates = sorted(r["source_frames_per_second"] for r in runs)
    print_report({
        "what": "python -m dagan.prepare on synthetic 720x1280 raw videos (shared 256 px clips pasted off-centre)",
        "videos": runs[0]["videos"], "source_frames": runs[0]["source_frames"], "clips": runs[0]["clips"],
        "workers": args.workers, "median_source_frames_per_second": rates[len(rates) // 2], "runs": runs,
        "cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
    }, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
