"""Own-format round trips, official import with clear errors, safe loading, and the converter CLI."""
import os
import pickle
import shutil

import pytest
import torch

from dagan import DaGAN
from dagan.checkpoints import load_file, official_state
from dagan.convert import cli as convert_cli
from dagan.errors import CheckpointError


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("safetensors", [False, True])
def test_save_load_round_trip_bit_exact(tiny_model, tmp_path, safetensors):
    if safetensors:
        pytest.importorskip("safetensors")
    with torch.no_grad():
        tiny_model.generator.AttnModule.gamma.fill_(0.3)
    tiny_model.save_pretrained(tmp_path / "m", safetensors=safetensors)
    loaded = DaGAN.from_pretrained(tmp_path / "m")
    assert loaded.config == tiny_model.config
    assert _same_weights(tiny_model, loaded)
    x = torch.rand(1, 3, 64, 64)
    assert torch.equal(tiny_model.animate(x, x.repeat(2, 1, 1, 1)), loaded.animate(x, x.repeat(2, 1, 1, 1)))
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path / "m"))


@pytest.mark.parametrize("half", [False, True])
def test_from_pretrained_holds_one_copy_of_the_weights(tiny_model, tmp_path, monkeypatch, half):
    """The model is built on the meta device and takes the loaded tensors themselves (fp32 files); an fp16
    export is cast into real float32 parameters. torch.nn.init is never touched."""
    import dagan.checkpoints as ckpt_module

    initialisers = dict(vars(torch.nn.init))

    tiny_model.save_pretrained(tmp_path / "m", half=half)
    loaded = {}

    def spying_load_file(*args, **kwargs):
        loaded["file"] = load_file(*args, **kwargs)
        return loaded["file"]

    monkeypatch.setattr(ckpt_module, "load_file", spying_load_file)
    model = DaGAN.from_pretrained(tmp_path / "m")
    state = loaded["file"]["state_dict"]
    own = model.state_dict()
    assert not any(t.is_meta for t in own.values()) and all(p.dtype == torch.float32 for p in model.parameters())
    name = next(k for k in own if k.endswith("weight") and own[k].dim() == 4)
    shares = own[name].data_ptr() == state[name].data_ptr()
    assert shares != half
    assert torch.equal(own[name], state[name].float())
    assert dict(vars(torch.nn.init)) == initialisers


def test_loading_leaves_models_built_meanwhile_initialised(tiny_model, tmp_path):
    """A model built in another thread while one loads is initialised as usual (the web app's worker threads
    build and load at the same time): loading changes no process-wide state."""
    import threading

    tiny_model.save_pretrained(tmp_path / "m")
    built = {}

    def build():
        torch.manual_seed(1)
        built["model"] = DaGAN(tiny_model.config)

    threads = [threading.Thread(target=lambda: DaGAN.from_pretrained(tmp_path / "m")) for _ in range(2)]
    threads.append(threading.Thread(target=build))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    torch.manual_seed(1)
    assert _same_weights(built["model"], DaGAN(tiny_model.config))


def test_single_file_checkpoint_with_training_extras(tiny_model, tmp_path):
    from dagan.config import Config, config_to_dict

    path = tmp_path / "train.pt"
    torch.save({"format_version": 1, "config": config_to_dict(Config(model=tiny_model.config)),
                "state_dict": {"module." + k: v for k, v in tiny_model.state_dict().items()},
                "step": 7, "optimizers": {}}, path)
    assert _same_weights(DaGAN.from_pretrained(path), tiny_model)


def _official_files(reference_dir, tmp_path, mutate):
    ckpt = torch.load(reference_dir / "checkpoint.pth.tar", weights_only=True)
    mutate(ckpt)
    path = tmp_path / "ckpt.pth.tar"
    torch.save(ckpt, path)
    return path


def test_official_renamed_key_is_reported(reference_dir, tmp_path):
    def rename(ckpt):
        ckpt["generator"]["module.AttnModule.gamma_renamed"] = ckpt["generator"].pop("module.AttnModule.gamma")

    path = _official_files(reference_dir, tmp_path, rename)
    with pytest.raises(CheckpointError) as info:
        DaGAN.from_official(reference_dir / "config.yaml", path, depth_dir=reference_dir)
    msg = str(info.value)
    assert "missing: AttnModule.gamma" in msg and "unexpected: AttnModule.gamma_renamed" in msg


def test_official_misshaped_key_is_reported(reference_dir, tmp_path):
    def reshape(ckpt):
        ckpt["generator"]["module.final.weight"] = torch.zeros(3, 16, 5, 5)

    path = _official_files(reference_dir, tmp_path, reshape)
    with pytest.raises(CheckpointError, match=r"mis-shaped: final.weight \(checkpoint \(3, 16, 5, 5\)"):
        DaGAN.from_official(reference_dir / "config.yaml", path, depth_dir=reference_dir)


