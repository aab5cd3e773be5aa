"""Self-supervised face-depth training (Face-Depth-Network / monodepth2 recipe; DaGAN++ uncertainty variant).

``python train.py --config configs/depth-vox.yaml`` (a config with ``task: depth``) ends up in :func:`main`;
``python -m dagan.training.depth_trainer --config ...`` is the same without ``train.py``.

One step: a window of frames ``[0, -1, +1]`` (``depth_train.frame_ids``); the depth net predicts multi-scale
disparity of frame 0; the pose net predicts the rigid motion (and, in ``learned`` intrinsics mode, the
camera intrinsics; DaGAN++: per-pixel uncertainty) between frame 0 and each neighbour; each neighbour is
warped into frame 0; the loss is the per-pixel minimum photometric error (SSIM/L1) with auto-masking plus
edge-aware smoothness, averaged over scales (see :mod:`dagan.training.depth_losses`).

Run folder (``--out``): ``config.yaml`` (full config), ``checkpoint.pt`` (latest training state, atomic:
``format_version``, ``task``, ``config``, ``step``, weights of ``depth_encoder``/``depth_decoder``/
``pose_net``, optimiser, AMP scaler, RNG states), ``encoder.pth`` + ``depth.pth`` (the depth network in
the official monodepth2 layout, rewritten at every save: this folder works as ``--depth_checkpoint`` /
``train.depth_checkpoint`` / ``DaGAN.from_official(..., depth_dir=run)``), ``tb/`` (TensorBoard).

Resuming (``--resume``) is exact: sample ``n`` of the run is a pure function of ``(seed, n)``
(:class:`~dagan.training.datasets.VideoFramesDataset`), and the RNG states, optimiser and scaler are
restored, so an interrupted run continues bit-identically on the same device.

Multi-GPU: ``torchrun --nproc_per_node N train.py --config ...`` (DDP from the ``RANK``/``WORLD_SIZE``/
``LOCAL_RANK`` variables; NCCL on GPUs, gloo on CPU). The batch size is per process.
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import time
from contextlib import nullcontext
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config, DepthTrainConfig, ModelConfig, config_from_dict, config_to_dict, load_config, save_config
from ..errors import CheckpointError, ConfigError, DaganError, DatasetError, OutputError, TrainingError
from ..models.depth import DepthDecoder, DepthEncoder, PoseNet, disp_to_depth
from ..utils import atomic_torch_save, resolve_device, rng_state, set_rng_state
from .depth_losses import SIGMA_FLOOR, edge_aware_smoothness, min_reprojection, photometric_error
from .geometry import transformation_from_parameters, warp

logger = logging.getLogger("dagan")
FORMAT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"
PathLike = Union[str, os.PathLike]

__all__ = ["DepthTrainingModel", "fixed_intrinsics", "train", "main", "load_depth_weights", "export_depth",
           "colorize", "build_dataset"]


def fixed_intrinsics(batch: int, height: int, width: int, focal: float, device=None,
                     dtype=torch.float32) -> torch.Tensor:
    """``(B, 3, 3)``: ``fx = focal * W``, ``fy = focal * H``, principal point at the image centre."""
    k = torch.tensor([[focal * width, 0, (width - 1) / 2], [0, focal * height, (height - 1) / 2], [0, 0, 1]],
                     dtype=dtype, device=device)
    return k.expand(batch, 3, 3).clone()


class DepthTrainingModel(nn.Module):
    """Depth encoder/decoder (same classes and key names as in :class:`~dagan.DaGAN`) + pose net.

    ``forward(frames)`` with frames ``(B, F, 3, H, W)`` in [0, 1] ordered like ``train_cfg.frame_ids``
    returns ``(loss, logs, outputs)``: the scalar training loss, a dict of float logs, and the tensors
    worth looking at (``disp`` ``(B, 1, H, W)``, ``automask``, ``intrinsics`` ``(B, 3, 3)``, ``sigma``).
    """

    def __init__(self, model_cfg: ModelConfig, train_cfg: DepthTrainConfig):
        super().__init__()
        depth_cfg = model_cfg.depth
        self.train_cfg = train_cfg
        self.frame_ids = list(train_cfg.frame_ids)
        self.scales = list(train_cfg.scales)
        self.uncertainty = bool(train_cfg.uncertainty or depth_cfg.uncertainty)
        self.depth_encoder = DepthEncoder(depth_cfg.num_layers, depth_cfg.pretrained_encoder)
        self.depth_decoder = DepthDecoder(self.depth_encoder.num_ch_enc, scales=depth_cfg.scales)
        self.pose_net = PoseNet(depth_cfg.num_layers, depth_cfg.pretrained_encoder, uncertainty=self.uncertainty)
        # parameters the loss never reaches are frozen, so DDP needs no unused-parameter search: the ResNet
        # classifiers, the disparity heads of scales the loss skips, the K heads when K is fixed
        unused = [self.depth_encoder.encoder.fc, self.pose_net.encoder.encoder.fc]
        unused += [self.depth_decoder.decoder[i] for s, i in self.depth_decoder._dispconv.items()
                   if s not in self.scales]
        if train_cfg.intrinsics != "learned":
            unused += [self.pose_net.decoder.focal, self.pose_net.decoder.offset]
        for module in unused:
            module.requires_grad_(False)

    def depth_state(self) -> Dict[str, Dict[str, torch.Tensor]]:
        return {"depth_encoder": self.depth_encoder.state_dict(), "depth_decoder": self.depth_decoder.state_dict()}

    def forward(self, frames: torch.Tensor, noise_generator: Optional[torch.Generator] = None):
        cfg = self.train_cfg
        b, _, _, h, w = frames.shape
        target = frames[:, self.frame_ids.index(0)]
        disps = self.depth_decoder(self.depth_encoder(target))

        poses, intrinsics, sigmas = [], [], []
        sources = [(k, frames[:, i]) for i, k in enumerate(self.frame_ids) if k != 0]
        for k, source in sources:
            # pairs in temporal order; the net predicts the motion from the first to the second camera
            pair = (source, target) if k < 0 else (target, source)
            axisangle, translation, k_pair, unc = self.pose_net(*pair)
            poses.append(transformation_from_parameters(axisangle.float(), translation.float(), invert=k < 0))
            intrinsics.append(k_pair.float())
            if unc is not None:
                sigmas.append(unc[:, 1 if k < 0 else 0].float())  # the map of the target frame in the pair
        if cfg.intrinsics == "learned":
            k_used = torch.stack(intrinsics).mean(0)  # one camera per window, learned from every pair
        else:
            k_used = fixed_intrinsics(b, h, w, cfg.fixed_focal, frames.device)

        target32 = target.float()
        with torch.autocast(device_type=frames.device.type, enabled=False):
            identity = None
            if cfg.automask:
                identity = torch.cat([photometric_error(s.float(), target32, cfg.ssim_weight) for _, s in sources], 1)
            uncertainty = torch.stack(sigmas, 1) if sigmas else None
            total = torch.zeros((), device=frames.device)
            photo_total = smooth_total = torch.zeros((), device=frames.device)
            automask = None
            for s in self.scales:
                disp = disps[("disp", s)].float()
                disp_full = F.interpolate(disp, size=(h, w), mode="bilinear", align_corners=False) if s else disp
                _, depth = disp_to_depth(disp_full, cfg.min_depth, cfg.max_depth)
                reprojection = torch.cat([
                    photometric_error(warp(src.float(), depth, pose, k_used)[0], target32, cfg.ssim_weight)
                    for (_, src), pose in zip(sources, poses)], 1)
                result = min_reprojection(reprojection, identity, uncertainty, generator=noise_generator)
                target_s = F.interpolate(target32, size=disp.shape[-2:], mode="area") if s else target32
                smooth = edge_aware_smoothness(disp, target_s)
                total = total + result["loss"] + cfg.smoothness_weight * smooth / (2 ** s)
                photo_total = photo_total + result["loss"].detach()
                smooth_total = smooth_total + smooth.detach()
                if s == 0:
                    automask = result["automask"]
            loss = total / len(self.scales)

        logs = {"loss": loss.detach(), "photometric": photo_total / len(self.scales),
                "smoothness": smooth_total / len(self.scales),
                "automask": automask.mean() if automask is not None else torch.ones(()),
                "fx": k_used[:, 0, 0].mean().detach() / w, "fy": k_used[:, 1, 1].mean().detach() / h,
                "cx": k_used[:, 0, 2].mean().detach() / w, "cy": k_used[:, 1, 2].mean().detach() / h,
                "translation": torch.stack([p[:, :3, 3].norm(dim=1).mean() for p in poses]).mean().detach()}
        outputs = {"disp": disps[("disp", 0)].detach(), "automask": automask, "intrinsics": k_used.detach()}
        if uncertainty is not None:
            sigma = F.softplus(uncertainty.detach()) + SIGMA_FLOOR
            logs["sigma"] = sigma.mean()
            outputs["sigma"] = sigma
        return loss, logs, outputs


# ----------------------------------------------------------------------------------------- visuals
_COLORMAP = np.array([[0.0, 0.0, 0.02], [0.23, 0.06, 0.44], [0.55, 0.16, 0.51], [0.87, 0.32, 0.39],
                      [0.99, 0.64, 0.45], [0.99, 0.99, 0.75]], dtype=np.float32)  # magma-like anchors


def colorize(values: torch.Tensor) -> torch.Tensor:
    """``(H, W)`` (or ``(1, H, W)``) map -> ``(3, H, W)`` colour image in [0, 1] (min-max normalised,
    dark = small / far, bright = large / near for disparity)."""
    v = values.detach().float().cpu().reshape(values.shape[-2:])
    v = (v - v.min()) / (v.max() - v.min() + 1e-8)
    pos = v.numpy() * (len(_COLORMAP) - 1)
    lo = np.clip(np.floor(pos).astype(int), 0, len(_COLORMAP) - 2)
    frac = (pos - lo)[..., None]
    rgb = _COLORMAP[lo] * (1 - frac) + _COLORMAP[lo + 1] * frac
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()


# ---------------------------------------------------------------------------------------- data
class _PermutedEpochs(torch.utils.data.Dataset):
    """Turns a plain dataset into the ``ds[n]`` convention of ``VideoFramesDataset`` (``n`` = global sample
    number; epoch ``n // len`` reads a permutation seeded by ``(seed, epoch)``)."""

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed = dataset, int(seed)
        self._perm: Tuple[int, Optional[np.ndarray]] = (-1, None)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, n: int):
        epoch, pos = divmod(int(n), len(self.dataset))
        if self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed & 0xFFFFFFFF, epoch, 0xDE97]).permutation(
                len(self.dataset)))
        return self.dataset[int(self._perm[1][pos])]


