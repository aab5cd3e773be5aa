"""Export the DaGAN inference path as two graphs, for ONNX Runtime / TorchScript deployments.

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

The batch axis of both graphs is dynamic. The adapt-movement scale (a ratio of convex-hull areas of the source
and anchor keypoints) is not a tensor operation: it is computed outside the graph, once per source/anchor
(:func:`movement_scale`), and fed as the ``scale`` input (1.0 = no adaptation).

ONNX notes: ``grid_sample`` needs opset >= 16 (default here: 17); ONNX has no matrix inverse, so the 2x2
Jacobian inverses are exported as their closed form ``adj(J) / det(J)``.

Usage::

    python -m dagan.export --checkpoint checkpoints/dagan-tiny --format onnx out/
    python -m dagan.export --checkpoint model_dir --format all --opset 17 out/   # + TorchScript

``out/`` receives ``source.onnx``, ``frame.onnx`` (and/or ``source.ts.pt``, ``frame.ts.pt``) and
``export.json`` (inputs, outputs, sizes, and the max abs difference against PyTorch measured with
ONNX Runtime when it is installed). :class:`OnnxAnimator` runs the exported pair.
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
from .models.dagan import DaGAN, SourceState, movement_scale
from .utils import atomic_write_bytes, temporary_output

logger = logging.getLogger("dagan")

SOURCE_OUTPUTS = ("source_depth", "kp_source_value", "kp_source_jacobian", "appearance", "query", "source_small")
FRAME_INPUTS = ("driving", "source_image", "appearance", "query", "source_small", "kp_source_value",
                "kp_source_jacobian", "kp_initial_value", "kp_initial_jacobian", "scale")
FRAME_OUTPUTS = ("prediction", "kp_driving_value", "kp_driving_jacobian")
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
        full = {}
        if self.output_size:
            full, cached_and_kp = {"source_full": cached_and_kp[0]}, cached_and_kp[1:]
        n = len(self.cache_names)
        kp_source_value, kp_source_jacobian, kp_initial_value, kp_initial_jacobian, scale = cached_and_kp[n:]
        cache = {"source_image": source_image, **full, **dict(zip(self.cache_names, cached_and_kp[:n]))}
        state = SourceState(source_image, None, {"value": kp_source_value, "jacobian": kp_source_jacobian}, cache)
        out = self.model.animate_batch(state, driving, {"value": kp_initial_value, "jacobian": kp_initial_jacobian},
                                       self.relative, scale, return_details=True)
        return out["prediction"], out["kp_driving"]["value"], out["kp_driving"]["jacobian"]


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
        kp0 = model.detect_keypoints(driving[:1])
    scale = torch.tensor([movement_scale(src[1].numpy(), kp0["value"].numpy())], dtype=torch.float32)
    full = () if not output_size else (torch.nn.functional.interpolate(
        source, size=(output_size, output_size), mode="bicubic", align_corners=False).clamp(0, 1),)
    frame_inputs = (driving, source, *full, *src[3:], src[1], src[2], kp0["value"], kp0["jacobian"], scale)
    return source, frame_inputs


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
    source, frame_inputs = example_inputs(model, batch=batch, output_size=output_size)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    batch_axis = {"source": {0: "batch"}, **{name: {0: "batch"} for name in source_outputs(model)}}
    frame_axes = {"driving": {0: "batch"}, **{name: {0: "batch"} for name in FRAME_OUTPUTS}}
    jobs = [("source", SourceGraph(model), (source,), ["source"], list(source_outputs(model)), batch_axis),
            ("frame", FrameGraph(model, relative, output_size), frame_inputs,
             list(frame_inputs_names(model, output_size)),
             list(FRAME_OUTPUTS), frame_axes)]
    for name, graph, args, inputs, outputs, axes in jobs:
        path = out_dir / f"{name}.onnx"
        with temporary_output(path) as tmp, torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about Python-side shape checks (constant here)
            torch.onnx.export(graph, args, tmp, dynamo=False, opset_version=opset, input_names=inputs,
                              output_names=outputs, dynamic_axes=axes, do_constant_folding=True)
        paths[name] = str(path)
    return paths


def export_torchscript(model: DaGAN, out_dir: Union[str, os.PathLike], relative: bool = True,
                       batch: int = 2, output_size: Optional[int] = None) -> Dict[str, str]:
    """Traced TorchScript modules ``source.ts.pt`` / ``frame.ts.pt`` (load with :func:`torch.jit.load`)."""
    model = model.eval()
    source, frame_inputs = example_inputs(model, batch=batch, output_size=output_size)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, graph, args in (("source", SourceGraph(model), (source,)),
                              ("frame", FrameGraph(model, relative, output_size), frame_inputs)):
        path = out_dir / f"{name}.ts.pt"
        with temporary_output(path) as tmp, torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(graph, args, check_trace=False)
            torch.jit.save(traced, tmp)
        paths[name] = str(path)
    return paths


# --------------------------------------------------------------------------------------- running it
def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise MissingWeightsError("onnxruntime is not installed: pip install 'dagan[onnx]' (or onnxruntime)") from None
    return onnxruntime


def _used(session, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """The feeds a graph really takes: the exporter drops unused inputs (e.g. ``source_image`` when the
    decoder does not look at the warped source)."""
    names = {i.name for i in session.get_inputs()}
    return {k: v for k, v in feeds.items() if k in names}


class OnnxAnimator:
    """Runs an exported ``source.onnx``/``frame.onnx`` pair with ONNX Runtime (no PyTorch model needed).

    Example::

        >>> anim = OnnxAnimator("out/")
        >>> anim.set_source(source)            # (1, 3, H, W) float32 in [0, 1]
        >>> frames = anim(driving)             # (B, 3, H, W) -> (B, 3, H, W); the first frame anchors motion

    An export made with an output size N also needs the portrait at N px: ``set_source(source, source_full)``
    with ``source_full (1, 3, N, N)``; the frames then come out at N px.
    """

    def __init__(self, export_dir: Union[str, os.PathLike], adapt_movement_scale: bool = True,
                 providers: Optional[Sequence[str]] = None, threads: Optional[int] = None):
        ort = _onnxruntime()
        export_dir = Path(export_dir)
        for name in ("source.onnx", "frame.onnx"):
            if not (export_dir / name).is_file():
                raise InputError(f"{export_dir / name} not found: run python -m dagan.export first")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        providers = list(providers or ["CPUExecutionProvider"])
        self.source_session = ort.InferenceSession(str(export_dir / "source.onnx"), options, providers=providers)
        self.frame_session = ort.InferenceSession(str(export_dir / "frame.onnx"), options, providers=providers)
        self.adapt_movement_scale = adapt_movement_scale
        self.source: Optional[Dict[str, np.ndarray]] = None
        self.anchor: Optional[Dict[str, np.ndarray]] = None

    def set_source(self, source: np.ndarray, source_full: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
        """Encode a ``(1, 3, H, W)`` float32 source once; resets the motion anchor. ``source_full``: the same
        portrait at the export's output size (needed exactly when the export has one)."""
        takes_full = "source_full" in {i.name for i in self.frame_session.get_inputs()}
        if takes_full != (source_full is not None):
            raise InputError("this export renders at its output size: pass source_full (1, 3, N, N)" if takes_full
                             else "this export renders at the model size: it takes no source_full")
        source = np.ascontiguousarray(source, dtype=np.float32)
        outs = self.source_session.run(None, {"source": source})
        self.source = dict(zip([o.name for o in self.source_session.get_outputs()], outs))
        self.source["source_image"] = source
        if source_full is not None:
            self.source["source_full"] = np.ascontiguousarray(source_full, dtype=np.float32)
        self.anchor = None
        return self.source

    def __call__(self, driving: np.ndarray) -> np.ndarray:
        if self.source is None:
            raise InputError("call set_source() before animating frames")
        driving = np.ascontiguousarray(driving, dtype=np.float32)
        if self.anchor is None:  # the first frame anchors relative motion: its keypoints and the hull scale
            first = self._run(driving[:1], None)
            self.anchor = {"kp_initial_value": first[1], "kp_initial_jacobian": first[2]}
            scale = movement_scale(self.source["kp_source_value"], first[1]) if self.adapt_movement_scale else 1.0
            self.anchor["scale"] = np.array([scale], dtype=np.float32)
        return self._run(driving, self.anchor)[0]

    def _run(self, driving: np.ndarray, anchor: Optional[Dict[str, np.ndarray]]):
        src = self.source
        if anchor is None:  # keypoints of the anchor only: any anchor works for them
            anchor = {"kp_initial_value": src["kp_source_value"], "kp_initial_jacobian": src["kp_source_jacobian"],
                      "scale": np.ones(1, np.float32)}
        feeds = {"driving": driving, **src, **anchor}  # _used drops what the frame graph does not take
        return self.frame_session.run(None, _used(self.frame_session, feeds))


