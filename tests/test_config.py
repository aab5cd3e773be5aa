"""Configs: our YAML files and official-format files load; bad keys and values are rejected by name."""
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from dagan.config import Config, config_from_dict, config_to_dict, load_config, save_config
from dagan.errors import ConfigError
from dagan.models import DaGAN


CONFIGS = REPO / "configs"


def test_config_folder_is_found_from_any_working_directory():
    assert len(sorted(CONFIGS.glob("*.yaml"))) >= 10


def test_top_level_configs_are_a_short_menu():
    """What a user runs sits at the top (about a dozen files); experiments live in configs/experiments/, each
    opening with a comment line saying what it tested and what came of it."""
    assert len(sorted(CONFIGS.glob("*.yaml"))) <= 12
    experiments = sorted((CONFIGS / "experiments").glob("*.yaml"))
    assert experiments
    for path in experiments:
        first = path.read_text().splitlines()[0]
        assert first.startswith("# Tested") and "Came of it" in first, path.name


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    again = config_from_dict(config_to_dict(cfg))
    assert again == cfg


def test_official_size_config_matches_released_weights():
    cfg = load_config(CONFIGS / "dagan-vox-256.yaml").model
    assert (cfg.num_kp, cfg.image_size, cfg.generator.type) == (15, 256, "DepthAwareGenerator")
    assert load_config(CONFIGS / "dagan-spade-vox-256.yaml").model.generator.type == "SPADEDepthAwareGenerator"


def test_reads_official_format(tmp_path):
    official = {
        "dataset_params": {"root_dir": "/data/vox", "frame_shape": [128, 128, 3], "id_sampling": True,
                           "augmentation_params": {"flip_param": {"horizontal_flip": True, "time_flip": True},
                                                   "jitter_param": {"brightness": 0.2, "hue": 0.05}}},
        "model_params": {
            "common_params": {"num_kp": 10, "num_channels": 3, "estimate_jacobian": True},
            "kp_detector_params": {"temperature": 0.1, "block_expansion": 32, "max_features": 1024,
                                   "scale_factor": 0.25, "num_blocks": 5},
            "generator_params": {"block_expansion": 64, "max_features": 512, "num_down_blocks": 2,
                                 "num_bottleneck_blocks": 6, "estimate_occlusion_map": True,
                                 "dense_motion_params": {"block_expansion": 64, "max_features": 1024,
                                                         "num_blocks": 5, "scale_factor": 0.25}},
            "discriminator_params": {"scales": [1], "block_expansion": 32, "max_features": 512, "num_blocks": 4,
                                     "use_kp": True}},
        "train_params": {"num_epochs": 150, "lr_generator": 2.0e-4, "loss_weights": {"kp_distance": 10}},
        "animate_params": {"num_pairs": 50},
        "visualizer_params": {"kp_size": 5},
    }
    path = tmp_path / "official.yaml"
    path.write_text(yaml.safe_dump(official))
    cfg = load_config(path)
    assert cfg.model.num_kp == 10 and cfg.model.image_size == 128
    assert cfg.model.generator.num_bottleneck_blocks == 6 and cfg.model.generator.dense_motion.num_blocks == 5
    assert cfg.dataset.id_sampling and cfg.dataset.augmentation.brightness == 0.2
    assert cfg.train.num_epochs == 150 and cfg.train.loss_weights.kp_distance == 10


@pytest.mark.parametrize("patch,key", [
    ({"model": {"generator": {"block_expanson": 8}}}, "model.generator.block_expanson"),
    ({"model": {"num_kp": "ten"}}, "model.num_kp"),
    ({"model": {"num_kp": 0}}, "model.num_kp"),
    ({"model": {"image_size": 100}}, "model.image_size"),
    ({"model": {"image_size": 32}}, "model.image_size"),
    ({"model": {"generator": {"type": "Bogus"}}}, "model.generator.type"),
    ({"model": {"kp_detector": {"temperature": -1.0}}}, "model.kp_detector.temperature"),
    ({"model": {"estimate_jacobian": "yes"}}, "model.estimate_jacobian"),
    ({"train": {"scales": 1}}, "train.scales"),
    ({"train": {"loss_weights": {"perceptual": [1, "x"]}}}, "train.loss_weights.perceptual[1]"),
    ({"modle": {}}, "modle"),
])
def test_bad_values_name_the_key(patch, key):
    with pytest.raises(ConfigError) as info:
        load_config(patch)
    assert f"'{key}'" in str(info.value)


def test_official_unknown_key_is_named(tmp_path):
    path = tmp_path / "o.yaml"
    path.write_text(yaml.safe_dump({"model_params": {"generator_params": {"num_down_blocks": 2, "blocks": 3}}}))
    with pytest.raises(ConfigError, match="generator_params.blocks"):
        load_config(path)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(lst)


def test_save_config_round_trip(tmp_path):
    cfg = load_config(CONFIGS / "dagan-tiny.yaml")
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    assert DaGAN(load_config(tmp_path / "c.yaml")).config == cfg.model


