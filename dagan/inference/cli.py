"""``demo.py``: animate a portrait with a driving video and write an mp4 (streaming, audio kept).

With no arguments it runs the embedded default: the scikit-image astronaut driven by a generated
head-motion clip, through the small shipped checkpoint (or a labelled untrained fallback).

This module only parses the arguments into :class:`~dagan.inference.pipeline.AnimateOptions` and maps errors
to one-line messages and exit codes; the work is :func:`dagan.inference.pipeline.run`. Nothing in the package
imports it.
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Callable, List, Optional, Sequence

from ..cliutil import DashUnderscoreParser, run_cli, setup_logging
from ..faces import FACE_BACKENDS, FaceDetector
from ..io.video import check_video_output_extension
from .animator import MOTIONS
from .guide import GUIDE_DETECT_EVERY, GUIDE_MODES, GUIDE_STREAM_DETECT_EVERY
from .landmark_motion import MOUTH_FILLS
from .pipeline import AnimateOptions, run


def build_parser() -> argparse.ArgumentParser:
    p = DashUnderscoreParser(
        prog="demo.py", description="Animate a portrait with a driving video and write an mp4 (streaming, the "
        "driving audio is kept). With no arguments: the built-in astronaut demo. Every option accepts dashes or "
        "underscores (--source-image = --source_image).")
    g = p.add_argument_group("model")
    g.add_argument("--config", help="official-format (or our) config YAML; use with --checkpoint for official weights")
    g.add_argument("--checkpoint", help="official checkpoint.pth.tar (with --config), or our format: a folder "
                   "from save_pretrained or a .pt file (config included). Default: the shipped small model")
    g.add_argument("--depth_checkpoint", nargs="+", metavar="PATH",
                   help="face-depth weights: a folder (encoder.pth + depth.pth) or two files ENCODER DECODER; "
                   "default: looked for next to --checkpoint")
    g.add_argument("--trust_checkpoint", action="store_true",
                   help="allow checkpoints that hold arbitrary Python objects (only for files you trust)")
    g = p.add_argument_group("inputs and outputs")
    g.add_argument("--source_image", help="portrait to animate (PNG/JPEG/WebP/...); default: the astronaut")
    g.add_argument("--driving_video", help="driving video (any size/fps/pixel format); default: a generated "
                   "head-motion clip of the astronaut")
    g.add_argument("--result_video", help="output video (default: result.mp4)")
    g.add_argument("--overwrite", action="store_true", help="replace existing output files")
    g.add_argument("--save_depth", metavar="PATH", help="also write the driving depth: .mp4 (colour map) or .npz "
                   "(raw float16, key 'depth' (T, H, W)), aligned frame for frame")
    g.add_argument("--side_by_side", action="store_true", help="write source | driving | driving depth | result")
    g.add_argument("--max_frames", type=int, help="animate at most this many driving frames")
    g.add_argument("--size", type=int,
                   help="side of the output video in pixels (default: 256; the network may run smaller: the source "
                   "is warped at this size). With --paste-back the face is rendered at the crop's full resolution")
    g = p.add_argument_group("motion")
    mode = g.add_mutually_exclusive_group()
    mode.add_argument("--relative", dest="relative", action="store_true",
                      help="relative keypoint motion (default)")
    mode.add_argument("--absolute", dest="relative", action="store_false", help="absolute driving keypoints")
    scale = g.add_mutually_exclusive_group()
    scale.add_argument("--adapt_scale", dest="adapt_scale", action="store_true",
                       help="scale relative motion by the keypoint hull areas (default on)")
    scale.add_argument("--no_adapt_scale", dest="adapt_scale", action="store_false")
    best = g.add_mutually_exclusive_group()
    best.add_argument("--find_best_frame", action="store_true",
                      help="anchor relative motion at the driving frame whose face landmarks best match the "
                      "source (face backend, see --face_backend)")
    best.add_argument("--best_frame", type=int, metavar="N", help="anchor relative motion at driving frame N")
    g.add_argument("--motion", choices=MOTIONS,
                   help="what moves the portrait. landmarks: the driving face's 68 landmarks and the portrait's "
                   "depth warp the portrait at the output size (head turns, mouth, blinks; no network per frame); "
                   "keypoints: the model's keypoints and generator (the official path); auto (default): landmarks "
                   "when a face backend is installed and the portrait has a face. Relative motion only")
    g.add_argument("--mouth_fill", choices=MOUTH_FILLS,
                   help="with --motion landmarks: what shows inside an opening mouth. driver (default): the "
                   "driver's own mouth interior (teeth, tongue; they are the driver's), colour-matched; dark: a "
                   "shaded cavity (no identity leak); none: the stretched lips alone")
    g.add_argument("--guide", choices=GUIDE_MODES,
                   help="face-guided head motion: the driving face's landmarks (face backend) set the head's "
                   "scale, turn and position, the keypoints the rest. auto (default): on when a face backend is "
                   "installed; on: required; off: keypoints only (the official behaviour). Relative motion only")
    g.add_argument("--mouth_gain", type=float, metavar="G",
                   help="with the guide: multiply the lower lip and jaw's own motion by G (> 1 opens the mouth "
                   "wider than the model alone does; default 1). For models with keypoints on landmarks, such as "
                   "the shipped one")
    g.add_argument("--guide_detect_every", type=int, metavar="N",
                   help="with the guide: detect the driving face on every N-th frame and track its landmarks in "
                   f"between (faster, a little less exact; default {GUIDE_DETECT_EVERY}, with --stream "
                   f"{GUIDE_STREAM_DETECT_EVERY})")
    g.add_argument("--smooth", nargs="?", type=float, const=1.0, metavar="MIN_CUTOFF",
                   help="smooth the driving keypoints over time (One-Euro filter; off by default). The value is the "
                   "cut-off at rest in Hz: lower = smoother, more lag (default when given: 1.0)")
    g.add_argument("--smooth_beta", type=float,
                   help="with --smooth: how fast the cut-off rises with keypoint speed (higher = less lag; default 1.0)")
    g = p.add_argument_group("faces")
    crop = g.add_mutually_exclusive_group()
    crop.add_argument("--crop", dest="crop", action="store_true",
                      help="detect and crop the face in the source and every driving frame (face backend; "
                      "full-size photos are detected on a downscaled copy and cropped at full resolution)")
    crop.add_argument("--no_crop", dest="crop", action="store_false", help="use whole frames (default)")
    g.add_argument("--paste_back", action="store_true",
                   help="blend the animated face back into the full-resolution source image")
    g.add_argument("--face_backend", choices=FACE_BACKENDS,
                   help="auto (default: dlib when installed, offline), dlib, or face-alignment (needs its weights)")
    g.add_argument("--face_index", metavar="N|largest",
                   help="which face of a source photo with several: largest (default) or N counted from the left "
                   "(0 = leftmost)")
    g.add_argument("--margin", type=float, help="crop side / face size (default: 1.8)")
    g.add_argument("--detect_every", type=int, help="run the face detector every N driving frames (default: 1)")
    g.add_argument("--smoothing", type=float,
                   help="driving crop box smoothing: weight of each new detection in (0, 1] (default: 0.2)")
    g = p.add_argument_group("runtime")
    g.add_argument("--device", help="auto (default), cpu, cuda, cuda:N or mps")
    g.add_argument("--cpu", action="store_true", help="same as --device cpu (official flag)")
    g.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"],
                   help="precision of the network's conv bodies (always on the fast path, see dagan.fast): auto "
                   "(default: bfloat16 on CPUs with AVX-512 BF16/AMX, float16 on CUDA, else float32), or one of them")
    g.add_argument("--batch_size", type=int,
                   help="driving frames per forward pass (default: 4 for networks up to 128 px, 1 above: "
                   "at 256 px a batch of 4 costs ~160 MiB more and is no faster on a CPU)")
    g.add_argument("--seed", type=int, help="seed of the generated default driving clip")
    g.add_argument("--quiet", action="store_true", help="no progress bar or info lines")
    g.add_argument("--debug", action="store_true", help="show tracebacks")
    g = p.add_argument_group("realtime streaming")
    g.add_argument("--stream", action="store_true", help="realtime mode: --driving_video may be a camera (0, /dev/videoN) "
         "or a file played at its fps; late frames are dropped (see dagan.inference.pipeline)")
    g.add_argument("--latency_budget_ms", type=float,
         help="with --stream: drop a frame that waited longer than this (0: never; default: 200)")
    # the defaults are AnimateOptions' own, so a form or script that fills the dataclass gets demo.py's defaults
    p.set_defaults(**vars(AnimateOptions()))
    return p


def options_from_args(args: argparse.Namespace) -> AnimateOptions:
    """The :class:`AnimateOptions` of parsed :func:`build_parser` arguments (``--cpu`` = ``--device cpu``)."""
    names = {field.name for field in dataclasses.fields(AnimateOptions)}
    options = AnimateOptions(**{name: value for name, value in vars(args).items() if name in names})
    return options.replace(device="cpu") if args.cpu else options


def main(argv: Optional[Sequence[str]] = None, detector_factory: Optional[Callable[[], FaceDetector]] = None) -> int:
    """Entry point of ``demo.py``: returns the exit code (0, or 2 with one line on a user mistake)."""

    def _main(args_list: List[str]) -> int:
        args = build_parser().parse_args(args_list)
        setup_logging(quiet=args.quiet, debug=args.debug)
        check_video_output_extension(args.result_video, "--result_video")
        run(options_from_args(args), detector_factory)
        return 0

    return run_cli(_main, argv)