def _sample_numbers(start_step: int, num_steps: int, batch: int, rank: int, world: int) -> List[List[int]]:
    return [[(step * world + rank) * batch + i for i in range(batch)] for step in range(start_step, num_steps)]


def build_dataset(cfg: Config, split: str = "train", root: Optional[PathLike] = None):
    """The video-window dataset of ``cfg.dataset`` for depth training (frames resized to ``model.image_size``)."""
    from .datasets import VideoFramesDataset

    ds_cfg = cfg.dataset
    root = root if root is not None else ds_cfg.root_dir
    if not root:
        raise DatasetError("no dataset given: set dataset.root_dir in the config or pass --data")
    size = cfg.model.image_size
    if list(ds_cfg.frame_shape[:2]) != [size, size]:
        logger.info("depth training resizes frames to model.image_size %d", size)
        ds_cfg.frame_shape = [size, size, 3]
    return VideoFramesDataset.from_config(ds_cfg, split=split, seed=cfg.depth_train.seed, augment=True,
                                          frame_offsets=cfg.depth_train.frame_ids, root=root)


def _frames_of(batch: Mapping[str, torch.Tensor], frame_ids: Sequence[int]) -> torch.Tensor:
    """``{"frame_<o>": (B, 3, H, W)}`` -> ``(B, F, 3, H, W)`` in ``frame_ids`` order."""
    missing = [o for o in frame_ids if f"frame_{o}" not in batch]
    if missing:
        raise DatasetError(f"the dataset gives no frame_{missing[0]} (depth training needs windows {list(frame_ids)})")
    return torch.stack([batch[f"frame_{o}"] for o in frame_ids], 1)


