"""What the motion metrics can reach on a clip: the face metrics of "oracle" results that are the driving frames
themselves, passed through what a network of a given input size sees.

For each clip, the 68 dlib landmarks of every frame (the evaluation's offline face tools) are compared, with the
evaluation's own metric functions (:mod:`dagan.evaluation.face_metrics`), between the driving frames and:

* ``frozen``: the first frame repeated (the baseline the motion error is divided by);
* ``jpeg``: the frame re-encoded as JPEG (quality 90): how much the landmarks themselves jitter, i.e. the
  noise floor of every metric on this clip;
* ``roundtrip_N``: the frame resized to N px (the resize policy of the demo and the trainer) and back to its
  size (bicubic): everything an N px network is shown of the driving face, at the output size.

A result can only pass on motion that its network sees, so ``roundtrip_N`` bounds what an N px network can score
(up to the blur the resize adds). The clip's driving signal itself is reported too: the inner-lip opening in
pixels at N px and the inter-ocular distance's range.

    python benchmarks/metric_ceiling.py --data ../shared/data --videos drv_lp_d9_audio_256 --sizes 64 128 \\
        [--max-frames 200] [--out result.json]

``eye_corr`` is reported only where the driver's eye opening varies (as in the evaluation).
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import time
from typing import Dict, List, Optional

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dagan.evaluation.face_metrics import (EYE_VARIES, amplitude_ratio, eye_opening, interocular,  # noqa: E402
                                           motion_error, mouth_opening, pearson, scale_drift)
from dagan.evaluation.face_metrics import BackendLandmarks, FaceAnalyzer  # noqa: E402
from dagan.faces import DlibFaceBackend  # noqa: E402
from dagan.io.images import fit_frames  # noqa: E402
from dagan.io.video import VideoReader  # noqa: E402
from common import print_report  # noqa: E402


def jpeg(frame: np.ndarray, quality: int = 90) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def roundtrip(frame: np.ndarray, size: int) -> np.ndarray:
    small = fit_frames(frame[None], (size, size))[0]
    h, w = frame.shape[:2]
    return np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC))


def scores(driving: List[Optional[np.ndarray]], result: List[Optional[np.ndarray]]) -> Dict[str, Optional[float]]:
    """The evaluation's motion metrics of ``result`` landmarks against ``driving`` landmarks (frame by frame;
    anchors: the first frame where both have a face)."""
    pairs = [(d, r) for d, r in zip(driving, result) if d is not None and r is not None]
    if len(pairs) < 3:
        return {"frames": len(pairs), "motion_error": None, "scale_drift": None, "mouth_corr": None,
                "mouth_amp": None, "eye_corr": None}
    anchor_d, anchor_r = pairs[0]
    mouth_r, mouth_d = [mouth_opening(r) for _, r in pairs], [mouth_opening(d) for d, _ in pairs]
    eye_r, eye_d = [eye_opening(r) for _, r in pairs], [eye_opening(d) for d, _ in pairs]
    return {"frames": len(pairs),
            "motion_error": float(np.mean([motion_error(r, d, anchor_r, anchor_d) for d, r in pairs])),
            "scale_drift": float(np.mean([scale_drift(r, d, anchor_r, anchor_d) for d, r in pairs])),
            "mouth_corr": pearson(mouth_r, mouth_d), "mouth_amp": amplitude_ratio(mouth_r, mouth_d),
            "eye_corr": pearson(eye_r, eye_d) if float(np.std(eye_d)) >= EYE_VARIES else None}


def check_clip(landmarks: BackendLandmarks, path: str, sizes: List[int], max_frames: int) -> dict:
    frames = list(VideoReader(path, max_frames=max_frames))
    driving = landmarks(frames)
    found = [d for d in driving if d is not None]
    report: dict = {"frames": len(frames), "frame_px": int(frames[0].shape[0]), "face_found": len(found)}
    if len(found) < 3:
        return report
    iod = np.array([interocular(d) for d in found])
    opening_px = np.array([np.linalg.norm(d[62] - d[66]) for d in found])
    report["driving"] = {
        "interocular_px_median": round(float(np.median(iod)), 2),
        "interocular_ratio_range": [round(float(iod.min() / iod[0]), 4), round(float(iod.max() / iod[0]), 4)],
        "mouth_opening_px_p5_p50_p95": {
            str(s): [round(float(np.percentile(opening_px * s / frames[0].shape[0], p)), 2) for p in (5, 50, 95)]
            for s in [frames[0].shape[0]] + sizes},
    }
    oracles = {"frozen": [driving[0]] * len(frames),
               "jpeg": landmarks([jpeg(f) for f in frames])}
    for s in sizes:
        oracles[f"roundtrip_{s}"] = landmarks([roundtrip(f, s) for f in frames])
    table = {name: scores(driving, result) for name, result in oracles.items()}
    frozen = table["frozen"]["motion_error"]
    for row in table.values():
        if row["motion_error"] is not None and frozen:
            row["motion_error_vs_frozen"] = row["motion_error"] / frozen
        for key, value in list(row.items()):
            if isinstance(value, float):
                row[key] = round(value, 4)
    report["oracles"] = table
    return report


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--videos", nargs="+", default=["drv_lp_d9_audio_256"])
    p.add_argument("--sizes", nargs="+", type=int, default=[64, 128])
    p.add_argument("--max-frames", type=int, default=200)
    p.add_argument("--out")
    args = p.parse_args(argv)
    landmarks = BackendLandmarks(FaceAnalyzer(DlibFaceBackend(), embeddings=False))
    start = time.time()
    report = {"benchmark": "metric_ceiling", "targets": {"motion_error_vs_frozen": "<= 0.35", "scale_drift": "<= 0.02",
                                                         "mouth_corr": ">= 0.6", "mouth_amp": "0.6-1.5",
                                                         "eye_corr": ">= 0.5"},
              "clips": {v: check_clip(landmarks, os.path.join(args.data, v + ".mp4"), args.sizes, args.max_frames)
                        for v in args.videos}}
    report["seconds"] = round(time.time() - start, 1)
    print_report(report, args.out)


if __name__ == "__main__":
    main()
