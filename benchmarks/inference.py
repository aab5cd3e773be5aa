"""Inference speed and memory of DaGAN: the plain official per-frame path against the fast path.

Prints one JSON document (and writes it with ``--out``): frames/s of every variant, measured round-robin in
one process so that load from other processes hits all variants alike (ratios are what to compare),
achieved GFLOP/s against a large 3x3 convolution measured in the same run, a per-sub-network profile,
the fast path's difference/PSNR against the plain path, and peak RSS of a streaming run per variant
(each in its own child process, at the start and at the end of the video: it must stay flat).

Variants (``cached``: source-only work done once; ``opt``: the fast path of :mod:`dagan.fast`: folded BatchNorm,
channels_last, sub-pixel decoder, chunked attention, ``dtype`` conv bodies). The ``fast_*`` variants are
``Animator(model, dtype=...)`` with default arguments, i.e. what every user and ``demo.py`` get; every variant but
``plain*`` runs the one per-frame step :meth:`DaGAN.animate_batch`.

====================  ======  =====  =====  ===========================================================
name                  dtype   batch  cache  what
====================  ======  =====  =====  ===========================================================
plain                 fp32    1      no     the official demo loop (full generator forward per frame)
plain_opt_fp32        fp32    1      no     same loop on the optimised model
plain_opt_bf16        bf16    1      no     same loop, bf16 conv bodies
cached_fp32           fp32    1      yes    source caching only (``Animator(fast=False)``)
fast_fp32             fp32    1      yes    ``Animator(model, dtype="float32")``
fast_fp32_batch       fp32    B      yes    the same Animator, B frames per call
fast_bf16             bf16    1      yes    ``Animator(model, dtype="bfloat16")`` (keypoint hourglass in fp32)
fast_bf16_batch       bf16    B      yes    the same Animator, B frames per call
fast_bf16_kp16        bf16    1      yes    bf16 with the keypoint hourglass in bf16 too (``precise_keypoints=False``)
onnx_fp32             fp32    1      yes    the exported frame graph in ONNX Runtime (CPU EP), ``OnnxAnimator``
onnx_int8             int8    1      yes    the same graph, convs statically quantised to int8 by ONNX Runtime
openvino_fp32         fp32    1      yes    the same graph in OpenVINO (CPU plugin, ``pip install openvino``)
openvino_bf16         bf16    1      yes    OpenVINO with ``INFERENCE_PRECISION_HINT=bf16``
compile_fp32          fp32    1      yes    the fp32 Animator with ``torch.compile`` of the generator
====================  ======  =====  =====  ===========================================================

Usage::

    python benchmarks/inference.py --config configs/dagan-vox-256.yaml --out bench.json
    python benchmarks/inference.py --config configs/dagan-tiny.yaml --frames 2 --rounds 1   # smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dagan import DaGAN, load_config  # noqa: E402
from dagan.fast import inference_model, optimize_for_inference, plain_frame  # noqa: E402
from dagan.inference.animator import Animator  # noqa: E402
from common import print_report  # noqa: E402

ALL_VARIANTS = ("plain", "plain_opt_fp32", "plain_opt_bf16", "cached_fp32", "fast_fp32", "fast_fp32_batch",
                "fast_bf16", "fast_bf16_batch", "fast_bf16_kp16", "onnx_fp32", "onnx_int8", "openvino_fp32",
                "openvino_bf16", "compile_fp32")
DEFAULT_VARIANTS = ("plain", "cached_fp32", "fast_fp32", "fast_fp32_batch", "fast_bf16", "fast_bf16_batch",
                    "fast_bf16_kp16", "onnx_fp32")
PROFILE_GROUPS = {
    "depth_net": ("depth_encoder", "depth_decoder"),
    "kp_detector": ("kp_detector",),
    "source_encoders": ("generator.first", "generator.down_blocks", "generator.src_first",
                        "generator.src_down_blocks"),
    "dense_motion": ("generator.dense_motion_network",),
    "attention": ("generator.AttnModule",),
    "bottleneck_decoder": ("generator.bottleneck", "generator.up_blocks", "generator.final", "generator.decoder"),
}


def _proc_status(field: str) -> Optional[float]:
    """A ``/proc/self/status`` memory field in MiB (Linux), None elsewhere."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def rss_mb() -> float:
    """Current resident set size in MiB."""
    value = _proc_status("VmRSS")
    return value if value is not None else peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident set size of this process image in MiB. ``VmHWM`` rather than ``ru_maxrss``: the
    latter survives ``exec`` on Linux, so a child would report its parent's peak."""
    value = _proc_status("VmHWM")
    if value is not None:
        return value
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2 ** 20 if sys.platform == "darwin" else peak / 2 ** 10


