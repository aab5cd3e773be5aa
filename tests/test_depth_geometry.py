"""Camera geometry of depth training, checked against scipy and an independent numpy ray caster."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from dagan.training.geometry import (axisangle_to_matrix, backproject, pixel_grid, project,
                                     transformation_from_parameters, warp)
from dagan.training.synthetic_depth import SceneParams, render_video


def _k(size: int, focal: float = 1.0) -> torch.Tensor:
    c = (size - 1) / 2
    return torch.tensor([[[focal * size, 0, c], [0, focal * size, c], [0, 0, 1]]], dtype=torch.float64)


def test_axisangle_matches_scipy_rodrigues():
    rng = np.random.default_rng(0)
    vecs = np.concatenate([rng.normal(size=(16, 3)) * 0.7, np.zeros((1, 3)), [[1e-9, 0, 0]]])
    ours = axisangle_to_matrix(torch.tensor(vecs).view(-1, 1, 3)).numpy()
    for v, m in zip(vecs, ours):
        np.testing.assert_allclose(m[:3, :3], Rotation.from_rotvec(v).as_matrix(), atol=1e-6)
        np.testing.assert_allclose(m[3], [0, 0, 0, 1])
        np.testing.assert_allclose(m[:3, 3], 0)


def test_inverted_transform_is_the_matrix_inverse():
    torch.manual_seed(0)
    axisangle = torch.randn(5, 1, 3, dtype=torch.float64) * 0.3
    translation = torch.randn(5, 1, 3, dtype=torch.float64)
    forward = transformation_from_parameters(axisangle, translation)
    inverse = transformation_from_parameters(axisangle, translation, invert=True)
    torch.testing.assert_close(inverse, torch.linalg.inv(forward))
    torch.testing.assert_close(forward @ inverse, torch.eye(4, dtype=torch.float64).expand(5, 4, 4))
    # T(t) @ R: rotation first, then translation
    torch.testing.assert_close(forward[:, :3, 3], translation[:, 0])


def test_projection_of_known_points_and_identity_grid():
    k = _k(32, 0.8)
    depth = torch.full((1, 1, 32, 32), 3.0, dtype=torch.float64)
    points = backproject(depth, k)
    assert points.shape == (1, 4, 32 * 32)
    torch.testing.assert_close(points[0, 2], torch.full((1024,), 3.0, dtype=torch.float64))
    # pixel (u=5, v=7) -> x = (5 - cx) * z / fx
    idx = 7 * 32 + 5
    assert points[0, 0, idx].item() == pytest.approx((5 - 15.5) * 3 / (0.8 * 32))
    assert points[0, 1, idx].item() == pytest.approx((7 - 15.5) * 3 / (0.8 * 32))
    grid = project(points, k, torch.eye(4, dtype=torch.float64)[None], 32, 32)
    # align_corners=True: pixel 0 -> -1, pixel W-1 -> +1
    expected = pixel_grid(32, 32, dtype=torch.float64)[:2].T.reshape(32, 32, 2) / 31 * 2 - 1
    torch.testing.assert_close(grid[0], expected)


def test_identity_warp_reproduces_the_image():
    torch.manual_seed(0)
    image = torch.rand(2, 3, 24, 40)
    k = torch.tensor([[[30.0, 0, 19.5], [0, 30.0, 11.5], [0, 0, 1]]]).repeat(2, 1, 1)
    depth = torch.rand(2, 1, 24, 40) + 1
    pose = torch.eye(4).repeat(2, 1, 1)
    warped, _ = warp(image, depth, pose, k)
    torch.testing.assert_close(warped, image, atol=1e-5, rtol=0)


def test_scaling_depth_and_translation_together_changes_nothing():
    torch.manual_seed(1)
    k = _k(32)
    depth = torch.rand(1, 1, 32, 32, dtype=torch.float64) * 2 + 2
    axisangle = torch.tensor([[[0.02, -0.03, 0.01]]], dtype=torch.float64)
    translation = torch.tensor([[[0.1, -0.05, 0.02]]], dtype=torch.float64)
    pose = transformation_from_parameters(axisangle, translation)
    pose_scaled = transformation_from_parameters(axisangle, translation * 3.7)
    grid = project(backproject(depth, k), k, pose, 32, 32)
    grid_scaled = project(backproject(depth * 3.7, k), k, pose_scaled, 32, 32)
    torch.testing.assert_close(grid, grid_scaled)
    assert (grid - project(backproject(depth, k), k, torch.eye(4, dtype=torch.float64)[None], 32, 32)).abs().max() > 0.01


@pytest.mark.parametrize("offset", [-1, 1])
def test_warp_with_true_depth_pose_and_k_reproduces_the_target(offset):
    """Frames from the numpy ray caster (not our warp): GT depth/pose/K must explain the target."""
    video = render_video(SceneParams.random(3), num_frames=3, size=64)
    tgt, src = 1, 1 + offset
    target = torch.from_numpy(video.frames[tgt]).permute(2, 0, 1)[None]
    source = torch.from_numpy(video.frames[src]).permute(2, 0, 1)[None]
    depth = torch.from_numpy(video.depth[tgt])[None, None]
    pose = torch.from_numpy(video.relative_pose(tgt, src)).float()[None]
    k = torch.from_numpy(video.intrinsics).float()[None]
    warped, grid = warp(source, depth, pose, k)
    inside = (grid.abs() <= 1).all(-1)[0]
    err = (warped - target).abs().mean(1)[0]
    err_identity = (source - target).abs().mean(1)[0]
    assert inside.float().mean() > 0.8
    # occlusion borders of the sphere are the only misses
    assert err[inside].median() < 0.01
    assert err[inside].mean() < 0.3 * err_identity[inside].mean()
    # a wrong pose (here: the inverse) does clearly worse
    wrong, _ = warp(source, depth, torch.linalg.inv(pose), k)
    assert (wrong - target).abs().mean(1)[0][inside].mean() > 2 * err[inside].mean()
