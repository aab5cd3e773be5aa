"""Weights in and out of generator training: the fine-tuning start (:func:`load_init_checkpoint`: ours or an
official ``checkpoint.pth.tar``), frozen depth weights (:func:`load_depth_checkpoint`) and the self-describing
model a run exports (:func:`export_pretrained`, ``train.py --export``). Importable from
:mod:`dagan.training.trainer` too."""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..checkpoints import check_and_load, load_file, strip_prefix
from ..config import Config, config_to_dict, load_config
from ..errors import CheckpointError, ConfigError
from ..models.dagan import DaGAN
from ..nn import AntiAliasInterpolation2d
from .runtime import mean_state_dict, resolve_checkpoint

logger = logging.getLogger("dagan")
PathLike = Union[str, os.PathLike]


def _read_init_checkpoint(path: str) -> Tuple[Dict[str, torch.Tensor], Optional[Mapping], bool]:
    """``(model weights keyed as in DaGAN.state_dict(), discriminator weights or None, is_official)``."""
    from ..checkpoints import load_pretrained

    if os.path.isdir(path):
        return load_pretrained(DaGAN, path).state_dict(), None, False
    ckpt = load_file(path, "cpu")
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"{path} is not a checkpoint (found {type(ckpt).__name__})")
    disc = strip_prefix(ckpt["discriminator"]) if isinstance(ckpt.get("discriminator"), Mapping) else None
    if "state_dict" in ckpt:
        return strip_prefix(ckpt["state_dict"]), disc, False
    if "generator" in ckpt and "kp_detector" in ckpt:  # official
        state = {f"{net}.{k}": v for net in ("generator", "kp_detector") for k, v in strip_prefix(ckpt[net]).items()}
        return state, disc, True
    raise CheckpointError(f"{path}: expected our checkpoint ('state_dict') or an official one "
                          f"('generator', 'kp_detector'), found keys {list(ckpt)[:6]}")


