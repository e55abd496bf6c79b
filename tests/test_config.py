import dataclasses
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
    for override, message in (("train.learning_rate=-1", r"^train.learning_rate: must be positive, got -1"),
                              ("train.batch_size=0", r"^train.batch_size: must be at least 1, got 0$"),
                              ("train.epochs=-2", r"^train.epochs: must be at least 0, got -2$"),
                              ("model.input_width=0", r"^model.input_width: must be at least 1, got 0$"),
                              ("data.test_fraction=1.0", r"^data.test_fraction: must be in \[0, 1\), got 1.0$")):
        with pytest.raises(C.ConfigError, match=message):
            C.load(get_preset("digits"), None, [override])
    # 0 epochs trained nothing and failed after the data scan, naming the schedule's decay_steps
    with pytest.raises(C.ConfigError, match=r"^train.epochs: 0 trains nothing; give at least 1, or .*max_steps$"):
        C.load(get_preset("digits"), None, ["train.epochs=0"])
    assert C.load(get_preset("digits"), None, ["train.epochs=0", "train.max_steps=5"]).train.epochs == 0
    digits = get_preset("digits")  # a TOML file can say nan, which the --set parser refuses
    with pytest.raises(C.ConfigError, match=r"^train.learning_rate: must be positive, got nan$"):
        C.validate(dataclasses.replace(digits, train=dataclasses.replace(digits.train, learning_rate=float("nan"))))


def test_ranges_of_layers_smoothing_and_augmentation():
    layers = json.dumps([{"type": "conv", "filters": 4, "kernel_size": 0}, {"type": "flatten"}])
    for override, message in ((f"model.layers={layers}", r"^model.layers\[0\].kernel_size: must be at least 1, got 0$"),
                              ('model.layers=[{"type": "pool", "pool_size": 0}, {"type": "flatten"}]',
                               r"^model.layers\[0\].pool_size: must be at least 1"),
                              ("train.label_smoothing=5", r"^train.label_smoothing: must be in \[0, 1\), got 5"),
                              ("data.augment.zoom_range=-0.5", r"^data.augment.zoom_range: must be 0 \(off\) or more"),
                              # ImageDataGenerator's pixels (a shift of 4) wrecked 82% of the images here
                              ("data.augment.width_shift_range=4", r"^data.augment.width_shift_range: a fraction under "
                                                                   r"1 \(of the image's size for shifts: 0.1 is 10%, "
                                                                   r"not pixels"),
                              ("data.augment.zoom_range=1.5", r"^data.augment.zoom_range: a fraction under 1"),
                              ("data.augment.brightness_range=[1.5, 0.5]",
                               r"^data.augment.brightness_range: \(low, high\) factors with 0 <= low <= high"),
                              ("data.augment.brightness_range=[-1, 3]", r"^data.augment.brightness_range"),
                              ("data.augment.erasing=2", r"^data.augment.erasing: a probability in \[0, 1\], got 2"),
                              ("data.augment.cval=255", r"^data.augment.cval: a fill value in \[0, 1\] pixel units"),
                              ("data.num_parallel_calls=-3", r"^data.num_parallel_calls: must be at least 0, got -3$"),
                              ("data.shuffle_buffer=0", r"^data.shuffle_buffer: must be at least 1, got 0$"),
                              # config.json is strict JSON: no Infinity, no NaN
                              ("train.learning_rate=Infinity", r"^train.learning_rate: must be a finite number"),
                              ("train.weight_decay=NaN", r"^train.weight_decay: must be a finite number, got nan"),
                              ("data.augment.brightness_range=[0.5, Infinity]",
                               r"^data.augment.brightness_range\[1\]: must be a finite number"),
                              # a negative count read as "off" or "keep all", silently
                              ("train.max_steps=-5", r"^train.max_steps: must be at least 0, got -5$"),
                              ("train.checkpoints_to_keep=0", r"^train.checkpoints_to_keep: must be at least 1"),
                              ("data.seed=-1", r"^data.seed: must be at least 0, got -1$"),
                              ("log.probe_images=-1", r"^log.probe_images: must be at least 0"),
                              ("train.schedule.plateau_factor=5", r"^train.schedule.plateau_factor: must be under 1"),
                              ("model.batch_norm_decay=2", r"^model.batch_norm_decay: must be under 1, got 2$"),
                              ("train.devices=/cpu:x", r"^train.devices: '/cpu:x' is not auto, a count or a list"),
                              ("train.devices=/foo:0", r"^train.devices: '/foo:0' is not auto")):
        with pytest.raises(C.ConfigError, match=message):
            C.load(get_preset("digits"), None, [override])