def verify_onnx(model: DaGAN, out_dir: Union[str, os.PathLike], batch: int = 3, relative: bool = True,
                output_size: Optional[int] = None) -> Dict[str, float]:
    """Max abs differences between ONNX Runtime and PyTorch on random inputs (``batch`` frames, so the
    dynamic batch axis is exercised with a size other than the one used at export)."""
    ort = _onnxruntime()
    source, frame_inputs = example_inputs(model, batch=batch, seed=1, output_size=output_size)
    with torch.no_grad():
        ref_source = SourceGraph(model)(source)
        ref_frame = FrameGraph(model, relative, output_size)(*frame_inputs)
    sess = ort.InferenceSession(str(Path(out_dir) / "source.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"source": source.numpy()})
    diffs = {f"source/{n}": float(np.abs(g - r.numpy()).max())
             for n, g, r in zip(source_outputs(model), got, ref_source)}
    sess = ort.InferenceSession(str(Path(out_dir) / "frame.onnx"), providers=["CPUExecutionProvider"])
    names = frame_inputs_names(model, output_size)
    got = sess.run(None, _used(sess, {n: t.numpy() for n, t in zip(names, frame_inputs)}))
    diffs.update({f"frame/{n}": float(np.abs(g - r.numpy()).max()) for n, g, r in zip(FRAME_OUTPUTS, got, ref_frame)})
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
                    frame_outputs=list(FRAME_OUTPUTS))
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
