"""Typed configuration: dataclasses for the model, dataset and training, YAML in and out.

Two file formats are read:

* **ours** (``configs/*.yaml``): top-level sections ``model``, ``dataset``, ``train`` (and further task
  sections), mirroring the dataclasses below one to one;
* **official DaGAN / FOMM** files: ``model_params`` with ``common_params``, ``kp_detector_params``,
  ``generator_params`` (incl. ``dense_motion_params``) and ``discriminator_params``, plus
  ``dataset_params`` and ``train_params``. Sections the toolkit has no use for (``animate_params``,
  ``visualizer_params``, ...) are kept out of the typed config.

Unknown keys and values of the wrong type raise :class:`~dagan.errors.ConfigError` naming the full key
(``model.generator.block_expansion``), so a typo never silently falls back to a default.

A file of ours may start from another one: ``base: dagan-tiny.yaml`` (a path relative to the file; when
there is no such file, the shipped config of that name in the repository's ``configs/``) loads that file
first and deep-merges the rest of this one over it (mappings merge key by key; lists and scalars replace),
so variants hold only their differences. Saved configs are always written fully resolved.

Example::

    >>> from dagan.config import load_config
    >>> cfg = load_config("configs/dagan-vox-256.yaml")
    >>> cfg.model.num_kp
    15
"""
from __future__ import annotations

import dataclasses
import logging
import os
import types
import typing
from typing import Any, Dict, List, Tuple, Union

import yaml

# the schema, re-exported: every config class is importable from dagan.config
from .config_schema import (GENERATOR_TYPES, MODEL_TYPES, AugmentationConfig, Config,  # noqa: F401
                            DatasetConfig, DenseMotionConfig, DepthConfig, DepthTrainConfig, DiscriminatorConfig,
                            GeneratorConfig, KeypointConfig, LossWeights, ModelConfig, TrainConfig, TransformConfig)
from .errors import ConfigError

logger = logging.getLogger("dagan")
#: keys that older files and checkpoints hold but nothing reads any more: skipped (logged) when reading
_RETIRED_KEYS = {"TrainConfig": ("checkpoint_freq",), "DatasetConfig": ("pairs_list", "frames_per_sample")}


