"""Generator trainer: a short run writes a loadable checkpoint and TensorBoard events; exact resume;
NaN guard; bf16 autocast; the train.py CLI against the shared clips."""
from __future__ import annotations

import importlib.util
import json
import os

import pytest
import torch

from dagan import DaGAN
from dagan.checkpoints import load_file
from dagan.errors import TrainingError
from dagan.training.trainer import train

from conftest import REPO, ShiftedPairs


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def cfg(train_config):
    c = train_config
    c.train.image_every = 2
    c.train.loss_weights.equivariance_value = 10
    c.train.loss_weights.equivariance_jacobian = 10
    return c


def _all_tensors(path):
    ckpt = load_file(path)
    return {**{"g." + k: v for k, v in ckpt["state_dict"].items()},
            **{"d." + k: v for k, v in ckpt["discriminator"].items()}}


def test_short_run_writes_checkpoint_and_events(cfg, tmp_path):
    result = train(cfg, ShiftedPairs(), tmp_path, device="cpu", max_steps=3, progress=False)
    assert result["step"] == 3
    ckpt_path = tmp_path / "checkpoint.pt"
    ckpt = load_file(ckpt_path)
    assert ckpt["format_version"] == 1 and ckpt["step"] == 3
    assert set(ckpt) >= {"config", "state_dict", "discriminator", "optimizers", "schedulers", "rng", "epoch"}
    assert not any(k.startswith("module.") for k in ckpt["state_dict"])
    model = DaGAN.from_pretrained(ckpt_path)  # the training checkpoint is a model checkpoint too
    for k, v in model.state_dict().items():
        assert torch.equal(v, ckpt["state_dict"][k])
    events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3]
    assert {"l1_pyramid", "generator_gan", "feature_matching", "equivariance_value", "discriminator"} <= set(lines[0])
    # the frozen depth network did not move, the keypoint detector and the discriminator did
    init = DaGAN(cfg.model)
    torch.manual_seed(cfg.train.seed)
    init = DaGAN(cfg.model)
    assert torch.equal(init.depth_encoder.encoder.conv1.weight, model.depth_encoder.encoder.conv1.weight)
    assert not torch.equal(init.kp_detector.kp.weight, model.kp_detector.kp.weight)


def test_export_half(cfg, tmp_path):
    from dagan.training.trainer import export_pretrained

    train(cfg, ShiftedPairs(), tmp_path / "run", device="cpu", max_steps=1, progress=False)
    full = export_pretrained(tmp_path / "run" / "checkpoint.pt", tmp_path / "full")
    half = export_pretrained(tmp_path / "run" / "checkpoint.pt", tmp_path / "half", half=True)
    size = lambda d: os.path.getsize(os.path.join(d, "model.pt"))  # noqa: E731
    assert size(half) < 0.6 * size(full)
    a, b = DaGAN.from_pretrained(full), DaGAN.from_pretrained(half)
    for k, v in a.state_dict().items():
        assert b.state_dict()[k].dtype == v.dtype
        assert torch.allclose(b.state_dict()[k].float(), v.float(), rtol=1e-3, atol=1e-4)


def test_export_is_self_describing_and_hash_checked(cfg, tmp_path):
    import yaml

    from dagan.checkpoints import file_sha256
    from dagan.config import config_to_dict, load_config
    from dagan.errors import CheckpointError
    from dagan.training.trainer import export_pretrained

    cfg.train.lr_generator = 1.25e-4  # a non-default training setting must survive the export
    cfg.dataset.num_repeats = 7
    train(cfg, ShiftedPairs(), tmp_path / "run", device="cpu", max_steps=2, progress=False)
    ckpt = tmp_path / "run" / "checkpoint.pt"
    out = export_pretrained(ckpt, tmp_path / "model", average=[ckpt])
    written = yaml.safe_load(open(os.path.join(out, "config.yaml")))
    assert {"model", "train", "dataset", "provenance"} <= set(written)
    exported = load_config(os.path.join(out, "config.yaml"))
    for section in ("model", "train", "dataset", "depth_train"):
        assert config_to_dict(getattr(exported, section)) == config_to_dict(getattr(cfg, section)), section
    prov = exported.provenance
    assert prov["checkpoint"] == str(ckpt) and prov["step"] == 2 and prov["source_run"] == str(tmp_path / "run")
    assert [a["step"] for a in prov["averaged"]] == [2, 2] and prov["half"] is False
    assert prov["weights"] == {"file": "model.pt", "sha256": file_sha256(os.path.join(out, "model.pt"))}
    # run from the folder that holds the run, the record names it relatively (no machine paths in a shipped model)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        again = export_pretrained(ckpt, tmp_path / "model2")
    assert load_config(os.path.join(again, "config.yaml")).provenance["source_run"] == "run"
    DaGAN.from_pretrained(out)
    with open(os.path.join(out, "model.pt"), "r+b") as fh:  # same size, one byte changed
        fh.seek(-100, 2)
        byte = fh.read(1)
        fh.seek(-100, 2)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(CheckpointError, match="does not match .*config.yaml: sha256"):
        DaGAN.from_pretrained(out)


