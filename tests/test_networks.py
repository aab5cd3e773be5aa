"""Every network builds from config at tiny size, shapes hold for odd batches, every parameter learns."""
import pytest
import torch

from conftest import REPO
from dagan.config import load_config
from dagan.models import (DaGAN, DepthAwareAttention, PoseNet, build_discriminator, build_generator,
                          cross_attention)
from dagan.models.depth import DepthDecoder, DepthEncoder, disp_to_depth

# parameters that by construction take no part in the forward pass
UNUSED = ("depth_encoder.encoder.fc.", "encoder.encoder.fc.")


def _assert_all_grads(module, prefix=""):
    missing, zero = [], []
    for name, p in module.named_parameters():
        full = prefix + name
        if any(full.startswith(u) for u in UNUSED):
            continue
        if p.grad is None:
            missing.append(full)
        elif not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0:
            zero.append(full)
    assert not missing, f"no gradient: {missing[:8]}"
    assert not zero, f"zero/non-finite gradient: {zero[:8]}"


def _tiny(generator_type="DepthAwareGenerator", output_blend=False):
    cfg = load_config(REPO / "configs" / "dagan-tiny.yaml")
    cfg.model.generator.type = generator_type
    cfg.model.generator.spade_hidden = 16
    cfg.model.generator.output_blend = output_blend
    return cfg.model


@pytest.mark.parametrize("generator_type,output_blend", [("DepthAwareGenerator", False),
                                                         ("SPADEDepthAwareGenerator", False),
                                                         ("SPADEDepthAwareGenerator", True)])
def test_full_model_every_parameter_gets_gradient(generator_type, output_blend):
    torch.manual_seed(0)
    model = DaGAN(_tiny(generator_type, output_blend)).train()
    for m in model.modules():
        if isinstance(m, DepthAwareAttention):
            with torch.no_grad():
                m.gamma.fill_(0.5)  # gamma starts at 0, which would zero the q/k/v gradients
    src, drv = torch.rand(3, 3, 64, 64), torch.rand(3, 3, 64, 64)
    d_src, d_drv = model.estimate_depth(src), model.estimate_depth(drv)
    kp_s = model.detect_keypoints(src, d_src)
    kp_d = model.detect_keypoints(drv, d_drv)
    out = model.generator(src, kp_driving=kp_d, kp_source=kp_s, source_depth=d_src)
    assert out["prediction"].shape == (3, 3, 64, 64)
    loss = (out["prediction"] - drv).abs().mean() + (d_src - 0.3).abs().mean()
    loss = loss + sum(v.float().pow(2).mean() for v in kp_d.values())
    # the coarser disparity heads only serve depth training: give them a loss too
    loss = loss + sum(d.mean() for d in model.depth_decoder(model.depth_encoder(drv)).values())
    loss.backward()
    _assert_all_grads(model)


def test_discriminator_and_pose_net_gradients():
    cfg = _tiny()
    disc = build_discriminator(cfg)
    x = torch.rand(2, 3, 64, 64)
    kp = {"value": torch.rand(2, cfg.num_kp, 2) * 2 - 1}
    out = disc({"prediction_1": x}, kp)
    assert out["prediction_map_1"].shape[:2] == (2, 1)
    (out["prediction_map_1"].mean() + sum(f.mean() for f in out["feature_maps_1"])).backward()
    _assert_all_grads(disc)

    pose = PoseNet(num_layers=18, uncertainty=True)
    a, b = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    axisangle, translation, K, unc = pose(a, b)
    assert axisangle.shape == (2, 1, 3) and translation.shape == (2, 1, 3)
    assert K.shape == (2, 3, 3) and unc.shape == (2, 2, 64, 64)
    assert torch.allclose(K[:, 2], torch.tensor([0.0, 0.0, 1.0]).expand(2, 3))
    assert (K[:, 0, 2] > 0).all() and (K[:, 0, 2] < 64).all(), "principal point must start inside the image"
    (axisangle.sum() + translation.sum() + K.sum() + unc.mean()).backward()
    _assert_all_grads(pose)


@pytest.mark.parametrize("batch", [1, 3, 5])
def test_shapes_for_odd_batches(tiny_model, batch):
    frames = torch.rand(batch, 3, 64, 64)
    with torch.no_grad():
        depth = tiny_model.estimate_depth(frames)
        kp = tiny_model.detect_keypoints(frames, depth)
        out = tiny_model.animate(frames[:1], frames, batch_size=2, return_details=True)
    assert depth.shape == (batch, 1, 64, 64) and ((depth > 0) & (depth < 1)).all()
    assert kp["value"].shape == (batch, 5, 2) and kp["jacobian"].shape == (batch, 5, 2, 2)
    assert kp["value"].abs().max() <= 1
    assert out["prediction"].shape == (batch, 3, 64, 64)
    assert out["occlusion_map"].shape == (batch, 1, 16, 16)
    assert out["deformation"].shape == (batch, 16, 16, 2)
    assert out["sparse_deformed"].shape == (batch, 6, 3, 16, 16)


