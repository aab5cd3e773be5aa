"""Train DaGAN: ``python train.py --config CFG [--checkpoint RUN] [--max-steps N] [--out DIR] ...``.

The config's ``task`` says what is trained: ``generator`` (keypoints + generator) or ``depth`` (the face-depth
network); both run in the one training runtime (:mod:`dagan.training.runtime`). Multi-GPU:
``torchrun --nproc_per_node N train.py --config ...``.

``--checkpoint`` is always a training checkpoint (a ``checkpoint.pt`` or the run folder holding it): training
resumes from it exactly (into its own folder unless ``--out`` says otherwise); with ``--export DIR`` its
network is written in deployable form instead (generator: a self-describing ``from_pretrained`` directory;
depth: ``encoder.pth`` + ``depth.pth``), ``--average`` adding more checkpoints of the run to a weight mean.
"""
from __future__ import annotations

import os
import sys
from typing import List, Optional

from dagan.cliutil import DashUnderscoreParser, run_cli, setup_logging


def parser() -> DashUnderscoreParser:
    p = DashUnderscoreParser(description="Train DaGAN (generator or face depth, by the config's task)")
    p.add_argument("--config", required=True, help="YAML config (ours or official format)")
    p.add_argument("--checkpoint", default=None, metavar="CKPT",
                   help="training checkpoint (checkpoint.pt or its run folder) to resume from exactly, or to export")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimiser steps")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--data", default=None, help="dataset root (overrides dataset.root_dir)")
    p.add_argument("--out", default=None, help="run folder (checkpoint.pt, tb/, metrics.jsonl, config.yaml); "
                   "default: the --checkpoint's folder, else runs/<config name>")
    p.add_argument("--num-workers", type=int, default=None, help="data-loader workers (default: config)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--export", default=None, metavar="DIR",
                   help="only write the network of --checkpoint in deployable form into DIR, then exit")
    p.add_argument("--half", action="store_true", help="with --export: store the weights as float16")
    p.add_argument("--average", nargs="+", default=(), metavar="CKPT",
                   help="with --export: export the mean of the weights of --checkpoint and these checkpoints of "
                        "the same run (e.g. the checkpoint-<step>.pt that train.keep_every kept)")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(debug=args.debug)
    import torch

    from dagan.config import load_config
    from dagan.distributed import distributed_env
    from dagan.errors import ConfigError
    from dagan.training import task_class
    from dagan.training.runtime import resolve_checkpoint, run_from_args

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    task = task_class(cfg.task)
    if (args.average or args.half) and not args.export:
        raise ConfigError("--average and --half only apply to --export")
    if args.export:
        if not args.checkpoint:
            raise ConfigError("--export needs --checkpoint (the training checkpoint to export)")
        print(f"wrote {task.export(args.checkpoint, args.export, half=args.half, average=args.average)}")
        return 0
    if args.out is None:
        args.out = os.path.dirname(os.path.abspath(resolve_checkpoint(args.checkpoint))) if args.checkpoint \
            else os.path.join("runs", os.path.splitext(os.path.basename(args.config))[0])
    result = run_from_args(task, cfg, args)
    if distributed_env().is_main:
        print(f"trained {result['step']} steps ({cfg.task}); checkpoint {result['checkpoint']}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