def test_set_takes_pythons_number_spellings():
    config = C.load(get_preset("digits"), None, ["train.learning_rate=.001", "train.epochs=03",
                                                 "train.max_steps=1_000", "train.devices=2"])
    assert (config.train.learning_rate, config.train.epochs, config.train.max_steps) == (0.001, 3, 1000)
    assert config.train.devices == "2"  # a string field keeps what was typed
    for preset in PRESETS:  # every preset passes the number checks
        C.validate(get_preset(preset))


def test_keep_rate_groups_must_be_the_models():
    """A mistyped group once left the real one at the preset's rate, silently."""
    with pytest.raises(C.ConfigError, match=r"^train.keep_rates.zz: no dropout layer .* its groups: fc$"):
        C.load(get_preset("digits"), None, ["train.keep_rates.zz=0.5"])
    dog = get_preset("dog_breeds_vgg")  # groups conv and fc
    with pytest.raises(C.ConfigError, match=r"no keep rate for the dropout group 'conv'"):
        C.load(dog, None, ['train.keep_rates={"fc": 0.5}'])
    # the preset's fc rate, its dropout layer taken out by the user: dropped, not an error
    plain = C.load(get_preset("digits"), None, ['model.layers=[{"type": "conv", "filters": 4}, {"type": "flatten"}]'])
    assert plain.train.keep_rates == {}


def test_errors_of_a_config_file_or_a_runs_config_json_name_it(tmp_path, capsys):
    from graphcnn import cli

    keep = tmp_path / "keep.toml"
    keep.write_text("[train.keep_rates]\nfcc = 0.5\n")
    with pytest.raises(C.ConfigError, match=rf"^{keep}: train.keep_rates.fcc: no dropout layer"):
        C.load(get_preset("digits"), keep)
    with pytest.raises(C.ConfigError, match=r"^train.keep_rates.fcc: no dropout layer"):  # an override's: no file
        C.load(get_preset("digits"), None, ["train.keep_rates.fcc=0.5"])
    preset = tmp_path / "preset.toml"
    preset.write_text('preset = "nope"\n')
    assert cli.main(["config", "--config", str(preset)]) == 2
    assert capsys.readouterr().err.startswith(f"graphcnn: error: {preset}: unknown preset 'nope'; choices: digits")
    saved = tmp_path / "config.json"
    get_preset("digits").save(saved)
    saved.write_text(saved.read_text().replace('"epochs": 30', '"epochs": "x"'))
    with pytest.raises(C.ConfigError, match=rf"^{saved}: train.epochs: expected an integer"):
        C.from_json_file(saved)


def test_config_files_that_are_not_tables_or_text_are_named(tmp_path):
    cases = {"list.json": ("[1, 2]", "expected a table of keys"), "str.json": ('"x"', "expected a table of keys"),
             "preset.toml": ('preset = ["a"]', r"preset: expected a preset's name"),
             "upper.TOML": ("[train]\nepochs = 2\n", None),
             "my.yaml": ("train:\n  epochs: 2\n", r"a config file is TOML \(\.toml\) or JSON \(\.json\), not \.yaml")}
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        if message is None:
            assert C.read_file(tmp_path / name) == {"train": {"epochs": 2}}  # TOML, whatever the suffix's case
            continue
        with pytest.raises(C.ConfigError, match=rf"^{tmp_path / name}: {message}"):
            C.read_file(tmp_path / name)
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00junk")
    with pytest.raises(C.ConfigError, match=rf"^{tmp_path / 'bin.toml'}: not a text file"):
        C.read_file(tmp_path / "bin.toml")
    (tmp_path / "choice.toml").write_text('[train]\noptimizer = "adamw"\n')
    with pytest.raises(C.ConfigError, match=rf"^{tmp_path / 'choice.toml'}: train.optimizer: 'adamw' is not one of"):
        C.load(get_preset("digits"), tmp_path / "choice.toml")
    with pytest.raises(C.ConfigError, match=r"^train.optimizer: 'adamw' is not one of"):  # an override's
        C.load(get_preset("digits"), tmp_path / "upper.TOML", ["train.optimizer=adamw"])
    # a file value that only the overrides make valid is no error
    assert C.load(get_preset("digits"), tmp_path / "choice.toml", ["train.optimizer=sgd"]).train.optimizer == "sgd"


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


