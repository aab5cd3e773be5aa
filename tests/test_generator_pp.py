"""DaGAN++ generator: per-level shapes and gradients, fused == plain attention at every level, windowed
attention against an independent masked reference, source caching, and the DaGAN model paths."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dagan import DaGAN, load_config
from dagan.config import config_to_dict
from dagan.errors import ConfigError
from dagan.models import build_generator
from dagan.models.generator_pp import DaGANPPGenerator, LevelAttention, window_merge, window_partition

from conftest import REPO, ShiftedPairs

TINY_PP = REPO / "configs" / "daganpp-tiny.yaml"


@pytest.fixture
def pp_config():
    return load_config(TINY_PP)


@pytest.fixture
def generator(pp_config):
    torch.manual_seed(0)
    gen = build_generator(pp_config.model)
    # gamma starts at 0 (the attention is a no-op at init); open every level so the tests see it
    with torch.no_grad():
        for level in range(gen.num_levels):
            gen.level_attention(level).gamma.fill_(0.7)
    return gen


def _inputs(batch: int = 2, size: int = 64, num_kp: int = 5, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    source = torch.rand(batch, 3, size, size, generator=g)
    depth = torch.rand(batch, 1, size, size, generator=g)

    def kp():
        jac = torch.eye(2).expand(batch, num_kp, 2, 2) + 0.1 * torch.randn(batch, num_kp, 2, 2, generator=g)
        return {"value": torch.rand(batch, num_kp, 2, generator=g) - 0.5, "jacobian": jac}

    return source, depth, kp(), kp()


def test_config_builds_daganpp(pp_config):
    assert pp_config.model.type == "daganpp"
    gen = build_generator(pp_config.model)
    assert isinstance(gen, DaGANPPGenerator)
    assert gen.num_levels == pp_config.model.generator.num_down_blocks + 1
    # type daganpp alone selects the generator, whatever generator.type says
    cfg = load_config({"model": {"type": "daganpp", "generator": {"type": "DepthAwareGenerator"}}})
    assert cfg.model.generator.type == "DaGANPPGenerator"
    vox = load_config(REPO / "configs" / "daganpp-vox-256.yaml")
    assert vox.model.generator.type == "DaGANPPGenerator" and vox.model.num_kp == 15


def test_config_rejects_too_narrow_levels():
    with pytest.raises(ConfigError, match="block_expansion"):
        load_config({"model": {"type": "daganpp", "generator": {"block_expansion": 4}}})
    with pytest.raises(ConfigError, match="attention_window"):
        load_config({"model": {"type": "daganpp", "generator": {"attention_window": -1}}})


def test_per_level_shapes_and_cache(generator, pp_config):
    source, depth, kp_s, kp_d = _inputs()
    generator.eval()
    cache = generator.encode_source(source, depth)
    g = pp_config.model.generator
    for level in range(generator.num_levels):
        channels = min(g.max_features, g.block_expansion * 2 ** level)
        size = 64 // 2 ** level
        assert cache[f"appearance_{level}"].shape == (2, channels, size, size)
        assert cache[f"depth_feat_{level}"].shape == (2, channels, size, size)
        assert cache[f"query_{level}"].shape[0] == 2  # batch first, so a batch-1 cache broadcasts
    # generate needs exactly the advertised entries (the depth features are kept for inspection only)
    needed = {k: cache[k] for k in generator.cache_keys}
    torch.testing.assert_close(generator.generate(needed, kp_s, kp_d)["prediction"],
                               generator.generate(cache, kp_s, kp_d)["prediction"])
    levels = generator.level_features(cache, kp_s, kp_d)
    assert [tuple(f.shape) for f in levels] == [
        (2, min(g.max_features, g.block_expansion * 2 ** level), 64 // 2 ** level, 64 // 2 ** level)
        for level in range(generator.num_levels)]
    out = generator.generate(cache, kp_s, kp_d)
    assert out["prediction"].shape == (2, 3, 64, 64)
    assert 0 < out["prediction"].min() and out["prediction"].max() < 1
    for key in ("deformed", "deformation", "mask", "sparse_deformed", "occlusion_map"):
        assert key in out


def test_tiny_config_windows_the_finest_level_only(generator):
    # 64^2 > attention_full_max = 1024: 16x16 windows; 32^2 and coarser: full attention
    assert generator.level_attention(0).window_shape(64, 64) == (16, 16)
    for level in range(1, generator.num_levels):
        size = 64 // 2 ** level
        assert generator.level_attention(level).window_shape(size, size) is None


def test_every_parameter_gets_a_gradient(generator):
    generator.train()
    source, depth, kp_s, kp_d = _inputs()
    out = generator(source, kp_d, kp_s, depth)
    (out["prediction"].mean() + out["occlusion_map"].mean()).backward()
    missing = [name for name, p in generator.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reaches {missing}"


def test_gamma_of_every_level_learns_from_zero_init(pp_config):
    torch.manual_seed(0)
    gen = build_generator(pp_config.model).train()
    source, depth, kp_s, kp_d = _inputs()
    gen(source, kp_d, kp_s, depth)["prediction"].mean().backward()
    for level in range(gen.num_levels):
        gamma = gen.level_attention(level).gamma
        assert gamma.item() == 0.0
        assert gamma.grad is not None and gamma.grad.abs().item() > 0, f"level {level}"


@pytest.mark.parametrize("impl", ["sdpa", "chunked"])
def test_fast_attention_equals_plain_at_every_level(generator, impl):
    generator.eval()
    source, depth, kp_s, kp_d = _inputs()
    with torch.no_grad():
        cache = generator.encode_source(source, depth)
        generator.set_attention_impl("plain")
        plain = generator.level_features(cache, kp_s, kp_d)
        plain_pred = generator.generate(cache, kp_s, kp_d)["prediction"]
        generator.set_attention_impl(impl)
        for attn in (generator.level_attention(level) for level in range(generator.num_levels)):
            attn.chunk = 100  # several chunks at every level
        fast = generator.level_features(cache, kp_s, kp_d)
        fast_pred = generator.generate(cache, kp_s, kp_d)["prediction"]
    for level, (a, b) in enumerate(zip(plain, fast)):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4, msg=f"level {level}")
    torch.testing.assert_close(fast_pred, plain_pred, atol=1e-5, rtol=1e-4)


def _masked_reference(attn: LevelAttention, depth_feat, feat, window):
    """Full attention restricted to same-window pairs by a mask: an independent statement of windowing."""
    b, c, h, w = feat.shape
    q = F.relu(attn.query_conv(depth_feat)).flatten(2).transpose(1, 2)
    k = F.relu(attn.key_conv(feat)).flatten(2).transpose(1, 2)
    v = F.relu(attn.value_conv(feat)).flatten(2).transpose(1, 2)
    rows = torch.arange(h).view(h, 1).expand(h, w) // window[0]
    cols = torch.arange(w).view(1, w).expand(h, w) // window[1]
    ids = (rows * w + cols).flatten()
    scores = (q @ k.transpose(1, 2)).masked_fill(ids.view(-1, 1) != ids.view(1, -1), float("-inf"))
    out = torch.softmax(scores, dim=-1) @ v
    return attn.gamma * out.transpose(1, 2).reshape(b, c, h, w) + feat


@pytest.mark.parametrize("impl", ["plain", "sdpa"])
@pytest.mark.parametrize("size,window,expected", [((8, 8), 4, (4, 4)), ((12, 8), 8, (6, 8)), ((8, 8), 8, (8, 8))])
def test_windowed_attention_matches_masked_full_attention(impl, size, window, expected):
    torch.manual_seed(0)
    attn = LevelAttention(16, impl=impl, window=window, full_max=0)
    with torch.no_grad():
        attn.gamma.fill_(1.3)
    depth_feat, feat = torch.randn(2, 16, *size), torch.randn(2, 16, *size)
    assert attn.window_shape(*size) == expected
    with torch.no_grad():
        got = attn(depth_feat, feat)
        cached = attn(None, feat, query=attn.project_query(depth_feat))
        want = _masked_reference(attn, depth_feat, feat, expected)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(cached, got)


def test_one_window_covering_the_map_is_full_attention():
    torch.manual_seed(0)
    windowed = LevelAttention(16, impl="plain", window=8, full_max=0)
    full = LevelAttention(16, impl="plain", window=0)
    full.load_state_dict(windowed.state_dict())
    with torch.no_grad():
        windowed.gamma.fill_(0.9)
        full.gamma.fill_(0.9)
        depth_feat, feat = torch.randn(1, 16, 8, 8), torch.randn(1, 16, 8, 8)
        torch.testing.assert_close(windowed(depth_feat, feat), full(depth_feat, feat))
        # and smaller windows really do change the result (the masked test above is not vacuous)
        windowed.window = 4
        assert not torch.allclose(windowed(depth_feat, feat), full(depth_feat, feat), atol=1e-4)


def test_window_partition_round_trip():
    x = torch.arange(2 * 3 * 12 * 8, dtype=torch.float32).view(2, 3, 12, 8)
    windows = window_partition(x, (4, 2))
    assert windows.shape == (2, 12, 8, 3)
    # the first window holds rows 0..3, cols 0..1 of every channel
    torch.testing.assert_close(windows[0, 0, :, 1], x[0, 1, :4, :2].flatten())
    torch.testing.assert_close(window_merge(windows, (4, 2), (12, 8)), x)


def test_batch1_cache_broadcasts_and_driving_depth_is_unused(generator):
    generator.eval()
    source, depth, kp_s, kp_d = _inputs(batch=3)
    source, depth = source[:1], depth[:1]
    kp_s = {k: v[:1] for k, v in kp_s.items()}
    kp_s3 = {k: v.expand(3, *v.shape[1:]) for k, v in kp_s.items()}
    with torch.no_grad():
        streamed = generator.generate(generator.encode_source(source, depth), kp_s, kp_d)["prediction"]
        full = generator(source.expand(3, -1, -1, -1), kp_d, kp_s3, depth.expand(3, -1, -1, -1),
                         driving_depth=torch.rand(3, 1, 64, 64))["prediction"]
    torch.testing.assert_close(streamed, full, atol=1e-5, rtol=1e-4)


def test_each_level_attends_with_its_own_source_depth_query(generator):
    generator.eval()
    source, depth, kp_s, kp_d = _inputs()
    with torch.no_grad():
        cache = generator.encode_source(source, depth)
        other = generator.encode_source(source, 1 - depth)
        base = generator.level_features(cache, kp_s, kp_d)
        for level in range(generator.num_levels):
            assert not torch.allclose(cache[f"query_{level}"], other[f"query_{level}"]), f"level {level}"
            # sharpen this level's queries only: its output moves, every other level stays put
            changed = dict(cache)
            changed[f"query_{level}"] = cache[f"query_{level}"] * 50
            moved = generator.level_features(changed, kp_s, kp_d)
            for other_level, (a, b) in enumerate(zip(base, moved)):
                delta = (a - b).abs().max().item()
                if other_level == level:
                    assert delta > 1e-6, f"level {level} ignores its query"
                else:
                    assert delta == 0.0, f"query of level {level} leaks into level {other_level}"


def test_dagan_model_animate_and_round_trip(tmp_path, pp_config):
    torch.manual_seed(0)
    model = DaGAN(pp_config.model).eval()
    with torch.no_grad():
        for level in range(model.generator.num_levels):
            model.generator.level_attention(level).gamma.fill_(0.5)
    source = torch.rand(1, 3, 64, 64)
    driving = torch.rand(3, 3, 64, 64)
    video = model.animate(source, driving, batch_size=2)
    assert video.shape == (3, 3, 64, 64)
    loaded = DaGAN.from_pretrained(model.save_pretrained(tmp_path / "pp"))
    assert isinstance(loaded.generator, DaGANPPGenerator)
    assert loaded.config == model.config
    torch.testing.assert_close(loaded.animate(source, driving, batch_size=2), video)
    # the single-file layout that training checkpoints use
    ckpt = tmp_path / "step.pt"
    torch.save({"format_version": 1, "config": config_to_dict(pp_config), "state_dict": model.state_dict()}, ckpt)
    torch.testing.assert_close(DaGAN.from_pretrained(ckpt).animate(source, driving), video)


def test_three_training_steps_train_attention_at_every_level(tmp_path, pp_config):
    from dagan.training.trainer import train

    pp_config.train.batch_size = 2
    pp_config.train.train_depth = False
    pp_config.train.log_every = pp_config.train.image_every = pp_config.train.save_every = 3
    result = train(pp_config, ShiftedPairs(), tmp_path, device="cpu", max_steps=3, progress=False)
    assert result["step"] == 3
    model = DaGAN.from_pretrained(tmp_path / "checkpoint.pt")
    assert isinstance(model.generator, DaGANPPGenerator)
    for level in range(model.generator.num_levels):
        gamma = model.generator.level_attention(level).gamma.item()
        assert gamma != 0.0 and gamma == gamma, f"level {level} attention did not train (gamma {gamma})"
    video = model.animate(torch.rand(1, 3, 64, 64), torch.rand(2, 3, 64, 64))
    assert torch.isfinite(video).all()


@pytest.mark.slow
def test_onnx_export_of_per_level_caches(tmp_path, pp_config):
    pytest.importorskip("onnxruntime")
    from dagan.export import OnnxAnimator, export_onnx, source_outputs

    torch.manual_seed(0)
    model = DaGAN(pp_config.model).eval()
    with torch.no_grad():
        for level in range(model.generator.num_levels):
            model.generator.level_attention(level).gamma.fill_(0.5)
    assert {f"query_{level}" for level in range(model.generator.num_levels)} <= set(source_outputs(model))
    export_onnx(model, tmp_path)
    source, driving = torch.rand(1, 3, 64, 64), torch.rand(3, 3, 64, 64)
    anim = OnnxAnimator(tmp_path)
    anim.set_source(source.numpy())
    got = torch.from_numpy(anim(driving.numpy()))
    torch.testing.assert_close(got, model.animate(source, driving), atol=1e-4, rtol=1e-4)
