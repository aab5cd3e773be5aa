"""The landmark motion stage: geometry at output resolution from 68 landmarks and the portrait's depth."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dagan.errors import InputError, NoFaceError
from dagan.evaluation.face_metrics import eye_opening, interocular, mouth_opening, pearson
from dagan.inference.landmark_motion import (INNER_LIPS, LandmarkMotion, polygon_mask, usable_landmarks,
                                             weak_perspective_pose)

SIZE = 128


def face_landmarks(size: int = SIZE) -> np.ndarray:
    """A plausible frontal 68-point face (iBUG layout) centred in a ``size`` image, closed mouth, open eyes."""
    s = size / 128.0
    pts = np.zeros((68, 2))
    jaw = np.linspace(-np.pi * 0.95, -np.pi * 0.05, 17)
    pts[0:17] = np.stack([64 - 34 * np.cos(jaw), 60 - 40 * np.sin(jaw)], 1)
    pts[17:22] = np.stack([np.linspace(38, 58, 5), [44, 41, 40, 41, 43]], 1)
    pts[22:27] = np.stack([np.linspace(70, 90, 5), [43, 41, 40, 41, 44]], 1)
    pts[27:31] = np.stack([[64] * 4, np.linspace(52, 70, 4)], 1)
    pts[31:36] = np.stack([np.linspace(57, 71, 5), [74, 75, 76, 75, 74]], 1)
    for start, cx in ((36, 48), (42, 80)):
        pts[start:start + 6] = np.stack([cx + np.array([-8, -4, 4, 8, 4, -4]), 52 + np.array([0, -3, -3, 0, 3, 3])], 1)
    outer_x = np.array([52, 56, 60, 64, 68, 72, 76, 72, 68, 64, 60, 56])
    outer_y = np.array([88, 85, 84, 85, 84, 85, 88, 92, 94, 95, 94, 92])
    pts[48:60] = np.stack([outer_x, outer_y], 1)
    pts[60:68] = np.stack([[55, 60, 64, 68, 73, 68, 64, 60], [88, 88, 88, 88, 88, 89, 89, 89]], 1)
    return pts * s


def portrait(size: int = SIZE) -> torch.Tensor:
    """A textured picture (1, 3, S, S): a checker pattern, so that any motion shows."""
    yy, xx = np.mgrid[0:size, 0:size]
    checker = (((xx // 4) + (yy // 4)) % 2).astype(np.float32)
    rgb = np.stack([0.3 + 0.4 * checker, 0.5 + 0.2 * np.sin(xx / 7.0), 0.4 + 0.3 * np.cos(yy / 9.0)], 0)
    return torch.from_numpy(rgb)[None].float()


def nose_bump(landmarks: np.ndarray, size: int = SIZE, low: int = 32) -> torch.Tensor:
    """A disparity (1, 1, low, low): nearest at the nose, falling off over the face (a generic relief)."""
    lin = (np.arange(low) + 0.5) * size / low - 0.5
    gy, gx = np.meshgrid(lin, lin, indexing="ij")
    nose = landmarks[30]
    bump = np.exp(-((gx - nose[0]) ** 2 + (gy - nose[1]) ** 2) / (2 * 25.0 ** 2))
    return torch.from_numpy(bump)[None, None].float()


def stage_for(fill="dark", **kwargs) -> LandmarkMotion:
    lm = face_landmarks()
    stage = LandmarkMotion(SIZE, mouth_fill=fill, **kwargs)
    stage.set_source(portrait(), lm, nose_bump(lm))
    stage.set_anchor(lm)
    return stage


def test_still_driver_gives_the_portrait_pixel_for_pixel():
    stage = stage_for()
    out = stage(np.stack([face_landmarks()] * 3))
    assert out.shape == (3, 3, SIZE, SIZE)
    assert (out - portrait()).abs().max() < 1e-4


def test_weak_perspective_pose_recovers_a_rotation_and_scale():
    rng = np.random.default_rng(0)
    shape = torch.from_numpy(rng.normal(size=(40, 3))).float()
    shape = shape - shape.mean(0)
    angle = 0.3
    rot = torch.tensor([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]]).float()
    points = 1.3 * (shape @ rot.T)[:, :2] + torch.tensor([5.0, -2.0])
    scale, rotation, shift = weak_perspective_pose(shape, points[None])
    assert abs(float(scale[0]) - 1.3) < 1e-4
    assert torch.allclose(rotation[0], rot, atol=1e-4)
    assert torch.allclose(shift[0], torch.tensor([5.0, -2.0]), atol=1e-4)


def test_a_head_shift_moves_the_face_and_leaves_the_far_background():
    size = 256  # the face of face_landmarks() in the middle of a larger picture: background all around
    lm = face_landmarks() + 64.0
    stage = LandmarkMotion(size, mouth_fill="dark")
    src = portrait(size)
    stage.set_source(src, lm, nose_bump(lm, size))
    stage.set_anchor(lm)
    out = stage((lm + np.array([6.0, 0.0]))[None])
    # the face's centre region is the portrait shifted by 6 pixels
    face = (slice(None), slice(None), slice(114, 144), slice(114, 134))
    shifted = (slice(None), slice(None), slice(114, 144), slice(108, 128))
    assert (out[face] - src[shifted]).abs().mean() < 0.02
    assert (out[face] - src[face]).abs().mean() > 0.05  # it did move
    # image corners, far from the head, stay where they were
    for corner in ((slice(0, 12), slice(0, 12)), (slice(-12, None), slice(-12, None))):
        assert (out[(..., *corner)] - src[(..., *corner)]).abs().max() < 1e-4


def test_a_turn_moves_the_nose_more_than_the_face_outline():
    stage = stage_for()
    lm = torch.from_numpy(face_landmarks()).float()
    yaw = 0.25
    rotation = torch.tensor([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]]).float()
    posed = stage.rigid_targets(lm, stage.depth_landmarks, torch.ones(1), rotation[None], torch.zeros(1, 2))[0]
    nose_shift = float(posed[30, 0] - lm[30, 0])
    outline_shift = float(posed[[0, 16], 0].mean() - lm[[0, 16], 0].mean())
    assert nose_shift > outline_shift + 3.0
    # the stage fits that pose back from the landmarks alone
    scale, fitted, _, residual = stage.landmark_motion(posed[None])
    assert abs(float(scale[0]) - 1.0) < 0.02
    assert torch.allclose(fitted[0], rotation, atol=0.03)
    assert residual.abs().max() < 0.5


def test_an_opening_mouth_is_painted_dark_inside_the_target_lips():
    stage = stage_for("dark")
    lm = face_landmarks()
    open_mouth = lm.copy()
    open_mouth[[65, 66, 67, 55, 56, 57, 58, 59, 7, 8, 9], 1] += 10.0
    out = stage(open_mouth[None])
    grid = stage.output_points
    targets = stage.forward_field(torch.from_numpy(open_mouth).float()[None])[1]
    inside = polygon_mask(targets[:, list(INNER_LIPS)], grid)[0] > 0.99
    assert inside.sum() > 30
    brightness = out[0].mean(0)
    assert float(brightness[inside].mean()) < 0.5 * float(portrait()[0].mean(0)[inside].mean())
    # with no fill the lips are only stretched: nothing dark is painted
    plain = stage_for("none")(open_mouth[None])[0].mean(0)
    assert float(plain[inside].mean()) > float(brightness[inside].mean()) + 0.1


def test_driver_fill_copies_the_drivers_mouth_interior():
    stage = stage_for("driver")
    lm = face_landmarks()
    open_mouth = lm.copy()
    open_mouth[[65, 66, 67, 55, 56, 57, 58, 59, 7, 8, 9], 1] += 10.0
    frame = torch.full((1, 3, SIZE, SIZE), 0.6)
    frame[..., 88:100, 55:74] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]  # a red mouth interior
    out = stage(open_mouth[None], frame)
    targets = stage.forward_field(torch.from_numpy(open_mouth).float()[None])[1]
    inside = polygon_mask(targets[:, list(INNER_LIPS)], stage.output_points)[0] > 0.99
    red, green = out[0, 0][inside].mean(), out[0, 1][inside].mean()
    assert float(red) > float(green) + 0.3


def test_closing_eyelids_narrow_the_eye_and_lips_never_cross():
    stage = stage_for()
    lm = face_landmarks()
    closed = lm.copy()
    for upper, lower in ((37, 41), (38, 40), (43, 47), (44, 46)):
        closed[upper] = lm[lower] - np.array([0.0, 0.5])
    targets = stage.forward_field(torch.from_numpy(closed).float()[None])[1][0].numpy()
    assert eye_opening(targets) < 0.3 * eye_opening(lm)
    # a driver whose lips pass through each other (e.g. a portrait opened wider than its anchor) stays shut
    crossed = lm.copy()
    crossed[[61, 62, 63], 1] += 6.0
    targets = stage.forward_field(torch.from_numpy(crossed).float()[None])[1][0]
    assert bool((targets[[67, 66, 65], 1] >= targets[[61, 62, 63], 1] - 1e-4).all())


def test_the_inversion_has_no_fold_on_a_wide_open_mouth():
    stage = stage_for()
    lm = face_landmarks()
    wide = lm.copy()
    wide[[65, 66, 67, 55, 56, 57, 58, 59, 6, 7, 8, 9, 10], 1] += 16.0  # the jaw drops with the lower lip
    wide[[61, 62, 63, 49, 50, 51, 52, 53], 1] -= 4.0
    displacement, _ = stage.forward_field(torch.from_numpy(wide).float()[None])
    grid = stage.backward_grid(displacement)
    points = (grid + 1) * SIZE / 2 - 0.5
    field = displacement.permute(0, 3, 1, 2)
    moved = points + torch.nn.functional.grid_sample(field, grid, align_corners=False).permute(0, 2, 3, 1)
    residual = (moved - stage.output_points).norm(dim=-1)[0]
    # every output pixel found its source, but inside the opening (which the fill paints) and on its rim
    targets = stage.forward_field(torch.from_numpy(wide).float()[None])[1]
    opening = polygon_mask(targets[:, list(INNER_LIPS)], stage.output_points)[0] > 0
    assert int(((residual > 1.0) & ~opening).sum()) <= 8
    assert float(residual[:80].max()) < 1.0 and float(residual[110:].max()) < 1.0


def test_bad_landmarks_and_settings_are_rejected():
    assert usable_landmarks(face_landmarks())
    assert not usable_landmarks(None)
    assert not usable_landmarks(np.zeros((68, 2)))
    assert not usable_landmarks(np.full((68, 2), np.nan))
    assert not usable_landmarks(np.zeros((5, 2)))
    with pytest.raises(InputError, match="mouth fill"):
        LandmarkMotion(SIZE, mouth_fill="teeth")
    stage = LandmarkMotion(SIZE)
    with pytest.raises(InputError, match="degenerate"):
        stage.set_source(portrait(), np.zeros((68, 2)), None)
    with pytest.raises(InputError, match="set_source"):
        stage.set_anchor(face_landmarks())
    with pytest.raises(InputError, match="portrait"):
        stage.set_source(portrait(64), face_landmarks(), None)


def test_a_flat_portrait_without_depth_still_moves():
    lm = face_landmarks()
    stage = LandmarkMotion(SIZE)
    stage.set_source(portrait(), lm, None)
    stage.set_anchor(lm)
    out = stage((lm + np.array([0.0, 5.0]))[None])
    assert (out - portrait()).abs().mean() > 0.01


# ------------------------------------------------------------------------------------- real faces
@pytest.fixture(scope="module")
def dlib_backend():
    from dagan.faces import load_face_backend

    try:
        return load_face_backend("dlib")
    except Exception as exc:  # noqa: BLE001 - the faces extra is part of the install; say why it is absent
        pytest.skip(f"dlib backend unavailable: {exc}")


def test_animator_landmark_stage_follows_a_real_drivers_mouth(shared_data, tiny_model, dlib_backend):
    """A new face (d6) driven by a talking clip (d10) through the Animator: the result's mouth, found by dlib,
    opens and closes with the driver's, and the face is found in every frame."""
    from dagan import Animator
    from dagan.faces import select_face
    from dagan.io.images import load_image
    from dagan.io.video import VideoReader

    frames = list(VideoReader(shared_data / "drv_lp_d10_audio_256.mp4", max_frames=40))
    anim = Animator(tiny_model, output_size=256, motion="landmarks", face_detector=dlib_backend, batch_size=4)
    anim.set_source(load_image(shared_data / "source_lp_d6frame0_256.png"))
    assert anim.stage_active
    results = list(anim.animate_stream(frames))
    assert len(results) == 40 and results[0].shape == (256, 256, 3)
    driver = [select_face(dlib_backend.detect(f, landmarks=True)).landmarks for f in frames]
    found = [select_face(dlib_backend.detect(r, landmarks=True)) for r in results]
    assert all(f is not None for f in found)
    corr = pearson([mouth_opening(f.landmarks) for f in found], [mouth_opening(d) for d in driver])
    assert corr is not None and corr > 0.7
    # head motion: the result's face moves with the driver's (inter-ocular units from the anchor)
    drive_shift = (driver[-1][27:36].mean(0) - driver[0][27:36].mean(0)) / interocular(driver[0])
    result_shift = (found[-1].landmarks[27:36].mean(0) - found[0].landmarks[27:36].mean(0)) / interocular(
        found[0].landmarks)
    assert np.linalg.norm(drive_shift - result_shift) < 0.15


