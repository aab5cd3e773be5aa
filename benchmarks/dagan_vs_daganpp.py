"""DaGAN vs DaGAN++ at an equal tiny budget: train both the same number of steps on the same clips with the
same seed, then score held-out reconstruction side by side. Prints JSON.

The two configs (``configs/tiny-cpu.yaml`` and ``configs/daganpp-tiny.yaml``) share data, split, depth
network, keypoint detector, discriminator, losses and schedule; only ``model.type``/``model.generator``
differ (the script lists any other difference it finds in ``config_differences``). Both runs use the
generator trainer (:func:`dagan.training.trainer.train`) and the evaluation protocol of
:mod:`dagan.evaluation.evaluate` (reconstruction: every held-out video driven by itself from frame 0).
Metrics that need downloaded weights (LPIPS, AKD, AED) are skipped when the weights are absent.

At this scale (64 px, minutes of CPU) the difference between the two is likely noise: see the
``repeat_source`` baseline (output = source frame) for what "no learning" scores.

Usage::

    python benchmarks/dagan_vs_daganpp.py --steps 100 --out runs/dagan_vs_daganpp
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dagan import DaGAN, load_config  # noqa: E402
from dagan.config import config_to_dict  # noqa: E402
from dagan.utils import atomic_write_bytes, count_parameters  # noqa: E402

CONFIGS = {"dagan": REPO / "configs" / "tiny-cpu.yaml", "daganpp": REPO / "configs" / "daganpp-tiny.yaml"}
MODEL_ONLY = ("type", "generator")  # the keys that are meant to differ (under model)


def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def config_differences(a, b):
    """Keys (dotted) whose values differ between two configs, except ``model.type``/``model.generator``."""
    fa, fb = _flatten(config_to_dict(a)), _flatten(config_to_dict(b))
    skip = tuple(f"model.{k}" for k in MODEL_ONLY)
    return {k: [fa.get(k), fb.get(k)] for k in sorted(set(fa) | set(fb))
            if not k.startswith(skip) and fa.get(k) != fb.get(k)}


def held_out_folder(data: Path, names, tmp: str) -> Path:
    """A folder of links to the held-out videos (the evaluation reads every video of a folder)."""
    folder = Path(tmp) / "test"
    folder.mkdir()
    for path in sorted(data.iterdir()):
        if path.stem in names:
            os.symlink(path.resolve(), folder / path.name)
    if not any(folder.iterdir()):
        raise SystemExit(f"none of the held-out videos {sorted(names)} is in {data}")
    return folder


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="optimiser steps per model")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="clips folder")
    parser.add_argument("--out", default=str(REPO / "runs" / "dagan_vs_daganpp"), help="run folders + result")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=None, help="override train.batch_size (both)")
    parser.add_argument("--max-frames", type=int, default=None, help="evaluate at most this many frames/video")
    parser.add_argument("--reuse", action="store_true", help="evaluate existing checkpoints in --out, no training")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from dagan.evaluation.evaluate import EvalSettings, run_evaluation
    from dagan.training.datasets import build_dataset
    from dagan.training.trainer import train

    configs = {name: load_config(path) for name, path in CONFIGS.items()}
    for cfg in configs.values():
        cfg.train.seed = args.seed
        if args.batch_size:
            cfg.train.batch_size = args.batch_size
        cfg.train.save_every = max(args.steps, 1)
        cfg.train.image_every = max(args.steps, 1)
    data = Path(args.data)
    report = {"steps": args.steps, "seed": args.seed, "device": args.device, "threads": args.threads,
              "configs": {n: str(p.relative_to(REPO)) for n, p in CONFIGS.items()},
              "config_differences": config_differences(configs["dagan"], configs["daganpp"]), "train": {}}
    models = {}
    for name, cfg in configs.items():
        out_dir = Path(args.out) / name
        if not args.reuse:
            dataset = build_dataset(cfg.dataset, "train", seed=cfg.train.seed, root=data)
            start = time.time()
            result = train(cfg, dataset, out_dir, device=args.device, max_steps=args.steps, progress=False)
            report["train"][name] = {"seconds": round(time.time() - start, 1), "step": result["step"],
                                     "last_losses": {k: round(float(v), 5) for k, v in result["losses"].items()}}
        models[name] = DaGAN.from_pretrained(out_dir / "checkpoint.pt")
        report["train"].setdefault(name, {})["parameters"] = {
            "total": count_parameters(models[name]), "generator": count_parameters(models[name].generator)}

    held_out = set(configs["dagan"].dataset.test_videos)
    with tempfile.TemporaryDirectory() as tmp:
        folder = held_out_folder(data, held_out, tmp)
        settings = EvalSettings(protocol="reconstruction", max_frames=args.max_frames, seed=args.seed)
        evaluation = run_evaluation(models, folder, settings, device=args.device)
    report["held_out_videos"] = sorted(held_out)
    report["frames"] = evaluation["frames"]
    report["metrics_status"] = evaluation["metrics"]
    report["overall"] = evaluation["overall"]
    text = json.dumps(report, indent=2)
    atomic_write_bytes(Path(args.out) / "dagan_vs_daganpp.json", text.encode("utf-8"))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
