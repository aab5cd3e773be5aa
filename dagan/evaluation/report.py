"""Evaluation report files: ``metrics.json``, ``metrics.csv``, ``frames.csv``, ``metrics.png`` and
``worst_videos.png``.

* ``metrics.json``: settings, metric status (model, digest, or ``"skipped: <reason>"``), per system the
  frame-pooled and per-video means, the per-video rows, and run information (time, world size);
* ``metrics.csv``: one row per (video, system) plus ``ALL (frame mean)`` and ``ALL (video mean)`` rows;
* ``frames.csv``: every per-frame value (item, video, frame index, system, metrics);
* ``metrics.png``: a bar per system for each metric and the per-frame curve of the main metric (mean over
  videos at each frame index);
* ``worst_videos.png``: source, driving and generated frames of the worst videos of the first system.

Figures are drawn with Pillow only (no plotting dependency). Every file is written atomically.
"""
from __future__ import annotations

import csv
import io
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..utils import atomic_write_bytes
from .evaluate import HIGHER_IS_BETTER, PER_ITEM_METRICS

PathLike = Union[str, os.PathLike]
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]
FILES = ("metrics.json", "metrics.csv", "frames.csv", "metrics.png", "worst_videos.png")


def public_report(report: dict) -> dict:
    """The report without its internal per-frame payload (what ``metrics.json`` holds)."""
    return {k: v for k, v in report.items() if not k.startswith("_")}


def _fmt(value: Optional[float], digits: int = 6) -> str:
    return "" if value is None else f"{value:.{digits}g}"


def write_report(report: dict, out_dir: PathLike, figures: bool = True, worst: int = 4) -> Dict[str, str]:
    """Write every report file into ``out_dir`` (created if needed); returns ``{file name: path}``."""
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    paths = {name: os.path.join(out_dir, name) for name in FILES}
    systems = list(report["overall"])
    metric_names = _metric_names(report)
    atomic_write_bytes(paths["metrics.json"], json.dumps(public_report(report), indent=2, allow_nan=False).encode())
    atomic_write_bytes(paths["metrics.csv"], _metrics_csv(report, systems, metric_names))
    atomic_write_bytes(paths["frames.csv"], _frames_csv(report, systems, metric_names))
    if figures:
        atomic_write_bytes(paths["metrics.png"], _png(metrics_figure(report)))
        atomic_write_bytes(paths["worst_videos.png"], _png(worst_videos_figure(report, worst)))
    else:
        paths.pop("metrics.png")
        paths.pop("worst_videos.png")
    return paths


def _metric_names(report: dict) -> List[str]:
    first = next(iter(report["overall"].values()), {})
    return list(first)


