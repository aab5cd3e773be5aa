"""Landmark shape from motion (dagan.training.face_sfm): the factorisation recovers a known 3D shape from
projected tracks, refuses a head that never turns, the sparse loss is scale/shift invariant, the targets follow
the dataset's resize and augmentation, and depth training uses them."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dagan.config import AugmentationConfig, config_from_dict
from dagan.errors import DatasetError
from dagan.training.datasets import VideoFramesDataset, augment_frames
from dagan.training.depth_trainer import DepthTrainingModel, landmark_targets
from dagan.training.face_sfm import (ShapeFromMotionError, clip_landmarks, factorize, fit_points,
                                     landmark_nearness_loss, nearness_targets, sample_map)

RELIEF = {30: 10.0, 33: 9.5, 51: 9.0, 57: 9.0, 8: 8.0, 27: 7.0, 48: 6.0, 54: 6.0, 39: 5.0, 42: 5.0, 36: 4.0,
          45: 4.0, 4: 3.0, 12: 3.0, 0: 2.0, 16: 2.0}  # the generic relief of benchmarks/depth_face_check.py


def _face_points(seed=0):
    """A 68-point head-like cloud: x, y spread like a face, z a dome (nose tip 30 nearest, jaw farthest)."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(-50, 50, size=(68, 2))
    z = 40 - 0.012 * (xy ** 2).sum(1) + rng.normal(0, 2, 68)
    xy[30], z[30] = (0, 5), 60.0
    return np.concatenate([xy, z[:, None]], 1)


def _rotation(yaw, pitch, roll):
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return rz @ rx @ ry