# ---------------------------------------------------------------------------
# registries: config choices come from them


def test_lookup_returns_the_entry_or_lists_the_choices():
    from graphcnn.registry import UnknownChoiceError, lookup

    registry = {"a": 1, "b": 2}
    assert lookup(registry, "b", "thing") == 2
    with pytest.raises(UnknownChoiceError, match=r"^unknown thing 'c'; choices: a, b$") as info:
        lookup(registry, "c", "thing")
    assert isinstance(info.value, ValueError)
    assert (info.value.what, info.value.name, info.value.choices) == ("thing", "c", ("a", "b"))
    with pytest.raises(UnknownChoiceError, match=r"choices: auto, a, b$"):
        lookup(registry, "auto", "thing", also=("auto",))  # listed, but the caller resolves it


def _registry(key: str):
    """The registry behind config ``key``, and the names accepted besides its keys."""
    from graphcnn.data.augment import FILL_MODES
    from graphcnn.data.sources import SOURCES
    from graphcnn.model.layers import INITIALIZERS
    from graphcnn.model.optimizers import OPTIMIZERS
    from graphcnn.model.precision import PRECISIONS
    from graphcnn.model.schedules import SCHEDULES

    return {
        "train.optimizer": (OPTIMIZERS, ()),
        "train.schedule.name": (SCHEDULES, ()),
        "train.precision": (PRECISIONS, ("auto",)),
        "data.source": (SOURCES, ("auto",)),
        "data.augment.fill_mode": (FILL_MODES, ()),
        "model.initializer": (INITIALIZERS, ()),
    }[key]


@pytest.mark.parametrize("key", ["train.optimizer", "train.schedule.name", "train.precision", "data.source",
                                 "data.augment.fill_mode", "model.initializer"])
def test_config_choices_are_the_registry_keys(key):
    registry, extra = _registry(key)
    choices = (*extra, *registry)
    period = ["train.schedule.decay_steps=100"] if key == "train.schedule.name" else []  # step's, exponential's
    for name in choices:
        C.load(get_preset("digits"), None, [f"{key}={name}", *period])
    with pytest.raises(C.ConfigError, match=f"^{key}: 'nope' is not one of {', '.join(choices)}$"):
        C.load(get_preset("digits"), None, [f"{key}=nope"])


def _with_layer(index: int, **changes) -> C.Config:
    """The digits preset with ``changes`` made to its layer ``index``."""
    config = get_preset("digits")
    layers = list(config.model.layers)
    layers[index] = dataclasses.replace(layers[index], **changes)
    return dataclasses.replace(config, model=dataclasses.replace(config.model, layers=tuple(layers)))


def test_layer_type_activation_and_pool_choices_are_the_registry_keys():
    from graphcnn.model.layers import ACTIVATIONS, POOLS
    from graphcnn.model.network import LAYERS

    conv = next(i for i, layer in enumerate(get_preset("digits").model.layers) if layer.type == "conv")
    pool = next(i for i, layer in enumerate(get_preset("digits").model.layers) if layer.type == "pool")
    for name in ACTIVATIONS:
        C.validate(_with_layer(conv, activation=name))
    for name in POOLS:
        C.validate(_with_layer(pool, pool=name))
    with pytest.raises(C.ConfigError,
                       match=rf"^model.layers\[{conv}\].type: 'conv3d' is not one of {', '.join(LAYERS)}$"):
        C.validate(_with_layer(conv, type="conv3d"))
    with pytest.raises(C.ConfigError,
                       match=rf"^model.layers\[{conv}\].activation: 'gelu' is not one of {', '.join(ACTIVATIONS)}$"):
        C.validate(_with_layer(conv, activation="gelu"))
    with pytest.raises(C.ConfigError, match=rf"^model.layers\[{pool}\].pool: 'min' is not one of max, avg$"):
        C.validate(_with_layer(pool, pool="min"))


def test_registering_an_optimizer_makes_it_a_valid_config_value(monkeypatch):
    import tensorflow as tf

    from graphcnn.model.optimizers import OPTIMIZERS, get_optimizer

    monkeypatch.setitem(OPTIMIZERS, "adagrad", lambda lr, cfg: tf.compat.v1.train.AdagradOptimizer(lr))
    config = C.load(get_preset("digits"), None, ["train.optimizer=adagrad"])
    with tf.Graph().as_default():
        assert isinstance(get_optimizer(config.train, 0.1), tf.compat.v1.train.AdagradOptimizer)