# ------------------------------------------------------------------------------------------ variants
class Variant:
    """A way of turning driving frames into output frames, with all per-source work already done: the plain
    official loop (``cached=False``), an :class:`Animator` (the one per-frame step), or an ONNX Runtime frame
    graph (``runner``)."""

    def __init__(self, name: str, model: Optional[DaGAN], source: torch.Tensor, first_frame: torch.Tensor,
                 cached: bool, batch: int, dtype: str, runner: Optional[Callable] = None):
        self.name, self.model, self.cached, self.batch, self.dtype = name, model, cached, batch, dtype
        self.runner = runner
        if runner is not None:
            return
        with torch.no_grad():
            if cached:
                self.animator = Animator(model, device="cpu", dtype="float32" if dtype == "plain" else dtype,
                                         fast=dtype != "plain")
                self.animator.set_source(source[0])
                self.animator.set_anchor(first_frame[0])
            else:
                self.source = source
                self.source_depth = model.estimate_depth(source)
                self.kp_source = model.detect_keypoints(source, self.source_depth)
                self.kp_initial = model.detect_keypoints(first_frame)

    @torch.no_grad()
    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        if self.runner is not None:
            return self.runner(frames)
        if self.cached:
            return self.animator.animate_tensor(frames)
        outs = [plain_frame(self.model, self.source, self.source_depth, self.kp_source, self.kp_initial, f)[0]
                for f in frames.split(self.batch)]
        return torch.cat(outs)


_TABLE = {  # name: (model key, cached, batch from --batch, dtype)
    "plain": ("plain", False, False, "float32"), "plain_opt_fp32": ("fp32", False, False, "float32"),
    "plain_opt_bf16": ("bf16", False, False, "bfloat16"), "cached_fp32": ("cached", True, False, "plain"),
    "fast_fp32": ("fp32", True, False, "float32"), "fast_fp32_batch": ("fp32", True, True, "float32"),
    "fast_bf16": ("bf16", True, False, "bfloat16"), "fast_bf16_batch": ("bf16", True, True, "bfloat16"),
    "fast_bf16_kp16": ("bf16_kp16", True, False, "bfloat16"), "compile_fp32": ("compile", True, False, "float32"),
}


def build_models(config, names, seed: int = 0) -> Dict[str, DaGAN]:
    """One model per setting, all with the same random weights (built on demand); the last one built is the
    base model itself, so a single-variant run holds one copy of the weights."""
    models: Dict[str, DaGAN] = {}
    torch.manual_seed(seed)
    base = DaGAN(config.model).eval()
    keys = []
    for n in names:
        key = "fp32" if n in _BACKENDS else _TABLE[n][0]
        if key not in keys:
            keys.append(key)
    state = {k: v.clone() for k, v in base.state_dict().items()} if len(keys) > 1 else {}
    for i, key in enumerate(keys):
        model = base if i == len(keys) - 1 else DaGAN(config.model).eval()
        if model is not base:
            model.load_state_dict(state)
        if key in ("fp32", "bf16"):
            model = inference_model(model, "float32" if key == "fp32" else "bfloat16")
        elif key == "bf16_kp16":
            model = optimize_for_inference(model, dtype="bfloat16", precise_keypoints=False)
        elif key == "compile":
            model = optimize_for_inference(model, dtype="float32", compile=True)
        models[key] = model
    return models


_EXPORTS: Dict[int, str] = {}


def exported(model: DaGAN) -> str:
    """The fp32 model exported once per run to ``source.onnx``/``frame.onnx`` (from the plain model: the fast
    path's rewrites are PyTorch-side); returns the folder."""
    import tempfile

    from dagan.export import export_onnx

    if id(model) not in _EXPORTS:
        folder = tempfile.mkdtemp(prefix="dagan-bench-onnx-")
        export_onnx(model, folder)
        _EXPORTS[id(model)] = folder
    return _EXPORTS[id(model)]