def _tracks(points, frames=150, turn=0.12, noise=0.5, seed=1):
    """Weak-perspective projections (z towards the camera is the 3rd axis) of ``points`` under random head
    rotations of spread ``turn`` radians, scale and translation jitter, plus landmark noise."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(frames):
        r = _rotation(*(rng.normal(0, turn, 2)), rng.normal(0, 0.05))
        scale = 1 + rng.normal(0, 0.03)
        out.append(scale * (points @ r.T)[:, :2] + 128 + rng.normal(0, 3, 2) + rng.normal(0, noise, (68, 2)))
    return np.array(out)


def test_factorize_recovers_a_known_shape_and_its_per_frame_depth():
    points = _face_points()
    tracks = _tracks(points)
    tracks[7] = np.nan  # a frame without a face
    shape = factorize(tracks)
    corr = np.corrcoef(shape.points[:, 2], points[:, 2])[0, 1]
    assert corr > 0.95, corr  # the relief, up to scale and shift
    assert np.isnan(shape.nearness[7]).all() and np.isfinite(np.delete(shape.nearness, 7, 0)).all()
    assert shape.rms < 2.0 and shape.turn > 0.05
    # per frame the nearest landmark is the nose tip, as in the truth
    assert (np.nanargmax(np.delete(shape.nearness, 7, 0), 1) == 30).mean() > 0.9


def test_factorize_picks_the_mirror_in_which_the_nose_is_near():
    points = _face_points()
    for flip in (1.0, -1.0):  # the same tracks come from the shape and its depth mirror; the answer is one
        shape = factorize(_tracks(points * np.array([1, 1, flip])))
        assert shape.points[30, 2] > shape.points[:17, 2].mean()


def test_factorize_refuses_a_head_that_does_not_turn():
    with pytest.raises(ShapeFromMotionError, match="turn"):
        factorize(_tracks(_face_points(), turn=0.0))
    with pytest.raises(ShapeFromMotionError, match="fewer than"):
        factorize(_tracks(_face_points(), frames=5))
    assert issubclass(ShapeFromMotionError, DatasetError)


def test_landmark_loss_is_scale_and_shift_invariant_and_skips_missing_rows():
    h = w = 16
    points = torch.tensor([[[2.0, 3.0], [10.0, 4.0], [5.0, 12.0], [13.0, 13.0]]]).repeat(3, 1, 1)
    values = torch.tensor([[1.0, 3.0, 2.0, 5.0]]).repeat(3, 1)
    disp = torch.zeros(3, 1, h, w)
    for i, (x, y) in enumerate(points[0].long().tolist()):
        disp[:, 0, y, x] = values[0, i]
    assert torch.allclose(sample_map(disp, points), values)  # pixel centres are sampled exactly
    assert float(landmark_nearness_loss(0.3 * disp + 7, points, values)) == pytest.approx(0, abs=1e-5)
    assert float(landmark_nearness_loss(-disp, points, values)) == pytest.approx(2, abs=1e-5)
    bad = values.clone()
    bad[1:] = float("nan")  # rows without targets do not count
    assert float(landmark_nearness_loss(disp, points, bad)) == pytest.approx(0, abs=1e-5)
    assert float(landmark_nearness_loss(disp, points, torch.full_like(values, float("nan")))) == 0
    flat = torch.rand(3, 1, h, w, requires_grad=True)
    landmark_nearness_loss(flat, points, values).backward()
    assert flat.grad.abs().sum() > 0


def test_fit_points_follows_the_dataset_crop_and_resize():
    from dagan.io.images import fit_frames

    image = np.zeros((1, 60, 100, 3), np.uint8)
    image[0, 20:24, 60:64] = 255  # a 4x4 dot centred at (61.5, 21.5) of a 100x60 frame
    small = fit_frames(image, (30, 30))[0, :, :, 0].astype(float)
    ys, xs = np.mgrid[:30, :30]
    centre = np.array([(xs * small).sum(), (ys * small).sum()]) / small.sum()
    assert np.allclose(fit_points(np.array([61.5, 21.5]), (60, 100), (30, 30)), centre, atol=0.15)


def test_points_follow_the_flip_and_zoom_augmentation():
    frames = torch.zeros(1, 3, 33, 33)
    frames[..., 8, 25] = 1.0  # a bright pixel at x = 25, y = 8
    aug = AugmentationConfig(horizontal_flip=True, time_flip=False, brightness=0, contrast=0, saturation=0, hue=0,
                             zoom=[1.3, 1.3], translate=0.1)
    for seed in range(6):  # both flip outcomes
        out = augment_frames(frames, aug, np.random.default_rng(seed), torch.tensor([[25.0, 8.0]]))
        peak = divmod(int(out.frames[0, 0].argmax()), 33)
        assert np.allclose(out.points[0].numpy(), [peak[1], peak[0]], atol=1.0), (seed, out.points, peak)
    with pytest.raises(ValueError, match="shape warp"):
        from dagan.config import TransformConfig

        warp = AugmentationConfig(shape_warp=TransformConfig(sigma_affine=0.1, sigma_tps=0.01, points_tps=3))
        augment_frames(frames, warp, np.random.default_rng(0), torch.zeros(1, 2))


def _write_clips(folder, names, frames=12, size=32):
    from PIL import Image

    for k, name in enumerate(names):
        (folder / name).mkdir(parents=True)
        for i in range(frames):
            Image.fromarray(np.full((size, size, 3), 10 * k + i, np.uint8)).save(folder / name / f"{i:03d}.png")


def test_dataset_returns_the_centre_frames_targets(tmp_path):
    _write_clips(tmp_path, ["a", "b", "held"])
    pts = np.stack([np.stack([np.full(68, float(t)), np.arange(68.0)], -1) for t in range(12)])  # x = frame index
    vals = np.tile(np.arange(68.0), (12, 1)) + np.arange(12.0)[:, None]
    ds = VideoFramesDataset(tmp_path, frame_shape=(32, 32), num_repeats=4, frame_offsets=(0, -2, 2),
                            test_videos=["held"], point_targets={"a": (pts, vals)})
    seen = set()
    for n in range(16):
        item = ds[n]
        name = ds.videos[int(item["video"])].name
        seen.add(name)
        assert item["points"].shape == (3, 68, 2) and item["point_values"].shape == (3, 68)
        if name == "a":  # every frame of the window, in frame_offsets order
            for row, t in enumerate(item["frame_index"].tolist()):
                assert item["points"][row, 5].tolist() == [t, 5.0] and float(item["point_values"][row, 0]) == t
        else:
            assert torch.isnan(item["points"]).all() and torch.isnan(item["point_values"]).all()
    assert seen == {"a", "b"}
    # source/driving pairs: points of both frames, swapped with them by the time flip, no values needed
    aug = AugmentationConfig(horizontal_flip=False, time_flip=True, brightness=0, contrast=0, saturation=0, hue=0)
    pairs = VideoFramesDataset(tmp_path, frame_shape=(32, 32), num_repeats=8, augment=aug, test_videos=["held"],
                               point_targets={"a": (pts, None)})
    for n in range(16):
        item = pairs[n]
        if pairs.videos[int(item["video"])].name == "a":
            assert item["points"][:, 0, 0].tolist() == item["frame_index"].tolist()
            assert torch.isnan(item["point_values"]).all()


def test_depth_model_adds_the_landmark_term():
    cfg = config_from_dict({"task": "depth", "model": {"image_size": 64, "depth": {"num_layers": 10}},
                            "depth_train": {"intrinsics": "fixed", "scales": [0], "landmark_weight": 0.5}})
    torch.manual_seed(0)
    model = DepthTrainingModel(cfg.model, cfg.depth_train)
    frames = torch.rand(2, 3, 3, 64, 64)
    points = torch.rand(2, 68, 2) * 63
    nearness = torch.randn(2, 68)
    plain, logs_plain, _ = model(frames)
    with_points, logs, _ = model(frames, points=points, nearness=nearness)
    assert "landmarks" not in logs_plain and 0 < float(logs["landmarks"]) <= 2
    assert float((with_points - plain).detach()) == pytest.approx(0.5 * float(logs["landmarks"]), rel=1e-4, abs=1e-6)
    model.zero_grad()
    with_points.backward()
    head = model.depth_decoder.decoder[model.depth_decoder._dispconv[0]]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())


def test_real_clip_gives_a_face_shaped_target_and_is_cached(shared_data, tmp_path):
    """d10 of the shared clips: the shape recovered from its own landmark tracks has the nose nearest and
    follows the generic relief; the second call reads the cache (the detector is never asked again)."""
    from scipy.stats import spearmanr

    path = shared_data / "drv_lp_d10_audio_256.mp4"
    points = clip_landmarks(path, (64, 64), cache_dir=tmp_path)
    nearness = nearness_targets(points)
    assert points.shape == (nearness.shape[0], 68, 2) and nearness.shape[0] > 300
    assert 0 <= np.nanmin(points) and np.nanmax(points) <= 63  # pixels of the 64 px training frame
    ok = np.isfinite(nearness).all(1)
    assert ok.mean() > 0.95
    nose_near = nearness[ok, 30] > nearness[ok, :17].mean(1)
    ids = sorted(RELIEF)
    rho = [spearmanr(row[ids], [RELIEF[i] for i in ids]).statistic for row in nearness[ok]]
    assert nose_near.mean() > 0.95 and np.mean(rho) > 0.7, (nose_near.mean(), np.mean(rho))

    class NoDetector:
        def detect(self, *args, **kwargs):
            raise AssertionError("the cache was not used")

    again = clip_landmarks(path, (64, 64), detector=NoDetector(), cache_dir=tmp_path)
    assert np.array_equal(again, points, equal_nan=True)


def test_clips_whose_head_never_turns_give_no_targets(shared_data, tmp_path):
    """d13 hardly moves: no targets from it, a logged reason, and an error when no clip gives any."""
    path = shared_data / "drv_lp_d13_256.mp4"
    assert nearness_targets(clip_landmarks(path, (64, 64), cache_dir=tmp_path)) is None
    with pytest.raises(DatasetError, match="landmark_weight"):
        landmark_targets([path], (64, 64), str(tmp_path))


# ------------------------------------------------------------------------ keypoints tied to landmarks
def test_landmark_keypoint_loss_measures_the_distance_in_keypoint_units():
    from dagan.training.losses import landmark_keypoint_loss

    points = torch.full((2, 68, 2), float("nan"))
    points[0, 57] = torch.tensor([63.0, 0.0])  # pixel (63, 0) of a 64 px frame: keypoint (1, -1)
    kp = {"value": torch.tensor([[[0.0, 0.0], [1.0, -1.0]], [[0.0, 0.0], [0.0, 0.0]]], requires_grad=True)}
    assert float(landmark_keypoint_loss(kp, points, [[1, 57]], 64).detach()) == pytest.approx(0, abs=1e-6)
    assert float(landmark_keypoint_loss(kp, points, [[0, 57]], 64).detach()) == pytest.approx(1.0)  # |0-1|, |0+1|
    landmark_keypoint_loss(kp, points, [[0, 57]], 64).backward()
    assert kp["value"].grad[0, 0].abs().sum() > 0 and kp["value"].grad[1].abs().sum() == 0  # NaN rows skipped
    assert float(landmark_keypoint_loss(kp, torch.full((2, 68, 2), float("nan")), [[0, 57]], 64).detach()) == 0


def test_kp_landmarks_config_is_checked(tiny_config):
    from dagan.errors import ConfigError
    from dagan.training.trainer import _check_config

    tiny_config.train.kp_landmarks = [[7, 57]]  # the tiny model has 5 keypoints
    with pytest.raises(ConfigError, match="kp_landmarks"):
        _check_config(tiny_config)


def test_generator_training_ties_a_keypoint_to_the_lower_lip(shared_data, tiny_config, tmp_path):
    """A real clip's landmarks reach the generator loss through the mixed dataset (portrait pairs get NaN)."""
    from dagan.models.dagan import DaGAN, build_discriminator
    from dagan.training.trainer import GeneratorFullModel, GeneratorTask

    c = tiny_config
    c.dataset.root_dir = str(shared_data)
    c.dataset.test_videos = ["drv_lp_d9_audio_256"]
    c.dataset.exclude_videos = [p.stem for p in shared_data.glob("*.mp4")
                                if p.stem not in ("drv_lp_d0_256", "drv_lp_d9_audio_256")]
    c.dataset.mode, c.dataset.image_dirs, c.dataset.image_pairs_fraction = "mixed", ["source_astronaut_256.png"], 0.5
    c.train.kp_landmarks, c.train.loss_weights.kp_landmarks = [[0, 57]], 10.0
    c.train.landmark_cache = str(tmp_path)
    ds = GeneratorTask.build_dataset(c, str(shared_data))
    items = [ds[n] for n in range(8)]
    videos = [it for it in items if int(it["video"]) >= 0]
    assert videos and len(videos) < len(items)  # both kinds drawn
    assert all(it["points"].shape == (2, 68, 2) for it in items)
    assert all(torch.isfinite(it["points"]).all() for it in videos)
    assert all(torch.isnan(it["points"]).all() for it in items if int(it["video"]) < 0)
    lip = videos[0]["points"][:, 57]
    assert (lip[:, 1] > 32).all()  # the lower lip sits in the lower half of the 64 px frame
    torch.manual_seed(0)
    model = DaGAN(c.model)
    full = GeneratorFullModel(model, build_discriminator(c.model), c)
    batch = {k: torch.stack([v[k] for v in videos[:2] * 2][:2]) for k in ("source", "driving", "points")}
    losses, _ = full(batch["source"], batch["driving"], 0, batch["points"])
    assert float(losses["kp_landmarks"].detach()) > 0
    losses["kp_landmarks"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.kp_detector.parameters())


