"""The one training loop of the toolkit; a task (:mod:`~dagan.training.trainer` for keypoints + generator,
:mod:`~dagan.training.depth_trainer` for face depth) brings its networks, optimisers and the work of one step.

What the runtime owns, for every task:

* devices and DDP through the ``torchrun`` variables (:mod:`dagan.distributed`; NCCL on CUDA, gloo on CPU),
  rank-0-only files and logs, weights saved without a ``module.`` prefix;
* data: batch ``s`` of ``rank`` reads the global sample numbers ``(s * world + rank) * batch + i``
  (:class:`StepBatches`), so a resumed run replays exactly the data of the uninterrupted one;
* mixed precision (``amp``/``amp_dtype``: bf16 on CPU, fp16 + GradScaler or bf16 on CUDA);
* the NaN/inf guard: a task reports a non-finite step (it has undone it), ``max_bad_steps`` in a row stop
  the run with a :class:`~dagan.errors.TrainingError`, the last checkpoint stays intact;
* the run folder: ``config.yaml`` (the full config, atomic), ``checkpoint.pt`` (atomic: ``format_version``,
  ``task``, ``config``, ``step``, ``epoch``, per-rank RNG states and the task's weights and optimiser state),
  ``checkpoint-0005500.pt`` ... kept every ``keep_every`` steps (the last ``keep_last`` of them; 0 = all) for
  ``train.py --export --average``, ``metrics.jsonl``, ``tb/`` (TensorBoard scalars and images);
* exact resume from a checkpoint (weights, optimisers, schedulers, scaler, step and RNG states).

The settings come from the task's config section (``train`` or ``depth_train``): ``seed``, ``batch_size``,
``max_steps``, ``num_epochs``, ``log_every``, ``image_every``, ``save_every``, ``keep_every``, ``keep_last``,
``amp``, ``amp_dtype``, ``max_bad_steps``.
"""
from __future__ import annotations

import json
import logging
import os
import random
import re
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Dict, Iterator, List, Mapping, Optional, Sequence, Type, Union

import numpy as np
import torch

from ..checkpoints import FORMAT_VERSION, load_file
from ..config import Config, config_to_dict, load_config, save_config
from ..distributed import DistEnv, all_gather_objects, distributed_env, init_distributed
from ..errors import CheckpointError, ConfigError, DatasetError, OutputError, TrainingError
from ..utils import atomic_torch_save, resolve_device, rng_state, set_rng_state

logger = logging.getLogger("dagan")
PathLike = Union[str, os.PathLike]
CHECKPOINT_NAME = "checkpoint.pt"
KEPT_PATTERN = re.compile(r"^checkpoint-(\d+)\.pt$")


# --------------------------------------------------------------------------------------- helpers
def amp_dtype(name: str, device: torch.device, key: str = "train.amp_dtype") -> torch.dtype:
    """``auto`` -> bf16 on CPU and on CUDA with bf16 support, else fp16; ``bfloat16``/``float16`` as named."""
    if name == "auto":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            return torch.float16
        return torch.bfloat16
    table = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if name not in table:
        raise ConfigError(f"config key '{key}': use auto, bfloat16 or float16, got {name!r}")
    if table[name] == torch.float16 and device.type == "cpu":
        raise ConfigError(f"config key '{key}': float16 autocast is not supported on CPU (use bfloat16)")
    return table[name]


def step_seed(seed: int, step: int, rank: int) -> int:
    """A seed for the random draws of ``step`` on ``rank`` (e.g. the equivariance warp)."""
    return int(np.random.default_rng([seed & 0xFFFFFFFF, step, rank, 0x7A4B]).integers(0, 2 ** 62))


def all_ranks_finite(finite: torch.Tensor, env: DistEnv) -> bool:
    """``True`` when ``finite`` (a bool tensor) holds on every rank: all ranks must skip a step together."""
    if env.distributed:
        import torch.distributed as dist

        flag = finite.float().reshape(())
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag > 0)
    return bool(finite)