def test_shipped_model_config_is_its_training_config():
    """checkpoints/dagan-small/config.yaml passed back to train.py sets up the fine-tune it came from (release 3:
    configs/dagan-small-face-kp.yaml), and records the depth run it was trained on."""
    from dagan.checkpoints import file_sha256
    from dagan.config import config_to_dict, load_config

    shipped = load_config(REPO / "checkpoints" / "dagan-small" / "config.yaml")
    recipe = load_config(REPO / "configs" / "dagan-small-face-kp.yaml")
    for section in ("task", "model", "train", "dataset", "depth_train"):
        value = getattr(shipped, section)
        assert (value if isinstance(value, str) else config_to_dict(value)) == \
            (getattr(recipe, section) if section == "task" else config_to_dict(getattr(recipe, section))), section
    assert shipped.train.loss_weights.generator_gan == 0 and shipped.train.loss_weights.l1_pyramid == 10
    assert shipped.dataset.mode == "mixed"
    # the keypoint-landmark pairs it was trained with travel with it (the face guide moves those keypoints)
    assert DaGAN.from_pretrained(REPO / "checkpoints" / "dagan-small").kp_landmarks == \
        tuple(tuple(p) for p in recipe.train.kp_landmarks) and len(recipe.train.kp_landmarks) == 10
    assert {"drv_lp_d9_audio_256", "drv_lp_d14_audio_256"} <= set(shipped.dataset.test_videos)  # held out
    prov = shipped.provenance
    assert sorted(a["step"] for a in prov["averaged"]) == [1000, 1250, 1500] and prov["half"] is True
    assert prov["weights"]["sha256"] == file_sha256(REPO / "checkpoints" / "dagan-small" / "model.pt")
    depth_recipe = load_config(REPO / "configs" / "dagan-small-depth-sfm.yaml")
    assert prov["depth"]["step"] == 2000
    depth_cfg = load_config(dict(prov["depth"]["config"]))
    assert config_to_dict(depth_cfg.depth_train) == config_to_dict(depth_recipe.depth_train)
    assert depth_cfg.depth_train.landmark_weight > 0 and "drv_lp_d9_audio_256" in depth_cfg.dataset.test_videos


@pytest.mark.slow
def test_shipped_config_runs_one_step_through_train_py(shared_data, tmp_path, capsys):
    """The shipped config is a runnable train.py config: one step of its recipe (it starts from release 1 and a
    depth run, which are not in the repository: the shipped model, depth included, stands in for both)."""
    import yaml

    cfg_path = tmp_path / "again.yaml"
    cfg_path.write_text(yaml.safe_dump({"base": str(REPO / "checkpoints" / "dagan-small" / "config.yaml"),
                                        "train": {"init_checkpoint": str(REPO / "checkpoints" / "dagan-small"),
                                                  "init_networks": [], "init_new_keys": [],
                                                  "depth_checkpoint": None}}))
    out = tmp_path / "run"
    code = _train_cli().main(["--config", str(cfg_path), "--data", str(shared_data), "--max-steps", "1",
                              "--out", str(out), "--no-progress", "--device", "cpu"])
    assert code == 0 and load_file(out / "checkpoint.pt")["step"] == 1
    line = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert {"l1_pyramid", "ssim_pyramid", "equivariance_value", "kp_distance"} <= set(line)
    assert "generator_gan" not in line and "perceptual" not in line  # GAN 0, no VGG: as it was trained
    from dagan.config import load_config

    assert load_config(out / "config.yaml").provenance == {}  # a new run describes no exported model


