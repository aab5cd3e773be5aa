"""Cost of DaGAN vs DaGAN++ per driving frame: parameters, FLOPs, peak memory, latency. Prints JSON.

Per frame = what :class:`dagan.Animator` runs for every driving frame once the source is prepared:
driving depth + RGB-D keypoints + ``generator.generate`` from the cached source features.

* parameters: whole model and per sub-network;
* FLOPs: :class:`torch.utils.flop_counter.FlopCounterMode` (matmuls and convolutions; elementwise ops,
  ``grid_sample`` and softmax are not counted), for the frame and for the generator alone;
* peak memory: on CUDA ``torch.cuda.max_memory_allocated`` around one frame; on CPU the rise of the
  process's peak resident set (``VmHWM`` after resetting it through ``/proc/self/clear_refs``) over the
  resident set before the frame, each measurement in a fresh process;
* attention: per level, positions, window and the size of the attention-score matrix a non-fused
  implementation would hold (fp32, one sample), i.e. what the windows / fused SDPA avoid.

Usage::

    python benchmarks/model_cost.py                       # 256 and 512 px, both models, CPU
    python benchmarks/model_cost.py --sizes 256 --device cuda --out cost.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dagan import DaGAN, load_config  # noqa: E402
from dagan.utils import count_parameters, resolve_device  # noqa: E402
from common import print_report  # noqa: E402

CONFIGS = {"dagan": REPO / "configs" / "dagan-vox-256.yaml", "daganpp": REPO / "configs" / "daganpp-vox-256.yaml"}


def build(name: str, impl: str, device: torch.device, window: int = -1) -> DaGAN:
    cfg = load_config(CONFIGS[name])
    cfg.model.generator.attention = impl
    if window >= 0:
        cfg.model.generator.attention_window = window
    torch.manual_seed(0)
    return DaGAN(cfg.model).to(device).eval()


def _inputs(size: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, size, size, generator=g).to(device), torch.rand(1, 3, size, size, generator=g).to(device)


def attention_levels(model: DaGAN, size: int):
    """Per attention level: side, positions, window and bytes of a materialised fp32 score matrix."""
    gen = model.generator
    if hasattr(gen, "level_attention"):
        blocks = [(level, gen.level_attention(level)) for level in range(gen.num_levels)]
    else:
        blocks = [(gen.num_down_blocks, gen.AttnModule)]
    rows = []
    for level, attn in blocks:
        side = size // 2 ** level
        n = side * side
        window = attn.window_shape(side, side) if hasattr(attn, "window_shape") else None
        per_query = n if window is None else window[0] * window[1]
        c = attn.value_conv.out_channels
        rows.append({"level": level, "side": side, "channels": c, "positions": n,
                     "window": None if window is None else list(window),
                     "score_elements": n * per_query, "score_mib_fp32": round(n * per_query * 4 / 2 ** 20, 2),
                     "full_attention_score_mib_fp32": round(n * n * 4 / 2 ** 20, 2),
                     "attention_gflops": round(2 * n * per_query * (attn.key_conv.out_channels + c) / 1e9, 3),
                     "full_attention_gflops": round(2 * n * n * (attn.key_conv.out_channels + c) / 1e9, 3)})
    return rows


def flops(model: DaGAN, size: int, device: torch.device):
    from torch.utils.flop_counter import FlopCounterMode

    source, driving = _inputs(size, device)
    with torch.no_grad():
        state = model.prepare_source(source)
        kp_init = model.detect_keypoints(driving)
        with FlopCounterMode(display=False) as frame_counter:
            model.animate_batch(state, driving, kp_init)
        depth = model.estimate_depth(driving)
        kp = model.detect_keypoints(driving, depth)
        with FlopCounterMode(display=False) as gen_counter:
            model.generator.generate(state.cache, state.kp, kp)
    return frame_counter.get_total_flops(), gen_counter.get_total_flops()


def _read_status(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def worker(name: str, size: int, impl: str, device_name: str, repeats: int, window: int) -> dict:
    """One measurement in this (fresh) process."""
    device = resolve_device(device_name)
    model = build(name, impl, device, window)
    source, driving = _inputs(size, device)
    times = []
    with torch.no_grad():
        state = model.prepare_source(source)
        kp_init = model.detect_keypoints(driving)
        model.animate_batch(state, driving, kp_init)  # warm-up: lazy allocations, kernel choice
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            model.animate_batch(state, driving, kp_init)
            torch.cuda.synchronize(device)
            peak, method = torch.cuda.max_memory_allocated(device) - base, "cuda.max_memory_allocated"
        else:
            base = _read_status("VmRSS")
            try:
                with open("/proc/self/clear_refs", "w") as fh:
                    fh.write("5")
                method = "VmHWM after clear_refs"
            except OSError:
                method = "VmHWM (not reset: includes set-up)"
            model.animate_batch(state, driving, kp_init)
            peak = _read_status("VmHWM") - base
        for _ in range(repeats):
            start = time.perf_counter()
            model.animate_batch(state, driving, kp_init)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
    return {"peak_frame_mib": round(max(peak, 0) / 2 ** 20, 1), "memory_method": method,
            "latency_ms_median": round(1000 * statistics.median(times), 1) if times else None}


def attention_worker(name: str, size: int, impl: str, device_name: str, level: int, window: int) -> dict:
    """Peak memory and time of one level's attention block alone on ``(1, C, side, side)`` features."""
    device = resolve_device(device_name)
    gen = build(name, impl, device, window).generator
    attn = gen.level_attention(level) if hasattr(gen, "level_attention") else gen.AttnModule
    side = size // 2 ** level
    g = torch.Generator().manual_seed(0)
    depth_feat = torch.rand(1, attn.value_conv.in_channels, side, side, generator=g).to(device)
    feat = torch.rand(1, attn.value_conv.in_channels, side, side, generator=g).to(device)
    with torch.no_grad():
        query = attn.project_query(depth_feat)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
        else:
            base = _read_status("VmRSS")
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
        start = time.perf_counter()
        attn(None, feat, query=query)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            peak = torch.cuda.max_memory_allocated(device) - base
        else:
            peak = _read_status("VmHWM") - base
        elapsed = time.perf_counter() - start
    return {"peak_mib": round(max(peak, 0) / 2 ** 20, 1), "ms": round(1000 * elapsed, 1)}


