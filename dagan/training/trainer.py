"""DaGAN generator training: the ``generator`` task of the common runtime (:mod:`dagan.training.runtime`,
which owns devices, DDP, AMP, checkpoints, exact resume, the NaN guard, logging and checkpoint retention).

* keypoint detector + generator (and the depth network when ``train.train_depth``) against a multi-scale
  discriminator, losses from :mod:`dagan.training.losses` weighted by ``train.loss_weights``;
* Adam (0.5, 0.999) with the official per-epoch ``MultiStepLR`` (x0.1 at ``epoch_milestones``), gradient
  clipping; a non-finite loss or gradient on any rank undoes the whole step (batch-norm statistics too);
* the random equivariance warp of step ``s`` is seeded by ``(seed, s, rank)``, so a resumed run replays it;
* checkpoints are our model format too (``DaGAN.from_pretrained(run/checkpoint.pt)`` loads them), with
  discriminator, optimiser, scheduler and scaler states; :func:`export_pretrained` writes a self-describing
  model directory (``train.py --export [--average] [--half]``);
* TensorBoard image grids (keypoints on frames, depth, deformed source, occlusion, prediction).
"""
from __future__ import annotations

import logging
import math
import os
import warnings
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoints import check_and_load
from ..config import Config
from ..errors import CheckpointError, ConfigError
from ..io.images import resize_tensor
from ..models.dagan import DaGAN, build_discriminator
from ..models.discriminator import scale_name
from . import losses as L
from .generator_weights import export_pretrained, load_depth_checkpoint, load_init_checkpoint
from .runtime import CHECKPOINT_NAME, StepOutcome, Task, all_ranks_finite, amp_dtype, run, step_seed
from .transforms import RandomWarp

logger = logging.getLogger("dagan")
PathLike = Union[str, os.PathLike]
__all__ = ["GeneratorFullModel", "GeneratorTask", "train", "export_pretrained", "load_init_checkpoint",
           "load_depth_checkpoint", "visualize", "CHECKPOINT_NAME"]


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

    def forward(self, source: torch.Tensor, driving: torch.Tensor, warp_seed: int,
                points: Optional[torch.Tensor] = None):
        """Frames of ``model.image_size``, or with ``train.output_size`` frames of that size: the networks
        then see them downsampled and the prediction is rendered at the output size (as at inference).
        ``points`` ``(B, 2, 68, 2)``: face landmarks of source and driving in pixels of those frames (NaN:
        none), for ``train.kp_landmarks`` and the mouth terms (``loss_weights.mouth_blend`` / ``mouth_l1``)."""
        w, tp = self.w, self.train_params
        frame_size = source.shape[-1]
        target, source_full = driving, None
        size = self.model.image_size
        if tuple(source.shape[2:]) != (size, size) and tp.output_size:
            source_full = source
            source, driving = resize_tensor(source, (size, size)), resize_tensor(driving, (size, size))
        depth_source, depth_driving = self.depth(source), self.depth(driving)
        kp_source = self.keypoints(source, depth_source)
        kp_driving = self.keypoints(driving, depth_driving)
        cache = self.model.generator.encode_source(source, depth_source)
        if source_full is not None:
            cache["source_full"] = source_full
        generated = self.model.generator.generate(cache, kp_source, kp_driving)
        generated.update(kp_source=kp_source, kp_driving=kp_driving, depth_source=depth_source,
                         depth_driving=depth_driving)
        losses: Dict[str, torch.Tensor] = {}
        prediction = generated["prediction"]
        pyr_real, pyr_fake = self.pyramid(target), self.pyramid(prediction)
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
        if w.kp_landmarks and tp.kp_landmarks and points is not None:
            losses["kp_landmarks"] = w.kp_landmarks * 0.5 * (
                L.landmark_keypoint_loss(kp_source, points[:, 0], tp.kp_landmarks, frame_size)
                + L.landmark_keypoint_loss(kp_driving, points[:, 1], tp.kp_landmarks, frame_size))
        if (w.mouth_blend or w.mouth_l1) and points is not None:
            if w.mouth_blend and "blend_mask" in generated:
                mask = generated["blend_mask"]
                region = L.mouth_region(points[:, 1], frame_size, mask.shape[-1])
                change = L.mouth_change(points[:, 0], points[:, 1]) if tp.mouth_blend_on_change else None
                losses["mouth_blend"] = w.mouth_blend * L.mouth_blend_loss(mask, region, change)
            if w.mouth_l1:
                region = L.mouth_region(points[:, 1], frame_size, prediction.shape[-1])
                losses["mouth_l1"] = w.mouth_l1 * L.mouth_l1_loss(prediction, target, region)
        if w.depth_constraint:
            depth_generated = self.model.depth_decoder(self.model.depth_encoder(
                generated.get("prediction_model", prediction)))[("disp", 0)]
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


