"""The TensorBoard views of a run (graphcnn/train/tb_views.py) and the CLI around them:
exact tags and steps in the event files, probe/projector files, custom scalars, hparams,
run metadata, `graphcnn filters`, `graphcnn report`, `--sweep`, and the numpy drawing."""

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf

from conftest import synthetic_dataset, tiny_config
from graphcnn import cli
from graphcnn.config import EarlyStoppingConfig
from graphcnn.data.sources import Split
from graphcnn.tensorboard_cli import read_images, read_scalars, tensorboard_command
from graphcnn.train import sweep
from graphcnn.train.run_dir import RunDir
from graphcnn.train.tb_views import pr_curve_counts, pr_curve_summary
from graphcnn.train.trainer import train
from graphcnn.viz import bitmap

v1 = tf.compat.v1


def view_config(**log):
    cfg = tiny_config(epochs=3, early_stopping=EarlyStoppingConfig(restore_best=False))
    defaults = dict(gradients_every=3, activations_every=3, feature_maps_every=5, trace_every=10,
                    projector_images=10, max_misclassified=6)
    defaults.update(log)
    return dataclasses.replace(cfg, log=dataclasses.replace(cfg.log, **defaults))


def mislabelled_validation():
    """Validation labels shifted by one class: the trained net gets most of them 'wrong'."""
    data = synthetic_dataset()
    val = data.validation
    return dataclasses.replace(data, validation=Split(labels=(val.labels + 1) % 3, images=val.images))


def all_events(directory):
    """{tag: [(step, kind)]}, plus run metadata tags as 'run_metadata:<tag>'."""
    found = {}
    for f in sorted(directory.glob("events.out.tfevents.*")):
        for e in v1.train.summary_iterator(str(f)):
            for v in e.summary.value:
                kind = v.WhichOneof("value")
                if kind == "tensor":
                    kind = v.metadata.plugin_data.plugin_name
                found.setdefault(v.tag, []).append((e.step, kind))
            if e.HasField("tagged_run_metadata"):
                found.setdefault("run_metadata:" + e.tagged_run_metadata.tag, []).append((e.step, "run_metadata"))
    return found


@pytest.fixture(scope="module")
def view_run(tmp_path_factory):
    run = RunDir.create(tmp_path_factory.mktemp("views"), "tiny")
    result = train(view_config(), run, progress=False, dataset=mislabelled_validation())
    return run, result


def steps(tags, tag):
    return [s for s, _ in tags[tag]]


def test_train_run_has_gradients_activations_sparsity_feature_maps_and_trace(view_run):
    run, _ = view_run
    tags = all_events(run.train_logs)
    every3 = [1, 3, 6, 9, 12, 15, 18, 21, 24, 27]
    for var in ("conv1_1/weights", "conv2_1/bn/gamma", "fc1/biases", "logits/weights"):
        assert steps(tags, f"gradients/{var}") == every3 and tags[f"gradients/{var}"][0][1] == "histograms"
    for layer in ("conv1_1", "pool1", "conv2_1", "pool2", "fc1"):
        assert steps(tags, f"activations/{layer}") == every3
        assert steps(tags, f"sparsity/{layer}") == every3 and tags[f"sparsity/{layer}"][0][1] == "simple_value"
    assert "activations/logits" in tags and "sparsity/logits" not in tags and "activations/dropout1" not in tags
    for layer in ("conv1_1", "pool1", "conv2_1", "pool2"):
        assert steps(tags, f"feature_maps/{layer}") == [1, 5, 10, 15, 20, 25], layer
    assert not any(t.startswith("feature_maps/fc") for t in tags)
    assert steps(tags, "run_metadata:step10") == [10] and steps(tags, "run_metadata:step20") == [20]
    # sparsity is a fraction; ReLU layers have some zeros
    sparsity = read_scalars(run.train_logs)["sparsity/conv1_1"]
    assert all(0.0 <= v <= 1.0 for _, v in sparsity) and max(v for _, v in sparsity) > 0
    # feature maps: the 4 probe images side by side, upscaled to >= 96 px high
    png = dict(read_images(run.train_logs, "feature_maps/conv1_1")["feature_maps/conv1_1"])[5]
    image = tf.io.decode_png(png).numpy()
    # conv1_1 has 4 filters: a square 2x2 grid per probe image, 4 grids in one row
    assert image.shape[0] >= 96 and image.shape[1] == 4 * image.shape[0] and image.shape[2] == 1
    probe = np.load(run.root / "probe.npz")
    assert len(probe["indices"]) == 4 and probe["preprocessed"].shape == (4, 12, 12, 1)
    assert len(set(probe["labels"].tolist())) == 3  # one per class first