@pytest.mark.parametrize("num_layers,channels", [(10, [64, 64, 128, 256, 512]), (50, [64, 256, 512, 1024, 2048])])
def test_depth_backbones(num_layers, channels):
    enc = DepthEncoder(num_layers)
    assert list(enc.num_ch_enc) == channels
    dec = DepthDecoder(enc.num_ch_enc, scales=range(4))
    out = dec(enc(torch.rand(1, 3, 64, 96)))
    assert [tuple(out[("disp", s)].shape) for s in range(4)] == [(1, 1, 64 // 2 ** s, 96 // 2 ** s) for s in range(4)]
    scaled, depth = disp_to_depth(torch.tensor([0.0, 1.0]), 0.1, 100.0)
    assert torch.allclose(depth, torch.tensor([100.0, 0.1]))


def test_sdpa_attention_equals_plain_formula():
    torch.manual_seed(0)
    q, k, v = torch.rand(2, 300, 4) * 3, torch.rand(2, 300, 4) * 3, torch.randn(2, 300, 32)
    plain = torch.softmax(q @ k.transpose(1, 2), dim=-1) @ v  # no 1/sqrt(d), as in the official block
    for impl in ("sdpa", "chunked", "plain"):
        assert torch.allclose(cross_attention(q, k, v, impl, chunk=64), plain, atol=1e-5), impl
    attn = DepthAwareAttention(32)
    with torch.no_grad():
        attn.gamma.fill_(0.7)
    d, f = torch.rand(2, 32, 8, 8), torch.rand(2, 32, 8, 8)
    outs = {}
    for impl in ("sdpa", "chunked", "plain"):
        attn.impl = impl
        outs[impl] = attn(d, f)
    assert torch.allclose(outs["sdpa"], outs["plain"], atol=1e-5)
    assert torch.allclose(outs["chunked"], outs["plain"], atol=1e-5)
    assert not torch.allclose(outs["plain"], f), "gamma=0.7 must change the features"


def test_source_cache_equals_full_forward(tiny_model):
    src, drv = torch.rand(1, 3, 64, 64), torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        d = tiny_model.estimate_depth(src)
        kp_s = tiny_model.detect_keypoints(src, d)
        kp_d = tiny_model.detect_keypoints(drv)
        full = [tiny_model.generator(src, {k: v[i:i + 1] for k, v in kp_d.items()}, kp_s, d)["prediction"]
                for i in range(4)]
        cache = tiny_model.generator.encode_source(src, d)
        cached = tiny_model.generator.generate(cache, kp_s, kp_d)["prediction"]
    assert torch.allclose(torch.cat(full), cached, atol=1e-6)


def test_generator_registry_rejects_unknown_type():
    cfg = _tiny()
    cfg.generator.type = "Nope"
    with pytest.raises(ValueError):
        build_generator(cfg)


@pytest.mark.parametrize("cls_name", ["DepthAwareGenerator", "SPADEDepthAwareGenerator", "DaGANPPGenerator"])
def test_misspelled_generator_option_is_a_config_error(cls_name):
    from dagan.errors import ConfigError
    from dagan.models import generator, generator_pp

    cls = getattr(generator, cls_name, None) or getattr(generator_pp, cls_name)
    kwargs = dict(num_channels=3, num_kp=5, block_expansion=16, max_features=64, num_down_blocks=2,
                  num_bottleneck_blocks=1, attention_chunks=64)
    with pytest.raises(ConfigError, match="unknown option 'attention_chunks' \\(did you mean 'attention_chunk'"):
        cls(**kwargs)


def test_misspelled_discriminator_option_is_a_config_error():
    from dagan.errors import ConfigError
    from dagan.models.discriminator import Discriminator

    with pytest.raises(ConfigError, match="Discriminator: unknown option 'use_kps'"):
        Discriminator(num_channels=3, use_kps=True)


def test_daganpp_builds_no_attention_block_it_discards(monkeypatch):
    from dagan.models.generator_pp import DaGANPPGenerator, LevelAttention

    created = set()
    init = DepthAwareAttention.__init__

    def counting(self, *args, **kwargs):
        created.add(id(self))
        init(self, *args, **kwargs)

    monkeypatch.setattr(DepthAwareAttention, "__init__", counting)
    g = build_generator(_tiny("DaGANPPGenerator"))
    assert isinstance(g, DaGANPPGenerator)
    kept = [m for m in g.modules() if isinstance(m, DepthAwareAttention)]
    assert len(kept) == g.num_levels and all(isinstance(m, LevelAttention) for m in kept)
    assert created == {id(m) for m in kept}


def test_sdpa_attention_never_materialises_the_score_matrix():
    """At N = 128^2 positions the fp32 scores alone would take 1 GiB; the fused path must stay far below."""
    import subprocess
    import sys

    code = ("import resource, torch\n"
            "from dagan.models.attention import cross_attention\n"
            "torch.set_num_threads(1)\n"
            "n, d, c = 128 * 128, 32, 256\n"
            "q, k, v = torch.rand(1, n, d), torch.rand(1, n, d), torch.randn(1, n, c)\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "cross_attention(q, k, v, 'sdpa')\n"
            "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    grown_mib = float(out.stdout.strip().splitlines()[-1])
    assert grown_mib < 256, f"attention grew the process by {grown_mib:.0f} MiB"


def test_antialias_downsampling_runs_in_float32_under_autocast():
    """The loss pyramid's large depthwise blur stays float32 under bf16 autocast (a bf16 CPU path made one
    256 px training step take minutes) and equals the plain float32 result."""
    from dagan.nn.blocks import AntiAliasInterpolation2d

    down = AntiAliasInterpolation2d(3, 0.125)
    x = torch.rand(1, 3, 64, 64)
    expected = down(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = down(x)
    assert out.dtype == torch.float32 and out.shape == (1, 3, 8, 8)
    assert torch.equal(out, expected)
    assert down(x.double()).dtype == torch.float64  # float64 stays float64
    assert down(x.bfloat16()).dtype == torch.bfloat16  # low precision is computed in float32, returned as given


def test_output_blend_mask_copies_the_warped_source_or_keeps_the_decoder():
    from dagan.config import config_from_dict, GeneratorConfig
    from dagan.errors import ConfigError

    torch.manual_seed(0)
    blended = DaGAN(_tiny("SPADEDepthAwareGenerator", output_blend=True)).eval()
    plain = DaGAN(_tiny("SPADEDepthAwareGenerator")).eval()
    missing, unexpected = plain.load_state_dict(blended.state_dict(), strict=False)
    assert not missing and unexpected == ["generator.decoder.conv_blend.weight", "generator.decoder.conv_blend.bias"]
    src, drv = torch.rand(1, 3, 64, 64), torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        state = blended.prepare_source(src)
        kp_d = blended.detect_keypoints(drv)
        blended.generator.decoder.conv_blend.bias.fill_(30.0)  # mask 1: the output is the warped source
        out = blended.generator.generate(state.cache, state.kp, kp_d)
        assert torch.allclose(out["prediction"], out["deformed_exact"], atol=1e-6)
        assert (out["prediction"] - drv).abs().max() > 0.1  # ... which is not the driving frame
        blended.generator.decoder.conv_blend.bias.fill_(-30.0)  # mask 0: exactly the plain SPADE decoder
        expected = plain.animate(src, drv, relative=False)
        assert torch.allclose(blended.animate(src, drv, relative=False), expected, atol=1e-6)
        assert (expected - out["deformed_exact"]).abs().max() > 0.1
    with pytest.raises(ConfigError, match="output_blend"):
        config_from_dict({"type": "DepthAwareGenerator", "output_blend": True}, GeneratorConfig, "model.generator")


def test_exact_warp_keeps_still_images_and_moves_whole_pixels():
    from dagan.nn import deform_image_exact, deform_input, make_coordinate_grid

    torch.manual_seed(0)
    image = torch.rand(2, 3, 64, 64)
    identity = make_coordinate_grid((16, 16)).unsqueeze(0).expand(2, -1, -1, -1)
    assert torch.allclose(deform_image_exact(image, identity), image, atol=1e-5)
    assert (deform_input(image, identity) - image).abs().mean() > 0.05  # the official warp resamples
    shifted = identity.clone()
    shifted[..., 0] += 2 * 2 / 63  # sample 2 pixels to the right
    moved = deform_image_exact(image, shifted)
    assert torch.allclose(moved[..., :, :-2], image[..., :, 2:], atol=1e-4)


@pytest.mark.parametrize("num_layers", [10, 18, 50])
def test_depth_resnet_equals_torchvision(num_layers):
    """Our ResNet is torchvision's: same keys, same weights for a seed (same random draws), same features."""
    tv_resnet = pytest.importorskip("torchvision.models.resnet")
    from dagan.models.depth import _BLOCKS, ResNet

    bottleneck, layers = _BLOCKS[num_layers]
    torch.manual_seed(3)
    ours = ResNet(bottleneck, layers).eval()
    torch.manual_seed(3)
    theirs = tv_resnet.ResNet(tv_resnet.Bottleneck if bottleneck else tv_resnet.BasicBlock, layers).eval()
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ours.layer2(ours.layer1(ours.conv1(x))), theirs.layer2(theirs.layer1(theirs.conv1(x))))


def test_inference_does_not_import_torchvision():
    import subprocess
    import sys

    code = ("import sys; from dagan import DaGAN, Animator; import dagan.inference.cli; "
            "Animator(DaGAN('configs/dagan-tiny.yaml'), device='cpu'); sys.exit(int('torchvision' in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0