def quantized(folder: str, calibration: Callable[[], dict], frames: int = 4) -> str:
    """A copy of an export whose frame graph has its convolutions statically quantised to int8 by ONNX Runtime
    (QDQ, per-channel int8 weights, uint8 activations calibrated on ``frames`` feeds of ``calibration()``)."""
    import shutil
    import tempfile

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Feeds(CalibrationDataReader):
        def __init__(self):
            self.left = frames

        def get_next(self):
            self.left -= 1
            return calibration() if self.left >= 0 else None

    out = tempfile.mkdtemp(prefix="dagan-bench-int8-")
    shutil.copy(os.path.join(folder, "source.onnx"), out)
    quantize_static(os.path.join(folder, "frame.onnx"), os.path.join(out, "frame.onnx"), Feeds(),
                    quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"], per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def onnx_runner(model: DaGAN, source: torch.Tensor, first_frame: torch.Tensor, threads: int,
                backend: str = "ort") -> Callable:
    """The exported frame graph run on the CPU by ``backend``: ``"ort"`` (ONNX Runtime, fp32, the
    :class:`~dagan.export.OnnxAnimator`), ``"int8"`` (ONNX Runtime, :func:`quantized` convolutions),
    ``"openvino_f32"`` / ``"openvino_bf16"`` (OpenVINO's CPU plugin with that ``INFERENCE_PRECISION_HINT``; the
    source graph and the anchor still run in ONNX Runtime, once)."""
    from dagan.export import OnnxAnimator, _used

    folder = exported(model)
    anim = OnnxAnimator(folder, threads=threads)
    anim.set_source(source.numpy())
    anim(first_frame.numpy())  # anchors relative motion at the first frame

    def feeds(driving: np.ndarray) -> dict:
        return _used(anim.frame_session, {"driving": driving, **anim.source, **anim.anchor})

    if backend == "int8":
        gen = np.random.default_rng(1)
        folder = quantized(folder, lambda: feeds(gen.random(tuple(first_frame.shape), dtype=np.float32)))
        anim = OnnxAnimator(folder, threads=threads)
        anim.set_source(source.numpy())
        anim(first_frame.numpy())
    if backend.startswith("openvino"):
        import openvino

        compiled = openvino.Core().compile_model(
            os.path.join(folder, "frame.onnx"), "CPU",
            {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": backend.split("_")[1],
             "PERFORMANCE_HINT": "LATENCY"})
        request = compiled.create_infer_request()

        def run_openvino(frames: torch.Tensor) -> torch.Tensor:
            given = feeds(np.ascontiguousarray(frames.numpy()))
            inputs = {i: next(given[n] for n in port.get_names() if n in given)
                      for i, port in enumerate(compiled.inputs)}
            return torch.from_numpy(np.array(request.infer(inputs)[compiled.outputs[0]]))

        return run_openvino
    return lambda frames: torch.from_numpy(anim(frames.numpy()))


_BACKENDS = {"onnx_fp32": "ort", "onnx_int8": "int8", "openvino_fp32": "openvino_f32",
             "openvino_bf16": "openvino_bf16"}


def make_variant(name: str, models: Dict[str, DaGAN], source, first_frame, batch: int, threads: int = 2,
                 onnx_model: Optional[DaGAN] = None) -> Variant:
    if name in _BACKENDS:
        dtype = {"onnx_int8": "int8", "openvino_bf16": "bfloat16"}.get(name, "float32")
        return Variant(name, None, source, first_frame, True, 1, dtype,
                       runner=onnx_runner(onnx_model, source, first_frame, threads, _BACKENDS[name]))
    key, cached, batched, dtype = _TABLE[name]
    return Variant(name, models[key], source, first_frame, cached, batch if batched else 1, dtype)


