"""The systems an evaluation scores: a checkpoint animated as ``demo.py`` animates it (:class:`AnimatorSystem`)
and the repeat-source baseline, and the face backend they share with the metrics (:func:`system_faces`)."""
from __future__ import annotations

from typing import Dict, Optional, Union

import torch

from ..inference.animator import Animator
from ..inference.guide import resolve_guide
from . import face_metrics as FM
from .settings import EvalSettings
from .suite import MetricSuite


class AnimatorSystem:
    """A DaGAN checkpoint driven as ``demo.py`` drives it, through :class:`~dagan.inference.animator.Animator`
    (plain float32 model, source prepared once, frames in batches, rendered at the frames' size).

    ``faces``: the face backend of face-guided motion and of the landmark stage (an object with
    ``detect(image, landmarks=True)``, e.g. the metric suite's cached :class:`FaceAnalyzer`), or None: keypoint
    motion only. Both are relative motion: items with absolute motion (same-identity reconstruction) run on the
    model's keypoints alone."""

    def __init__(self, model, settings: EvalSettings, faces=None, device: Union[str, torch.device] = "cpu",
                 output_size: Optional[int] = None):
        self.model, self.settings, self.faces = model, settings, faces
        self.device, self.output_size = device, output_size
        self.animators: Dict[bool, Animator] = {}
        self.animator: Optional[Animator] = None

    def _animator(self, relative: bool) -> Animator:
        if relative not in self.animators:
            s = self.settings
            guided = relative and self.faces is not None
            self.animators[relative] = Animator(
                self.model, device=self.device, dtype="float32", fast=False, relative=relative,
                adapt_movement_scale=s.adapt_movement_scale and relative, output_size=self.output_size,
                guide=self.faces if guided and s.guide != "off" else None,
                mouth_gain=s.mouth_gain if guided and s.guide != "off" else 1.0,
                motion=s.motion if guided else "keypoints", mouth_fill=s.mouth_fill, face_detector=self.faces)
        return self.animators[relative]

    @torch.no_grad()
    def start(self, source: torch.Tensor, first_driving: torch.Tensor, relative: bool) -> None:
        self.animator = self._animator(relative)
        self.animator.set_source(source[0])
        self.animator.set_anchor(first_driving[:1])

    @torch.no_grad()
    def __call__(self, driving: torch.Tensor) -> torch.Tensor:
        return self.animator.animate_tensor(driving)


class RepeatSource:
    """The trivial baseline: every output frame is the source frame."""

    def start(self, source: torch.Tensor, first_driving: torch.Tensor, relative: bool) -> None:
        self.source = source

    def __call__(self, driving: torch.Tensor) -> torch.Tensor:
        return self.source.expand(driving.shape[0], -1, -1, -1)


def system_faces(settings: EvalSettings, suite: MetricSuite, device: Union[str, torch.device] = "cpu"):
    """The face backend of ``--guide`` and ``--motion`` for :class:`AnimatorSystem`: the metric suite's own
    (cached) face analyser when it has one, so every frame is analysed once, else the default face backend;
    None when neither the guide nor the landmark stage is wanted, or, with ``auto``, when no face backend loads
    (logged)."""
    mode = "on" if settings.motion == "landmarks" else settings.guide
    if settings.motion == "auto" and mode == "off":
        mode = "auto"
    if suite.faces is not None:
        return resolve_guide(mode, lambda: suite.faces)
    from ..faces import load_face_backend

    return resolve_guide(mode, lambda: FM.FaceAnalyzer(load_face_backend("auto", str(device)), embeddings=False))


