"""Configuration: frozen dataclasses, loading from TOML/JSON, type-checked overrides.

A run is fully described by one :class:`Config`. It is built from a preset (see
:mod:`graphcnn.presets`), optionally a user file, then ``--set key=value`` overrides;
the resolved result is written to ``config.json`` in the run directory so that
``--resume`` and ``predict`` see exactly what trained the model.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import json
import math
import re
import tomllib
import typing
from pathlib import Path
from typing import Any, Iterator, Mapping


class ConfigError(ValueError):
    """A configuration value or key is invalid. The message names the key (and file)."""


@dataclasses.dataclass(frozen=True)
class LayerConfig:
    """One layer of a network, in order. ``type`` selects which fields matter.

    type: ``conv`` | ``pool`` | ``dense`` | ``dropout`` | ``batch_norm`` | ``flatten`` |
    ``global_avg_pool``. The final ``logits`` layer is added by the network builder.
    """

    type: str
    name: str = ""  # variable/name scope; derived (conv1_1, pool1, fc1, ...) when empty
    filters: int = 0  # conv
    kernel_size: int = 3  # conv
    strides: int = 0  # conv, pool; 0: 1 for conv, pool_size for pool
    padding: str = "SAME"  # conv, pool
    activation: str = "relu"  # conv, dense: relu|elu|leaky_relu|tanh|sigmoid|linear
    units: int = 0  # dense
    pool: str = "max"  # pool: max|avg
    pool_size: int = 2  # pool
    keep_group: str = "fc"  # dropout: which keep-rate input (input/keep_rate_<group>)
    batch_norm: bool = False  # conv, dense: batch normalization before the activation
    initializer: str = ""  # conv, dense: overrides ModelConfig.initializer
    weight_decay: float = -1.0  # conv, dense: L2 factor; < 0 uses train.weight_decay


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The network: input geometry, layer list and weight initialization."""

    name: str = "digits"
    input_height: int = 28
    input_width: int = 28
    channels: int = 1  # 1 grayscale, 3 RGB: images are converted to this on load
    layers: tuple[LayerConfig, ...] = ()  # with a backbone: the head on top of it
    # a pretrained convolutional base under the layers: vgg16 | resnet50 | inception_v3 | mobilenet_v2
    # (graphcnn.model.backbones); its weights come from --init-from keras:<file>
    backbone: str = ""
    initializer: str = "he"  # truncated_normal | glorot | he
    init_stddev: float = 0.1  # for truncated_normal
    batch_norm_decay: float = 0.99
    # test-time augmentation: validation, test, predict, evaluate and exported models average the
    # class probabilities of each image and its mirror image (training itself is unchanged)
    test_time_flip: bool = False

    @property
    def input_size(self) -> tuple[int, int]:
        """(input_height, input_width)."""
        return self.input_height, self.input_width


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Random training-split augmentation, named as Keras' ImageDataGenerator names it.

    All ranges 0 / False means off. Applied to whole training batches: in the training step for
    images held in memory, in the tf.data pipeline for image files read as it goes.
    """

    horizontal_flip: bool = False
    vertical_flip: bool = False
    rotation_range: float = 0.0  # degrees: uniform in [-r, r]
    width_shift_range: float = 0.0  # fraction of width (under 1; not pixels): uniform in [-r, r]
    height_shift_range: float = 0.0  # fraction of height (under 1)
    shear_range: float = 0.0  # shear angle in degrees: uniform in [-r, r]
    zoom_range: float = 0.0  # scale uniform in [1 - r, 1 + r], r under 1
    brightness_range: tuple[float, ...] = ()  # (low, high) multiplicative factors, () = off
    contrast_range: float = 0.0  # contrast factor uniform in [1 - r, 1 + r]
    fill_mode: str = "nearest"  # nearest | constant | reflect | wrap
    cval: float = 0.0  # fill value for fill_mode=constant, in [0, 1] pixel units
    erasing: float = 0.0  # probability that a rectangle of the image becomes noise (random erasing)
    erasing_area: tuple[float, ...] = (0.02, 0.4)  # (low, high): the rectangle's share of the image's area

    @property
    def enabled(self) -> bool:
        return bool(
            self.horizontal_flip or self.vertical_flip or self.rotation_range or self.width_shift_range
            or self.height_shift_range or self.shear_range or self.zoom_range
            or self.brightness_range or self.contrast_range or self.erasing
        )


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where images come from and how they are split and preprocessed."""

    source: str = "auto"  # auto | digits | folder | idx | npz | pickle
    path: str = ""  # empty: the embedded digits
    test_path: str = ""  # folder source: a separate test tree (else training_set/test_set or a split)
    validation_fraction: float = 0.1
    test_fraction: float = 0.1  # only when the source has no test split of its own
    seed: int = 0
    mean_subtraction: bool = False  # subtract the per-pixel mean of the training split
    # turn each JPEG upright by its EXIF orientation, as photo viewers and Pillow's ImageOps.exif_transpose
    # do (graphcnn.data.exif); false: as stored, as TensorFlow's decoder and Keras's loader read it
    exif_transpose: bool = False
    strict: bool = False  # bad files are an error instead of a warning
    # the pickle source runs code from the files it unpickles: it needs this too (auto never unpickles)
    trust_pickle: bool = False
    # auto | memory | none: keep decoded (files) or resized (arrays) images in memory. auto: a folder's
    # images decoded by the scan when they take at most 1 GiB, else decoded once more and cached under 2 GiB
    cache: str = "auto"
    shuffle_buffer: int = 10000  # file sources; in-memory arrays get a full permutation each epoch
    num_parallel_calls: int = 0  # 0: tf.data.AUTOTUNE
    augment: AugmentConfig = AugmentConfig()


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """Learning rate as a function of the global step, times a plateau factor."""

    name: str = "constant"  # constant | step | exponential | cosine
    warmup_steps: int = 0  # the schedule times (s + 1) / N for the first N steps (base / N at step 0)
    decay_steps: int = 1000  # step/exponential: period; cosine: length (0 = the whole run)
    decay_rate: float = 0.1  # step/exponential: multiplier per period
    min_learning_rate: float = 0.0  # cosine: floor
    plateau_factor: float = 0.0  # > 0: reduce-on-plateau multiplies the rate by this
    plateau_patience: int = 2  # evaluations without improvement before reducing
    plateau_min_learning_rate: float = 0.0