# ---------------------------------------------------------------------------------------- measuring
def time_call(fn: Callable[[], object], repeat: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def reference_conv(threads: int) -> Dict[str, float]:
    """GFLOP/s of a large 3x3 convolution (256 -> 256 channels, 4 x 64 x 64, channels_last): the
    practical ceiling of this machine for conv-heavy networks."""
    out: Dict[str, float] = {}
    conv = torch.nn.Conv2d(256, 256, 3, padding=1).eval().to(memory_format=torch.channels_last)
    x = torch.rand(4, 256, 64, 64).contiguous(memory_format=torch.channels_last)
    flops = 2 * 4 * 64 * 64 * 256 * 256 * 9
    with torch.no_grad():
        for dtype, key in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
            c, xx = conv.to(dtype), x.to(dtype)
            out[f"{key}_gflops"] = round(flops / time_call(lambda: c(xx)) / 1e9, 1)
    return out


def count_flops(variant: Variant, frames: torch.Tensor) -> Optional[float]:
    """FLOPs (multiply-adds x 2) of convs, matmuls and attention for ``frames``, per frame."""
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:  # old torch
        return None
    counter = FlopCounterMode(display=False)
    with counter:
        variant(frames)
    return counter.get_total_flops() / frames.shape[0]


def profile(variant: Variant, frames: torch.Tensor) -> Dict[str, float]:
    """Wall-clock ms per frame of each sub-network group (forward hooks), plus the rest."""
    model = variant.model
    totals = {group: 0.0 for group in PROFILE_GROUPS}
    handles, starts = [], {}
    for group, paths in PROFILE_GROUPS.items():
        for path in paths:
            module = model
            for part in path.split("."):
                module = getattr(module, part, None)
                if module is None:
                    break
            if module is None:
                continue
            subs = list(module) if isinstance(module, torch.nn.ModuleList) else [module]
            for sub in subs:
                def pre(_m, _a, key=id(sub)):
                    starts[key] = time.perf_counter()

                def post(_m, _a, _o, key=id(sub), group=group):
                    totals[group] += time.perf_counter() - starts[key]

                handles += [sub.register_forward_pre_hook(pre), sub.register_forward_hook(post)]
    variant(frames[:1] if variant.batch == 1 else frames)  # warm-up
    for g in totals:
        totals[g] = 0.0
    start = time.perf_counter()
    n = 0
    for chunk in frames.split(variant.batch):
        variant(chunk)
        n += chunk.shape[0]
    total = time.perf_counter() - start
    for h in handles:
        h.remove()
    result = {g: round(1000 * t / n, 1) for g, t in totals.items()}
    result["other"] = round(1000 * total / n - sum(result.values()), 1)
    result["total"] = round(1000 * total / n, 1)
    return result


#: the speed-up over the plain loop each target asks of the fast path
TARGETS = {"fast_fp32": 2.5, "fast_bf16": 5.0}


def flop_bound(report: dict) -> Dict[str, dict]:
    """What the FLOPs allow: for each fast variant, the time its FLOPs take at the large 3x3 conv's GFLOP/s
    measured in the same run (the practical peak), the speed-up over the plain loop that would give, and
    the share of that peak the whole frame must reach for the variant's target."""
    results, peak = report.get("variants", {}), report.get("reference_conv", {})
    plain = results.get("plain", {}).get("ms_per_frame")
    out: Dict[str, dict] = {}
    for name, target in TARGETS.items():
        row = results.get(name, {})
        gflop = row.get("gflop_per_frame")
        gflops = peak.get("bf16_gflops" if row.get("dtype") == "bfloat16" else "fp32_gflops")
        if not (plain and gflop and gflops):
            continue
        at_peak = 1000 * gflop / gflops
        out[name] = {"gflop_per_frame": gflop, "conv_peak_gflops": gflops, "ms_at_conv_peak": round(at_peak, 1),
                     "max_speedup_vs_plain": round(plain / at_peak, 2), "target_speedup": target,
                     "peak_share_needed_for_target": round(gflop * target / plain * 1000 / gflops, 3),
                     "peak_share_reached": round(row.get("achieved_gflops", 0) / gflops, 3)}
    return out


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.float() - b.float()) ** 2).mean())
    return float("inf") if mse == 0 else round(10 * torch.log10(torch.tensor(1.0 / mse)).item(), 2)


