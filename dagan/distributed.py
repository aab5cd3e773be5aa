"""The ``torchrun`` environment, for training and evaluation alike.

``torchrun --nproc_per_node N`` starts N processes with ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` set;
without them there is one process (rank 0 of 1). :func:`init_distributed` joins the process group (NCCL on
CUDA, gloo otherwise) and picks the rank's GPU.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List, Optional

import torch

from .errors import ConfigError


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands: ``rank`` of ``world`` processes, ``local_rank`` on its machine."""

    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def distributed_env() -> DistEnv:
    """Rank, local rank and world size from the ``torchrun`` variables (one process without them)."""
    values = {}
    for key, default in (("RANK", 0), ("LOCAL_RANK", 0), ("WORLD_SIZE", 1)):
        raw = os.environ.get(key, str(default))
        try:
            values[key] = int(raw)
        except ValueError:
            raise ConfigError(f"environment variable {key}={raw!r} is not an integer (set by torchrun)") from None
    env = DistEnv(values["RANK"], values["LOCAL_RANK"], values["WORLD_SIZE"])
    if env.world < 1 or not 0 <= env.rank < env.world:
        raise ConfigError(f"RANK={env.rank} / WORLD_SIZE={env.world} do not describe a process group")
    return env


def init_distributed(env: DistEnv, device: torch.device, backend: Optional[str] = None) -> torch.device:
    """Join the process group when ``env`` has more than one process; returns the device of this rank
    (``cuda:local_rank`` for CUDA). ``backend`` defaults to NCCL on CUDA and gloo otherwise."""
    if not env.distributed:
        return device
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if device.type == "cuda" else "gloo"))
    return device


def all_gather_objects(obj: Any, env: DistEnv) -> List[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` in a single process)."""
    if not env.distributed:
        return [obj]
    import torch.distributed as dist

    gathered: List[Any] = [None] * env.world
    dist.all_gather_object(gathered, obj)
    return gathered


def gather_lists(items: List[Any], env: DistEnv) -> Optional[List[Any]]:
    """The concatenated lists of all ranks on rank 0 (``None`` on the others); ``items`` alone in one process."""
    if not env.distributed:
        return items
    import torch.distributed as dist

    gathered: Optional[List[Any]] = [None] * env.world if env.is_main else None
    dist.gather_object(items, gathered, dst=0)
    if not env.is_main:
        return None
    return [item for part in gathered for item in part]  # type: ignore[union-attr]
