"""Run the graphs written by :mod:`dagan.export` with ONNX Runtime, no PyTorch model needed:
:class:`OnnxAnimator` (also importable from :mod:`dagan.export`)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import numpy as np

from .errors import InputError, MissingWeightsError
from .models.dagan import anchor_motion


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

    With a motion stage of one's own (the face guide), run the two halves instead of ``__call__``::

        >>> kp = anim.keypoints(driving)                  # drive.onnx: {"value", "jacobian"} of each frame
        >>> frames = anim.render(kp_norm["value"], kp_norm["jacobian"])   # render.onnx
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
        # exports made before the drive/render split have only the two graphs
        self.halves = {name: ort.InferenceSession(str(export_dir / f"{name}.onnx"), options, providers=providers)
                       for name in ("drive", "render") if (export_dir / f"{name}.onnx").is_file()}
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
            kp, scale = anchor_motion({"value": self.source["kp_source_value"]},
                                      {"value": first[1], "jacobian": first[2]},
                                      adapt_movement_scale=self.adapt_movement_scale)
            self.anchor = {"kp_initial_value": kp["value"], "kp_initial_jacobian": kp["jacobian"],
                           "scale": np.array([scale], dtype=np.float32)}
        return self._run(driving, self.anchor)[0]

    def _half(self, name: str):
        if name not in self.halves:
            raise InputError(f"this export has no {name}.onnx: export it again with python -m dagan.export")
        if self.source is None:
            raise InputError("call set_source() before animating frames")
        return self.halves[name]

    def keypoints(self, driving: np.ndarray) -> Dict[str, np.ndarray]:
        """Driving keypoints of ``(B, 3, H, W)`` float32 frames (``drive.onnx``): ``{"value": (B, K, 2),
        "jacobian": (B, K, 2, 2)}``."""
        value, jacobian = self._half("drive").run(None, {"driving": np.ascontiguousarray(driving, dtype=np.float32)})
        return {"value": value, "jacobian": jacobian}

    def render(self, kp_norm_value: np.ndarray, kp_norm_jacobian: np.ndarray) -> np.ndarray:
        """Frames ``(B, 3, O, O)`` of the source moved by normalised keypoints (``render.onnx``), e.g. the face
        guide's (:class:`~dagan.inference.guide.LandmarkGuide`)."""
        session = self._half("render")
        feeds = {**self.source, "kp_norm_value": np.ascontiguousarray(kp_norm_value, dtype=np.float32),
                 "kp_norm_jacobian": np.ascontiguousarray(kp_norm_jacobian, dtype=np.float32)}
        return session.run(None, _used(session, feeds))[0]

    def _run(self, driving: np.ndarray, anchor: Optional[Dict[str, np.ndarray]]):
        src = self.source
        if anchor is None:  # keypoints of the anchor only: any anchor works for them
            anchor = {"kp_initial_value": src["kp_source_value"], "kp_initial_jacobian": src["kp_source_jacobian"],
                      "scale": np.ones(1, np.float32)}
        feeds = {"driving": driving, **src, **anchor}  # _used drops what the frame graph does not take
        return self.frame_session.run(None, _used(self.frame_session, feeds))
