"""``python -m dagan.prepare``: raw videos made by pasting the shared 256 px face clips off-centre into 720x1280
frames go in; 256x256 face clips that train.py reads come out, split by person, with a metadata CSV, resumable,
and with bad inputs reported and counted instead of stopping the run."""
from __future__ import annotations

import contextlib
import csv
import io
import os

import numpy as np
import pytest

from conftest import DATA, REPO
from dagan.cliutil import run_cli
from dagan import faces
from dagan.io.images import read_image
from dagan.io.video import VideoReader, VideoWriter, probe
from dagan.prepare import (PrepareOptions, SceneCuts, TrackOptions, crop_box, crop_frame, held_out_persons,
                           prepare_dataset)
from dagan.prepare.__main__ import main
from dagan.prepare.synthetic import background, composite_video

pytest.importorskip("dlib", reason="the faces extra (dlib-bin) is not installed")
if faces.dlib_model_dir() is None:
    pytest.skip("the faces extra (face_recognition_models) is not installed", allow_module_level=True)
if not DATA.exists():
    pytest.skip(f"{DATA} not present (shared test data)", allow_module_level=True)

FRAMES = 48
#: raw video name -> (shared clip, top-left corner of the 256 px clip in the 720x1280 frame)
PEOPLE = {"alice": ("drv_lp_d13_256.mp4", (400, 760)), "bob": ("drv_lp_d9_audio_256.mp4", (60, 200)),
          "carol": ("drv_lp_d0_256.mp4", (300, 90)), "dave": ("drv_lp_d6_audio_256.mp4", (440, 980))}


@pytest.fixture(scope="module")
def backend():
    return faces.load_face_backend("dlib")


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """Four people, one video switching from one person to another in place, and three bad inputs."""
    folder = tmp_path_factory.mktemp("raw")
    for seed, (name, (clip, corner)) in enumerate(PEOPLE.items()):
        composite_video([DATA / clip], folder / f"{name}.mp4", corner=corner, frames=FRAMES, seed=seed)
    composite_video([DATA / "drv_lp_d13_256.mp4", DATA / "drv_lp_d6_audio_256.mp4"], folder / "switch.mp4",
                    corner=(300, 500), frames=FRAMES, seed=9)
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "notes.mp4").write_text("not a video\n")
    with VideoWriter(folder / "rocket.mp4", 25) as out:  # a background without a face
        for _ in range(40):
            out.write(background((720, 1280), seed=5))
    return folder


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory):
    """One run of the CLI with 2 workers: (output folder, exit code, stdout + stderr)."""
    out = tmp_path_factory.mktemp("prepared")
    text = io.StringIO()  # capsys is function-scoped: capture this module-wide run by redirecting
    with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
        code = run_cli(main, [str(raw), str(out), "--min-frames", "32", "--workers", "2", "--test-ids", "carol",
                              "--no-progress"])
    return out, code, text.getvalue()


def _metadata(out):
    with open(out / "metadata.csv") as fh:
        return list(csv.DictReader(fh))


def _faces(backend, frames):
    """Per frame: the extent ``(x0, y0, x1, y1)`` of the largest face's 68 landmarks, or None. (The landmarks, not
    dlib's box: its box sizes come in steps of ~20 %, the pyramid's, too coarse for a 15 % tolerance.)"""
    found = []
    for frame in frames:
        face = faces.select_face(backend.detect(frame, landmarks=True))
        found.append(None if face is None else np.concatenate([face.landmarks.min(0), face.landmarks.max(0)]))
    return found


@pytest.fixture(scope="module")
def shared_face_size(backend):
    """The face size (landmark extent) of the shared clips, as a fraction of their side: the median over the
    first frames of the four clips the raw videos are made from."""
    sizes = []
    for clip, _ in PEOPLE.values():
        frames = list(VideoReader(DATA / clip, max_frames=FRAMES))
        sizes += [(b[2] - b[0]) / frames[0].shape[1] for b in _faces(backend, frames) if b is not None]
    return float(np.median(sizes))


