"""Self-supervised depth training: the synthetic correctness check, intrinsics gradients, DaGAN++ variant,
exact resume, run-folder outputs that DaGAN loads, and clear dataset errors."""
from __future__ import annotations

import argparse
import importlib.util

import numpy as np
import pytest
import torch

from dagan.config import config_from_dict, load_config
from dagan.errors import DatasetError, OutputError
from dagan.cliutil import run_cli
from dagan.training.depth_trainer import (CHECKPOINT_NAME, DepthTask, DepthTrainingModel, build_dataset, colorize,
                                          export_depth, load_depth_weights, train)
from dagan.training.runtime import run_from_args
from dagan.training.synthetic_depth import SyntheticDepthDataset, spearman

from conftest import REPO


def _train_py(argv):
    """``python train.py ARGV`` in this process (exit code; one-line errors like the real command)."""
    spec = importlib.util.spec_from_file_location("train_cli", REPO / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return run_cli(module.main, argv)


def _cfg(**depth_train):
    dt = dict(lr=5e-4, batch_size=2, intrinsics="fixed", fixed_focal=1.0, scales=[0], seed=0, log_every=1,
              image_every=2, save_every=1000)
    dt.update(depth_train)
    return config_from_dict({"task": "depth", "model": {"image_size": 64, "depth": {"num_layers": 10}},
                             "depth_train": dt})


def _frames(video_seed=5):
    ds = SyntheticDepthDataset(num_videos=1, num_frames=3, size=64, seed=video_seed)
    item = ds[0]
    return torch.stack([item[f"frame_{o}"] for o in (0, -1, 1)])[None].repeat(2, 1, 1, 1, 1)


def _disparity(model, frames):
    model.eval()
    with torch.no_grad():
        return model.depth_decoder(model.depth_encoder(frames))[("disp", 0)][:, 0].numpy()


# --------------------------------------------------------------------------------- synthetic check
@pytest.mark.slow
def test_synthetic_training_recovers_depth_ranks(tmp_path):
    """The heart of the depth trainer: on rendered videos with known depth, a short run's disparity must
    rank pixels by nearness clearly better than an untrained network and than a constant map."""
    cfg = _cfg(lr=5e-4, batch_size=4)
    train_set = SyntheticDepthDataset(num_videos=12, num_frames=8, size=64, seed=0)
    test_set = SyntheticDepthDataset(num_videos=4, num_frames=3, size=64, seed=99)
    frames = torch.stack([test_set[i]["frame_0"] for i in range(len(test_set))])
    nearness = [1 / test_set[i]["depth"][0].numpy() for i in range(len(test_set))]

    def score(model):
        return float(np.mean([spearman(d, t) for d, t in zip(_disparity(model, frames), nearness)]))

    torch.manual_seed(cfg.depth_train.seed)
    untrained = score(DepthTrainingModel(cfg.model, cfg.depth_train))
    constant = float(np.mean([spearman(np.full_like(t, 0.5), t) for t in nearness]))
    result = train(cfg, train_set, tmp_path / "run", device="cpu", max_steps=SYNTHETIC_STEPS, progress=False,
                   tensorboard=False)
    trained_model = load_depth_weights(DepthTrainingModel(cfg.model, cfg.depth_train), tmp_path / "run")
    trained = score(trained_model)
    print(f"spearman: trained {trained:.3f} untrained {untrained:.3f} constant {constant:.3f}; "
          f"step {result['step_time']:.3f} s")
    # measured (seed 0, 120 steps): trained 0.46, untrained 0.14, constant 0 (all ties)
    assert constant == 0.0
    assert trained > 0.35
    assert trained > untrained + 0.2
    # the sphere (near) gets a larger disparity than the plane (far), pooled over the test frames
    disp = _disparity(trained_model, frames)
    sphere = np.stack([near > near.min() * 1.5 for near in nearness])
    assert disp[sphere].mean() > disp[~sphere].mean()


SYNTHETIC_STEPS = 120


# --------------------------------------------------------------------------------- model pieces
def test_learned_intrinsics_receive_gradients_fixed_ones_do_not():
    frames = _frames()
    learned = DepthTrainingModel(_cfg(intrinsics="learned").model, _cfg(intrinsics="learned").depth_train)
    loss, logs, outputs = learned(frames)
    loss.backward()
    head = learned.pose_net.decoder
    assert head.focal.weight.grad is not None and head.focal.weight.grad.abs().sum() > 0
    assert head.offset.weight.grad is not None and head.offset.weight.grad.abs().sum() > 0
    assert outputs["intrinsics"].shape == (2, 3, 3)
    assert 0 < float(logs["fx"]) and 0.3 < float(logs["cx"]) < 0.7  # the principal point starts centred
    fixed_cfg = _cfg(intrinsics="fixed", fixed_focal=0.9)
    fixed = DepthTrainingModel(fixed_cfg.model, fixed_cfg.depth_train)
    loss, logs, _ = fixed(frames)
    loss.backward()
    assert fixed.pose_net.decoder.focal.weight.grad is None
    assert float(logs["fx"]) == pytest.approx(0.9)
    # every other depth and pose parameter that shapes the loss gets a gradient (not: the ResNet fc layers,
    # the K heads in fixed mode, the disparity heads of scales the loss does not use)
    unused_heads = tuple(f"depth_decoder.decoder.{i}." for s, i in fixed.depth_decoder._dispconv.items()
                         if s not in fixed_cfg.depth_train.scales)
    for name, p in fixed.named_parameters():
        if ".focal." in name or ".offset." in name or ".fc." in name or name.startswith(unused_heads):
            continue
        assert p.grad is not None, name


def test_daganpp_uncertainty_variant_trains_the_uncertainty_head():
    cfg = _cfg(uncertainty=True, intrinsics="learned")
    model = DepthTrainingModel(cfg.model, cfg.depth_train)
    loss, logs, outputs = model(_frames())
    loss.backward()
    assert torch.isfinite(loss)
    assert outputs["sigma"].shape == (2, 2, 64, 64) and float(logs["sigma"]) > 0
    out_head = model.pose_net.decoder.uncertainty_head["out"]
    assert out_head.weight.grad.abs().sum() > 0 or out_head.bias.grad.abs().sum() > 0


def test_colorize_makes_an_rgb_image():
    img = colorize(torch.linspace(0, 1, 64).view(1, 8, 8))
    assert img.shape == (3, 8, 8) and img.min() >= 0 and img.max() <= 1
    assert img[:, 0, 0].sum() < img[:, -1, -1].sum()  # larger values are brighter


# --------------------------------------------------------------------------------- runs
def _tiny_dataset():
    return SyntheticDepthDataset(num_videos=2, num_frames=4, size=64, seed=1)


def test_resume_continues_bit_exactly(tmp_path):
    cfg = _cfg(intrinsics="learned", save_every=2)
    ds = _tiny_dataset()
    train(cfg, ds, tmp_path / "straight", device="cpu", max_steps=4, progress=False, tensorboard=False)
    train(cfg, ds, tmp_path / "split", device="cpu", max_steps=2, progress=False, tensorboard=False)
    with pytest.raises(OutputError, match="already holds a training run: pass --checkpoint"):
        train(cfg, ds, tmp_path / "split", device="cpu", max_steps=4, progress=False, tensorboard=False)
    result = train(cfg, ds, tmp_path / "split", device="cpu", max_steps=4, resume=tmp_path / "split",
                   progress=False, tensorboard=False)
    assert result["step"] == 4
    a = torch.load(tmp_path / "straight" / CHECKPOINT_NAME, weights_only=False)
    b = torch.load(tmp_path / "split" / CHECKPOINT_NAME, weights_only=False)
    assert a["step"] == b["step"] == 4
    for part in ("depth_encoder", "depth_decoder", "pose_net"):
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), f"{part}.{key} differs after resume"
    moved = [k for k, v in a["depth_decoder"].items()
             if not torch.equal(v, DepthTrainingModel(cfg.model, cfg.depth_train).depth_decoder.state_dict()[k])]
    assert moved  # training changed the weights (the equality above is not trivial)
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"])


