"""dagan: depth-aware talking-head animation (DaGAN, CVPR 2022, and DaGAN++).

Public API::

    from dagan import DaGAN, Animator, load_config
    model = DaGAN.from_pretrained("checkpoints/dagan-small")
    anim = Animator(model)
    anim.set_source("me.png")
    for frame in frames:
        out = anim(frame)
"""
from .config import Config, ModelConfig, load_config
from .errors import (
    CheckpointError,
    ConfigError,
    DaganError,
    DatasetError,
    InputError,
    MissingWeightsError,
    NoFaceError,
    OutputError,
    TrainingError,
)
from .models import DaGAN

__version__ = "0.1.0"


def __getattr__(name):
    # the Animator pulls in video/face I/O; import it lazily so `import dagan` stays light
    if name == "Animator":
        from .inference.animator import Animator

        return Animator
    raise AttributeError(f"module 'dagan' has no attribute {name!r}")


__all__ = [
    "Animator", "Config", "ModelConfig", "DaGAN", "load_config", "CheckpointError", "ConfigError", "DaganError",
    "DatasetError", "InputError", "MissingWeightsError", "NoFaceError", "OutputError", "TrainingError",
]
