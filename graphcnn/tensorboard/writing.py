"""Summary protos written from Python with exact tags, and a run's one-off records.

Scalars (loss, accuracy, learning rate, images per second) are values the training loop
fetches anyway, so they are written as ``Summary`` protos with exactly the tag intended
(``loss``, ``accuracy`` ...) to both ``train/`` and ``validation/``: TensorBoard overlays the
two runs in one chart, and no re-entered name scope can turn a tag into ``accuracy_1``.

Once per run, before training, :func:`write_run_root_summaries` writes the custom-scalars
layout into ``train/`` and the HParams record into ``validation/``: a run is exactly the two
TensorBoard runs ``train`` and ``validation``, nothing else takes a colour in the run list.
"""

from __future__ import annotations

import functools
import os
import socket
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import tensorflow as tf

from graphcnn.config import AugmentConfig, Config, to_dict
from graphcnn.viz import images as viz_images

v1 = tf.compat.v1


class ScalarWriter:
    """Writes Python scalars to one event directory with exact tags."""

    def __init__(self, writer: v1.summary.FileWriter):
        self.writer = writer

    def write(self, step: int, values: Mapping[str, float]) -> None:
        summary = v1.Summary(value=[v1.Summary.Value(tag=tag, simple_value=float(v)) for tag, v in values.items()])
        self.writer.add_summary(summary, step)


def start_session_log(writer: v1.summary.FileWriter, step: int) -> None:
    """Mark a (re)start at ``step``: TensorBoard drops the events at ``step`` and later that a
    crashed run wrote before it (give the first step the new session will write)."""
    writer.add_session_log(v1.SessionLog(status=v1.SessionLog.START), step)


def png_summary(tag: str, encoded: bytes, height: int, width: int, channels: int) -> v1.Summary:
    """A Summary with one PNG image under exactly ``tag``."""
    img = v1.Summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=encoded)
    return v1.Summary(value=[v1.Summary.Value(tag=tag, image=img)])


def text_summary(tag: str, text: str) -> v1.Summary:
    """A Summary for TensorBoard's text plugin (markdown) under exactly ``tag``."""
    metadata = v1.SummaryMetadata(plugin_data=v1.SummaryMetadata.PluginData(plugin_name="text"))
    return v1.Summary(value=[v1.Summary.Value(tag=tag, metadata=metadata, tensor=tf.make_tensor_proto(text))])


# zlib level of the PNGs written at every validation: level 1 encodes the confusion matrix and
# the mistakes grid about 3x faster than level 6, for a few KB more per validation
VIEW_PNG_LEVEL = 1


def image_summary(tag: str, image: np.ndarray, level: int = VIEW_PNG_LEVEL) -> v1.Summary:
    """A Summary with a numpy uint8 image under exactly ``tag``."""
    image = viz_images.to_rgb(image) if image.ndim == 2 or image.shape[-1] not in (1, 3) else image
    h, w, c = image.shape
    return png_summary(tag, viz_images.png_bytes(image, level), h, w, c)


@functools.lru_cache(maxsize=1024)
def _pr_metadata(tag: str, num_thresholds: int) -> v1.SummaryMetadata:
    from tensorboard.plugins.pr_curve import metadata as pr_metadata

    meta = pr_metadata.create_summary_metadata(display_name=tag, description="", num_thresholds=num_thresholds)
    return v1.SummaryMetadata.FromString(meta.SerializeToString())


def pr_curve_summary(tag: str, data: np.ndarray) -> v1.Summary:
    """One pr_curves plugin summary under exactly ``tag``; ``data`` float32 [6, T], a row of
    :func:`pr_curve_counts`."""
    value = v1.Summary.Value(tag=tag, metadata=_pr_metadata(tag, data.shape[-1]))
    # the TensorProto filled directly: tf.make_tensor_proto's checks cost more than the counting
    value.tensor.dtype = tf.float32.as_datatype_enum
    value.tensor.tensor_shape.dim.extend(v1.TensorShape(data.shape).as_proto().dim)
    value.tensor.tensor_content = np.ascontiguousarray(data, np.float32).tobytes()
    return v1.Summary(value=[value])


_PLUMBING = {"checkpoints_to_keep", "checkpoint_every_steps", "check_numerics", "eval_every_steps", "skip_mismatched",
             "init_from", "early_stopping.monitor", "early_stopping.restore_best", "early_stopping.min_delta"}


def flat_hparams(config: Config) -> dict[str, Any]:
    """The run's hyperparameters for the HParams dashboard: train.* scalars without the ``train.``
    prefix (learning_rate, batch_size, optimizer, epochs, keep_rates.fc, schedule.name ...),
    preset, model, data.* (seed, fractions, path, ...), and the augmentation settings that differ
    from the defaults."""
    out: dict[str, Any] = {"preset": config.preset, "model.name": config.model.name,
                           "model.initializer": config.model.initializer, "model.layers": len(config.model.layers)}

    def walk(prefix: str, value: Any, into: dict[str, Any]) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v, into)
        elif isinstance(value, (bool, int, float, str)) and prefix not in _PLUMBING:
            into[prefix] = value

    walk("", to_dict(config.train), out)
    data = {k: v for k, v in to_dict(config.data).items() if k != "augment"}
    walk("data", data, out)  # data.seed, data.validation_fraction, data.path ...: a sweep may vary them
    augment, default = {}, {}
    walk("augment", to_dict(config.data.augment), augment)
    walk("augment", to_dict(AugmentConfig()), default)
    out.update({k: v for k, v in augment.items() if default.get(k) != v})
    if config.data.mean_subtraction:
        out["mean_subtraction"] = True
    return out