def load_init_checkpoint(model: DaGAN, discriminator: nn.Module, path: PathLike,
                         networks: Sequence[str] = (), new_keys: Sequence[str] = ()) -> None:
    """Fine-tuning start: our format (file or directory) or an official ``checkpoint.pth.tar``.

    Only networks present in the file are loaded; their shapes must match the config. ``networks`` (names of
    ``DaGAN`` children, or ``discriminator``) restricts loading to those, each of which must be in the file.
    ``new_keys`` (model key prefixes such as ``generator.decoder.conv_blend``) are parameters the config adds:
    the file may lack them, and they keep their fresh initialisation. Anti-aliasing kernels are never taken
    from the file (they follow the config's scale factors), so a model can be fine-tuned at another size.
    """
    path = os.fspath(path)
    state, disc, official = _read_init_checkpoint(path)
    # anti-aliasing kernels follow the config's scale factors (e.g. a 64 px model fine-tuned at 128 px with
    # the keypoint and motion networks at the same working size): not weights, so the model keeps its own
    derived = [f"{name}.weight" for name, mod in model.named_modules() if isinstance(mod, AntiAliasInterpolation2d)]
    state = {k: v for k, v in state.items() if k not in derived}
    new_keys = list(new_keys) + derived
    if not networks:
        if not official:  # our files hold the whole model: check it as a whole
            check_and_load(model, state, f"weights in {path}", allow_missing=new_keys)
        networks = (("generator", "kp_detector") if official else ()) + (("discriminator",) if disc else ())
    for name in networks:
        if name == "discriminator":
            if disc is None:
                raise CheckpointError(f"{path} holds no discriminator weights (train.init_networks)")
            check_and_load(discriminator, disc, f"discriminator in {path}")
            continue
        part = {k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")}
        if not part:
            raise CheckpointError(f"{path} holds no '{name}' weights (train.init_networks)")
        sub_new = [k[len(name) + 1:] for k in new_keys if k.startswith(name + ".")]
        check_and_load(getattr(model, name), part, f"{name} weights in {path}", allow_missing=sub_new)


def load_depth_checkpoint(model: DaGAN, path: PathLike) -> None:
    """Depth weights from our checkpoint (file or dir), a depth-training run, or the official pair."""
    path = os.fspath(path)
    if os.path.isfile(path):
        ckpt = load_file(path, "cpu")
        if isinstance(ckpt, Mapping) and "state_dict" in ckpt and "depth_encoder" not in ckpt:
            state = strip_prefix(ckpt["state_dict"])
            for name in ("depth_encoder", "depth_decoder"):
                sub = {k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")}
                if not sub:
                    raise CheckpointError(f"{path} holds no {name} weights")
                check_and_load(getattr(model, name), sub, f"{name} in {path}")
            return
    from .depth_trainer import load_depth_weights

    load_depth_weights(model, path)


def _depth_provenance(cfg: Config) -> Dict[str, Any]:
    """``{"depth": {checkpoint, step, config}}``: the depth-training run whose frozen weights the generator
    run used (``train.depth_checkpoint``), with that run's full config, so an exported model names both runs.
    Empty when the run trained its depth itself or kept it random; a note when the run cannot be read."""
    path = cfg.train.depth_checkpoint
    if not path or cfg.train.train_depth:
        return {}
    from .runtime import read_training_checkpoint

    try:
        ckpt = read_training_checkpoint(path, "depth")
    except (CheckpointError, OSError) as exc:
        logger.warning("depth provenance: %s", exc)
        return {"depth": {"checkpoint": os.fspath(path), "note": f"not a readable depth-training run at export "
                                                               f"({str(exc)[:200]})"}}
    return {"depth": {"checkpoint": os.fspath(path), "step": int(ckpt["step"]), "config": dict(ckpt["config"])}}


def export_pretrained(checkpoint: PathLike, out_dir: PathLike, half: bool = False,
                      average: Sequence[PathLike] = ()) -> str:
    """Write the model of a training checkpoint as a self-describing ``save_pretrained`` directory.

    ``config.yaml`` gets the full config of the run (model, train and dataset sections as trained: passed
    back to ``train.py`` it reproduces the run) and a ``provenance`` section: the source checkpoint and its
    step, the averaged checkpoints and theirs, and the sha256 of the weights file. ``half`` stores
    floating-point tensors as float16 (they load back into the float32 model, so the precision loss is the
    fp16 rounding of the weights). ``average`` lists more checkpoints with the same model config: the
    exported weights are the mean over all of them (integer buffers come from ``checkpoint``).
    """
    def describe(path: PathLike) -> Tuple[Config, Dict[str, Any]]:
        path = os.fspath(path)
        if os.path.isdir(path):  # an exported model: its config.yaml
            cfg = load_config(os.path.join(path, "config.yaml"))
            return cfg, {"checkpoint": path, "step": int(cfg.provenance.get("step", 0))}
        ckpt = load_file(path, "cpu")
        if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("config"), Mapping):
            raise CheckpointError(f"{path} is not a training checkpoint of ours (no config inside)")
        try:
            cfg = load_config(dict(ckpt["config"]))
        except ConfigError as exc:
            raise CheckpointError(f"{path} holds an invalid config: {exc}") from None
        return cfg, {"checkpoint": path, "step": int(ckpt.get("step", 0))}

    checkpoint = resolve_checkpoint(checkpoint)
    cfg, source = describe(checkpoint)
    model = DaGAN.from_pretrained(checkpoint)
    averaged = []
    if average:
        states = [model.state_dict()]
        for other_path in map(resolve_checkpoint, average):
            other = DaGAN.from_pretrained(other_path)
            if config_to_dict(other.config) != config_to_dict(model.config):
                raise CheckpointError(f"cannot average {other_path} with {checkpoint}: the model configs differ")
            states.append(other.state_dict())
            averaged.append(describe(other_path)[1])
        model.load_state_dict(mean_state_dict(states))
    cfg.provenance = {}
    run_dir = os.path.dirname(os.path.abspath(os.fspath(checkpoint)))
    relative = os.path.relpath(run_dir)
    # relative to where train.py ran when inside it (a shipped config should not carry this machine's paths)
    provenance = {"source_run": run_dir if relative.startswith("..") else relative, **source,
                  "averaged": [source] + averaged if averaged else [], "half": bool(half)}
    provenance.update(_depth_provenance(cfg))
    return model.save_pretrained(out_dir, config=cfg, provenance=provenance, half=half)