# ------------------------------------------------------------------------------------------- RSS child
def rss_child(args) -> Dict[str, float]:
    """Stream ``--rss-frames`` frames through one variant and report resident memory (own process)."""
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    args.import_rss = rss_mb()  # the torch/torchvision runtime alone, before any model exists
    config = load_config(args.config)
    size = config.model.image_size
    models = build_models(config, [args.child], args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    source = torch.rand(1, 3, size, size, generator=gen)
    variant = make_variant(args.child, models, source, torch.rand(1, 3, size, size, generator=gen), args.batch)
    after_load = rss_mb()
    early = None
    done = 0
    while done < args.rss_frames:
        frames = torch.rand(variant.batch, 3, size, size, generator=gen)
        variant(frames)
        done += variant.batch
        if early is None and done >= min(5, args.rss_frames):
            early = rss_mb()
    return {"variant": args.child, "frames": done, "rss_after_load_mb": round(after_load, 1),
            "rss_early_mb": round(early or rss_mb(), 1), "rss_end_mb": round(rss_mb(), 1),
            "peak_rss_mb": round(peak_rss_mb(), 1), "rss_import_torch_mb": round(args.import_rss, 1),
            "rss_anon_end_mb": round(_proc_status("RssAnon") or 0, 1),
            "rss_file_end_mb": round(_proc_status("RssFile") or 0, 1)}


def measure_rss(args, names: List[str]) -> Dict[str, dict]:
    out = {}
    for name in names:
        cmd = [sys.executable, os.path.abspath(__file__), "--config", args.config, "--child", name, "--rss-frames",
               str(args.rss_frames), "--threads", str(args.threads), "--batch", str(args.batch), "--seed",
               str(args.seed)]
        _log(f"memory: {name}")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            out[name] = {"error": proc.stderr.strip().splitlines()[-1:] or ["failed"]}
        else:
            out[name] = json.loads(proc.stdout)
    return out


# --------------------------------------------------------------------------------------------- main
def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _partial(args, report: dict) -> None:
    """Write what is measured so far (``--out``), so a long run on a busy machine is never all lost."""
    if args.out:
        from dagan.utils import atomic_write_bytes

        atomic_write_bytes(args.out, (json.dumps(dict(report, partial=True), indent=2) + "\n").encode())


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    config = load_config(args.config)
    size = config.model.image_size
    names = [n for n in args.variants if n in ALL_VARIANTS]
    gen = torch.Generator().manual_seed(args.seed)
    source = torch.rand(1, 3, size, size, generator=gen)
    pool = torch.rand(max(args.frames, args.batch), 3, size, size, generator=gen)
    models = build_models(config, names, args.seed)
    if set(_BACKENDS) & set(names) and not ({"plain", "cached"} & set(models)):
        raise SystemExit("the ONNX variants export the plain model: also measure plain or cached_fp32")
    onnx_model = models.get("plain", models.get("cached"))
    variants = {}
    for n in names:
        _log(f"setting up {n}")
        variants[n] = make_variant(n, models, source, pool[:1], args.batch, args.threads, onnx_model)

    report: dict = {
        "config": args.config, "image_size": size, "threads": torch.get_num_threads(),
        "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
        "load_average_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "frames_per_round": args.frames, "rounds": args.rounds, "batch": args.batch,
    }
    _log("reference conv")
    report["reference_conv"] = reference_conv(args.threads)

    # accuracy of the fast paths against the plain one, same frames
    with torch.no_grad():
        acc_frames = pool[:args.batch]
        baseline = variants["plain"](acc_frames) if "plain" in variants else None
        if baseline is not None:
            accuracy = {}
            for n, v in variants.items():
                if n != "plain":
                    out = v(acc_frames)
                    accuracy[n] = {"max_abs_diff": float((out - baseline).abs().max()), "psnr_db": psnr(out, baseline)}
            report["accuracy_vs_plain"] = accuracy

    # round-robin timing: every round times every variant on the same frames
    # (CPU time of the process is recorded too: on a machine shared with other jobs it is far less
    # disturbed than wall time, since waiting for a core does not count)
    samples: Dict[str, List[float]] = {n: [] for n in names}
    cpu_samples: Dict[str, List[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        for n, v in variants.items():
            _log(f"round {r + 1}/{args.rounds}: {n}")
            frames = pool[:max(args.frames // v.batch, 1) * v.batch]
            v(frames[:v.batch])  # warm
            start, cpu_start = time.perf_counter(), time.process_time()
            for chunk in frames.split(v.batch):
                v(chunk)
            samples[n].append((time.perf_counter() - start) / frames.shape[0])
            cpu_samples[n].append((time.process_time() - cpu_start) / frames.shape[0])

    flop_frames = pool[:1]
    results = {}
    for n, v in variants.items():
        sec = statistics.median(samples[n])
        flops = count_flops(v, pool[:v.batch]) if v.batch > 1 else count_flops(v, flop_frames)
        results[n] = {"dtype": v.dtype, "batch": v.batch, "cached": v.cached, "ms_per_frame": round(1000 * sec, 1),
                      "best_ms_per_frame": round(1000 * min(samples[n]), 1),
                      "cpu_ms_per_frame": round(1000 * statistics.median(cpu_samples[n]), 1),
                      "frames_per_s": round(1 / sec, 3), "samples_ms": [round(1000 * s, 1) for s in samples[n]]}
        if flops:
            results[n]["gflop_per_frame"] = round(flops / 1e9, 2)
            results[n]["achieved_gflops"] = round(flops / sec / 1e9, 1)
    report["variants"] = results
    if "plain" in results:
        plain_fps = results["plain"]["frames_per_s"]
        report["speedup_vs_plain"] = {n: round(r["frames_per_s"] / plain_fps, 2) for n, r in results.items()}
        report["speedup_vs_plain_cpu_time"] = {
            n: round(results["plain"]["cpu_ms_per_frame"] / r["cpu_ms_per_frame"], 2) for n, r in results.items()}
        # on a shared machine the fastest round of each variant is the least disturbed one
        report["speedup_vs_plain_best_round"] = {
            n: round(results["plain"]["best_ms_per_frame"] / r["best_ms_per_frame"], 2) for n, r in results.items()}

    report["flop_bound"] = flop_bound(report)
    _partial(args, report)
    if args.profile:
        report["profile_ms_per_frame"] = {n: profile(variants[n], pool[:args.frames])
                                          for n in ("plain", "fast_fp32", "fast_bf16") if n in variants}
    _partial(args, report)
    del variants, models
    if args.rss_frames > 0:
        report["memory"] = measure_rss(args, [n for n in args.rss_variants if n in names])
    speed = report.get("speedup_vs_plain", {})
    peaks = [m.get("peak_rss_mb", 0) for m in report.get("memory", {}).values()]
    if args.demo_frames > 0:
        report["demo_default"] = demo_speed(args)
    report["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    demo_fps = report.get("demo_default", {}).get("frames_per_s", 0)
    report["targets"] = {
        "fast_fp32_ge_2.5x_plain": speed.get("fast_fp32", 0) >= 2.5,
        "fast_bf16_ge_5x_plain": speed.get("fast_bf16", 0) >= 5,
        "demo_default_small_model_ge_25_fps": demo_fps >= 25,
        "peak_rss_lt_1GiB": bool(peaks) and max(peaks) < 1024,
    }
    return report


def demo_speed(args) -> dict:
    """frames/s of the default demo (``demo.py`` with no model options: the shipped small model at ``--size 256``,
    ``--dtype auto``) over ``--demo-frames`` frames of the built-in clip, decode/encode threads included; the
    clock starts at the first animated frame (model loading and warm-up excluded)."""
    import tempfile

    from dagan.inference import pipeline

    stamps: List[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        demo_args = pipeline.AnimateOptions(max_frames=args.demo_frames, result_video=os.path.join(tmp, "demo.mp4"),
                                            quiet=True)
        _log(f"default demo, {args.demo_frames} frames")
        pipeline.run(demo_args, on_frame=lambda done, total: stamps.append(time.perf_counter()))
    device, dtype = demo_args.runtime()
    fps = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0
    return {"frames": len(stamps), "output_size": demo_args.size, "dtype": str(dtype).replace("torch.", ""),
            "batch_size": demo_args.batch_size, "frames_per_s": round(fps, 2)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" / "dagan-vox-256.yaml"))
    p.add_argument("--frames", type=int, default=4, help="frames per variant and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=4, help="batch size of the *_batch variants")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=ALL_VARIANTS)
    p.add_argument("--demo-frames", type=int, default=60, help="frames of the default-demo speed run (0: skip)")
    p.add_argument("--no-profile", dest="profile", action="store_false")
    p.add_argument("--rss-frames", type=int, default=12, help="frames streamed per memory child (0: skip)")
    p.add_argument("--rss-variants", nargs="+", default=["plain", "fast_fp32", "fast_bf16"],
                   choices=ALL_VARIANTS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="also write the JSON here")
    p.add_argument("--child", choices=ALL_VARIANTS, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    print_report(rss_child(args) if args.child else run(args), args.out)


if __name__ == "__main__":
    main()
