import json

import pytest

from graphcnn import config as C
from graphcnn.presets import PRESETS, get_preset


def test_overrides_are_type_checked_and_unknown_keys_rejected():
    c = C.apply_overrides(C.Config(), ["train.epochs=3", "train.keep_rates.fc=0.5", "data.path=/x",
                                       "train.schedule.name=cosine", "data.augment.horizontal_flip=true"])
    assert (c.train.epochs, c.train.keep_rates, c.data.path) == (3, {"fc": 0.5}, "/x")
    assert c.train.schedule.name == "cosine" and c.data.augment.horizontal_flip
    with pytest.raises(C.ConfigError, match="unknown key 'train.epoch'.*epochs"):
        C.apply_overrides(c, ["train.epoch=3"])
    with pytest.raises(C.ConfigError, match="train.epochs: expected an integer"):
        C.apply_overrides(c, ["train.epochs=three"])
    with pytest.raises(C.ConfigError, match="key=value"):
        C.apply_overrides(c, ["train.epochs"])


def test_validate_names_the_key():
    with pytest.raises(C.ConfigError, match="train.optimizer: 'adamw'"):
        C.load(get_preset("digits"), None, ["train.optimizer=adamw"])
    with pytest.raises(C.ConfigError, match=r"train.keep_rates.fc"):
        C.load(get_preset("digits"), None, ["train.keep_rates.fc=1.5"])


def test_config_file_toml_and_json_round_trip(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('preset = "digits"\n[train]\nepochs = 2\n[data]\nmean_subtraction = true\n')
    c = C.load(get_preset("digits"), toml, ["train.batch_size=16"])
    assert (c.train.epochs, c.train.batch_size, c.data.mean_subtraction) == (2, 16, True)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": {"epochz": 1}}))
    with pytest.raises(C.ConfigError, match=r"bad.json: unknown key 'train.epochz'"):
        C.load(get_preset("digits"), bad)
    c.save(tmp_path / "config.json")
    assert C.from_json_file(tmp_path / "config.json") == c


def test_every_preset_is_valid_and_unknown_preset_lists_choices():
    for name in PRESETS:
        assert C.validate(get_preset(name)).preset == name
    with pytest.raises(C.ConfigError, match="choices: digits"):
        get_preset("nope")
