"""Where does the driver's mouth get lost? For a model with an output blend, the mouth-opening correlation with
the driver (the evaluation's metric) of each path of the 256 px render, per portrait:

* ``render``: what ``demo.py`` writes, ``m * warp(source) + (1 - m) * decoded``;
* ``warp_only``: the full-size portrait warped along the dense motion (what the motion field carries);
* ``decoder_only``: the upsampled decoder image (what the generator synthesises);
* ``mouth_handoff``: the render with the blend mask set to 0 over the portrait's mouth (the trainer's soft
  ellipse over the outer lips, :func:`dagan.training.losses.mouth_region`, warped along the dense motion): what
  the render would show if the mask handed the whole mouth to the decoder;

plus the mean blend mask ``m`` over the portrait's mouth (1 = the portrait's own mouth is copied).

    python benchmarks/mouth_paths.py --model checkpoints/dagan-small --data ../shared/data \\
        --video drv_lp_d14_audio_256 --sources source_astronaut_256.png source_lp_d10frame0_256.png \\
        [--max-frames 150] [--guide] [--out result.json]
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dagan import Animator, DaGAN  # noqa: E402
from dagan.evaluation.face_metrics import mouth_opening, pearson  # noqa: E402
from dagan.evaluation.face_metrics import BackendLandmarks, FaceAnalyzer  # noqa: E402
from dagan.faces import DlibFaceBackend  # noqa: E402
from dagan.io.images import read_image, resize_image, tensor_to_images  # noqa: E402
from dagan.io.video import VideoReader  # noqa: E402
from dagan.nn.grid import deform_image_exact  # noqa: E402
from dagan.training.losses import mouth_region  # noqa: E402
from common import print_report  # noqa: E402


def mouth_corr(driving: List[Optional[np.ndarray]], result: List[Optional[np.ndarray]]) -> dict:
    pairs = [(mouth_opening(d), mouth_opening(r)) for d, r in zip(driving, result) if d is not None and r is not None]
    corr = pearson([p[0] for p in pairs], [p[1] for p in pairs])
    return {"frames": len(pairs), "mouth_corr": None if corr is None else round(corr, 3)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="checkpoints/dagan-small")
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--video", default="drv_lp_d14_audio_256")
    p.add_argument("--sources", nargs="+", default=["source_astronaut_256.png", "source_lp_d10frame0_256.png"])
    p.add_argument("--max-frames", type=int, default=150)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--guide", action="store_true", help="face-guided motion (relative motion, as demo.py)")
    p.add_argument("--out")
    args = p.parse_args(argv)
    landmarks = BackendLandmarks(FaceAnalyzer(DlibFaceBackend(), embeddings=False))
    frames = list(VideoReader(os.path.join(args.data, args.video + ".mp4"), max_frames=args.max_frames))
    driving = landmarks(frames)
    report = {"benchmark": "mouth_paths", "model": args.model, "video": args.video, "frames": len(frames),
              "guide": args.guide, "sources": {}}
    for name in args.sources:
        animator = Animator(DaGAN.from_pretrained(args.model), device="cpu", dtype="float32", batch_size=8,
                            output_size=args.size, guide=DlibFaceBackend() if args.guide else None)
        source = read_image(os.path.join(args.data, name))
        animator.set_source(source)
        full = animator.state.cache["source_full"]
        own = landmarks([resize_image(source, args.size)])[0]
        mouth = None if own is None else mouth_region(torch.from_numpy(own)[None], args.size, args.size)
        paths = {"render": [], "warp_only": [], "decoder_only": [], "mouth_handoff": []}
        masks = []
        for start in range(0, len(frames), 8):
            chunk = frames[start:start + 8]
            batch = animator._frames_to_tensor(chunk)
            guide_landmarks = animator._landmarks(chunk) if args.guide else None
            with torch.no_grad():
                out = animator.animate_tensor(batch, return_details=True, landmarks=guide_landmarks)
            if "blend_mask" not in out:
                raise SystemExit(f"{args.model} has no output blend: nothing to separate")
            size = (args.size, args.size)
            count = batch.shape[0]
            warped = deform_image_exact(full.expand(count, -1, -1, -1), out["deformation"]).clamp(0, 1)
            decoded = F.interpolate(out["decoded"], size=size, mode="bicubic", align_corners=False).clamp(0, 1)
            mask = F.interpolate(out["blend_mask"], size=size, mode="bilinear", align_corners=False)
            paths["render"] += list(tensor_to_images(out["prediction"]))
            paths["warp_only"] += list(tensor_to_images(warped))
            paths["decoder_only"] += list(tensor_to_images(decoded))
            if mouth is not None:
                handoff = mask * (1 - deform_image_exact(mouth.expand(count, -1, -1, -1), out["deformation"]))
                paths["mouth_handoff"] += list(tensor_to_images(decoded + handoff * (warped - decoded)))
            masks.append(mask)
        mask = torch.cat(masks)[:, 0]
        row = {"blend_mask_mean": round(float(mask.mean()), 3)}
        if own is not None:
            x, y = own[48:68].mean(0).round().astype(int)
            row["blend_mask_mean_mouth"] = round(float(mask[:, max(y - 12, 0):y + 12, max(x - 20, 0):x + 20].mean()), 3)
        for path, images in paths.items():
            if images:
                row[path] = mouth_corr(driving, landmarks(images))
        report["sources"][name] = row
    print_report(report, args.out)


if __name__ == "__main__":
    main()