def test_clips_meet_the_targets(prepared, backend, shared_face_size, capsys):
    """256x256; a face in >= 98 % of frames; its centre within 10 % of the width of the clip's centre; its size
    within 15 % of the shared clips'."""
    out, code, _ = prepared
    rows = {r["person_id"]: r for r in _metadata(out)}
    for name in PEOPLE:
        row = rows[name]
        frames = list(VideoReader(out / row["partition"] / (row["video_id"] + ".mp4")))
        assert frames[0].shape == (256, 256, 3) and len(frames) == int(row["frames"]) >= 32
        found = [b for b in _faces(backend, frames) if b is not None]
        centres = np.array([(b[:2] + b[2:]) / 2.0 for b in found])
        offset = np.linalg.norm(centres - 128, axis=1).mean() / 256
        size = np.median([b[2] - b[0] for b in found]) / 256
        with capsys.disabled():
            print(f"\n{name}: face in {len(found)}/{len(frames)} frames, centre off by {offset:.3f} of the width, "
                  f"size {size:.3f} (shared clips {shared_face_size:.3f})")
        assert len(found) >= 0.98 * len(frames), name
        assert offset <= 0.10, name
        assert abs(size / shared_face_size - 1) <= 0.15, name


def test_split_by_person_and_metadata(prepared):
    out, code, _ = prepared
    rows = _metadata(out)
    assert list(rows[0]) == ["video_id", "source", "person_id", "start", "end", "frames", "bbox", "fps", "width",
                             "height", "partition"]
    partitions = {}
    for row in rows:
        assert os.path.isfile(out / row["partition"] / (row["video_id"] + ".mp4"))
        partitions.setdefault(row["person_id"].split("_")[0], set()).add(row["partition"])
        assert row["fps"] == "25.0" and (row["width"], row["height"]) == ("720", "1280")
    assert partitions["carol"] == {"test"} and all(p == {"train"} for k, p in partitions.items() if k != "carol")
    alice = next(r for r in rows if r["person_id"] == "alice")
    x0, y0, x1, y1 = [int(v) for v in alice["bbox"].split("-")]
    assert x1 - x0 == y1 - y0 and 400 <= (x0 + x1) / 2 <= 400 + 256 and 760 <= (y0 + y1) / 2 <= 760 + 256
    assert sorted(os.listdir(out / "test")) == [r["video_id"] + ".mp4" for r in rows if r["partition"] == "test"]


def test_a_clip_never_switches_people(prepared):
    """The person changes in place (no cut in the frame difference, the box stays): two clips, two ids."""
    rows = sorted((r for r in _metadata(prepared[0]) if r["source"].endswith("switch.mp4")), key=lambda r: r["start"])
    assert [r["person_id"] for r in rows] == ["switch", "switch_1"]
    assert int(rows[0]["end"]) <= FRAMES <= int(rows[1]["start"]) and int(rows[0]["frames"]) >= 32