@dataclasses.dataclass(frozen=True)
class EarlyStoppingConfig:
    """Stop when the monitored validation metric stops improving."""

    monitor: str = "accuracy"  # validation metric: accuracy | loss
    patience: int = 0  # evaluations without improvement before stopping; 0 = off
    min_delta: float = 0.0  # smaller changes do not count as improvement
    restore_best: bool = True  # load the best checkpoint's weights at the end


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimization and checkpointing."""

    optimizer: str = "adam"  # adam | sgd | momentum | rmsprop
    learning_rate: float = 1e-3
    momentum: float = 0.9  # the momentum optimizer's (TF1's form: velocity of raw gradients, times the rate)
    rmsprop_momentum: float = 0.0  # rmsprop's, 0 as Keras's RMSprop
    batch_size: int = 64
    epochs: int = 10
    max_steps: int = 0  # > 0: the run's length in global steps, instead of `epochs`
    eval_every_steps: int = 0  # > 0: also evaluate on validation every N steps
    keep_rates: Mapping[str, float] = dataclasses.field(default_factory=dict)  # group -> keep rate
    checkpoints_to_keep: int = 5
    checkpoint_every_steps: int = 0  # > 0: also save every N steps (always at each epoch end)
    seed: int = 0
    schedule: ScheduleConfig = ScheduleConfig()
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    clip_global_norm: float = 0.0  # > 0: clip gradients to this global norm
    # L2 on weights (not biases, nor MobileNetV2's depthwise kernels: tf-slim's regularize_depthwise=False);
    # LayerConfig.weight_decay overrides
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    # > 0: keep an exponential moving average of the trained weights with this decay
    # (tf.train.ExponentialMovingAverage, as TensorFlow's cifar10 tutorial and tf-slim do; Keras's
    # use_ema / ema_momentum): validation, best/, the final test and predicting from the run use it
    moving_average_decay: float = 0.0
    check_numerics: bool = True  # a NaN/Inf loss stops training before the update is applied
    # compute precision of the training graph (variables and checkpoints are float32 either way):
    # auto = mixed_bfloat16 on CPUs with AMX-BF16 or AVX512-BF16 (up to 2x there, same accuracy: BENCHMARKS.md),
    # else float32
    precision: str = "auto"  # auto | float32 | mixed_bfloat16
    # devices of one process, one tower each: "auto" (every visible GPU, else one CPU), a count
    # ("2": that many GPUs, else that many logical CPUs) or a list ("/gpu:0,/gpu:1")
    devices: str = "auto"
    # fine-tuning (tf-slim style)
    init_from: str = ""  # checkpoint (file prefix, directory or run directory) to start from
    exclude_scopes: tuple[str, ...] = ()  # variables under these scopes are not restored
    trainable_scopes: tuple[str, ...] = ()  # only these are trained (empty: all)
    skip_mismatched: bool = False  # skip variables whose shape differs instead of failing


@dataclasses.dataclass(frozen=True)
class LogConfig:
    """What goes to TensorBoard, and how often (0 switches an item off)."""

    scalars_every: int = 10  # train loss/accuracy/learning rate/images per second
    histograms_every: int = 200  # weights and biases
    filters_every: int = 100  # conv kernels as image grids
    max_filter_images: int = 4  # only the first N conv layers get filter images
    graph: bool = True
    # TensorBoard views (written by train/view_hooks.py)
    custom_scalars: bool = True  # layout: train + validation loss in one chart, accuracy in another
    gradients_every: int = 200  # histograms gradients/<variable>
    activations_every: int = 200  # histograms activations/<layer> and scalars sparsity/<layer>
    feature_maps_every: int = 500  # probe batch -> feature_maps/<layer> image grids
    probe_images: int = 4  # validation images of the probe batch (saved as probe.npz)
    eval_images: bool = True  # each validation: confusion matrix (image + text), worst misclassified
    max_misclassified: int = 16
    pr_curves: bool = True  # each validation: pr_curves/<class>
    gradcam: bool = True  # each validation: Grad-CAM of the probe images and the most confident mistakes
    trace_every: int = 500  # one traced step (compute time/memory in the graph view)
    hparams: bool = True  # hyperparameters + final metrics for the HParams dashboard
    projector_images: int = 500  # penultimate features of N validation images at the end


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything one run needs."""

    preset: str = "digits"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    log: LogConfig = LogConfig()

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")


