"""ONNX / TorchScript export of the source graph and the per-frame graph, checked against PyTorch."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dagan import DaGAN
from dagan.config import config_to_dict
from dagan.config import load_config
from dagan.export import (FrameGraph, OnnxAnimator, RenderGraph, example_inputs, export_onnx, export_torchscript,
                          main, render_example_inputs)
from dagan.models.dagan import movement_scale

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny model with non-trivial Jacobians, attention and BatchNorm statistics, saved in our format."""
    cfg = config_to_dict(load_config(REPO / "configs" / "dagan-tiny.yaml"))
    cfg["model"]["depth"]["num_layers"] = 10  # light depth backbone: the graphs stay small and quick
    torch.manual_seed(0)
    model = DaGAN(cfg).eval()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        model.generator.AttnModule.gamma.fill_(0.7)
        jac = model.kp_detector.jacobian
        jac.weight.copy_(torch.randn(jac.weight.shape, generator=gen) * 0.01)
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.copy_(torch.rand(mod.running_mean.shape, generator=gen) * 0.2 - 0.1)
                mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=gen) + 0.5)
    path = tmp_path_factory.mktemp("model") / "tiny"
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def onnx_dir(model_dir, tmp_path_factory):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    out = tmp_path_factory.mktemp("export")
    assert main(["--checkpoint", str(model_dir), "--format", "onnx", "--quiet", str(out)]) == 0
    return out


@pytest.mark.slow
def test_cli_writes_graphs_and_verifies(onnx_dir):
    assert all((onnx_dir / f"{name}.onnx").is_file() for name in ("source", "frame", "drive", "render"))
    meta = json.loads((onnx_dir / "export.json").read_text())
    diffs = meta["onnxruntime_max_abs_diff"]
    assert set(diffs) >= {"source/appearance", "source/query", "frame/prediction", "frame/kp_driving_jacobian",
                          "drive/kp_driving_value", "drive/kp_driving_jacobian", "render/prediction"}
    assert meta["render_inputs"][-2:] == ["kp_norm_value", "kp_norm_jacobian"]
    assert max(diffs.values()) <= 1e-4
    assert meta["opset"] >= 16 and meta["relative"] is True
    assert not list(onnx_dir.glob("*.partial*"))  # temp files renamed or removed


@pytest.mark.slow
@torch.no_grad()
def test_onnx_animator_matches_pytorch_with_dynamic_batch(onnx_dir, model_dir):
    model = DaGAN.from_pretrained(model_dir)
    gen = torch.Generator().manual_seed(5)
    source = torch.rand(1, 3, 64, 64, generator=gen)
    driving = torch.rand(5, 3, 64, 64, generator=gen)
    expected = model.animate(source, driving).numpy()  # first frame anchors, adapt scale from convex hulls
    anim = OnnxAnimator(onnx_dir, threads=1)
    anim.set_source(source.numpy())
    got = np.concatenate([anim(driving[:1].numpy()), anim(driving[1:4].numpy()), anim(driving[4:].numpy())])
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-4
    state = model.prepare_source(source)
    kp0 = model.detect_keypoints(driving[:1])
    assert anim.anchor["scale"][0] == pytest.approx(movement_scale(state.kp["value"].numpy(), kp0["value"].numpy()))
    assert anim.anchor["scale"][0] != pytest.approx(1.0)


@pytest.mark.slow
@torch.no_grad()
def test_onnx_drive_and_render_run_the_face_guides_motion(onnx_dir, model_dir):
    """The guide's motion (a Python stage between the drive and render graphs) renders as in PyTorch, and the
    two halves with plain relative motion equal the frame graph."""
    from dagan.inference.guide import LandmarkGuide, stack_landmarks
    from dagan.models.dagan import anchor_motion, normalize_kp

    model = DaGAN.from_pretrained(model_dir)
    gen = torch.Generator().manual_seed(6)
    source = torch.rand(1, 3, 64, 64, generator=gen)
    driving = torch.rand(3, 3, 64, 64, generator=gen)
    anim = OnnxAnimator(onnx_dir, threads=1)
    anim.set_source(source.numpy())
    kp = {k: torch.from_numpy(v) for k, v in anim.keypoints(driving.numpy()).items()}
    state = model.prepare_source(source)
    expected_kp = model.detect_keypoints(driving)
    assert all(torch.allclose(kp[k], expected_kp[k], atol=1e-4) for k in kp)
    kp_anchor, scale = anchor_motion(state.kp, kp)
    guide = LandmarkGuide()
    lm0 = torch.rand(68, 2, generator=gen) * 1.2 - 0.6
    guide.set_anchor(lm0.numpy(), kp_anchor, state.kp, scale)
    landmarks = stack_landmarks([lm0.numpy(), (1.1 * lm0).numpy(), None])
    kp_norm = guide(kp, landmarks)
    got = anim.render(kp_norm["value"].numpy(), kp_norm["jacobian"].numpy())
    assert np.abs(got - model.render(state, kp_norm)["prediction"].numpy()).max() <= 1e-4
    plain = normalize_kp(state.kp, kp, kp_anchor, True, scale)[0]
    halves = anim.render(plain["value"].numpy(), plain["jacobian"].numpy())
    assert np.abs(halves - anim(driving.numpy())).max() <= 1e-4


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated in favour of torch.export
@torch.no_grad()
def test_torchscript_roundtrip(model_dir, tmp_path):
    model = DaGAN.from_pretrained(model_dir)
    paths = export_torchscript(model, tmp_path)
    source, frame_inputs = example_inputs(model, batch=3, seed=7)
    depth, kp_value = torch.jit.load(paths["source"])(source)[:2]
    assert torch.allclose(depth, model.estimate_depth(source), atol=1e-5)
    assert torch.allclose(kp_value, model.detect_keypoints(source)["value"], atol=1e-5)
    prediction = torch.jit.load(paths["frame"])(*frame_inputs)[0]
    assert prediction.shape == (3, 3, 64, 64)
    assert torch.allclose(prediction, FrameGraph(model)(*frame_inputs)[0], atol=1e-5)
    # render from keypoints: the frame graph's prediction from the normalised keypoints of the same frames
    render_inputs = render_example_inputs(model, frame_inputs)
    rendered = torch.jit.load(paths["render"])(*render_inputs)
    assert torch.allclose(rendered, RenderGraph(model)(*render_inputs), atol=1e-5)
    assert torch.allclose(rendered, prediction, atol=1e-5)