def test_bad_inputs_are_reported_and_counted(prepared):
    out, code, text = prepared
    assert code == 0
    skipped = [line for line in text.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 3 and all(any(n in line for line in skipped) for n in ("empty", "notes", "rocket"))
    assert "2 failed to decode, 1 without a usable face" in text and "6 clips (train 5, test 1;" in text


def test_rerun_resumes(prepared, raw, capsys):
    out, _, _ = prepared
    rows = _metadata(out)
    stamps = {r["video_id"]: os.path.getmtime(out / r["partition"] / (r["video_id"] + ".mp4")) for r in rows}
    victim = out / rows[0]["partition"] / (rows[0]["video_id"] + ".mp4")
    victim.unlink()
    stale = out / "train" / ".x.mp4.partial.abc.mp4"  # left by a killed run
    stale.write_bytes(b"half")
    args = [str(raw), str(out), "--min-frames", "32", "--test-ids", "carol", "--no-progress"]
    assert run_cli(main, args) == 0
    text = capsys.readouterr()
    assert "1 written now" in text.out and "(4 already done)" in text.out
    assert victim.is_file() and not stale.exists()
    for row in rows[1:]:
        assert os.path.getmtime(out / row["partition"] / (row["video_id"] + ".mp4")) == stamps[row["video_id"]]
    assert _metadata(out) == rows


class NoDetector:
    def detect(self, image, landmarks=False):
        raise AssertionError("VoxCeleb track files need no face detection")


def test_voxceleb_track_files(tmp_path, backend):
    """Per-utterance ``FRAME X Y W H`` lines decide the clips, nothing is detected; two people's overlapping tracks
    in one video go to their own splits."""
    corner = np.array([400, 760])
    composite_video([DATA / "drv_lp_d13_256.mp4"], tmp_path / "raw" / "yt0123abcd.mp4", corner=tuple(corner),
                    frames=40)
    first = list(VideoReader(DATA / "drv_lp_d13_256.mp4", max_frames=1))[0]
    box = faces.select_face(backend.detect(first)).box
    x, y = box[:2] + corner
    for person, frames in (("id10999", range(5, 40)), ("id10998", range(10, 36))):  # overlapping tracks
        track = tmp_path / "txt" / person / "yt0123abcd" / "00001.txt"
        track.parent.mkdir(parents=True)
        lines = [f"Identity  : \t{person}", "Reference : \tyt0123abcd", "Offset    : \t1", "", "FRAME \tX \tY \tW \tH "]
        lines += [f"{f:06d} \t{x:.0f} \t{y:.0f} \t{box[2] - box[0]:.0f} \t{box[3] - box[1]:.0f} " for f in frames]
        track.write_text("\n".join(lines) + "\n")
    summary = prepare_dataset(str(tmp_path / "raw"), str(tmp_path / "out"), PrepareOptions(
        format="png", test_ids=("id10998",), tracks=TrackOptions(min_frames=20)), voxceleb_txt=str(tmp_path / "txt"),
        progress=False, backend=NoDetector())
    test, train = _metadata(tmp_path / "out")  # sorted by split
    assert summary.clips == {"train": 1, "test": 1}
    assert (train["person_id"], train["start"], train["end"]) == ("id10999", "5", "40")
    assert (test["person_id"], test["start"], test["end"], test["partition"]) == ("id10998", "10", "36", "test")
    x0, y0, x1, y1 = [int(v) for v in train["bbox"].split("-")]
    centre = corner + (box[:2] + box[2:]) / 2.0
    assert abs((x0 + x1) / 2 - centre[0]) <= 2 and abs((y0 + y1) / 2 - centre[1]) <= 2
    frames = sorted((tmp_path / "out" / "train" / train["video_id"]).iterdir())
    assert [f.name for f in frames[:2]] == ["0000000.png", "0000001.png"] and len(frames) == 35
    assert read_image(frames[0]).shape == (256, 256, 3)
    assert len(os.listdir(tmp_path / "out" / "test" / test["video_id"])) == 26


def test_audio_is_kept(tmp_path):
    """--audio: the clip carries the source's sound track, cut to the clip's length."""
    code = run_cli(main, [str(DATA / "drv_lp_d9_audio_256.mp4"), str(tmp_path / "out"), "--audio", "--min-frames",
                          "32", "--no-progress"])
    (row,) = _metadata(tmp_path / "out")
    clip = probe(tmp_path / "out" / "train" / (row["video_id"] + ".mp4"))
    assert code == 0 and clip["audio_codec"] is not None and clip["frames"] == int(row["frames"])
    assert abs(clip["seconds"] - int(row["frames"]) / 25.0) < 0.1


def test_phone_video_with_rotation_metadata_is_prepared_upright(raw, tmp_path, backend, capsys):
    """A phone stores portrait video as landscape frames plus a display rotation: the clip comes out upright
    (dlib's detector only finds upright faces) and the metadata gives the displayed size."""
    import subprocess

    import imageio_ffmpeg

    (tmp_path / "in").mkdir()
    with VideoWriter(tmp_path / "sideways.mp4", 25) as out:
        for frame in VideoReader(raw / "alice.mp4", max_frames=36):
            out.write(np.ascontiguousarray(np.rot90(frame, k=-1)))  # stored turned clockwise
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-display_rotation", "90", "-i",
                    str(tmp_path / "sideways.mp4"), "-c", "copy", str(tmp_path / "in" / "phone.mp4")], check=True)
    assert _faces(backend, VideoReader(tmp_path / "sideways.mp4", max_frames=1)) == [None]
    code = run_cli(main, [str(tmp_path / "in"), str(tmp_path / "out"), "--min-frames", "32", "--no-progress"])
    assert code == 0 and "frame size" not in capsys.readouterr().err
    (row,) = _metadata(tmp_path / "out")
    assert (row["width"], row["height"]) == ("720", "1280") and int(row["frames"]) == 36
    x0, y0, x1, y1 = [int(v) for v in row["bbox"].split("-")]
    assert 400 <= (x0 + x1) / 2 <= 400 + 256 and 760 <= (y0 + y1) / 2 <= 760 + 256  # alice's upright place
    frames = list(VideoReader(tmp_path / "out" / "train" / (row["video_id"] + ".mp4")))
    assert sum(b is not None for b in _faces(backend, frames)) >= 0.98 * len(frames)


