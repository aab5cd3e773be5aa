"""Losses and random warps on hand-made inputs."""
from __future__ import annotations

import math

import pytest
import torch

from dagan.errors import MissingWeightsError
from dagan.models.discriminator import MultiScaleDiscriminator
from dagan.training import losses as L
from dagan.training.transforms import RandomWarp


def _warp(batch=2, seed=0, **kw):
    params = dict(sigma_affine=0.05, sigma_tps=0.005, points_tps=5)
    params.update(kw)
    return RandomWarp(batch, generator=torch.Generator().manual_seed(seed), **params)


def test_identity_warp_keeps_points_and_images():
    warp = _warp(sigma_affine=0.0, sigma_tps=0.0)
    pts = torch.rand(2, 7, 2) * 2 - 1
    assert torch.equal(warp.warp_coordinates(pts), pts)
    image = torch.rand(2, 3, 16, 16)
    assert torch.allclose(warp.warp_image(image), image, atol=1e-5)
    assert torch.equal(warp.jacobian(pts), torch.eye(2).expand(2, 7, 2, 2))


def test_warp_jacobian_matches_autograd():
    warp = _warp(sigma_tps=0.05)
    pts = (torch.rand(2, 6, 2) * 1.8 - 0.9).requires_grad_(True)
    out = warp.warp_coordinates(pts)
    rows = [torch.autograd.grad(out[..., i].sum(), pts, retain_graph=True)[0] for i in range(2)]
    auto = torch.stack(rows, dim=-2)
    assert torch.allclose(warp.jacobian(pts.detach()), auto, atol=1e-5)
    assert not torch.allclose(auto, warp.theta[:, None, :, :2].expand_as(auto))  # the TPS part matters


def test_warp_is_seeded():
    a, b, c = _warp(seed=1), _warp(seed=1), _warp(seed=2)
    assert torch.equal(a.theta, b.theta) and torch.equal(a.control_params, b.control_params)
    assert not torch.equal(a.theta, c.theta)


def test_equivariance_losses_vanish_for_consistent_keypoints():
    warp = _warp(sigma_tps=0.02)
    kp_t = {"value": torch.rand(2, 5, 2) * 1.6 - 0.8, "jacobian": torch.eye(2).repeat(2, 5, 1, 1) * 1.3}
    kp_d = {"value": warp.warp_coordinates(kp_t["value"]),
            "jacobian": torch.matmul(warp.jacobian(kp_t["value"]), kp_t["jacobian"])}
    assert L.equivariance_value_loss(kp_d, kp_t, warp) < 1e-6
    assert L.equivariance_jacobian_loss(kp_d, kp_t, warp) < 1e-5
    shifted = {"value": kp_d["value"] + 0.1, "jacobian": kp_d["jacobian"] * 2}
    assert abs(float(L.equivariance_value_loss(shifted, kp_t, warp)) - 0.1) < 1e-5
    # J_d^-1 (dT J_t) = I / 2 -> mean |I - I/2| over the 4 entries = 0.25
    assert abs(float(L.equivariance_jacobian_loss(shifted, kp_t, warp)) - 0.25) < 1e-5


def test_lsgan_and_feature_matching_hand_values():
    ones, zeros, half = torch.ones(2, 1, 4, 4), torch.zeros(2, 1, 4, 4), torch.full((2, 1, 4, 4), 0.5)
    assert float(L.lsgan_discriminator_loss([ones], [zeros])) == 0.0
    assert float(L.lsgan_discriminator_loss([zeros], [ones])) == 2.0
    assert float(L.lsgan_generator_loss([half, ones])) == pytest.approx(0.25)
    real = [[torch.zeros(1, 2, 3, 3), torch.ones(1, 2, 2, 2)]]
    fake = [[torch.full((1, 2, 3, 3), 0.5), torch.ones(1, 2, 2, 2) * 3]]
    assert float(L.feature_matching_loss(real, fake, [10, 1])) == pytest.approx(10 * 0.5 + 1 * 2)


