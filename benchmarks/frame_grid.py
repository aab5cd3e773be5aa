"""A frame grid of a model, to look at: one row per (portrait, driving clip, frame) with
source | driving | driving depth | result (``--columns`` picks and orders them), at the output size, as
``demo.py`` renders it (relative motion, adapt-scale, face-guided when a face backend loads, anchored at the
first driving frame).

    python benchmarks/frame_grid.py --model checkpoints/dagan-small --data ../shared/data \\
        --sources source_astronaut_256.png source_lp_d10frame0_256.png --videos drv_lp_d9_audio_256 \\
        --frames 40 120 --size 256 --out docs/dagan-small-grid.png

``--frames`` takes frame numbers or the names ``mouth`` (the driver's widest mouth), ``blink`` (its smallest
eye opening) and ``turn`` (its largest head turn from the first frame), found with the face backend's
landmarks on every frame of the clip. ``--motion`` picks what moves the portrait, as ``demo.py --motion``.

``--out`` ending in ``.jpg`` writes a JPEG (``--quality``, default 85): small enough for a README.

Prints JSON naming the rows and the output file.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dagan import Animator, DaGAN  # noqa: E402
from dagan.io.images import fit_frames, read_image, resize_image, tensor_to_images  # noqa: E402
from dagan.faces import load_face_backend  # noqa: E402
from dagan.evaluation.face_metrics import eye_opening, interocular, mouth_opening  # noqa: E402
from dagan.faces import select_face  # noqa: E402
from dagan.inference.animator import MOTIONS  # noqa: E402
from dagan.inference.guide import GUIDE_MODES, resolve_guide  # noqa: E402
from dagan.inference.landmark_motion import DEFAULT_MOUTH_FILL, MOUTH_FILLS  # noqa: E402
from dagan.io.video import read_video  # noqa: E402


def depth_tile(depth: torch.Tensor, size: int) -> np.ndarray:
    """``(1, 1, h, w)`` disparity -> ``(size, size, 3)`` uint8 grey (near = bright), normalised per frame."""
    d = torch.nn.functional.interpolate(depth.float(), size=(size, size), mode="bilinear", align_corners=False)
    d = (d - d.amin()) / (d.amax() - d.amin() + 1e-8)
    return tensor_to_images(d.repeat(1, 3, 1, 1))[0]


COLUMNS = ("source", "driving", "depth", "result")
#: frames named by what the driver does (see the module docstring)
NAMED_FRAMES = ("mouth", "blink", "turn")


def pick_frames(frames, clip, detector):
    """``frames``: ints or :data:`NAMED_FRAMES` -> frame numbers of ``clip`` (a list of ``(H, W, 3)`` uint8)."""
    if all(not isinstance(f, str) or f.isdigit() for f in frames):
        return [int(f) for f in frames]
    faces = [select_face(detector.detect(image, landmarks=True)) for image in clip]
    points = [None if f is None else f.landmarks for f in faces]
    first = next(p for p in points if p is not None)

    def turn(p):  # the nose tip's sideways shift between the face's sides, in inter-ocular distances
        return (p[30, 0] - 0.5 * (p[0, 0] + p[16, 0])) / interocular(p)

    scores = {"mouth": lambda p: mouth_opening(p), "blink": lambda p: -eye_opening(p),
              "turn": lambda p: abs(turn(p) - turn(first))}
    out = []
    for f in frames:
        if isinstance(f, str) and not f.isdigit():
            values = [-np.inf if p is None else scores[f](p) for p in points]
            out.append(int(np.argmax(values)))
        else:
            out.append(int(f))
    return out


def grid_rows(model: DaGAN, data: str, sources, videos, frames, size: int, guide=None, mouth_gain: float = 1.0,
              columns=COLUMNS, motion: str = "keypoints", mouth_fill: str = DEFAULT_MOUTH_FILL, detector=None):
    animator = Animator(model, device="cpu", dtype="float32", output_size=size, guide=guide, mouth_gain=mouth_gain,
                        motion=motion, mouth_fill=mouth_fill, face_detector=detector)
    rows, names = [], []
    for video in videos:
        named = any(isinstance(f, str) and not f.isdigit() for f in frames)
        clip, _ = read_video(os.path.join(data, video + ".mp4"),
                             max_frames=None if named else max(int(f) for f in frames) + 1)
        full = fit_frames(clip, (size, size))
        chosen = pick_frames(frames, full, detector) if named else [int(f) for f in frames]
        for source in sources:
            image = read_image(os.path.join(data, source))
            animator.set_source(image)
            animator.set_anchor(full[0])
            for t in chosen:
                item = next(animator.animate_stream([full[t]], details=True))
                depth = torch.from_numpy(item["driving_depth"])[None, None]
                tiles = {"source": resize_image(image, size), "driving": full[t],
                         "depth": depth_tile(depth, size), "result": item["prediction"]}
                rows.append(np.concatenate([tiles[c] for c in columns], axis=1))
                names.append(f"{source} <- {video} frame {t}")
    return rows, names


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--sources", nargs="+", required=True, help="portrait file names under --data")
    p.add_argument("--videos", nargs="+", required=True, help="clip names under --data (no extension)")
    p.add_argument("--frames", nargs="+", default=["40", "120"],
                   help=f"frame numbers, or {', '.join(NAMED_FRAMES)}: the frames where the driver does that")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--guide", choices=GUIDE_MODES, default="auto",
                   help="face-guided head motion, as demo.py --guide (default auto: on when a face backend loads)")
    p.add_argument("--mouth_gain", type=float, default=1.0, help="with the guide, as demo.py --mouth_gain")
    p.add_argument("--motion", choices=MOTIONS, default="auto", help="what moves the portrait, as demo.py --motion")
    p.add_argument("--mouth_fill", choices=MOUTH_FILLS, default=DEFAULT_MOUTH_FILL,
                   help="with the landmark stage, as demo.py --mouth_fill")
    p.add_argument("--columns", nargs="+", choices=COLUMNS, default=list(COLUMNS),
                   help="tiles of each row, in order (default: source driving depth result)")
    p.add_argument("--quality", type=int, default=85, help="JPEG quality when --out ends in .jpg/.jpeg")
    p.add_argument("--out", required=True, help="image to write (.png, or .jpg for a smaller file)")
    args = p.parse_args()
    import imageio.v3 as iio

    torch.set_grad_enabled(False)
    model = DaGAN.from_pretrained(args.model)
    bad = [f for f in args.frames if not f.isdigit() and f not in NAMED_FRAMES]
    if bad:
        p.error(f"--frames takes frame numbers or {', '.join(NAMED_FRAMES)}, got {bad[0]!r}")
    detector = load_face_backend("auto")
    guide = resolve_guide(args.guide, lambda: detector)
    rows, names = grid_rows(model, args.data, args.sources, args.videos, args.frames, args.size, guide,
                            args.mouth_gain, args.columns, args.motion, args.mouth_fill, detector)
    gap = np.full((4, rows[0].shape[1], 3), 255, np.uint8)
    grid = np.concatenate([x for r in rows for x in (r, gap)][:-1], axis=0)
    root, ext = os.path.splitext(args.out)
    tmp = root + ".tmp" + (ext or ".png")
    if ext.lower() in (".jpg", ".jpeg"):
        iio.imwrite(tmp, grid, quality=args.quality)
    else:
        iio.imwrite(tmp, grid)
    os.replace(tmp, args.out)
    print(json.dumps({"benchmark": "frame_grid", "model": args.model, "columns": args.columns,
                      "guide": guide is not None, "mouth_gain": args.mouth_gain, "motion": args.motion,
                      "mouth_fill": args.mouth_fill, "rows": names, "out": args.out},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
