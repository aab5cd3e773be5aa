"""Evaluate checkpoints with the papers' metrics and write a report.

Reconstruction (same identity: frame 0 of each test video is animated by all of its frames)::

    python -m dagan.evaluate --checkpoint checkpoints/dagan-small --data vox/test --out report/

Official DaGAN pair list, a second checkpoint side by side, 2 processes::

    torchrun --nproc_per_node 2 -m dagan.evaluate --checkpoint A --checkpoint-b B --data vox \\
        --pairs vox_evaluation.csv --out report/

Cross-identity motion report (every portrait animated by every clip, face metrics with the offline dlib
backend)::

    python -m dagan.evaluate --checkpoint checkpoints/dagan-small --data ../shared/data --protocol cross-identity \
        --videos drv_lp_d9_audio_256 --sources a.png b.png --out report/

Writes ``metrics.json``, ``metrics.csv``, ``frames.csv``, ``metrics.png`` and ``worst_videos.png`` (see
:mod:`dagan.evaluation.report`). LPIPS, AKD and AED/CSIM need third-party weights on disk; without them they
are listed as skipped with the reason; the face metrics (AKD, AED, CSIM and the cross-identity motion report)
use the offline dlib backend (``dlib-bin`` + ``face_recognition_models``, part of the install).
"""
from __future__ import annotations

import os
from typing import List, Optional

from .cliutil import DashUnderscoreParser, run_cli, setup_logging
from .errors import InputError
from .inference.animator import MOTIONS
from .inference.guide import GUIDE_MODES
from .inference.landmark_motion import DEFAULT_MOUTH_FILL, MOUTH_FILLS