# ---------------------------------------------------------------------------
# dict <-> dataclass, with errors that name the key


def to_dict(obj: Any) -> Any:
    """A JSON-ready copy of a config dataclass (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    return obj


# scalar annotation -> (accepted Python types, what the error says was expected); bool is never a number
_SCALARS = {bool: (bool, "true/false"), int: (int, "an integer"), float: ((int, float), "a number"),
            str: (str, "a string")}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp``; convert lists to tuples and dicts to dataclasses."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a table/object, got {value!r}")
        return from_dict(tp, value, key)
    if origin is tuple:
        (item_tp, _ellipsis) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (collections.abc.Mapping, dict):
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {str(k): _coerce(v, val_tp, f"{key}.{k}") for k, v in value.items()}
    if tp not in _SCALARS:  # pragma: no cover
        raise ConfigError(f"{key}: unsupported type {getattr(tp, '__name__', None) or tp}")
    accepted, expected = _SCALARS[tp]
    if not isinstance(value, accepted) or (tp is not bool and isinstance(value, bool)):
        raise ConfigError(f"{key}: expected {expected}, got {value!r}")
    return float(value) if tp is float else value


def from_dict(cls: type, data: Mapping[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types are errors."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{where}.{key}" if where else key
        if key not in hints:
            raise ConfigError(f"unknown key '{full}'; valid keys here: {', '.join(names)}")
        kwargs[key] = _coerce(value, hints[key], full)
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:  # a required field (LayerConfig.type)
        what = "every layer says its type (conv, pool, dense, dropout, batch_norm, flatten, global_avg_pool)" \
            if cls is LayerConfig else "it has no default"
        raise ConfigError(f"{where + '.' if where else ''}{missing[0]}: missing; {what}")
    return cls(**kwargs)


def merge(config: Any, data: Mapping[str, Any], where: str = "") -> Any:
    """Return ``config`` (or a nested config dataclass) with the (nested, partial) values of ``data`` applied."""
    hints = typing.get_type_hints(type(config))
    changes = {}
    for key, value in data.items():
        full = f"{where}.{key}" if where else key
        if key not in hints:
            names = ", ".join(f.name for f in dataclasses.fields(config))
            if "[" in key and key.split("[")[0] in hints:  # model.layers[0].filters: not one by one
                raise ConfigError(f"{full}: a list's items are not set one by one; give the whole list "
                                  f"(--set '{where + '.' if where else ''}{key.split('[')[0]}=[{{...}}, ...]' as "
                                  "JSON, or in a config file)")
            raise ConfigError(f"unknown key '{full}'; valid keys here: {names}")
        current = getattr(config, key)
        if dataclasses.is_dataclass(current) and isinstance(value, Mapping):
            changes[key] = merge(current, value, full)
        else:
            changes[key] = _coerce(value, hints[key], full)
    return dataclasses.replace(config, **changes)


# ---------------------------------------------------------------------------
# files and --set overrides


def _is_toml(text: str) -> bool:
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return False
    return True


def read_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML (``.toml``) or JSON (anything else) config file into a dict; a file that is
    not text, not valid, or not a table (object) at its top is a ConfigError naming it."""
    path = Path(path)
    toml = path.suffix.lower() == ".toml"
    if path.suffix.lower() in (".yaml", ".yml", ".ini", ".cfg", ".py"):
        raise ConfigError(f"{path}: a config file is TOML (.toml) or JSON (.json), not {path.suffix}")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (UTF-8); a config is TOML or JSON") from None
    try:
        data = tomllib.loads(text) if toml else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
        hint = "" if toml or not _is_toml(text) else " (it reads as TOML: give it the .toml extension)"
        raise ConfigError(f"{path}: not valid {'TOML' if toml else 'JSON'}{hint}: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a table of keys (a JSON object) at the top, got {type(data).__name__}")
    if "preset" in data and not isinstance(data["preset"], str):
        raise ConfigError(f"{path}: preset: expected a preset's name (a string), got {data['preset']!r}")
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``key=value``; the value is parsed as JSON when it can be, else kept as a string.

    ``train.learning_rate=0.01`` -> ("train.learning_rate", 0.01);
    ``train.keep_rates={"fc": 0.5}`` -> a dict; ``model.name=foo`` -> "foo".
    """
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key=value")
    key, raw = (part.strip() for part in text.split("=", 1))
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        pass
    if any(c.isdigit() for c in raw):  # Python's spellings JSON lacks: .001, 1., 03, +3, 1_000
        for number in (int, float):
            try:
                return key, number(raw)
            except ValueError:
                pass
    return key, {"true": True, "false": False}.get(raw.lower(), raw)


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """Apply ``--set`` overrides such as ``train.epochs=3`` or ``train.keep_rates.fc=0.5``.

    Each key must name an existing field (a mapping field such as ``train.keep_rates``
    also takes one sub-key); values are type-checked like file values.
    """
    for text in overrides:
        key, value = parse_override(text)
        if key == "preset":  # the name of the preset the config started from, not a switch
            raise ConfigError("preset: pick a preset with --preset NAME (or preset = \"NAME\" in a config file); "
                              "--set preset= would only rename the run's preset, not change its network")
        parts = key.split(".")
        obj: Any = config
        for i, part in enumerate(parts[:-1]):
            if not dataclasses.is_dataclass(obj) or part not in typing.get_type_hints(type(obj)):
                break  # merge() below reports the unknown key
            field_value = getattr(obj, part)
            if isinstance(field_value, Mapping) and i == len(parts) - 2:
                value = {**field_value, parts[-1]: value}
                parts = parts[:-1]
                break
            obj = field_value
        else:
            string_field = dataclasses.is_dataclass(obj) and typing.get_type_hints(type(obj)).get(parts[-1]) is str
            if string_field and not isinstance(value, str):
                value = text.split("=", 1)[1].strip()  # what was typed: train.devices=2 is "2"
        for part in reversed(parts):
            value = {part: value}
        config = merge(config, value)
    return config


def load(preset_config: Config, file: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Resolve a config: preset, then a user file (which may name its own preset), then overrides."""
    config = preset_config
    if file is not None:
        data = read_file(file)
        data.pop("preset", None)  # handled by the caller, which picked the preset
        try:
            config = merge(config, data)
        except ConfigError as err:
            raise ConfigError(f"{file}: {err}") from None
    resolved = apply_overrides(config, list(overrides))
    try:
        validate(resolved)
        return _check_keep_rates(resolved, preset_config.train.keep_rates)
    except ConfigError as err:
        if file is not None and _invalid(config, preset_config) == str(err):  # the file's value, not an override's
            raise ConfigError(f"{file}: {err}") from None
        raise


