"""The Animator: cached source, per-frame == batched == DaGAN.animate, anchoring, the fast path, dtypes, errors."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from dagan.errors import InputError
from dagan.fast import is_optimized
from dagan.inference.animator import Animator
from dagan.inference.synthetic import HeadPose, SyntheticHead, synthetic_driving


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def clip():
    return list(synthetic_driving(5, size=64, seed=2))


@pytest.fixture(scope="module")
def source():
    return SyntheticHead(size=64).render(HeadPose(0.1, -0.05, 0.05))


def _t(frames):
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255


def test_per_frame_batched_and_model_animate_agree(tiny_model, clip, source):
    anim = Animator(tiny_model, device="cpu")
    anim.set_source(source)
    per_frame = torch.cat([anim.animate_tensor(_t([f])) for f in clip])
    anim.reset()
    batched = torch.cat([anim.animate_tensor(_t(clip[:3])), anim.animate_tensor(_t(clip[3:]))])
    reference = tiny_model.animate(_t([source]), _t(clip))
    assert torch.allclose(per_frame, batched, atol=1e-5)
    assert torch.allclose(per_frame, reference, atol=1e-5)
    anim.reset()
    stream = list(anim.animate_stream(clip, batch_size=2))
    anim.reset()
    single = [anim(f) for f in clip]
    assert all(s.shape == (64, 64, 3) and s.dtype == np.uint8 for s in stream)
    assert max(np.abs(a.astype(int) - b).max() for a, b in zip(stream, single)) <= 1


def test_source_work_is_done_once(tiny_model, clip, source, monkeypatch):
    anim = Animator(tiny_model, device="cpu")
    calls = {"prepare": 0, "encode": 0}
    prepare, encode = tiny_model.prepare_source, tiny_model.generator.encode_source

    def counting_prepare(*a, **k):
        calls["prepare"] += 1
        return prepare(*a, **k)

    def counting_encode(*a, **k):
        calls["encode"] += 1
        return encode(*a, **k)

    monkeypatch.setattr(tiny_model, "prepare_source", counting_prepare)
    monkeypatch.setattr(tiny_model.generator, "encode_source", counting_encode)
    anim.set_source(source)
    for _ in anim.animate_stream(clip, batch_size=1):
        pass
    assert calls == {"prepare": 1, "encode": 1}


def test_first_frame_anchors_and_reset_reanchors(tiny_model, clip, source):
    anim = Animator(tiny_model, device="cpu")
    anim.set_source(source)
    first = anim(clip[0])
    later = anim(clip[3])
    anim.reset()
    reanchored = anim(clip[3])
    fresh = Animator(tiny_model, device="cpu")
    fresh.set_source(source)
    assert np.array_equal(fresh(clip[3]), reanchored)
    # relative motion from the anchor to itself is zero: the result does not depend on which frame anchors
    assert np.abs(first.astype(int) - reanchored).max() <= 1
    assert not np.array_equal(later, reanchored)


def test_set_anchor_matches_official_best_frame_order(tiny_model, clip, source):
    """Official --find_best_frame animates forward and backward from the best frame; anchoring at that
    frame and animating in order gives the same frames."""
    best = 2
    anim = Animator(tiny_model, device="cpu")
    anim.set_source(source)
    anim.set_anchor(clip[best])
    ours = anim.animate_tensor(_t(clip))
    forward = tiny_model.animate(_t([source]), _t(clip[best:]))
    backward = tiny_model.animate(_t([source]), _t(clip[:best + 1][::-1]))
    official = torch.cat([backward.flip(0), forward[1:]])
    assert torch.allclose(ours, official, atol=1e-5)


def test_tensor_in_tensor_out_and_resizing(tiny_model, clip, source):
    anim = Animator(tiny_model, device="cpu")
    anim.set_source(torch.from_numpy(source).permute(2, 0, 1).float() / 255)
    out = anim(_t([clip[1]])[0])
    assert isinstance(out, torch.Tensor) and out.shape == (3, 64, 64)
    big = np.kron(clip[1], np.ones((3, 3, 1), np.uint8))  # 192x192 -> resized to 64
    assert anim(big).shape == (64, 64, 3)


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_runs_close_to_fp32(tiny_model, clip, source, dtype, fast):
    """Low precision: the fast path's conv bodies in ``dtype`` (or autocast on the plain model, fast=False)."""
    ref = Animator(copy.deepcopy(tiny_model), device="cpu", fast=False)
    ref.set_source(source)
    low = Animator(tiny_model, device="cpu", dtype=dtype, fast=fast)
    low.set_source(source)
    assert is_optimized(low.model) == fast
    a = ref.animate_tensor(_t(clip[:2]))
    b = low.animate_tensor(_t(clip[:2]))
    assert b.dtype == torch.float32 and torch.isfinite(b).all()
    assert 0 < (a - b).abs().mean() < 0.05


def test_fast_path_is_the_default_and_matches_plain_fp32(tiny_model, clip, source):
    plain = Animator(copy.deepcopy(tiny_model), device="cpu", fast=False)
    fast = Animator(tiny_model, device="cpu")
    assert is_optimized(fast.model) and not is_optimized(plain.model)
    assert fast.model is tiny_model  # rewritten in place: no second copy of the weights
    for anim in (plain, fast):
        anim.set_source(source)
    assert (plain.animate_tensor(_t(clip)) - fast.animate_tensor(_t(clip))).abs().max() < 1e-4
    with pytest.raises(InputError, match="already optimized for inference in float32"):
        Animator(tiny_model, device="cpu", dtype="bfloat16")
    assert Animator(tiny_model, device="cpu", dtype="float32").model is tiny_model


def test_auto_dtype_follows_the_device(tiny_model, monkeypatch):
    import dagan.utils

    monkeypatch.setattr(dagan.utils, "cpu_has_bf16_kernels", lambda: True)
    assert Animator(copy.deepcopy(tiny_model), device="cpu", dtype="auto").dtype == torch.bfloat16
    monkeypatch.setattr(dagan.utils, "cpu_has_bf16_kernels", lambda: False)
    assert Animator(tiny_model, device="cpu", dtype="auto").dtype == torch.float32


def test_details_stream_gives_depth(tiny_model, clip, source):
    anim = Animator(tiny_model, device="cpu")
    anim.set_source(source)
    items = list(anim.animate_stream(clip[:3], batch_size=2, details=True))
    assert len(items) == 3
    assert items[0]["driving_depth"].shape == (64, 64) and items[0]["prediction"].dtype == np.uint8
    depth = tiny_model.estimate_depth(_t(clip[:3]))
    assert np.allclose(items[2]["driving_depth"], depth[2, 0].detach().numpy(), atol=1e-5)


def test_api_errors_are_typed(tiny_model, clip):
    anim = Animator(tiny_model, device="cpu")
    with pytest.raises(InputError, match="set_source"):
        anim(clip[0])
    with pytest.raises(InputError):
        anim.set_source(np.zeros((4, 4, 7), np.uint8))
    with pytest.raises(InputError, match="not found"):
        anim.set_source("/no/such/portrait.png")
    with pytest.raises(InputError):
        Animator(tiny_model, device="cpu", dtype="int8")
    with pytest.raises(InputError):
        Animator("not a model")