def build_parser() -> DashUnderscoreParser:
    p = DashUnderscoreParser(prog="python -m dagan.evaluate",
                             description="Evaluate DaGAN checkpoints (L1, PSNR, SSIM, LPIPS, AKD, AED, CSIM).")
    p.add_argument("--checkpoint", required=True,
                   help="our format (directory or .pt, training checkpoints included) or, with --config, an "
                        "official checkpoint.pth.tar")
    p.add_argument("--config", help="official-format config YAML of an official --checkpoint")
    p.add_argument("--depth_dir", help="official depth weights folder (encoder.pth + depth.pth) for --config")
    p.add_argument("--checkpoint_b", help="a second checkpoint evaluated side by side on the same frames")
    p.add_argument("--config_b", help="official config of --checkpoint-b")
    p.add_argument("--depth_dir_b", help="official depth weights folder of --checkpoint-b")
    p.add_argument("--data", required=True, help="folder of test videos (root/test, or a root holding test/)")
    p.add_argument("--protocol", choices=("reconstruction", "cross-identity"), default="reconstruction")
    p.add_argument("--pairs", help="official pair list CSV (source,driving frame paths; the part after test/ "
                                   "is looked up under --data)")
    p.add_argument("--videos", nargs="+", metavar="NAME",
                   help="only these videos of --data (file or folder names, extension optional)")
    p.add_argument("--sources", nargs="+", metavar="IMAGE",
                   help="cross-identity: animate each of these portraits by every video (default: each video's "
                        "frame 0 is driven by the next video)")
    p.add_argument("--size", type=int, metavar="N",
                   help="read, render and score frames at N px (the models run at their own size and render at N, "
                        "as demo.py --size does; default: the models' size)")
    p.add_argument("--out", default="report", help="report folder (default: report/)")
    p.add_argument("--max_videos", type=int, help="evaluate only the first N videos (pair groups)")
    p.add_argument("--max_frames", type=int, help="use at most N frames of each video")
    p.add_argument("--batch_size", type=int, default=16, help="driving frames per forward pass (default 16)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ssim_data_range", type=float, default=1.0,
                   help="SSIM data range (1.0 for [0, 1] frames; 2.0 reproduces the old skimage default the "
                        "papers' scripts used)")
    p.add_argument("--exclude_source_frame", action="store_true",
                   help="reconstruction: leave frame 0 (the source itself) out of the means; the papers keep it")
    p.add_argument("--skip_bad_videos", action="store_true",
                   help="list unreadable or truncated videos in the report instead of stopping with an error")
    p.add_argument("--no_quantize", action="store_true",
                   help="score float outputs (default: rounded down to 8 bits as the papers' saved frames)")
    p.add_argument("--lpips", choices=("auto", "off"), default="auto",
                   help="auto: use the lpips package when it and its AlexNet weights are installed")
    p.add_argument("--lpips_legacy_range", action="store_true",
                   help="feed LPIPS [0, 1] images as the DaGAN authors' script did (default: [-1, 1])")
    p.add_argument("--landmarks", choices=("auto", "off"), default="auto",
                   help="auto: AKD and the cross-identity face report with the face backend")
    p.add_argument("--face_backend", choices=("auto", "dlib", "face-alignment"), default="auto",
                   help="auto (default): dlib when installed (offline), else face-alignment when its weights are in "
                        "$TORCH_HOME/hub/checkpoints")
    p.add_argument("--identity_model", default="auto",
                   help="identity embedding for AED/CSIM: auto (default: the dlib face embedding), off, or a file: "
                        "an ArcFace-style .onnx (onnxruntime) or TorchScript")
    p.add_argument("--guide", choices=GUIDE_MODES, default="auto",
                   help="face-guided head motion, as demo.py --guide: auto (default: on when a face backend "
                        "is installed), on, or off (keypoints only, the official behaviour)")
    p.add_argument("--mouth_gain", type=float, default=1.0,
                   help="with the guide, as demo.py --mouth_gain (default 1)")
    p.add_argument("--motion", choices=MOTIONS, default="auto",
                   help="what moves the portrait, as demo.py --motion: auto (default: the landmark stage when a face "
                        "backend is installed and the portrait has a face), landmarks, or keypoints (the model's)")
    p.add_argument("--mouth_fill", choices=MOUTH_FILLS, default=DEFAULT_MOUTH_FILL,
                   help=f"with the landmark stage, as demo.py --mouth_fill (default {DEFAULT_MOUTH_FILL})")
    p.add_argument("--still_frames", type=int, default=20, metavar="N",
                   help="cross-identity still-driver check: drive each source by N copies of itself and report the "
                        "result's sharpness (still_sharpness; 0 = no check; default 20)")
    p.add_argument("--no_baseline", action="store_true", help="leave out the repeat-source baseline")
    p.add_argument("--no_figures", action="store_true", help="write JSON/CSV only")
    p.add_argument("--save_frames", action="store_true",
                   help="also save every generated frame as 8-bit PNG under <out>/frames/<system>/<video>/")
    p.add_argument("--trust_checkpoint", action="store_true",
                   help="allow pickled Python objects in checkpoints (only for files you trust)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, errors only")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _load(checkpoint: str, config: Optional[str], depth_dir: Optional[str], trust: bool):
    from .inference.loading import load_model

    return load_model(checkpoint, config, {"depth_dir": depth_dir} if depth_dir else None, trust)[0]


