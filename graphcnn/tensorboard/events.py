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


def _plugin(accumulator: event_accumulator.EventAccumulator, tag: str) -> str:
    return accumulator.summary_metadata[tag].plugin_data.plugin_name if tag in accumulator.summary_metadata else ""


def read_scalars(directory: str | Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of the scalars in ``directory``'s event files: one value per step
    (the last written), sorted by step. A missing directory or no event files: {}."""
    from tensorboard.plugins.scalar import metadata as scalar_metadata
    from tensorboard.util import tensor_util

    accumulator = _load(directory)
    if accumulator is None:
        return {}
    found: dict[str, dict[int, float]] = {}
    tags = accumulator.Tags()
    for tag in tags[event_accumulator.SCALARS]:
        values = found.setdefault(tag, {})
        for event in accumulator.Scalars(tag):
            values[event.step] = float(event.value)
    for tag in tags[event_accumulator.TENSORS]:
        if _plugin(accumulator, tag) != scalar_metadata.PLUGIN_NAME:
            continue
        values = found.setdefault(tag, {})
        for event in accumulator.Tensors(tag):
            values[event.step] = float(tensor_util.make_ndarray(event.tensor_proto).item())
    return {tag: sorted(values.items()) for tag, values in found.items()}


def read_images(directory: str | Path, prefix: str = "") -> dict[str, list[tuple[int, bytes]]]:
    """{tag: [(step, encoded image), ...]} of the image summaries whose tag starts with ``prefix``:
    one image per step (the last written), sorted by step. The bytes are the file as logged (PNG
    for everything graphcnn writes). A missing directory or no event files: {}."""
    from tensorboard.plugins.image import metadata as image_metadata

    accumulator = _load(directory)
    if accumulator is None:
        return {}
    found: dict[str, dict[int, bytes]] = {}
    tags = accumulator.Tags()
    for tag in tags[event_accumulator.IMAGES]:
        if tag.startswith(prefix):
            images = found.setdefault(tag, {})
            for event in accumulator.Images(tag):
                images[event.step] = event.encoded_image_string
    for tag in tags[event_accumulator.TENSORS]:
        if not tag.startswith(prefix) or _plugin(accumulator, tag) != image_metadata.PLUGIN_NAME:
            continue
        images = found.setdefault(tag, {})
        for event in accumulator.Tensors(tag):
            # the images plugin's tensor: [width, height, image 1, image 2, ...] as strings
            strings = event.tensor_proto.string_val
            if len(strings) > 2:
                images[event.step] = bytes(strings[2])
    return {tag: sorted(values.items()) for tag, values in found.items()}