# --------------------------------------------------------------------------------- distributed
def _distributed() -> Tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world


def _amp_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            return torch.float16
        return torch.bfloat16
    return {"bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _lr_at(cfg: DepthTrainConfig, epoch: int) -> float:
    return cfg.lr * 0.1 ** sum(1 for m in cfg.step_milestones if epoch >= m)


# ---------------------------------------------------------------------------------- checkpoints
def _load_checkpoint(path: PathLike) -> Dict[str, Any]:
    from ..checkpoints import load_file

    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, CHECKPOINT_NAME)
    ckpt = load_file(path, "cpu")
    if not isinstance(ckpt, Mapping) or ckpt.get("task") != "depth" or "depth_encoder" not in ckpt:
        raise CheckpointError(f"{path} is not a depth-training checkpoint (expected 'task': 'depth' and depth weights)")
    return dict(ckpt)


def load_depth_weights(model: nn.Module, path: PathLike, map_location="cpu") -> nn.Module:
    """Load depth weights into ``model`` (a :class:`~dagan.DaGAN` or anything with ``depth_encoder`` and
    ``depth_decoder``) from a depth-training run folder, its ``checkpoint.pt``, or a folder with the
    official pair ``encoder.pth`` + ``depth.pth``."""
    from ..checkpoints import _find_depth_files, _tensors_only, check_and_load, load_file, strip_prefix

    path = os.fspath(path)
    official = os.path.isdir(path) and any(os.path.isfile(os.path.join(path, enc_name))
                                           for enc_name in ("encoder.pth", "depth_encoder.pth"))
    if official:
        enc_path, dec_path = _find_depth_files(path)
        enc = _tensors_only(strip_prefix(load_file(enc_path, map_location)))
        dec = _tensors_only(strip_prefix(load_file(dec_path, map_location)))
    else:
        ckpt = _load_checkpoint(path)
        enc, dec = ckpt["depth_encoder"], ckpt["depth_decoder"]
    check_and_load(model.depth_encoder, enc, f"depth encoder from {path}")
    check_and_load(model.depth_decoder, dec, f"depth decoder from {path}")
    return model


