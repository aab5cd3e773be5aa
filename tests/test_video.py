"""Streaming video I/O, image loading, synthetic driving clip and face-crop helpers."""
from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

from dagan.errors import InputError, MissingWeightsError, NoFaceError, OutputError
from dagan import faces
from dagan.io.images import load_image, to_uint8_rgb
from dagan.inference.synthetic import ASTRONAUT_FACE_BOX, HeadPose, SyntheticHead, head_motion_path, synthetic_driving
from dagan.io.video import (DepthWriter, VideoReader, VideoWriter, check_output_path, colorize_depth,
                                   ffmpeg_exe, probe, read_video)


def _frames(n, h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=(h // 8, w // 8, 3), dtype=np.uint8)
    return [np.kron(np.roll(base, i, axis=1), np.ones((8, 8, 1), dtype=np.uint8)) for i in range(n)]


def _ffmpeg(*args):
    subprocess.run([ffmpeg_exe(), "-y", "-v", "error", *args], check=True)


# ------------------------------------------------------------------------------------------- video
def test_round_trip_keeps_count_fps_and_content(tmp_path):
    path = tmp_path / "clip.mp4"
    frames = _frames(7)
    with VideoWriter(path, fps=12.5) as out:
        for frame in frames:
            out.write(frame)
    reader = VideoReader(path)
    back = list(reader)
    assert len(back) == 7 and reader.fps == pytest.approx(12.5) and reader.size == (64, 48)
    assert not reader.has_audio
    err = np.mean([np.abs(a.astype(int) - b).mean() for a, b in zip(frames, back)])
    assert err < 12  # lossy H.264 of blocky noise, but the same pictures
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not the 0600 of the temporary file


def test_odd_frame_size_is_padded_to_even(tmp_path):
    path = tmp_path / "odd.mp4"
    with VideoWriter(path, fps=10) as out:
        for frame in _frames(3):
            out.write(frame[:47, :63])
    assert probe(path)["size"] == (64, 48)


def test_failed_write_leaves_no_file(tmp_path):
    path = tmp_path / "result.mp4"
    with pytest.raises(RuntimeError):
        with VideoWriter(path, fps=10) as out:
            out.write(_frames(1)[0])
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_unknown_output_extension_is_refused_before_encoding(tmp_path):
    with pytest.raises(OutputError, match=r"cannot write \.txt .*\.mp4"):
        VideoWriter(tmp_path / "out.txt", fps=10)
    assert list(tmp_path.iterdir()) == []


def test_ffmpeg_failure_raises_with_its_message_and_leaves_no_file(tmp_path):
    """ffmpeg exits non-zero (its second input is not media): the writer must say so, not report success."""
    not_audio = tmp_path / "notes.txt"
    not_audio.write_text("not a media file")
    path = tmp_path / "result.mp4"
    with pytest.raises(OutputError, match=r"encoding .*result\.mp4 failed \(ffmpeg exit status [1-9]\d*\): \S"):
        with VideoWriter(path, fps=10, audio_from=not_audio) as out:
            for frame in _frames(3):
                out.write(frame)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_existing_output_needs_overwrite(tmp_path):
    path = tmp_path / "r.mp4"
    path.write_bytes(b"keep me")
    with pytest.raises(OutputError, match="--overwrite"):
        check_output_path(path)
    with pytest.raises(OutputError, match="one of the inputs"):
        check_output_path(path, overwrite=True, inputs=(path,))
    assert check_output_path(path, overwrite=True) == str(path)
    assert path.read_bytes() == b"keep me"


def test_audio_track_is_copied_and_cut(tmp_path, shared_data):
    drv = shared_data / "drv_lp_d9_audio_256.mp4"
    reader = VideoReader(drv, max_frames=5)
    assert reader.has_audio and reader.declared_frames == 200
    out_path = tmp_path / "with_audio.mp4"
    with VideoWriter(out_path, reader.fps, audio_from=drv, audio_codec=reader.audio_codec,
                     max_seconds=5 / reader.fps) as out:
        for frame in reader:
            out.write(frame)
    info = probe(out_path)
    assert info["audio_codec"] == "aac" and info["frames"] == 5 and info["fps"] == 25
    assert info["seconds"] < 0.5  # the 8 s audio track was cut to the video


def test_truncated_video_is_noticed(shared_data):
    reader = VideoReader(shared_data / "corrupt.mp4")
    with pytest.raises(InputError, match="truncated"):
        for _ in reader:
            pass
    assert 0 < reader.frames_read < 200
    with pytest.raises(InputError, match="truncated"):
        VideoReader(shared_data / "corrupt.mp4").check_integrity()  # fast, before decoding
    assert VideoReader(shared_data / "corrupt.mp4", max_frames=50).check_integrity() == 73
    # stopping early on purpose is not a truncation
    assert len(list(VideoReader(shared_data / "corrupt.mp4", max_frames=10))) == 10


def test_unreadable_and_video_less_files(tmp_path):
    bogus = tmp_path / "bogus.mp4"
    bogus.write_bytes(b"not a video at all" * 10)
    with pytest.raises(InputError):
        VideoReader(bogus)
    with pytest.raises(InputError, match="not found"):
        VideoReader(tmp_path / "missing.mp4")
    audio_only = tmp_path / "audio.m4a"
    _ffmpeg("-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "0.3", str(audio_only))
    with pytest.raises(InputError):
        list(VideoReader(audio_only))


@pytest.mark.parametrize("pix_fmt", ["gray", "yuv444p10le", "yuv420p"])
def test_pixel_formats_and_sizes_decode_to_rgb(tmp_path, pix_fmt):
    path = tmp_path / f"{pix_fmt}.mkv"
    codec = "ffv1" if pix_fmt != "yuv420p" else "libx264"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=50x30:rate=7", "-frames:v", "4", "-pix_fmt", pix_fmt,
            "-c:v", codec, str(path))
    frames, fps = read_video(path)
    assert frames.shape == (4, 30, 50, 3) and frames.dtype == np.uint8 and fps == pytest.approx(7)
    assert frames.std() > 10  # real picture content, not a blank


# ------------------------------------------------------------------------------------------ images
def test_image_modes_become_uint8_rgb(tmp_path):
    from PIL import Image

    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:, :2, 3] = 255  # left opaque red, right fully transparent -> white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    assert img.shape == (4, 5, 3) and img.dtype == np.uint8
    assert tuple(img[0, 0]) == (200, 0, 0) and tuple(img[0, 4]) == (255, 255, 255)

    grey16 = np.array([[0, 32896, 65535]], dtype=np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    assert load_image(tmp_path / "g16.png")[0, :, 0].tolist() == [0, 128, 255]

    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(grey).save(tmp_path / "g.webp", lossless=True)
    out = load_image(tmp_path / "g.webp")
    assert out.shape == (3, 4, 3) and np.array_equal(out[..., 0], grey) and np.array_equal(out[..., 2], grey)

    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).convert("P").save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png").shape == (8, 8, 3)
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(tmp_path / "j.jpg")
    assert abs(int(load_image(tmp_path / "j.jpg").mean()) - 90) <= 2
    assert np.array_equal(to_uint8_rgb(np.ones((2, 2), np.float32)), np.full((2, 2, 3), 255, np.uint8))


def test_bad_images_raise_input_error(tmp_path):
    (tmp_path / "x.png").write_bytes(b"garbage")
    with pytest.raises(InputError, match="cannot read"):
        load_image(tmp_path / "x.png")
    with pytest.raises(InputError, match="not found"):
        load_image(tmp_path / "none.png")


# ------------------------------------------------------------------------------------------- depth
def test_depth_npz_and_colour_map(tmp_path):
    maps = [np.full((6, 7), v, np.float32) for v in (0.1, 0.5, 0.9)]
    with DepthWriter(tmp_path / "d.npz", fps=25) as out:
        for m in maps:
            out.write(m)
    data = np.load(tmp_path / "d.npz")
    assert data["depth"].shape == (3, 6, 7) and data["depth"].dtype == np.float16
    assert np.allclose(data["depth"][:, 0, 0], [0.1, 0.5, 0.9], atol=1e-3) and float(data["fps"]) == 25
    far, near = colorize_depth(np.array([[0.2, 0.85]]), 0.0, 1.0)[0]
    assert far[2] > far[0] and near[0] > near[2]  # far = blue, near = red
    with pytest.raises(OutputError, match=".npz"):
        DepthWriter(tmp_path / "d.txt", fps=25)


# --------------------------------------------------------------------------------------- synthetic
def test_synthetic_clip_is_seeded_smooth_and_starts_neutral():
    path = head_motion_path(50, seed=3)
    assert np.allclose(path[0], 0) and np.abs(np.diff(path, axis=0)).max() < 0.05
    assert np.abs(path).max(axis=0).min() > 0.03  # nod, turn and tilt all move
    assert np.allclose(head_motion_path(50, seed=3), path) and not np.allclose(head_motion_path(50, seed=4), path)
    head = SyntheticHead(size=32)
    clip = list(synthetic_driving(4, size=32, seed=1))
    assert np.array_equal(clip[0], head.source())
    assert not np.array_equal(head.render(HeadPose(0.2, 0.0, 0.0)), clip[0])


# ------------------------------------------------------------------------------------------- faces
def test_square_box_stays_inside_and_is_centred():
    x0, y0, side = faces.square_box(ASTRONAUT_FACE_BOX, (512, 512), 1.8)
    assert side == pytest.approx(1.8 * 95)
    assert x0 + side / 2 == pytest.approx((177 + 272) / 2)
    x0, y0, side = faces.square_box((0, 0, 100, 100), (120, 300), 1.8)  # near a corner, larger than the image
    assert side == 120 and x0 >= 0 and y0 == 0 and x0 + side <= 300


def test_box_smoother_removes_jitter_and_follows_motion():
    rng = np.random.default_rng(0)
    smoother = faces.BoxSmoother(alpha=0.2)
    raw, smooth = [], []
    for t in range(80):
        box = (100 + rng.normal(0, 3), 50 + rng.normal(0, 3), 80)
        raw.append(box[0])
        smooth.append(smoother.update(box)[0])
    assert np.std(np.diff(smooth[10:])) < 0.3 * np.std(np.diff(raw[10:]))
    for _ in range(60):
        last = smoother.update((160, 50, 80))
    assert abs(last[0] - 160) < 3
    still = faces.BoxSmoother()
    boxes = {still.update((10 + 0.5 * (i % 2), 10, 100)) for i in range(10)}
    assert len(boxes) == 1  # sub-deadzone noise does not move the box at all


class FakeDetector:
    """Finds a fixed face box; ``None`` entries in ``boxes`` mean 'no face in this call'."""

    def __init__(self, boxes, landmarks=None):
        self.boxes = list(boxes)
        self.landmarks = landmarks
        self.calls = 0

    def detect(self, image, landmarks=False):
        box = self.boxes[min(self.calls, len(self.boxes) - 1)]
        self.calls += 1
        if box is None:
            return []
        lm = self.landmarks(image) if (landmarks and self.landmarks) else None
        return [faces.Face(np.asarray(box, float), 0.9, lm)]


def test_driving_cropper_holds_box_without_detection_and_needs_first_face():
    frame = np.zeros((200, 300, 3), np.uint8)
    cropper = faces.DrivingCropper(FakeDetector([(100, 50, 150, 100), None, None]), size=32)
    outs = [cropper(frame) for _ in range(3)]
    assert all(o.shape == (32, 32, 3) for o in outs) and cropper.boxes[0] == cropper.boxes[2]
    with pytest.raises(NoFaceError, match="--no-crop"):
        faces.DrivingCropper(FakeDetector([None]), size=32)(frame)


def test_paste_back_blends_only_inside_the_box():
    background = np.full((100, 120, 3), 10, np.uint8)
    face = np.full((32, 32, 3), 250, np.uint8)
    out = faces.paste_back(background, face, (40.0, 20.0, 50.0))
    assert np.array_equal(out[:20], background[:20]) and np.array_equal(out[:, :40], background[:, :40])
    assert out[45, 65, 0] >= 245  # centre of the box is the face
    assert 10 < out[21, 65, 0] < 250  # soft edge
    assert np.array_equal(background, np.full((100, 120, 3), 10, np.uint8))  # input untouched


def test_find_best_frame_picks_matching_landmarks():
    rng = np.random.default_rng(0)
    shapes = [rng.normal(size=(68, 2)) for _ in range(5)]
    target = 3
    source_lm = shapes[target] * 2.5 + 40  # same shape, other scale and position
    frames = [np.full((8, 8, 3), i, np.uint8) for i in range(5)]
    source = np.full((8, 8, 3), 99, np.uint8)
    det = FakeDetector([(0, 0, 8, 8)], landmarks=lambda img: source_lm if img[0, 0, 0] == 99 else shapes[img[0, 0, 0]])
    assert faces.find_best_frame(det, source, frames) == target


def test_missing_face_alignment_weights_message(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError) as info:
        faces.FaceAlignmentDetector()
    msg = str(info.value)
    assert "s3fd-619a316812.pth" in msg and "2DFAN4-11f355bf06.pth.tar" in msg
    assert str(tmp_path / "hub" / "checkpoints") in msg and "--no-crop" in msg


def test_real_face_alignment_path_with_planted_weights(tmp_path, monkeypatch):
    """The real face-alignment code loads files placed under the expected names (no download); random
    weights whose classifier says 'background everywhere' find no face -> NoFaceError."""
    import torch
    from face_alignment.detection.sfd.net_s3fd import s3fd
    from face_alignment.models import FAN

    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    net = s3fd()
    with torch.no_grad():
        for name, module in net.named_children():
            if name.endswith("mbox_conf"):
                module.weight.zero_()
                module.bias.fill_(50.0)
                module.bias[-1] = -50.0  # last channel = face
    torch.save(net.state_dict(), folder / "s3fd-619a316812.pth")
    torch.save(FAN(4).state_dict(), folder / "2DFAN4-11f355bf06.pth.tar")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    det = faces.FaceAlignmentDetector()
    image = np.full((64, 64, 3), 128, np.uint8)
    assert det.detect(image) == []
    with pytest.raises(NoFaceError, match="--no-crop"):
        faces.largest_face(det, image, "test image")
    os.remove(folder / "s3fd-619a316812.pth")
    with pytest.raises(MissingWeightsError, match="s3fd-619a316812.pth"):
        faces.FaceAlignmentDetector()
