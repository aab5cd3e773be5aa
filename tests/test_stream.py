"""The overlapped writer thread, the realtime stream (latency budget, frame dropping), the streaming
example and ``demo.py --stream`` on a shared clip."""
from __future__ import annotations

import json
import runpy
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dagan.errors import InputError
from dagan.inference.pipeline import BackgroundWriter, StreamStats, stream
from dagan.io.video import camera_input, open_camera

REPO = Path(__file__).resolve().parents[1]


def test_background_writer_writes_in_order_and_reraises():
    written = []
    with BackgroundWriter(written.append, depth=2) as writer:
        for i in range(10):
            writer.put(i)
    assert written == list(range(10)) and writer.written == 10

    def fail(item):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        with BackgroundWriter(fail) as writer:
            writer.put(1)


def test_unpaced_stream_animates_every_frame_in_order():
    stats = StreamStats()
    out = list(stream(lambda f: f * 2, range(12), stats=stats))
    assert [o.index for o in out] == list(range(12))
    assert [o.output for o in out] == [2 * i for i in range(12)]
    summary = stats.summary()
    assert summary["frames_in"] == summary["frames_out"] == 12
    assert summary["dropped_stale"] == summary["dropped_late"] == 0
    assert summary["latency_p95_ms"] >= summary["latency_p50_ms"] >= 0


def test_paced_stream_drops_frames_when_inference_is_slow():
    def slow(frame):
        time.sleep(0.05)  # 20 frames/s of inference against a 100 fps camera
        return frame

    stats = StreamStats()
    out = list(stream(slow, range(40), fps=100, stats=stats))
    indexes = [o.index for o in out]
    assert indexes == sorted(indexes) and len(set(indexes)) == len(indexes)
    assert stats.arrived == 40
    assert stats.dropped_stale > 0 and len(out) < 40
    assert len(out) + stats.dropped_stale + stats.dropped_late == 40
    assert indexes[-1] >= 30  # it kept up with the newest frames instead of falling behind


def test_latency_budget_drops_late_frames():
    def slow(frame):
        time.sleep(0.04)
        return frame

    stats = StreamStats()
    # frames queue behind a slow model (no stale dropping): those waiting > 10 ms are dropped, not animated
    out = list(stream(slow, range(10), budget_ms=10, drop_stale=False, fps=1000, stats=stats))
    assert stats.dropped_late > 0
    assert len(out) + stats.dropped_late == 10


def test_stream_reraises_reader_errors_and_checks_arguments():
    def broken():
        yield 0
        raise InputError("camera unplugged")

    with pytest.raises(InputError, match="camera unplugged"):
        list(stream(lambda f: f, broken()))
    with pytest.raises(InputError, match="fps"):
        list(stream(lambda f: f, [1], fps=0))


def test_camera_specs():
    if sys.platform.startswith("linux"):
        assert camera_input("0") == ("/dev/video0", ["-f", "v4l2"])
    assert camera_input("/dev/video3")[0] == "/dev/video3"
    assert camera_input("clip.mp4") is None
    with pytest.raises(InputError, match="not found"):
        next(open_camera("/dev/video97"))


def test_stream_example_reports_latency_on_shared_clip(shared_data, capsys, monkeypatch):
    clip = shared_data / "drv_lp_d0_256.mp4"
    monkeypatch.setattr(sys, "argv", ["stream_frames.py", "--driving_video", str(clip), "--max_frames", "6",
                                      "--warmup", "1", "--threads", "2"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / "examples" / "stream_frames.py"), run_name="__main__")
    assert exit_info.value.code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["frames_out"] == report["frames_in"] == 5  # the first frame is the source
    assert report["latency_p95_ms"] >= report["latency_p50_ms"] > 0
    assert report["frames_per_s"] > 0 and report["fast_path"] is True


def test_demo_stream_writes_every_time_slot(shared_data, tmp_path, tiny_model):
    from dagan.inference.cli import main
    from dagan.io.video import VideoReader, probe

    tiny_model.save_pretrained(tmp_path / "model")
    out = tmp_path / "live.mp4"
    code = main(["--stream", "--checkpoint", str(tmp_path / "model"), "--driving_video",
                 str(shared_data / "drv_lp_d0_256.mp4"), "--source_image", str(shared_data / "source_lp_d6frame0_256.png"), "--result_video", str(out), "--max_frames", "8",
                 "--latency_budget_ms", "0", "--size", "96", "--quiet"])
    assert code == 0
    info = probe(out)
    assert info["frames"] == 8  # dropped frames repeat the last result: the timeline is intact
    assert info["size"] == (96, 96)  # --size as in the file demo (one set-up for both)
    frames = list(VideoReader(out))
    assert np.std(frames[-1]) > 0


def test_demo_stream_errors_are_one_line(tmp_path, capsys):
    from dagan.inference.cli import main

    assert main(["--stream", "--result_video", str(tmp_path / "o.mp4")]) == 2
    assert "--stream needs --driving_video" in capsys.readouterr().err
    assert main(["--stream", "--driving_video", "0", "--paste_back", "--result_video", str(tmp_path / "o.mp4")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--paste_back need the file mode" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o.mp4").exists()


def test_demo_stream_crops_the_driving_face(shared_data, tmp_path):
    """``--stream --crop`` (default model, which renders the portrait at 256 px): the source and every animated
    driving frame are cropped around the detected face (injected detector)."""
    from dagan import faces
    from dagan.inference.cli import main
    from dagan.io.video import VideoReader, probe

    class HalfFrame:
        """The face is the top-left quarter of every frame: a crop there differs from the whole frame."""

        def __init__(self):
            self.calls = 0

        def detect(self, image, landmarks=False):
            self.calls += 1
            h, w = image.shape[:2]
            return [faces.Face(np.array([0.1 * w, 0.1 * h, 0.45 * w, 0.45 * h]), 0.99, None)]

    detector = HalfFrame()
    args = ["--stream", "--driving_video",
            str(shared_data / "drv_lp_d0_256.mp4"), "--source_image", str(shared_data / "source_lp_d6frame0_256.png"),
            "--max_frames", "6", "--latency_budget_ms", "0", "--quiet", "--dtype", "float32"]
    assert main(args + ["--crop", "--result_video", str(tmp_path / "crop.mp4")],
                detector_factory=lambda: detector) == 0
    assert detector.calls >= 2  # the source, then the driving frames that were animated
    assert main(args + ["--result_video", str(tmp_path / "plain.mp4")]) == 0
    cropped, plain = (np.stack(list(VideoReader(tmp_path / n))).astype(int) for n in ("crop.mp4", "plain.mp4"))
    assert probe(tmp_path / "crop.mp4")["frames"] == 6 and cropped.shape == plain.shape
    assert np.abs(cropped - plain).mean() > 10  # the portrait's top-left quarter, not the whole portrait


def test_pipeline_does_not_import_the_cli():
    """The overlap/streaming helpers are a layer under the CLI: no import cycle between the two."""
    import subprocess

    code = ("import sys, dagan.inference.pipeline; "
            "sys.exit(int('dagan.inference.cli' in sys.modules or 'dagan.app' in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0
