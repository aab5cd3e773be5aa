"""Checkpoint I/O: our own format, official DaGAN files, safe loading and key remapping.

Own format (``save_pretrained``): a directory with ``config.yaml`` and ``model.pt`` (``{"format_version",
"config", "state_dict"}``; or ``model.safetensors`` when asked). ``config.yaml`` is self-describing: the full
config the model was trained with (``model``, ``train``, ``dataset`` sections as used; passed back to
``train.py`` it reproduces the run) and a ``provenance`` section (source run, step, averaged checkpoints) with
the sha256 of the weights file, which :func:`load_pretrained` checks. A single ``.pt`` file with the same keys
(e.g. a training checkpoint, which adds optimiser/scheduler/RNG states) loads the same way.

Official files: ``checkpoint.pth.tar`` = ``{"generator": ..., "kp_detector": ...}`` with DataParallel
``module.`` prefixes; ``encoder.pth`` (ResNet keys ``encoder.*`` plus non-tensor ``height``/``width``/
``use_stereo``); ``depth.pth`` (``decoder.N.*``). Everything is read with ``torch.load(weights_only=True)``
unless the caller explicitly trusts the file.
"""
from __future__ import annotations

import hashlib
import logging
import os
import pickle
import re
import zipfile
from collections import OrderedDict
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch.overrides import TorchFunctionMode
from torch import nn

from .config import Config, ModelConfig, config_from_dict, config_to_dict, load_config, read_yaml, save_config
from .errors import CheckpointError, ConfigError
from .utils import atomic_torch_save, atomic_write

logger = logging.getLogger("dagan")
FORMAT_VERSION = 1
PathLike = Union[str, os.PathLike]
OFFICIAL_DEPTH_FILES = (("encoder.pth", "depth.pth"), ("depth_encoder.pth", "depth_decoder.pth"))