def test_run_folder_loads_into_dagan_and_exports(tmp_path, tiny_model):
    from dagan import DaGAN
    from dagan.checkpoints import official_state

    cfg = _cfg()
    run = tmp_path / "run"
    train(cfg, _tiny_dataset(), run, device="cpu", max_steps=1, progress=False, tensorboard=True)
    assert (run / "encoder.pth").is_file() and (run / "depth.pth").is_file() and (run / "config.yaml").is_file()
    assert any((run / "tb").iterdir())
    trained = load_depth_weights(DepthTrainingModel(cfg.model, cfg.depth_train), run / CHECKPOINT_NAME)
    frames = _frames()[:, 0]
    expected = _disparity(trained, frames)

    # 1. the official layout in the run folder: DaGAN.from_official(..., depth_dir=run) (what demo.py uses)
    official = tmp_path / "checkpoint.pth.tar"
    torch.save(official_state(tiny_model), official)
    model = DaGAN.from_official(REPO / "configs" / "dagan-tiny.yaml", official, depth_dir=run)
    assert model.config.depth.num_layers == 10  # read off the exported encoder
    np.testing.assert_allclose(model.estimate_depth(frames)[:, 0].detach().numpy(), expected, atol=1e-6)
    # 2. load_depth_weights into a DaGAN from the run folder / checkpoint file (train.depth_checkpoint)
    other = DaGAN(model.config)
    load_depth_weights(other, run)
    np.testing.assert_allclose(other.eval().estimate_depth(frames)[:, 0].detach().numpy(), expected, atol=1e-6)
    # 3. explicit export, also through train.py (--checkpoint and --export mean what they mean for the generator)
    enc, dec = export_depth(run, tmp_path / "exported")
    assert torch.load(enc, weights_only=True)["height"] == 64
    assert _train_py(["--config", str(REPO / "configs" / "depth-tiny.yaml"), "--checkpoint", str(run),
                      "--export", str(tmp_path / "exported2")]) == 0
    assert (tmp_path / "exported2" / "depth.pth").is_file()


