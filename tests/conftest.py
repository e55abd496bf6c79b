"""Shared test setup: quiet TensorFlow, oneDNN as graphcnn uses it, tiny synthetic datasets."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
# the tests' subprocesses (scripts, cluster tasks, the CLI) import this checkout's graphcnn,
# not whichever one is installed (an editable install of another checkout, say)
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ["PYTHONPATH"] = os.pathsep.join([_ROOT, *filter(None, [os.environ.get("PYTHONPATH")])])

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from graphcnn.config import Config, LayerConfig, ModelConfig, TrainConfig, LogConfig  # noqa: E402
from graphcnn.data.dataset import Dataset, Split  # noqa: E402


def synthetic_dataset(n_per_class: int = 24, size: int = 12, num_classes: int = 3, seed: int = 0) -> Dataset:
    """Classes that a tiny net separates quickly: a bright square in a class-specific corner."""
    rng = np.random.default_rng(seed)

    def make(n):
        images, labels = [], []
        for c in range(num_classes):
            for _ in range(n):
                img = rng.integers(0, 40, (size, size, 1))
                r, col = divmod(c, 2)
                h = size // 2
                img[r * h:(r + 1) * h, col * h:(col + 1) * h] += 180
                images.append(img)
                labels.append(c)
        return Split(labels=np.array(labels, np.int64), images=np.clip(np.array(images), 0, 255).astype(np.uint8))

    return Dataset(name="synthetic", class_names=tuple(f"c{i}" for i in range(num_classes)),
                   train=make(n_per_class), validation=make(4), test=make(4))


def cut_jpeg(path, image, keep=0.5):
    """Save ``image`` as a JPEG, then keep the first ``keep`` of its bytes and append an end
    marker: a file cut short as some download and copy tools leave it. Returns ``path``."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    path.write_bytes(data[: int(len(data) * keep)] + b"\xff\xd9")
    return str(path)


def jpeg_segments(data: bytes, jfif: bool = True, comment: bytes = b"") -> bytes:
    """A JPEG file's bytes with its JFIF APP0 segment taken out (``jfif`` False: the EXIF segment,
    if any, then comes right after the start of image; Pillow always writes JFIF), and/or a comment
    segment put in front of its other segments."""
    assert data[2:4] == b"\xff\xe0"  # Pillow's JFIF APP0 first
    rest = data[4 + int.from_bytes(data[4:6], "big"):]
    app0 = data[2:4 + int.from_bytes(data[4:6], "big")] if jfif else b""
    com = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment if comment else b""
    return data[:2] + com + app0 + rest


def tiny_config(**train) -> Config:
    """A small net with every layer kind, on 12x12 grayscale."""
    layers = (
        LayerConfig(type="conv", filters=4), LayerConfig(type="pool"),
        LayerConfig(type="conv", filters=8, batch_norm=True), LayerConfig(type="pool"),
        LayerConfig(type="dropout", keep_group="conv"),
        LayerConfig(type="dense", units=16), LayerConfig(type="dropout", keep_group="fc"),
    )
    defaults = dict(batch_size=8, epochs=2, keep_rates={"conv": 0.9, "fc": 0.5}, learning_rate=0.01)
    defaults.update(train)
    return Config(
        preset="tiny",
        model=ModelConfig(name="tiny", input_height=12, input_width=12, channels=1, layers=layers),
        train=TrainConfig(**defaults),
        log=LogConfig(scalars_every=2, histograms_every=3, filters_every=3),
    )


@pytest.fixture
def dataset() -> Dataset:
    return synthetic_dataset()