def _csv_bytes(rows: Sequence[Sequence[object]]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue().encode()


def _metrics_csv(report: dict, systems: Sequence[str], metric_names: Sequence[str]) -> bytes:
    rows: List[List[object]] = [["video", "system", "frames", *metric_names, "no_face_pred", "no_face_gt"]]
    for v in report["videos"]:
        for s in systems:
            m = v["metrics"][s]
            rows.append([v["video"], s, v["frames"], *[_fmt(m[k]) for k in metric_names], m["no_face_pred"],
                         v["no_face_gt"]])
    for label, key in (("ALL (frame mean)", "frame_mean"), ("ALL (video mean)", "video_mean")):
        for s in systems:
            o = report["overall"][s]
            rows.append([label, s, report["frames"], *[_fmt(o[k][key]) for k in metric_names], "", ""])
    return _csv_bytes(rows)


def _frames_csv(report: dict, systems: Sequence[str], metric_names: Sequence[str]) -> bytes:
    metric_names = [m for m in metric_names if m not in PER_ITEM_METRICS]  # one value per item: metrics.csv
    rows: List[List[object]] = [["item", "video", "frame", "system", *metric_names]]
    for r in report.get("_results", []):
        for s in systems:
            vals = r["values"][s]
            for i in range(r["frames"]):
                rows.append([r["name"], r["group"], i, s,
                             *[_fmt(vals[m][i]) if m in vals else "" for m in metric_names]])
    return _csv_bytes(rows)


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _font(size: int = 12):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def primary_metric(report: dict) -> Optional[str]:
    names = _metric_names(report)
    for m in ("l1", "csim", "akd"):
        if m in names:
            return m
    return names[0] if names else None


# ---------------------------------------------------------------------------------------- figures
def metrics_figure(report: dict, panel: Tuple[int, int] = (200, 190)) -> Image.Image:
    """Bars (one panel per metric, one bar per system, frame-pooled mean) over a per-frame curve."""
    systems = list(report["overall"])
    names = _metric_names(report)
    pw, ph = panel
    width = max(600, pw * max(1, len(names)))
    curve_h = 240
    legend_h = 24
    img = Image.new("RGB", (width, 30 + legend_h + ph + curve_h + 20), "white")
    draw = ImageDraw.Draw(img)
    font, small = _font(13), _font(11)
    draw.text((10, 8), f"dagan evaluation: {report['protocol']}, {report['items']} items, {report['frames']} frames",
              fill="black", font=font)
    x = 10
    for k, s in enumerate(systems):
        draw.rectangle([x, 32, x + 12, 44], fill=PALETTE[k % len(PALETTE)])
        draw.text((x + 16, 31), s, fill="black", font=small)
        x += 30 + int(draw.textlength(s, font=small))
    top = 30 + legend_h
    for j, m in enumerate(names):
        left = j * pw
        vals = [report["overall"][s][m]["frame_mean"] for s in systems]
        arrow = "higher is better" if HIGHER_IS_BETTER.get(m, False) else "lower is better"
        draw.text((left + 10, top), f"{m.upper()} ({arrow})", fill="black", font=small)
        finite = [v for v in vals if v is not None]
        vmax = max([abs(v) for v in finite] + [1e-12])
        base_y, bar_h = top + ph - 25, ph - 55
        draw.line([left + 10, base_y, left + pw - 10, base_y], fill="grey")
        bw = min(60, max(8, (pw - 30) // max(1, len(systems)) - 6))
        for k, v in enumerate(vals):
            bx = left + 15 + k * (bw + 6)
            if v is None:
                draw.text((bx, base_y - 14), "n/a", fill="grey", font=small)
                continue
            h = int(bar_h * max(v, 0.0) / vmax)
            draw.rectangle([bx, base_y - h, bx + bw, base_y], fill=PALETTE[k % len(PALETTE)])
            draw.text((bx, base_y - h - 13), f"{v:.4g}", fill="black", font=small)
    _curve(draw, report, systems, (10, top + ph, width - 10, top + ph + curve_h), small)
    return img


def per_frame_curve(report: dict, metric: str, system: str) -> np.ndarray:
    """Mean of ``metric`` over items at each frame index (items shorter than the longest stop counting)."""
    series = [r["values"][system].get(metric, []) for r in report.get("_results", [])]
    length = max((len(s) for s in series), default=0)
    out = np.full(length, np.nan)
    for i in range(length):
        vals = [s[i] for s in series if i < len(s) and s[i] is not None]
        if vals:
            out[i] = float(np.mean(vals))
    return out


def _curve(draw: ImageDraw.ImageDraw, report: dict, systems: Sequence[str], box: Tuple[int, int, int, int],
           font) -> None:
    x0, y0, x1, y1 = box
    metric = primary_metric(report)
    draw.text((x0, y0 + 2), f"per-frame {metric.upper() if metric else '-'} (mean over videos) vs frame index",
              fill="black", font=font)
    top, bottom, left = y0 + 22, y1 - 20, x0 + 50
    draw.rectangle([left, top, x1, bottom], outline="grey")
    if metric is None:
        return
    curves = {s: per_frame_curve(report, metric, s) for s in systems}
    finite = np.concatenate([c[np.isfinite(c)] for c in curves.values()] + [np.zeros(0)])
    if finite.size == 0:
        return
    lo, hi = float(finite.min()), float(finite.max())
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    length = max(len(c) for c in curves.values())
    draw.text((x0, top), f"{hi:.3g}", fill="black", font=font)
    draw.text((x0, bottom - 12), f"{lo:.3g}", fill="black", font=font)
    draw.text((left, bottom + 4), "0", fill="black", font=font)
    draw.text((x1 - 30, bottom + 4), str(max(0, length - 1)), fill="black", font=font)
    for k, s in enumerate(systems):
        c = curves[s]
        pts = [(left + (x1 - left) * (i / max(1, length - 1)), bottom - (bottom - top) * (v - lo) / (hi - lo))
               for i, v in enumerate(c) if np.isfinite(v)]
        colour = PALETTE[k % len(PALETTE)]
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=2)
        for p in pts if len(pts) == 1 else []:
            draw.ellipse([p[0] - 3, p[1] - 3, p[0] + 3, p[1] + 3], fill=colour)


def worst_videos(report: dict, count: int = 4) -> List[str]:
    """The ``count`` worst videos of the first system by its per-video mean of the main metric."""
    metric = primary_metric(report)
    systems = list(report["overall"])
    if metric is None or not systems:
        return []
    s = systems[0]
    rows = [v for v in report["videos"] if v["metrics"][s].get(metric) is not None]
    sign = -1.0 if HIGHER_IS_BETTER.get(metric, False) else 1.0
    rows.sort(key=lambda v: -sign * v["metrics"][s][metric])
    return [v["video"] for v in rows[:count]]


def _cell(thumb: np.ndarray, cell: int) -> Image.Image:
    image = Image.fromarray(thumb)
    return image if image.size == (cell, cell) else image.resize((cell, cell), Image.Resampling.BICUBIC)


def worst_videos_figure(report: dict, count: int = 4, cell: int = 96) -> Image.Image:
    """For each worst video: its source, then rows of driving frames and each system's outputs."""
    systems = list(report["overall"])
    names = worst_videos(report, count)
    results = {}
    for r in report.get("_results", []):
        results.setdefault(r["group"], r)
    label_w = 130
    cols = max([len(results[n]["thumbnails"]) for n in names if n in results] + [1]) + 1
    rows_per = 1 + len(systems)
    height = max(1, len(names)) * (rows_per * (cell + 4) + 24) + 10
    img = Image.new("RGB", (label_w + cols * (cell + 4), height), "white")
    draw = ImageDraw.Draw(img)
    font = _font(11)
    metric = primary_metric(report)
    y = 5
    if not names:
        draw.text((10, 10), "no per-video values to rank", fill="black", font=font)
    for n in names:
        r = results.get(n)
        if r is None:
            continue
        value = next(v for v in report["videos"] if v["video"] == n)["metrics"][systems[0]].get(metric)
        draw.text((5, y), f"{n[:60]}  ({systems[0]} {metric} {value:.4g})", fill="black", font=font)
        y += 18
        labels = ["source / driving", *systems]
        for row, label in enumerate(labels):
            draw.text((5, y + row * (cell + 4) + cell // 2 - 6), label[:20], fill="black", font=font)
        img.paste(_cell(r["source"], cell), (label_w, y))
        for c, t in enumerate(r["thumbnails"], start=1):
            xx = label_w + c * (cell + 4)
            img.paste(_cell(t["gt"], cell), (xx, y))
            draw.text((xx + 2, y + 2), f"#{t['index']}", fill="yellow", font=font)
            for row, s in enumerate(systems, start=1):
                img.paste(_cell(t["pred"][s], cell), (xx, y + row * (cell + 4)))
        y += rows_per * (cell + 4) + 6
    return img
