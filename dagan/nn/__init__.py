"""Reusable layers shared by every network (one definition each).

Parameter names follow the official FOMM/DaGAN code so official checkpoints load without remapping.
"""
from .blocks import (
    AntiAliasInterpolation2d,
    Decoder,
    DownBlock2d,
    Encoder,
    Hourglass,
    ResBlock2d,
    SameBlock2d,
    UpBlock2d,
)
from .grid import deform_image_exact, deform_input, kp2gaussian, make_coordinate_grid

__all__ = [
    "AntiAliasInterpolation2d",
    "Decoder",
    "DownBlock2d",
    "Encoder",
    "Hourglass",
    "ResBlock2d",
    "SameBlock2d",
    "UpBlock2d",
    "deform_image_exact",
    "deform_input",
    "kp2gaussian",
    "make_coordinate_grid",
]