def test_validation_run_has_confusion_misclassified_pr_curves(view_run):
    run, result = view_run
    tags = all_events(run.validation_logs)
    for tag, kind in (("confusion_matrix", "image"), ("confusion_matrix_text", "text"), ("misclassified", "image"),
                      ("misclassified_text", "text"), ("pr_curves/c0", "pr_curves"), ("pr_curves/c2", "pr_curves")):
        assert steps(tags, tag) == [9, 18, 27], tag
        assert tags[tag][0][1] == kind, tag
    texts = {}
    for f in sorted(run.validation_logs.glob("events.out.tfevents.*")):
        for e in v1.train.summary_iterator(str(f)):
            for v in e.summary.value:
                if v.tag in ("confusion_matrix_text", "misclassified_text"):  # metadata only on a tag's first value
                    texts[(v.tag, e.step)] = tf.make_ndarray(v.tensor).item().decode()
                if v.tag == "pr_curves/c1" and e.step == 27:
                    data = tf.make_ndarray(v.tensor)
    assert data.shape == (6, 51)  # tp, fp, tn, fn, precision, recall at 51 thresholds
    assert data[0, 0] + data[3, 0] == 4 and data[0, 0] + data[1, 0] == 12  # threshold 0: all positive
    assert "| **c0** |" in texts[("confusion_matrix_text", 27)]
    assert "misclassified" in texts[("misclassified_text", 27)] and "| 1 |" in texts[("misclassified_text", 27)]
    confusion = dict(read_images(run.validation_logs, "confusion_matrix")["confusion_matrix"])[27]
    assert tf.io.decode_png(confusion).numpy().shape[2] == 3


def test_run_root_custom_scalars_hparams_and_projector(view_run):
    run, _ = view_run
    root = all_events(run.root)
    assert {"custom_scalars__config__", "_hparams_/experiment", "_hparams_/session_start_info"} <= set(root)
    from tensorboard.plugins.hparams import plugin_data_pb2
    from tensorboard.plugins.custom_scalar import layout_pb2

    for f in run.root.glob("events.out.tfevents.*"):
        for e in v1.train.summary_iterator(str(f)):
            for v in e.summary.value:
                if v.tag == "_hparams_/session_start_info":
                    info = plugin_data_pb2.HParamsPluginData.FromString(v.metadata.plugin_data.content)
                    hparams = info.session_start_info.hparams
                if v.tag == "custom_scalars__config__":
                    layout = layout_pb2.Layout.FromString(tf.make_ndarray(v.tensor).item())
    assert hparams["learning_rate"].number_value == pytest.approx(0.01)
    assert hparams["optimizer"].string_value == "adam" and hparams["preset"].string_value == "tiny"
    assert hparams["keep_rates.fc"].number_value == pytest.approx(0.5) and hparams["batch_size"].number_value == 8
    assert "checkpoints_to_keep" not in hparams and not any(k.startswith("augment.") for k in hparams)
    charts = {c.title: list(c.multiline.tag) for c in layout.category[0].chart}
    assert charts["loss (train, validation)"] == ["^loss$"]
    projector = run.root / "projector"
    assert (projector / "projector_config.pbtxt").read_text().count("embedding") >= 1
    assert len((projector / "metadata.tsv").read_text().splitlines()) == 1 + 10
    assert (projector / "sprite.png").read_bytes().startswith(b"\x89PNG")
    reader = tf.train.load_checkpoint(str(projector))
    assert reader.get_tensor("embedding").shape == (10, 16)


