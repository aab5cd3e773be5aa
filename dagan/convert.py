"""Convert official DaGAN files into the toolkit's own format (and back).

Official -> ours::

    python -m dagan.convert --config vox-adv-256.yaml --checkpoint DaGAN_vox_adv_256.pth.tar \\
        --depth_dir depth/models/weights_19 out/dagan-vox-256

Ours -> official (``checkpoint.pth.tar``, ``config.yaml``, ``encoder.pth`` + ``depth.pth``)::

    python -m dagan.convert --to-official --checkpoint out/dagan-vox-256 official_out/

The result of the first direction loads with ``DaGAN.from_pretrained(out_dir)`` and needs no flags.
"""
from __future__ import annotations

import os
import sys
from typing import List, Optional

import yaml

from .cliutil import DashUnderscoreParser, run_cli, setup_logging
from .errors import CheckpointError, OutputError
from .utils import atomic_torch_save, atomic_write_bytes


def build_parser() -> DashUnderscoreParser:
    p = DashUnderscoreParser(prog="python -m dagan.convert", description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="output directory")
    p.add_argument("--config", help="official-format (or our) config YAML of the official checkpoint")
    p.add_argument("--checkpoint", required=True, help="official checkpoint.pth.tar (or, with --to-official, ours)")
    p.add_argument("--depth_encoder", help="official depth encoder file (encoder.pth)")
    p.add_argument("--depth_decoder", help="official depth decoder file (depth.pth)")
    p.add_argument("--depth_dir", help="folder holding encoder.pth + depth.pth (official weights_19 layout)")
    p.add_argument("--to_official", action="store_true", help="convert our format to the official file set")
    p.add_argument("--safetensors", action="store_true", help="write model.safetensors instead of model.pt")
    p.add_argument("--trust_checkpoint", action="store_true",
                   help="allow pickled Python objects in the input (only for files you trust)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output directory")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(debug=args.debug)
    from .checkpoints import export_official_depth, official_config_dict, official_state
    from .models import DaGAN

    if os.path.isdir(args.out) and os.listdir(args.out) and not args.overwrite:
        raise OutputError(f"output directory {args.out} is not empty (use --overwrite)")
    if args.to_official:
        model = DaGAN.from_pretrained(args.checkpoint, trust_checkpoint=args.trust_checkpoint)
        os.makedirs(args.out, exist_ok=True)
        atomic_torch_save(official_state(model), os.path.join(args.out, "checkpoint.pth.tar"))
        export_official_depth(model, args.out)
        text = yaml.safe_dump(official_config_dict(model.config), sort_keys=False)
        atomic_write_bytes(os.path.join(args.out, "config.yaml"), text.encode("utf-8"))
        print(f"wrote official files to {args.out}")
        return 0
    if not args.config:
        raise CheckpointError("--config is required to convert an official checkpoint (the official YAML)")
    model = DaGAN.from_official(args.config, args.checkpoint, depth_encoder=args.depth_encoder,
                                depth_decoder=args.depth_decoder, depth_dir=args.depth_dir,
                                trust_checkpoint=args.trust_checkpoint)
    model.save_pretrained(args.out, safetensors=args.safetensors)
    print(f"wrote {args.out} (load it with DaGAN.from_pretrained({args.out!r}))")
    return 0


def cli(argv: Optional[List[str]] = None) -> int:
    return run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
