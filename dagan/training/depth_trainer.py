"""Self-supervised face-depth training (Face-Depth-Network / monodepth2 recipe; DaGAN++ uncertainty variant):
the ``depth`` task of the common runtime (:mod:`dagan.training.runtime`). ``python train.py --config
configs/depth-vox.yaml`` (a config with ``task: depth``) runs it.

One step: a window of frames ``[0, -1, +1]`` (``depth_train.frame_ids``); the depth net predicts multi-scale
disparity of frame 0; the pose net predicts the rigid motion (and, in ``learned`` intrinsics mode, the
camera intrinsics; DaGAN++: per-pixel uncertainty) between frame 0 and each neighbour; each neighbour is
warped into frame 0; the loss is the per-pixel minimum photometric error (SSIM/L1) with auto-masking plus
edge-aware smoothness, averaged over scales (see :mod:`dagan.training.depth_losses`). With
``depth_train.landmark_weight`` > 0 a sparse term is added: the disparity at frame 0's 68 face landmarks must
correlate with the landmarks' nearness recovered from the clip's own landmark tracks (shape from motion over
the whole clip, :mod:`dagan.training.face_sfm`; computed once per clip and cached).

Run folder (``--out``): the runtime's ``config.yaml``, ``checkpoint.pt`` (``task: depth``, weights of
``depth_encoder``/``depth_decoder``/``pose_net``, optimiser, AMP scaler, per-rank RNG states), ``metrics.jsonl``
and ``tb/``, plus ``encoder.pth`` + ``depth.pth`` (the depth network in the official monodepth2 layout,
rewritten at every save: this folder works as ``--depth_checkpoint`` / ``train.depth_checkpoint`` /
``DaGAN.from_official(..., depth_dir=run)``). Resuming (``train.py --checkpoint run/``) is exact: sample ``n``
is a pure function of ``(seed, n)`` (:class:`~dagan.training.datasets.VideoFramesDataset`) and the RNG states,
optimiser and scaler are restored.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoints import check_and_load, export_official_depth
from ..config import Config, DepthTrainConfig, ModelConfig, config_to_dict, load_config
from ..errors import CheckpointError, ConfigError, DatasetError
from ..models.depth import DepthDecoder, DepthEncoder, PoseNet, disp_to_depth
from .depth_losses import SIGMA_FLOOR, edge_aware_smoothness, min_reprojection, photometric_error
from .face_sfm import clips_landmarks, landmark_nearness_loss, nearness_targets
from .geometry import transformation_from_parameters, warp
from .runtime import (CHECKPOINT_NAME, StepOutcome, Task, all_ranks_finite, amp_dtype, mean_state_dict,
                      read_training_checkpoint, run)

logger = logging.getLogger("dagan")
PathLike = Union[str, os.PathLike]

__all__ = ["DepthTrainingModel", "DepthTask", "fixed_intrinsics", "train", "load_depth_weights", "export_depth",
           "colorize", "build_dataset", "landmark_targets", "CHECKPOINT_NAME"]


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

    def forward(self, frames: torch.Tensor, noise_generator: Optional[torch.Generator] = None,
                points: Optional[torch.Tensor] = None, nearness: Optional[torch.Tensor] = None):
        """``points`` ``(B, P, 2)`` / ``nearness`` ``(B, P)``: landmark depth targets of the frame at offset 0
        (:mod:`dagan.training.face_sfm`; NaN rows: none), used when ``landmark_weight`` > 0."""
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
            landmark = None
            if cfg.landmark_weight > 0 and points is not None:
                landmark = landmark_nearness_loss(disps[("disp", 0)].float(), points, nearness)
                loss = loss + cfg.landmark_weight * landmark

        logs = {"loss": loss.detach(), "photometric": photo_total / len(self.scales),
                "smoothness": smooth_total / len(self.scales),
                "automask": automask.mean() if automask is not None else torch.ones(()),
                "fx": k_used[:, 0, 0].mean().detach() / w, "fy": k_used[:, 1, 1].mean().detach() / h,
                "cx": k_used[:, 0, 2].mean().detach() / w, "cy": k_used[:, 1, 2].mean().detach() / h,
                "translation": torch.stack([p[:, :3, 3].norm(dim=1).mean() for p in poses]).mean().detach()}
        if landmark is not None:
            logs["landmarks"] = landmark.detach()
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


def build_dataset(cfg: Config, split: str = "train", root: Optional[PathLike] = None):
    """The video-window dataset of ``cfg.dataset`` for depth training (frames resized to ``model.image_size``)."""
    from ..io.clips import list_clips
    from .datasets import VideoFramesDataset

    ds_cfg = cfg.dataset
    root = root if root is not None else ds_cfg.root_dir
    if not root:
        raise DatasetError("no dataset given: set dataset.root_dir in the config or pass --data")
    size = cfg.model.image_size
    if list(ds_cfg.frame_shape[:2]) != [size, size]:
        logger.info("depth training resizes frames to model.image_size %d", size)
        ds_cfg.frame_shape = [size, size, 3]
    targets = None
    if cfg.depth_train.landmark_weight > 0 and split == "train":
        paths = list_clips(root, split, ds_cfg.test_videos, ds_cfg.exclude_videos)
        targets = landmark_targets(paths, (size, size), cfg.depth_train.landmark_cache or None)
    return VideoFramesDataset.from_config(ds_cfg, split=split, seed=cfg.depth_train.seed, augment=True,
                                          frame_offsets=cfg.depth_train.frame_ids, root=root, point_targets=targets)


def landmark_targets(paths: Sequence[PathLike], size: Tuple[int, int], cache_dir: Optional[str] = None
                     ) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """``{video name: (points, nearness)}`` of every clip whose landmark tracks determine a face shape
    (:func:`~dagan.training.face_sfm.clips_landmarks`, :func:`~dagan.training.face_sfm.nearness_targets`);
    raises :class:`DatasetError` when none does."""
    targets = {}
    for name, points in clips_landmarks(paths, size, cache_dir).items():
        nearness = nearness_targets(points, name)
        if nearness is not None:
            targets[name] = (points, nearness)
    if not targets:
        raise DatasetError("depth_train.landmark_weight > 0, but no training clip gives landmark depth targets "
                           "(no face found, or no head turns enough): set it to 0")
    logger.info("landmark depth targets from %d of %d clips: %s", len(targets), len(paths), ", ".join(targets))
    return targets


def _frames_of(batch: Mapping[str, torch.Tensor], frame_ids: Sequence[int]) -> torch.Tensor:
    """``{"frame_<o>": (B, 3, H, W)}`` -> ``(B, F, 3, H, W)`` in ``frame_ids`` order."""
    missing = [o for o in frame_ids if f"frame_{o}" not in batch]
    if missing:
        raise DatasetError(f"the dataset gives no frame_{missing[0]} (depth training needs windows {list(frame_ids)})")
    return torch.stack([batch[f"frame_{o}"] for o in frame_ids], 1)


# ---------------------------------------------------------------------------------- checkpoints
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
        ckpt = read_training_checkpoint(path, "depth")
        enc, dec = ckpt["depth_encoder"], ckpt["depth_decoder"]
    check_and_load(model.depth_encoder, enc, f"depth encoder from {path}")
    check_and_load(model.depth_decoder, dec, f"depth decoder from {path}")
    return model


def export_depth(checkpoint: PathLike, out_dir: PathLike, half: bool = False,
                 average: Sequence[PathLike] = ()) -> Tuple[str, str]:
    """Write the depth net of a depth-training checkpoint (file or run folder) as the official
    ``encoder.pth`` + ``depth.pth``; with ``average``, the mean of the weights of all those checkpoints
    (same model config). ``half`` stores floating-point tensors as float16."""
    ckpt = read_training_checkpoint(checkpoint, "depth")
    cfg = load_config(dict(ckpt["config"]))
    others = [read_training_checkpoint(path, "depth") for path in average]
    for path, other in zip(average, others):
        if config_to_dict(load_config(dict(other["config"])).model) != config_to_dict(cfg.model):
            raise CheckpointError(f"cannot average {path} with {checkpoint}: the model configs differ")
    model = DepthTrainingModel(cfg.model, cfg.depth_train)
    for name in ("depth_encoder", "depth_decoder"):
        state = mean_state_dict([ckpt[name]] + [other[name] for other in others])
        if half:
            getattr(model, name).half()  # the exported tensors take the module's dtype
        getattr(model, name).load_state_dict(state)
    os.makedirs(out_dir, exist_ok=True)
    return export_official_depth(model, out_dir, image_size=cfg.model.image_size)


# ------------------------------------------------------------------------------------------- task
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


def _lr_at(cfg: DepthTrainConfig, epoch: int) -> float:
    return cfg.lr * 0.1 ** sum(1 for m in cfg.step_milestones if epoch >= m)


class DepthTask(Task):
    """Depth net + pose net with Adam, the learning rate x0.1 from each epoch in ``step_milestones``,
    optional gradient clipping; a non-finite loss on any rank skips the step before the backward pass.
    Every save also writes ``encoder.pth`` + ``depth.pth`` (official layout) into the run folder, so it
    works as ``--depth_checkpoint`` / ``train.depth_checkpoint``."""

    name = "depth"
    section = "depth_train"
    progress_key = "loss"

    def __init__(self, cfg: Config, device: torch.device, env):
        super().__init__(cfg, device, env)
        _check_config(cfg)
        tc = cfg.depth_train
        self.model = DepthTrainingModel(cfg.model, tc).to(device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=tc.lr)
        fp16 = bool(tc.amp) and amp_dtype(tc.amp_dtype, device, "depth_train.amp_dtype") == torch.float16
        self.scaler = torch.amp.GradScaler(device.type, enabled=fp16)
        self.module: nn.Module = self.model

    @staticmethod
    def build_dataset(cfg: Config, root: PathLike):
        return build_dataset(cfg, "train", root)

    @staticmethod
    def export(checkpoint: PathLike, out_dir: PathLike, half: bool = False, average: Sequence[PathLike] = ()) -> str:
        enc, dec = export_depth(checkpoint, out_dir, half=half, average=average)
        return f"{enc} and {dec}"

    def prepare_dataset(self, dataset):
        return dataset if hasattr(dataset, "item_of") else _PermutedEpochs(dataset, self.cfg.depth_train.seed)

    def wrap_distributed(self) -> None:
        from torch.nn.parallel import DistributedDataParallel as DDP

        self.module = DDP(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def step(self, batch, step, epoch, autocast) -> StepOutcome:
        tc = self.cfg.depth_train
        for group in self.optimizer.param_groups:
            group["lr"] = _lr_at(tc, epoch)
        frames = _frames_of(batch, tc.frame_ids).to(self.device, non_blocking=True)
        centre = tc.frame_ids.index(0)
        points = batch["points"][:, centre].to(self.device) if "points" in batch else None
        nearness = batch["point_values"][:, centre].to(self.device) if "point_values" in batch else None
        with autocast():
            loss, logs, outputs = self.module(frames, points=points, nearness=nearness)
        self.optimizer.zero_grad(set_to_none=True)
        visuals = {"frames": frames, "outputs": outputs}
        if not all_ranks_finite(torch.isfinite(loss.detach()), self.env):
            return StepOutcome(False, logs, visuals)
        self.scaler.scale(loss).backward()
        if tc.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, tc.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return StepOutcome(True, logs, visuals)

    def state(self) -> Dict[str, Any]:
        state = {"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                 "pose_net": {k: v.detach().cpu() for k, v in self.model.pose_net.state_dict().items()}}
        state.update({k: {n: t.detach().cpu() for n, t in v.items()} for k, v in self.model.depth_state().items()})
        return state

    def load_state(self, ckpt: Mapping[str, Any], where: str) -> None:
        for name in ("depth_encoder", "depth_decoder", "pose_net"):
            if name not in ckpt:
                raise CheckpointError(f"{where} is not a depth-training checkpoint (no {name} weights)")
            check_and_load(getattr(self.model, name), ckpt[name], f"{name} in {where}")
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])

    def after_save(self, out_dir: str) -> None:
        export_official_depth(self.model, out_dir, image_size=self.cfg.model.image_size)

    def scalar_tag(self, name: str) -> str:
        return f"intrinsics/{name}" if name in ("fx", "fy", "cx", "cy") else f"depth/{name}"

    def extra_scalars(self) -> Dict[str, float]:
        return {"depth/lr": self.optimizer.param_groups[0]["lr"]}

    def images(self, outcome: StepOutcome) -> Dict[str, torch.Tensor]:
        frames, outputs = outcome.visuals["frames"], outcome.visuals["outputs"]
        images = {"depth/target": frames[0, self.cfg.depth_train.frame_ids.index(0)].float().clamp(0, 1).cpu(),
                  "depth/disparity": colorize(outputs["disp"][0])}
        if outputs["automask"] is not None:
            images["depth/automask"] = outputs["automask"][0].float().cpu()
        if "sigma" in outputs:
            images["depth/uncertainty"] = colorize(outputs["sigma"][0, 0])
        return images


def train(cfg: Config, dataset, out_dir: PathLike, device: Union[str, torch.device] = "auto",
          resume: Union[None, bool, PathLike] = None, max_steps: Optional[int] = None,
          num_workers: Optional[int] = None, progress: bool = True, tensorboard: bool = True) -> Dict[str, Any]:
    """Train the depth network on ``dataset`` (items with ``frame_<o>`` keys) into the run folder ``out_dir``
    with the common runtime (:func:`dagan.training.runtime.run`; ``resume``: a checkpoint or run folder,
    ``True`` = the one in ``out_dir``).

    ``dataset[n]`` for a global sample number ``n`` is used as is when the dataset follows that
    convention (``VideoFramesDataset``), otherwise through a seeded per-epoch permutation. Returns the
    runtime's dict (``step``, ``loss``, ``step_time``, ``out_dir``, ...).
    """
    return run(DepthTask, cfg, dataset, out_dir, device=device, resume=resume, max_steps=max_steps,
               num_workers=num_workers, progress=progress, tensorboard=tensorboard)