def _export_pair(depth_encoder: nn.Module, depth_decoder: nn.Module, image_size: int, out_dir: PathLike
                 ) -> Tuple[str, str]:
    enc = {k: v.detach().cpu() for k, v in depth_encoder.state_dict().items()}
    enc.update(height=image_size, width=image_size, use_stereo=False)
    enc_path, dec_path = os.path.join(out_dir, "encoder.pth"), os.path.join(out_dir, "depth.pth")
    atomic_torch_save(enc, enc_path)
    atomic_torch_save({k: v.detach().cpu() for k, v in depth_decoder.state_dict().items()}, dec_path)
    return enc_path, dec_path


def export_depth(checkpoint: PathLike, out_dir: PathLike) -> Tuple[str, str]:
    """Write the depth net of a depth-training checkpoint as the official ``encoder.pth`` + ``depth.pth``."""
    ckpt = _load_checkpoint(checkpoint)
    cfg = config_from_dict(dict(ckpt["config"]))
    model = DepthTrainingModel(cfg.model, cfg.depth_train)
    model.depth_encoder.load_state_dict(ckpt["depth_encoder"])
    model.depth_decoder.load_state_dict(ckpt["depth_decoder"])
    os.makedirs(out_dir, exist_ok=True)
    return _export_pair(model.depth_encoder, model.depth_decoder, cfg.model.image_size, out_dir)


# ------------------------------------------------------------------------------------- training
def _check_config(cfg: Config) -> None:
    tc, dc = cfg.depth_train, cfg.model.depth
    missing = [s for s in tc.scales if s not in dc.scales]
    if missing:
        raise ConfigError(f"config key 'depth_train.scales': scale {missing[0]} is not produced by the depth "
                          f"decoder (model.depth.scales = {dc.scales})")
    if tc.batch_size < 1:
        raise ConfigError(f"config key 'depth_train.batch_size': must be >= 1, got {tc.batch_size}")
    if tc.lr <= 0:
        raise ConfigError(f"config key 'depth_train.lr': must be > 0, got {tc.lr}")