# -------------------------------------------------------------------- the mouth owned by the decoder
def _lips(cx, cy, width, opening, n=2):
    """68 landmarks, NaN except an outer lip contour (48-59) of ``width`` and ``opening`` pixels at (cx, cy)."""
    points = torch.full((n, 68, 2), float("nan"))
    angles = torch.linspace(0, 2 * np.pi, 13)[:-1]
    points[:, 48:60, 0] = cx + width / 2 * torch.cos(angles)
    points[:, 48:60, 1] = cy + opening / 2 * torch.sin(angles)
    return points


def test_mouth_region_covers_the_lips_and_scales_with_the_grid():
    from dagan.training.losses import mouth_region

    points = _lips(40.0, 48.0, 16.0, 8.0)
    points[1] = float("nan")  # a frame without landmarks
    region = mouth_region(points, 64, 64)
    assert region.shape == (2, 1, 64, 64)
    assert float(region[0, 0, 48, 40]) == 1.0 and float(region[0, 0, 48, 38]) == 1.0  # centre, inside the lips
    assert float(region[0, 0, 10, 10]) == 0.0 and float(region[0, 0, 48, 20]) == 0.0  # forehead, far cheek
    assert float(region[1].abs().sum()) == 0.0
    half = mouth_region(points, 64, 32)  # the same mouth on a 32 px grid (the blend mask of a 2x model)
    assert float(region[0].sum()) / 4 < float(half[0].sum()) < float(region[0].sum()) / 2  # + a 1 px floor
    grid = torch.arange(32.0)
    weight = half[0, 0] / half[0, 0].sum()
    assert float((weight.sum(0) * grid).sum()) == pytest.approx((40 + 0.5) / 2 - 0.5, abs=0.1)  # pixel centres
    assert float((weight.sum(1) * grid).sum()) == pytest.approx((48 + 0.5) / 2 - 0.5, abs=0.1)
    closed = mouth_region(_lips(40.0, 48.0, 16.0, 0.0), 64, 64)  # a closed mouth still gets room to open
    assert float(closed[0, 0, 48 + 4, 40]) == 1.0


