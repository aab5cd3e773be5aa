"""Export the DaGAN inference path as graphs, for ONNX Runtime / TorchScript deployments.

* ``source``: ``source (B, 3, H, W)`` in [0, 1] -> ``source_depth (B, 1, H, W)``, ``kp_source_value (B, K, 2)``,
  ``kp_source_jacobian (B, K, 2, 2)``, ``appearance (B, C, h, w)``, ``query (B, hw, C/8)``,
  ``source_small (B, 3, h', w')``: everything source-only, computed once per portrait.
* ``frame``: driving frames ``(B, 3, H, W)`` + the cached source tensors (batch 1, broadcast) + the anchor
  keypoints ``kp_initial_value (1, K, 2)``, ``kp_initial_jacobian (1, K, 2, 2)`` + ``scale (1,)`` ->
  ``prediction (B, 3, H, W)``, ``kp_driving_value``, ``kp_driving_jacobian`` (the first frame's keypoints are
  the anchor of relative motion). Driving depth, keypoints, motion normalisation, dense motion, warping,
  attention and decoding are all in the graph. Exported with an output size (``--size N``), the frame graph
  also takes ``source_full (1, 3, N, N)`` (the portrait at N px) and renders ``prediction (B, 3, N, N)`` as
  ``Animator(output_size=N)`` does (:func:`~dagan.models.generator.render_output`).
* ``drive`` and ``render``: the frame graph's two halves, for a motion stage of one's own between them (the
  face guide, :class:`~dagan.inference.guide.LandmarkGuide`): ``driving (B, 3, H, W)`` -> ``kp_driving_value``,
  ``kp_driving_jacobian``; and the cached source tensors + ``kp_norm_value (B, K, 2)``,
  ``kp_norm_jacobian (B, K, 2, 2)`` (the normalised keypoints that move the source) -> ``prediction``
  (:meth:`OnnxAnimator.keypoints`, :meth:`OnnxAnimator.render`).

What stays in Python: face detection and landmarks, the guide's fit (:func:`~dagan.inference.guide.guide_keypoints`,
a few 2x2 solves per frame) and the landmark motion stage (:mod:`dagan.inference.landmark_motion`); the graphs
hold the networks and the keypoint motion.

The batch axis of every graph is dynamic. The adapt-movement scale (a ratio of convex-hull areas of the source
and anchor keypoints) is not a tensor operation: it is computed outside the graph, once per source/anchor
(:func:`~dagan.models.dagan.anchor_motion`), and fed as the ``scale`` input (1.0 = no adaptation).

ONNX notes: ``grid_sample`` needs opset >= 16 (default here: 17); ONNX has no matrix inverse, so the 2x2
Jacobian inverses are exported as their closed form ``adj(J) / det(J)``.

Usage::

    python -m dagan.export --checkpoint checkpoints/dagan-tiny --format onnx out/
    python -m dagan.export --checkpoint model_dir --format all --opset 17 out/   # + TorchScript

``out/`` receives ``source.onnx``, ``frame.onnx``, ``drive.onnx``, ``render.onnx`` (and/or the same as ``.ts.pt``) and
``export.json`` (inputs, outputs, sizes, and the max abs difference against PyTorch measured with
ONNX Runtime when it is installed). :class:`~dagan.onnx_animator.OnnxAnimator` runs the exported graphs.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from .cliutil import DashUnderscoreParser, run_cli, setup_logging
from .errors import InputError, MissingWeightsError, OutputError
from .inference.loading import load_model
from .models.dagan import DaGAN, SourceState, anchor_motion, normalize_kp
from .onnx_animator import OnnxAnimator, _onnxruntime, _used  # noqa: F401  (OnnxAnimator: re-exported)
from .utils import atomic_write_bytes, temporary_output

logger = logging.getLogger("dagan")

SOURCE_OUTPUTS = ("source_depth", "kp_source_value", "kp_source_jacobian", "appearance", "query", "source_small")
FRAME_INPUTS = ("driving", "source_image", "appearance", "query", "source_small", "kp_source_value",
                "kp_source_jacobian", "kp_initial_value", "kp_initial_jacobian", "scale")
FRAME_OUTPUTS = ("prediction", "kp_driving_value", "kp_driving_jacobian")
DRIVE_OUTPUTS = FRAME_OUTPUTS[1:]
RENDER_OUTPUTS = FRAME_OUTPUTS[:1]
GRAPHS = ("source", "frame", "drive", "render")
FORMATS = ("onnx", "torchscript", "all")
_KP_INPUTS = ("kp_source_value", "kp_source_jacobian", "kp_initial_value", "kp_initial_jacobian", "scale")


def cache_names(model: DaGAN) -> Tuple[str, ...]:
    """The cached source tensors the frame graph takes besides ``source_image``: DaGAN's ``appearance``,
    ``query``, ``source_small``, or the generator's own ``cache_keys`` (DaGAN++: one of each per level)."""
    keys = getattr(model.generator, "cache_keys", ("source_image",) + SOURCE_OUTPUTS[3:])
    return tuple(k for k in keys if k != "source_image")


