"""Rendering at the output resolution (the network runs small, the source is warped at full size) and the
temporal smoothing of driving keypoints."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dagan import DaGAN
from dagan.inference.animator import Animator
from dagan.inference.smoothing import KeypointSmoother, OneEuroFilter, OneEuroSettings


def _blend_model(tiny_config, mask_logit: float):
    tiny_config.model.generator.type = "SPADEDepthAwareGenerator"
    tiny_config.model.generator.spade_hidden = 16
    tiny_config.model.generator.output_blend = True
    torch.manual_seed(0)
    model = DaGAN(tiny_config.model).eval()
    torch.nn.init.zeros_(model.generator.decoder.conv_blend.weight)
    torch.nn.init.constant_(model.generator.decoder.conv_blend.bias, mask_logit)
    return model


def _portrait(size: int, seed: int = 0) -> torch.Tensor:
    """A smooth random picture with fine detail: (1, 3, size, size) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = F.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=(size, size), mode="bicubic",
                           align_corners=False)
    return (coarse + 0.15 * torch.rand(1, 3, size, size, generator=g)).clamp(0, 1)


@torch.no_grad()
def test_copying_mask_at_zero_motion_returns_the_full_resolution_source(tiny_config):
    model = _blend_model(tiny_config, mask_logit=30.0)  # the mask copies the warped source everywhere
    size = model.image_size
    full = _portrait(4 * size)
    small = F.interpolate(full, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    state = model.prepare_source(small, full)
    out = model.animate_batch(state, small.expand(2, -1, -1, -1), return_details=True)
    assert out["prediction"].shape == (2, 3, 4 * size, 4 * size)
    assert out["prediction_model"].shape == (2, 3, size, size)
    # driving = source: the dense motion is the identity and the exact warp returns the 4x source
    assert (out["prediction"] - full).abs().max() < 1e-4


@torch.no_grad()
def test_decoder_regions_are_upsampled_decoder_output(tiny_config):
    model = _blend_model(tiny_config, mask_logit=-30.0)  # the mask never copies
    size = model.image_size
    full = _portrait(2 * size)
    small = F.interpolate(full, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    out = model.animate_batch(model.prepare_source(small, full), _portrait(size, 1), return_details=True)
    expected = F.interpolate(out["decoded"], size=(2 * size, 2 * size), mode="bicubic", align_corners=False)
    assert (out["prediction"] - expected.clamp(0, 1)).abs().max() < 1e-5


@torch.no_grad()
def test_models_without_blend_upsample_their_prediction(tiny_model):
    size = tiny_model.image_size
    source, driving = _portrait(size), _portrait(size, 1)
    out = tiny_model.animate_batch(tiny_model.prepare_source(source, _portrait(3 * size)), driving,
                                   return_details=True)
    plain = tiny_model.animate_batch(tiny_model.prepare_source(source), driving)
    assert torch.allclose(out["prediction_model"], plain, atol=1e-6)
    expected = F.interpolate(plain, size=(3 * size, 3 * size), mode="bicubic", align_corners=False).clamp(0, 1)
    assert torch.allclose(out["prediction"], expected, atol=1e-6)


@torch.no_grad()
def test_fast_path_renders_the_same_full_resolution_output(tiny_config):
    from dagan.fast import optimize_for_inference

    model = _blend_model(tiny_config, mask_logit=0.0)
    torch.nn.init.normal_(model.generator.decoder.conv_blend.weight, std=0.1)
    size = model.image_size
    full = _portrait(4 * size)
    small = F.interpolate(full, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    driving = _portrait(size, 2).expand(2, -1, -1, -1)
    plain = model.animate_batch(model.prepare_source(small, full), driving)
    fast = optimize_for_inference(model, dtype="float32", inplace=False)
    assert (fast.animate_batch(fast.prepare_source(small, full), driving) - plain).abs().max() < 1e-4


def test_animator_output_size_and_array_shapes(tiny_model):
    anim = Animator(tiny_model, device="cpu", output_size=96)
    source = (np.random.default_rng(0).random((200, 180, 3)) * 255).astype(np.uint8)
    anim.set_source(source)
    out = anim(source)
    assert out.shape == (96, 96, 3) and out.dtype == np.uint8
    items = list(anim.animate_stream([source, source], details=True))
    assert items[0]["prediction"].shape == (96, 96, 3) and items[0]["driving"].shape == (64, 64, 3)
    with pytest.raises(Exception, match="at least 8"):
        Animator(tiny_model, device="cpu", output_size=4)


def test_one_euro_filter_removes_jitter_and_follows_a_step():
    rng = np.random.default_rng(0)
    filt = OneEuroFilter(OneEuroSettings(min_cutoff=1.0, beta=0.5, fps=25))
    noisy = 0.02 * rng.standard_normal(100)
    smoothed = np.array([float(filt(torch.tensor(v))) for v in noisy])
    assert np.std(np.diff(smoothed)) < 0.3 * np.std(np.diff(noisy))
    filt.reset()
    step = np.r_[np.zeros(10), np.ones(30)]
    out = np.array([float(filt(torch.tensor(v))) for v in step])
    assert out[0] == 0.0 and out[-1] > 0.97  # follows the move within about a second at 25 fps
    with pytest.raises(Exception, match="min-cutoff"):
        OneEuroSettings(min_cutoff=0)


def test_keypoint_smoother_is_causal_and_frame_by_frame():
    kp = {"value": torch.randn(6, 4, 2), "jacobian": torch.randn(6, 4, 2, 2)}
    whole = KeypointSmoother()(kp)
    parts = KeypointSmoother()
    pieces = [parts({k: v[i:i + 2] for k, v in kp.items()}) for i in range(0, 6, 2)]
    for name in kp:
        assert torch.allclose(whole[name], torch.cat([p[name] for p in pieces]), atol=1e-6)
        assert torch.equal(whole[name][0], kp[name][0])  # the first frame passes unchanged


def test_animator_smoothing_reduces_keypoint_jitter(tiny_model):
    torch.manual_seed(0)
    frames = [(np.clip(0.5 + 0.1 * np.random.default_rng(i).standard_normal((64, 64, 3)), 0, 1) * 255
               ).astype(np.uint8) for i in range(12)]  # noise frames: the keypoints jump around

    def jitter(anim):
        anim.set_source(frames[0])
        values = []
        for frame in frames:
            out = anim.animate_tensor(anim._frames_to_tensor(frame), return_details=True)
            values.append(out["kp_driving"]["value"])
        return torch.cat(values).diff(dim=0).abs().mean().item()

    plain = jitter(Animator(tiny_model, device="cpu"))
    smooth = jitter(Animator(tiny_model, device="cpu", smooth=True))
    assert smooth < 0.5 * plain


def test_demo_size_and_smooth_options(tmp_path, capsys):
    from dagan.inference import cli
    from dagan.io.video import VideoReader

    out = tmp_path / "r.mp4"
    assert cli.main(["--max-frames", "3", "--size", "128", "--smooth", "0.8", "--result_video", str(out),
                     "--quiet"]) == 0
    frames = list(VideoReader(out))
    assert len(frames) == 3 and frames[0].shape == (128, 128, 3)
    assert cli.main(["--max-frames", "3", "--size", "4", "--result_video", str(tmp_path / "s.mp4"), "--quiet"]) == 2
    assert "--size" in capsys.readouterr().err
    assert not (tmp_path / "s.mp4").exists()


def test_evaluation_scores_at_the_output_size(shared_data, tiny_config):
    from dagan import DaGAN
    from dagan.evaluation.evaluate import BASELINE, EvalSettings, build_metric_suite, run_evaluation

    tiny_config.model.generator.type = "SPADEDepthAwareGenerator"
    tiny_config.model.generator.spade_hidden = 16
    tiny_config.model.generator.output_blend = True
    model = DaGAN(tiny_config.model).eval()
    torch.nn.init.constant_(model.generator.decoder.conv_blend.bias, 30.0)  # copy the warped source
    settings = EvalSettings(protocol="reconstruction", max_frames=3, videos=["drv_lp_d0_256"], output_size=128)
    suite = build_metric_suite("reconstruction", settings, lpips="off", landmarks="off", identity="off")
    report = run_evaluation({"tiny": model}, shared_data, settings, suite=suite, frames_dir=None)
    assert report["image_size"] == 128
    # frame 0 drives itself: the copying model returns the 128 px source exactly, like the baseline
    first = report["_results"][0]["values"]
    assert first["tiny"]["l1"][0] == pytest.approx(first[BASELINE]["l1"][0], abs=1e-3)