def _invalid(config: Config, preset_config: Config) -> str | None:
    """``validate``'s (or the keep-rate check's) message for ``config``, None when it is valid."""
    try:
        _check_keep_rates(validate(config), preset_config.train.keep_rates)
    except ConfigError as err:
        return str(err)
    return None


def _check_keep_rates(config: Config, inherited: Mapping[str, float]) -> Config:
    """The keep-rate groups the user gave match the model's dropout groups: a mistyped group
    would leave the real one at its preset's rate, and a group without a rate would train
    without dropout. A group ``inherited`` from the preset whose dropout layers the user took
    out is dropped. (Not in ``validate``: configs saved with runs are read as they are.)"""
    groups = keep_groups(config.model)
    stale = [g for g in config.train.keep_rates if g not in groups and inherited.get(g) == config.train.keep_rates[g]]
    if stale:
        rates = {g: r for g, r in config.train.keep_rates.items() if g not in stale}
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, keep_rates=rates))
    unknown = sorted(set(config.train.keep_rates) - set(groups))
    if unknown:
        raise ConfigError(f"train.keep_rates.{unknown[0]}: no dropout layer of the model has keep_group "
                          f"'{unknown[0]}'; its groups: {', '.join(groups) or 'none (no dropout layers)'}")
    missing = [g for g in groups if g not in config.train.keep_rates]
    if missing:
        raise ConfigError(f"train.keep_rates: no keep rate for the dropout group '{missing[0]}' "
                          f"(model.layers); set train.keep_rates.{missing[0]}")
    return config