def test_export_averages_checkpoints(tiny_config, tmp_path):
    import copy

    from dagan.errors import CheckpointError
    from dagan.training.trainer import export_pretrained

    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(DaGAN(tiny_config.model))
        models[-1].save_pretrained(tmp_path / f"m{seed}")
    out = export_pretrained(tmp_path / "m0", tmp_path / "avg", average=[tmp_path / "m1", tmp_path / "m2"])
    avg = DaGAN.from_pretrained(out).state_dict()
    for k, v in models[0].state_dict().items():
        if v.is_floating_point():
            mean = sum(m.state_dict()[k].double() for m in models) / 3
            assert torch.allclose(avg[k].double(), mean, atol=1e-6), k
    assert not torch.equal(avg["kp_detector.kp.weight"], models[0].state_dict()["kp_detector.kp.weight"])
    other = copy.deepcopy(tiny_config.model)
    other.num_kp += 1
    DaGAN(other).save_pretrained(tmp_path / "other")
    with pytest.raises(CheckpointError, match="configs differ"):
        export_pretrained(tmp_path / "m0", tmp_path / "bad", average=[tmp_path / "other"])
    assert not (tmp_path / "bad").exists()


def test_fine_tune_from_official_files(reference_dir, tmp_path):
    from dagan.checkpoints import strip_prefix
    from dagan.config import load_config
    from dagan.training.trainer import load_depth_checkpoint, load_init_checkpoint

    cfg = load_config(reference_dir / "config.yaml")
    official = load_file(reference_dir / "checkpoint.pth.tar")
    model = DaGAN(cfg.model)
    from dagan.models.dagan import build_discriminator

    load_init_checkpoint(model, build_discriminator(cfg.model), reference_dir / "checkpoint.pth.tar")
    load_depth_checkpoint(model, reference_dir)
    for k, v in strip_prefix(official["kp_detector"]).items():
        assert torch.equal(model.kp_detector.state_dict()[k], v)
    for k, v in strip_prefix(official["generator"]).items():
        assert torch.equal(model.generator.state_dict()[k], v)
    encoder = load_file(reference_dir / "depth_encoder.pth")
    assert torch.equal(model.depth_encoder.encoder.conv1.weight, encoder["encoder.conv1.weight"])
    # and the trainer uses them: a 1-step fine-tune starts from the official weights
    cfg.train.init_checkpoint = str(reference_dir / "checkpoint.pth.tar")
    cfg.train.depth_checkpoint = str(reference_dir)
    cfg.train.batch_size = 2
    cfg.train.perceptual_backbone = "none"
    cfg.train.loss_weights.perceptual = [0, 0, 0, 0, 0]
    cfg.train.loss_weights.l1_pyramid = 10
    cfg.train.scales = [1, 0.5]
    cfg.train.loss_weights.feature_matching = [10, 10]
    result = train(cfg, ShiftedPairs(), tmp_path, device="cpu", max_steps=1, progress=False)
    tuned = result["model"]
    assert torch.equal(tuned.depth_encoder.encoder.conv1.weight, encoder["encoder.conv1.weight"])  # frozen
    delta = (tuned.kp_detector.kp.weight - strip_prefix(official["kp_detector"])["kp.weight"]).abs().max()
    assert 0 < float(delta.detach()) < 1e-2  # one Adam step (lr 2e-4) away from the official weights


def test_resume_is_exact(cfg, tmp_path):
    data = ShiftedPairs()
    train(cfg, data, tmp_path / "full", device="cpu", max_steps=4, progress=False)
    train(cfg, data, tmp_path / "part", device="cpu", max_steps=2, progress=False)
    train(cfg, data, tmp_path / "part", device="cpu", max_steps=4, progress=False,
          resume=tmp_path / "part" / "checkpoint.pt")
    full, resumed = _all_tensors(tmp_path / "full" / "checkpoint.pt"), _all_tensors(tmp_path / "part" / "checkpoint.pt")
    assert full.keys() == resumed.keys()
    for k in full:
        assert torch.equal(full[k], resumed[k]), k
    first = _all_tensors(tmp_path / "part" / "checkpoint.pt")
    two = train(cfg, data, tmp_path / "other", device="cpu", max_steps=2, progress=False)
    assert two["step"] == 2 and not all(torch.equal(first[k], v) for k, v in _all_tensors(two["checkpoint"]).items())