# --------------------------------------------------------------------------------- data errors
def test_bad_dataset_paths_give_clear_errors(tmp_path, capsys):
    cfg = load_config(REPO / "configs" / "depth-tiny.yaml")
    cfg.dataset.test_videos, cfg.dataset.exclude_videos = [], []
    with pytest.raises(DatasetError, match="not found"):
        build_dataset(cfg, root=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no videos"):
        build_dataset(cfg, root=tmp_path / "empty")
    short = tmp_path / "short" / "train" / "clip"
    short.mkdir(parents=True)
    import imageio.v3 as iio

    for i in range(2):  # a window [0, -1, 1] needs 3 frames
        iio.imwrite(short / f"{i:07d}.png", np.full((64, 64, 3), 100 + i, np.uint8))
    with pytest.raises(DatasetError, match="shorter than the 3 frames"):
        build_dataset(cfg, root=tmp_path / "short")
    with pytest.raises(DatasetError, match="fewer than one batch"):
        train(_cfg(batch_size=8), SyntheticDepthDataset(num_videos=1, num_frames=4, size=64), tmp_path / "r",
              device="cpu", progress=False, tensorboard=False)
    # the CLI says it in one line and exits 2
    code = _train_py(["--config", str(REPO / "configs" / "depth-tiny.yaml"), "--data", str(tmp_path / "missing"),
                      "--out", str(tmp_path / "cli")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "not found" in err[0]


def test_depth_run_on_real_clips(shared_data, tmp_path):
    """A few steps of the tiny config on the shared sample clips, through the same entry as train.py."""
    cfg = load_config(REPO / "configs" / "depth-tiny.yaml")
    cfg.depth_train.batch_size = 2
    cfg.depth_train.scales = [0, 1]
    args = argparse.Namespace(out=str(tmp_path / "run"), data=str(shared_data), device="cpu", checkpoint=None,
                              max_steps=2, num_workers=0, no_progress=True)
    result = run_from_args(DepthTask, cfg, args)
    assert result["step"] == 2 and np.isfinite(result["loss"])
    assert (tmp_path / "run" / "encoder.pth").is_file() and (tmp_path / "run" / CHECKPOINT_NAME).is_file()