def test_backbone_choices_and_constraints_are_checked():
    from graphcnn.config import ConfigError, apply_overrides, validate
    from graphcnn.presets import get_preset

    with pytest.raises(ConfigError, match="model.backbone: 'vgg19' is not one of , vgg16, resnet50"):
        validate(apply_overrides(get_preset("vgg16"), ["model.backbone=vgg19"]))
    with pytest.raises(ConfigError, match="model.channels: backbone vgg16 takes RGB"):
        validate(apply_overrides(get_preset("vgg16"), ["model.channels=1"]))
    with pytest.raises(ConfigError, match="backbone inception_v3 needs at least 75x75"):
        validate(apply_overrides(get_preset("inception_v3"), ["model.input_height=64"]))
    with pytest.raises(ConfigError, match="train.init_from: a keras: weights file initializes a backbone"):
        validate(apply_overrides(get_preset("digits"), ["train.init_from=keras:/x.h5"]))
    with pytest.raises(ConfigError, match="data.mean_subtraction: backbone resnet50 applies its own preprocessing"):
        validate(apply_overrides(get_preset("resnet50"), ["data.mean_subtraction=true"]))


@pytest.mark.parametrize("index, changes, message", [
    (0, {"name": "train"}, r"^model.layers\[0\].name: 'train' is a scope of graphcnn's own graph"),
    (0, {"name": "output"}, r"^model.layers\[0\].name: 'output' is a scope of graphcnn's own graph"),
    (0, {"name": "my conv"}, r"^model.layers\[0\].name: 'my conv' is not a layer name: letters, digits and _"),
    (2, {"kernel_size": 7}, r"^model.layers\[2\].kernel_size: a pool layer has no kernel_size \(its keys: type, "
                            r"name, pool, pool_size, strides, padding\)$"),
    (0, {"units": 10}, r"^model.layers\[0\].units: a conv layer has no units"),
    (1, {"name": "conv1_1"}, r"^model.layers\[1\].name: 'conv1_1' is layer 0's name too \(this one is named\)"),
])
def test_a_layer_description_that_would_build_another_network_is_refused_at_once(index, changes, message):
    """Accepted before: a layer named 'train' lost its weights from best/ (the final test failed),
    'output' made the run unusable by predict, a name with a space failed after the data loaded
    with advice about sizes, and a pool's kernel_size was ignored (a 2x2 window, not 7x7)."""
    with pytest.raises(C.ConfigError, match=message):
        C.validate(_with_layer(index, **changes))


def test_schedule_settings_that_cannot_work_are_refused_at_once():
    """A cosine floor above the base rate made the 'decay' climb; a step schedule without a period
    failed only after the data had loaded."""
    with pytest.raises(C.ConfigError, match=r"^train.schedule.min_learning_rate: the cosine's floor must be below"):
        C.load(get_preset("digits"), None, ["train.schedule.name=cosine", "train.schedule.min_learning_rate=1"])
    with pytest.raises(C.ConfigError, match=r"^train.schedule.decay_steps: the step schedule needs decay_steps > 0"):
        C.load(get_preset("digits"), None, ["train.schedule.name=step", "train.schedule.decay_steps=0"])


def test_messages_for_a_list_item_a_missing_type_and_toml_in_a_txt_file(tmp_path):
    """Were: "unknown key 'model.layers[0]'", "LayerConfig.__init__() missing 1 required
    positional argument: 'type'", and "not valid JSON" for a TOML file named .txt."""
    with pytest.raises(C.ConfigError, match=r"^model.layers\[0\]: a list's items are not set one by one; give the "
                                            r"whole list \(--set 'model.layers=\[\{...\}, ...\]' as JSON"):
        C.apply_overrides(get_preset("digits"), ["model.layers[0].filters=8"])
    notype = tmp_path / "net.toml"
    notype.write_text('[[model.layers]]\nfilters = 3\n')
    with pytest.raises(C.ConfigError, match=r"model.layers\[0\].type: missing; every layer says its type \(conv, "):
        C.load(get_preset("digits"), notype, [])
    txt = tmp_path / "net.txt"
    txt.write_text('[train]\nepochs = 1\n')
    with pytest.raises(C.ConfigError, match=r"net.txt: not valid JSON \(it reads as TOML: give it the .toml extension"):
        C.load(get_preset("digits"), txt, [])