def test_views_can_be_switched_off(tmp_path):
    cfg = view_config(gradients_every=0, activations_every=0, feature_maps_every=0, trace_every=0, eval_images=False,
                      pr_curves=False, projector_images=0, custom_scalars=False, hparams=False)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=1))
    run = RunDir.create(tmp_path, "off")
    train(cfg, run, progress=False, dataset=synthetic_dataset())
    prefixes = {t.split("/")[0].split(":")[0] for d in (run.train_logs, run.validation_logs) for t in all_events(d)}
    assert not prefixes & {"gradients", "activations", "sparsity", "feature_maps", "run_metadata",
                           "confusion_matrix", "misclassified", "pr_curves"}
    assert not (run.root / "projector").exists() and not (run.root / "probe.npz").exists()
    assert not list(run.root.glob("events.out.tfevents.*"))


def test_filters_cli_writes_frames_apng_gif(view_run, capsys):
    run, _ = view_run
    assert cli.main(["filters", str(run.root), "--gif", "--layer", "conv1_1"]) == 0
    out = run.root / "filters"
    frames = sorted((out / "conv1_1").glob("step-*.png"))
    assert [int(p.stem.split("-")[1]) for p in frames] == [1, 3, 6, 9, 12, 15, 18, 21, 24, 27]
    apng = (out / "conv1_1.png").read_bytes()
    assert apng.startswith(b"\x89PNG") and b"acTL" in apng
    assert (out / "conv1_1.gif").read_bytes().startswith(b"GIF89a")
    assert not (out / "conv2_1.png").exists()
    assert cli.main(["filters", str(run.root), "--layer", "nope"]) == 2


