"""DaGAN generator training: one readable loop (nanoGPT-style).

* keypoint detector + generator (and the depth network when ``train.train_depth``) against a multi-scale
  discriminator, losses from :mod:`dagan.training.losses` weighted by ``train.loss_weights``;
* Adam (0.5, 0.999) with the official per-epoch ``MultiStepLR`` (x0.1 at ``epoch_milestones``);
* mixed precision (``train.amp``: bf16 on CPU, fp16 + GradScaler or bf16 on CUDA), gradient clipping,
  a NaN/inf guard (the step is skipped and logged; ``max_bad_steps`` in a row stop the run with a
  :class:`~dagan.errors.TrainingError`, the last checkpoint stays intact);
* atomic single-file checkpoints in our format (``DaGAN.from_pretrained(run/checkpoint.pt)`` loads them)
  with discriminator, optimiser, scheduler, scaler, step, epoch and RNG states;
* exact resume: batch ``s`` reads global sample numbers ``(s * world + rank) * batch + i`` and the random
  warp of step ``s`` is seeded by ``(seed, s, rank)``, so a resumed run replays the same data and noise;
* DDP through ``torchrun`` environment variables (gloo on CPU, nccl on CUDA), rank-0-only checkpoints and
  logs, saved weights without a ``module.`` prefix;
* TensorBoard scalars and image grids, ``metrics.jsonl``, tqdm progress.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import time
import warnings
from contextlib import nullcontext
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..checkpoints import FORMAT_VERSION, check_and_load, load_file, strip_prefix
from ..config import Config, config_to_dict, load_config, save_config
from ..errors import CheckpointError, ConfigError, DatasetError, TrainingError
from ..models.dagan import DaGAN, build_discriminator
from ..models.discriminator import scale_name
from ..utils import atomic_torch_save, resolve_device, rng_state, set_rng_state
from . import losses as L
from .transforms import RandomWarp

logger = logging.getLogger("dagan")
PathLike = Union[str, os.PathLike]
CHECKPOINT_NAME = "checkpoint.pt"


# ------------------------------------------------------------------------------------ the full model
class GeneratorFullModel(nn.Module):
    """Forward pass + generator losses of one batch.

    ``forward(source, driving, warp_seed)`` with ``(B, 3, H, W)`` frames in [0, 1] returns
    ``(losses: dict of weighted scalar tensors, generated: dict)``. The discriminator is held outside the
    module tree (it has its own optimiser and DDP wrapper) and is frozen while this runs.
    """

    def __init__(self, model: DaGAN, discriminator: nn.Module, cfg: Config, vgg: Optional[nn.Module] = None):
        super().__init__()
        self.model = model
        self._disc = (discriminator,)  # a tuple: not registered as a sub-module
        self.cfg = cfg
        self.train_params = cfg.train
        self.w = cfg.train.loss_weights
        self.scales = cfg.train.scales
        self.pyramid = L.ImagePyramid(self.scales, cfg.model.num_channels)
        self.vgg = vgg
        self.train_depth = cfg.train.train_depth

    @property
    def discriminator(self) -> nn.Module:
        return self._disc[0]

    def depth(self, frames: torch.Tensor) -> torch.Tensor:
        if self.train_depth:
            return self.model.depth_decoder(self.model.depth_encoder(frames))[("disp", 0)]
        with torch.no_grad():
            return self.model.depth_decoder(self.model.depth_encoder(frames))[("disp", 0)]

    def keypoints(self, frames: torch.Tensor, depth: torch.Tensor) -> Dict[str, torch.Tensor]:
        return self.model.kp_detector(torch.cat([frames, depth.to(frames.dtype)], dim=1))

    def forward(self, source: torch.Tensor, driving: torch.Tensor, warp_seed: int):
        w, tp = self.w, self.train_params
        depth_source, depth_driving = self.depth(source), self.depth(driving)
        kp_source = self.keypoints(source, depth_source)
        kp_driving = self.keypoints(driving, depth_driving)
        generated = self.model.generator(source, kp_driving=kp_driving, kp_source=kp_source,
                                         source_depth=depth_source)
        generated.update(kp_source=kp_source, kp_driving=kp_driving, depth_source=depth_source,
                         depth_driving=depth_driving)
        losses: Dict[str, torch.Tensor] = {}
        prediction = generated["prediction"]
        pyr_real, pyr_fake = self.pyramid(driving), self.pyramid(prediction)
        if sum(w.perceptual) and self.vgg is not None:
            losses["perceptual"] = L.perceptual_loss(self.vgg, pyr_real, pyr_fake, w.perceptual)
        if w.l1_pyramid:
            losses["l1_pyramid"] = w.l1_pyramid * L.pyramid_l1_loss(pyr_real, pyr_fake)
        if w.ssim_pyramid:
            losses["ssim_pyramid"] = w.ssim_pyramid * L.pyramid_ssim_loss(pyr_real, pyr_fake)
        if w.generator_gan:
            kp_det = {"value": kp_driving["value"].detach()}
            disc_fake = self.discriminator(pyr_fake, kp=kp_det)
            scales = [scale_name(s) for s in self.discriminator.scales]
            losses["generator_gan"] = w.generator_gan * L.lsgan_generator_loss(
                [disc_fake["prediction_map_" + s] for s in scales])
            if sum(w.feature_matching):
                disc_real = self.discriminator(pyr_real, kp=kp_det)
                losses["feature_matching"] = L.feature_matching_loss(
                    [disc_real["feature_maps_" + s] for s in scales],
                    [disc_fake["feature_maps_" + s] for s in scales], w.feature_matching)
        if w.equivariance_value or w.equivariance_jacobian:
            gen = torch.Generator().manual_seed(int(warp_seed))
            t = tp.transform_params
            warp = RandomWarp(driving.shape[0], t.sigma_affine, t.sigma_tps, t.points_tps, generator=gen,
                              device=driving.device)
            transformed = warp.warp_image(driving)
            kp_transformed = self.keypoints(transformed, self.depth(transformed))
            generated.update(transformed_frame=transformed, transformed_kp=kp_transformed)
            if w.equivariance_value:
                losses["equivariance_value"] = w.equivariance_value * L.equivariance_value_loss(
                    kp_driving, kp_transformed, warp)
            if w.equivariance_jacobian and "jacobian" in kp_driving:
                losses["equivariance_jacobian"] = w.equivariance_jacobian * L.equivariance_jacobian_loss(
                    kp_driving, kp_transformed, warp)
        if w.kp_distance:
            losses["kp_distance"] = w.kp_distance * (L.kp_distance_loss(kp_source) + L.kp_distance_loss(kp_driving))
        if w.depth_constraint:
            depth_generated = self.model.depth_decoder(self.model.depth_encoder(prediction))[("disp", 0)]
            losses["depth_constraint"] = w.depth_constraint * L.depth_consistency_loss(depth_generated, depth_driving)
        return losses, generated


def discriminator_loss(discriminator: nn.Module, driving: torch.Tensor,
                       prediction: torch.Tensor, kp_driving: Mapping[str, torch.Tensor], weight: float,
                       pyramid: nn.Module) -> torch.Tensor:
    """LSGAN discriminator loss on the real driving frame vs the (detached) prediction."""
    kp = {"value": kp_driving["value"].detach()}
    real = discriminator(pyramid(driving), kp=kp)
    fake = discriminator(pyramid(prediction.detach()), kp=kp)
    names = [scale_name(s) for s in _unwrap(discriminator).scales]
    return weight * L.lsgan_discriminator_loss([real["prediction_map_" + s] for s in names],
                                               [fake["prediction_map_" + s] for s in names])


# ---------------------------------------------------------------------------------------- utilities
def _unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def distributed_env() -> Dict[str, int]:
    """Rank, local rank and world size from the ``torchrun`` environment (1 process without it)."""
    return {"rank": int(os.environ.get("RANK", "0")), "local_rank": int(os.environ.get("LOCAL_RANK", "0")),
            "world": int(os.environ.get("WORLD_SIZE", "1"))}


def amp_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` -> bf16 on CPU and on CUDA with bf16 support, else fp16."""
    if name == "auto":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            return torch.float16
        return torch.bfloat16
    table = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if name not in table:
        raise ConfigError(f"config key 'train.amp_dtype': use auto, bfloat16 or float16, got {name!r}")
    if table[name] == torch.float16 and device.type == "cpu":
        raise ConfigError("config key 'train.amp_dtype': float16 autocast is not supported on CPU (use bfloat16)")
    return table[name]


