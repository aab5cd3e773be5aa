"""One media module: training, evaluation and the demo read the same image and the same clip into the same
frames (dagan.io), 16-bit and alpha handled, one resize/crop policy."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from dagan.evaluation.evaluate import iter_video_frames, read_frame
from dagan.inference import pipeline
from dagan.io.images import fit_frames, read_image, resize_image
from dagan.io.video import VideoReader, decode_video, ffmpeg_exe
from dagan.training.datasets import ImagePairsDataset, VideoFramesDataset

SIZE = 32


def _write_png16(path, rgba):
    """A 16-bit RGBA PNG written by hand (Pillow cannot write one): IHDR colour type 6, bit depth 16."""
    import struct
    import zlib

    h, w = rgba.shape[:2]

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + rgba[y].astype(">u2").tobytes() for y in range(h))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 6, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def _rgba16(path, h=40, w=56):
    """A non-square 16-bit RGBA PNG: colour ramps, the left quarter transparent, the rest opaque."""
    from PIL import Image

    y, x = np.mgrid[0:h, 0:w]
    rgba = np.stack([x * 65535 // (w - 1), y * 65535 // (h - 1), np.full_like(x, 20000),
                     np.where(x < w // 4, 0, 65535)], axis=-1).astype(np.uint16)
    _write_png16(path, rgba)
    with Image.open(path) as img:
        assert img.mode == "RGBA" and img.size == (w, h)
    return rgba


def test_sixteen_bit_rgba_png_is_read_the_same_everywhere(tmp_path):
    rgba = _rgba16(tmp_path / "portrait.png")
    expected = fit_frames(read_image(tmp_path / "portrait.png")[None], (SIZE, SIZE))[0]
    # the reader scales 16 bit (not clipped to 255, which made it nearly white) and composites alpha over white
    full = read_image(tmp_path / "portrait.png")
    opaque = rgba[:, -1].astype(np.float64) / 65535 * 255
    assert np.abs(full[:, -1].astype(int) - np.round(opaque[:, :3]).astype(int)).max() <= 1
    assert (full[:, : rgba.shape[1] // 4] == 255).all()
    assert 60 < full[:, rgba.shape[1] // 4:, 2].mean() < 100  # 20000 / 65535 * 255 = 78

    # training: the still-image pairs and a frame folder of the same picture
    pairs = ImagePairsDataset([tmp_path / "portrait.png"], frame_shape=(SIZE, SIZE))
    training_still = np.round(pairs._image(0).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    folder = tmp_path / "data" / "train" / "clip"
    folder.mkdir(parents=True)
    for i in range(3):
        shutil.copy(tmp_path / "portrait.png", folder / f"{i:07d}.png")
    videos = VideoFramesDataset(tmp_path / "data", "train", (SIZE, SIZE))
    sample = videos[0]
    training_frame = np.round(sample["source"].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    # evaluation: a pair-list frame and a frame folder
    evaluation_frame = read_frame(tmp_path / "portrait.png", SIZE)
    evaluation_folder = next(iter_video_frames(folder, SIZE))
    # the demo's source image
    demo = pipeline.prepare_source(pipeline.AnimateOptions(source_image=str(tmp_path / "portrait.png")), SIZE, None).image
    for name, got in [("training still", training_still), ("training video", training_frame),
                      ("evaluation frame", evaluation_frame), ("evaluation folder", evaluation_folder),
                      ("demo source", demo)]:
        assert got.shape == (SIZE, SIZE, 3), name
        np.testing.assert_array_equal(got, expected, err_msg=name)


def test_the_same_clip_gives_the_same_frames_everywhere(tmp_path):
    clip = tmp_path / "data" / "train" / "clip.mp4"
    clip.parent.mkdir(parents=True)
    subprocess.run([ffmpeg_exe(), "-y", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=80x48:rate=10",
                    "-t", "1", "-pix_fmt", "yuv420p", "-c:v", "libx264", str(clip)], check=True)
    raw = np.stack(list(VideoReader(clip)))
    assert raw.shape == (10, 48, 80, 3)
    expected = fit_frames(raw, (SIZE, SIZE))
    # training: the whole-clip decode and the dataset's samples
    decoded, declared = decode_video(clip, (SIZE, SIZE))
    np.testing.assert_array_equal(decoded, expected)
    assert declared == 10
    videos = VideoFramesDataset(tmp_path / "data", "train", (SIZE, SIZE))
    for n in range(3):
        sample = videos[n]
        for key, index in zip(("source", "driving"), sample["frame_index"].tolist()):
            got = np.round(sample[key].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
            np.testing.assert_array_equal(got, expected[index], err_msg=f"sample {n} {key}")
    # evaluation
    np.testing.assert_array_equal(np.stack(list(iter_video_frames(clip, SIZE))), expected)
    assert np.array_equal(read_frame(clip.parent / "clip.mp4" / "0000004.png", SIZE), expected[4])
    # the demo's driving frames
    driving = pipeline.open_driving(pipeline.AnimateOptions(driving_video=str(clip)), SIZE, None)
    np.testing.assert_array_equal(np.stack(list(driving.frames)), expected)


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    from PIL import Image

    grey = np.array([[0, 32896, 65535]], np.uint16)
    Image.fromarray(grey).save(tmp_path / "g16.png")
    assert read_image(tmp_path / "g16.png")[0, :, 0].tolist() == [0, 128, 255]


def test_resize_policy_crops_to_the_aspect_instead_of_squashing():
    image = np.zeros((20, 40, 3), np.uint8)
    image[:, 10:30] = 255  # the centre square is white, the sides black
    assert resize_image(image, 8).min() == 255
    assert resize_image(image, (8, 16)).shape == (8, 16, 3)


@pytest.mark.parametrize("mode", ["L", "RGB", "P"])
def test_eight_bit_images_are_unchanged_by_the_reader(tmp_path, mode):
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(12, 10, 3), dtype=np.uint8)
    img = Image.fromarray(rgb).convert(mode)
    img.save(tmp_path / "x.png")
    np.testing.assert_array_equal(read_image(tmp_path / "x.png"), np.asarray(img.convert("RGB")))