def test_mouth_losses_read_only_the_mouth_and_skip_frames_without_landmarks():
    from dagan.training.losses import mouth_blend_loss, mouth_l1_loss, mouth_region

    points = _lips(32.0, 44.0, 16.0, 6.0)
    points[1] = float("nan")
    region = mouth_region(points, 64, 64)
    mask = torch.full((2, 1, 64, 64), 0.9, requires_grad=True)
    assert float(mouth_blend_loss(mask, region).detach()) == pytest.approx(0.9)
    mouth_blend_loss(mask, region).backward()
    assert mask.grad[0, 0, 44, 32] > 0 and mask.grad[0, 0, 5, 5] == 0 and mask.grad[1].abs().sum() == 0
    target = torch.zeros(2, 3, 64, 64)
    prediction = target.clone()
    prediction[:, :, :20] = 1.0  # wrong above the mouth only: not counted
    assert float(mouth_l1_loss(prediction, target, region)) == 0.0
    prediction[:, :, 40:48, 28:36] = 0.5  # wrong inside it
    assert float(mouth_l1_loss(prediction, target, region)) > 0.1
    none = mouth_region(torch.full((2, 68, 2), float("nan")), 64, 64)
    assert float(mouth_blend_loss(mask, none).detach()) == 0 and float(mouth_l1_loss(prediction, target, none)) == 0