def test_report_cli_writes_plots(view_run, capsys):
    run, _ = view_run
    assert cli.main(["report", str(run.root)]) == 0
    for name in ("loss", "accuracy", "learning_rate", "confusion_matrix"):
        png = (run.root / "report" / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG"), name
    image = tf.io.decode_png((run.root / "report" / "loss.png").read_bytes()).numpy()
    assert image.shape == (400, 640, 3)
    orange, blue = np.array(bitmap.SERIES_COLORS[0]), np.array(bitmap.SERIES_COLORS[1])
    assert (image == orange).all(axis=2).sum() > 100 and (image == blue).all(axis=2).sum() > 100


def test_tensorboard_command_defaults():
    cmd = tensorboard_command("logs")
    assert cmd[1:3] == ["-m", "tensorboard.main"]
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd[cmd.index("--port") + 1] == "6006"
    assert "images=100000" in cmd[cmd.index("--samples_per_plugin") + 1]
    args = cli.build_parser().parse_args(["tensorboard", "x", "--port", "7007"])
    assert (args.logdir, args.port, args.host) == ("x", 7007, "127.0.0.1")


def test_sweep_grid_and_cli(tmp_path, monkeypatch, capsys):
    assert sweep.grid(["train.learning_rate=0.1,0.01", "train.batch_size=8,16"]) == [
        [("train.learning_rate", "0.1"), ("train.batch_size", "8")],
        [("train.learning_rate", "0.1"), ("train.batch_size", "16")],
        [("train.learning_rate", "0.01"), ("train.batch_size", "8")],
        [("train.learning_rate", "0.01"), ("train.batch_size", "16")]]
    assert sweep.parse_sweep('train.keep_rates={"fc":0.5};{"fc":0.8}')[1] == ['{"fc":0.5}', '{"fc":0.8}']
    assert sweep.run_name([("train.learning_rate", "0.1"), ("model.name", "a b")]) == "learning_rate=0.1,name=a_b"
    with pytest.raises(ValueError):
        sweep.parse_sweep("train.epochs")

    seen = []

    def fake_train(config, run, **kwargs):
        seen.append((run.root.name, config.train.learning_rate, config.train.epochs))
        return type("R", (), {"global_step": 1, "validation": None, "test": None})()

    import graphcnn.train.trainer as trainer

    monkeypatch.setattr(trainer, "train", fake_train)
    assert cli.main(["train", "--logdir", str(tmp_path), "--name", "sw", "--set", "train.epochs=1",
                     "--sweep", "train.learning_rate=0.1,0.01", "--no-progress"]) == 0
    assert seen == [("learning_rate=0.1", 0.1, 1), ("learning_rate=0.01", 0.01, 1)]
    summary = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert [s["set"] for s in summary] == [{"train.learning_rate": "0.1"}, {"train.learning_rate": "0.01"}]
    assert (tmp_path / "sw" / "learning_rate=0.1").is_dir()  # the run directory train() writes into
    # a bad key fails before anything is created
    assert cli.main(["train", "--logdir", str(tmp_path), "--name", "bad", "--sweep", "train.nope=1,2"]) == 2
    assert not (tmp_path / "bad").exists()


def test_pr_curve_counts_binary_case():
    labels = np.array([0, 0, 1, 1])  # class 0's scores: 0.9, 0.4 (positives), 0.6, 0.1 (negatives)
    scores = np.array([0.9, 0.4, 0.6, 0.1])
    data = pr_curve_counts(labels, np.stack([scores, 1 - scores], axis=1), num_thresholds=11)
    assert data.shape == (2, 6, 11) and data.dtype == np.float32
    summary = pr_curve_summary("pr", data[0])
    assert summary.value[0].metadata.plugin_data.plugin_name == "pr_curves"
    tp, fp, tn, fn, precision, recall = tf.make_ndarray(summary.value[0].tensor)
    assert (tp[0], fp[0], tn[0], fn[0]) == (2, 2, 0, 0)
    assert (tp[5], fp[5]) == (1, 1) and precision[5] == pytest.approx(0.5) and recall[5] == pytest.approx(0.5)
    assert (tp[10], fp[10]) == (0, 0)


def test_pr_curve_counts_match_one_class_at_a_time():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 200)
    probabilities = rng.dirichlet(np.ones(4), 200)
    data = pr_curve_counts(labels, probabilities, num_thresholds=21)
    for c in range(4):
        buckets = np.clip(np.floor(probabilities[:, c] * 20), 0, 20)
        tp = [(buckets[labels == c] >= i).sum() for i in range(21)]
        fp = [(buckets[labels != c] >= i).sum() for i in range(21)]
        np.testing.assert_array_equal(data[c, 0], tp)
        np.testing.assert_array_equal(data[c, 1], fp)
        np.testing.assert_array_equal(data[c, 2] + data[c, 1], (labels != c).sum())
        np.testing.assert_array_equal(data[c, 3] + data[c, 0], (labels == c).sum())


def test_bitmap_drawing():
    grid = bitmap.labelled_grid(np.zeros((5, 8, 8, 1), np.uint8), ["1>2"] * 5)
    assert grid.dtype == np.uint8 and grid.shape[2] == 3 and (grid == [200, 0, 0]).all(axis=2).any()
    cm = bitmap.confusion_image(np.array([[5, 1], [0, 7]]), ["cat", "dog"])
    assert cm.shape[2] == 3 and cm.min() < 50
    assert bitmap.png_bytes(cm).startswith(b"\x89PNG")
    plot = bitmap.line_plot([("a", np.arange(5), np.arange(5.0))], title="t")
    assert plot.shape == (400, 640, 3)
