"""Getting a model ready for inference, one way for every front-end (``demo.py`` on files and ``--stream``, the
web app, ``python -m dagan.evaluate``, ``python -m dagan.export``): which weights (the shipped default, our
format, official files) and on which device in which precision.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch

from ..errors import CheckpointError, MissingWeightsError
from ..models.dagan import DaGAN
from ..utils import resolve_device, resolve_inference_dtype

logger = logging.getLogger("dagan")

REPO_ROOT = Path(__file__).resolve().parents[2]
#: the small model shipped with the repository (own format, loaded with DaGAN.from_pretrained)
DEFAULT_CHECKPOINT = REPO_ROOT / "checkpoints" / "dagan-small"
#: config of the untrained stand-in used while no trained weights are shipped
FALLBACK_CONFIG = REPO_ROOT / "configs" / "dagan-tiny.yaml"
UNTRAINED_NOTE = ("note: no trained weights are shipped yet ({path} is missing): using an untrained tiny model, "
                  "so the output will not look like a face animation")


def load_model(checkpoint: Optional[str] = None, config: Optional[str] = None,
               depth_files: Optional[Dict[str, str]] = None, trust: bool = False) -> Tuple[DaGAN, str]:
    """The model named by a checkpoint (our folder or ``.pt`` file; with ``config``: official
    ``checkpoint.pth.tar`` and the face-depth ``depth_files`` of :meth:`DaGAN.from_official`), or with neither
    the shipped :data:`DEFAULT_CHECKPOINT`. Returns the model (on the CPU, eval mode) and a one-line description.
    """
    if config is None and checkpoint is None:
        if DEFAULT_CHECKPOINT.exists():
            return DaGAN.from_pretrained(DEFAULT_CHECKPOINT), f"shipped model {DEFAULT_CHECKPOINT.name}"
        if not FALLBACK_CONFIG.exists():
            raise MissingWeightsError(f"no model: {DEFAULT_CHECKPOINT} is missing; pass --checkpoint")
        print(UNTRAINED_NOTE.format(path=DEFAULT_CHECKPOINT), file=sys.stderr)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = DaGAN(FALLBACK_CONFIG)
        return model, "untrained tiny model"
    if checkpoint is None:
        raise CheckpointError("--config needs --checkpoint (the official checkpoint.pth.tar to load)")
    if not os.path.exists(checkpoint):
        raise CheckpointError(f"checkpoint not found: {checkpoint}")
    if config is None or os.path.isdir(checkpoint):
        if config is not None:
            logger.warning("%s is in our own format (config included): --config is ignored", checkpoint)
        return DaGAN.from_pretrained(checkpoint, trust_checkpoint=trust), f"model {checkpoint}"
    try:
        model = DaGAN.from_official(config, checkpoint, trust_checkpoint=trust, **(depth_files or {}))
    except CheckpointError:
        if not _is_own_format(checkpoint, trust):
            raise
        # a single-file checkpoint of ours (e.g. a training checkpoint) carries its config: use that
        logger.warning("%s is in our own format (config included): --config is ignored", checkpoint)
        return DaGAN.from_pretrained(checkpoint, trust_checkpoint=trust), f"model {checkpoint}"
    return model, f"official model {checkpoint}"


def _is_own_format(path: str, trust: bool) -> bool:
    from ..checkpoints import load_file

    try:
        ckpt = load_file(path, "cpu", trust)
    except CheckpointError:
        return False
    return isinstance(ckpt, dict) and "config" in ckpt and "state_dict" in ckpt


def resolve_runtime(device: Union[str, torch.device, None] = "auto",
                    dtype: Union[str, torch.dtype, None] = "auto") -> Tuple[torch.device, torch.dtype]:
    """The device (``"auto"``: CUDA, then MPS, then CPU) and the precision (``"auto"``: the device's
    :func:`~dagan.utils.default_inference_dtype`) a front-end runs on."""
    device = resolve_device(device)
    return device, resolve_inference_dtype(dtype, device)
