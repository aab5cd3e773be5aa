"""The fast per-frame path (source caching, folded BatchNorm, channels_last, bf16 islands) equals the plain
official per-frame computation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dagan import DaGAN
from dagan.fast import (InstanceStats2d, LowPrecision, SubPixelUpBlock2d, fold_batchnorm, is_optimized,
                        optimize_for_inference, plain_animate, subpixel_upsampling)
from dagan.models.dagan import normalize_kp


def _perturb_batchnorm(model: torch.nn.Module) -> None:
    """Non-trivial running statistics, so folding them into the convs is really exercised."""
    gen = torch.Generator().manual_seed(1)
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.copy_(torch.rand(mod.running_mean.shape, generator=gen) * 0.2 - 0.1)
            mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=gen) + 0.5)
            mod.weight.data.copy_(torch.rand(mod.weight.shape, generator=gen) + 0.5)
            mod.bias.data.copy_(torch.rand(mod.bias.shape, generator=gen) * 0.2 - 0.1)


@pytest.fixture
def frames():
    gen = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, 64, 64, generator=gen), torch.rand(3, 3, 64, 64, generator=gen)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def test_fold_batchnorm_keeps_outputs(tiny_model, frames):
    _perturb_batchnorm(tiny_model)
    source, _ = frames
    before = tiny_model.estimate_depth(source), tiny_model.detect_keypoints(source)["value"]
    n = fold_batchnorm(tiny_model)
    assert n > 20  # ResNet-18 (20 BNs) plus every hourglass/encoder block
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in tiny_model.depth_encoder.modules())
    # pre-activation residual blocks keep the norm that acts on their input
    assert isinstance(tiny_model.generator.bottleneck[0].norm1, torch.nn.BatchNorm2d)
    after = tiny_model.estimate_depth(source), tiny_model.detect_keypoints(source)["value"]
    for x, y in zip(before, after):
        assert torch.allclose(x, y, atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("shape", [(2, 6, 5, 7), (1, 8, 4, 4)])
def test_subpixel_up_block_equals_upsample_then_conv(shape):
    from dagan.nn.blocks import UpBlock2d

    torch.manual_seed(0)
    block = UpBlock2d(shape[1], 5)
    _perturb_batchnorm(block)
    block.eval()
    x = torch.randn(shape)
    expected = block(x)
    holder = torch.nn.Sequential(block)
    assert subpixel_upsampling(holder) == 0  # BatchNorm not folded yet: left alone
    fold_batchnorm(holder)
    assert subpixel_upsampling(holder) == 1 and isinstance(holder[0], SubPixelUpBlock2d)
    for fmt in (torch.contiguous_format, torch.channels_last):
        out = holder(x.contiguous(memory_format=fmt))
        assert out.shape == expected.shape and (out - expected).abs().max() < 1e-5


@torch.no_grad()
def test_fast_fp32_equals_plain_path(tiny_model, frames):
    _perturb_batchnorm(tiny_model)
    tiny_model.generator.AttnModule.gamma.fill_(0.7)  # attention contributes (random init leaves it 0)
    source, driving = frames
    plain = plain_animate(tiny_model, source, driving)
    fast = optimize_for_inference(tiny_model, dtype="float32", inplace=False)
    assert is_optimized(fast) and not is_optimized(tiny_model)
    assert isinstance(fast.generator.AttnModule, LowPrecision)
    assert sum(isinstance(m, SubPixelUpBlock2d) for m in fast.generator.modules()) == len(fast.generator.up_blocks)
    assert fast.generator.AttnModule.impl == "chunked" and tiny_model.generator.AttnModule.impl == "sdpa"
    out = fast.animate(source, driving)
    assert out.dtype == torch.float32 and out.shape == plain.shape
    assert (out - plain).abs().max() <= 1e-4
    # batched frames and the per-frame cached API give the same frames
    batched = fast.animate(source, driving, batch_size=3)
    assert (batched - plain).abs().max() <= 1e-4
    state = fast.prepare_source(source)
    kp0 = fast.detect_keypoints(driving[:1])
    _, scale = normalize_kp(state.kp, kp0, kp0)
    per_frame = torch.cat([fast.animate_batch(state, f, kp0, adapt_movement_scale=scale) for f in driving.split(1)])
    assert (per_frame - plain).abs().max() <= 1e-4


@torch.no_grad()
def test_fast_bf16_close_to_fp32(tiny_model, frames):
    _perturb_batchnorm(tiny_model)
    tiny_model.generator.AttnModule.gamma.fill_(0.7)
    source, driving = frames
    plain = plain_animate(tiny_model, source, driving)
    fast = optimize_for_inference(tiny_model, dtype="bfloat16", inplace=False)
    inner = fast.generator.bottleneck.inner
    assert next(inner.parameters()).dtype == torch.bfloat16
    out = fast.animate(source, driving)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    diff = (out - plain).abs().max().item()
    assert 0 < diff < 0.1  # really computed in bf16, but close
    assert _psnr(out, plain) > 30


@torch.no_grad()
def test_fast_path_with_the_spade_decoder(tiny_config, frames):
    """The shipped small model uses the SPADE decoder with the output blend: fp32 equals the plain path, bf16
    stays close."""
    tiny_config.model.generator.type = "SPADEDepthAwareGenerator"
    tiny_config.model.generator.spade_hidden = 16
    tiny_config.model.generator.output_blend = True
    torch.manual_seed(0)
    model = DaGAN(tiny_config.model).eval()
    _perturb_batchnorm(model)
    model.generator.AttnModule.gamma.fill_(0.7)
    torch.nn.init.normal_(model.generator.decoder.conv_blend.weight, std=0.1)
    source, driving = frames
    plain = plain_animate(model, source, driving)
    fp32 = optimize_for_inference(model, dtype="float32", inplace=False)
    assert isinstance(fp32.generator.decoder, LowPrecision)
    # spectral norms baked into plain weights, instance norms computed in the tensors' own memory format
    assert not any(m._forward_pre_hooks for m in fp32.generator.decoder.modules())
    assert not any(isinstance(m, torch.nn.InstanceNorm2d) for m in fp32.modules())
    assert any(isinstance(m, InstanceStats2d) for m in fp32.modules())
    assert (fp32.animate(source, driving) - plain).abs().max() <= 1e-4
    bf16 = optimize_for_inference(model, dtype="bfloat16", inplace=False).animate(source, driving)
    assert _psnr(bf16, plain) > 30


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_instance_stats_equal_instance_norm(dtype):
    x = (torch.randn(2, 8, 12, 10) * 3 + 5).contiguous(memory_format=torch.channels_last)
    reference = torch.nn.InstanceNorm2d(8)(x)
    out = InstanceStats2d()(x.to(dtype))
    assert out.dtype == dtype and out.is_contiguous(memory_format=torch.channels_last)
    assert (out.float() - reference).abs().max() < (1e-5 if dtype == torch.float32 else 0.05)


def test_optimize_twice_is_refused(tiny_model):
    fast = optimize_for_inference(tiny_model)
    with pytest.raises(ValueError, match="already"):
        optimize_for_inference(fast)


@torch.no_grad()
def test_fast_path_matches_official_reference(reference_dir):
    ref = np.load(reference_dir / "reference.npz")
    model = DaGAN.from_official(reference_dir / "config.yaml", reference_dir / "checkpoint.pth.tar",
                                depth_dir=reference_dir)
    fast = optimize_for_inference(model, dtype="float32")
    source = torch.from_numpy(ref["inputs/source"])
    driving = torch.from_numpy(ref["inputs/driving"])
    out = fast.animate(source, driving, relative=True, adapt_movement_scale=True)
    assert np.abs(out.numpy() - ref["relative/prediction"]).max() <= 1e-4
    out = fast.animate(source, driving, relative=False, adapt_movement_scale=False)
    assert np.abs(out.numpy() - ref["absolute/prediction"]).max() <= 1e-4


def test_motion_normalisation_has_one_implementation(tiny_model, monkeypatch):
    """DaGAN.animate_batch normalises through normalize_kp (so the demo, the export and the Animator share it), and
    normalize_kp takes the exported graphs' tensor scale as is and never scales absolute keypoints."""
    import dagan.models.dagan as dagan_module

    gen = torch.Generator().manual_seed(0)
    kp = [{"value": torch.rand(1, 5, 2, generator=gen) * 2 - 1,
           "jacobian": torch.eye(2).repeat(1, 5, 1, 1) + 0.1 * torch.rand(1, 5, 2, 2, generator=gen)}
          for _ in range(3)]
    source, driving, initial = kp
    tensor_scale = torch.tensor([0.7])
    norm, scale = normalize_kp(source, driving, initial, adapt_movement_scale=tensor_scale)
    assert scale is tensor_scale
    expected = (driving["value"] - initial["value"]) * 0.7 + source["value"]
    assert torch.allclose(norm["value"], expected, atol=1e-6)
    absolute, scale = normalize_kp(source, driving, initial, relative=False, adapt_movement_scale=True)
    assert scale == 1.0 and torch.equal(absolute["value"], driving["value"])

    calls = []
    real = dagan_module.normalize_kp
    monkeypatch.setattr(dagan_module, "normalize_kp", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = tiny_model
    size = model.image_size
    with torch.no_grad():
        state = model.prepare_source(torch.rand(1, 3, size, size, generator=gen))
        model.animate_batch(state, torch.rand(2, 3, size, size, generator=gen))
    assert calls, "DaGAN.animate_batch must normalise motion through normalize_kp"
