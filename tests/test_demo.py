"""demo.py end to end (in-process ``main(argv)`` with tiny models and a few frames; two subprocess runs
for the exit codes)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO
from dagan import faces
from dagan.errors import MissingWeightsError
from dagan.inference import cli
from dagan.inference.loading import DEFAULT_CHECKPOINT
from dagan.io.images import load_image, resize_image
from dagan.io.video import VideoReader, probe


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def no_detector_weights(tmp_path, monkeypatch):
    home = tmp_path / "torch_home"
    home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


class BoxDetector:
    """Injected detector: the face is a fixed fraction of the frame (or absent)."""

    def __init__(self, frac=(0.3, 0.2, 0.7, 0.6), found=True):
        self.frac, self.found, self.calls = frac, found, 0

    def detect(self, image, landmarks=False):
        self.calls += 1
        if not self.found:
            return []
        h, w = image.shape[:2]
        x0, y0, x1, y1 = self.frac
        box = np.array([x0 * w, y0 * h, x1 * w, y1 * h])
        lm = None
        if landmarks:  # a landmark shape that depends on the picture, so frames differ
            rng = np.random.default_rng(int(image.mean() * 10))
            lm = rng.normal(size=(68, 2)) * 10 + box[:2]
        return [faces.Face(box, 0.99, lm)]


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_default_demo_runs_offline_without_detector(tmp_path, monkeypatch, capsys, no_detector_weights):
    monkeypatch.chdir(tmp_path)
    def no_backend(*args, **kwargs):  # no face backend installed: the default runs, unguided
        raise MissingWeightsError("no face backend")

    from dagan.inference.pipeline import inputs

    monkeypatch.setattr(inputs, "load_face_backend", no_backend)
    assert cli.main(["--max-frames", "4"]) == 0
    info = probe(tmp_path / "result.mp4")
    assert info["frames"] == 4 and info["fps"] == 25 and info["audio_codec"] is None
    assert info["size"] == (256, 256)  # the default output size, whatever size the network runs at
    out = capsys.readouterr()
    assert "result.mp4" in out.out
    if not DEFAULT_CHECKPOINT.exists():
        assert "untrained" in out.err
    assert _listing(tmp_path) == ["result.mp4", "torch_home"]


def test_official_files_shared_clip_audio_depth_and_side_by_side(tmp_path, reference_dir, shared_data):
    result, depth = tmp_path / "out.mp4", tmp_path / "depth.npz"
    driving = shared_data / "drv_lp_d9_audio_256.mp4"
    rc = cli.main(["--config", str(reference_dir / "config.yaml"), "--checkpoint",
                   str(reference_dir / "checkpoint.pth.tar"), "--source_image",
                   str(shared_data / "source_lp_d6frame0_256.png"), "--driving_video", str(driving),
                   "--result_video", str(result), "--max_frames", "4", "--save-depth", str(depth), "--side-by-side",
                   "--batch-size", "2", "--dtype", "float32", "--quiet"])  # fp32: compared with the plain model
    assert rc == 0
    info = probe(result)
    assert info["frames"] == 4 and info["fps"] == 25 and info["size"] == (4 * 256, 256)  # panels at --size
    assert info["audio_codec"] == "aac"
    saved = np.load(depth)["depth"]
    assert saved.shape == (4, 64, 64) and saved.dtype == np.float16
    # the exported depth is the official depth network's output for those frames (depth files found next
    # to the checkpoint)
    from dagan import DaGAN

    model = DaGAN.from_official(reference_dir / "config.yaml", reference_dir / "checkpoint.pth.tar",
                                depth_encoder=reference_dir / "depth_encoder.pth",
                                depth_decoder=reference_dir / "depth_decoder.pth")
    frames = [resize_image(f, 64) for f in VideoReader(driving, max_frames=4)]
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        expected = model.estimate_depth(x)[:, 0].numpy()
    assert np.abs(saved.astype(np.float32) - expected).max() < 2e-3


def test_crop_and_paste_back_keep_source_resolution(tmp_path, shared_data):
    result = tmp_path / "pasted.mp4"
    source = shared_data / "source_astronaut.png"
    detector = BoxDetector(frac=(0.4, 0.3, 0.6, 0.5))  # crop box on the astronaut: x 164..348, y 112..296
    rc = cli.main(["--source_image", str(source), "--driving_video", str(shared_data / "drv_lp_d13_orig_720x1280.mp4"),
                   "--result_video", str(result), "--crop", "--paste-back", "--max-frames", "3", "--quiet",
                   "--guide", "off", "--motion", "keypoints"],
                  detector_factory=lambda: detector)
    assert rc == 0 and detector.calls == 1 + 3
    frames = list(VideoReader(result))
    full = load_image(source)
    assert len(frames) == 3 and frames[0].shape == full.shape
    def diff(a, b):
        return np.abs(a.astype(int) - b.astype(int)).mean()

    box, outside = (slice(112, 296), slice(164, 348)), (slice(0, 100), slice(0, 150))
    # outside the crop box the source is unchanged (up to H.264 rounding) and still over time
    assert diff(frames[0][outside], full[outside]) < 6 and diff(frames[2][outside], frames[0][outside]) < 0.5
    # inside it is the generated face, rendered at the crop's full resolution (the first frame, the anchor of
    # relative motion, stays close to the source photo) and moving
    assert diff(frames[0][box], full[box]) < 12
    assert diff(frames[2][box], frames[0][box]) > 1.0


def test_find_best_frame_anchors_on_the_chosen_frame(tmp_path, monkeypatch):
    chosen = {}
    from dagan import Animator
    from dagan.inference.pipeline import inputs

    monkeypatch.setattr(inputs, "find_best_frame", lambda det, src, frames: chosen.setdefault("index", 2))
    anchors = []
    original = Animator.set_anchor

    def record(self, frame, landmarks=None):
        anchors.append(frame.copy())
        return original(self, frame, landmarks)

    monkeypatch.setattr(Animator, "set_anchor", record)
    rc = cli.main(["--find_best_frame", "--result_video", str(tmp_path / "r.mp4"), "--max-frames", "4", "--quiet",
                   "--motion", "keypoints"], detector_factory=BoxDetector)  # keypoints: the turning built-in driver
    assert rc == 0 and chosen["index"] == 2
    from dagan.inference.synthetic import synthetic_driving

    size = anchors[0].shape[0]
    assert np.array_equal(anchors[0], list(synthetic_driving(4, size=size))[2])


def test_error_cases_exit_2_with_one_line_and_no_output(tmp_path, shared_data, capsys, no_detector_weights):
    out = tmp_path / "out"
    out.mkdir()
    result = str(out / "r.mp4")
    cases = [
        (["--driving_video", str(shared_data / "corrupt.mp4")], "truncated", None),  # found before animating
        (["--source_image", str(shared_data / "no_face.png"), "--crop"], "--no-crop", lambda: BoxDetector(found=False)),
        (["--source_image", str(shared_data / "no_face.png"), "--crop", "--face_backend", "face-alignment"],
         "2DFAN4-11f355bf06.pth.tar", None),
        (["--source_image", str(tmp_path / "missing.png")], "not found", None),
        (["--driving_video", str(shared_data / "source_astronaut_256.png")], "is an image", None),
    ]
    for argv, message, factory in cases:
        assert cli.main(argv + ["--result_video", result, "--quiet"], factory) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error:") and message in err[-1], (argv, err)
        assert "Traceback" not in "\n".join(err)
        assert _listing(out) == [], argv


def test_unknown_result_extension_exits_2_before_any_work(tmp_path, capsys, monkeypatch):
    def must_not_run(*args, **kwargs):
        raise AssertionError("the demo started working on an output it cannot write")

    monkeypatch.setattr(cli, "run", must_not_run)
    result = tmp_path / "out.txt"
    assert cli.main(["--result_video", str(result), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --result_video") and ".txt" in err[0]
    assert not result.exists() and list(tmp_path.iterdir()) == []


def test_checkpoint_that_does_not_fit_the_config(tmp_path, reference_dir, capsys):
    import yaml

    cfg = yaml.safe_load((reference_dir / "config.yaml").read_text())
    cfg["model_params"]["kp_detector_params"]["block_expansion"] = 8
    (tmp_path / "wrong.yaml").write_text(yaml.safe_dump(cfg))
    rc = cli.main(["--config", str(tmp_path / "wrong.yaml"), "--checkpoint", str(reference_dir / "checkpoint.pth.tar"),
                   "--result_video", str(tmp_path / "r.mp4"), "--quiet"])
    assert rc == 2 and "does not fit" in capsys.readouterr().err
    assert not (tmp_path / "r.mp4").exists()


def test_existing_result_is_not_overwritten(tmp_path, capsys):
    result = tmp_path / "r.mp4"
    result.write_bytes(b"precious")
    assert cli.main(["--result_video", str(result), "--max-frames", "2", "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err and result.read_bytes() == b"precious"
    assert cli.main(["--result_video", str(result), "--max-frames", "2", "--quiet", "--overwrite"]) == 0
    assert probe(result)["frames"] == 2


def test_demo_script_exit_codes(tmp_path):
    cmd = [sys.executable, str(REPO / "demo.py"), "--source_image", str(tmp_path / "nope.png"),
           "--result_video", str(tmp_path / "r.mp4")]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 2 and len(lines) == 1 and "nope.png" in lines[0], run.stderr
    assert _listing(tmp_path) == []


def test_sigterm_stops_the_demo_without_leaving_partial_files(tmp_path, shared_data):
    """``kill`` (SIGTERM) mid-video: exit status 143, one line, and the partial result is removed."""
    import signal
    import time

    cmd = [sys.executable, str(REPO / "demo.py"), "--driving_video", str(shared_data / "drv_lp_d6_audio_256.mp4"),
           "--result_video", str(tmp_path / "r.mp4"), "--quiet"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not any(p.name.startswith(".r.mp4.partial") for p in tmp_path.iterdir()):
        assert proc.poll() is None and time.time() < deadline, "the demo ended before it wrote anything"
        time.sleep(0.2)
    time.sleep(1.0)  # frames are being animated and encoded
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 143 and lines == ["terminated"], err
    assert _listing(tmp_path) == []


def test_debug_shows_the_exception(tmp_path):
    from dagan.errors import InputError

    with pytest.raises(InputError, match="nope.png"):
        cli.main(["--source_image", str(tmp_path / "nope.png"), "--result_video", str(tmp_path / "r.mp4"), "--debug"])


def test_depth_checkpoint_flag_forms(tmp_path, reference_dir, capsys):
    base = ["--config", str(reference_dir / "config.yaml"), "--checkpoint", str(reference_dir / "checkpoint.pth.tar"),
            "--max-frames", "2", "--quiet"]
    files = [str(reference_dir / "depth_encoder.pth"), str(reference_dir / "depth_decoder.pth")]
    assert cli.main(base + ["--depth-checkpoint", *files, "--result_video", str(tmp_path / "a.mp4")]) == 0
    assert cli.main(base + ["--depth_checkpoint", str(reference_dir), "--result_video", str(tmp_path / "b.mp4")]) == 0
    assert np.array_equal(np.stack(list(VideoReader(tmp_path / "a.mp4"))), np.stack(list(VideoReader(tmp_path / "b.mp4"))))
    assert cli.main(base + ["--depth_checkpoint", files[0], "--result_video", str(tmp_path / "c.mp4")]) == 2
    assert "not a folder" in capsys.readouterr().err and not (tmp_path / "c.mp4").exists()


def test_default_batch_size_follows_the_network_size():
    """demo.py's default: 4 driving frames per pass for small networks, 1 for 256 px ones (peak memory of the
    official-size demo: 877 MiB at 1 vs 1034 MiB at 4, same speed); an explicit --batch_size always wins."""
    from dagan.inference.cli import build_parser
    from dagan.inference.pipeline import default_batch_size

    assert build_parser().parse_args([]).batch_size is None
    assert default_batch_size(None, 64) == 4 and default_batch_size(None, 128) == 4
    assert default_batch_size(None, 256) == 1
    assert default_batch_size(3, 256) == 3 and default_batch_size(1, 64) == 1