def _system_name(path: str, taken: List[str]) -> str:
    base = os.path.basename(os.path.normpath(path))
    for ext in (".pth.tar", ".pt", ".pth", ".tar"):
        if base.endswith(ext):
            base = base[:-len(ext)]
            break
    name = base or "model"
    k = 2
    while name in taken or name == "repeat_source":
        name, k = f"{base}_{k}", k + 1
    return name


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(quiet=args.quiet, debug=args.debug)
    import torch

    from .distributed import distributed_env
    from .evaluation.evaluate import EvalSettings, build_metric_suite, run_evaluation
    from .evaluation.report import write_report
    from .inference.loading import resolve_runtime

    if args.config_b and not args.checkpoint_b:
        raise InputError("--config-b needs --checkpoint-b")
    settings = EvalSettings(protocol=args.protocol, batch_size=args.batch_size,
                            ssim_data_range=args.ssim_data_range, quantize=not args.no_quantize,
                            lpips_legacy_range=args.lpips_legacy_range, max_videos=args.max_videos,
                            max_frames=args.max_frames, seed=args.seed,
                            exclude_source_frame=args.exclude_source_frame, skip_bad_videos=args.skip_bad_videos,
                            sources=args.sources, videos=args.videos, output_size=args.size, guide=args.guide,
                            mouth_gain=args.mouth_gain, motion=args.motion, mouth_fill=args.mouth_fill,
                            still_frames=args.still_frames)
    env = distributed_env()
    world, local = env.world, env.local_rank
    device, _ = resolve_runtime(args.device, "float32")  # scores of the float32 computation
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local)
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo")  # only Python objects travel: gloo works for CPU and GPU runs
    try:
        models, sources = {}, {}
        for ckpt, cfg, depth in ((args.checkpoint, args.config, args.depth_dir),
                                 (args.checkpoint_b, args.config_b, args.depth_dir_b)):
            if ckpt is None:
                continue
            name = _system_name(ckpt, list(models))
            models[name] = _load(ckpt, cfg, depth, args.trust_checkpoint)
            sources[name] = {"kind": "model", "checkpoint": os.path.abspath(ckpt),
                             "format": "official" if cfg else "dagan"}
        suite = build_metric_suite(settings.protocol, settings, device,
                                   lpips="auto" if args.lpips == "auto" else "off",
                                   landmarks="auto" if args.landmarks == "auto" else "off",
                                   identity=args.identity_model, face_backend=args.face_backend)
        report = run_evaluation(models, args.data, settings, pairs=args.pairs, baseline=not args.no_baseline,
                                suite=suite, device=device, progress=not args.quiet, sources=sources,
                                frames_dir=os.path.join(args.out, "frames") if args.save_frames else None)
        if report is not None:
            paths = write_report(report, args.out, figures=not args.no_figures)
            if not args.quiet:
                _print_summary(report, paths["metrics.json"])
    finally:
        if world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
    return 0


FM_NOTE = "dlib values are not comparable with the papers' FAN/OpenFace values"


#: short column names of the per-video table
_SHORT = {"face_detected": "detect", "id_dist_source": "id_src", "id_match_source": "id<0.6", "id_dist_driving": "id_drv",
          "motion_error": "motion", "motion_ratio": "mot/frz", "scale_drift": "drift", "mouth_corr": "mouth_r",
          "mouth_amp": "mouth_a", "eye_corr": "eye_r",
          "sharpness": "sharp", "still_sharpness": "still", "akd_motion": "akd_mot"}


def _cell(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def _print_summary(report: dict, where: str) -> None:
    systems = list(report["overall"])
    names = list(next(iter(report["overall"].values())))
    print(f"{report['protocol']}: {report['items']} items, {report['frames']} frames (frame-pooled means)")
    print("metric".ljust(18) + "".join(s[:15].rjust(16) for s in systems) + "   backend")
    for m in names:
        info = report["metrics"].get(m, {})
        cells = [report["overall"][s][m]["frame_mean"] for s in systems]
        print(m.ljust(18) + "".join(_cell(v).rjust(16) for v in cells) + "   " + str(info.get("backend", "")))
    if len(report["videos"]) > 1:
        print("per video / pair:")
        print("video".ljust(34) + "system".ljust(16) + "".join(_SHORT.get(m, m)[:8].rjust(9) for m in names))
        for row in report["videos"]:
            for s in systems:
                print(row["video"][:33].ljust(34) + s[:15].ljust(16)
                      + "".join(_cell(row["metrics"][s].get(m)).rjust(9) for m in names))
    for bad in report["skipped_items"]:
        print(f"skipped {bad['item']}: {bad['error']}")
    if any(info.get("backend") == "dlib" for info in report["metrics"].values()):
        print(f"face metrics by the dlib backend: {FM_NOTE}")
    for m, info in report["metrics"].items():
        if info["status"] != "ok":
            print(f"{m}: {info['status']}")
    print(f"report: {os.path.dirname(where)}")


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
