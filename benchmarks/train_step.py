"""Training step time of the official-size DaGAN (configs/dagan-vox-256.yaml), fp32 vs bf16 autocast.

Runs the real trainer (``dagan.training.trainer.train``) on synthetic 256x256 pairs for a few steps and
reports the wall time per optimiser step (generator + keypoints + discriminator, all official losses; the
VGG19 of the perceptual loss has random weights here, which costs the same as the real ones). The first
step is warm-up and not counted unless ``--steps 0``. With one thread, the process CPU time is a
load-independent cross-check of the wall time on a shared machine. Prints JSON.

    python benchmarks/train_step.py --steps 3 --batch 2 --threads 2
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dagan.config import load_config  # noqa: E402
from dagan.training.losses import Vgg19Features  # noqa: E402
from dagan.training.trainer import train  # noqa: E402


class SyntheticPairs(torch.utils.data.Dataset):
    def __init__(self, size: int):
        self.size = size

    def __len__(self):
        return 1000

    def __getitem__(self, n):
        g = torch.Generator().manual_seed(int(n))
        base = F.interpolate(torch.rand(1, 3, 16, 16, generator=g), size=(self.size, self.size), mode="bilinear",
                             align_corners=False)[0]
        return {"source": base, "driving": torch.roll(base, (3, -2), (1, 2)), "skipped": torch.tensor(0)}


def measure(config: str, batch: int, steps: int, amp: bool, device: str) -> dict:
    cfg = load_config(config)
    cfg.train.batch_size = batch
    cfg.train.amp = amp
    cfg.train.log_every = 1
    cfg.train.image_every = 10 ** 9
    cfg.train.save_every = 10 ** 9
    vgg = Vgg19Features(load=False)
    with tempfile.TemporaryDirectory() as out:
        cpu0 = time.process_time()
        train(cfg, SyntheticPairs(cfg.model.image_size), out, device=device, max_steps=steps + 1, progress=False,
              vgg=vgg)
        cpu = time.process_time() - cpu0
        times = [0.0] + [json.loads(line)["time"] for line in open(os.path.join(out, "metrics.jsonl"))]
    per_step = [b - a for a, b in zip(times[:-1], times[1:])]
    timed = per_step[1:] or per_step  # --steps 0: only the first (cold) step
    return {"amp": "bf16" if amp else "fp32", "batch": batch, "steps_run": len(per_step),
            "seconds_per_step": round(sum(timed) / len(timed), 2), "per_step_wall": [round(t, 2) for t in per_step],
            "process_cpu_seconds_total": round(cpu, 1), "first_step_cold": len(per_step) == 1}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=os.path.join(os.path.dirname(__file__), "..", "configs", "dagan-vox-256.yaml"))
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=3,
                   help="timed steps after one warm-up step (0: time only the first, cold step)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--only", choices=("fp32", "bf16"), default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    runs = [amp for amp in (False, True) if args.only is None or args.only == ("bf16" if amp else "fp32")]
    results = [measure(args.config, args.batch, args.steps, amp, args.device) for amp in runs]
    print(json.dumps({"config": os.path.basename(args.config), "device": args.device, "threads": args.threads,
                      "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
                      "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