def _choices() -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]:
    """The valid values of each choice key: (config key -> values, layer field -> values).

    Most come from the registries that implement them, so a new optimizer, layer type ...
    is valid as soon as it is registered. They are imported here, not at module top: config
    is the bottom layer, which every graphcnn module (those registries' included) imports,
    and they pull in TensorFlow, which a bare config import must not.
    """
    from graphcnn.data.augment import FILL_MODES
    from graphcnn.data.sources import SOURCES
    from graphcnn.model.backbones import BACKBONES
    from graphcnn.model.layers import ACTIVATIONS, INITIALIZERS, POOLS
    from graphcnn.model.network import LAYERS
    from graphcnn.model.optimizers import OPTIMIZERS
    from graphcnn.model.precision import PRECISIONS
    from graphcnn.model.schedules import SCHEDULES

    config_choices = {
        "data.source": ("auto", *SOURCES),  # auto: detected from data.path
        "data.cache": ("auto", "memory", "none"),
        "model.initializer": tuple(INITIALIZERS),
        "model.backbone": ("", *BACKBONES),  # "": none
        "train.optimizer": tuple(OPTIMIZERS),
        "train.schedule.name": tuple(SCHEDULES),
        "train.early_stopping.monitor": ("accuracy", "loss"),
        "train.precision": ("auto", *PRECISIONS),  # auto: picked for this machine
        "data.augment.fill_mode": tuple(FILL_MODES),
    }
    layer_choices = {
        "type": tuple(LAYERS),
        "activation": tuple(ACTIVATIONS),
        "pool": tuple(POOLS),
        "padding": ("SAME", "VALID"),
    }
    return config_choices, layer_choices


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: '{value}' is not one of {', '.join(choices)}")


SCOPE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
# top-level scopes graphcnn's training, inference and cluster graphs make themselves: a layer of
# one of these names would share or shift them (checkpoints, output/probabilities, the hooks' fetches)
RESERVED_SCOPES = frozenset({
    "accuracy", "activations", "allreduce", "average_gradients", "best_saver", "broadcast", "cluster",
    "compute_dtype", "cross_entropy", "global_step", "gradcam", "gradients", "init", "input", "learning_rate",
    "logits", "moving_average_reset", "moving_average_swap", "output", "predict_input", "save", "saver",
    "summaries", "test_time_flip", "test_time_flip_mean", "towers", "train", "weight_decay"})
