"""Named architectures: the networks of the tutorials graphcnn grew from, as plain configs.

Each preset is a complete :class:`~graphcnn.config.Config`; a user file or ``--set``
overrides refine it. Add one by writing a function that returns a Config and adding it to
``PRESETS``.
"""

from __future__ import annotations

from typing import Callable

from graphcnn.config import (
    AugmentConfig, Config, ConfigError, DataConfig, LayerConfig, ModelConfig, ScheduleConfig, TrainConfig,
)


def conv(filters: int, kernel_size: int = 3, **kw) -> LayerConfig:
    return LayerConfig(type="conv", filters=filters, kernel_size=kernel_size, **kw)


def pool(**kw) -> LayerConfig:
    return LayerConfig(type="pool", **kw)


def dense(units: int, **kw) -> LayerConfig:
    return LayerConfig(type="dense", units=units, **kw)


def dropout(group: str) -> LayerConfig:
    return LayerConfig(type="dropout", keep_group=group)


def _preset(name: str, size: int, channels: int, layers: list[LayerConfig], *, keep_rates: dict[str, float],
            epochs: int, batch_size: int = 32, learning_rate: float = 1e-3, initializer: str = "he",
            backbone: str = "", data_path: str = "", augment: AugmentConfig = AugmentConfig(),
            test_time_flip: bool = False, **train) -> Config:
    return Config(
        preset=name,
        model=ModelConfig(name=name, input_height=size, input_width=size, channels=channels,
                          layers=tuple(layers), initializer=initializer, backbone=backbone,
                          test_time_flip=test_time_flip),
        train=TrainConfig(learning_rate=learning_rate, batch_size=batch_size, epochs=epochs, keep_rates=keep_rates,
                          **train),
        data=DataConfig(path=data_path, augment=augment),
    )


def _two_conv_blocks(width1: int, width2: int, units: int) -> list[LayerConfig]:
    """convW1-convW1-pool-convW2-convW2-pool-fcU-dropout("fc"), every layer batch-normalized."""
    return [
        conv(width1, batch_norm=True), conv(width1, batch_norm=True), pool(),
        conv(width2, batch_norm=True), conv(width2, batch_norm=True), pool(),
        dense(units, batch_norm=True), dropout("fc"),
    ]


def digits() -> Config:
    """MNIST-style digits: conv16-conv16-pool-conv32-conv32-pool-fc128, batch-normalized, on 28x28 grayscale.

    The default. Batch norm before each ReLU, small random rotations, shifts and zooms (5
    degrees, 5%, 5%; the border filled black, as the digits' own background), Adam at 2e-3
    with a cosine decay over 30 epochs and label smoothing 0.1: 98.6-99.6% test accuracy
    on the embedded digits, seeds 0-5, float32 or mixed_bfloat16, in under a minute on 2
    AVX-512 cores (BENCHMARKS.md, Q12). Without the batch norm and the augmentation the
    same net reached 98.2-98.8%.
    """
    return _preset("digits", 28, 1, _two_conv_blocks(16, 32, 128),
        keep_rates={"fc": 0.5}, epochs=30, batch_size=64, learning_rate=2e-3,
        schedule=ScheduleConfig(name="cosine", decay_steps=0), label_smoothing=0.1,
        augment=AugmentConfig(rotation_range=5.0, width_shift_range=0.05, height_shift_range=0.05,
                              zoom_range=0.05, fill_mode="constant"))


def ct_scan() -> Config:
    """The 2-class CT-scan classifier: conv16-pool-conv32-pool-fc1024 on 100x100 grayscale."""
    return _preset("ct_scan", 100, 1, [
        conv(16), pool(),
        conv(32), pool(),
        dense(1024), dropout("fc"),
    ], keep_rates={"fc": 0.5}, epochs=10, initializer="truncated_normal")


def dog_breeds_vgg() -> Config:
    """The dog-breed VGG: conv32-conv32-pool-conv64-conv64-pool-fc512 on 224x224 RGB.

    Two dropout keep-rates, as in the tutorial's ``keepRate1`` (after each conv block)
    and ``keepRate2`` (after the fully connected layer).
    """
    return _preset("dog_breeds_vgg", 224, 3, [
        conv(32), conv(32), pool(), dropout("conv"),
        conv(64), conv(64), pool(), dropout("conv"),
        dense(512), dropout("fc"),
    ], keep_rates={"conv": 0.75, "fc": 0.5}, epochs=20)


def cats_dogs_small() -> Config:
    """Cats vs dogs, small: conv32-pool-conv64-pool-fc512 on 300x300 RGB."""
    return _preset("cats_dogs_small", 300, 3, [
        conv(32), pool(),
        conv(64), pool(),
        dense(512), dropout("fc"),
    ], keep_rates={"fc": 0.5}, epochs=15)


def cats_dogs_4block() -> Config:
    """Cats vs dogs, four conv blocks: (conv-pool) x 4 with 32-64-128-128 filters, fc512, 300x300 RGB."""
    return _preset("cats_dogs_4block", 300, 3, [
        conv(32), pool(),
        conv(64), pool(),
        conv(128), pool(),
        conv(128), pool(),
        dense(512), dropout("fc"),
    ], keep_rates={"fc": 0.5}, epochs=30, learning_rate=1e-4)