def step_seed(seed: int, step: int, rank: int) -> int:
    """The seed of the random warp of ``step`` on ``rank``."""
    return int(np.random.default_rng([seed & 0xFFFFFFFF, step, rank, 0x7A4B]).integers(0, 2 ** 62))


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


def _draw_keypoints(frames: torch.Tensor, kp: torch.Tensor, radius: int = 1) -> torch.Tensor:
    """Frames ``(B, 3, H, W)`` with keypoints ``(B, K, 2)`` in [-1, 1] drawn as coloured squares."""
    out = frames.detach().float().clone().cpu()
    b, _, h, w = out.shape
    k = kp.shape[1]
    colours = torch.tensor([[math.cos(2 * math.pi * i / k + a) * 0.5 + 0.5 for a in (0, 2.1, 4.2)]
                            for i in range(k)])
    pix = ((kp.detach().float().cpu() + 1) / 2 * torch.tensor([w - 1, h - 1])).round().long()
    for i in range(b):
        for j in range(k):
            x, y = int(pix[i, j, 0]), int(pix[i, j, 1])
            out[i, :, max(0, y - radius):y + radius + 1, max(0, x - radius):x + radius + 1] = colours[j].view(3, 1, 1)
    return out


def visualize(source: torch.Tensor, driving: torch.Tensor, generated: Mapping[str, Any], max_items: int = 4
              ) -> torch.Tensor:
    """An image grid ``(3, H', W')``: one row per sample with source + kp, driving + kp, source depth,
    driving depth, deformed source, occlusion map, prediction."""
    from torchvision.utils import make_grid

    n = min(max_items, source.shape[0])
    size = source.shape[2:]

    def rgb(x: torch.Tensor) -> torch.Tensor:
        x = x[:n].detach().float().cpu()
        if x.shape[2:] != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        if x.shape[1] == 1:
            lo, hi = x.amin(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)
            x = ((x - lo) / (hi - lo + 1e-8)).repeat(1, 3, 1, 1)
        return x.clamp(0, 1)

    columns = [_draw_keypoints(source[:n], generated["kp_source"]["value"][:n]),
               _draw_keypoints(driving[:n], generated["kp_driving"]["value"][:n]),
               rgb(generated["depth_source"]), rgb(generated["depth_driving"])]
    if "deformed" in generated:
        columns.append(rgb(generated["deformed"]))
    if generated.get("occlusion_map") is not None:
        columns.append(rgb(generated["occlusion_map"]))
    columns.append(rgb(generated["prediction"]))
    tiles = torch.stack(columns, dim=1).flatten(0, 1)
    return make_grid(tiles, nrow=len(columns), padding=2, pad_value=1.0)


