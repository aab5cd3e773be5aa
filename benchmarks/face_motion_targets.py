"""What a viewer gets from each way of moving the portrait: the cross-identity face report on every pair of
portrait x driving clip, plus a still-driver check, against the targets of the landmark motion stage.

    python benchmarks/face_motion_targets.py --model checkpoints/dagan-small --data ../shared/data \\
        --sources source_astronaut_256.png source_lp_d6frame0_256.png source_lp_d10frame0_256.png \\
        --videos drv_lp_d0_256 drv_lp_d6_audio_256 drv_lp_d9_audio_256 drv_lp_d10_audio_256 drv_lp_d13_256 \\
                 drv_lp_d14_audio_256 \\
        --systems landmarks:driver landmarks:dark keypoints --out result.json

A system is ``MOTION[:MOUTH_FILL]`` (``demo.py --motion`` / ``--mouth_fill``; ``keypoints`` runs the model with
the face guide, the shipped path before the landmark stage). Every pair is animated as ``demo.py`` does at
``--size`` (relative motion anchored at the first frame) and judged with dlib's landmarks and identity
embedding (:mod:`dagan.evaluation.face_metrics`). The still-driver check is the report's ``still_sharpness``:
each portrait driven by ``--still_frames`` copies of itself, where the result should be the portrait (sharpness 1).

Prints JSON: per system the pooled metrics, per-pair rows, the still-driver sharpness and each target met or not.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import print_report  # noqa: E402

from dagan import DaGAN  # noqa: E402
from dagan.evaluation.evaluate import BASELINE, EvalSettings, build_metric_suite, run_evaluation  # noqa: E402

#: the issue's targets: metric -> (test, threshold text)
TARGETS = {
    "face_found_worst_pair": (lambda v: v >= 0.98, ">= 0.98"),
    "motion_ratio": (lambda v: v <= 0.25, "<= 0.25"),
    "scale_drift": (lambda v: v <= 0.02, "<= 0.02"),
    "mouth_corr": (lambda v: v >= 0.6, ">= 0.6"),
    "mouth_amp": (lambda v: 0.6 <= v <= 1.5, "0.6-1.5"),
    "eye_corr": (lambda v: v >= 0.5, ">= 0.5"),
    "sharpness": (lambda v: v >= 0.7, ">= 0.7"),
    "still_sharpness": (lambda v: v >= 0.9, ">= 0.9"),
    "identity_kept": (lambda v: v >= 0.95, ">= 0.95"),
}


def parse_system(text: str):
    motion, _, fill = text.partition(":")
    return motion, fill or "driver"


def summary(report: dict, name: str) -> dict:
    overall = report["overall"][name]

    def value(metric):
        entry = overall.get(metric)
        return None if entry is None else entry["frame_mean"]

    row = {"face_found_worst_pair": overall["face_detected"].get("worst_item"),
           "face_found": value("face_detected"), "motion_ratio": value("motion_ratio"),
           "motion_error": value("motion_error"), "scale_drift": value("scale_drift"),
           "mouth_corr": value("mouth_corr"), "mouth_amp": value("mouth_amp"), "eye_corr": value("eye_corr"),
           "sharpness": value("sharpness"), "identity_kept": value("id_match_source"),
           "still_sharpness": value("still_sharpness")}
    row["targets_met"] = {m: (None if row[m] is None else bool(test(row[m]))) for m, (test, _) in TARGETS.items()}
    return row


def still_by_source(report: dict, name: str) -> dict:
    """The still-driver sharpness of each source (the report repeats it on each of the source's pairs)."""
    return {r["name"].split("<-")[0]: frame_mean(r["values"][name].get("still_sharpness", []))
            for r in report["_results"]}


def pairs(report: dict, name: str) -> list:
    rows = []
    for r in report["_results"]:
        values = r["values"][name]
        rows.append({"pair": r["name"], "frames": r["frames"],
                     **{m: frame_mean(values.get(m, [])) for m in ("face_detected", "motion_error", "scale_drift",
                                                                 "mouth_corr", "mouth_amp", "eye_corr", "sharpness",
                                                                 "id_match_source")}})
    return rows


def frame_mean(values):
    kept = [v for v in values if v is not None and np.isfinite(v)]
    return round(float(np.mean(kept)), 4) if kept else None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="checkpoints/dagan-small")
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--sources", nargs="+", required=True)
    p.add_argument("--videos", nargs="+", required=True)
    p.add_argument("--systems", nargs="+", default=["landmarks:driver", "keypoints"])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--max_frames", type=int, default=None)
    p.add_argument("--still_frames", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    model = DaGAN.from_pretrained(args.model)
    sources = [os.path.join(args.data, s) for s in args.sources]
    out = {"benchmark": "face_motion_targets", "model": args.model, "size": args.size, "sources": args.sources,
           "videos": args.videos, "targets": {m: t for m, (_, t) in TARGETS.items()}, "systems": {}}
    suite = None
    for text in args.systems:
        motion, fill = parse_system(text)
        settings = EvalSettings(protocol="cross-identity", sources=sources, videos=args.videos,
                                output_size=args.size, max_frames=args.max_frames, motion=motion, mouth_fill=fill,
                                guide="on", batch_size=8, still_frames=args.still_frames)
        if suite is None:
            suite = build_metric_suite("cross-identity", settings, "cpu", lpips="off")
            suite.faces.cache_size = 4096
        suite.settings = settings
        started = time.time()
        report = run_evaluation({text: model}, args.data, settings, suite=suite, device="cpu")
        seconds = time.time() - started
        out["systems"][text] = {"summary": summary(report, text), "still_sharpness": still_by_source(report, text),
                                "pairs": pairs(report, text), "seconds": round(seconds, 1),
                                "frames": report["frames"]}
        if "frozen" not in out:
            out["frozen"] = {"motion_error": report["overall"][BASELINE]["motion_error"]["frame_mean"],
                             "scale_drift": report["overall"][BASELINE]["scale_drift"]["frame_mean"]}
    print_report(out, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
