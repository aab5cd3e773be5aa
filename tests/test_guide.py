"""Face-guided head motion (dagan.inference.guide): the fits, the keypoint composition, the stateful guide and
its wiring into the Animator, the demo and the evaluation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dagan.errors import InputError
from dagan import faces
from dagan.faces import Face
from dagan.inference.guide import (GLOBAL_POINTS, LandmarkGuide, face_points, fit_affine, fit_similarity,
                                   guide_keypoints, pixels_to_normalized, stack_landmarks)



def _rotation(angle: float, scale: float = 1.0) -> torch.Tensor:
    c, s = np.cos(angle), np.sin(angle)
    return scale * torch.tensor([[c, -s], [s, c]], dtype=torch.float32)


def _apply(A: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return x @ A.T + t


def test_fits_recover_known_transforms():
    g = torch.Generator().manual_seed(0)
    src = torch.rand(3, 13, 2, generator=g) * 2 - 1
    A_sim, t = _rotation(0.3, 1.15), torch.tensor([0.1, -0.2])
    A, tt = fit_similarity(src, _apply(A_sim, t, src))
    assert torch.allclose(A, A_sim.expand(3, 2, 2), atol=1e-5) and torch.allclose(tt, t.expand(3, 2), atol=1e-5)
    A_aff = torch.tensor([[1.1, 0.2], [-0.1, 0.9]])
    A, tt = fit_affine(src, _apply(A_aff, t, src))
    assert torch.allclose(A, A_aff.expand(3, 2, 2), atol=1e-5) and torch.allclose(tt, t.expand(3, 2), atol=1e-5)
    # a similarity cannot take the shear: it finds the nearest one, not the affine map
    A, _ = fit_similarity(src, _apply(A_aff, t, src))
    assert not torch.allclose(A, A_aff.expand(3, 2, 2), atol=1e-2)


def test_pixels_to_normalized_matches_the_model_grid():
    # pixel centre 1.5 of a 256 px frame is the centre of pixel 0 of the 64 px model input: -1; the last, +1
    pts = pixels_to_normalized(np.array([[1.5, 1.5], [253.5, 253.5], [127.5, 127.5]]), 256, 256, 64)
    assert np.allclose(pts, [[-1, -1], [1, 1], [0, 0]], atol=1e-9)
    # non-square frames: each axis by its own size
    assert np.allclose(pixels_to_normalized(np.array([[199.5, 49.5]]), 400, 100, 64), [[0, 0]], atol=1e-9)


def _scene(frames: int = 4, response: float = 0.6, seed: int = 0):
    """Anchor keypoints/landmarks and frames in which the face zooms by ``zooms`` about the origin; the
    keypoints follow only ``response`` of each zoom (as a small detector does), the landmarks all of it."""
    g = torch.Generator().manual_seed(seed)
    kp0 = torch.rand(1, 10, 2, generator=g) * 1.2 - 0.6
    jac0 = torch.eye(2).repeat(1, 10, 1, 1) + 0.1 * torch.randn(1, 10, 2, 2, generator=g)
    lm0 = torch.rand(1, 68, 2, generator=g) * 1.2 - 0.6
    zooms = torch.linspace(0.9, 1.2, frames)
    kp_scale = 1 + response * (zooms - 1)
    kp = {"value": kp0 * kp_scale[:, None, None], "jacobian": jac0 * kp_scale[:, None, None, None]}
    lm = lm0 * zooms[:, None, None]
    return {"value": kp0, "jacobian": jac0}, lm0, kp, lm, zooms


@pytest.mark.parametrize("fit", ["similarity", "affine"])
def test_guide_gives_the_keypoints_the_landmarks_global_motion(fit):
    anchor, lm0, kp, lm, zooms = _scene()
    out = guide_keypoints(kp, anchor, lm0, lm, fit=fit)
    # the keypoints now follow all of the zoom, Jacobians included
    assert torch.allclose(out["value"], anchor["value"] * zooms[:, None, None], atol=1e-5)
    assert torch.allclose(out["jacobian"], anchor["jacobian"] * zooms[:, None, None, None], atol=1e-5)
    # without the guide they lag behind by 40 % of the zoom
    assert (kp["value"] - out["value"]).abs().max() > 0.02


def test_guide_keeps_the_non_rigid_residual_and_tied_keypoints_follow_their_landmark():
    anchor, lm0, kp, lm, zooms = _scene()
    kp = {k: v.clone() for k, v in kp.items()}
    kp["value"][:, 3] += torch.tensor([0.0, 0.05])  # keypoint 3 moves on its own (a jaw, say)
    out = guide_keypoints(kp, anchor, lm0, lm, fit="similarity")
    own = out["value"][:, 3] - anchor["value"][0, 3] * zooms[:, None]
    expected = 0.05 * zooms / (1 + 0.6 * (zooms - 1))  # the keypoint's own motion, zoomed with the face
    # most of it stays (the least-squares fit of the global motion takes a share of one point's offset)
    assert ((own[:, 1] / expected).min() > 0.65) and ((own[:, 1] / expected).max() <= 1.0)
    lm = lm.clone()
    lm[:, 57] += torch.tensor([0.0, 0.08])  # the lower lip opens
    out = guide_keypoints(kp, anchor, lm0, lm, fit="similarity", tied=[(5, 57)])
    # a tied keypoint keeps its offset from its landmark (zoomed with the face) and moves as the landmark does
    tied = lm[:, 57] + zooms[:, None] * (anchor["value"][0, 5] - lm0[0, 57])
    assert torch.allclose(out["value"][:, 5], tied, atol=1e-5)
    assert (out["value"][:, 5, 1] - anchor["value"][0, 5, 1] * zooms).min() > 0.07
    # the mouth gain multiplies the lower lip's own motion (here the 0.08 opening of the driving frame), and
    # leaves keypoints tied elsewhere (an eye corner) as they were
    gained = guide_keypoints(kp, anchor, lm0, lm, fit="similarity", tied=[(5, 57), (2, 36)], mouth_gain=2.5)
    plain = guide_keypoints(kp, anchor, lm0, lm, fit="similarity", tied=[(5, 57), (2, 36)])
    assert torch.allclose(gained["value"][:, 5] - plain["value"][:, 5],
                          torch.tensor([0.0, 1.5 * 0.08]).expand(len(zooms), 2), atol=1e-5)
    assert torch.allclose(gained["value"][:, 2], plain["value"][:, 2], atol=1e-6)
    with pytest.raises(InputError, match="mouth gain"):
        LandmarkGuide(mouth_gain=-1)


def test_guide_on_a_source_zooms_the_source_about_its_own_centre():
    """Relative motion carries the driver's keypoint layout over to the source; the guided composition
    zooms the source's own keypoints, whatever the driver's layout."""
    from dagan.models.dagan import relative_motion

    anchor, lm0, kp, lm, zooms = _scene()
    g = torch.Generator().manual_seed(1)
    source = {"value": torch.rand(1, 10, 2, generator=g) * 0.8 - 0.4,
              "jacobian": torch.eye(2).repeat(1, 10, 1, 1)}
    scale = 0.8
    moved = guide_keypoints(kp, anchor, lm0, lm, fit="affine", kp_source=source, scale=scale)["value"]
    centre = source["value"].mean(1, keepdim=True)
    expected = centre + zooms[:, None, None] * (source["value"] - centre) + scale * (zooms[:, None, None] - 1) * \
        anchor["value"].mean(1, keepdim=True)
    assert torch.allclose(moved, expected, atol=1e-5)
    plain = relative_motion(source, kp, anchor, scale)["value"]
    assert (plain - expected).abs().max() > 0.02


@pytest.mark.parametrize("fit,tied", [("similarity", ()), ("affine", ((2, 36), (5, 57)))])
def test_direct_guided_keypoints_equal_the_old_composition_through_relative_motion(fit, tied):
    """The guide gives the source-frame keypoints directly; they equal the old route: driving keypoints built
    so that relative motion (``(kp - kp_anchor) * scale + kp_source``, ``J inv(J_anchor) J_source``) lands on
    the guided source, then relative motion."""
    from dagan.models.dagan import relative_motion

    g = torch.Generator().manual_seed(7)
    frames, num_kp = 5, 10
    anchor = {"value": torch.rand(1, num_kp, 2, generator=g) * 1.6 - 0.8,
              "jacobian": torch.eye(2) + 0.2 * torch.randn(1, num_kp, 2, 2, generator=g)}
    source = {"value": torch.rand(1, num_kp, 2, generator=g) * 1.6 - 0.8,
              "jacobian": torch.eye(2) + 0.2 * torch.randn(1, num_kp, 2, 2, generator=g)}
    kp = {"value": anchor["value"] + 0.1 * torch.randn(frames, num_kp, 2, generator=g),
          "jacobian": anchor["jacobian"] + 0.05 * torch.randn(frames, num_kp, 2, 2, generator=g)}
    lm0 = torch.rand(1, 68, 2, generator=g) * 1.6 - 0.8
    lm = lm0 + 0.1 * torch.randn(frames, 68, 2, generator=g)
    scale = 0.83
    direct = guide_keypoints(kp, anchor, lm0, lm, fit=fit, tied=tied, kp_source=source, scale=scale,
                             mouth_gain=1.7)
    # the old composition: guided driving keypoints (the landmark motion of the anchor frame's keypoints with
    # the residual, re-centred so that relative motion moves the source about its own centre), then relative
    # motion, which undid the scale and the anchor again
    driving_frame = guide_keypoints(kp, anchor, lm0, lm, fit=fit, tied=tied, mouth_gain=1.7)
    a_lm, t_lm = (fit_similarity if fit == "similarity" else fit_affine)(
        lm0.expand(frames, -1, -1)[:, list(GLOBAL_POINTS)], lm[:, list(GLOBAL_POINTS)])
    moved = lambda x: torch.einsum("bij,bkj->bki", a_lm, x)  # noqa: E731
    centre_s, centre_d = source["value"].mean(1, keepdim=True), anchor["value"].mean(1, keepdim=True)
    residual_moved = driving_frame["value"] - moved(anchor["value"].expand(frames, -1, -1)) - t_lm[:, None]
    delta = moved(centre_d.expand(frames, -1, -1)) + t_lm[:, None] - centre_d
    pre_inverted = {"value": anchor["value"] + (moved(source["value"] - centre_s) + centre_s - source["value"])
                    / scale + delta + residual_moved, "jacobian": driving_frame["jacobian"]}
    composed = relative_motion(source, pre_inverted, anchor, scale)
    assert torch.allclose(direct["value"], composed["value"], atol=1e-5)
    assert torch.allclose(direct["jacobian"], composed["jacobian"], atol=1e-5)


def test_landmark_guide_holds_missing_faces_and_passes_through_without_an_anchor_face():
    from dagan.models.dagan import relative_motion

    anchor, lm0, kp, lm, zooms = _scene()
    source = {"value": anchor["value"] + 0.1, "jacobian": anchor["jacobian"]}
    guide = LandmarkGuide(fit="similarity")
    guide.set_anchor(lm0[0].numpy(), anchor, source)
    landmarks = stack_landmarks([lm[0].numpy(), None, lm[2].numpy(), None])
    assert torch.isnan(landmarks[1]).all() and landmarks.shape == (4, 68, 2)
    out = guide(kp, landmarks)["value"]
    assert guide.missing == 2
    # frames 1 and 3 had no face: they keep the face motion of frames 0 and 2 (the source zooms about its
    # centre, which moves as the zoom moves the anchor keypoints' centre)
    centre, centre_d = source["value"].mean(1), anchor["value"].mean(1)
    zoomed = [centre + z * (source["value"][0] - centre) + (z - 1) * centre_d for z in zooms]
    assert torch.allclose(out[0], zoomed[0], atol=1e-5) and torch.allclose(out[2], zoomed[2], atol=1e-5)
    assert torch.allclose(out[1], out[0], atol=1e-5) and torch.allclose(out[3], out[2], atol=1e-5)
    with pytest.raises(InputError, match="landmarks of 3 frames"):
        guide(kp, landmarks[:3])
    off = LandmarkGuide()
    off.set_anchor(None, anchor, source, scale=0.9)
    passed = off(kp, stack_landmarks([None] * 4))
    assert not off.active
    plain = relative_motion(source, kp, anchor, 0.9)
    assert all(torch.equal(passed[k], plain[k]) for k in plain)
    with pytest.raises(RuntimeError, match="set_anchor"):
        LandmarkGuide()(kp, landmarks)
    with pytest.raises(ValueError, match="fit"):
        LandmarkGuide(fit="perspective")


class ZoomDetector:
    """A face detector whose 68 landmarks zoom about the frame centre by ``zooms[call]`` (1 past the end), so
    a test drives a known head motion with identical frames (whose keypoints do not move)."""

    def __init__(self, base: np.ndarray, zooms):
        self.base, self.zooms = base, list(zooms)
        self.calls = 0

    def detect(self, image, landmarks=False):
        zoom = self.zooms[self.calls] if self.calls < len(self.zooms) else 1.0
        self.calls += 1
        h, w = image.shape[:2]
        centre = np.array([w / 2.0, h / 2.0])
        points = centre + zoom * (self.base * [w / 256.0, h / 256.0] - centre)
        box = np.array([points[:, 0].min(), points[:, 1].min(), points[:, 0].max(), points[:, 1].max()])
        return [faces.Face(box, 1.0, points if landmarks else None)]


@pytest.fixture
def base_landmarks():
    return 128 + np.random.default_rng(0).uniform(-60, 60, size=(68, 2))


def test_animator_guide_moves_the_source_with_the_driving_landmarks(tiny_model, base_landmarks):
    from dagan import Animator

    size = tiny_model.image_size
    detector = ZoomDetector(base_landmarks, [1.0, 1.2])
    g = np.random.default_rng(1)
    source = g.integers(0, 255, (size, size, 3), dtype=np.uint8)
    frame = g.integers(0, 255, (128, 128, 3), dtype=np.uint8)
    anim = Animator(tiny_model, device="cpu", guide=detector, fast=False)
    anim.set_source(source)
    # the same frame twice, its landmarks zoomed by 1.2 the second time
    details = [anim.animate_tensor(anim._frames_to_tensor(frame), return_details=True, landmarks=anim._landmarks(frame))
               for _ in range(2)]
    src = anim.state.kp["value"]
    assert torch.allclose(details[0]["kp_norm"]["value"], src, atol=1e-5)
    centre = src.mean(1, keepdim=True)
    # the source zooms about its keypoints' centre; the driver's keypoint centre, zoomed about the landmarks'
    # centre, also moves, and that move is carried over at the movement scale
    zoom_centre = torch.from_numpy(pixels_to_normalized(np.array([[64.0, 64.0]]), 128, 128, size)).float()
    shift = 0.2 * (anim.kp_driving_initial["value"].mean(1, keepdim=True) - zoom_centre)
    expected = centre + 1.2 * (src - centre) + anim.movement_scale * shift
    assert torch.allclose(details[1]["kp_norm"]["value"], expected, atol=1e-4)
    assert torch.allclose(details[1]["kp_norm"]["jacobian"], 1.2 * anim.state.kp["jacobian"], atol=1e-4)
    # the streaming API finds the landmarks itself, one detection per frame as given
    anim.reset()
    calls = detector.calls
    assert len(list(anim.animate_stream([frame, frame, frame], batch_size=2))) == 3
    assert detector.calls == calls + 3
    # guide off: the same frames do not move the source
    plain = Animator(tiny_model, device="cpu", fast=False)
    plain.set_source(source)
    still = [plain.animate_tensor(plain._frames_to_tensor(frame), return_details=True) for _ in range(2)]
    assert torch.allclose(still[1]["kp_norm"]["value"], src, atol=1e-5)


def test_animator_guide_needs_a_detector(tiny_model):
    from dagan import Animator

    with pytest.raises(InputError, match="face detector"):
        Animator(tiny_model, device="cpu", guide="dlib", fast=False)
    with pytest.raises(InputError, match="relative"):
        Animator(tiny_model, device="cpu", guide=ZoomDetector(np.zeros((68, 2)), []), relative=False, fast=False)


def test_face_points_skips_faces_without_landmarks():
    assert face_points(None, 256, 256, 64) is None
    assert face_points(faces.Face(np.zeros(4)), 256, 256, 64) is None


def test_kp_landmark_pairs_travel_with_an_exported_model(tmp_path, tiny_config):
    from dagan import DaGAN
    from dagan.checkpoints import kp_landmark_pairs

    assert kp_landmark_pairs({"train": {"kp_landmarks": [[0, 57]], "loss_weights": {"kp_landmarks": 10.0}}}) == \
        ((0, 57),)
    # listed but not trained for: the keypoints are not on the landmarks
    assert kp_landmark_pairs({"train": {"kp_landmarks": [[0, 57]], "loss_weights": {"kp_landmarks": 0.0}}}) == ()
    model = DaGAN(tiny_config)
    tiny_config.train.kp_landmarks = [[1, 57], [2, 8]]
    tiny_config.train.loss_weights.kp_landmarks = 5.0
    model.save_pretrained(tmp_path / "m", config=tiny_config)
    assert DaGAN.from_pretrained(tmp_path / "m").kp_landmarks == ((1, 57), (2, 8))


class _NoBackend:
    def __init__(self):
        from dagan.errors import MissingWeightsError

        raise MissingWeightsError("the dlib face backend needs dlib: pip install dlib-bin")


def test_demo_guide_on_uses_the_detector_per_frame_and_changes_the_motion(tmp_path, base_landmarks):
    from dagan.inference import cli
    from dagan.io.video import VideoReader

    detector = ZoomDetector(base_landmarks, [1.0, 1.1, 1.2, 1.3])
    guided, plain = tmp_path / "guided.mp4", tmp_path / "plain.mp4"
    assert cli.main(["--result_video", str(guided), "--max-frames", "4", "--quiet", "--guide", "on",
                     "--motion", "keypoints"],
                    detector_factory=lambda: detector) == 0
    assert detector.calls == 4  # one detection per driving frame, the anchor's reused
    assert cli.main(["--result_video", str(plain), "--max-frames", "4", "--quiet", "--guide", "off",
                     "--motion", "keypoints"],
                    detector_factory=_NoBackend) == 0
    a, b = list(VideoReader(guided)), list(VideoReader(plain))
    assert len(a) == len(b) == 4 and a[0].shape == (256, 256, 3)
    assert np.abs(a[0].astype(int) - b[0].astype(int)).mean() < 3  # the anchor frame: no motion either way
    assert np.abs(a[3].astype(int) - b[3].astype(int)).mean() > 3  # zoomed by 1.3 only with the guide


def test_demo_guide_on_without_a_backend_is_a_one_line_error_and_auto_runs_unguided(tmp_path, capsys):
    from dagan.inference import cli

    out = tmp_path / "r.mp4"
    assert cli.main(["--result_video", str(out), "--max-frames", "2", "--guide", "on"],
                    detector_factory=_NoBackend) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dlib" in err[0] and not out.exists()
    assert cli.main(["--result_video", str(out), "--max-frames", "2", "--quiet"], detector_factory=_NoBackend) == 0
    assert out.exists()
    capsys.readouterr()
    assert cli.main(["--result_video", str(tmp_path / "a.mp4"), "--max-frames", "2", "--absolute", "--guide", "on"],
                    detector_factory=_NoBackend) == 2
    assert "relative" in capsys.readouterr().err


def test_evaluation_guide_uses_the_suites_face_analyser(tiny_model):
    from dagan.evaluation.evaluate import AnimatorSystem, EvalSettings, MetricSuite, system_faces

    class Analyser:
        def __init__(self, face=None):
            self.face = face

        def detect(self, image, landmarks=False):
            return [] if self.face is None else [self.face]

    suite = MetricSuite("cross-identity", EvalSettings(protocol="cross-identity"))
    suite.faces = Analyser()
    assert system_faces(EvalSettings(guide="off"), suite) is None
    assert system_faces(EvalSettings(guide="auto"), suite) is suite.faces
    # the landmark stage needs the faces even with the guide off
    assert system_faces(EvalSettings(guide="off", motion="landmarks"), suite) is suite.faces
    with pytest.raises(InputError, match="guide"):
        EvalSettings(guide="always")
    with pytest.raises(InputError, match="motion"):
        EvalSettings(motion="optical-flow")
    # absolute motion (same-identity reconstruction) runs unguided, even where faces are found
    face = Face(np.array([10.0, 10.0, 50.0, 50.0]), 1.0, np.random.default_rng(0).uniform(10, 50, (68, 2)))
    settings = EvalSettings()
    frames = torch.rand(3, 3, 64, 64)
    absolute = AnimatorSystem(tiny_model, settings, Analyser(face))
    absolute.start(frames[:1], frames[:1], False)
    plain = AnimatorSystem(tiny_model, settings)
    plain.start(frames[:1], frames[:1], False)
    assert absolute.animator.guide is None
    assert torch.allclose(absolute(frames), plain(frames), atol=1e-6)
    # a system whose anchor frame has no face runs unguided (the keypoints pass through)
    system = AnimatorSystem(tiny_model, settings, Analyser())
    frames = torch.rand(3, 3, 64, 64)
    system.start(frames[:1], frames[:1], True)
    assert not system.animator.guide.active
    plain = AnimatorSystem(tiny_model, settings)
    plain.start(frames[:1], frames[:1], True)
    assert torch.allclose(system(frames), plain(frames), atol=1e-6)


class FittingDetector(ZoomDetector):
    """A :class:`ZoomDetector` that can also fit landmarks in a given box (as the dlib backend does): the
    fitted landmarks are the ones it would detect, scaled by ``fit_zoom`` about their centre."""

    def __init__(self, base, zooms, fit_zoom=1.0):
        super().__init__(base, zooms)
        self.fit_zoom, self.fits, self.boxes = fit_zoom, 0, []

    def fit_landmarks(self, image, box, score=1.0):
        self.fits += 1
        self.boxes.append(np.asarray(box, np.float64))
        face = ZoomDetector.detect(self, image, landmarks=True)[0]
        self.calls -= 1  # a fit is not a detection
        centre = face.landmarks.mean(0)
        face.landmarks = centre + self.fit_zoom * (face.landmarks - centre)
        return face


def test_landmark_tracker_detects_every_nth_frame_and_fits_in_between(base_landmarks):
    frame = np.zeros((256, 256, 3), np.uint8)
    detector = FittingDetector(base_landmarks, [])
    tracker = faces.LandmarkTracker(detector, detect_every=4)
    found = [tracker.detect(frame, landmarks=True)[0] for _ in range(10)]
    assert detector.calls == 3 and detector.fits == 7  # detections on frames 0, 4 and 8
    assert all(np.allclose(f.landmarks, base_landmarks) for f in found)
    # the fitting box is the detector's box, moved and scaled with the landmarks
    first = ZoomDetector(base_landmarks, []).detect(frame)[0].box
    assert np.allclose(detector.boxes[0], first)
    # without landmarks it only detects; reset() starts again with a detection
    tracker.detect(frame)
    assert detector.calls == 4
    tracker.reset()
    tracker.detect(frame, landmarks=True)
    assert detector.calls == 5 and detector.fits == 7


def test_landmark_tracker_detects_again_when_the_fitted_face_jumps(base_landmarks):
    frame = np.zeros((256, 256, 3), np.uint8)
    detector = FittingDetector(base_landmarks, [], fit_zoom=1.5)  # every fit grows the face by half
    tracker = faces.LandmarkTracker(detector, detect_every=10, max_change=0.2)
    found = [tracker.detect(frame, landmarks=True)[0] for _ in range(3)]
    assert detector.calls == 3 and detector.fits == 2
    assert all(np.allclose(f.landmarks, base_landmarks) for f in found)
    # a detector that cannot fit landmarks in a box detects on every frame
    plain = ZoomDetector(base_landmarks, [])
    tracker = faces.LandmarkTracker(plain, detect_every=10)
    for _ in range(3):
        tracker.detect(frame, landmarks=True)
    assert plain.calls == 3
    with pytest.raises(InputError, match="detect_every"):
        faces.LandmarkTracker(plain, detect_every=0)


def test_animator_guide_tracks_landmarks_between_detections(tiny_model, base_landmarks):
    from dagan import Animator

    size = tiny_model.image_size
    detector = FittingDetector(base_landmarks, [])
    frame = np.random.default_rng(2).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    anim = Animator(tiny_model, device="cpu", guide=detector, guide_detect_every=3, fast=False)
    anim.set_source(np.zeros((size, size, 3), np.uint8))
    assert len(list(anim.animate_stream([frame] * 7, batch_size=2))) == 7
    assert detector.calls == 3 and detector.fits == 4  # frames 0, 3 and 6 detected
    anim.reset()  # a new video starts with a detection
    anim(frame)
    assert detector.calls == 4


def test_demo_guide_detect_every_tracks_between_detections_and_rejects_zero(tmp_path, base_landmarks, capsys):
    from dagan.inference import cli

    detector = FittingDetector(base_landmarks, [])
    assert cli.main(["--result_video", str(tmp_path / "r.mp4"), "--max-frames", "6", "--quiet", "--guide", "on",
                     "--motion", "keypoints",
                     "--guide-detect-every", "3"], detector_factory=lambda: detector) == 0
    assert detector.calls == 2 and detector.fits == 4  # frames 0 and 3 detected
    from dagan.inference.pipeline import AnimateOptions, guide_detect_every

    assert guide_detect_every(AnimateOptions()) == 1 and guide_detect_every(AnimateOptions(), stream=True) == 10
    out = tmp_path / "z.mp4"
    assert cli.main(["--result_video", str(out), "--max-frames", "2", "--guide", "on", "--guide_detect_every", "0"],
                    detector_factory=lambda: detector) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--guide_detect_every" in err[0] and not out.exists()


def test_mouth_gain_needs_the_guide_and_reaches_the_animator_and_demo(tiny_model, tmp_path, capsys):
    from dagan import Animator
    from dagan.inference import cli

    with pytest.raises(InputError, match="guide"):
        Animator(tiny_model, device="cpu", fast=False, mouth_gain=2.0)
    tiny_model.kp_landmarks = ((0, 57), (1, 36))
    anim = Animator(tiny_model, device="cpu", fast=False, guide=ZoomDetector(np.zeros((68, 2)), []), mouth_gain=2.0)
    assert anim.guide.mouth_gain == 2.0
    out = tmp_path / "r.mp4"
    assert cli.main(["--result_video", str(out), "--max-frames", "2", "--guide", "off", "--mouth_gain", "2"],
                    detector_factory=_NoBackend) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mouth gain" in err[0] and not out.exists()
    detector = ZoomDetector(128 + np.random.default_rng(0).uniform(-60, 60, size=(68, 2)), [])
    assert cli.main(["--result_video", str(out), "--max-frames", "2", "--quiet", "--guide", "on",
                     "--motion", "keypoints",
                     "--mouth_gain", "2"], detector_factory=lambda: detector) == 0
    assert out.exists() and detector.calls == 2
