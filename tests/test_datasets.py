"""Datasets: layouts, splits, determinism, augmentation, unreadable frames, short videos."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from dagan.config import AugmentationConfig, DatasetConfig
from dagan.errors import DatasetError
from dagan.io.images import fit_frames
from dagan.io.clips import list_clips
from dagan.training.datasets import ImagePairsDataset, MixedDataset, VideoFramesDataset, build_dataset


def _frame_folder(folder, values, size=(40, 48)):
    """Frames whose grey level encodes their index (value v -> every pixel v)."""
    folder.mkdir(parents=True)
    for i, v in enumerate(values):
        Image.fromarray(np.full(size + (3,), v, np.uint8)).save(folder / f"{i:07d}.png")
    return folder


@pytest.fixture
def frame_root(tmp_path):
    _frame_folder(tmp_path / "train" / "id1#a", [10 * i for i in range(8)])
    _frame_folder(tmp_path / "train" / "id1#b", [100 + 10 * i for i in range(8)])
    _frame_folder(tmp_path / "train" / "id2#c", [200 + 5 * i for i in range(6)])
    _frame_folder(tmp_path / "test" / "id3#d", [0, 50, 100])
    return tmp_path


def test_pairs_shapes_range_and_determinism(frame_root):
    ds = VideoFramesDataset(frame_root, "train", (32, 32), num_repeats=2, seed=3)
    assert len(ds) == 6
    a, b = ds[4], ds[4]
    assert a["source"].shape == (3, 32, 32) and a["source"].dtype == torch.float32
    assert torch.equal(a["source"], b["source"]) and torch.equal(a["driving"], b["driving"])
    # the frame content is the frame index read: grey levels agree with frame_index
    video = ds.videos[int(a["video"])]
    for key, idx in zip(("source", "driving"), a["frame_index"].tolist()):
        assert torch.allclose(a[key], torch.from_numpy(video.frame(idx)).permute(2, 0, 1).float() / 255)
    assert a["frame_index"][0] <= a["frame_index"][1]
    # one epoch visits every video num_repeats times
    assert sorted(int(ds[n]["video"]) for n in range(6)) == [0, 0, 1, 1, 2, 2]
    other = VideoFramesDataset(frame_root, "train", (32, 32), num_repeats=2, seed=4)
    assert any(not torch.equal(ds[n]["source"], other[n]["source"]) for n in range(6))


def test_window_offsets_are_consecutive(frame_root):
    ds = VideoFramesDataset(frame_root, "train", (16, 16), frame_offsets=(0, -1, 1), seed=0)
    for n in range(6):
        s = ds[n]
        t, prev, nxt = s["frame_index"].tolist()
        assert prev == t - 1 and nxt == t + 1
        video = ds.videos[int(s["video"])]
        assert torch.allclose(s["frame_-1"][0, 0, 0] * 255, torch.tensor(float(video.frame(prev)[0, 0, 0])))


def test_id_sampling_groups_by_identity(frame_root):
    ds = VideoFramesDataset(frame_root, "train", (16, 16), id_sampling=True, num_repeats=3)
    assert len(ds) == 2 * 3
    assert {int(ds[n]["video"]) for n in range(30)} == {0, 1, 2}


def test_split_and_missing_folders(frame_root, tmp_path):
    assert [p.name for p in list_clips(frame_root, "test")] == ["id3#d"]
    with pytest.raises(DatasetError, match="not found"):
        list_clips(tmp_path / "nope")
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no videos"):
        VideoFramesDataset(empty, "train", (16, 16))
    with pytest.raises(DatasetError, match="split folder"):
        list_clips(tmp_path / "empty", "test")


def test_hidden_entries_are_not_clips(frame_root):
    """A killed prepare run's ``.<name>.partial.*`` folder and a macOS ``._<name>.mp4`` file are skipped."""
    test = frame_root / "test"
    shutil.copytree(test / "id3#d", test / ".id9#x.partial.abc")
    (test / "._id3#d.mp4").write_bytes(b"\x00\x05\x16\x07")
    (test / "id4#e.mp4").write_bytes(b"")
    assert sorted(p.name for p in list_clips(frame_root, "test")) == ["id3#d", "id4#e.mp4"]


def test_too_short_videos(tmp_path):
    _frame_folder(tmp_path / "train" / "one", [5])
    with pytest.raises(DatasetError, match="shorter"):
        VideoFramesDataset(tmp_path, "train", (16, 16))
    _frame_folder(tmp_path / "train" / "two", [1, 2])
    ds = VideoFramesDataset(tmp_path, "train", (16, 16))  # the 1-frame video is skipped, not fatal
    assert all(ds.paths[int(ds[n]["video"])].name == "two" for n in range(4))
    with pytest.raises(DatasetError, match="shorter"):
        VideoFramesDataset(tmp_path, "train", (16, 16), frame_offsets=(0, -1, 1))