class StepBatches(torch.utils.data.Sampler):
    """Batches of global sample numbers for steps ``start..stop-1`` of ``rank`` (see the module docstring)."""

    def __init__(self, start: int, stop: int, batch: int, rank: int = 0, world: int = 1):
        self.start, self.stop, self.batch, self.rank, self.world = start, stop, batch, rank, world

    def __iter__(self) -> Iterator[List[int]]:
        for step in range(self.start, self.stop):
            base = (step * self.world + self.rank) * self.batch
            yield list(range(base, base + self.batch))

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def kept_checkpoints(out_dir: PathLike) -> List[str]:
    """The ``checkpoint-<step>.pt`` files of a run folder, oldest step first."""
    out_dir = os.fspath(out_dir)
    if not os.path.isdir(out_dir):
        return []
    found = [(int(m.group(1)), name) for name in os.listdir(out_dir) for m in [KEPT_PATTERN.match(name)] if m]
    return [os.path.join(out_dir, name) for _, name in sorted(found)]


def keep_checkpoint(ckpt_path: str, step: int, keep_last: int) -> str:
    """Keep the just-written ``ckpt_path`` as ``checkpoint-<step>.pt`` next to it (a hard link where the file
    system allows, else a copy) and delete the oldest kept files beyond ``keep_last`` (0 = keep all)."""
    import shutil

    folder = os.path.dirname(ckpt_path)
    kept = os.path.join(folder, f"checkpoint-{step:07d}.pt")
    tmp = kept + ".tmp"
    try:
        if os.path.exists(tmp):
            os.unlink(tmp)
        try:
            os.link(ckpt_path, tmp)
        except OSError:
            shutil.copyfile(ckpt_path, tmp)
        os.replace(tmp, kept)
    except OSError as exc:
        raise OutputError(f"could not keep {kept}: {exc.strerror or exc}; {ckpt_path} is intact") from exc
    if keep_last > 0:
        for old in kept_checkpoints(folder)[:-keep_last]:
            os.unlink(old)
    return kept


def resolve_checkpoint(path: PathLike) -> str:
    """``path`` itself, or the ``checkpoint.pt`` of a run folder."""
    path = os.fspath(path)
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, CHECKPOINT_NAME)):
        return os.path.join(path, CHECKPOINT_NAME)
    return path


