"""A frame grid of a model, to look at: one row per (portrait, driving clip, frame) with
source | driving | driving depth | result (``--columns`` picks and orders them), at the output size, as
``demo.py`` renders it (relative motion, adapt-scale, face-guided when a face backend loads, anchored at the
first driving frame).

    python benchmarks/frame_grid.py --model checkpoints/dagan-small --data ../shared/data \\
        --sources source_astronaut_256.png source_lp_d10frame0_256.png --videos drv_lp_d9_audio_256 \\
        --frames 40 120 --size 256 --out docs/dagan-small-grid.png

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
from dagan.inference.guide import GUIDE_MODES, resolve_guide  # noqa: E402
from dagan.io.video import read_video  # noqa: E402


def depth_tile(depth: torch.Tensor, size: int) -> np.ndarray:
    """``(1, 1, h, w)`` disparity -> ``(size, size, 3)`` uint8 grey (near = bright), normalised per frame."""
    d = torch.nn.functional.interpolate(depth.float(), size=(size, size), mode="bilinear", align_corners=False)
    d = (d - d.amin()) / (d.amax() - d.amin() + 1e-8)
    return tensor_to_images(d.repeat(1, 3, 1, 1))[0]


COLUMNS = ("source", "driving", "depth", "result")


def grid_rows(model: DaGAN, data: str, sources, videos, frames, size: int, guide=None, mouth_gain: float = 1.0,
              columns=COLUMNS):
    animator = Animator(model, device="cpu", dtype="float32", output_size=size, guide=guide, mouth_gain=mouth_gain)
    rows, names = [], []
    for video in videos:
        clip, _ = read_video(os.path.join(data, video + ".mp4"), max_frames=max(frames) + 1)
        full = fit_frames(clip, (size, size))
        for source in sources:
            image = read_image(os.path.join(data, source))
            animator.set_source(image)
            animator.set_anchor(full[0])
            for t in frames:
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
    p.add_argument("--frames", nargs="+", type=int, default=[40, 120])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--guide", choices=GUIDE_MODES, default="auto",
                   help="face-guided head motion, as demo.py --guide (default auto: on when a face backend loads)")
    p.add_argument("--mouth_gain", type=float, default=1.0, help="with the guide, as demo.py --mouth_gain")
    p.add_argument("--columns", nargs="+", choices=COLUMNS, default=list(COLUMNS),
                   help="tiles of each row, in order (default: source driving depth result)")
    p.add_argument("--quality", type=int, default=85, help="JPEG quality when --out ends in .jpg/.jpeg")
    p.add_argument("--out", required=True, help="image to write (.png, or .jpg for a smaller file)")
    args = p.parse_args()
    import imageio.v3 as iio

    torch.set_grad_enabled(False)
    model = DaGAN.from_pretrained(args.model)
    guide = resolve_guide(args.guide, lambda: load_face_backend("auto"))
    rows, names = grid_rows(model, args.data, args.sources, args.videos, args.frames, args.size, guide,
                            args.mouth_gain, args.columns)
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
                      "guide": guide is not None, "mouth_gain": args.mouth_gain, "rows": names, "out": args.out},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