def test_cli_errors_are_one_line(tmp_path, capsys):
    from dagan.cliutil import run_cli

    assert run_cli(main, ["--checkpoint", str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "not found" in err and len(err.splitlines()) == 1


def test_low_opset_refused(tiny_model, tmp_path):
    from dagan.errors import InputError

    with pytest.raises(InputError, match="opset"):
        export_onnx(tiny_model, tmp_path, opset=15)


def _spade_blend_model(folder):
    """The shipped small model's decoder kind (SPADE, spectral norm, output blend) at tiny size, with attention
    and a blend mask that varies, saved to ``folder``."""
    cfg = config_to_dict(load_config(REPO / "configs" / "dagan-tiny.yaml"))
    cfg["model"]["depth"]["num_layers"] = 10
    cfg["model"]["generator"].update(type="SPADEDepthAwareGenerator", spade_hidden=16, output_blend=True)
    torch.manual_seed(0)
    model = DaGAN(cfg).eval()
    with torch.no_grad():
        model.generator.AttnModule.gamma.fill_(0.7)
        torch.nn.init.normal_(model.generator.decoder.conv_blend.weight, std=0.1)
    model.save_pretrained(folder)
    return model


@pytest.mark.slow
def test_spade_model_exports_and_matches(tmp_path):
    """The shipped small model's decoder (SPADE, spectral norm, output blend) exports and verifies too."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    _spade_blend_model(tmp_path / "spade")
    assert main(["--checkpoint", str(tmp_path / "spade"), "--format", "onnx", "--quiet", str(tmp_path / "out")]) == 0
    diffs = json.loads((tmp_path / "out" / "export.json").read_text())["onnxruntime_max_abs_diff"]
    assert "frame/prediction" in diffs and max(diffs.values()) <= 1e-4


@pytest.mark.slow
def test_export_at_an_output_size_renders_like_the_animator(tmp_path):
    """--size N: the frame graph takes the portrait at N px and renders at N px, as Animator(output_size=N)."""
    pytest.importorskip("onnxruntime")
    from dagan.inference.animator import Animator

    model = _spade_blend_model(tmp_path / "spade")
    assert main(["--checkpoint", str(tmp_path / "spade"), "--size", "128", "--quiet", str(tmp_path / "out")]) == 0
    meta = json.loads((tmp_path / "out" / "export.json").read_text())
    assert meta["output_size"] == 128 and "source_full" in meta["frame_inputs"]
    assert max(meta["onnxruntime_max_abs_diff"].values()) <= 1e-4
    rng = np.random.default_rng(0)
    source = (rng.random((128, 128, 3)) * 255).astype(np.uint8)
    driving = (rng.random((3, 64, 64, 3)) * 255).astype(np.uint8)
    anim = Animator(model, device="cpu", output_size=128)
    anim.set_source(source)
    expected = np.stack(list(anim.animate_stream(list(driving), batch_size=3))).astype(np.float32) / 255
    onnx_anim = OnnxAnimator(tmp_path / "out", threads=1)
    small = anim.source_image.transpose(2, 0, 1)[None].astype(np.float32) / 255
    full = source.transpose(2, 0, 1)[None].astype(np.float32) / 255
    with pytest.raises(Exception, match="source_full"):
        onnx_anim.set_source(small)
    onnx_anim.set_source(small, full)
    got = onnx_anim(driving.transpose(0, 3, 1, 2).astype(np.float32) / 255)
    assert got.shape == (3, 3, 128, 128)
    assert np.abs(got.transpose(0, 2, 3, 1) - expected).max() < 1.5 / 255  # the animator rounds to 8 bits