# ------------------------------------------------------------------------------------------- parsing
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (recursing into dataclasses/lists), or raise."""
    origin = typing.get_origin(tp)
    if origin in (Union, getattr(types, "UnionType", Union)):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping (section), got {type(value).__name__}")
        return _from_dict(tp, value, key)
    if origin in (list, List, tuple, Tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {type(value).__name__} {value!r}")
        (item_tp,) = typing.get_args(tp)[:1] or (Any,)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {type(value).__name__}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected true/false, got {type(value).__name__} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"config key '{key}': expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}': expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}': expected a string, got {type(value).__name__} {value!r}")
        return value
    return value


def _from_dict(cls: Any, data: Dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key in _RETIRED_KEYS.get(cls.__name__, ()):
            logger.info("config key '%s' is no longer used: ignored", full)
            continue
        if key not in names:
            close = [n for n in names if n.replace("_", "") == str(key).replace("_", "").replace("-", "")]
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(sorted(names))})"
            raise ConfigError(f"unknown config key '{full}'{hint}")
        kwargs[key] = _coerce(value, hints[key], full)
    obj = cls(**kwargs)
    _validate(obj, prefix)
    return obj


def _validate(obj: Any, prefix: str) -> None:
    """Value checks that types alone cannot express."""

    def bad(key: str, msg: str) -> None:
        raise ConfigError(f"config key '{prefix + '.' if prefix else ''}{key}': {msg}")

    if isinstance(obj, ModelConfig):
        if obj.type not in MODEL_TYPES:
            bad("type", f"must be one of {MODEL_TYPES}, got {obj.type!r}")
        if obj.num_kp < 1:
            bad("num_kp", f"must be >= 1, got {obj.num_kp}")
        if obj.image_size < 64 or obj.image_size % 32:
            bad("image_size", f"must be a multiple of 32 and at least 64 (the depth network needs it), "
                              f"got {obj.image_size}")
        if obj.num_channels != 3:
            bad("num_channels", f"only RGB (3) is supported, got {obj.num_channels}")
        for pair in obj.kp_landmarks:
            if len(pair) != 2 or not 0 <= pair[0] < obj.num_kp or not 0 <= pair[1] < 68:
                bad("kp_landmarks", f"{pair} is not [keypoint < {obj.num_kp}, landmark < 68]")
        if obj.type == "daganpp" and obj.generator.type != "DaGANPPGenerator":
            obj.generator.type = "DaGANPPGenerator"
        if obj.generator.type == "DaGANPPGenerator" and obj.generator.block_expansion < 8:
            bad("generator.block_expansion", "DaGAN++ attends at every level (projects to C/8): must be >= 8, "
                f"got {obj.generator.block_expansion}")
    elif isinstance(obj, DepthConfig):
        if obj.num_layers not in (10, 18, 34, 50, 101, 152):
            bad("num_layers", f"must be a ResNet depth (10, 18, 34, 50, 101, 152), got {obj.num_layers}")
        if not obj.scales or any(s not in (0, 1, 2, 3) for s in obj.scales) or 0 not in obj.scales:
            bad("scales", f"must be a subset of [0, 1, 2, 3] containing 0, got {obj.scales}")
    elif isinstance(obj, GeneratorConfig):
        if obj.type not in GENERATOR_TYPES:
            bad("type", f"must be one of {GENERATOR_TYPES}, got {obj.type!r}")
        if obj.attention not in ("sdpa", "chunked", "plain"):
            bad("attention", f"must be 'sdpa', 'chunked' or 'plain', got {obj.attention!r}")
        if obj.output_blend and obj.type != "SPADEDepthAwareGenerator":
            bad("output_blend", f"is only available with type SPADEDepthAwareGenerator, not {obj.type!r}")
        for key in ("block_expansion", "max_features", "num_down_blocks"):
            if getattr(obj, key) < 1:
                bad(key, f"must be >= 1, got {getattr(obj, key)}")
        if min(obj.max_features, obj.block_expansion * 2 ** obj.num_down_blocks) < 8:
            bad("block_expansion", "the bottleneck needs >= 8 channels (attention projects to C/8)")
        for key in ("attention_window", "attention_full_max"):
            if getattr(obj, key) < 0:
                bad(key, f"must be >= 0, got {getattr(obj, key)}")
    elif isinstance(obj, KeypointConfig):
        if obj.temperature <= 0:
            bad("temperature", f"must be > 0, got {obj.temperature}")
        if not 0 < obj.scale_factor <= 1:
            bad("scale_factor", f"must be in (0, 1], got {obj.scale_factor}")
    elif isinstance(obj, DenseMotionConfig):
        if not 0 < obj.scale_factor <= 1:
            bad("scale_factor", f"must be in (0, 1], got {obj.scale_factor}")
    elif isinstance(obj, AugmentationConfig):
        if len(obj.zoom) != 2 or not 0 < obj.zoom[0] <= obj.zoom[1]:
            bad("zoom", f"must be [low, high] with 0 < low <= high, got {obj.zoom}")
        if not 0 <= obj.translate < 1:
            bad("translate", f"must be in [0, 1), got {obj.translate}")
    elif isinstance(obj, Config):
        if obj.task not in ("generator", "depth"):
            bad("task", f"must be 'generator' or 'depth', got {obj.task!r}")
    elif isinstance(obj, TrainConfig):
        if obj.batch_size < 1:
            bad("batch_size", f"must be >= 1, got {obj.batch_size}")
        if obj.perceptual_backbone not in ("vgg19", "none"):
            bad("perceptual_backbone", f"must be 'vgg19' or 'none', got {obj.perceptual_backbone!r}")
        known = ("depth_encoder", "depth_decoder", "kp_detector", "generator", "discriminator")
        for name in obj.init_networks:
            if name not in known:
                bad("init_networks", f"unknown network {name!r} (known: {', '.join(known)})")
    if isinstance(obj, (TrainConfig, DepthTrainConfig)):
        for key in ("keep_every", "keep_last"):
            if getattr(obj, key) < 0:
                bad(key, f"must be >= 0, got {getattr(obj, key)}")
    if isinstance(obj, DepthTrainConfig):
        if obj.intrinsics not in ("learned", "fixed"):
            bad("intrinsics", f"must be 'learned' or 'fixed', got {obj.intrinsics!r}")
        if 0 not in obj.frame_ids or len(obj.frame_ids) < 2:
            bad("frame_ids", f"must contain 0 and at least one neighbour, got {obj.frame_ids}")


def config_from_dict(data: Dict[str, Any], cls: Any = Config, prefix: str = "") -> Any:
    """Build a typed config from a plain dict (our format), validating every key."""
    if not isinstance(data, dict):
        raise ConfigError(f"config must be a mapping at the top level, got {type(data).__name__}")
    return _from_dict(cls, data, prefix)


def config_to_dict(cfg: Any) -> Dict[str, Any]:
    """Plain-dict form of any config dataclass (for YAML and checkpoints)."""
    return dataclasses.asdict(cfg)


# --------------------------------------------------------------------------------- official format
_OFFICIAL_SECTIONS_IGNORED = ("reconstruction_params", "animate_params", "visualizer_params", "train_params_depth")


def _pick(section: Dict[str, Any], allowed: Tuple[str, ...], where: str) -> Dict[str, Any]:
    unknown = sorted(set(section) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown config key '{where}.{unknown[0]}' in official config "
                          f"(known: {', '.join(allowed)})")
    return {k: v for k, v in section.items() if k in allowed}


def _section(data: Dict[str, Any], name: str, where: str) -> Dict[str, Any]:
    value = data.get(name) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"config key '{where}.{name}': expected a mapping, got {type(value).__name__}")
    return value


def official_to_dict(data: Dict[str, Any]) -> Dict[str, Any]:
    """Translate an official DaGAN/FOMM config (``model_params`` ...) into our dict layout."""
    mp = _section(data, "model_params", "")
    common = _pick(_section(mp, "common_params", "model_params"), ("num_kp", "num_channels", "estimate_jacobian"),
                   "model_params.common_params")
    kp = _pick(_section(mp, "kp_detector_params", "model_params"),
               ("temperature", "block_expansion", "max_features", "scale_factor", "num_blocks", "pad",
                "single_jacobian_map"), "model_params.kp_detector_params")
    gen_raw = dict(_section(mp, "generator_params", "model_params"))
    dm = _pick(_section(gen_raw, "dense_motion_params", "model_params.generator_params"),
               ("block_expansion", "max_features", "num_blocks", "scale_factor", "kp_variance"),
               "model_params.generator_params.dense_motion_params")
    gen_raw.pop("dense_motion_params", None)
    gen = _pick(gen_raw, ("block_expansion", "max_features", "num_down_blocks", "num_bottleneck_blocks",
                          "estimate_occlusion_map"), "model_params.generator_params")
    disc = _pick(_section(mp, "discriminator_params", "model_params"),
                 ("scales", "block_expansion", "max_features", "num_blocks", "use_kp", "sn", "kp_variance"),
                 "model_params.discriminator_params")
    model: Dict[str, Any] = dict(common)
    model.update(kp_detector=kp, generator=dict(gen, dense_motion=dm), discriminator=disc)

    out: Dict[str, Any] = {"model": model}
    ds = dict(_section(data, "dataset_params", ""))
    if ds:
        aug = ds.pop("augmentation_params", {}) or {}
        flat_aug = {}
        flat_aug.update(aug.get("flip_param", {}) or {})
        flat_aug.update(aug.get("jitter_param", {}) or {})
        ds = _pick(ds, ("root_dir", "frame_shape", "id_sampling", "pairs_list", "num_repeats"), "dataset_params")
        ds.pop("pairs_list", None)  # the official evaluation pairs: not a training setting
        ds["augmentation"] = flat_aug
        out["dataset"] = ds
        shape = ds.get("frame_shape")
        if isinstance(shape, (list, tuple)) and shape and isinstance(shape[0], int):
            model["image_size"] = shape[0]
    tp = dict(_section(data, "train_params", ""))
    if tp:
        out["train"] = _pick(tp, ("num_epochs", "num_repeats", "epoch_milestones", "lr_generator",
                                  "lr_discriminator", "lr_kp_detector", "batch_size", "scales", "checkpoint_freq",
                                  "transform_params", "loss_weights"), "train_params")
        out["train"].pop("checkpoint_freq", None)  # the official per-epoch saves; ours: train.save_every
    return out


def is_official(data: Dict[str, Any]) -> bool:
    return isinstance(data, dict) and "model_params" in data


def read_yaml(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """Read a YAML file with the safe loader; a clear ConfigError for missing/invalid files."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, "r", encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not a text file") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def merge_config_dicts(base: Dict[str, Any], override: Dict[str, Any]) -> Dict[str, Any]:
    """Deep merge: mappings merge key by key (recursively), anything else in ``override`` replaces."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_config_dicts(out[key], value)
        else:
            out[key] = value
    return out


#: The repository's ``configs/`` folder (beside the ``dagan`` package in a checkout or an editable install).
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
#: Environment variable: more folders (``os.pathsep``-separated) where a ``base:`` is looked for.
CONFIG_PATH_ENV = "DAGAN_CONFIG_PATH"


def base_candidates(name: str, folder: Union[str, os.PathLike] = ".") -> List[str]:
    """Every path where ``base: name`` of a config in ``folder`` is looked for, in order.

    Beside the file first (``name`` relative to ``folder``), then in each folder of ``$DAGAN_CONFIG_PATH``,
    then in the repository's ``configs/`` (as written, then by file name in ``configs/`` and its subfolders,
    so a config copied out of the repository still finds the shipped one it names). An absolute ``name`` is
    the one candidate.
    """
    if os.path.isabs(name):
        return [os.path.normpath(name)]
    out = [os.path.abspath(os.path.join(os.fspath(folder), name))]
    roots = [d for d in os.environ.get(CONFIG_PATH_ENV, "").split(os.pathsep) if d] + [CONFIGS_DIR]
    for root in roots:
        out.append(os.path.abspath(os.path.join(root, name)))
    if os.path.isdir(CONFIGS_DIR):
        leaf = os.path.basename(name)
        subfolders = sorted(e.path for e in os.scandir(CONFIGS_DIR) if e.is_dir())
        out.extend(os.path.join(d, leaf) for d in [CONFIGS_DIR] + subfolders)
    return list(dict.fromkeys(out))  # in order, each once


def find_base(name: str, folder: Union[str, os.PathLike] = ".") -> str:
    """The file ``base: name`` refers to (see :func:`base_candidates`); a ConfigError lists every place looked."""
    candidates = base_candidates(name, folder)
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise ConfigError(f"config key 'base': {name} not found; looked in: {', '.join(candidates)} "
                      f"(a base is found beside the config, in ${CONFIG_PATH_ENV}, or in {CONFIGS_DIR})")


def resolve_base(data: Dict[str, Any], folder: Union[str, os.PathLike] = ".", _seen: Tuple[str, ...] = ()
                 ) -> Dict[str, Any]:
    """``data`` with its ``base:`` chain applied (``base`` paths are looked up by :func:`find_base`: relative to
    ``folder``, the folder of the file that names them, then the shipped configs); the result has no ``base``
    key."""
    if "base" not in data:
        return data
    name = data["base"]
    if not isinstance(name, str) or not name:
        raise ConfigError(f"config key 'base': expected the path of another config file, got {name!r}")
    path = find_base(name, folder)
    if path in _seen:
        raise ConfigError(f"config key 'base': {path} includes itself (chain: {' -> '.join(_seen + (path,))})")
    parent = read_yaml(path)
    if is_official(parent):
        raise ConfigError(f"config key 'base': {path} is an official-format file; a base must be one of ours")
    parent = resolve_base(parent, os.path.dirname(path), _seen + (path,))
    return merge_config_dicts(parent, {k: v for k, v in data.items() if k != "base"})


def load_config(source: Union[str, os.PathLike, Dict[str, Any], Config, ModelConfig]) -> Config:
    """Load a :class:`Config` from a YAML path, a dict (ours or official) or a config object.

    A bare :class:`ModelConfig` is wrapped into a full :class:`Config` with default train settings. A
    ``base:`` key is resolved first (relative to the file; for a dict, to the working directory).
    """
    if isinstance(source, Config):
        return source
    if isinstance(source, ModelConfig):
        return Config(model=source)
    if isinstance(source, dict):
        data = resolve_base(source)
    else:
        data = resolve_base(read_yaml(source), os.path.dirname(os.path.abspath(os.fspath(source))),
                            (os.path.abspath(os.fspath(source)),))
    if is_official(data):
        unknown = sorted(set(data) - {"model_params", "dataset_params", "train_params",
                                       *_OFFICIAL_SECTIONS_IGNORED})
        if unknown:
            raise ConfigError(f"unknown config key '{unknown[0]}' in official config")
        data = official_to_dict(data)
    return config_from_dict(data)


def save_config(cfg: Any, path: Union[str, os.PathLike]) -> None:
    """Write a config dataclass as YAML (atomically)."""
    from .utils import atomic_write_bytes

    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
    atomic_write_bytes(path, text.encode("utf-8"))
