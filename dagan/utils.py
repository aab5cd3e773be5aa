"""Small shared helpers: devices, dtypes, atomic file writes."""
from __future__ import annotations

import contextlib
import errno
import io
import os
import random
import tempfile
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Union

import numpy as np
import torch

PathLike = Union[str, os.PathLike]

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}


def resolve_device(device: Union[str, torch.device, None] = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then MPS, then CPU; anything else is passed to :class:`torch.device`."""
    from .errors import InputError

    if isinstance(device, torch.device):
        return device
    if device in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"unknown device {device!r} (use auto, cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' requested but CUDA is not available on this machine (use --device cpu)")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError("device 'mps' requested but MPS is not available on this machine (use --device cpu)")
    return dev


def resolve_dtype(dtype: Union[str, torch.dtype, None]) -> torch.dtype:
    from .errors import InputError

    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise InputError(f"unknown dtype {dtype!r} (use float32, bfloat16, float16 or auto)") from None


def cpu_has_bf16_kernels() -> bool:
    """True on CPUs with native bfloat16 dot products (AVX-512 BF16 or AMX), where oneDNN's bf16 convolutions
    beat float32 (Linux ``/proc/cpuinfo`` flags; False elsewhere)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def default_inference_dtype(device: torch.device) -> torch.dtype:
    """The precision ``dtype="auto"`` picks: float16 on CUDA, bfloat16 on CPUs with bf16 kernels
    (:func:`cpu_has_bf16_kernels`), else float32. Chosen by measurement (``benchmarks/inference.py``: the speed
    and the PSNR against float32 of each precision)."""
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and cpu_has_bf16_kernels():
        return torch.bfloat16
    return torch.float32


def resolve_inference_dtype(dtype: Union[str, torch.dtype, None], device: torch.device) -> torch.dtype:
    """:func:`resolve_dtype`, plus ``"auto"`` = :func:`default_inference_dtype` of ``device``."""
    if isinstance(dtype, str) and dtype.lower() == "auto":
        return default_inference_dtype(device)
    return resolve_dtype(dtype)


def _fsync_dir(path: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def default_file_mode() -> int:
    """The mode a plainly created file would get (mkstemp makes 0600 files)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: PathLike, write: Callable[[io.BufferedWriter], None]) -> None:
    """Write ``path`` through ``write(fh)`` into a temp file in the same folder, fsync, then rename.

    Readers never see a half-written file; on any error the old file (if any) is untouched and the temp
    file is removed.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        os.chmod(tmp, default_file_mode())
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(folder)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        from .errors import OutputError

        kept = "the previous file is intact" if os.path.exists(path) else "nothing was written"
        reason = "no space left on device" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        raise OutputError(f"could not write {path}: {reason}; {kept}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    atomic_write(path, lambda fh: fh.write(data))


def atomic_torch_save(obj: object, path: PathLike) -> None:
    """``torch.save`` that never leaves a truncated file under ``path``."""
    atomic_write(path, lambda fh: torch.save(obj, fh))


@contextlib.contextmanager
def temporary_output(path: PathLike, suffix: Optional[str] = None) -> Iterator[str]:
    """Yield a temp path next to ``path``; rename it to ``path`` on success, delete it on failure."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    ext = suffix if suffix is not None else os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".partial.", suffix=ext, dir=folder)
    os.close(fd)
    os.chmod(tmp, default_file_mode())
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def rng_state(device: torch.device) -> Dict[str, Any]:
    """Global RNG states as tensors/plain containers (loadable with ``weights_only=True``)."""
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                       "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
             "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def reject_unknown_options(owner: Callable[..., Any], unknown: Mapping[str, Any]) -> None:
    """Raise :class:`~dagan.errors.ConfigError` when ``unknown`` (the ``**`` rest of ``owner``'s arguments)
    is not empty, naming the closest known parameter: a misspelled option must not fall back to a default."""
    if not unknown:
        return
    import difflib
    import inspect

    from .errors import ConfigError

    known = [name for name, p in inspect.signature(owner).parameters.items()
             if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    name = sorted(unknown)[0]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(known)})"
    raise ConfigError(f"{owner.__qualname__.split('.')[0]}: unknown option '{name}'{hint}")