def test_crop_box_is_clamped_or_padded():
    boxes = np.array([[100.0, 100.0, 200.0, 200.0], [110.0, 100.0, 210.0, 200.0], [np.nan] * 4])
    x0, y0, side = crop_box(boxes, (720, 1280), enlarge=1.8)
    assert side == 180 and (x0, y0) == (65, 60)  # 1.8 x the median face; centred on the union
    assert crop_box(boxes - 100, (720, 1280), 1.8)[:2] == (0, 0)  # shifted into the frame
    assert crop_box(np.array([[0.0, 0.0, 200.0, 200.0]]), (400, 300), 1.8) == (0, 0, 300)  # shrunk to the frame
    x0, y0, side = crop_box(np.array([[-50.0, 20.0, 350.0, 420.0]]), (300, 600), 1.8)
    assert side == 400 and (x0, y0) == (-50, 20)  # the face itself is wider than the frame: padded black
    frame = np.full((600, 300, 3), 200, np.uint8)
    crop = crop_frame(frame, (x0, y0, side), 100)
    assert crop.shape == (100, 100, 3) and crop[:, :10].max() == 0 and crop[:, 20:70].min() == 200


def test_scene_cut_and_person_split():
    cuts = SceneCuts()
    still = background((160, 90), seed=0)
    moving = [np.roll(still, i, axis=1) for i in range(6)]
    assert not any(cuts(f) for f in moving)
    assert cuts(255 - moving[-1])  # another shot
    persons = [f"id{n:05d}" for n in range(10)]
    test = held_out_persons(persons, 0.2)
    assert len(test) == 2 and test == held_out_persons(list(reversed(persons)), 0.2)
    assert held_out_persons(["a", "b"], 0.01) and not held_out_persons(["a"], 0.5)
    assert held_out_persons(persons, 0.2, ["id00003"]) == {"id00003"}


@pytest.mark.slow
def test_train_py_runs_on_the_prepared_clips(prepared, tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_cli", REPO / "train.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    code = cli.main(["--config", str(REPO / "configs" / "tiny-cpu.yaml"), "--data", str(prepared[0]), "--max-steps",
                     "3", "--out", str(tmp_path / "run"), "--no-progress", "--device", "cpu", "--num-workers", "0"])
    assert code == 0 and "trained 3 steps" in capsys.readouterr().out