def train(cfg: Config, dataset, out_dir: PathLike, device: Union[str, torch.device] = "auto",
          resume: bool = False, max_steps: Optional[int] = None, num_workers: Optional[int] = None,
          progress: bool = True, tensorboard: bool = True) -> Dict[str, Any]:
    """Train the depth network on ``dataset`` (items with ``frame_<o>`` keys) and write the run folder.

    ``dataset[n]`` for a global sample number ``n`` is used as is when the dataset follows that
    convention (``VideoFramesDataset``), otherwise through a seeded per-epoch permutation. Returns
    ``{"step", "loss", "step_time", "out_dir"}``.
    """
    _check_config(cfg)
    tc = cfg.depth_train
    out_dir = os.fspath(out_dir)
    rank, local_rank, world = _distributed()
    is_main = rank == 0
    device = resolve_device(device)
    if world > 1:
        import torch.distributed as dist

        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    ckpt_path = os.path.join(out_dir, CHECKPOINT_NAME)
    if os.path.exists(ckpt_path) and not resume:
        raise OutputError(f"{out_dir} already holds a training run: pass --resume to continue it or choose "
                          f"another --out")
    if resume and not os.path.exists(ckpt_path):
        raise CheckpointError(f"--resume: no {CHECKPOINT_NAME} in {out_dir}")
    if is_main:
        os.makedirs(out_dir, exist_ok=True)

    torch.manual_seed(tc.seed)
    model = DepthTrainingModel(cfg.model, tc).to(device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=tc.lr)
    amp_dtype = _amp_dtype(tc.amp_dtype, device) if tc.amp else None
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    if not hasattr(dataset, "item_of"):
        dataset = _PermutedEpochs(dataset, tc.seed)
    steps_per_epoch = len(dataset) // (tc.batch_size * world)
    if steps_per_epoch < 1:
        raise DatasetError(f"the dataset has {len(dataset)} samples per epoch, fewer than one batch "
                           f"({tc.batch_size} x {world} processes): lower depth_train.batch_size")
    total_steps = max_steps if max_steps else (tc.max_steps or tc.num_epochs * steps_per_epoch)

    start_step = 0
    if resume:
        ckpt = _load_checkpoint(ckpt_path)
        saved = config_from_dict(dict(ckpt["config"]))
        if config_to_dict(saved.model) != config_to_dict(cfg.model):
            raise ConfigError(f"--resume: the model config differs from the one {ckpt_path} was trained with")
        from ..checkpoints import check_and_load

        for name in ("depth_encoder", "depth_decoder", "pose_net"):
            check_and_load(getattr(model, name), ckpt[name], f"{name} in {ckpt_path}")
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        start_step = int(ckpt["step"])
        set_rng_state(ckpt["rng"][rank] if rank < len(ckpt["rng"]) else ckpt["rng"][0], device)
    else:
        torch.manual_seed(tc.seed + rank)
        np.random.seed(tc.seed + rank)
        random.seed(tc.seed + rank)
        if is_main:
            save_config(cfg, os.path.join(out_dir, "config.yaml"))

    train_module: nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_module = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    batches = _sample_numbers(start_step, total_steps, tc.batch_size, rank, world)
    workers = cfg.dataset.num_workers if num_workers is None else num_workers
    # its own generator: creating the iterator must not draw from the global RNG that a resume restores
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=workers,
                                         pin_memory=device.type == "cuda", persistent_workers=False,
                                         generator=torch.Generator().manual_seed(tc.seed + start_step))
    writer = None
    if is_main and tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(os.path.join(out_dir, "tb"), purge_step=start_step)
    bar = None
    if is_main and progress:
        from tqdm import tqdm

        bar = tqdm(total=total_steps, initial=start_step, desc="depth", dynamic_ncols=True, file=sys.stderr)

    def save(step: int) -> None:
        rng = [rng_state(device)]
        if world > 1:
            import torch.distributed as dist

            gathered: List[Any] = [None] * world
            dist.all_gather_object(gathered, rng[0])
            rng = gathered
        if not is_main:
            return
        state = {"format_version": FORMAT_VERSION, "task": "depth", "config": config_to_dict(cfg), "step": step,
                 "epoch": step // steps_per_epoch, "optimizer": optimizer.state_dict(),
                 "scaler": scaler.state_dict(), "rng": rng,
                 "pose_net": {k: v.detach().cpu() for k, v in model.pose_net.state_dict().items()}}
        state.update({k: {n: t.detach().cpu() for n, t in v.items()} for k, v in model.depth_state().items()})
        atomic_torch_save(state, ckpt_path)
        _export_pair(model.depth_encoder, model.depth_decoder, cfg.model.image_size, out_dir)

    model.train()
    step, bad_steps, last_loss = start_step, 0, float("nan")
    times: List[float] = []
    loader_iter: Iterator = iter(loader)
    try:
        while step < total_steps:
            batch = next(loader_iter)
            t0 = time.perf_counter()
            epoch = step // steps_per_epoch
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(tc, epoch)
            frames = _frames_of(batch, tc.frame_ids).to(device, non_blocking=True)
            autocast = (torch.autocast(device_type=device.type, dtype=amp_dtype) if amp_dtype is not None
                        else nullcontext())
            with autocast:
                loss, logs, outputs = train_module(frames)
            optimizer.zero_grad(set_to_none=True)
            if not torch.isfinite(loss):
                bad_steps += 1
                logger.warning("step %d: non-finite depth loss (%d in a row), step skipped", step, bad_steps)
                if bad_steps >= tc.max_bad_steps:
                    raise TrainingError(f"{bad_steps} non-finite losses in a row at step {step}: lower "
                                        f"depth_train.lr or disable amp")
                step += 1
                continue
            bad_steps = 0
            scaler.scale(loss).backward()
            if tc.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], tc.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            step += 1
            times.append(time.perf_counter() - t0)
            last_loss = float(loss.detach())
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{last_loss:.4f}", fx=f"{float(logs['fx']):.2f}")
            if writer is not None and (step % tc.log_every == 0 or step == total_steps):
                for key, value in logs.items():
                    writer.add_scalar(f"depth/{key}" if key not in ("fx", "fy", "cx", "cy") else f"intrinsics/{key}",
                                      float(value), step)
                writer.add_scalar("depth/lr", optimizer.param_groups[0]["lr"], step)
            if writer is not None and (step % tc.image_every == 0 or step == total_steps):
                writer.add_image("depth/target", frames[0, tc.frame_ids.index(0)].float().clamp(0, 1).cpu(), step)
                writer.add_image("depth/disparity", colorize(outputs["disp"][0]), step)
                if outputs["automask"] is not None:
                    writer.add_image("depth/automask", outputs["automask"][0].float().cpu(), step)
                if "sigma" in outputs:
                    writer.add_image("depth/uncertainty", colorize(outputs["sigma"][0, 0]), step)
            if step % tc.save_every == 0 or step == total_steps:
                save(step)
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
    return {"step": step, "loss": last_loss, "step_time": float(np.median(times)) if times else float("nan"),
            "out_dir": out_dir}


