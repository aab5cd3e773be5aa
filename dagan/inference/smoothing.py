"""Temporal smoothing of driving keypoints: the One-Euro filter (Casiez et al., CHI 2012).

A low-pass filter whose cut-off rises with speed: still keypoints are smoothed hard (no jitter), fast motion
passes with little lag. ``min_cutoff`` (Hz) sets the smoothing at rest (lower = smoother), ``beta`` how fast
the cut-off rises with speed (higher = less lag), ``d_cutoff`` (Hz) smooths the speed estimate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional

import torch

from ..errors import InputError


@dataclass
class OneEuroSettings:
    """Parameters of :class:`OneEuroFilter`; ``fps`` is the frame rate of the driving video."""

    min_cutoff: float = 1.0
    beta: float = 1.0
    d_cutoff: float = 1.0
    fps: float = 25.0

    def __post_init__(self):
        for name in ("min_cutoff", "d_cutoff", "fps"):
            if not getattr(self, name) > 0:
                raise InputError(f"smoothing {name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
        if self.beta < 0:
            raise InputError(f"smoothing beta must be >= 0, got {self.beta}")


def _alpha(cutoff: torch.Tensor, period: float) -> torch.Tensor:
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / period)


class OneEuroFilter:
    """One-Euro filter over tensors of any fixed shape, one sample per call (element-wise, causal)."""

    def __init__(self, settings: Optional[OneEuroSettings] = None):
        self.settings = settings or OneEuroSettings()
        self.reset()

    def reset(self) -> None:
        self.value: Optional[torch.Tensor] = None
        self.speed: Optional[torch.Tensor] = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        s = self.settings
        period = 1.0 / s.fps
        x = x.detach().float()
        if self.value is None:
            self.value, self.speed = x.clone(), torch.zeros_like(x)
            return x.clone()
        speed = (x - self.value) / period
        a_d = 1.0 / (1.0 + 1.0 / (2.0 * math.pi * s.d_cutoff) / period)
        self.speed = self.speed + a_d * (speed - self.speed)
        a = _alpha(s.min_cutoff + s.beta * self.speed.abs(), period)
        self.value = self.value + a * (x - self.value)
        return self.value.clone()


class KeypointSmoother:
    """One-Euro filters over the driving keypoints ``{"value": (T, K, 2), "jacobian": (T, K, 2, 2)}``,
    applied frame by frame in order (a batch is T consecutive frames)."""

    def __init__(self, settings: Optional[OneEuroSettings] = None):
        self.settings = settings or OneEuroSettings()
        self.filters: Dict[str, OneEuroFilter] = {}

    def reset(self) -> None:
        self.filters = {}

    def __call__(self, kp: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        out = {}
        for name, frames in kp.items():
            filt = self.filters.setdefault(name, OneEuroFilter(self.settings))
            out[name] = torch.stack([filt(frame) for frame in frames]).to(frames.dtype)
        return out