def _face(opening, n=1):
    """68 landmarks: eye centres 20 px apart, inner lips 62/66 ``opening`` px apart, the rest NaN-free."""
    points = torch.zeros(n, 68, 2)
    points[:, 36:42] = torch.tensor([20.0, 20.0])
    points[:, 42:48] = torch.tensor([40.0, 20.0])
    points[:, 62] = torch.tensor([30.0, 45.0])
    points[:, 66] = torch.tensor([30.0, 45.0 + opening])
    return points


def test_mouth_change_measures_the_opening_difference_like_the_evaluation():
    from dagan.evaluation.face_metrics import mouth_opening
    from dagan.training.losses import mouth_blend_loss, mouth_change

    closed, open_ = _face(0.0), _face(1.0)
    assert mouth_opening(open_[0].numpy()) == pytest.approx(0.05)  # 1 px over a 20 px inter-ocular distance
    assert float(mouth_change(closed, open_)) == pytest.approx(0.5)  # 0.05 of the full 0.1
    assert float(mouth_change(open_, closed)) == pytest.approx(0.5)
    assert float(mouth_change(closed, _face(6.0))) == 1.0 and float(mouth_change(open_, open_)) == 0.0
    assert float(mouth_change(closed, torch.full((1, 68, 2), float("nan")))) == 0.0
    mask, region = torch.full((2, 1, 8, 8), 0.8), torch.ones(2, 1, 8, 8)
    assert float(mouth_blend_loss(mask, region, torch.tensor([1.0, 0.0]))) == pytest.approx(0.4)


def test_mouth_terms_are_checked_and_train_the_blend_mask(tiny_config):
    from dagan.errors import ConfigError
    from dagan.models.dagan import DaGAN, build_discriminator
    from dagan.training.trainer import GeneratorFullModel, _check_config

    c = tiny_config
    c.train.loss_weights.mouth_blend = 1.0
    with pytest.raises(ConfigError, match="output_blend"):
        _check_config(c)
    c.model.generator.type, c.model.generator.output_blend = "SPADEDepthAwareGenerator", True
    c.dataset.mode = "image_pairs"
    with pytest.raises(ConfigError, match="video pairs"):
        _check_config(c)
    c.dataset.mode = "videos"
    _check_config(c)
    c.train.loss_weights.mouth_l1 = 10.0
    torch.manual_seed(0)
    model = DaGAN(c.model)
    full = GeneratorFullModel(model, build_discriminator(c.model), c)
    frames = torch.rand(2, 2, 3, 64, 64)
    points = torch.stack([_lips(32.0, 46.0, 14.0, 4.0, n=2), _lips(32.0, 46.0, 14.0, 8.0, n=2)], 1)
    losses, generated = full(frames[:, 0], frames[:, 1], 0, points)
    assert generated["blend_mask"].shape == (2, 1, 64, 64)
    assert 0 < float(losses["mouth_blend"].detach()) < 0.2  # the new mask starts near 0.05 (bias -3) and float(losses["mouth_l1"].detach()) > 0
    losses["mouth_blend"].backward()
    grad = model.generator.decoder.conv_blend.bias.grad
    assert grad is not None and float(grad.abs().sum()) > 0
    losses, _ = full(frames[:, 0], frames[:, 1], 0, None)  # portrait pairs: no landmarks, no mouth terms
    assert "mouth_blend" not in losses and "mouth_l1" not in losses
    c.train.mouth_blend_on_change = True  # only where the two mouths open differently
    same = torch.stack([_face(2.0, n=2), _face(2.0, n=2)], 1)
    differ = torch.stack([_face(0.0, n=2), _face(3.0, n=2)], 1)
    for pts in (same, differ):
        pts[:, :, 48:60] = _lips(30.0, 46.0, 14.0, 4.0, n=2)[:, None, 48:60]
    assert float(full(frames[:, 0], frames[:, 1], 0, same)[0]["mouth_blend"].detach()) == 0.0
    assert float(full(frames[:, 0], frames[:, 1], 0, differ)[0]["mouth_blend"].detach()) > 0