def test_nan_guard_stops_and_keeps_last_good_checkpoint(cfg, tmp_path):
    cfg.train.max_bad_steps = 2
    cfg.train.save_every = 1
    with pytest.raises(TrainingError, match="non-finite"):
        train(cfg, ShiftedPairs(nan_from=4), tmp_path, device="cpu", max_steps=6, progress=False)
    ckpt = load_file(tmp_path / "checkpoint.pt")
    # steps 0, 1 trained; step 2 read NaN frames and was skipped (weights untouched, checkpoint written as
    # step 3 so a resume does not re-read that batch); step 3 was the second bad one in a row: stop
    assert ckpt["step"] == 3
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_bf16_autocast_on_cpu(cfg, tmp_path):
    cfg.train.amp = True
    result = train(cfg, ShiftedPairs(), tmp_path, device="cpu", max_steps=2, progress=False)
    assert result["step"] == 2
    assert all(torch.isfinite(torch.tensor(v)) for v in result["losses"].values())
    ckpt = load_file(tmp_path / "checkpoint.pt")
    assert all(v.dtype != torch.bfloat16 for v in ckpt["state_dict"].values())


def _train_cli():
    spec = importlib.util.spec_from_file_location("train_cli", REPO / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_py_on_shared_clips(shared_data, tmp_path, capsys):
    cli = _train_cli()
    out = tmp_path / "run"
    code = cli.main(["--config", str(REPO / "configs" / "tiny-cpu.yaml"), "--data", str(shared_data),
                     "--max-steps", "2", "--out", str(out), "--no-progress", "--device", "cpu"])
    assert code == 0
    assert (out / "checkpoint.pt").is_file() and load_file(out / "checkpoint.pt")["step"] == 2
    assert "trained 2 steps" in capsys.readouterr().out


def test_train_py_user_errors(tmp_path, capsys):
    from dagan.cliutil import run_cli

    cli = _train_cli()
    code = run_cli(cli.main, ["--config", str(REPO / "configs" / "tiny-cpu.yaml"), "--data",
                              str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "dataset folder not found" in err and "Traceback" not in err
    assert not os.path.exists(tmp_path / "o" / "checkpoint.pt")


def test_init_networks_takes_only_the_named_networks(tiny_config, tmp_path):
    import copy

    from dagan.config import config_from_dict, TrainConfig
    from dagan.errors import CheckpointError, ConfigError
    from dagan.models.dagan import build_discriminator
    from dagan.training.trainer import load_init_checkpoint

    torch.manual_seed(0)
    old = DaGAN(tiny_config.model)
    old.save_pretrained(tmp_path / "old")
    other = copy.deepcopy(tiny_config.model)
    other.generator.num_bottleneck_blocks += 1  # a new generator: the full checkpoint no longer fits
    torch.manual_seed(1)
    new = DaGAN(other)
    generator_before = {k: v.clone() for k, v in new.generator.state_dict().items()}
    with pytest.raises(CheckpointError, match="does not fit"):
        load_init_checkpoint(new, build_discriminator(other), tmp_path / "old")
    load_init_checkpoint(new, build_discriminator(other), tmp_path / "old", ["kp_detector", "depth_encoder"])
    for k, v in old.kp_detector.state_dict().items():
        assert torch.equal(new.kp_detector.state_dict()[k], v)
    assert torch.equal(new.depth_encoder.encoder.conv1.weight, old.depth_encoder.encoder.conv1.weight)
    assert all(torch.equal(new.generator.state_dict()[k], v) for k, v in generator_before.items())
    with pytest.raises(CheckpointError, match="discriminator"):  # save_pretrained keeps no discriminator
        load_init_checkpoint(new, build_discriminator(other), tmp_path / "old", ["discriminator"])
    with pytest.raises(ConfigError, match="init_networks"):
        config_from_dict({"init_networks": ["keypoints"]}, TrainConfig, "train")


def test_a_model_is_fine_tuned_at_another_size_with_its_own_anti_aliasing(tiny_config, tmp_path):
    """configs/experiments/dagan-small-128.yaml: 64 px weights into a 128 px model whose keypoint and motion networks keep
    their working size (scale factors halved). Every weight loads; the anti-aliasing kernels, which follow the
    scale factors, stay the new model's (the file's 13x13 kernels would not even fit)."""
    import copy

    from dagan.models.dagan import build_discriminator
    from dagan.training.trainer import load_init_checkpoint

    torch.manual_seed(0)
    old = DaGAN(tiny_config.model)
    old.save_pretrained(tmp_path / "old")
    big = copy.deepcopy(tiny_config.model)
    big.image_size = 128
    big.kp_detector.scale_factor = tiny_config.model.kp_detector.scale_factor / 2
    big.generator.dense_motion.scale_factor = tiny_config.model.generator.dense_motion.scale_factor / 2
    torch.manual_seed(1)
    new = DaGAN(big)
    kernel = new.kp_detector.down.weight.clone()
    assert kernel.shape != old.kp_detector.down.weight.shape
    for networks in ((), ["kp_detector", "generator"]):
        load_init_checkpoint(new, build_discriminator(big), tmp_path / "old", networks)
        for k, v in old.state_dict().items():
            if not k.endswith("down.weight"):
                assert torch.equal(new.state_dict()[k], v), k
        assert torch.equal(new.kp_detector.down.weight, kernel)
    torch.manual_seed(2)
    untrained = DaGAN(big)
    with torch.no_grad():
        frames = torch.rand(1, 3, 128, 128)
        small = old.detect_keypoints(torch.nn.functional.interpolate(frames, size=(64, 64), mode="area"))["value"]
        near = (new.detect_keypoints(frames)["value"] - small).abs().mean()
        far = (untrained.detect_keypoints(frames)["value"] - small).abs().mean()
    assert near < 0.25 * far  # the same 16 px working image, nearly: the keypoints carry over


def test_init_new_keys_let_a_config_add_parameters(tiny_config, tmp_path):
    """Fine-tuning into a config with new parameters (the SPADE output blend): only the listed keys may be
    missing from the file; everything else loads."""
    import copy

    from dagan.errors import CheckpointError
    from dagan.models.dagan import build_discriminator
    from dagan.training.trainer import load_init_checkpoint

    base = copy.deepcopy(tiny_config.model)
    base.generator.type, base.generator.spade_hidden = "SPADEDepthAwareGenerator", 16
    torch.manual_seed(0)
    DaGAN(base).save_pretrained(tmp_path / "old")
    old = DaGAN.from_pretrained(tmp_path / "old")
    grown = copy.deepcopy(base)
    grown.generator.output_blend = True
    torch.manual_seed(1)
    new = DaGAN(grown)
    fresh = new.generator.decoder.conv_blend.bias.clone()
    with pytest.raises(CheckpointError, match="conv_blend"):
        load_init_checkpoint(new, build_discriminator(grown), tmp_path / "old")
    with pytest.raises(CheckpointError, match="missing"):  # a prefix covers only what it names
        load_init_checkpoint(new, build_discriminator(grown), tmp_path / "old", (), ["generator.decoder.conv_img"])
    load_init_checkpoint(new, build_discriminator(grown), tmp_path / "old", (), ["generator.decoder.conv_blend"])
    for k, v in old.state_dict().items():
        assert torch.equal(new.state_dict()[k], v), k
    assert torch.equal(new.generator.decoder.conv_blend.bias, fresh)
    torch.manual_seed(1)
    again = DaGAN(grown)
    load_init_checkpoint(again, build_discriminator(grown), tmp_path / "old", ["generator"],
                         ["generator.decoder.conv_blend"])  # per-network loading takes the same prefixes
    assert torch.equal(again.generator.decoder.fc.weight, old.generator.decoder.fc.weight)


def test_keep_every_and_keep_last_retain_checkpoints_for_averaging(cfg, tmp_path, capsys):
    """The run keeps checkpoint-<step>.pt every keep_every steps (the last keep_last of them), each equal to
    checkpoint.pt at that step; train.py --export --average takes them without hand copies."""
    from dagan.config import load_config, save_config

    cfg.train.save_every = 1000
    cfg.train.keep_every = 2
    cfg.train.keep_last = 2
    run = tmp_path / "run"
    train(cfg, ShiftedPairs(), run, device="cpu", max_steps=3, progress=False)
    train(cfg, ShiftedPairs(), run, device="cpu", max_steps=6, progress=False, resume=run)
    kept = sorted(p.name for p in run.glob("checkpoint-*.pt"))
    assert kept == ["checkpoint-0000004.pt", "checkpoint-0000006.pt"]  # step 2 pruned by keep_last
    assert load_file(run / "checkpoint-0000004.pt")["step"] == 4
    assert torch.equal(load_file(run / "checkpoint-0000006.pt")["state_dict"]["kp_detector.kp.weight"],
                       load_file(run / "checkpoint.pt")["state_dict"]["kp_detector.kp.weight"])
    save_config(cfg, tmp_path / "cfg.yaml")
    code = _train_cli().main(["--config", str(tmp_path / "cfg.yaml"), "--checkpoint", str(run),
                              "--average", str(run / "checkpoint-0000004.pt"), "--export", str(tmp_path / "model")])
    assert code == 0
    prov = load_config(tmp_path / "model" / "config.yaml").provenance
    assert prov["step"] == 6 and [a["step"] for a in prov["averaged"]] == [6, 4]
    mean = (load_file(run / "checkpoint.pt")["state_dict"]["kp_detector.kp.weight"].double()
            + load_file(run / "checkpoint-0000004.pt")["state_dict"]["kp_detector.kp.weight"].double()) / 2
    got = DaGAN.from_pretrained(tmp_path / "model").state_dict()["kp_detector.kp.weight"]
    assert torch.allclose(got.double(), mean, atol=1e-6)


def test_output_size_training_renders_like_inference(train_config, tmp_path):
    """train.output_size: the networks see the frames downsampled to model.image_size, the losses compare the
    prediction rendered at the output size (warped full-size source + blend, the inference path) with the
    full-size driving frame, and the blend mask gets gradients from that comparison."""
    from dagan.errors import ConfigError
    from dagan.io.images import resize_tensor
    from dagan.models.dagan import build_discriminator
    from dagan.training.trainer import GeneratorFullModel, _check_config

    c = train_config
    c.model.generator.type, c.model.generator.spade_hidden = "SPADEDepthAwareGenerator", 16
    c.model.generator.output_blend = True
    c.train.output_size = 128
    with pytest.raises(ConfigError, match="output_size"):
        _check_config(c)  # the dataset still gives 64 px frames
    c.dataset.frame_shape = [128, 128, 3]
    _check_config(c)
    torch.manual_seed(0)
    model = DaGAN(c.model)
    full = GeneratorFullModel(model, build_discriminator(c.model), c)
    pairs = ShiftedPairs(size=128)
    source = torch.stack([pairs[n]["source"] for n in range(2)])
    driving = torch.stack([pairs[n]["driving"] for n in range(2)])
    losses, generated = full(source, driving, warp_seed=0)
    assert generated["prediction"].shape[2:] == (128, 128)
    assert generated["prediction_model"].shape[2:] == (64, 64)
    sum(losses.values()).backward()
    assert model.generator.decoder.conv_blend.weight.grad.abs().sum() > 0
    # the same computation as inference: prepare_source with the full-size portrait, then the per-frame step
    model.eval()
    with torch.no_grad():
        _, generated = full(source, driving, warp_seed=0)
        state = model.prepare_source(resize_tensor(source[:1], (64, 64)), source[:1])
        kp_driving = model.detect_keypoints(resize_tensor(driving[:1], (64, 64)))
        reference = model.generator.generate(state.cache, state.kp, kp_driving)["prediction"]
    assert (generated["prediction"][:1] - reference).abs().max() < 2e-4  # batch 2 vs 1: float rounding (3e-5)
    result = train(c, pairs, tmp_path, device="cpu", max_steps=1, progress=False)
    assert result["step"] == 1


def test_export_names_the_depth_run(train_config, tmp_path):
    """A generator run on frozen trained depth (train.depth_checkpoint): the exported model carries that
    depth run's step and full config in its provenance, and its depth weights are the depth run's."""
    from dagan.config import config_from_dict, load_config
    from dagan.training.depth_trainer import train as train_depth
    from dagan.training.synthetic_depth import SyntheticDepthDataset
    from dagan.training.trainer import export_pretrained

    depth_cfg = config_from_dict({"task": "depth", "model": {"image_size": 64, "depth": {"num_layers": 10}},
                                  "depth_train": {"batch_size": 2, "intrinsics": "fixed", "scales": [0],
                                                  "save_every": 1000, "smoothness_weight": 0.002}})
    train_depth(depth_cfg, SyntheticDepthDataset(num_videos=2, num_frames=8, size=64, seed=1), tmp_path / "depth",
                device="cpu", max_steps=1, progress=False, tensorboard=False)
    c = train_config
    c.train.depth_checkpoint = str(tmp_path / "depth")
    train(c, ShiftedPairs(), tmp_path / "gen", device="cpu", max_steps=1, progress=False, tensorboard=False)
    out = export_pretrained(tmp_path / "gen", tmp_path / "model")
    prov = load_config(os.path.join(out, "config.yaml")).provenance
    assert prov["depth"]["step"] == 1 and prov["depth"]["config"]["task"] == "depth"
    assert prov["depth"]["config"]["depth_train"]["smoothness_weight"] == 0.002
    depth_state = load_file(tmp_path / "depth" / "checkpoint.pt")["depth_encoder"]
    exported = DaGAN.from_pretrained(out)
    for k, v in depth_state.items():
        assert torch.equal(exported.depth_encoder.state_dict()[k], v), k