def test_unreadable_frames_are_skipped_and_counted(tmp_path):
    folder = _frame_folder(tmp_path / "train" / "v", [60, 120, 180])
    (folder / "0000001.png").write_bytes(b"not a png at all")
    ds = VideoFramesDataset(tmp_path, "train", (16, 16), num_repeats=20)
    skipped = 0
    for n in range(20):
        s = ds[n]
        skipped += int(s["skipped"])
        assert 1 not in s["frame_index"].tolist()
        levels = {round(float(s[k][0, 0, 0]) * 255) for k in ("source", "driving")}
        assert levels <= {60, 180}
    assert skipped > 0


def test_augmentation_is_identical_on_both_frames(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    (tmp_path / "train" / "v").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(image).save(tmp_path / "train" / "v" / f"{i}.png")
    aug = AugmentationConfig(horizontal_flip=True, time_flip=True, brightness=0.3, contrast=0.3, saturation=0.3,
                             hue=0.1)
    ds = VideoFramesDataset(tmp_path, "train", (32, 32), augment=aug, num_repeats=8)
    plain = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    changed = 0
    for n in range(8):
        s = ds[n]
        assert torch.equal(s["source"], s["driving"])
        changed += int(not torch.allclose(s["source"], plain, atol=1e-3))
    assert changed >= 6


def test_zoom_and_shift_jitter_is_geometric_and_shared():
    from dagan.training.datasets import augment_frames

    frames = torch.zeros(2, 3, 33, 33)
    frames[:, :, 12:21, 12:21] = 1.0  # a 9x9 white square at the centre
    still = dict(horizontal_flip=False, time_flip=False, brightness=0, contrast=0, saturation=0, hue=0)
    zoomed = augment_frames(frames, AugmentationConfig(zoom=[2.0, 2.0], **still), np.random.default_rng(0)).frames
    assert torch.equal(zoomed[0], zoomed[1])
    assert zoomed[0, 0].sum().item() == pytest.approx(4 * 81, rel=0.05)  # twice the side: four times the area
    moved = augment_frames(frames, AugmentationConfig(translate=0.2, **still), np.random.default_rng(1)).frames
    ys, xs = torch.nonzero(moved[0, 0] > 0.5, as_tuple=True)
    assert moved[0, 0].sum().item() == pytest.approx(81, rel=0.05)
    assert abs(xs.float().mean() - 16) + abs(ys.float().mean() - 16) > 1  # the square moved off the centre
    plain = augment_frames(frames, AugmentationConfig(**still), np.random.default_rng(0)).frames
    assert torch.equal(plain, frames)  # the defaults leave geometry alone


def test_zoom_config_is_validated():
    from dagan.config import config_from_dict
    from dagan.errors import ConfigError

    with pytest.raises(ConfigError, match="zoom"):
        config_from_dict({"zoom": [1.5, 1.0]}, AugmentationConfig, "dataset.augmentation")
    with pytest.raises(ConfigError, match="translate"):
        config_from_dict({"translate": 1.5}, AugmentationConfig, "dataset.augmentation")


def test_image_dirs_take_scikit_image_samples(tmp_path):
    cfg = DatasetConfig(root_dir=str(tmp_path), frame_shape=[32, 32, 3], mode="image_pairs",
                        image_dirs=["skimage:chelsea", "skimage:camera"], num_repeats=2)
    ds = build_dataset(cfg, "train")
    assert [p.stem for p in ds.paths] == ["chelsea", "camera"]
    sample = ds[0]
    assert sample["source"].shape == (3, 32, 32) and not torch.equal(sample["source"], sample["driving"])
    cfg.image_dirs = ["skimage:no_such_picture"]
    with pytest.raises(DatasetError, match="no_such_picture"):
        build_dataset(cfg, "train")


def test_image_pairs_warp_comes_from_the_config(tmp_path):
    from dagan.config import TransformConfig

    image = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "face.png")
    cfg = DatasetConfig(root_dir=str(tmp_path), frame_shape=[32, 32, 3], mode="image_pairs",
                        image_dirs=["face.png"], num_repeats=3,
                        augmentation=AugmentationConfig(horizontal_flip=False, time_flip=False, brightness=0,
                                                        contrast=0, saturation=0, hue=0))
    cfg.image_pairs_warp = TransformConfig(sigma_affine=0.0, sigma_tps=0.0, points_tps=3)
    still = build_dataset(cfg, "train")[0]
    assert torch.allclose(still["source"], still["driving"], atol=1e-5)
    cfg.image_pairs_warp = TransformConfig(sigma_affine=0.1, sigma_tps=0.01, points_tps=3)
    warped = build_dataset(cfg, "train")[0]
    assert (warped["source"] - warped["driving"]).abs().mean() > 0.02


