"""The offline dlib face backend with its real models (installed by the faces/test extras), on the shared
portraits and clips: detection, landmarks, identity, crop + paste-back, the demo's --crop and the
cross-identity face report."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from dagan.errors import InputError, MissingWeightsError
from dagan.evaluation import face_metrics as FM
from dagan import faces

dlib = pytest.importorskip("dlib", reason="the faces extra (dlib-bin) is not installed")
if faces.dlib_model_dir() is None:
    pytest.skip("the faces extra (face_recognition_models) is not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def backend():
    return faces.load_face_backend("dlib")


def _rgb(path, size=None) -> np.ndarray:
    image = Image.open(path).convert("RGB")
    if size is not None:
        image = image.resize((size, size), Image.LANCZOS)
    return np.asarray(image)


def test_detects_the_face_in_a_portrait_and_none_in_a_faceless_image(backend, shared_data):
    found = backend.detect(_rgb(shared_data / "source_astronaut_256.png"), landmarks=True)
    assert len(found) == 1
    x0, y0, x1, y1 = found[0].box
    # the crop was made around the face: the box sits in the middle third and covers a sizeable part
    assert 40 < (x0 + x1) / 2 < 216 and 40 < (y0 + y1) / 2 < 216 and 60 < x1 - x0 < 200
    lm = found[0].landmarks
    assert lm.shape == (68, 2)
    assert lm[36:42, 0].mean() < lm[30, 0] < lm[42:48, 0].mean()  # nose between the eyes (left-right)
    assert lm[36:48, 1].mean() < lm[30, 1] < lm[62, 1]  # eyes above nose tip above inner lips
    assert backend.detect(_rgb(shared_data / "no_face.png")) == []


def test_full_size_photo_is_detected_on_a_downscaled_copy_in_full_resolution_pixels(backend, shared_data):
    small = _rgb(shared_data / "source_astronaut.png")  # 512 px
    big = np.asarray(Image.fromarray(small).resize((1536, 1536), Image.BICUBIC))
    box_small = backend.detect(small)[0].box
    box_big = backend.detect(big)[0].box
    assert box_big[2] > 1000 or box_big[0] > 300  # full-resolution coordinates, not those of the copy
    scaled = box_big / 3.0  # HOG pyramids differ between scales: the same face within 10 % of its size
    size = box_small[2] - box_small[0]
    np.testing.assert_allclose((scaled[:2] + scaled[2:]) / 2, (box_small[:2] + box_small[2:]) / 2, atol=0.1 * size)
    assert abs((scaled[2] - scaled[0]) / size - 1) < 0.15


def test_tiny_frames_are_upscaled_for_detection(backend, shared_data):
    tiny = _rgb(shared_data / "source_astronaut_256.png", 64)
    found = backend.detect(tiny, landmarks=True)
    assert len(found) == 1 and found[0].box[2] <= 64.5 and found[0].landmarks.max() < 64


def test_identity_embedding_matches_a_person_and_separates_people(backend, shared_data):
    def embedding(image):
        return backend.detect(image, embedding=True)[0].embedding

    astronaut = embedding(_rgb(shared_data / "source_astronaut_256.png"))
    assert astronaut.shape == (128,)
    resized = embedding(_rgb(shared_data / "source_astronaut.png"))  # the same photo at 512 px, uncropped
    other = embedding(_rgb(shared_data / "source_lp_d6frame0_256.png"))
    third = embedding(_rgb(shared_data / "source_lp_d10frame0_256.png"))
    assert np.linalg.norm(astronaut - resized) < 0.2
    assert np.linalg.norm(astronaut - other) > 0.6 and np.linalg.norm(other - third) > 0.6


def test_landmark_motion_of_a_clip_against_itself_is_zero(backend, shared_data):
    from dagan.io.video import VideoReader

    frames = np.stack(list(VideoReader(shared_data / "drv_lp_d9_audio_256.mp4", max_frames=12)))
    analyzer = FM.FaceAnalyzer(backend)
    source = frames[0]
    tracker = FM.MotionTracker(source, analyzer([source])[0])
    found = analyzer(list(frames))
    values = tracker.update(frames, found, found)
    assert all(v == 0.0 for v in values["motion_error"]) and all(v == 0.0 for v in values["scale_drift"])
    assert values["face_detected"] == [1.0] * len(frames)
    assert max(values["id_dist_source"]) < 0.6 and values["id_dist_driving"] == [0.0] * len(frames)
    mouth = tracker.finish()["mouth_corr"][0]
    assert mouth is None or mouth == pytest.approx(1.0)
    # a frozen result (the first frame repeated) against the moving clip: the error is the clip's own motion
    frozen = FM.MotionTracker(source, found[0]).update(np.repeat(frames[:1], len(frames), 0),
                                                       [found[0]] * len(frames), found)
    assert frozen["motion_error"][0] == 0.0 and max(frozen["motion_error"][1:]) > 0.005
    assert analyzer.frames_analysed == len(frames)  # each distinct frame analysed once (content cache)


def test_crop_and_paste_back_round_trip_returns_the_photo(backend, shared_data):
    photo = _rgb(shared_data / "source_astronaut.png")
    face = faces.largest_face(backend, photo, "astronaut")
    box = faces.square_box(face.box, photo.shape[:2])
    crop = faces.crop_square(photo, box, 256)
    back = faces.paste_back(photo, crop, box)  # zero motion: the model's output would be the crop itself
    x0, y0, side = (int(round(v)) for v in box)
    region = slice(y0, y0 + side), slice(x0, x0 + side)
    err = back[region].astype(np.float64) - photo[region]
    psnr = 10 * np.log10(255.0 ** 2 / max((err ** 2).mean(), 1e-12))
    assert psnr > 30.0  # JPEG-level error from two bicubic resamplings
    outside = np.ones(photo.shape[:2], bool)
    outside[region] = False
    assert np.array_equal(back[outside], photo[outside])


def test_face_index_picks_faces_from_the_left(backend, shared_data):
    a = _rgb(shared_data / "source_astronaut_256.png")
    b = _rgb(shared_data / "source_lp_d6frame0_256.png", 200)
    canvas = np.full((256, 512, 3), 255, np.uint8)
    canvas[:, :256] = a
    canvas[28:228, 300:500] = b
    found = backend.detect(canvas)
    assert len(found) == 2
    left = faces.select_face(found, 0)
    right = faces.select_face(found, 1)
    assert left.box[0] < 256 <= right.box[0]
    assert faces.select_face(found, "largest").size == max(f.size for f in found)
    with pytest.raises(InputError, match="2 face"):
        faces.select_face(found, 2)


def test_missing_extra_is_one_line_naming_it(monkeypatch):
    from dagan.faces import backends

    monkeypatch.setattr(backends, "dlib_model_dir", lambda: None)
    with pytest.raises(MissingWeightsError, match="face_recognition_models"):
        faces.load_face_backend("dlib")
    monkeypatch.setattr(backends, "missing_face_alignment_files", lambda: list(faces.FACE_ALIGNMENT_FILES))
    with pytest.raises(MissingWeightsError, match="face_recognition_models") as info:
        faces.load_face_backend("auto")
    assert "\n" not in str(info.value)


def test_demo_crop_and_paste_back_offline_writes_full_resolution(tmp_path, shared_data, capsys):
    from dagan.inference import cli

    out = tmp_path / "out.mp4"
    code = cli.main(["--source_image", str(shared_data / "source_astronaut.png"), "--crop", "--paste_back",
                     "--result_video", str(out), "--max_frames", "4", "--quiet"])
    assert code == 0
    from dagan.io.video import VideoReader

    frames = np.stack(list(VideoReader(out)))
    assert frames.shape == (4, 512, 512, 3)
    photo = _rgb(shared_data / "source_astronaut.png").astype(np.float64)
    # away from the face the photo is kept; the face region is the animated crop
    assert np.abs(frames[0, :40, :40] - photo[:40, :40]).mean() < 6.0
    face = faces.load_face_backend("dlib").detect(frames[-1])
    assert face, "the pasted-back result must still show a face"


def test_demo_crop_on_a_faceless_image_exits_2_with_one_line(tmp_path, shared_data, capsys):
    from dagan.inference import cli

    code = cli.main(["--source_image", str(shared_data / "no_face.png"), "--crop", "--result_video",
                     str(tmp_path / "x.mp4"), "--max_frames", "2", "--quiet"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "no face" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x.mp4").exists()


def test_cross_identity_report_has_every_face_metric(tmp_path, shared_data):
    from dagan import DaGAN
    from dagan.evaluation.evaluate import BASELINE, EvalSettings, build_metric_suite, run_evaluation
    from dagan.inference.loading import DEFAULT_CHECKPOINT

    if not DEFAULT_CHECKPOINT.exists():
        pytest.skip("the shipped model is not in this checkout")
    model = DaGAN.from_pretrained(DEFAULT_CHECKPOINT)
    settings = EvalSettings(protocol="cross-identity", max_frames=6, batch_size=3, videos=["drv_lp_d0_256"],
                            sources=[str(shared_data / "source_astronaut_256.png"),
                                     str(shared_data / "source_lp_d10frame0_256.png")],
                            motion="landmarks", still_frames=4)
    suite = build_metric_suite("cross-identity", settings, lpips="off")
    assert not suite.skipped, suite.skipped
    report = run_evaluation({"small": model}, shared_data, settings, suite=suite)
    assert report["items"] == 2 and [v["video"] for v in report["videos"]] == [
        "source_astronaut_256<-drv_lp_d0_256", "source_lp_d10frame0_256<-drv_lp_d0_256"]
    base = report["overall"][BASELINE]
    for m in FM.MOTION_METRICS:
        assert report["metrics"][m]["status"] == "ok" and report["metrics"][m]["backend"] == "dlib"
    # the frozen baseline is the source itself: found, same person, as sharp as the source
    assert base["face_detected"]["frame_mean"] == 1.0 and base["id_match_source"]["frame_mean"] == 1.0
    assert base["sharpness"]["frame_mean"] == pytest.approx(1.0, abs=1e-6)
    assert base["still_sharpness"]["frame_mean"] == pytest.approx(1.0, abs=1e-6)
    # the landmark stage with a still driver returns the portrait: as sharp as it, one value per pair
    small = report["overall"]["small"]["still_sharpness"]
    assert small["frames"] == 2 and small["frame_mean"] == pytest.approx(1.0, abs=0.02)
    assert report["metrics"]["still_sharpness"]["per"].startswith("item")
    assert base["scale_drift"]["frame_mean"] >= 0.0 and base["motion_error"]["frame_mean"] > 0.0
    assert report["overall"]["small"]["motion_ratio"]["frame_mean"] is not None
    assert json.dumps(report["metrics"])  # JSON-serialisable status with the backend named


def test_still_driver_check_catches_a_system_that_blurs(shared_data):
    import torch.nn.functional as F

    from dagan.evaluation.evaluate import EvalSettings, build_metric_suite, still_driver_sharpness
    from dagan.io.images import image_to_tensor, read_image

    settings = EvalSettings(protocol="cross-identity", batch_size=2, still_frames=3)
    suite = build_metric_suite("cross-identity", settings, lpips="off", identity="off")
    source = image_to_tensor(read_image(shared_data / "source_lp_d6frame0_256.png"))

    class Blur:
        def start(self, source, first, relative):
            self.source = source

        def __call__(self, driving):
            out = F.avg_pool2d(self.source, 5, stride=1, padding=2, count_include_pad=False)
            return out.expand(driving.shape[0], -1, -1, -1)

    class Copy(Blur):
        def __call__(self, driving):
            return self.source.expand(driving.shape[0], -1, -1, -1)

    assert still_driver_sharpness(Copy(), source, suite, 3) == pytest.approx(1.0, abs=1e-6)
    assert still_driver_sharpness(Blur(), source, suite, 3) < 0.5
    off = build_metric_suite("cross-identity", EvalSettings(protocol="cross-identity", still_frames=0), lpips="off",
                             identity="off")
    assert "still_sharpness" not in off.active
    assert off.status()["still_sharpness"]["status"] == "skipped: disabled (--still_frames 0)"


def test_find_best_frame_offline_picks_the_matching_frame(backend, shared_data):
    from dagan.io.video import VideoReader

    frames = list(VideoReader(shared_data / "drv_lp_d0_256.mp4", max_frames=8))
    assert faces.find_best_frame(backend, frames[5], iter(frames)) == 5



def test_tracked_landmarks_match_detected_ones_on_a_real_clip(backend, shared_data):
    from dagan.io.video import VideoReader

    frames = list(VideoReader(shared_data / "drv_lp_d14_audio_256.mp4", max_frames=40))
    detected = np.stack([backend.detect(f, landmarks=True)[0].landmarks for f in frames])
    tracker = faces.LandmarkTracker(backend, detect_every=10)
    tracked = np.stack([tracker.detect(f, landmarks=True)[0].landmarks for f in frames])
    assert tracker.detections == 4
    # fitted in the box carried over from the last frame, the landmarks stay within a few hundredths of the
    # inter-ocular distance of the detected ones (the detector's own box jitters by that much)
    iod = np.linalg.norm(detected[:, 36:42].mean(1) - detected[:, 42:48].mean(1), axis=1)
    error = np.linalg.norm(tracked - detected, axis=2).mean(1) / iod
    assert error.mean() < 0.02 and error.max() < 0.06
    assert np.allclose(tracked[::10], detected[::10])  # detection frames are the detector's own
