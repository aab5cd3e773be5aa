"""Loss pieces of depth training on hand-made cases."""
from __future__ import annotations

import pytest
import torch

from dagan.training.depth_losses import (SIGMA_FLOOR, dssim, edge_aware_smoothness, min_reprojection,
                                         photometric_error, uncertainty_weighted)
from dagan.training.geometry import transformation_from_parameters, warp


def _texture(b=2, h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(b, 3, h // 4, w // 4, generator=g)
    return torch.nn.functional.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)


def test_identical_frames_give_zero_photometric_error():
    img = _texture()
    assert photometric_error(img, img).abs().max() < 1e-6
    assert dssim(img, img).abs().max() < 1e-6
    noisy = (img + 0.1 * torch.randn_like(img)).clamp(0, 1)
    assert photometric_error(noisy, img).mean() > 0.01


def test_ssim_of_constant_images_follows_the_formula():
    a, b = 0.3, 0.6
    x, y = torch.full((1, 1, 8, 8), a), torch.full((1, 1, 8, 8), b)
    c1 = 0.01 ** 2
    expected = (1 - (2 * a * b + c1) / (a * a + b * b + c1)) / 2
    torch.testing.assert_close(dssim(x, y), torch.full_like(x, expected))
    # pe = 0.85 * dssim + 0.15 * L1
    pe = photometric_error(x.expand(1, 3, 8, 8), y.expand(1, 3, 8, 8))
    torch.testing.assert_close(pe, torch.full((1, 1, 8, 8), 0.85 * expected + 0.15 * (b - a)))


def test_min_reprojection_takes_the_per_pixel_minimum():
    a = torch.tensor([[[[0.1, 0.5], [0.3, 0.9]]]])
    b = torch.tensor([[[[0.2, 0.4], [0.3, 0.1]]]])
    out = min_reprojection(torch.cat([a, b], 1), identity=None)
    assert out["loss"].item() == pytest.approx((0.1 + 0.4 + 0.3 + 0.1) / 4)
    assert out["automask"].min() == 1


def test_automask_masks_static_pixels():
    """A static scene (source == target) warped with a non-zero pose: the identity term wins."""
    torch.manual_seed(0)
    img = _texture(1, 32, 32)
    k = torch.tensor([[[32.0, 0, 15.5], [0, 32.0, 15.5], [0, 0, 1]]])
    depth = torch.full((1, 1, 32, 32), 2.0, requires_grad=True)
    pose = transformation_from_parameters(torch.tensor([[[0.0, 0.02, 0.0]]]), torch.tensor([[[0.1, 0.0, 0.0]]]))
    warped, _ = warp(img, depth, pose, k)
    reprojection = photometric_error(warped, img)
    identity = photometric_error(img, img)
    out = min_reprojection(reprojection, identity)
    assert out["automask"].mean() < 0.05  # almost every pixel is masked
    out["loss"].backward()
    assert depth.grad.abs().max() < 1e-6  # masked pixels pass no gradient to the depth
    # a moving scene: the warp explains the target better than the unwarped source
    shifted = torch.roll(img, 2, dims=-1)
    moving = min_reprojection(photometric_error(img, img), photometric_error(shifted, img))
    assert moving["automask"].mean() > 0.95


def test_smoothness_is_zero_on_constant_disparity_and_edge_aware():
    img = _texture(1, 16, 16)
    for value in (0.01, 0.5, 0.99):
        assert edge_aware_smoothness(torch.full((1, 1, 16, 16), value), img).item() == pytest.approx(0, abs=1e-6)
    step = torch.ones(1, 1, 16, 16)
    step[..., 8:] = 2.0
    flat_image = torch.full((1, 3, 16, 16), 0.5)
    edge_image = flat_image.clone()
    edge_image[..., 8:] = 1.0
    flat = edge_aware_smoothness(step, flat_image)
    at_edge = edge_aware_smoothness(step, edge_image)
    assert flat > 0
    assert at_edge < flat  # a depth edge that coincides with an image edge costs less
    # mean normalisation: scaling the disparity does not change the loss
    assert edge_aware_smoothness(step * 0.1, flat_image).item() == pytest.approx(flat.item(), rel=1e-5)


def test_uncertainty_loss_is_minimal_at_sigma_equal_pe_and_downweights():
    pe = torch.tensor([0.05, 0.2, 0.8])
    u = torch.zeros(3, requires_grad=True)
    opt = torch.optim.Adam([u], lr=0.05)
    for _ in range(800):
        opt.zero_grad()
        uncertainty_weighted(pe, u).sum().backward()
        opt.step()
    sigma = torch.nn.functional.softplus(u.detach()) + SIGMA_FLOOR
    torch.testing.assert_close(sigma, pe, atol=5e-3, rtol=0.02)
    # the photometric gradient shrinks where sigma is large
    p = torch.full((2,), 0.3, requires_grad=True)
    uncertainty_weighted(p, torch.tensor([-2.0, 3.0])).sum().backward()
    assert p.grad[1] < 0.2 * p.grad[0]


def test_uncertainty_applies_to_the_winning_warp_only():
    reprojection = torch.tensor([[[[0.1]], [[0.4]]]])
    identity = torch.tensor([[[[0.9]], [[0.9]]]])
    u = torch.tensor([[[[1.0]], [[-5.0]]]])
    out = min_reprojection(reprojection, identity, uncertainty=u, noise=0)
    sigma = torch.nn.functional.softplus(torch.tensor(1.0)) + SIGMA_FLOOR
    assert out["loss"].item() == pytest.approx((0.1 / sigma + torch.log(sigma)).item(), rel=1e-5)
