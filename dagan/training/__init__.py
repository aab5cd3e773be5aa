"""Training: one runtime (:mod:`~dagan.training.runtime`) and its tasks, picked by the config's ``task``.

``generator`` (:class:`~dagan.training.trainer.GeneratorTask`): keypoints + generator against the
discriminator; ``depth`` (:class:`~dagan.training.depth_trainer.DepthTask`): the self-supervised face-depth
network. ``train.py`` is the command line of both.
"""
from __future__ import annotations

from typing import Type

from ..errors import ConfigError

TASKS = ("generator", "depth")


def task_class(name: str) -> Type:
    """The :class:`~dagan.training.runtime.Task` subclass of ``task: name``."""
    if name == "generator":
        from .trainer import GeneratorTask

        return GeneratorTask
    if name == "depth":
        from .depth_trainer import DepthTask

        return DepthTask
    raise ConfigError(f"config key 'task': unknown task {name!r} (known: {', '.join(TASKS)})")