def test_base_inherits_and_deep_merges(tmp_path):
    (tmp_path / "parent.yaml").write_text(yaml.safe_dump({
        "model": {"image_size": 64, "num_kp": 5, "generator": {"block_expansion": 16, "max_features": 64}},
        "train": {"batch_size": 2, "scales": [1, 0.5]}}))
    (tmp_path / "sub").mkdir()
    child = tmp_path / "sub" / "child.yaml"
    child.write_text(yaml.safe_dump({"base": "../parent.yaml", "model": {"generator": {"max_features": 32}},
                                     "train": {"scales": [1]}}))
    cfg = load_config(child)
    assert cfg.model.generator.block_expansion == 16 and cfg.model.generator.max_features == 32  # merged
    assert cfg.model.num_kp == 5 and cfg.train.batch_size == 2
    assert cfg.train.scales == [1]  # lists replace
    grandchild = tmp_path / "grandchild.yaml"
    grandchild.write_text(yaml.safe_dump({"base": "sub/child.yaml", "model": {"num_kp": 7}}))
    cfg = load_config(grandchild)
    assert (cfg.model.num_kp, cfg.model.generator.max_features, cfg.train.batch_size) == (7, 32, 2)


@pytest.mark.parametrize("text,message", [
    ("base: loop.yaml\n", "includes itself"),
    ("base: nowhere.yaml\n", "not found.*nowhere.yaml"),
    (f"base: {CONFIGS / 'dagan-tiny.yaml'}\nmodel: {{generator: {{block_expanson: 8}}}}\n",
     "model.generator.block_expanson"),
], ids=["cycle", "missing", "typo"])
def test_base_errors_name_the_problem(tmp_path, text, message):
    path = tmp_path / "loop.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_a_copied_config_finds_its_shipped_base(tmp_path):
    """A config copied out of configs/ keeps working: a ``base:`` that is not beside it is looked up in the
    repository's configs/ (as written, then by file name in its subfolders)."""
    for name in ("daganpp-depth-tiny.yaml", "dagan-small-face-kp.yaml", "experiments/dagan-small-lips.yaml"):
        copy = tmp_path / name.replace("/", "-")
        copy.write_text((CONFIGS / name).read_text())
        assert load_config(copy) == load_config(CONFIGS / name), name


def test_config_path_env_is_searched(tmp_path, monkeypatch):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "parent.yaml").write_text(yaml.safe_dump({"model": {"num_kp": 6}}))
    child = tmp_path / "child.yaml"
    child.write_text("base: parent.yaml\n")
    with pytest.raises(ConfigError, match="parent.yaml not found"):
        load_config(child)
    monkeypatch.setenv("DAGAN_CONFIG_PATH", str(tmp_path / "mine"))
    assert load_config(child).model.num_kp == 6


def test_missing_base_lists_every_place_looked(tmp_path):
    from dagan.config import CONFIGS_DIR

    child = tmp_path / "child.yaml"
    child.write_text("base: nowhere.yaml\n")
    with pytest.raises(ConfigError) as info:
        load_config(child)
    message = str(info.value)
    for place in (tmp_path / "nowhere.yaml", Path(CONFIGS_DIR) / "nowhere.yaml",
                  Path(CONFIGS_DIR) / "experiments" / "nowhere.yaml"):
        assert str(place) in message
    assert Path(CONFIGS_DIR).resolve() == CONFIGS.resolve()


def test_variant_configs_equal_their_full_form():
    """The shrunk variants resolve to the settings they had as full files (spot checks of what differs)."""
    spade, plain = load_config(CONFIGS / "dagan-spade-vox-256.yaml"), load_config(CONFIGS / "dagan-vox-256.yaml")
    assert spade.model.generator.type == "SPADEDepthAwareGenerator" and plain.model.generator.type == "DepthAwareGenerator"
    spade.model.generator.type = plain.model.generator.type
    assert config_to_dict(spade) == config_to_dict(plain)
    ft, ft2 = load_config(CONFIGS / "dagan-small" / "dagan-small-ft.yaml"), \
        load_config(CONFIGS / "dagan-small" / "dagan-small-ft2.yaml")
    assert ft2.model.generator.output_blend and not ft.model.generator.output_blend
    assert (ft2.train.lr_generator, ft2.train.lr_kp_detector, ft2.train.epoch_milestones) == (1e-4, 2e-5, [88])
    assert ft2.train.init_checkpoint == "runs/dagan-small-ft/checkpoint.pt" and ft2.train.init_networks == []
    assert ft2.train.init_new_keys == ["generator.decoder.conv_blend"]
    assert config_to_dict(ft2.dataset) == config_to_dict(ft.dataset)
    assert ft.dataset.image_pairs_fraction == 0.5 and len(ft.dataset.image_dirs) == 14


def test_retired_keys_of_old_files_are_ignored():
    cfg = config_from_dict({"train": {"checkpoint_freq": 10}, "dataset": {"pairs_list": None, "frames_per_sample": 2}})
    assert not hasattr(cfg.train, "checkpoint_freq") and not hasattr(cfg.dataset, "pairs_list")