def cats_dogs_150() -> Config:
    """Cats vs dogs at 150x150 RGB: conv32-pool-conv64-pool-conv128-pool, fc128, fc512."""
    return _preset("cats_dogs_150", 150, 3, [
        conv(32), pool(),
        conv(64), pool(),
        conv(128), pool(),
        dense(128), dense(512), dropout("fc"),
    ], keep_rates={"fc": 0.5}, epochs=15)


def fashion() -> Config:
    """Fashion-MNIST: conv32-pool-conv96-pool-fc256, batch-normalized, on 28x28 grayscale.

    Batch norm before each ReLU, dropout on fc1, horizontal flips, Adam with a cosine decay
    over 12 epochs and label smoothing: about 93.4% test accuracy, in 3.3 minutes on 2 AMX CPU
    cores (mixed_bfloat16) and about 10 on 2 AVX2 cores (float32) (BENCHMARKS.md). Reads
    /usr/share/datasets/fashion-mnist (``apt-get install dataset-fashion-mnist``) by default.
    """
    return _preset("fashion", 28, 1, [
        conv(32, batch_norm=True), pool(),
        conv(96, batch_norm=True), pool(),
        dense(256, batch_norm=True), dropout("fc"),
    ], keep_rates={"fc": 0.5}, epochs=12, batch_size=128, learning_rate=2e-3,
        schedule=ScheduleConfig(name="cosine", decay_steps=0), label_smoothing=0.1,
        data_path="/usr/share/datasets/fashion-mnist", augment=AugmentConfig(horizontal_flip=True))


def fashion_vgg() -> Config:
    """Fashion-MNIST, two convs per block: conv32-conv32-pool-conv64-conv64-pool-fc256, batch-normalized.

    The accuracy record: the ``fashion`` recipe (batch norm, dropout on fc1, flips, Adam with a
    cosine decay, label smoothing) on a VGG-style net, with random shifts of up to 10% (black
    fill), 30 epochs, and test-time flips (``model.test_time_flip``: each image's probabilities
    averaged with its mirror image's, in validation, test and predict): 94.10-94.51% test
    accuracy on seeds 0-2 in 10.5-11.0 minutes start to exit on 2 AMX Xeon cores
    (mixed_bfloat16), 94.26-94.44% in 12.4-15.2 minutes on 2 AMD Zen 4 cores (by the VM's speed); the flips add
    0.28-0.37 points to the same checkpoints. Without them:
    94.11-94.13% in 12.5-13.3 minutes on 2 AMD Zen 4 cores, 93.87-94.19% on the Xeon, 94.0% in
    19.6 minutes at float32 on Zen 4 (BENCHMARKS.md, Q12).
    """
    return _preset("fashion_vgg", 28, 1, _two_conv_blocks(32, 64, 256),
        keep_rates={"fc": 0.5}, epochs=30, batch_size=128, learning_rate=2e-3,
        schedule=ScheduleConfig(name="cosine", decay_steps=0), label_smoothing=0.1,
        data_path="/usr/share/datasets/fashion-mnist", test_time_flip=True,
        augment=AugmentConfig(horizontal_flip=True, width_shift_range=0.1, height_shift_range=0.1,
                              fill_mode="constant"))


def _pretrained(backbone: str, size: int, units: int, keep_rate: float) -> Config:
    """A pretrained backbone under a global-average-pool, dense, dropout head, as the transfer-learning
    tutorials build it; horizontal flips. Train it from ``--init-from keras:<file>``, head first:
    ``scripts/transfer_learning.py`` runs the two-stage recipe."""
    return _preset(backbone, size, 3, [
        LayerConfig(type="global_avg_pool"), dense(units), dropout("fc"),
    ], keep_rates={"fc": keep_rate}, epochs=10, batch_size=32, learning_rate=1e-3, initializer="glorot",
        backbone=backbone, augment=AugmentConfig(horizontal_flip=True))


def vgg16() -> Config:
    """VGG16's ImageNet base at 150x150 RGB, GAP, fc256, dropout 0.5 (Chollet's cats vs dogs)."""
    return _pretrained("vgg16", 150, 256, 0.5)


def resnet50() -> Config:
    """ResNet50's ImageNet base at 224x224 RGB, GAP, fc256, dropout 0.5."""
    return _pretrained("resnet50", 224, 256, 0.5)


def inception_v3() -> Config:
    """InceptionV3's ImageNet base at 150x150 RGB, GAP, fc1024, dropout 0.5 (the Keras fine-tuning example)."""
    return _pretrained("inception_v3", 150, 1024, 0.5)


def mobilenet_v2() -> Config:
    """MobileNetV2's ImageNet base at 160x160 RGB, GAP, fc128, dropout 0.8 keep (TensorFlow's transfer tutorial)."""
    return _pretrained("mobilenet_v2", 160, 128, 0.8)


PRESETS: dict[str, Callable[[], Config]] = {
    "digits": digits,
    "fashion": fashion,
    "fashion_vgg": fashion_vgg,
    "ct_scan": ct_scan,
    "dog_breeds_vgg": dog_breeds_vgg,
    "cats_dogs_small": cats_dogs_small,
    "cats_dogs_4block": cats_dogs_4block,
    "cats_dogs_150": cats_dogs_150,
    "vgg16": vgg16,
    "resnet50": resnet50,
    "inception_v3": inception_v3,
    "mobilenet_v2": mobilenet_v2,
}

DEFAULT_PRESET = "digits"


def get_preset(name: str) -> Config:
    """The preset called ``name``; the error lists the choices."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ConfigError(f"unknown preset '{name}'; choices: {', '.join(PRESETS)}") from None