# ----------------------------------------------------------------------------------------- CLI
def main(cfg: Config, args: argparse.Namespace) -> Dict[str, Any]:
    """Entry point for ``train.py`` when ``cfg.task == "depth"``.

    Reads from ``args`` (all optional): ``out`` / ``log_dir`` (run folder, default ``runs/depth``),
    ``data`` (dataset root overriding ``dataset.root_dir``), ``device``, ``resume``, ``max_steps``,
    ``num_workers``, ``no_progress``.
    """
    if cfg.task != "depth":
        raise ConfigError(f"config key 'task': the depth trainer needs 'depth', got {cfg.task!r}")
    out_dir = getattr(args, "out", None) or getattr(args, "log_dir", None) or os.path.join("runs", "depth")
    max_steps = getattr(args, "max_steps", None)
    if max_steps:
        cfg.depth_train.max_steps = int(max_steps)
    dataset = build_dataset(cfg, "train", getattr(args, "data", None))
    return train(cfg, dataset, out_dir, device=getattr(args, "device", None) or "auto",
                 resume=bool(getattr(args, "resume", False)), max_steps=cfg.depth_train.max_steps or None,
                 num_workers=getattr(args, "num_workers", None), progress=not getattr(args, "no_progress", False))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Self-supervised face-depth training (DaGAN / DaGAN++ variant)")
    p.add_argument("--config", required=True, help="YAML with task: depth (e.g. configs/depth-vox.yaml)")
    p.add_argument("--out", default=os.path.join("runs", "depth"), help="run folder (checkpoint, encoder.pth, tb/)")
    p.add_argument("--data", default=None, help="dataset root (overrides dataset.root_dir)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    p.add_argument("--max_steps", type=int, default=None, help="stop after this many steps")
    p.add_argument("--num_workers", type=int, default=None, help="data-loader workers (default: config)")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    p.add_argument("--export", default=None, metavar="DIR",
                   help="only write encoder.pth + depth.pth of the --out checkpoint into DIR, then exit")
    p.add_argument("--debug", action="store_true", help="full tracebacks")
    return p


def cli(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        if args.export:
            enc, dec = export_depth(args.out, args.export)
            print(f"wrote {enc} and {dec}")
            return 0
        cfg = load_config(args.config)
        if cfg.task != "depth":
            raise ConfigError(f"config key 'task': expected 'depth' in {args.config}, got {cfg.task!r}")
        result = main(cfg, args)
        print(f"depth training: {result['step']} steps, last loss {result['loss']:.4f}, run folder {result['out_dir']}")
        return 0
    except DaganError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(cli())