def test_official_infers_keypoints_and_generator_type(reference_dir, tmp_path, caplog):
    cfg = (reference_dir / "config.yaml").read_text().replace("num_kp: 5", "num_kp: 10")
    (tmp_path / "cfg.yaml").write_text(cfg)
    model = DaGAN.from_official(tmp_path / "cfg.yaml", reference_dir / "checkpoint.pth.tar", depth_dir=reference_dir)
    assert model.config.num_kp == 5
    assert "5 keypoints" in caplog.text


def test_official_round_trip_through_converter(reference_dir, tmp_path):
    rc = convert_cli(["--config", str(reference_dir / "config.yaml"), "--checkpoint",
                      str(reference_dir / "checkpoint.pth.tar"), "--depth-dir", str(reference_dir),
                      str(tmp_path / "ours")])
    assert rc == 0
    ours = DaGAN.from_pretrained(tmp_path / "ours")
    direct = DaGAN.from_official(reference_dir / "config.yaml", reference_dir / "checkpoint.pth.tar",
                                 depth_encoder=reference_dir / "depth_encoder.pth",
                                 depth_decoder=reference_dir / "depth_decoder.pth")
    assert _same_weights(ours, direct)
    assert convert_cli(["--to-official", "--checkpoint", str(tmp_path / "ours"), str(tmp_path / "off")]) == 0
    back = DaGAN.from_official(tmp_path / "off" / "config.yaml", tmp_path / "off" / "checkpoint.pth.tar",
                               depth_dir=tmp_path / "off")
    assert _same_weights(back, direct)
    assert convert_cli(["--checkpoint", str(tmp_path / "ours"), str(tmp_path / "off")]) == 2  # not empty


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_code_executing_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"state_dict": _Evil()}, fh)
    with pytest.raises(CheckpointError, match="--trust-checkpoint"):
        load_file(path)


def test_truncated_empty_and_foreign_files(tiny_model, tmp_path):
    good = tmp_path / "m"
    tiny_model.save_pretrained(good)
    data = (good / "model.pt").read_bytes()
    trunc = tmp_path / "trunc"
    shutil.copytree(good, trunc)
    (trunc / "model.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated|corrupt"):
        DaGAN.from_pretrained(trunc)
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        DaGAN.from_pretrained(tmp_path / "empty.pt")
    (tmp_path / "text.pt").write_text("hello, not a checkpoint")
    with pytest.raises(CheckpointError):
        DaGAN.from_pretrained(tmp_path / "text.pt")
    torch.save(official_state(tiny_model), tmp_path / "official.pt")
    with pytest.raises(CheckpointError, match="from_official"):
        DaGAN.from_pretrained(tmp_path / "official.pt")
    with pytest.raises(CheckpointError, match="not found"):
        DaGAN.from_pretrained(tmp_path / "missing.pt")


def test_config_mismatch_lists_keys(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path / "m")
    cfg_path = tmp_path / "m" / "config.yaml"
    cfg_path.write_text(cfg_path.read_text().replace("num_kp: 5", "num_kp: 7"))
    with pytest.raises(CheckpointError, match="mis-shaped: .*kp_detector.kp.weight"):
        DaGAN.from_pretrained(tmp_path / "m")


def test_kp_landmarks_travel_in_the_model_config(tmp_path, tiny_config):
    """Keypoints tied to face landmarks are part of the model config: saved with the weights alone (no training
    config) and rebuilt by from_pretrained."""
    from dagan.config import config_to_dict, load_config
    from dagan.errors import ConfigError

    tiny_config.model.kp_landmarks = [[1, 57], [2, 8]]
    model = DaGAN(tiny_config.model)
    assert model.kp_landmarks == ((1, 57), (2, 8))
    model.save_pretrained(tmp_path / "m")
    loaded = DaGAN.from_pretrained(tmp_path / "m")
    assert loaded.kp_landmarks == ((1, 57), (2, 8)) and loaded.config.kp_landmarks == [[1, 57], [2, 8]]
    tiny_config.model.kp_landmarks = [[99, 57]]
    with pytest.raises(ConfigError, match="kp_landmarks"):
        load_config(config_to_dict(tiny_config))


def test_shipped_model_keeps_its_landmark_pairs_from_the_exported_config():
    from dagan.inference.loading import DEFAULT_CHECKPOINT

    if not DEFAULT_CHECKPOINT.exists():
        pytest.skip("the shipped model is not in this checkout")
    model = DaGAN.from_pretrained(DEFAULT_CHECKPOINT)
    assert model.kp_landmarks and list(map(list, model.kp_landmarks)) == model.config.kp_landmarks
    assert not any(t.is_meta for t in list(model.parameters()) + list(model.buffers()))