def test_animator_motion_choice_and_faceless_portraits(shared_data, tiny_model, dlib_backend, caplog):
    from dagan import Animator
    from dagan.io.images import load_image

    no_face = load_image(shared_data / "no_face.png")
    auto = Animator(tiny_model, output_size=64, motion="auto", face_detector=dlib_backend)
    auto.set_source(no_face)
    assert not auto.stage_active  # the model's keypoints animate a picture without a face
    assert auto(no_face).shape == (64, 64, 3)
    strict = Animator(tiny_model, output_size=64, motion="landmarks", face_detector=dlib_backend)
    with pytest.raises(NoFaceError, match="no face"):
        strict.set_source(no_face)
    with pytest.raises(InputError, match="motion"):
        Animator(tiny_model, motion="flow")
    with pytest.raises(InputError, match="relative"):
        Animator(tiny_model, motion="landmarks", relative=False, face_detector=dlib_backend)
    keypoints = Animator(tiny_model, output_size=64, motion="keypoints")
    keypoints.set_source(load_image(shared_data / "source_lp_d6frame0_256.png"))
    assert keypoints.stage is None and not keypoints.stage_active


def test_talking_builtin_driver_opens_the_mouth_and_blinks(dlib_backend):
    from dagan.faces import select_face
    from dagan.inference.synthetic import talking_driving, talking_path

    mouth, blink = talking_path(50)
    frames = list(talking_driving(50, size=256, detector=dlib_backend))
    faces = [select_face(dlib_backend.detect(f, landmarks=True)) for f in frames]
    assert all(f is not None for f in faces)
    opening = [mouth_opening(f.landmarks) for f in faces]
    assert pearson(opening, mouth) > 0.7
    eyes = [eye_opening(f.landmarks) for f in faces]
    closed = int(np.argmax(blink))
    assert blink[closed] == 1.0 and eyes[closed] < 0.7 * eyes[0]