# ---------------------------------------------------------------------------------------- the task
def _check_config(cfg: Config) -> None:
    w = cfg.train.loss_weights
    if w.kp_prior or w.kp_scale:
        raise ConfigError("config keys 'train.loss_weights.kp_prior'/'kp_scale' are not supported; set them to 0")
    for pair in cfg.train.kp_landmarks:
        if len(pair) != 2 or not 0 <= pair[0] < cfg.model.num_kp or not 0 <= pair[1] < 68:
            raise ConfigError(f"config key 'train.kp_landmarks': {pair} is not [keypoint < {cfg.model.num_kp}, "
                              "landmark < 68]")
    if w.mouth_blend and not cfg.model.generator.output_blend:
        raise ConfigError("config key 'train.loss_weights.mouth_blend' needs model.generator.output_blend: true "
                          "(it trains the output blend mask)")
    if (w.mouth_blend or w.mouth_l1) and cfg.dataset.mode == "image_pairs":
        raise ConfigError("config keys 'train.loss_weights.mouth_blend'/'mouth_l1' need video pairs (dataset.mode "
                          "'videos' or 'mixed'): still-image pairs have no mouth motion")
    if cfg.train.perceptual_backbone == "none" and sum(w.perceptual) and not (w.l1_pyramid or w.ssim_pyramid):
        raise ConfigError("config key 'train.perceptual_backbone' is 'none' but only perceptual weights are set: "
                          "set loss_weights.l1_pyramid / ssim_pyramid (the offline substitute)")
    size, out = cfg.model.image_size, cfg.train.output_size
    if out and (out < size or list(cfg.dataset.frame_shape[:2]) != [out, out]):
        raise ConfigError(f"config key 'train.output_size' ({out}) must be at least model.image_size ({size}) and "
                          f"equal dataset.frame_shape (got {list(cfg.dataset.frame_shape[:2])})")
    if not out and list(cfg.dataset.frame_shape[:2]) != [size, size]:
        logger.info("dataset.frame_shape %s differs from model.image_size %d", cfg.dataset.frame_shape[:2], size)
    if len(w.feature_matching) and w.generator_gan and len(w.feature_matching) < cfg.model.discriminator.num_blocks:
        logger.info("feature matching uses the first %d discriminator layers", len(w.feature_matching))