# the keys each layer type reads (type and name: every one); another key set on it is an error
LAYER_KEYS: dict[str, tuple[str, ...]] = {
    "conv": ("type", "name", "filters", "kernel_size", "strides", "padding", "activation", "batch_norm",
             "initializer", "weight_decay"),
    "pool": ("type", "name", "pool", "pool_size", "strides", "padding"),
    "dense": ("type", "name", "units", "activation", "batch_norm", "initializer", "weight_decay"),
    "dropout": ("type", "name", "keep_group"),
    "batch_norm": ("type", "name"),
    "flatten": ("type", "name"),
    "global_avg_pool": ("type", "name"),
}
LAYER_DEFAULTS = {f.name: f.default for f in dataclasses.fields(LayerConfig)}


def validate(config: Config) -> Config:
    """Check choices and ranges that types alone cannot; return ``config`` unchanged."""
    config_choices, layer_choices = _choices()
    for key, choices in config_choices.items():
        value: Any = config
        for part in key.split("."):
            value = getattr(value, part)
        _check_choice(key, value, choices)
    m, t, d = config.model, config.train, config.data
    if m.channels not in (1, 3):
        raise ConfigError(f"model.channels: must be 1 or 3, got {m.channels}")
    for key, value in (("input_height", m.input_height), ("input_width", m.input_width)):
        if value < 1:
            raise ConfigError(f"model.{key}: must be at least 1, got {value}")
    if not m.layers and not m.backbone:
        raise ConfigError("model.layers: the network has no layers")
    if m.backbone:
        from graphcnn.model.backbones import BACKBONES
        smallest = BACKBONES[m.backbone].min_size
        if m.channels != 3:
            raise ConfigError(f"model.channels: backbone {m.backbone} takes RGB images (3), got {m.channels}")
        if min(m.input_height, m.input_width) < smallest:
            raise ConfigError(f"model.input_height/input_width: backbone {m.backbone} needs at least "
                              f"{smallest}x{smallest}, got {m.input_height}x{m.input_width}")
        if d.mean_subtraction:  # its weights expect the preprocessing they were trained with, and only it
            raise ConfigError(f"data.mean_subtraction: backbone {m.backbone} applies its own preprocessing "
                              "(keras.applications'); set it to false")
    if t.init_from.startswith("keras:") and not m.backbone:
        raise ConfigError("train.init_from: a keras: weights file initializes a backbone; set model.backbone "
                          "(or pick a preset that has one: vgg16, resnet50, inception_v3, mobilenet_v2)")
    for i, layer in enumerate(m.layers):
        where = f"model.layers[{i}]"
        _check_choice(f"{where}.type", layer.type, layer_choices["type"])
        if layer.name and not SCOPE_NAME.fullmatch(layer.name):  # a scope, a checkpoint's variable names
            raise ConfigError(f"{where}.name: '{layer.name}' is not a layer name: letters, digits and _, "
                              "beginning with a letter")
        if layer.name in RESERVED_SCOPES:
            raise ConfigError(f"{where}.name: '{layer.name}' is a scope of graphcnn's own graph (the reserved names: "
                              f"{', '.join(sorted(RESERVED_SCOPES))}); choose another")
        if layer.type == "dropout" and not re.fullmatch(r"[A-Za-z0-9_]+", layer.keep_group):
            raise ConfigError(f"{where}.keep_group: '{layer.keep_group}' names the input/keep_rate_<group> "
                              "placeholder: letters, digits and _")
        unused = [key for key, value in dataclasses.asdict(layer).items()
                  if key not in LAYER_KEYS.get(layer.type, ()) and value != LAYER_DEFAULTS[key]]
        if unused:  # a misplaced kernel_size would make another network without a word
            raise ConfigError(f"{where}.{unused[0]}: a {layer.type} layer has no {unused[0]} (its keys: "
                              f"{', '.join(LAYER_KEYS[layer.type])})")
        if layer.type == "conv" and layer.filters < 1:
            raise ConfigError(f"{where}.filters: a conv layer needs filters >= 1")
        if layer.type == "dense" and layer.units < 1:
            raise ConfigError(f"{where}.units: a dense layer needs units >= 1")
        if layer.type in ("conv", "dense"):
            _check_choice(f"{where}.activation", layer.activation, layer_choices["activation"])
            if layer.initializer:  # "": the model's
                _check_choice(f"{where}.initializer", layer.initializer, config_choices["model.initializer"])
        if layer.type == "pool":
            _check_choice(f"{where}.pool", layer.pool, layer_choices["pool"])
        for key, value, least in (("kernel_size", layer.kernel_size, 1), ("pool_size", layer.pool_size, 1),
                                  ("strides", layer.strides, 0)):
            if value < least:
                raise ConfigError(f"{where}.{key}: must be at least {least}, got {value}")
        _check_choice(f"{where}.padding", layer.padding, layer_choices["padding"])
    from graphcnn.model.network import resolve_layer_names

    try:
        resolve_layer_names(m.layers)  # two layers of one name, found here rather than when the graph is built
    except ValueError as err:
        raise ConfigError(str(err)) from None
    for group, rate in t.keep_rates.items():
        if not 0.0 < rate <= 1.0:
            raise ConfigError(f"train.keep_rates.{group}: keep rate must be in (0, 1], got {rate}")
    for key, value, least in (("batch_size", t.batch_size, 1), ("epochs", t.epochs, 0)):
        if value < least:
            raise ConfigError(f"train.{key}: must be at least {least}, got {value}")
    if t.epochs == 0 and t.max_steps <= 0:  # 0 epochs is allowed only where train.max_steps says the length
        raise ConfigError("train.epochs: 0 trains nothing; give at least 1, or the run's length in steps with "
                          "train.max_steps")
    if not t.learning_rate > 0:  # also catches nan
        raise ConfigError(f"train.learning_rate: must be positive, got {t.learning_rate}")
    sch = t.schedule
    if sch.name == "cosine" and sch.min_learning_rate >= t.learning_rate:  # the "decay" would climb to it
        raise ConfigError(f"train.schedule.min_learning_rate: the cosine's floor must be below train.learning_rate "
                          f"({t.learning_rate:g}), got {sch.min_learning_rate:g}")
    if sch.name in ("step", "exponential") and sch.decay_steps <= 0:  # found at once, not after the data loads
        raise ConfigError(f"train.schedule.decay_steps: the {sch.name} schedule needs decay_steps > 0, "
                          f"got {sch.decay_steps}")
    if not 0.0 <= t.label_smoothing < 1.0:
        raise ConfigError(f"train.label_smoothing: must be in [0, 1), got {t.label_smoothing}")
    a = d.augment
    for key in ("rotation_range", "width_shift_range", "height_shift_range", "shear_range", "zoom_range",
                "contrast_range"):
        if not getattr(a, key) >= 0:
            raise ConfigError(f"data.augment.{key}: must be 0 (off) or more, got {getattr(a, key)}")
    for key in ("width_shift_range", "height_shift_range", "zoom_range", "contrast_range"):
        if getattr(a, key) >= 1:  # ImageDataGenerator reads a shift of 1 or more as pixels: these are fractions
            raise ConfigError(f"data.augment.{key}: a fraction under 1 (of the image's size for shifts: 0.1 is "
                              f"10%, not pixels; of the scale for zoom and contrast), got {getattr(a, key)}")
    if a.brightness_range and (len(a.brightness_range) != 2
                               or not 0.0 <= a.brightness_range[0] <= a.brightness_range[1]):
        raise ConfigError("data.augment.brightness_range: (low, high) factors with 0 <= low <= high, got "
                          f"{list(a.brightness_range)}")
    if not 0.0 <= a.erasing <= 1.0:
        raise ConfigError(f"data.augment.erasing: a probability in [0, 1], got {a.erasing}")
    if a.erasing and (len(a.erasing_area) != 2 or not 0.0 < a.erasing_area[0] <= a.erasing_area[1] <= 1.0):
        raise ConfigError("data.augment.erasing_area: (low, high) with 0 < low <= high <= 1, got "
                          f"{list(a.erasing_area)}")
    if not 0.0 <= a.cval <= 1.0:
        raise ConfigError(f"data.augment.cval: a fill value in [0, 1] pixel units (pixels are scaled by 1/255 "
                          f"first: 128 is 0.5), got {a.cval}")
    if not 0.0 <= t.moving_average_decay < 1.0:
        raise ConfigError(f"train.moving_average_decay must be in [0, 1) (0 = off), got {t.moving_average_decay}")
    if t.devices != "auto" and not (t.devices.isdigit() and int(t.devices) >= 1) and not all(
            re.fullmatch(r"/(cpu|gpu):\d+", d.strip(), re.IGNORECASE) for d in t.devices.split(",")):
        raise ConfigError(f"train.devices: '{t.devices}' is not auto, a count or a list like /gpu:0,/gpu:1 "
                          "(or /cpu:0,/cpu:1)")
    for key, value in (("validation_fraction", d.validation_fraction), ("test_fraction", d.test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"data.{key}: must be in [0, 1), got {value}")
    _check_numbers(config)
    return config


# the lowest value of each count, size, rate and period not checked on its own above (a
# negative max_steps or checkpoints_to_keep was read as "off" or "keep all", silently)
AT_LEAST: dict[str, float] = {
    "data.seed": 0, "data.shuffle_buffer": 1, "data.num_parallel_calls": 0,  # 0: tf.data's autotune
    "train.seed": 0, "train.max_steps": 0, "train.eval_every_steps": 0,
    "train.checkpoints_to_keep": 1, "train.checkpoint_every_steps": 0, "train.momentum": 0,
    "train.rmsprop_momentum": 0, "train.clip_global_norm": 0, "train.weight_decay": 0,
    "train.schedule.warmup_steps": 0, "train.schedule.decay_steps": 0, "train.schedule.min_learning_rate": 0,
    "train.schedule.plateau_factor": 0, "train.schedule.plateau_patience": 1,
    "train.schedule.plateau_min_learning_rate": 0, "train.early_stopping.patience": 0,
    "train.early_stopping.min_delta": 0, "model.batch_norm_decay": 0,
    **{f"log.{key}": 0 for key in ("scalars_every", "histograms_every", "filters_every", "max_filter_images",
                                   "gradients_every", "activations_every", "feature_maps_every", "probe_images",
                                   "max_misclassified", "trace_every", "projector_images")},
}
BELOW_ONE = ("train.momentum", "train.rmsprop_momentum", "train.schedule.plateau_factor", "model.batch_norm_decay")


def _numbers(obj: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """(key, value) of every number in a config, lists and tables included."""
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            yield from _numbers(getattr(obj, f.name), f"{key}.{f.name}" if key else f.name)
    elif isinstance(obj, Mapping):
        for name, value in obj.items():
            yield from _numbers(value, f"{key}.{name}")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _numbers(value, f"{key}[{i}]")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield key, obj


def _check_numbers(config: Config) -> None:
    """No number is infinite or NaN (config.json stays strict JSON), and none is below its
    least value or, for momentum-like factors, at 1 or above."""
    values = dict(_numbers(config))
    for key, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}: must be a finite number, got {value}")
    for key, least in AT_LEAST.items():
        if values[key] < least:
            raise ConfigError(f"{key}: must be at least {least:g}, got {values[key]:g}")
    for key in BELOW_ONE:
        if values[key] >= 1:
            raise ConfigError(f"{key}: must be under 1, got {values[key]:g}")
    if config.train.schedule.decay_rate <= 0:
        raise ConfigError(f"train.schedule.decay_rate: must be positive, got {config.train.schedule.decay_rate:g}")
    if config.model.init_stddev <= 0:
        raise ConfigError(f"model.init_stddev: must be positive, got {config.model.init_stddev:g}")


def from_json_file(path: str | Path) -> Config:
    """Load a resolved ``config.json`` written by :meth:`Config.save`."""
    data = read_file(path)
    try:
        return validate(from_dict(Config, data))
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def keep_groups(model: ModelConfig) -> tuple[str, ...]:
    """The dropout keep-rate groups a model uses, in first-use order."""
    return tuple(dict.fromkeys(layer.keep_group for layer in model.layers if layer.type == "dropout"))


__all__ = [
    "AugmentConfig", "Config", "ConfigError", "DataConfig", "EarlyStoppingConfig", "LayerConfig", "LogConfig",
    "ModelConfig", "ScheduleConfig", "TrainConfig", "apply_overrides", "from_dict", "from_json_file", "keep_groups",
    "load", "merge", "parse_override", "read_file", "to_dict", "validate",
]