class _FixedFace:
    """A face detector that finds the same landmarks in every picture."""

    def __init__(self, landmarks):
        self.landmarks = landmarks

    def detect(self, image, landmarks=False):
        from dagan.faces import Face

        return [Face(np.array([30.0, 30.0, 100.0, 110.0]), 1.0, self.landmarks if landmarks else None)]


def test_generator_fill_paints_the_decoders_render_of_the_same_motion(tiny_model):
    from dagan import Animator

    lm = face_landmarks()
    open_mouth = lm.copy()
    open_mouth[[65, 66, 67, 55, 56, 57, 58, 59, 6, 7, 8, 9, 10], 1] += 10.0
    image = (portrait()[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    outs = {}
    for fill in ("generator", "dark"):
        anim = Animator(tiny_model, output_size=SIZE, motion="landmarks", mouth_fill=fill,
                        face_detector=_FixedFace(lm))
        anim.set_source(image)
        assert anim.stage_active
        anim.set_anchor(image, landmarks=lm)
        outs[fill] = anim.animate_tensor(portrait(), landmarks=[open_mouth])
    targets = anim.stage.motion(open_mouth[None])[1]
    inside = polygon_mask(targets[:, list(INNER_LIPS)], anim.stage.output_points)[0] > 0.99
    outside = polygon_mask(targets[:, list(INNER_LIPS)], anim.stage.output_points)[0] == 0
    diff = (outs["generator"] - outs["dark"]).abs().mean(1)[0]
    assert float(diff[inside].mean()) > 0.05 and float(diff[outside].max()) < 1e-5
    # the decoder's own render of that motion is what shows inside the opening
    grid, targets = anim.stage.motion(open_mouth[None])
    deformation = torch.nn.functional.interpolate(grid.permute(0, 3, 1, 2), size=(64, 64), mode="bilinear",
                                                  align_corners=False).permute(0, 2, 3, 1)
    with torch.no_grad():
        rendered = anim.model.render_motion(anim.state, deformation, 1 - anim.stage.opening_mask(targets, 64))
    decoded = rendered.get("prediction_model", rendered["prediction"])
    expected = torch.nn.functional.interpolate(decoded, size=(SIZE, SIZE), mode="bicubic",
                                               align_corners=False).clamp(0, 1)
    full = polygon_mask(targets[:, list(INNER_LIPS)], anim.stage.output_points)[0] >= 1.0
    assert full.sum() > 20
    assert float((outs["generator"] - expected).abs().mean(1)[0][full].max()) < 1e-4