def source_outputs(model: DaGAN) -> Tuple[str, ...]:
    return SOURCE_OUTPUTS[:3] + cache_names(model)


def frame_inputs_names(model: DaGAN, output_size: Optional[int] = None) -> Tuple[str, ...]:
    full = ("source_full",) if output_size else ()
    return ("driving", "source_image") + full + cache_names(model) + _KP_INPUTS


def render_inputs_names(model: DaGAN, output_size: Optional[int] = None) -> Tuple[str, ...]:
    """The render graph's inputs: the frame graph's source tensors and the normalised keypoints."""
    return frame_inputs_names(model, output_size)[1:-5] + _KP_INPUTS[:2] + ("kp_norm_value", "kp_norm_jacobian")


# ---------------------------------------------------------------------------------------- the graphs
class SourceGraph(nn.Module):
    """Source-only work of :class:`DaGAN` as one module: ``source (B, 3, H, W)`` -> the tensors named by
    :func:`source_outputs` (DaGAN: :data:`SOURCE_OUTPUTS`)."""

    def __init__(self, model: DaGAN):
        super().__init__()
        self.model = model
        self.cache_names = cache_names(model)
        self.eval()  # exporters restore the wrapper's training flag afterwards: it must be eval too

    def forward(self, source: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        depth = self.model.estimate_depth(source)
        kp = self.model.detect_keypoints(source, depth)
        cache = self.model.generator.encode_source(source, depth)
        return (depth, kp["value"], kp["jacobian"], *(cache[k] for k in self.cache_names))


def _source_state(source_image: torch.Tensor, tensors: Sequence[torch.Tensor], names: Sequence[str],
                  full: bool) -> Tuple[SourceState, Sequence[torch.Tensor]]:
    """The :class:`SourceState` a graph rebuilds from its flat inputs (``[source_full], *cache,
    kp_source_value, kp_source_jacobian, ...``); returns it and the inputs after the source keypoints."""
    cache = {"source_image": source_image}
    if full:
        cache["source_full"], tensors = tensors[0], tensors[1:]
    cache.update(zip(names, tensors[:len(names)]))
    kp_value, kp_jacobian = tensors[len(names):len(names) + 2]
    return SourceState(source_image, None, {"value": kp_value, "jacobian": kp_jacobian}, cache), \
        tensors[len(names) + 2:]


class FrameGraph(nn.Module):
    """Per-frame work of :class:`DaGAN` from cached source tensors (see the module docstring).

    ``relative`` (baked in at export): relative motion ``(kp_d - kp_d0) * scale + kp_s`` with Jacobians
    ``J_d inv(J_d0) J_s``, else absolute driving keypoints (the anchor inputs are then unused).
    """

    def __init__(self, model: DaGAN, relative: bool = True, output_size: Optional[int] = None):
        super().__init__()
        self.model = model
        self.relative = relative
        self.output_size = output_size
        self.cache_names = cache_names(model)
        self.eval()

    def forward(self, driving, source_image, *cached_and_kp) -> Tuple[torch.Tensor, ...]:
        """Inputs in the order of :func:`frame_inputs_names` (DaGAN: :data:`FRAME_INPUTS`); the per-frame step
        is :meth:`DaGAN.animate_batch`, with the scale as a tensor input."""
        state, (kp_initial_value, kp_initial_jacobian, scale) = _source_state(
            source_image, cached_and_kp, self.cache_names, bool(self.output_size))
        out = self.model.animate_batch(state, driving, {"value": kp_initial_value, "jacobian": kp_initial_jacobian},
                                       self.relative, scale, return_details=True)
        return out["prediction"], out["kp_driving"]["value"], out["kp_driving"]["jacobian"]


class DriveGraph(nn.Module):
    """The driving half of the frame graph: ``driving (B, 3, H, W)`` -> ``kp_driving_value (B, K, 2)``,
    ``kp_driving_jacobian (B, K, 2, 2)`` (driving depth and keypoints, as :meth:`DaGAN.drive`)."""

    def __init__(self, model: DaGAN):
        super().__init__()
        self.model = model
        self.eval()

    def forward(self, driving: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        kp = self.model.detect_keypoints(driving)
        return kp["value"], kp["jacobian"]


class RenderGraph(nn.Module):
    """The render half of the frame graph: the cached source tensors and the normalised keypoints (inputs in
    the order of :func:`render_inputs_names`) -> ``prediction (B, 3, O, O)``, as :meth:`DaGAN.render`."""

    def __init__(self, model: DaGAN, output_size: Optional[int] = None):
        super().__init__()
        self.model = model
        self.output_size = output_size
        self.cache_names = cache_names(model)
        self.eval()

    def forward(self, source_image, *cached_and_kp) -> torch.Tensor:
        state, (kp_norm_value, kp_norm_jacobian) = _source_state(source_image, cached_and_kp, self.cache_names,
                                                                 bool(self.output_size))
        return self.model.render(state, {"value": kp_norm_value, "jacobian": kp_norm_jacobian})["prediction"]


def example_inputs(model: DaGAN, batch: int = 2, seed: int = 0, output_size: Optional[int] = None
                   ) -> Tuple[torch.Tensor, Tuple[torch.Tensor, ...]]:
    """A random source ``(1, 3, H, W)`` and frame-graph inputs with ``batch`` driving frames (and the source
    at ``output_size`` when given)."""
    size = model.image_size
    gen = torch.Generator().manual_seed(seed)
    source = torch.rand(1, 3, size, size, generator=gen)
    driving = torch.rand(batch, 3, size, size, generator=gen)
    with torch.no_grad():
        src = SourceGraph(model)(source)
        kp0, scale = anchor_motion({"value": src[1]}, model.detect_keypoints(driving[:1]))
    scale = torch.tensor([scale], dtype=torch.float32)
    full = () if not output_size else (torch.nn.functional.interpolate(
        source, size=(output_size, output_size), mode="bicubic", align_corners=False).clamp(0, 1),)
    frame_inputs = (driving, source, *full, *src[3:], src[1], src[2], kp0["value"], kp0["jacobian"], scale)
    return source, frame_inputs


def render_example_inputs(model: DaGAN, frame_inputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
    """The render graph's inputs for the frames of :func:`example_inputs`: its source tensors and the
    driving frames' normalised keypoints (relative motion from the anchor at the anchor's scale)."""
    *source_tensors, kp_initial_value, kp_initial_jacobian, scale = frame_inputs[1:]
    kp_source = {"value": source_tensors[-2], "jacobian": source_tensors[-1]}
    with torch.no_grad():
        kp_driving = model.detect_keypoints(frame_inputs[0])
    kp_norm = normalize_kp(kp_source, kp_driving, {"value": kp_initial_value, "jacobian": kp_initial_jacobian},
                           True, scale)[0]
    return (*source_tensors, kp_norm["value"], kp_norm["jacobian"])


def graph_jobs(model: DaGAN, relative: bool = True, batch: int = 2, output_size: Optional[int] = None,
               seed: int = 0):
    """``(name, module, example args, input names, output names)`` of each exported graph (:data:`GRAPHS`),
    with random example inputs (``batch`` driving frames)."""
    source, frame_inputs = example_inputs(model, batch=batch, seed=seed, output_size=output_size)
    return [("source", SourceGraph(model), (source,), ("source",), source_outputs(model)),
            ("frame", FrameGraph(model, relative, output_size), frame_inputs, frame_inputs_names(model, output_size),
             FRAME_OUTPUTS),
            ("drive", DriveGraph(model), frame_inputs[:1], ("driving",), DRIVE_OUTPUTS),
            ("render", RenderGraph(model, output_size), render_example_inputs(model, frame_inputs),
             render_inputs_names(model, output_size), RENDER_OUTPUTS)]


# ------------------------------------------------------------------------------------------- ONNX
def _inverse_2x2_symbolic(g, x):
    """ONNX has no matrix inverse: ``inv(J) = [[d, -b], [-c, a]] / (ad - bc)`` for ``(..., 2, 2)``."""
    def part(row, col):
        starts = g.op("Constant", value_t=torch.tensor([row, col], dtype=torch.int64))
        ends = g.op("Constant", value_t=torch.tensor([row + 1, col + 1], dtype=torch.int64))
        axes = g.op("Constant", value_t=torch.tensor([-2, -1], dtype=torch.int64))
        return g.op("Slice", x, starts, ends, axes)

    a, b, c, d = part(0, 0), part(0, 1), part(1, 0), part(1, 1)
    det = g.op("Sub", g.op("Mul", a, d), g.op("Mul", b, c))
    top = g.op("Concat", d, g.op("Neg", b), axis_i=-1)
    bottom = g.op("Concat", g.op("Neg", c), a, axis_i=-1)
    return g.op("Div", g.op("Concat", top, bottom, axis_i=-2), det)


def _register_onnx_symbolics(opset: int) -> None:
    for name in ("aten::linalg_inv", "aten::inverse"):
        torch.onnx.register_custom_op_symbolic(name, _inverse_2x2_symbolic, opset)


def export_onnx(model: DaGAN, out_dir: Union[str, os.PathLike], opset: int = 17, relative: bool = True,
                batch: int = 2, output_size: Optional[int] = None) -> Dict[str, str]:
    """Write ``source.onnx`` and ``frame.onnx`` (dynamic batch) into ``out_dir``; returns their paths.

    Uses the TorchScript-based exporter (``dynamo=False``): it needs no extra package and handles
    ``grid_sample`` (opset >= 16) and the closed-form 2x2 inverse registered here.
    """
    if opset < 16:
        raise InputError(f"ONNX export needs opset >= 16 (grid_sample), got {opset}")
    if not model.config.estimate_jacobian:
        raise InputError("ONNX export of models without Jacobians is not supported")
    model = model.eval()
    _register_onnx_symbolics(opset)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    # batch 1 (broadcast) for the cached source tensors and anchor keypoints of the frame and render graphs
    per_frame = ("source", "driving", "kp_norm_value", "kp_norm_jacobian") + FRAME_OUTPUTS
    for name, graph, args, inputs, outputs in graph_jobs(model, relative, batch, output_size):
        axes = {n: {0: "batch"} for n in (*inputs, *outputs) if name == "source" or n in per_frame}
        path = out_dir / f"{name}.onnx"
        with temporary_output(path) as tmp, torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about Python-side shape checks (constant here)
            torch.onnx.export(graph, args, tmp, dynamo=False, opset_version=opset, input_names=list(inputs),
                              output_names=list(outputs), dynamic_axes=axes, do_constant_folding=True)
        paths[name] = str(path)
    return paths


def export_torchscript(model: DaGAN, out_dir: Union[str, os.PathLike], relative: bool = True,
                       batch: int = 2, output_size: Optional[int] = None) -> Dict[str, str]:
    """Traced TorchScript modules ``source.ts.pt``, ``frame.ts.pt``, ``drive.ts.pt``, ``render.ts.pt`` (load
    with :func:`torch.jit.load`)."""
    model = model.eval()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, graph, args, _, _ in graph_jobs(model, relative, batch, output_size):
        path = out_dir / f"{name}.ts.pt"
        with temporary_output(path) as tmp, torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(graph, args, check_trace=False)
            torch.jit.save(traced, tmp)
        paths[name] = str(path)
    return paths


def verify_onnx(model: DaGAN, out_dir: Union[str, os.PathLike], batch: int = 3, relative: bool = True,
                output_size: Optional[int] = None) -> Dict[str, float]:
    """Max abs differences between ONNX Runtime and PyTorch on random inputs (``batch`` frames, so the
    dynamic batch axis is exercised with a size other than the one used at export)."""
    ort = _onnxruntime()
    diffs = {}
    for name, graph, args, inputs, outputs in graph_jobs(model, relative, batch, output_size, seed=1):
        with torch.no_grad():
            expected = graph(*args)
        expected = (expected,) if isinstance(expected, torch.Tensor) else expected
        sess = ort.InferenceSession(str(Path(out_dir) / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        got = sess.run(None, _used(sess, {n: t.numpy() for n, t in zip(inputs, args)}))
        diffs.update({f"{name}/{n}": float(np.abs(g - r.numpy()).max()) for n, g, r in zip(outputs, got, expected)})
    return diffs


# -------------------------------------------------------------------------------------------- CLI
def build_parser() -> DashUnderscoreParser:
    p = DashUnderscoreParser(prog="python -m dagan.export", description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="output directory")
    p.add_argument("--checkpoint", required=True, help="our model directory or .pt file (DaGAN.from_pretrained)")
    p.add_argument("--format", default="onnx", choices=FORMATS)
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 16 for grid_sample)")
    p.add_argument("--absolute", action="store_true", help="absolute instead of relative keypoint motion")
    p.add_argument("--size", type=int, metavar="N", help="render predictions at N px (the frame graph then also "
                   "takes source_full, the portrait at N px); default: the model's size")
    p.add_argument("--no_verify", action="store_true", help="skip the ONNX Runtime comparison")
    p.add_argument("--trust_checkpoint", action="store_true",
                   help="allow pickled Python objects in the checkpoint (only for files you trust)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.quiet, args.debug)
    if not os.path.exists(args.checkpoint):
        raise InputError(f"checkpoint {args.checkpoint} not found")
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir} exists and is not a directory")
    model = load_model(args.checkpoint, trust=args.trust_checkpoint)[0].eval()
    relative = not args.absolute
    size = args.size
    if size is not None and size < 8:
        raise InputError(f"--size must be at least 8 pixels, got {size}")
    meta: Dict[str, object] = {
        "checkpoint": os.path.abspath(args.checkpoint), "image_size": model.image_size, "num_kp": model.config.num_kp,
        "relative": relative, "output_size": size or model.image_size, "dynamic_axes": "batch (axis 0) of every input and output except the cached source "
        "tensors and anchor keypoints of the frame graph, which take batch 1", "files": {}}
    if args.format in ("onnx", "all"):
        meta["files"]["onnx"] = export_onnx(model, out_dir, args.opset, relative, output_size=size)
        meta.update(opset=args.opset, source_outputs=list(source_outputs(model)),
                    frame_inputs=list(frame_inputs_names(model, size)),
                    frame_outputs=list(FRAME_OUTPUTS), render_inputs=list(render_inputs_names(model, size)))
        if not args.no_verify:
            try:
                diffs = verify_onnx(model, out_dir, relative=relative, output_size=size)
            except MissingWeightsError as exc:
                logger.warning("not verified: %s", exc)
            else:
                meta["onnxruntime_max_abs_diff"] = diffs
                logger.info("onnxruntime vs PyTorch: max abs diff %.2e", max(diffs.values()))
    if args.format in ("torchscript", "all"):
        meta["files"]["torchscript"] = export_torchscript(model, out_dir, relative, output_size=size)
    atomic_write_bytes(out_dir / "export.json", (json.dumps(meta, indent=2) + "\n").encode())
    logger.info("wrote %s", ", ".join(p for files in meta["files"].values() for p in files.values()))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
