"""Peak memory of demo.py on a short vs a long driving clip: streaming means it should not grow with length.

Makes 10 s and 60 s clips by looping a driving video (default: the shared 30 s sample with audio), runs
the demo CLI on each in a fresh Python process, and prints JSON with the peak RSS of that process and its
resident memory sampled every ``--sample-every`` seconds (ffmpeg runs in separate processes and is not
included), frame counts, fps and wall time.

    python benchmarks/demo_memory.py [--driving ../shared/data/drv_lp_d6_audio_256.mp4] [--seconds 10 60]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DRIVING = REPO.parent / "shared" / "data" / "drv_lp_d6_audio_256.mp4"

CHILD = """
import json, resource, sys, threading, time, torch
torch.set_num_threads({threads})
sys.path.insert(0, {repo!r})
from dagan.inference.cli import main
samples, done = [], threading.Event()

def sample():  # resident memory every {every} s: it must stay flat over the run, not only peak the same
    while not done.wait({every}):
        with open("/proc/self/status") as fh:
            rss = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
        samples.append([round(time.time() - start, 1), round(rss / 1024, 1)])

start = time.time()
threading.Thread(target=sample, daemon=True).start()
code = main({argv!r})
done.set()
print(json.dumps({{"exit_code": code, "wall_s": round(time.time() - start, 1),
                  "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                  "rss_samples_s_mib": samples}}))
"""


def make_clip(ffmpeg: str, src: Path, seconds: float, out: Path) -> None:
    subprocess.run([ffmpeg, "-y", "-v", "error", "-stream_loop", "-1", "-i", str(src), "-t", str(seconds),
                    "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-c:a", "aac", str(out)], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--driving", default=str(DEFAULT_DRIVING))
    parser.add_argument("--seconds", type=float, nargs="+", default=[10, 60])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sample-every", type=float, default=10.0, help="seconds between resident-memory samples")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more demo.py arguments")
    args = parser.parse_args()
    import imageio_ffmpeg

    from dagan.io.video import probe

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for seconds in args.seconds:
            clip = Path(tmp) / f"driving_{seconds:g}s.mp4"
            make_clip(ffmpeg, Path(args.driving), seconds, clip)
            result = Path(tmp) / f"result_{seconds:g}s.mp4"
            argv = ["--driving_video", str(clip), "--result_video", str(result), "--quiet"] + args.extra
            child = CHILD.format(threads=args.threads, repo=str(REPO), argv=argv, every=args.sample_every)
            run = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True)
            if run.returncode != 0:
                raise SystemExit(run.stderr)
            stats = json.loads(run.stdout.strip().splitlines()[-1])
            info, src = probe(result), probe(clip)
            stats.update(clip_seconds=seconds, driving_frames=src["frames"], driving_fps=src["fps"],
                         output_frames=info["frames"], output_fps=info["fps"], output_audio=info["audio_codec"])
            results.append(stats)
    print(json.dumps({"benchmark": "demo_memory", "threads": args.threads, "driving": os.path.basename(args.driving),
                      "runs": results}, indent=2))


if __name__ == "__main__":
    main()
