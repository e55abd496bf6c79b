"""Reading a run's event files back: scalars and images, as TensorBoard itself reads them.

Built on TensorBoard's ``EventAccumulator``, so what ``graphcnn report`` and ``graphcnn
filters`` see is what the dashboards show: every event file of the directory in name order,
and with ``purge_orphaned_data`` the events a crashed run wrote past a restart dropped (a
``SessionLog.START`` at step s removes the earlier events at steps >= s). A record cut short
at the end of a file (the writer was killed mid-write, or is still writing) ends that file
quietly in TensorBoard; here it is also logged as a warning.

Scalars can be ``simple_value`` (TF1 summaries, what the trainer writes) or scalar tensors
of the scalars plugin (``tf.summary.scalar`` in TF2); images ``Summary.Image`` (TF1) or
string tensors of the images plugin (TF2; the first image of each step is kept).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from tensorboard.backend.event_processing import event_accumulator

log = logging.getLogger("graphcnn.tensorboard")

# keep every event: TensorBoard's default reservoirs sample 4 images and 10 tensors per tag
_KEEP_EVERYTHING = {event_accumulator.SCALARS: 0, event_accumulator.IMAGES: 0, event_accumulator.TENSORS: 0}


def _event_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if "tfevents" in p.name and p.is_file())


def _warn_truncated(directory: Path) -> None:
    """Name each event file whose last record is cut short (EventAccumulator stops there quietly)."""
    import tensorflow as tf

    for path in _event_files(directory):
        try:
            for _ in tf.data.TFRecordDataset(str(path), buffer_size=1 << 20):
                pass
        except tf.errors.DataLossError:
            log.warning("%s ends with an incomplete record (the writer was killed, or is still writing): "
                        "read up to it", path)


def _load(directory: str | Path) -> event_accumulator.EventAccumulator | None:
    """Every event of ``directory`` (not its subdirectories), or None if it is not a directory."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    _warn_truncated(directory)
    accumulator = event_accumulator.EventAccumulator(str(directory), size_guidance=_KEEP_EVERYTHING,
                                                     purge_orphaned_data=True)
    return accumulator.Reload()


def _read(directory: str | Path, kind: str, plugin: str, prefix: str, value: Callable[[Any], Any],
          tensor_value: Callable[[Any], Any]) -> dict[str, list[tuple[int, Any]]]:
    """{tag: [(step, value), ...]} of the ``kind`` summaries (TF1: ``value(event)``) and of the
    ``plugin``'s tensors (TF2: ``tensor_value(tensor proto)``, None for no value) whose tag starts
    with ``prefix``: one value per step (the last written), sorted by step."""
    accumulator = _load(directory)
    if accumulator is None:
        return {}
    found: dict[str, dict[int, Any]] = {}
    tags = accumulator.Tags()
    read = getattr(accumulator, kind.capitalize())  # accumulator.Scalars, accumulator.Images
    for tag in tags[kind]:
        if tag.startswith(prefix):
            found.setdefault(tag, {}).update((event.step, value(event)) for event in read(tag))
    for tag in tags[event_accumulator.TENSORS]:
        metadata = accumulator.summary_metadata.get(tag)
        if tag.startswith(prefix) and metadata is not None and metadata.plugin_data.plugin_name == plugin:
            values = found.setdefault(tag, {})
            for event in accumulator.Tensors(tag):
                if (v := tensor_value(event.tensor_proto)) is not None:
                    values[event.step] = v
    return {tag: sorted(values.items()) for tag, values in found.items()}


def read_scalars(directory: str | Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of the scalars in ``directory``'s event files: one value per step
    (the last written), sorted by step. A missing directory or no event files: {}."""
    from tensorboard.plugins.scalar import metadata as scalar_metadata
    from tensorboard.util import tensor_util

    return _read(directory, event_accumulator.SCALARS, scalar_metadata.PLUGIN_NAME, "",
                 lambda event: float(event.value), lambda tensor: float(tensor_util.make_ndarray(tensor).item()))


def read_images(directory: str | Path, prefix: str = "") -> dict[str, list[tuple[int, bytes]]]:
    """{tag: [(step, encoded image), ...]} of the image summaries whose tag starts with ``prefix``:
    one image per step (the last written), sorted by step. The bytes are the file as logged (PNG
    for everything graphcnn writes). A missing directory or no event files: {}."""
    from tensorboard.plugins.image import metadata as image_metadata

    def first_image(tensor) -> bytes | None:  # the images plugin's tensor: [width, height, image 1, ...] as strings
        return bytes(tensor.string_val[2]) if len(tensor.string_val) > 2 else None

    return _read(directory, event_accumulator.IMAGES, image_metadata.PLUGIN_NAME, prefix,
                 lambda event: event.encoded_image_string, first_image)