class GeneratorTask(Task):
    """Keypoint detector + generator (+ the depth network with ``train.train_depth``) against the
    discriminator: Adam (0.5, 0.999), the official per-epoch ``MultiStepLR``, gradient clipping. A
    non-finite loss or gradient on any rank undoes the step, batch-norm statistics included."""

    name = "generator"
    section = "train"
    progress_key = "generator_total"

    def __init__(self, cfg: Config, device: torch.device, env, vgg: Optional[nn.Module] = None):
        super().__init__(cfg, device, env)
        _check_config(cfg)
        tc = cfg.train
        if tc.kp_landmarks and tc.loss_weights.kp_landmarks > 0 and not cfg.model.kp_landmarks:
            cfg.model.kp_landmarks = [list(pair) for pair in tc.kp_landmarks]  # saved with the weights
        self.model = DaGAN(cfg.model)
        self.discriminator = build_discriminator(cfg.model)
        if tc.depth_checkpoint:
            load_depth_checkpoint(self.model, tc.depth_checkpoint)
        elif not tc.train_depth:
            logger.warning("train.depth_checkpoint not set and train.train_depth false: the depth network stays "
                           "at its random initialisation")
        if tc.init_checkpoint:
            load_init_checkpoint(self.model, self.discriminator, tc.init_checkpoint, tc.init_networks,
                                 tc.init_new_keys)
        self.model.to(device).train()
        self.discriminator.to(device).train()
        if not tc.train_depth:
            for net in (self.model.depth_encoder, self.model.depth_decoder):
                net.eval().requires_grad_(False)
        w = tc.loss_weights
        if vgg is None and sum(w.perceptual) and tc.perceptual_backbone == "vgg19":
            vgg = L.Vgg19Features(tc.vgg19_weights)
        if vgg is not None:
            vgg.to(device)
        self.full = GeneratorFullModel(self.model, self.discriminator, cfg, vgg).to(device)
        model = self.model
        self.groups = [{"params": list(model.generator.parameters()), "lr": tc.lr_generator},
                       {"params": list(model.kp_detector.parameters()), "lr": tc.lr_kp_detector}]
        if tc.train_depth:
            self.groups.append({"params": list(model.depth_encoder.parameters())
                                + list(model.depth_decoder.parameters()), "lr": tc.lr_generator})
        self.opt_g = torch.optim.Adam(self.groups, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=tc.lr_discriminator, betas=(0.5, 0.999))
        self.sched_g = torch.optim.lr_scheduler.MultiStepLR(self.opt_g, tc.epoch_milestones, gamma=0.1)
        self.sched_d = torch.optim.lr_scheduler.MultiStepLR(self.opt_d, tc.epoch_milestones, gamma=0.1)
        fp16 = bool(tc.amp) and amp_dtype(tc.amp_dtype, device) == torch.float16
        self.scaler = torch.amp.GradScaler(device.type, enabled=fp16)
        self.g_module: nn.Module = self.full
        self.d_module: nn.Module = self.discriminator
        self.guarded_buffers = list(model.buffers()) + list(self.discriminator.buffers())
        self.uses_gan = bool(w.discriminator_gan and w.generator_gan)

    @staticmethod
    def build_dataset(cfg: Config, root: PathLike):
        from ..io.clips import list_clips
        from .datasets import build_dataset
        from .face_sfm import clips_landmarks

        tc, ds = cfg.train, cfg.dataset
        targets = None
        w = tc.loss_weights
        if ((tc.kp_landmarks and w.kp_landmarks) or w.mouth_blend or w.mouth_l1) and ds.mode != "image_pairs":
            paths = list_clips(root if root is not None else ds.root_dir, "train", ds.test_videos, ds.exclude_videos)
            landmarks = clips_landmarks(paths, tuple(ds.frame_shape[:2]), tc.landmark_cache or None)
            targets = {name: (points, None) for name, points in landmarks.items()}
        return build_dataset(ds, "train", seed=tc.seed, root=root, point_targets=targets)

    @staticmethod
    def export(checkpoint: PathLike, out_dir: PathLike, half: bool = False, average: Sequence[PathLike] = ()) -> str:
        return export_pretrained(checkpoint, out_dir, half=half, average=average)

    def wrap_distributed(self) -> None:
        ids = [self.device.index] if self.device.type == "cuda" else None
        self.g_module = nn.parallel.DistributedDataParallel(self.full, device_ids=ids)
        self.d_module = nn.parallel.DistributedDataParallel(self.discriminator, device_ids=ids)

    def step(self, batch, step, epoch, autocast) -> StepOutcome:
        tc, dev = self.cfg.train, self.device
        source = batch["source"].to(dev, non_blocking=True)
        driving = batch["driving"].to(dev, non_blocking=True)
        clip = tc.grad_clip if tc.grad_clip > 0 else float("inf")
        # batch-norm statistics are updated by the forward pass itself: keep a copy to undo a bad step
        saved_buffers = [b.detach().clone() for b in self.guarded_buffers]
        self.discriminator.requires_grad_(False)
        points = batch["points"].to(dev) if "points" in batch else None
        with autocast():
            losses, generated = self.g_module(source, driving, step_seed(tc.seed, step, self.env.rank), points)
        loss_g = sum(v.float() for v in losses.values())
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler.scale(loss_g).backward()
        self.scaler.unscale_(self.opt_g)
        grad_norm = torch.nn.utils.clip_grad_norm_([p for g in self.groups for p in g["params"]], clip)
        finite = torch.isfinite(loss_g.detach()) & torch.isfinite(grad_norm)
        self.discriminator.requires_grad_(True)
        loss_d = torch.zeros((), device=dev)
        if self.uses_gan:
            with autocast():
                loss_d = discriminator_loss(self.d_module, driving, generated["prediction"], generated["kp_driving"],
                                            tc.loss_weights.discriminator_gan, self.full.pyramid).float()
            self.opt_d.zero_grad(set_to_none=True)
            self.scaler.scale(loss_d).backward()
            self.scaler.unscale_(self.opt_d)
            d_norm = torch.nn.utils.clip_grad_norm_(self.discriminator.parameters(), clip)
            finite = finite & torch.isfinite(loss_d.detach()) & torch.isfinite(d_norm)
        ok = all_ranks_finite(finite, self.env)
        if ok:
            self.scaler.step(self.opt_g)
            if self.uses_gan:
                self.scaler.step(self.opt_d)
        else:
            self.opt_g.zero_grad(set_to_none=True)
            self.opt_d.zero_grad(set_to_none=True)
            with torch.no_grad():
                for buf, saved in zip(self.guarded_buffers, saved_buffers):
                    buf.copy_(saved)
        self.scaler.update()
        logs = {k: v.detach() for k, v in losses.items()}
        logs.update(generator_total=loss_g.detach(), discriminator=loss_d.detach())
        return StepOutcome(ok, logs, {"source": source, "driving": driving, "generated": generated})

    def end_epoch(self, epoch: int) -> None:
        self.sched_g.step()
        with warnings.catch_warnings():  # without a GAN loss opt_d never steps: torch warns about the order
            warnings.simplefilter("ignore", UserWarning)
            self.sched_d.step()

    def state(self) -> Dict[str, Any]:
        return {"state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                "discriminator": {k: v.detach().cpu() for k, v in self.discriminator.state_dict().items()},
                "optimizers": {"generator": self.opt_g.state_dict(), "discriminator": self.opt_d.state_dict()},
                "schedulers": {"generator": self.sched_g.state_dict(), "discriminator": self.sched_d.state_dict()},
                "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None}

    def load_state(self, ckpt: Mapping[str, Any], where: str) -> None:
        if "optimizers" not in ckpt:
            raise CheckpointError(f"{where} is not a generator-training checkpoint (no optimiser state)")
        check_and_load(self.model, ckpt["state_dict"], f"weights in {where}")
        check_and_load(self.discriminator, ckpt["discriminator"], f"discriminator in {where}")
        self.opt_g.load_state_dict(ckpt["optimizers"]["generator"])
        self.opt_d.load_state_dict(ckpt["optimizers"]["discriminator"])
        self.sched_g.load_state_dict(ckpt["schedulers"]["generator"])
        self.sched_d.load_state_dict(ckpt["schedulers"]["discriminator"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])

    def extra_scalars(self) -> Dict[str, float]:
        return {"lr/generator": self.opt_g.param_groups[0]["lr"]}

    def images(self, outcome: StepOutcome) -> Dict[str, torch.Tensor]:
        v = outcome.visuals
        return {"reconstruction": visualize(v["source"], v["driving"], v["generated"])}

    def result(self) -> Dict[str, Any]:
        return {"model": self.model, "discriminator": self.discriminator}


def train(cfg: Config, dataset, out_dir: PathLike, device: Union[str, torch.device] = "auto",
          resume: Optional[PathLike] = None, max_steps: Optional[int] = None, num_workers: Optional[int] = None,
          progress: bool = True, vgg: Optional[nn.Module] = None, tensorboard: bool = True) -> Dict[str, Any]:
    """Train the DaGAN generator with the common runtime (:func:`dagan.training.runtime.run`). Returns its
    dict (``step``, ``epoch``, ``losses``, ``checkpoint``, ``out_dir``, ``skipped_samples``, ...) plus the
    trained ``model`` and ``discriminator`` (on ``device``).

    ``dataset[n]`` must give ``{"source", "driving"}`` for any global sample number ``n`` (see
    :mod:`dagan.training.datasets`). ``resume`` is a training checkpoint to continue from exactly.
    ``vgg`` injects a feature extractor (tests); by default VGG19 is loaded when perceptual weights are set.
    """
    return run(GeneratorTask, cfg, dataset, out_dir, device=device, resume=resume, max_steps=max_steps,
               num_workers=num_workers, progress=progress, tensorboard=tensorboard, vgg=vgg)