RUN_SETUP_SUFFIX = ".graphcnn-setup"  # the event files written once by write_run_root_summaries


def layout_summary() -> v1.Summary:
    """The custom-scalars layout: train and validation loss in one chart, accuracy in another."""
    from tensorboard.plugins.custom_scalar import layout_pb2
    from tensorboard.plugins.custom_scalar import summary as cs_summary

    def chart(title, regex):
        return layout_pb2.Chart(title=title, multiline=layout_pb2.MultilineChartContent(tag=[regex]))

    layout = layout_pb2.Layout(category=[
        layout_pb2.Category(title="train vs validation", chart=[
            chart("loss (train, validation)", r"^loss$"),
            chart("accuracy (train, validation)", r"^(accuracy|test_accuracy)$")]),
        layout_pb2.Category(title="training", closed=True, chart=[
            chart("learning rate", r"^learning_rate$"), chart("images per second", r"^images_per_second$"),
            chart("ReLU sparsity (fraction of zeros)", r"^sparsity/")]),
    ])
    return v1.Summary.FromString(cs_summary.pb(layout).SerializeToString())


def hparams_summaries(config: Config, trial_id: str, start_time_secs: float | None = None) -> list[v1.Summary]:
    """This run's HParams session record: its hyperparameters (:func:`flat_hparams`), as trial
    ``trial_id`` (the run's folder name: the table's Trial ID).

    Written into the ``validation/`` run. TensorBoard looks a session's metrics up in the run
    ``<session run>/<metric group>``: with the session in ``validation/``, the metrics are that
    run's own scalars (``accuracy``, ``loss``, ``test_accuracy``; group ""), whichever folder
    TensorBoard is opened on (the run: session ``validation``; a folder of runs:
    ``<run>/validation``). A session in the run root is the run ``.`` when the run itself is
    opened, and its metrics, in ``./validation``, are never found. Train-side metrics cannot
    be had from there (a metric group is a sub-run of the session), so HParams has none.

    No experiment record (``_hparams_/experiment``): TensorBoard then derives the columns
    from the sessions themselves, so a sweep's hyperparameters that differ between its runs
    come first (the dashboard shows the first five), every run's hyperparameters count (not
    one arbitrary run's list), and the metrics are the validation scalars.
    """
    from tensorboard.plugins.hparams import summary_v2 as hp

    session = hp.hparams_pb(flat_hparams(config), trial_id=trial_id, start_time_secs=start_time_secs or time.time())
    return [v1.Summary.FromString(session.SerializeToString())]


def hparams_end_summary(finished: bool) -> v1.Summary:
    """The end of this run's HParams session (its Status column): success when training ran to
    its end (or early stopping ended it), running when it was interrupted and can be resumed."""
    from tensorboard.plugins.hparams import api_pb2
    from tensorboard.plugins.hparams import summary as hp_v1

    status = api_pb2.STATUS_SUCCESS if finished else api_pb2.STATUS_RUNNING
    return v1.Summary.FromString(hp_v1.session_end_pb(status).SerializeToString())


def write_setup_events(directory: Path, summaries: list[v1.Summary], wall_time: float | None = None) -> Path:
    """One event file of ``summaries`` at step 0 in ``directory``, written once before training.

    Named one second earlier than now: TensorBoard's Python loader reads a run's event files in
    name order and does not go back to an earlier one, so this file sorts before every file a
    FileWriter (``events.out.tfevents.<seconds>.<host>``) creates from now on, including the
    live one of the training that follows; a distinct suffix keeps a FileWriter opened in the
    same second from overwriting it. Written under a temporary name and renamed when complete.
    """
    wall_time = time.time() if wall_time is None else wall_time
    directory.mkdir(parents=True, exist_ok=True)
    name = f"events.out.tfevents.{int(wall_time) - 1:010d}.{socket.gethostname()}{RUN_SETUP_SUFFIX}"
    partial = directory / ".setup-events.partial"  # no "tfevents" in the name: no event file until renamed
    with tf.io.TFRecordWriter(str(partial)) as records:
        records.write(v1.Event(wall_time=wall_time, file_version="brain.Event:2").SerializeToString())
        for summary in summaries:
            records.write(v1.Event(wall_time=wall_time, step=0, summary=summary).SerializeToString())
    path = directory / name
    os.replace(partial, path)
    return path


def write_run_root_summaries(config: Config, root: Path) -> None:
    """Once per run (not on resume): the one-off TensorBoard records of the run ``root``.

    The custom-scalars layout goes into ``train/``, the HParams session record into
    ``validation/`` (see :func:`hparams_summaries`), so that a run shows only the two
    runs ``train`` and ``validation`` in TensorBoard, and HParams finds its metrics whether
    TensorBoard is opened on the run or on a folder of runs.
    """
    train = [layout_summary()] if config.log.custom_scalars else []
    validation = hparams_summaries(config, trial_id=root.name) if config.log.hparams else []
    if train:
        write_setup_events(root / "train", train)
    if validation:
        write_setup_events(root / "validation", validation)