def test_kp_distance():
    far = {"value": torch.tensor([[[-0.5, -0.5], [0.5, 0.5], [0.5, -0.5]]])}
    assert float(L.kp_distance_loss(far)) == 0.0
    same = {"value": torch.zeros(1, 3, 2, requires_grad=True)}
    value = L.kp_distance_loss(same)
    assert float(value.detach()) == pytest.approx(2 * 6 / 9, rel=1e-3)  # 6 off-diagonal pairs at distance ~0, of 9
    close = {"value": torch.tensor([[[0.0, 0.0], [0.05, 0.0]]], requires_grad=True)}
    L.kp_distance_loss(close).backward()
    assert close["value"].grad[0, 0, 0] > 0 > close["value"].grad[0, 1, 0]  # pushes them apart


def test_pyramid_l1_ssim():
    pyr = L.ImagePyramid([1, 0.5, 0.25])
    x = torch.rand(2, 3, 32, 32)
    px = pyr(x)
    assert [v.shape[-1] for v in px.values()] == [32, 16, 8]
    assert float(L.pyramid_ssim_loss(px, px)) == pytest.approx(0.0, abs=1e-6)
    full = L.ImagePyramid([1])
    assert float(L.pyramid_l1_loss(full(x), full(x + 0.1))) == pytest.approx(0.1, abs=1e-5)
    assert float(L.pyramid_l1_loss(px, pyr(x + 0.1))) > float(L.pyramid_l1_loss(full(x), full(x + 0.1)))
    assert float(L.pyramid_ssim_loss(px, pyr(torch.rand(2, 3, 32, 32)))) > 0.2
    assert torch.allclose(L.ssim(x, x), torch.ones(1), atol=1e-5)
    # the pyramid's names are the discriminator's
    disc = MultiScaleDiscriminator(scales=[1, 0.5], num_channels=3, block_expansion=4, num_blocks=2,
                                   max_features=8, use_kp=False)
    out = disc(L.ImagePyramid([1, 0.5])(x))
    assert set(out) == {"feature_maps_1", "prediction_map_1", "feature_maps_0.5", "prediction_map_0.5"}


def test_depth_consistency():
    a = torch.full((1, 1, 4, 4), 0.5)
    assert float(L.depth_consistency_loss(a, a)) == 0.0
    assert float(L.depth_consistency_loss(a, a + 0.25)) == pytest.approx(0.25)


def test_vgg19_missing_weights_message(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError, match="vgg19-dcbb9e9d.pth"):
        L.Vgg19Features()
    with pytest.raises(MissingWeightsError, match="not found"):
        L.Vgg19Features(str(tmp_path / "nope.pth"))


def test_vgg19_loads_from_hub_cache_and_measures(tmp_path, monkeypatch):
    from torchvision.models.vgg import cfgs, make_layers

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(0)
    reference = make_layers(cfgs["E"])  # random weights saved under torchvision's file name
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save({"features." + k: v for k, v in reference.state_dict().items()},
               tmp_path / "hub" / "checkpoints" / L.VGG19_FILE)
    vgg = L.Vgg19Features()
    assert torch.equal(vgg.slices[0][0].weight, reference[0].weight)
    assert torch.equal(vgg.slices[4][-2].weight, reference[28].weight)
    assert all(not p.requires_grad for p in vgg.parameters())
    pyr = L.ImagePyramid([1])
    x = torch.rand(1, 3, 32, 32)
    assert float(L.perceptual_loss(vgg, pyr(x), pyr(x), [1] * 5)) == 0.0
    y = torch.rand(1, 3, 32, 32, requires_grad=True)
    loss = L.perceptual_loss(vgg, pyr(x), pyr(y), [1] * 5)
    loss.backward()
    assert float(loss.detach()) > 0 and y.grad.abs().sum() > 0
    assert math.isfinite(float(loss.detach()))
