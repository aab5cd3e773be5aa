"""The official DaGAN forward pass on the shared tiny checkpoint: every recorded array within 1e-4."""
import numpy as np
import pytest
import torch

from dagan import DaGAN

TOL = 1e-4


@pytest.fixture(scope="module")
def reference(request):
    from conftest import REFERENCE

    if not REFERENCE.exists():
        pytest.skip(f"{REFERENCE} not present (shared reference)")
    ref = dict(np.load(REFERENCE / "reference.npz"))
    model = DaGAN.from_official(config=REFERENCE / "config.yaml", checkpoint=REFERENCE / "checkpoint.pth.tar",
                                depth_encoder=REFERENCE / "depth_encoder.pth",
                                depth_decoder=REFERENCE / "depth_decoder.pth")
    return model, ref


def _err(a, b):
    a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max())


def test_loading_needs_only_paths(reference):
    model, _ = reference
    assert model.config.num_kp == 5 and not model.training


def test_depth_and_keypoints(reference):
    model, ref = reference
    src, drv = torch.tensor(ref["inputs/source"]), torch.tensor(ref["inputs/driving"])
    with torch.no_grad():
        depth_s, depth_d = model.estimate_depth(src), model.estimate_depth(drv)
        kp_s, kp_d = model.detect_keypoints(src, depth_s), model.detect_keypoints(drv, depth_d)
    errors = {
        "depth/source": _err(depth_s, ref["depth/source"]),
        "depth/driving": _err(depth_d, ref["depth/driving"]),
        "kp/source/value": _err(kp_s["value"], ref["kp/source/value"]),
        "kp/source/jacobian": _err(kp_s["jacobian"], ref["kp/source/jacobian"]),
        "kp/driving/value": _err(kp_d["value"], ref["kp/driving/value"]),
        "kp/driving/jacobian": _err(kp_d["jacobian"], ref["kp/driving/jacobian"]),
    }
    print("max abs errors:", errors)
    assert max(errors.values()) <= TOL, errors


@pytest.mark.parametrize("mode", ["relative", "absolute"])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_animate_matches_official(reference, mode, batch_size):
    model, ref = reference
    src, drv = torch.tensor(ref["inputs/source"]), torch.tensor(ref["inputs/driving"])
    relative = mode == "relative"
    out = model.animate(src, drv, relative=relative, adapt_movement_scale=relative, batch_size=batch_size,
                        return_details=True)
    assert abs(out["adapt_movement_scale"] - float(ref[f"{mode}/adapt_movement_scale"])) <= TOL
    errors = {k: _err(out[k], ref[f"{mode}/{k}"])
              for k in ("mask", "sparse_deformed", "occlusion_map", "deformation", "deformed", "prediction")}
    errors["kp_norm/value"] = _err(out["kp_norm"]["value"], ref[f"{mode}/kp_norm/value"])
    errors["kp_norm/jacobian"] = _err(out["kp_norm"]["jacobian"], ref[f"{mode}/kp_norm/jacobian"])
    print(mode, "max abs errors:", errors)
    assert max(errors.values()) <= TOL, errors
    plain = model.animate(src, drv, relative=relative, adapt_movement_scale=relative, batch_size=batch_size)
    assert torch.equal(plain, out["prediction"])


@pytest.mark.parametrize("impl", ["plain", "chunked"])
def test_attention_implementations_reproduce_reference(reference, impl):
    model, ref = reference
    src, drv = torch.tensor(ref["inputs/source"]), torch.tensor(ref["inputs/driving"])
    attn = model.generator.AttnModule
    old = (attn.impl, attn.chunk)
    attn.impl, attn.chunk = impl, 37  # an odd chunk size exercises the ragged last block
    try:
        pred = model.animate(src, drv, relative=True, adapt_movement_scale=True)
    finally:
        attn.impl, attn.chunk = old
    assert _err(pred, ref["relative/prediction"]) <= TOL