# ------------------------------------------------------------------------------------------ reading
def load_file(path: PathLike, map_location: Union[str, torch.device] = "cpu", trust: bool = False) -> Any:
    """``torch.load`` with safe defaults and typed errors.

    ``trust=False`` (default) uses ``weights_only=True``: a pickle that tries to run code is refused.
    Truncated, empty or non-checkpoint files raise :class:`CheckpointError`.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint file not found: {path}")
    if os.path.isdir(path):
        raise CheckpointError(f"expected a checkpoint file but {path} is a directory")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"checkpoint file {path} is empty")
    if path.endswith(".safetensors"):
        return _load_safetensors(path, map_location)
    try:
        return torch.load(path, map_location=map_location, weights_only=not trust)
    except pickle.UnpicklingError as exc:
        if not trust:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(
                f"refusing to load {path}: it contains objects other than tensors and plain containers, which "
                f"could execute code when unpickled ({first[:160]}). Only if you trust its origin, pass "
                f"--trust-checkpoint (API: trust_checkpoint=True)") from None
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from None
    except (EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({type(exc).__name__})") from None
    except RuntimeError as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {path} is truncated, corrupt or not a PyTorch file ({msg[:200]})") from None
    except (ValueError, TypeError, AttributeError, ImportError, UnicodeDecodeError, KeyError, IndexError,
            OverflowError, MemoryError) as exc:
        # a malformed pickle stream makes the unpickler fail in many ways: all mean "not a checkpoint"
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__}: "
                              f"{str(exc)[:160]})") from None


def _load_safetensors(path: str, map_location) -> Dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file as st_load
    except ImportError:
        raise CheckpointError(f"{path} is a safetensors file: install the extra with pip install 'dagan[safetensors]'"
                              ) from None
    try:
        return st_load(path, device=str(map_location))
    except Exception as exc:  # safetensors raises its own SafetensorError
        raise CheckpointError(f"safetensors file {path} is corrupt: {exc}") from None


def strip_prefix(state: Mapping[str, Any], prefix: str = "module.") -> "OrderedDict[str, Any]":
    """Remove a DataParallel/DDP prefix from every key that has it."""
    return OrderedDict((k[len(prefix):] if k.startswith(prefix) else k, v) for k, v in state.items())


def _tensors_only(state: Mapping[str, Any]) -> "OrderedDict[str, torch.Tensor]":
    return OrderedDict((k, v) for k, v in state.items() if isinstance(v, torch.Tensor))


def _summarise(keys: Iterable[str], limit: int = 6) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


class SkipRandomInit(TorchFunctionMode):
    """Build modules without drawing their random initial weights (the tensors keep whatever memory held): for a
    model whose every tensor is loaded next. A torch-function mode, so it acts in this thread only and leaves the
    global random generator untouched; the meta device would do the same but its first use imports torch's meta
    kernels (+135 MiB of resident memory for the process, measured on the demo)."""

    RANDOM_FILLS = frozenset({torch.Tensor.uniform_, torch.Tensor.normal_, torch.Tensor.random_,
                              torch.Tensor.bernoulli_, torch.Tensor.exponential_, torch.Tensor.log_normal_,
                              torch.Tensor.cauchy_, torch.Tensor.geometric_})
    #: ``torch.nn.init`` functions that draw nothing
    DETERMINISTIC_INITS = frozenset({"zeros_", "ones_", "constant_", "eye_", "dirac_"})

    def __torch_function__(self, func, types, args=(), kwargs=None):
        # an nn.init function is handed over whole (the mode is off while it runs): skip the random ones there
        random_init = (getattr(func, "__module__", "") == "torch.nn.init"
                       and getattr(func, "__name__", "") not in self.DETERMINISTIC_INITS)
        if func in self.RANDOM_FILLS or random_init:
            return args[0] if args else kwargs["tensor"]
        return func(*args, **(kwargs or {}))


def check_and_load(module: nn.Module, state: Mapping[str, torch.Tensor], what: str, strict: bool = True,
                   allow_missing: Sequence[str] = (), assign: bool = False) -> None:
    """Load ``state`` into ``module`` after comparing keys and shapes; on mismatch raise a
    :class:`CheckpointError` that lists missing, unexpected and mis-shaped keys. Keys named by or under the
    prefixes ``allow_missing`` may be absent from ``state`` (they keep the module's values). ``assign``: the module
    takes the loaded tensors themselves where the dtypes match (a freshly built module nobody else holds)."""
    own = module.state_dict()
    exact = {p.rstrip(".") for p in allow_missing}
    prefixes = tuple(p + "." for p in exact)
    missing = [k for k in own if k not in state and not (k in exact or k.startswith(prefixes))]
    unexpected = [k for k in state if k not in own]
    misshaped = [f"{k} (checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)})"
                 for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if misshaped or (strict and (missing or unexpected)):
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing: {_summarise(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected: {_summarise(unexpected)}")
        if misshaped:
            parts.append(f"{len(misshaped)} mis-shaped: {_summarise(misshaped, 3)}")
        raise CheckpointError(f"{what} does not fit the model config: " + "; ".join(parts))
    # with ``assign`` (load_pretrained's freshly built model) the module takes the loaded tensors themselves
    # when every dtype matches: no second copy of the weights. Otherwise (an fp16 export, or a module an
    # optimizer may hold) it keeps its parameter objects and gets the values copied and cast.
    if assign and not all(v.dtype == own[k].dtype for k, v in state.items() if k in own):
        assign = False
    module.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False, assign=assign)


# ----------------------------------------------------------------------------------------- official
def infer_depth_layers(encoder_state: Mapping[str, Any]) -> int:
    """ResNet depth of a monodepth2 encoder state dict, from its key names."""
    bottleneck = any(k.endswith("conv3.weight") for k in encoder_state)
    blocks3 = {int(m.group(1)) for k in encoder_state for m in [re.match(r"encoder\.layer3\.(\d+)\.", k)] if m}
    n3 = max(blocks3) + 1 if blocks3 else 2
    if bottleneck:
        return {6: 50, 23: 101, 36: 152}.get(n3, 50)
    return {1: 10, 2: 18, 6: 34}.get(n3, 18)


def _find_depth_files(depth_dir: PathLike) -> Tuple[str, str]:
    depth_dir = os.fspath(depth_dir)
    if not os.path.isdir(depth_dir):
        raise CheckpointError(f"depth checkpoint folder not found: {depth_dir}")
    for enc, dec in OFFICIAL_DEPTH_FILES:
        if os.path.isfile(os.path.join(depth_dir, enc)) and os.path.isfile(os.path.join(depth_dir, dec)):
            return os.path.join(depth_dir, enc), os.path.join(depth_dir, dec)
    raise CheckpointError(f"no depth weights in {depth_dir}: expected encoder.pth + depth.pth (official "
                          f"weights_19 layout) or depth_encoder.pth + depth_decoder.pth")


def official_config_for_checkpoint(cfg: Config, generator_state: Mapping[str, Any],
                                   kp_state: Mapping[str, Any]) -> Config:
    """Adjust the keypoint count and generator type to what the checkpoint holds, and say so.

    The official vox-adv-256.yaml says ``num_kp: 10`` while the released weights use 15 and pick the
    generator class on the command line: read both off the tensors instead of asking for flags.
    """
    m = cfg.model
    if "kp.weight" in kp_state:
        num_kp = int(kp_state["kp.weight"].shape[0])
        if num_kp != m.num_kp:
            logger.warning("official checkpoint has %d keypoints (config says %d): using %d", num_kp, m.num_kp, num_kp)
            m.num_kp = num_kp
    spade = any(k.startswith("decoder.G_middle_") for k in generator_state)
    gen_type = "SPADEDepthAwareGenerator" if spade else "DepthAwareGenerator"
    if gen_type != m.generator.type:
        logger.warning("official checkpoint holds a %s (config says %s): using %s", gen_type, m.generator.type,
                       gen_type)
        m.generator.type = gen_type
    return cfg


def load_official(cls, config, checkpoint, depth_encoder=None, depth_decoder=None, depth_dir=None,
                  map_location="cpu", trust_checkpoint: bool = False, strict: bool = True):
    """Build ``cls`` (a :class:`~dagan.DaGAN`) from official files.

    ``depth_encoder``/``depth_decoder`` are the monodepth2-style files; ``depth_dir`` may name the folder
    holding them instead (``encoder.pth`` + ``depth.pth``). Without depth weights the depth network keeps
    its random init, which only makes sense for tests: a warning says so.
    """
    cfg = load_config(config)
    ckpt = load_file(checkpoint, map_location, trust_checkpoint)
    if not isinstance(ckpt, Mapping) or "generator" not in ckpt or "kp_detector" not in ckpt:
        keys = list(ckpt)[:8] if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise CheckpointError(f"{checkpoint} is not an official DaGAN checkpoint: expected 'generator' and "
                              f"'kp_detector' entries, found {keys}")
    gen_state = strip_prefix(ckpt["generator"])
    kp_state = strip_prefix(ckpt["kp_detector"])
    cfg = official_config_for_checkpoint(cfg, gen_state, kp_state)

    if depth_dir is not None and (depth_encoder is None or depth_decoder is None):
        depth_encoder, depth_decoder = _find_depth_files(depth_dir)
    enc_state = dec_state = None
    if depth_encoder is not None:
        raw = load_file(depth_encoder, map_location, trust_checkpoint)
        if not isinstance(raw, Mapping):
            raise CheckpointError(f"{depth_encoder} is not a depth-encoder state dict")
        enc_state = _tensors_only(strip_prefix(raw))
        layers = infer_depth_layers(enc_state)
        if layers != cfg.model.depth.num_layers:
            logger.warning("depth encoder is a ResNet-%d (config says %d): using %d", layers,
                           cfg.model.depth.num_layers, layers)
            cfg.model.depth.num_layers = layers
    if depth_decoder is not None:
        raw = load_file(depth_decoder, map_location, trust_checkpoint)
        if not isinstance(raw, Mapping):
            raise CheckpointError(f"{depth_decoder} is not a depth-decoder state dict")
        dec_state = _tensors_only(strip_prefix(raw))
    if enc_state is None or dec_state is None:
        logger.warning("no face-depth weights given: the depth network is randomly initialised")

    model = cls(cfg.model)
    check_and_load(model.generator, gen_state, f"generator weights in {checkpoint}", strict)
    check_and_load(model.kp_detector, kp_state, f"keypoint-detector weights in {checkpoint}", strict)
    if enc_state is not None:
        check_and_load(model.depth_encoder, enc_state, f"depth encoder {depth_encoder}", strict)
    if dec_state is not None:
        check_and_load(model.depth_decoder, dec_state, f"depth decoder {depth_decoder}", strict)
    model.to(map_location).eval()
    return model


def official_state(model: nn.Module) -> Dict[str, Any]:
    """``{"generator", "kp_detector"}`` in the official checkpoint layout (without ``module.``)."""
    return {"generator": model.generator.state_dict(), "kp_detector": model.kp_detector.state_dict()}


def export_official_depth(model: nn.Module, out_dir: PathLike, image_size: Optional[int] = None) -> Tuple[str, str]:
    """Write the depth network of ``model`` (anything with ``depth_encoder`` and ``depth_decoder``) as the
    official monodepth2-style pair ``encoder.pth`` + ``depth.pth``; ``image_size`` defaults to
    ``model.config.image_size``."""
    out_dir = os.fspath(out_dir)
    enc = {k: v.detach().cpu() for k, v in model.depth_encoder.state_dict().items()}
    size = model.config.image_size if image_size is None else int(image_size)
    enc.update(height=size, width=size, use_stereo=False)
    enc_path, dec_path = os.path.join(out_dir, "encoder.pth"), os.path.join(out_dir, "depth.pth")
    atomic_torch_save(enc, enc_path)
    atomic_torch_save({k: v.detach().cpu() for k, v in model.depth_decoder.state_dict().items()}, dec_path)
    return enc_path, dec_path


def official_config_dict(cfg: ModelConfig) -> Dict[str, Any]:
    """An official-format ``model_params`` config for ``cfg`` (for the official code to read)."""
    g, k, d = cfg.generator, cfg.kp_detector, cfg.discriminator
    return {"model_params": {
        "common_params": {"num_kp": cfg.num_kp, "num_channels": cfg.num_channels,
                          "estimate_jacobian": cfg.estimate_jacobian},
        "kp_detector_params": {"temperature": k.temperature, "block_expansion": k.block_expansion,
                               "max_features": k.max_features, "scale_factor": k.scale_factor,
                               "num_blocks": k.num_blocks},
        "generator_params": {"block_expansion": g.block_expansion, "max_features": g.max_features,
                             "num_down_blocks": g.num_down_blocks, "num_bottleneck_blocks": g.num_bottleneck_blocks,
                             "estimate_occlusion_map": g.estimate_occlusion_map,
                             "dense_motion_params": {"block_expansion": g.dense_motion.block_expansion,
                                                     "max_features": g.dense_motion.max_features,
                                                     "num_blocks": g.dense_motion.num_blocks,
                                                     "scale_factor": g.dense_motion.scale_factor}},
        "discriminator_params": {"scales": list(d.scales), "block_expansion": d.block_expansion,
                                 "max_features": d.max_features, "num_blocks": d.num_blocks, "use_kp": d.use_kp},
    }, "dataset_params": {"frame_shape": [cfg.image_size, cfg.image_size, 3]}}


# ---------------------------------------------------------------------------------------- own format
def model_config_from_checkpoint(ckpt: Mapping[str, Any], where: str) -> ModelConfig:
    raw = ckpt.get("config")
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{where} has no model config: is it an official checkpoint? "
                              f"Use DaGAN.from_official / --config with it")
    try:
        if "model" in raw:
            return config_from_dict(dict(raw)).model
        return config_from_dict(dict(raw), ModelConfig, "model")
    except ConfigError as exc:
        raise CheckpointError(f"{where} holds an invalid config: {exc}") from None


def kp_landmark_pairs(raw: Any) -> Tuple[Tuple[int, int], ...]:
    """``(keypoint, landmark)`` pairs listed in the training section of a full config (``train.kp_landmarks``,
    when trained with ``loss_weights.kp_landmarks``): how configs exported before ``model.kp_landmarks`` name
    the keypoints that sit on face landmarks. Empty for other models and for model-only configs."""
    train = raw.get("train") if isinstance(raw, Mapping) else None
    if not isinstance(train, Mapping):
        return ()
    weights = train.get("loss_weights") or {}
    pairs = train.get("kp_landmarks") or []
    if not pairs or not float(weights.get("kp_landmarks", 0.0) or 0.0) > 0:
        return ()
    try:
        return tuple((int(k), int(m)) for k, m in pairs)
    except (TypeError, ValueError):
        raise CheckpointError(f"train.kp_landmarks must list [keypoint, landmark] pairs, got {pairs!r}") from None


def file_sha256(path: PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_pretrained(model: nn.Module, path: PathLike, safetensors: bool = False, config: Optional[Config] = None,
                    provenance: Optional[Mapping[str, Any]] = None, half: bool = False) -> str:
    """Directory with ``config.yaml`` and ``model.pt`` (or ``model.safetensors``), each written atomically.

    ``config``: the full config the model was trained with (default: the model section alone, with default
    training settings); its model section must be the model's. ``provenance``: where the weights come from
    (source run, step, averaged checkpoints); ``weights: {file, sha256}`` is added to it. ``half`` stores
    floating-point tensors as float16 (they load back into the float32 model).
    """
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise CheckpointError(f"cannot save into {path}: it is a file, not a directory")
    full = Config(model=model.config) if config is None else load_config(config_to_dict(config))
    if config_to_dict(full.model) != config_to_dict(model.config):
        raise CheckpointError("save_pretrained: the config's model section is not the model's config")
    os.makedirs(path, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    if safetensors:
        try:
            from safetensors.torch import save as st_save
        except ImportError:
            raise CheckpointError("safetensors is not installed: pip install 'dagan[safetensors]'") from None
        blob = st_save(state, metadata={"format_version": str(FORMAT_VERSION)})
        weights = os.path.join(path, "model.safetensors")
        atomic_write(weights, lambda fh: fh.write(blob))
    else:
        weights = os.path.join(path, "model.pt")
        atomic_torch_save({"format_version": FORMAT_VERSION, "config": config_to_dict(Config(model=full.model)),
                           "state_dict": state}, weights)
    full.provenance = dict(provenance or {})
    full.provenance["weights"] = {"file": os.path.basename(weights), "sha256": file_sha256(weights)}
    save_config(full, os.path.join(path, "config.yaml"))
    return path


def check_weights_hash(config_data: Mapping[str, Any], folder: str, cfg_path: str) -> None:
    """Compare the weights file with the sha256 that ``config.yaml``'s provenance records (when it does)."""
    provenance = config_data.get("provenance") if isinstance(config_data, Mapping) else None
    record = provenance.get("weights") if isinstance(provenance, Mapping) else None
    if not isinstance(record, Mapping) or not record.get("sha256"):
        return
    weights = os.path.join(folder, os.path.basename(str(record.get("file") or "model.pt")))
    if not os.path.isfile(weights):
        raise CheckpointError(f"{cfg_path} describes weights {weights}, which do not exist")
    actual = file_sha256(weights)
    if actual != str(record["sha256"]).lower():
        raise CheckpointError(f"{weights} does not match {cfg_path}: sha256 {actual[:16]}... but the config records "
                              f"{str(record['sha256'])[:16]}... (a different or corrupted weights file)")


def load_pretrained(cls, path: PathLike, map_location="cpu", trust_checkpoint: bool = False):
    """Inverse of :func:`save_pretrained`; also reads single-file checkpoints (training ones included)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        st_path = os.path.join(path, "model.safetensors")
        pt_path = os.path.join(path, "model.pt")
        cfg_path = os.path.join(path, "config.yaml")
        cfg_data = None
        if os.path.isfile(cfg_path):  # first: a weights file that is not the one described is not read at all
            try:
                cfg_data = read_yaml(cfg_path)
            except ConfigError as exc:
                raise CheckpointError(f"{cfg_path} is invalid: {exc}") from None
            check_weights_hash(cfg_data, path, cfg_path)
        if os.path.isfile(pt_path):
            ckpt = load_file(pt_path, map_location, trust_checkpoint)
            where = pt_path
        elif os.path.isfile(st_path):
            ckpt = {"state_dict": load_file(st_path, map_location)}
            where = st_path
        else:
            raise CheckpointError(f"{path} holds no model.pt or model.safetensors (is it an official "
                                  f"checkpoint folder? then use --config with --checkpoint)")
        if not isinstance(ckpt, Mapping):
            raise CheckpointError(f"{where} is not a dagan checkpoint")
        if cfg_data is not None:
            cfg = model_config_from_checkpoint({"config": cfg_data}, cfg_path)
        else:
            cfg = model_config_from_checkpoint(ckpt, where)
            cfg_data = ckpt.get("config")
    else:
        ckpt = load_file(path, map_location, trust_checkpoint)
        where = path
        if not isinstance(ckpt, Mapping):
            raise CheckpointError(f"{path} is not a dagan checkpoint (found {type(ckpt).__name__})")
        if "generator" in ckpt and "kp_detector" in ckpt and "config" not in ckpt:
            raise CheckpointError(f"{path} is an official DaGAN checkpoint: load it with DaGAN.from_official "
                                  f"(CLI: pass --config with the official YAML)")
        cfg = model_config_from_checkpoint(ckpt, where)
        cfg_data = ckpt.get("config")
    state = ckpt.get("state_dict", ckpt.get("model"))
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{where} has no 'state_dict' entry")
    if not cfg.kp_landmarks:  # exported before model.kp_landmarks existed: the training section lists them
        cfg.kp_landmarks = [list(pair) for pair in kp_landmark_pairs(cfg_data)]
    # every tensor comes from the checkpoint (strict): the model is built without random initialisation (in this
    # thread only) and takes the loaded tensors themselves, cast to its own dtypes
    with SkipRandomInit():
        model = cls(cfg)
    own = model.state_dict()
    state = {k: v.to(own[k].dtype) if k in own and v.dtype != own[k].dtype else v
             for k, v in strip_prefix(state).items()}
    check_and_load(model, state, f"weights in {where}", assign=True)
    return model.to(map_location).eval()
