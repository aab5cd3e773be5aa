"""The evaluation protocols and report end to end, at 64 px with the tiny model and injected extractors."""
from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from dagan.errors import InputError
from dagan.evaluation.evaluate import BASELINE, EvalSettings, build_metric_suite, run_evaluation
from dagan.evaluation.report import FILES, public_report, write_report
from conftest import REPO

SIZE = 64


def _smooth_frames(seed: int, count: int, shift: int = 3) -> list:
    """``count`` 64x64 uint8 frames of a smooth random pattern drifting by ``shift`` px per frame."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, (3, 12, 12)).astype(np.float32)
    big = torch.nn.functional.interpolate(torch.from_numpy(base)[None], size=(SIZE * 2, SIZE * 2), mode="bicubic",
                                          align_corners=False)[0].clamp(0, 255).byte().permute(1, 2, 0).numpy()
    return [np.ascontiguousarray(big[i * shift:i * shift + SIZE, i * shift:i * shift + SIZE]) for i in range(count)]


def _write_video(folder, frames) -> None:
    folder.mkdir(parents=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{i:07d}.png")


@pytest.fixture
def dataset(tmp_path):
    """root/test with a moving video (4 frames), a static one (3 identical frames) and a short one (2 frames)."""
    test = tmp_path / "root" / "test"
    _write_video(test / "a_moving.mp4", _smooth_frames(0, 4))
    _write_video(test / "b_static.mp4", [_smooth_frames(1, 1)[0]] * 3)
    _write_video(test / "c_short.mp4", _smooth_frames(2, 2, shift=5))
    return tmp_path / "root"


def _mean_brightness_landmarks(frames):
    """A fake 68-point detector: every point sits at 100 x mean intensity; an all-dark frame has no face."""
    out = []
    for f in frames:
        m = f.double().mean().item()
        out.append(None if m < 0.02 else np.full((68, 2), 100.0 * m))
    return out


def _mean_colour_embedding(frames):
    return frames.mean(dim=(2, 3)) + 0.1


def _settings(**kw):
    kw.setdefault("batch_size", 3)
    return EvalSettings(**kw)


def test_reconstruction_report_and_means(dataset, tiny_model, tmp_path):
    settings = _settings()
    suite = build_metric_suite("reconstruction", settings, landmarks=_mean_brightness_landmarks,
                               identity=_mean_colour_embedding, lpips="off")
    report = run_evaluation({"tiny": tiny_model}, dataset, settings, suite=suite)
    assert report["frames"] == 9 and [v["video"] for v in report["videos"]] == ["a_moving", "b_static", "c_short"]
    assert report["metrics"]["lpips"]["status"].startswith("skipped: disabled")
    assert report["metrics"]["ssim"]["data_range"] == 1.0

    # identical frames: the repeat-source baseline on the static video is exact
    static = report["videos"][1]["metrics"][BASELINE]
    assert static["l1"] == 0.0 and static["ssim"] == pytest.approx(1.0, abs=1e-12)
    assert static["psnr"] == settings.psnr_max_db and static["akd"] == 0.0 and static["aed"] == pytest.approx(0)

    # the baseline against the moving video, recomputed from the PNG frames
    frames = [np.asarray(Image.open(p), dtype=np.float64) / 255
              for p in sorted((dataset / "test" / "a_moving.mp4").iterdir())]
    l1 = [np.abs(frames[0] - f).mean() for f in frames]
    akd = [abs(100 * frames[0].mean() - 100 * f.mean()) for f in frames]
    row = report["videos"][0]["metrics"][BASELINE]
    assert row["l1"] == pytest.approx(np.mean(l1), rel=1e-6)
    assert row["akd"] == pytest.approx(np.mean(akd), rel=1e-6)
    assert report["videos"][0]["metrics"]["tiny"]["l1"] > 0

    # frame-pooled mean over all 9 frames vs mean of the 3 per-video means
    out = write_report(report, tmp_path / "report")
    rows = list(csv.DictReader(open(out["frames.csv"])))
    assert len(rows) == 9 * 2
    for system in ("tiny", BASELINE):
        vals = [float(r["l1"]) for r in rows if r["system"] == system]
        per_video = [np.mean([float(r["l1"]) for r in rows if r["system"] == system and r["video"] == v])
                     for v in ("a_moving", "b_static", "c_short")]
        assert report["overall"][system]["l1"]["frame_mean"] == pytest.approx(np.mean(vals), rel=1e-5)
        assert report["overall"][system]["l1"]["video_mean"] == pytest.approx(np.mean(per_video), rel=1e-5)
    assert report["overall"][BASELINE]["l1"]["frame_mean"] != pytest.approx(
        report["overall"][BASELINE]["l1"]["video_mean"])

    # --exclude-source-frame: frame 0 of each video leaves the means, nothing else changes
    suite_wo = build_metric_suite("reconstruction", _settings(exclude_source_frame=True), lpips="off",
                                  landmarks="off")
    without = run_evaluation({}, dataset, suite_wo.settings, suite=suite_wo, image_size=SIZE)
    assert without["overall"][BASELINE]["l1"]["frames"] == 9 - 3
    assert without["overall"][BASELINE]["l1"]["frame_mean"] == pytest.approx(np.sum(
        [float(r["l1"]) for r in rows if r["system"] == BASELINE]) / 6, rel=1e-5)

    # every file is written and parses
    assert set(out) == set(FILES) and all(os.path.getsize(p) > 0 for p in out.values())
    saved = json.load(open(out["metrics.json"]))
    assert saved == json.loads(json.dumps(public_report(report)))
    table = list(csv.DictReader(open(out["metrics.csv"])))
    assert len(table) == 3 * 2 + 2 * 2 and {r["system"] for r in table} == {"tiny", BASELINE}
    for name in ("metrics.png", "worst_videos.png"):
        with Image.open(out[name]) as im:
            assert im.format == "PNG" and im.size[0] > 100


def test_landmark_misses_are_skipped_and_counted(tmp_path):
    test = tmp_path / "root" / "test"
    frames = _smooth_frames(3, 3)
    frames[1] = np.zeros_like(frames[1])  # no "face" in the ground truth here
    _write_video(test / "v.mp4", frames)
    settings = _settings(batch_size=2)
    suite = build_metric_suite("reconstruction", settings, landmarks=_mean_brightness_landmarks, lpips="off",
                               identity="off")
    report = run_evaluation({}, tmp_path / "root", settings, suite=suite, image_size=SIZE)
    assert report["videos"][0]["no_face_gt"] == 1
    assert report["overall"][BASELINE]["akd"]["frames"] == 2
    assert report["overall"][BASELINE]["akd"]["frames_skipped"] == 1
    assert "aed" not in report["overall"][BASELINE]
    assert report["metrics"]["aed"]["status"].startswith("skipped: disabled")


def test_pairs_protocol_uses_the_path_after_test(dataset):
    pairs = dataset / "pairs.csv"
    prefix = "/data/x/vox1_frames/test/"
    rows = [("a_moving.mp4/0000003.png", "a_moving.mp4/0000001.png"), ("c_short.mp4/0000000.png", "c_short.mp4/0000001.png"),
            ("a_moving.mp4/0000000.png", "a_moving.mp4/0000002.png")]
    pairs.write_text("source,driving,frame\n" + "".join(f"{prefix}{s},{prefix}{d}\n" for s, d in rows))
    settings = _settings()
    suite = build_metric_suite("reconstruction", settings, landmarks="off", lpips="off")
    report = run_evaluation({}, dataset / "test", settings, pairs=pairs, suite=suite, image_size=SIZE)
    assert report["protocol"] == "pairs/reconstruction" and report["items"] == 3
    assert [v["video"] for v in report["videos"]] == ["a_moving", "c_short"]
    a = sorted((dataset / "test" / "a_moving.mp4").iterdir())
    img = [np.asarray(Image.open(p), dtype=np.float64) / 255 for p in a]
    expected = np.mean([np.abs(img[3] - img[1]).mean(), np.abs(img[0] - img[2]).mean()])
    assert report["videos"][0]["metrics"][BASELINE]["l1"] == pytest.approx(expected, rel=1e-6)


def test_cross_identity_keeps_identity_for_the_baseline(dataset, tiny_model):
    settings = _settings(protocol="cross-identity", max_videos=2)
    suite = build_metric_suite("cross-identity", settings, landmarks=_mean_brightness_landmarks,
                               identity=_mean_colour_embedding)
    report = run_evaluation({"tiny": tiny_model}, dataset, settings, suite=suite)
    assert report["items"] == 2 and set(report["overall"]["tiny"]) == {"csim", "akd", "akd_motion"}
    assert report["overall"][BASELINE]["csim"]["frame_mean"] == pytest.approx(1.0)
    assert report["overall"]["tiny"]["csim"]["frame_mean"] < 1.0
    # b_static (3 frames) drives a_moving's frame 0: the baseline's AKD is the brightness gap, by construction
    src = _smooth_frames(0, 1)[0].astype(np.float64) / 255
    drv = _smooth_frames(1, 1)[0].astype(np.float64) / 255
    assert report["videos"][0]["metrics"][BASELINE]["akd"] == pytest.approx(abs(100 * src.mean() - 100 * drv.mean()),
                                                                            rel=1e-6)
    # a_moving drives b_static's frame 0: the frozen baseline misses all of the driving landmarks' motion
    moving = [f.astype(np.float64).mean() / 255 for f in _smooth_frames(0, 4)]
    expected = np.mean([abs(100 * m - 100 * moving[0]) for m in moving])
    assert report["videos"][1]["metrics"][BASELINE]["akd_motion"] == pytest.approx(expected, rel=1e-6)
    assert report["videos"][0]["metrics"][BASELINE]["akd_motion"] == 0.0  # static driving: nothing to follow


def test_saved_frames_score_what_was_scored(dataset, tiny_model, tmp_path):
    settings = _settings(max_videos=1, max_frames=3, batch_size=2)
    suite = build_metric_suite("reconstruction", settings, landmarks="off", lpips="off")
    report = run_evaluation({"tiny": tiny_model}, dataset, settings, suite=suite, frames_dir=tmp_path / "frames")
    saved = sorted((tmp_path / "frames" / "tiny" / "a_moving").iterdir())
    gt = sorted((dataset / "test" / "a_moving.mp4").iterdir())[:3]
    assert [p.name for p in saved] == ["0000000.png", "0000001.png", "0000002.png"]
    l1 = [np.abs(np.asarray(Image.open(p), dtype=np.float64) - np.asarray(Image.open(g), dtype=np.float64)).mean()
          / 255 for p, g in zip(saved, gt)]
    assert report["_results"][0]["values"]["tiny"]["l1"] == pytest.approx(l1, rel=1e-6)
    assert len(list((tmp_path / "frames" / BASELINE / "a_moving").iterdir())) == 3


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # imageio tries its legacy plugins on the garbage file
def test_bad_videos_stop_or_are_listed(dataset):
    bad = dataset / "test" / "bad.mp4"
    _write_video(bad, _smooth_frames(4, 2))
    (bad / "0000001.png").write_bytes(b"not a png")
    settings = _settings()
    suite = build_metric_suite("reconstruction", settings, landmarks="off", lpips="off")
    with pytest.raises(InputError, match="0000001.png"):
        run_evaluation({}, dataset, settings, suite=suite, image_size=SIZE)
    settings = _settings(skip_bad_videos=True)
    report = run_evaluation({}, dataset, settings, suite=suite, image_size=SIZE)
    assert [s["video"] for s in report["skipped_items"]] == ["bad"]
    assert [v["video"] for v in report["videos"]] == ["a_moving", "b_static", "c_short"]


def test_same_seed_same_numbers(dataset, tiny_model):
    settings = _settings(max_videos=1, max_frames=2, seed=3)
    suite = build_metric_suite("reconstruction", settings, landmarks="off", lpips="off")
    first = run_evaluation({"tiny": tiny_model}, dataset, settings, suite=suite)
    second = run_evaluation({"tiny": tiny_model}, dataset, settings, suite=suite)
    assert first["overall"] == second["overall"] and first["videos"] == second["videos"]


def _cli(args, env=None, timeout=240):
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_cli_two_process_torchrun_matches_one_process(dataset, tiny_model, tmp_path):
    ckpt = tiny_model.save_pretrained(tmp_path / "tiny")
    second = tiny_model.save_pretrained(tmp_path / "tiny_b")
    common = ["--checkpoint", ckpt, "--checkpoint-b", second, "--data", str(dataset), "--landmarks", "off",
              "--lpips", "off", "--batch-size", "2", "--quiet", "--no-figures", "--device", "cpu"]
    one = _cli(["-m", "dagan.evaluate", *common, "--out", str(tmp_path / "r1")])
    assert one.returncode == 0, one.stderr
    two = _cli(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
                "-m", "dagan.evaluate", *common, "--out", str(tmp_path / "r2")])
    assert two.returncode == 0, two.stderr
    r1 = json.load(open(tmp_path / "r1" / "metrics.json"))
    r2 = json.load(open(tmp_path / "r2" / "metrics.json"))
    assert r1["run"]["world_size"] == 1 and r2["run"]["world_size"] == 2
    r1.pop("run"), r2.pop("run")
    assert r1 == r2
    assert set(r1["systems"]) == {"tiny", "tiny_b", BASELINE}
    assert r1["overall"]["tiny"] == r1["overall"]["tiny_b"]  # the same weights under two names
    for name in ("metrics.csv", "frames.csv"):
        assert (tmp_path / "r1" / name).read_text() == (tmp_path / "r2" / name).read_text()


def test_cli_user_errors_are_one_line(tmp_path, capsys):
    from dagan.cliutil import run_cli
    from dagan.evaluate import main

    code = run_cli(main, ["--checkpoint", str(tmp_path / "missing"), "--data", str(tmp_path)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and "missing" in lines[0]
    code = run_cli(main, ["--checkpoint", str(tmp_path), "--data", str(tmp_path), "--max-videos", "0"])
    assert code == 2 and "max-videos must be >= 1" in capsys.readouterr().err


def test_shared_clips_reconstruction(shared_data, tmp_path):
    root = tmp_path / "root" / "test"
    root.mkdir(parents=True)
    for name in ("drv_lp_d0_256.mp4", "drv_lp_d13_256.mp4"):
        os.symlink(shared_data / name, root / name)
    settings = _settings(max_frames=3)
    suite = build_metric_suite("reconstruction", settings, landmarks="off", lpips="off")
    report = run_evaluation({}, root.parent, settings, suite=suite, image_size=SIZE)
    assert report["frames"] == 6 and report["image_size"] == SIZE
    assert [v["video"] for v in report["videos"]] == ["drv_lp_d0_256", "drv_lp_d13_256"]
    for r in report["_results"]:  # frame 0 is the source itself; later real frames differ a little
        l1 = r["values"][BASELINE]["l1"]
        assert l1[0] == 0.0 and 0 < l1[1] < 0.1 and 0 < l1[2] < 0.1
