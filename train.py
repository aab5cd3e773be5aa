"""Train DaGAN: ``python train.py --config configs/tiny-cpu.yaml [--checkpoint run/checkpoint.pt]
[--max-steps N] [--device auto] [--data ROOT] [--out DIR] [--debug]``.

``task: generator`` in the config trains keypoints + generator (:mod:`dagan.training.trainer`);
``task: depth`` trains the face-depth network (:mod:`dagan.training.depth_trainer`). Multi-GPU:
``torchrun --nproc_per_node N train.py --config ...``.
"""
from __future__ import annotations

import os
import sys
from typing import List, Optional

from dagan.cliutil import DashUnderscoreParser, run_cli, setup_logging


def parser() -> DashUnderscoreParser:
    p = DashUnderscoreParser(description="Train DaGAN (generator or face depth, by the config's task)")
    p.add_argument("--config", required=True, help="YAML config (ours or official format)")
    p.add_argument("--checkpoint", default=None, help="training checkpoint to resume from exactly")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimiser steps")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--data", default=None, help="dataset root (overrides dataset.root_dir)")
    p.add_argument("--out", default=None, help="run folder (checkpoint.pt, tb/, metrics.jsonl); "
                   "default runs/<config name>")
    p.add_argument("--num-workers", type=int, default=None, help="data-loader workers (default: config)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--export", default=None, metavar="DIR",
                   help="only write the model of --checkpoint as a from_pretrained directory DIR, then exit")
    p.add_argument("--half", action="store_true", help="with --export: store the weights as float16")
    p.add_argument("--average", nargs="+", default=(), metavar="CKPT",
                   help="with --export: export the mean of the weights of --checkpoint and these checkpoints "
                        "(same config; e.g. the last saves of a low-learning-rate phase)")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(debug=args.debug)
    import torch

    from dagan.config import load_config
    from dagan.errors import ConfigError

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    cfg.provenance = {}  # a config exported with a model may start a run; the run is not that model
    if args.average and not args.export:
        raise ConfigError("--average only applies to --export")
    if args.export:
        if not args.checkpoint:
            raise ConfigError("--export needs --checkpoint (the training checkpoint to export)")
        from dagan.training.trainer import export_pretrained

        print(f"wrote {export_pretrained(args.checkpoint, args.export, half=args.half, average=args.average)}")
        return 0
    if args.out is None:
        args.out = os.path.join("runs", os.path.splitext(os.path.basename(args.config))[0])
    if cfg.task == "generator":
        from dagan.training.trainer import main as train_generator

        result = train_generator(cfg, args)
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"trained {result['step']} steps; checkpoint {result['checkpoint']}")
        return 0
    if cfg.task == "depth":
        try:
            from dagan.training.depth_trainer import main as train_depth
        except ImportError as exc:
            raise ConfigError(f"task 'depth' needs dagan.training.depth_trainer, which cannot be imported ({exc})")
        # the depth trainer resumes from the checkpoint in its run folder
        if args.checkpoint:
            args.out = os.path.dirname(os.path.abspath(args.checkpoint)) if os.path.isfile(args.checkpoint) \
                else args.checkpoint
        args.resume = bool(args.checkpoint)
        result = train_depth(cfg, args)
        print(f"depth training: {result.get('step')} steps; run folder {result.get('out_dir', args.out)}")
        return 0
    raise ConfigError(f"config key 'task': unknown task {cfg.task!r}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