def measure_in_subprocess(name, size, impl, device, repeats, window, threads, level=None):
    cmd = [sys.executable, __file__, "--worker", name, str(size), impl, device, str(repeats), str(window),
           "--threads", str(threads)]
    if level is not None:
        cmd += ["--level", str(level)]
    # a fixed mmap threshold turns off glibc's dynamic one, so freed tensors leave the resident set and
    # the peak rise measures this frame's transient memory, not what an earlier frame left cached
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure_attention(name: str, size: int, level_row: dict, args) -> dict:
    """One level's attention alone: as configured (sdpa and plain), and unwindowed where affordable."""
    level = level_row["level"]
    run = lambda impl, window: measure_in_subprocess(name, size, impl, args.device, 0, window,  # noqa: E731
                                                     args.threads, level)
    out = {"configured_sdpa": run("sdpa", -1), "configured_plain": run("plain", -1)}
    if level_row["window"] is not None:
        if level_row["full_attention_gflops"] <= args.max_full_gflops:
            out["full_sdpa"] = run("sdpa", 0)
            if level_row["full_attention_score_mib_fp32"] <= 1024:
                out["full_plain"] = run("plain", 0)
        else:
            out["full_sdpa"] = f"skipped: {level_row['full_attention_gflops']} GFLOPs"
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed frames per measurement")
    parser.add_argument("--plain", action="store_true",
                        help="also measure the plain (materialised) attention at the smallest size")
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--no-frame", action="store_true", help="only the per-level attention measurements")
    parser.add_argument("--no-attention", action="store_true", help="skip the per-level attention measurements")
    parser.add_argument("--max-full-gflops", type=float, default=100.0,
                        help="measure full (unwindowed) attention at a level only below this cost")
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    parser.add_argument("--level", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.worker:
        name, size, impl, device, repeats, window = args.worker
        if args.level is not None:
            print(json.dumps(attention_worker(name, int(size), impl, device, args.level, int(window))))
        else:
            print(json.dumps(worker(name, int(size), impl, device, int(repeats), int(window))))
        return 0

    device = resolve_device(args.device)
    report = {"device": str(device), "threads": args.threads, "torch": torch.__version__, "models": {}}
    for name in CONFIGS:
        model = build(name, "sdpa", device)
        entry = {"config": str(CONFIGS[name].relative_to(REPO)),
                 "parameters": {"total": count_parameters(model),
                                **{sub: count_parameters(mod) for sub, mod in model.iter_submodules()}},
                 "sizes": {}}
        for size in args.sizes:
            row = {"attention": attention_levels(model, size)}
            for level_row in row["attention"]:
                if not args.no_attention:
                    level_row["measured"] = measure_attention(name, size, level_row, args)
            if not args.no_frame:
                frame_flops, gen_flops = flops(model, size, device)
                row.update(gflops_per_frame=round(frame_flops / 1e9, 2), generator_gflops=round(gen_flops / 1e9, 2),
                           sdpa=measure_in_subprocess(name, size, "sdpa", args.device, args.repeats, -1,
                                                      args.threads))
                if args.plain and size == min(args.sizes):
                    row["plain"] = measure_in_subprocess(name, size, "plain", args.device, args.repeats, -1,
                                                         args.threads)
            entry["sizes"][str(size)] = row
            print(json.dumps({name: {size: row}}), file=sys.stderr)
        report["models"][name] = entry
    print_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