# ----------------------------------------------------------------------------------- weight loading
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
    the file may lack them, and they keep their fresh initialisation.
    """
    path = os.fspath(path)
    state, disc, official = _read_init_checkpoint(path)
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


# ---------------------------------------------------------------------------------------- the trainer
def _check_config(cfg: Config) -> None:
    w = cfg.train.loss_weights
    if w.kp_prior or w.kp_scale:
        raise ConfigError("config keys 'train.loss_weights.kp_prior'/'kp_scale' are not supported; set them to 0")
    if cfg.train.perceptual_backbone == "none" and sum(w.perceptual) and not (w.l1_pyramid or w.ssim_pyramid):
        raise ConfigError("config key 'train.perceptual_backbone' is 'none' but only perceptual weights are set: "
                          "set loss_weights.l1_pyramid / ssim_pyramid (the offline substitute)")
    if len(w.feature_matching) and w.generator_gan and len(w.feature_matching) < cfg.model.discriminator.num_blocks:
        logger.info("feature matching uses the first %d discriminator layers", len(w.feature_matching))


def train(cfg: Config, dataset, out_dir: PathLike, device: Union[str, torch.device] = "auto",
          resume: Optional[PathLike] = None, max_steps: Optional[int] = None, num_workers: Optional[int] = None,
          progress: bool = True, vgg: Optional[nn.Module] = None) -> Dict[str, Any]:
    """Train the DaGAN generator. Returns ``{"step", "epoch", "losses" (last logged, rank 0), "checkpoint",
    "out_dir", "skipped_samples", "model", "discriminator"}`` (the trained modules, on ``device``).

    ``dataset[n]`` must give ``{"source", "driving"}`` for any global sample number ``n`` (see
    :mod:`dagan.training.datasets`). ``resume`` is a training checkpoint to continue from exactly.
    ``vgg`` injects a feature extractor (tests); by default VGG19 is loaded when perceptual weights are set.
    """
    _check_config(cfg)
    tc = cfg.train
    env = distributed_env()
    rank, world = env["rank"], env["world"]
    distributed = world > 1
    if distributed and not dist.is_initialized():
        dev = resolve_device(device)
        if dev.type == "cuda":
            dev = torch.device("cuda", env["local_rank"])
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    else:
        dev = resolve_device(device)
    is_main = rank == 0
    out_dir = os.fspath(out_dir)
    if is_main:
        os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(tc.seed)  # identical initial weights on every rank
    np.random.seed(tc.seed)
    random.seed(tc.seed)

    model = DaGAN(cfg.model)
    discriminator = build_discriminator(cfg.model)
    if tc.depth_checkpoint:
        load_depth_checkpoint(model, tc.depth_checkpoint)
    elif not tc.train_depth:
        logger.warning("train.depth_checkpoint not set and train.train_depth false: the depth network stays "
                       "at its random initialisation")
    if tc.init_checkpoint:
        load_init_checkpoint(model, discriminator, tc.init_checkpoint, tc.init_networks, tc.init_new_keys)
    model.to(dev).train()
    discriminator.to(dev).train()
    if not tc.train_depth:
        for net in (model.depth_encoder, model.depth_decoder):
            net.eval().requires_grad_(False)
    w = tc.loss_weights
    if vgg is None and sum(w.perceptual) and tc.perceptual_backbone == "vgg19":
        vgg = L.Vgg19Features(tc.vgg19_weights)
    if vgg is not None:
        vgg.to(dev)
    full = GeneratorFullModel(model, discriminator, cfg, vgg).to(dev)

    gen_groups = [{"params": list(model.generator.parameters()), "lr": tc.lr_generator},
                  {"params": list(model.kp_detector.parameters()), "lr": tc.lr_kp_detector}]
    if tc.train_depth:
        gen_groups.append({"params": list(model.depth_encoder.parameters()) + list(model.depth_decoder.parameters()),
                           "lr": tc.lr_generator})
    opt_g = torch.optim.Adam(gen_groups, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=tc.lr_discriminator, betas=(0.5, 0.999))
    sched_g = torch.optim.lr_scheduler.MultiStepLR(opt_g, tc.epoch_milestones, gamma=0.1)
    sched_d = torch.optim.lr_scheduler.MultiStepLR(opt_d, tc.epoch_milestones, gamma=0.1)
    use_amp = bool(tc.amp)
    dtype = amp_dtype(tc.amp_dtype, dev) if use_amp else torch.float32
    scaler = torch.amp.GradScaler(dev.type, enabled=use_amp and dtype == torch.float16)

    batch = tc.batch_size
    steps_per_epoch = max(1, len(dataset) // (batch * world))
    total_steps = int(max_steps or tc.max_steps or steps_per_epoch * tc.num_epochs)
    step, epoch = 0, 0
    if resume:
        ckpt = load_file(os.fspath(resume), "cpu")
        if not isinstance(ckpt, Mapping) or "optimizers" not in ckpt:
            raise CheckpointError(f"{resume} is not a generator-training checkpoint (no optimiser state)")
        check_and_load(model, ckpt["state_dict"], f"weights in {resume}")
        check_and_load(discriminator, ckpt["discriminator"], f"discriminator in {resume}")
        opt_g.load_state_dict(ckpt["optimizers"]["generator"])
        opt_d.load_state_dict(ckpt["optimizers"]["discriminator"])
        sched_g.load_state_dict(ckpt["schedulers"]["generator"])
        sched_d.load_state_dict(ckpt["schedulers"]["discriminator"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        step, epoch = int(ckpt["step"]), int(ckpt["epoch"])
        set_rng_state(ckpt["rng"], dev)
        logger.info("resumed from %s at step %d (epoch %d)", resume, step, epoch)

    g_module: nn.Module = full
    d_module: nn.Module = discriminator
    if distributed:
        ids = [dev.index] if dev.type == "cuda" else None
        g_module = nn.parallel.DistributedDataParallel(full, device_ids=ids)
        d_module = nn.parallel.DistributedDataParallel(discriminator, device_ids=ids)

    writer = None
    metrics_file = None
    if is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(os.path.join(out_dir, "tb"), purge_step=step or None)
        metrics_file = open(os.path.join(out_dir, "metrics.jsonl"), "a", encoding="utf-8")
        save_config(cfg, os.path.join(out_dir, "config.yaml"))

    workers = cfg.dataset.num_workers if num_workers is None else num_workers
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=StepBatches(step, total_steps, batch, rank, world),
                                         num_workers=workers, persistent_workers=False,
                                         pin_memory=dev.type == "cuda")

    def save(path: str) -> None:
        state = {"format_version": FORMAT_VERSION, "config": config_to_dict(cfg),
                 "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                 "discriminator": {k: v.detach().cpu() for k, v in discriminator.state_dict().items()},
                 "optimizers": {"generator": opt_g.state_dict(), "discriminator": opt_d.state_dict()},
                 "schedulers": {"generator": sched_g.state_dict(), "discriminator": sched_d.state_dict()},
                 "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                 "step": step, "epoch": epoch, "rng": rng_state(dev)}
        atomic_torch_save(state, path)

    ckpt_path = os.path.join(out_dir, CHECKPOINT_NAME)
    bad_in_row, skipped_total = 0, 0
    last: Dict[str, float] = {}
    bar = None
    if progress and is_main:
        from tqdm import tqdm

        bar = tqdm(total=total_steps, initial=step, desc="train", dynamic_ncols=True)
    params_g = [p for group in gen_groups for p in group["params"]]
    guarded_buffers = list(model.buffers()) + list(discriminator.buffers())
    autocast = (lambda: torch.autocast(dev.type, dtype=dtype)) if use_amp else nullcontext
    t_start = time.time()
    try:
        for data in loader:
            source = data["source"].to(dev, non_blocking=True)
            driving = data["driving"].to(dev, non_blocking=True)
            skipped_total += int(data["skipped"].sum())
            # batch-norm statistics are updated by the forward pass itself: keep a copy to undo a bad step
            saved_buffers = [b.detach().clone() for b in guarded_buffers]
            # ------------------------------------------------------------- generator + keypoints
            discriminator.requires_grad_(False)
            with autocast():
                losses, generated = g_module(source, driving, step_seed(tc.seed, step, rank))
            loss_g = sum(v.float() for v in losses.values())
            opt_g.zero_grad(set_to_none=True)
            scaler.scale(loss_g).backward()
            scaler.unscale_(opt_g)
            grad_norm = torch.nn.utils.clip_grad_norm_(params_g, tc.grad_clip if tc.grad_clip > 0 else float("inf"))
            finite = torch.isfinite(loss_g.detach()) & torch.isfinite(grad_norm)
            # ------------------------------------------------------------------- discriminator
            discriminator.requires_grad_(True)
            loss_d = torch.zeros((), device=dev)
            if w.discriminator_gan and w.generator_gan:
                with autocast():
                    loss_d = discriminator_loss(d_module, driving, generated["prediction"],
                                                generated["kp_driving"], w.discriminator_gan, full.pyramid).float()
                opt_d.zero_grad(set_to_none=True)
                scaler.scale(loss_d).backward()
                scaler.unscale_(opt_d)
                d_norm = torch.nn.utils.clip_grad_norm_(discriminator.parameters(),
                                                        tc.grad_clip if tc.grad_clip > 0 else float("inf"))
                finite = finite & torch.isfinite(loss_d.detach()) & torch.isfinite(d_norm)
            if distributed:  # every rank must take the same decision
                flag = finite.float().to(dev)
                dist.all_reduce(flag, op=dist.ReduceOp.MIN)
                finite = flag > 0
            if not bool(finite):
                bad_in_row += 1
                opt_g.zero_grad(set_to_none=True)
                opt_d.zero_grad(set_to_none=True)
                with torch.no_grad():
                    for buf, saved in zip(guarded_buffers, saved_buffers):
                        buf.copy_(saved)
                scaler.update()
                logger.warning("step %d: non-finite loss or gradient (%s) -- step skipped (%d in a row)", step,
                               {k: float(v.detach()) for k, v in losses.items()}, bad_in_row)
                if bad_in_row >= tc.max_bad_steps:
                    raise TrainingError(f"{bad_in_row} non-finite steps in a row at step {step}: stopping. The last "
                                        f"good checkpoint is {ckpt_path if os.path.exists(ckpt_path) else 'none'}; "
                                        f"lower the learning rates, enable train.grad_clip or disable train.amp")
            else:
                bad_in_row = 0
                scaler.step(opt_g)
                if w.discriminator_gan and w.generator_gan:
                    scaler.step(opt_d)
                scaler.update()
            step += 1
            if step % steps_per_epoch == 0:
                epoch += 1
                sched_g.step()
                with warnings.catch_warnings():  # without a GAN loss opt_d never steps: torch warns about the order
                    warnings.simplefilter("ignore", UserWarning)
                    sched_d.step()
            # ------------------------------------------------------------------------ logging
            if is_main:
                last = {k: float(v.detach()) for k, v in losses.items()}
                last.update(generator_total=float(loss_g.detach()), discriminator=float(loss_d.detach()))
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{last['generator_total']:.3f}")
                if step % max(1, tc.log_every) == 0 or step == total_steps:
                    for k, v in last.items():
                        writer.add_scalar(f"loss/{k}", v, step)
                    writer.add_scalar("lr/generator", opt_g.param_groups[0]["lr"], step)
                    writer.add_scalar("data/skipped", skipped_total, step)
                    record = dict(step=step, epoch=epoch, time=round(time.time() - t_start, 2), **last)
                    metrics_file.write(json.dumps(record) + "\n")
                    metrics_file.flush()
                if step % max(1, tc.image_every) == 0 or step == total_steps:
                    writer.add_image("reconstruction", visualize(source, driving, generated), step)
                if step % max(1, tc.save_every) == 0 or step == total_steps:
                    save(ckpt_path)
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.flush()
            writer.close()
        if metrics_file is not None:
            metrics_file.close()
        if distributed and dist.is_initialized():
            dist.barrier()
    return {"step": step, "epoch": epoch, "losses": last, "checkpoint": ckpt_path, "out_dir": out_dir,
            "skipped_samples": skipped_total, "model": model, "discriminator": discriminator}


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

    cfg, source = describe(checkpoint)
    model = DaGAN.from_pretrained(checkpoint)
    averaged = []
    if average:
        state = {k: v.double() if v.is_floating_point() else v for k, v in model.state_dict().items()}
        for other_path in average:
            other = DaGAN.from_pretrained(other_path)
            if config_to_dict(other.config) != config_to_dict(model.config):
                raise CheckpointError(f"cannot average {other_path} with {checkpoint}: the model configs differ")
            for k, v in other.state_dict().items():
                if v.is_floating_point():
                    state[k] += v.double()
            averaged.append(describe(other_path)[1])
        n = 1 + len(average)
        model.load_state_dict({k: (v / n).float() if v.is_floating_point() else v for k, v in state.items()})
    cfg.provenance = {}
    provenance = {"source_run": os.path.dirname(os.path.abspath(os.fspath(checkpoint))), **source,
                  "averaged": [source] + averaged if averaged else [], "half": bool(half)}
    return model.save_pretrained(out_dir, config=cfg, provenance=provenance, half=half)


def main(cfg: Config, args) -> Dict[str, Any]:
    """``train.py`` entry for ``task: generator``: reads ``data``, ``out``, ``device``, ``checkpoint``,
    ``max_steps``, ``num_workers``, ``no_progress`` from ``args``."""
    from .datasets import build_dataset

    root = getattr(args, "data", None) or cfg.dataset.root_dir
    if not root:
        raise DatasetError("no dataset given: set dataset.root_dir in the config or pass --data")
    env = distributed_env()
    dataset = build_dataset(cfg.dataset, "train", seed=cfg.train.seed, root=root)
    out_dir = getattr(args, "out", None) or os.path.join("runs", "generator")
    result = train(cfg, dataset, out_dir, device=getattr(args, "device", None) or "auto",
                   resume=getattr(args, "checkpoint", None), max_steps=getattr(args, "max_steps", None),
                   num_workers=getattr(args, "num_workers", None),
                   progress=not getattr(args, "no_progress", False) and env["rank"] == 0)
    if dist.is_initialized():
        dist.destroy_process_group()
    return result