def test_resize_crops_to_aspect():
    frames = np.zeros((1, 20, 40, 3), np.uint8)
    frames[:, :, 10:30] = 255  # the centre square is white, the sides black
    out = fit_frames(frames, (8, 8))
    assert out.shape == (1, 8, 8, 3) and out.min() == 255


def test_flat_root_of_mp4s(shared_data, tmp_path):
    for name in ("drv_lp_d0_256.mp4", "drv_lp_d13_256.mp4", "corrupt.mp4"):
        shutil.copy(shared_data / name, tmp_path / name)
    train = VideoFramesDataset(tmp_path, "train", (32, 32), test_videos=["drv_lp_d0_256"])
    test = VideoFramesDataset(tmp_path, "test", (32, 32), test_videos=["drv_lp_d0_256"])
    assert [p.name for p in train.paths] == ["corrupt.mp4", "drv_lp_d13_256.mp4"]
    assert [p.name for p in test.paths] == ["drv_lp_d0_256.mp4"]
    assert train.videos[0].num_frames() == 73  # truncated file: the frames that decode are used
    assert test.read_video(0).shape == (78, 3, 32, 32)
    s = train[0]
    assert s["source"].shape == (3, 32, 32) and 0 <= float(s["source"].min()) and float(s["source"].max()) <= 1
    excluded = VideoFramesDataset(tmp_path, "train", (32, 32), test_videos=["drv_lp_d0_256"],
                                  exclude_videos=["corrupt"])
    assert [p.name for p in excluded.paths] == ["drv_lp_d13_256.mp4"]
    with pytest.raises(DatasetError, match="not found"):
        VideoFramesDataset(tmp_path, "test", (32, 32), test_videos=["missing_clip"])


def test_image_pairs_and_mixed(tmp_path, frame_root):
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(tmp_path / "face.png")
    ds = ImagePairsDataset.from_dirs([tmp_path / "face.png"], frame_shape=(32, 32), num_repeats=4)
    a = ds[2]
    assert a["source"].shape == (3, 32, 32)
    assert not torch.allclose(a["source"], a["driving"])  # two different warps
    assert torch.equal(a["driving"], ds[2]["driving"])
    cfg = DatasetConfig(root_dir=str(frame_root), frame_shape=[32, 32, 3], mode="mixed",
                        image_dirs=[str(tmp_path / "face.png")], image_pairs_fraction=0.5, num_repeats=10)
    mixed = build_dataset(cfg, "train", seed=0)
    assert isinstance(mixed, MixedDataset)
    kinds = [int(mixed[n]["video"]) < 0 for n in range(30)]
    assert 5 < sum(kinds) < 25
    with pytest.raises(DatasetError, match="portrait folder"):
        ImagePairsDataset.from_dirs([tmp_path / "missing"])


def test_shape_warp_is_shared_and_changes_geometry():
    from dagan.config import TransformConfig, config_from_dict
    from dagan.training.datasets import augment_frames

    frames = torch.zeros(2, 3, 33, 33)
    frames[:, :, 12:21, 12:21] = 1.0
    frames[1] = frames[1].roll(3, dims=-1)  # the "driving" frame: the square moved right by 3 px
    still = dict(horizontal_flip=False, time_flip=False, brightness=0, contrast=0, saturation=0, hue=0)
    aug = AugmentationConfig(shape_warp=TransformConfig(sigma_affine=0.2, sigma_tps=0.02, points_tps=3), **still)
    warped = augment_frames(frames, aug, np.random.default_rng(3)).frames
    assert (warped[0] - frames[0]).abs().max() > 0.5  # the square was reshaped
    # the same warp on both frames: un-moving the driving frame before warping gives the source's result
    aligned = frames.clone()
    aligned[1] = frames[0]
    same = augment_frames(aligned, aug, np.random.default_rng(3)).frames
    assert torch.allclose(same[0], same[1]) and torch.allclose(same[0], warped[0])
    again = augment_frames(frames, aug, np.random.default_rng(3)).frames
    assert torch.equal(again, warped)  # a pure function of the rng
    cfg = config_from_dict({"shape_warp": {"sigma_affine": 0.05, "sigma_tps": 0.01, "points_tps": 3}},
                           AugmentationConfig, "dataset.augmentation")
    assert cfg.shape_warp.sigma_tps == 0.01