def mean_state_dict(states: List[Mapping[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """The mean of state dicts with the same keys (in float64, stored in the first one's dtypes); integer
    entries (batch-norm counters) come from the first."""
    first = states[0]
    out = {}
    for key, value in first.items():
        if value.is_floating_point():
            out[key] = (sum(s[key].double() for s in states) / len(states)).to(value.dtype)
        else:
            out[key] = value
    return out


def read_training_checkpoint(path: PathLike, task: str) -> Dict[str, Any]:
    """A training checkpoint of ``task`` (a file, or a run folder holding ``checkpoint.pt``)."""
    path = resolve_checkpoint(path)
    if os.path.isdir(path):
        raise CheckpointError(f"no {CHECKPOINT_NAME} in {path}")
    ckpt = load_file(path, "cpu")
    if not isinstance(ckpt, Mapping) or "config" not in ckpt or "step" not in ckpt:
        raise CheckpointError(f"{path} is not a training checkpoint (no config and step inside)")
    found = ckpt.get("task", "generator")  # generator checkpoints before the common runtime had no 'task'
    if found != task:
        raise CheckpointError(f"{path} is a {found}-training checkpoint; this config trains task {task!r}")
    return dict(ckpt)


# ------------------------------------------------------------------------------------------ tasks
@dataclass
class StepOutcome:
    """What one step reports: ``finite`` (False: the task has undone the step), ``logs`` (name -> scalar
    tensor or float, weighted losses and diagnostics) and what :meth:`Task.images` may draw."""

    finite: bool
    logs: Dict[str, Any]
    visuals: Dict[str, Any] = field(default_factory=dict)


class Task:
    """One kind of training (what differs between generator and depth training). Subclasses build their
    networks and optimisers in ``__init__(cfg, device, env)`` and implement the methods below."""

    name = "task"
    #: the config section with the loop settings (``train`` or ``depth_train``)
    section = "train"
    #: the log entry shown on the progress bar
    progress_key = "loss"

    def __init__(self, cfg: Config, device: torch.device, env: DistEnv):
        self.cfg, self.device, self.env = cfg, device, env

    @staticmethod
    def build_dataset(cfg: Config, root: PathLike) -> Any:
        """The training dataset of ``cfg`` under ``root``."""
        raise NotImplementedError

    @staticmethod
    def export(checkpoint: PathLike, out_dir: PathLike, half: bool = False, average: Sequence[PathLike] = ()) -> str:
        """Write the trained network of ``checkpoint`` (optionally the mean with ``average``) in its
        deployable form into ``out_dir``; returns what was written."""
        raise NotImplementedError

    @property
    def settings(self) -> Any:
        return getattr(self.cfg, self.section)

    def prepare_dataset(self, dataset: Any) -> Any:
        """The dataset as ``dataset[n]`` for any global sample number ``n``."""
        return dataset

    def wrap_distributed(self) -> None:
        """Wrap the trained modules in DDP (called once, after loading a checkpoint)."""
        raise NotImplementedError

    def step(self, batch: Mapping[str, Any], step: int, epoch: int,
             autocast: Callable[[], ContextManager]) -> StepOutcome:
        """Forward, backward and optimiser update of one batch (or, when not finite on any rank, nothing)."""
        raise NotImplementedError

    def end_epoch(self, epoch: int) -> None:
        """Called after the last step of an epoch (learning-rate schedules)."""

    def state(self) -> Dict[str, Any]:
        """Weights and optimiser state for the checkpoint (CPU tensors)."""
        raise NotImplementedError

    def load_state(self, ckpt: Mapping[str, Any], where: str) -> None:
        raise NotImplementedError

    def after_save(self, out_dir: str) -> None:
        """Extra files written next to each checkpoint (rank 0)."""

    def extra_scalars(self) -> Dict[str, float]:
        """TensorBoard scalars besides the step's logs (learning rates)."""
        return {}

    def scalar_tag(self, name: str) -> str:
        return f"loss/{name}"

    def images(self, outcome: StepOutcome) -> Dict[str, torch.Tensor]:
        """TensorBoard images ``(3, H, W)`` in [0, 1] for the step's outcome."""
        return {}

    def result(self) -> Dict[str, Any]:
        """Entries added to the dict :func:`run` returns."""
        return {}


# ------------------------------------------------------------------------------------------- loop
class RunLog:
    """Rank 0's record of a run: ``metrics.jsonl`` (every ``log_every`` steps and the last), TensorBoard
    scalars and images (``image_every``), the progress bar."""

    def __init__(self, out_dir: str, task: Task, start: int, total_steps: int, steps_per_epoch: int,
                 tensorboard: bool, progress: bool):
        self.task, self.total_steps, self.steps_per_epoch = task, total_steps, steps_per_epoch
        self.started = time.time()
        self.metrics = open(os.path.join(out_dir, "metrics.jsonl"), "a", encoding="utf-8")
        self.writer, self.bar = None, None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(os.path.join(out_dir, "tb"), purge_step=start or None)
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start, desc=task.name, dynamic_ncols=True)

    def step(self, step: int, outcome: StepOutcome, skipped: int) -> Dict[str, float]:
        """Record the outcome of the step that made ``step`` steps; returns its logs as floats."""
        task, s = self.task, self.task.settings
        last = {k: float(v) for k, v in outcome.logs.items()}
        if self.bar is not None:
            self.bar.update(1)
            if task.progress_key in last:
                self.bar.set_postfix(loss=f"{last[task.progress_key]:.4f}")
        final = step == self.total_steps
        if step % max(1, s.log_every) == 0 or final:
            if self.writer is not None:
                scalars = {task.scalar_tag(k): v for k, v in last.items()}
                scalars.update(task.extra_scalars(), **{"data/skipped": skipped})
                for tag, value in scalars.items():
                    self.writer.add_scalar(tag, value, step)
            record = dict(step=step, epoch=step // self.steps_per_epoch, time=round(time.time() - self.started, 2),
                          **last)
            self.metrics.write(json.dumps(record) + "\n")
            self.metrics.flush()
        if self.writer is not None and (step % max(1, s.image_every) == 0 or final):
            for tag, image in task.images(outcome).items():
                self.writer.add_image(tag, image, step)
        return last

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
        self.metrics.close()


def run(task_cls: Type[Task], cfg: Config, dataset: Any, out_dir: PathLike,
        device: Union[str, torch.device] = "auto", resume: Union[None, bool, PathLike] = None,
        max_steps: Optional[int] = None, num_workers: Optional[int] = None, progress: bool = True,
        tensorboard: bool = True, **task_options: Any) -> Dict[str, Any]:
    """Train ``task_cls(cfg, device, env, **task_options)`` on ``dataset`` into the run folder ``out_dir``.

    ``resume``: a training checkpoint (file or run folder; ``True`` = the one in ``out_dir``) to continue
    exactly. A run folder that already holds a checkpoint is only written to when resuming. Returns
    ``{"step", "epoch", "losses" (last logged, rank 0), "loss", "checkpoint", "out_dir", "skipped_samples",
    "step_time"}`` plus the task's :meth:`Task.result`.
    """
    env = distributed_env()
    dev = init_distributed(env, resolve_device(device))
    out_dir = os.fspath(out_dir)
    ckpt_path = os.path.join(out_dir, CHECKPOINT_NAME)
    if resume is True:
        resume = ckpt_path
    if resume in (False, None, ""):
        resume = None
        if os.path.exists(ckpt_path):
            raise OutputError(f"{out_dir} already holds a training run: pass --checkpoint {ckpt_path} to continue "
                              f"it, or choose another --out")
    cfg.provenance = {}  # a run describes no exported model

    # identical initial weights on every rank; per-rank noise from here on
    seed = getattr(cfg, task_cls.section).seed
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    task = task_cls(cfg, dev, env, **task_options)
    s = task.settings
    if env.is_main:
        os.makedirs(out_dir, exist_ok=True)
    dataset = task.prepare_dataset(dataset)
    batch = s.batch_size
    steps_per_epoch = len(dataset) // (batch * env.world)
    if steps_per_epoch < 1:
        raise DatasetError(f"the dataset has {len(dataset)} samples per epoch, fewer than one batch ({batch} x "
                           f"{env.world} processes): lower the batch size")
    total_steps = int(max_steps or s.max_steps or steps_per_epoch * s.num_epochs)

    start = 0
    if resume is not None:
        ckpt = read_training_checkpoint(resume, task.name)
        try:
            saved = load_config(dict(ckpt["config"])).model
        except ConfigError as exc:
            raise CheckpointError(f"{resume} holds an invalid config: {exc}") from None
        if config_to_dict(saved) != config_to_dict(cfg.model):
            raise ConfigError(f"the model config differs from the one {resume} was trained with")
        task.load_state(ckpt, os.fspath(resume))
        start = int(ckpt["step"])
        rng = ckpt["rng"]
        if isinstance(rng, Mapping):  # single-process generator checkpoints before the common runtime
            rng = [rng]
        set_rng_state(rng[env.rank] if env.rank < len(rng) else rng[0], dev)
        logger.info("resumed from %s at step %d", resume, start)
    else:
        torch.manual_seed(seed + env.rank)
        np.random.seed(seed + env.rank)
        random.seed(seed + env.rank)
    if env.distributed:
        task.wrap_distributed()

    use_amp = bool(s.amp)
    dtype = amp_dtype(s.amp_dtype, dev, f"{task.section}.amp_dtype") if use_amp else None
    autocast: Callable[[], ContextManager] = \
        (lambda: torch.autocast(dev.type, dtype=dtype)) if dtype is not None else nullcontext
    workers = cfg.dataset.num_workers if num_workers is None else num_workers
    # its own generator: creating the iterator must not draw from the global RNG that a resume restores
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=StepBatches(start, total_steps, batch, env.rank,
                                                                            env.world),
                                         num_workers=workers, persistent_workers=False,
                                         pin_memory=dev.type == "cuda",
                                         generator=torch.Generator().manual_seed(seed + start))
    log = None
    if env.is_main:
        save_config(cfg, os.path.join(out_dir, "config.yaml"))
        log = RunLog(out_dir, task, start, total_steps, steps_per_epoch, tensorboard, progress)

    def save(step: int) -> None:
        rng = all_gather_objects(rng_state(dev), env)  # collective: every rank takes part
        if not env.is_main:
            return
        state = {"format_version": FORMAT_VERSION, "task": task.name, "config": config_to_dict(cfg),
                 "step": step, "epoch": step // steps_per_epoch, "rng": rng, **task.state()}
        atomic_torch_save(state, ckpt_path)
        task.after_save(out_dir)
        if s.keep_every and step % s.keep_every == 0:
            keep_checkpoint(ckpt_path, step, s.keep_last)

    step, bad_in_row, skipped = start, 0, 0
    last: Dict[str, float] = {}
    times: List[float] = []
    try:
        for data in loader:
            t0 = time.perf_counter()
            if "skipped" in data:
                skipped += int(data["skipped"].sum())
            outcome = task.step(data, step, step // steps_per_epoch, autocast)
            if outcome.finite:
                bad_in_row = 0
            else:
                bad_in_row += 1
                logger.warning("step %d: non-finite loss or gradient (%s) -- step skipped (%d in a row)", step,
                               {k: float(v) for k, v in outcome.logs.items()}, bad_in_row)
                if bad_in_row >= s.max_bad_steps:
                    raise TrainingError(
                        f"{bad_in_row} non-finite steps in a row at step {step}: stopping. The last good checkpoint "
                        f"is {ckpt_path if os.path.exists(ckpt_path) else 'none'}; lower the learning rates, "
                        f"enable {task.section}.grad_clip or disable amp")
            step += 1
            times.append(time.perf_counter() - t0)
            if step % steps_per_epoch == 0:
                task.end_epoch(step // steps_per_epoch)
            if log is not None:
                last = log.step(step, outcome, skipped)
            if step % max(1, s.save_every) == 0 or step == total_steps or (s.keep_every and step % s.keep_every == 0):
                save(step)
    finally:
        if log is not None:
            log.close()
        if env.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.barrier()
    main_loss = last.get(task.progress_key, float("nan"))
    return {"step": step, "epoch": step // steps_per_epoch, "losses": last, "loss": main_loss,
            "checkpoint": ckpt_path, "out_dir": out_dir, "skipped_samples": skipped,
            "step_time": float(np.median(times)) if times else float("nan"), **task.result()}



def run_from_args(task_cls: Type[Task], cfg: Config, args: Any) -> Dict[str, Any]:
    """``train.py``'s training: the dataset under ``args.data`` (or ``dataset.root_dir``), the run folder
    ``args.out``, resuming from ``args.checkpoint``; also ``device``, ``max_steps``, ``num_workers``,
    ``no_progress``. Leaves the process group (under ``torchrun``) when done."""
    root = getattr(args, "data", None) or cfg.dataset.root_dir
    if not root:
        raise DatasetError("no dataset given: set dataset.root_dir in the config or pass --data")
    dataset = task_cls.build_dataset(cfg, root)
    try:
        return run(task_cls, cfg, dataset, args.out, device=getattr(args, "device", None) or "auto",
                   resume=getattr(args, "checkpoint", None), max_steps=getattr(args, "max_steps", None),
                   num_workers=getattr(args, "num_workers", None),
                   progress=not getattr(args, "no_progress", False) and distributed_env().is_main)
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
