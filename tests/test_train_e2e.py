"""One bounded end-to-end run on a tiny synthetic dataset, shared by the tests below."""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from conftest import synthetic_dataset, tiny_config
from graphcnn import cli
from graphcnn.config import EarlyStoppingConfig
from graphcnn.predict import Predictor
from graphcnn.run_dir import RunDir, RunDirError
from graphcnn.runtime import peak_memory_mb
from graphcnn.train.trainer import train

v1 = tf.compat.v1


def events(directory):
    """{tag: [(step, kind)]} from every event file of a directory."""
    found = {}
    for f in sorted(directory.glob("events.out.tfevents.*")):
        for e in v1.train.summary_iterator(str(f)):
            for v in e.summary.value:
                histogram = v.HasField("tensor") and v.metadata.plugin_data.plugin_name == "histograms"
                kind = "image" if v.HasField("image") else "histo" if histogram else "scalar"
                found.setdefault(v.tag, []).append((e.step, kind))
    return found


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    # float32: these tests pin exact agreement with the float32 inference graph (mixed_bfloat16: test_precision.py)
    cfg = tiny_config(epochs=3, early_stopping=EarlyStoppingConfig(restore_best=False), precision="float32")
    run = RunDir.create(tmp_path_factory.mktemp("logs"), "tiny")
    result = train(cfg, run, progress=False, dataset=synthetic_dataset())
    return cfg, run, result


def test_run_learns_and_writes_its_directory(trained):
    cfg, run, result = trained
    assert result.global_step == 3 * (72 // 8)
    assert result.test.accuracy >= 0.9
    results = json.loads(run.results.read_text())
    assert results["global_step"] == 27 and results["test_accuracy"] == pytest.approx(result.test.accuracy)
    # the process's peak so far: TensorFlow alone takes a few hundred MiB; a peak never falls
    # (results.json rounds it to 0.1 MiB, so it may read up to 0.05 above the peak now)
    assert results["peak_memory_mb"] == pytest.approx(result.peak_memory_mb, abs=0.1)
    assert 100 < results["peak_memory_mb"] <= peak_memory_mb() + 0.05
    assert json.loads(run.config.read_text())["train"]["epochs"] == 3
    assert (run.checkpoints / "model.ckpt-27.meta").exists()
    assert (run.checkpoints / "preprocessing.json").exists() and (run.best / "best.json").exists()
    assert sorted(p.name for p in (run.root / "examples").iterdir())[0].endswith("_true-c0.png")
    records = run.read_metrics()
    assert [r["step"] for r in records if r["split"] == "validation"] == [9, 18, 27]
    (test,) = [r for r in records if r["split"] == "test"]
    assert test["step"] == 27 and test["evaluated_step"] == results["evaluated_step"]


def test_tensorboard_tags_are_exact(trained):
    cfg, run, result = trained
    train_tags = events(run.train_logs)
    for tag in ("loss", "accuracy", "learning_rate", "images_per_second"):  # every 2 steps, and the last
        assert [s for s, _ in train_tags[tag]] == [*range(2, 28, 2), 27], tag
    assert {"conv1_1/weights", "conv1_1/biases", "conv2_1/bn/gamma", "fc1/weights", "logits/biases"} <= {
        t for t, v in train_tags.items() if v[0][1] == "histo"}
    assert [s for s, _ in train_tags["filters/conv1_1"]] == [1, 3, 6, 9, 12, 15, 18, 21, 24, 27]
    views = ("gradients", "activations", "sparsity", "feature_maps", "confusion_matrix", "confusion_matrix_text",
             "misclassified", "misclassified_text", "pr_curves", "gradcam",  # train/view_hooks.py, tested there
             "custom_scalars__config__", "_hparams_")  # the one-off records (tensorboard/writing.py), tested there
    assert {t for t in train_tags if t.split("/")[0] not in views} == {
        "loss", "accuracy", "learning_rate", "images_per_second", "filters/conv1_1", "filters/conv2_1",
        "conv1_1/weights", "conv1_1/biases", "conv2_1/weights", "conv2_1/bn/gamma", "conv2_1/bn/beta",
        "fc1/weights", "fc1/biases", "logits/weights", "logits/biases"}
    val_tags = events(run.validation_logs)
    assert [s for s, _ in val_tags["accuracy"]] == [9, 18, 27]
    assert {t for t in val_tags if t.split("/")[0] not in views} == {"loss", "accuracy", "test_accuracy"}


def test_restore_gives_identical_predictions_and_plain_tf_snippet(trained):
    cfg, run, result = trained
    test = synthetic_dataset().test
    with Predictor(run.root, prefer_best=False) as p:
        probs = p.probabilities_for(p.preprocess_arrays(test.images))
    np.testing.assert_allclose(probs, result.test.probabilities, rtol=1e-5, atol=1e-6)

    # the README's restore-and-predict snippet, without graphcnn: best/ (what predict uses) and
    # checkpoints/ (what --latest uses)
    for directory, prefer_best in ((run.best, True), (run.checkpoints, False)):
        with Predictor(run.root, prefer_best=prefer_best) as p:
            expected = p.probabilities_for(p.preprocess_arrays(test.images))
        prefix = tf.train.latest_checkpoint(str(directory))
        prep = json.loads((directory / "preprocessing.json").read_text())
        size = [prep["input_height"], prep["input_width"]]
        images = tf.image.resize(test.images.astype(np.float32), size).numpy() / 255.0
        for meta in (str(directory / "inference.meta"), prefix + ".meta"):
            with tf.Graph().as_default(), v1.Session() as sess:
                saver = v1.train.import_meta_graph(meta, clear_devices=True)
                saver.restore(sess, prefix)
                plain = sess.run("output/probabilities:0", {"input/images:0": images})
                classes = sess.run("output/classes:0", {"input/images:0": images})
            np.testing.assert_allclose(plain, expected, rtol=1e-4, atol=1e-5)
            assert prep["class_names"][classes[0]] == "c0"


def test_inference_graph_is_lean_and_predicts_as_the_training_graph(trained, tmp_path):
    cfg, run, result = trained
    lean = run.checkpoints / "inference.meta"
    assert lean.exists() and (run.best / "inference.meta").exists()
    prefix = tf.train.latest_checkpoint(str(run.checkpoints))
    with tf.Graph().as_default() as graph, v1.Session() as sess:
        v1.train.import_meta_graph(str(lean), clear_devices=True).restore(sess, prefix)
        ops = {op.name for op in graph.get_operations()}
        assert {"input/images", "input/is_training", "input/keep_rate_fc", "output/probabilities"} <= ops
        assert not [n for n in ops if n.startswith(("train/", "cross_entropy", "input/train_pipeline"))]
        assert {v.op.name for v in v1.global_variables()} == {
            "conv1_1/weights", "conv1_1/biases", "conv2_1/weights", "conv2_1/bn/gamma", "conv2_1/bn/beta",
            "conv2_1/bn/moving_mean", "conv2_1/bn/moving_variance", "fc1/weights", "fc1/biases",
            "logits/weights", "logits/biases"}
    # the same checkpoint without inference.meta: the Predictor falls back on the training graph
    full = tmp_path / "full"
    full.mkdir()
    for f in run.checkpoints.iterdir():
        if f.name.startswith(Path(prefix).name) or f.name in ("preprocessing.json", "checkpoint"):
            shutil.copy(f, full / f.name)
    test = synthetic_dataset().test
    with Predictor(run.checkpoints / Path(prefix).name) as lean_p, Predictor(full / Path(prefix).name) as full_p:
        assert lean_p.meta_graph.name == "inference.meta" and full_p.meta_graph.name.endswith(".meta")
        assert full_p.meta_graph.name != "inference.meta"
        x = lean_p.preprocess_arrays(test.images)
        np.testing.assert_allclose(lean_p.probabilities_for(x), full_p.probabilities_for(x), rtol=1e-5, atol=1e-6)
        files = sorted((run.root / "examples").iterdir())
        a, _ = lean_p.predict_files(files)
        b, _ = full_p.predict_files(files)
        assert [(p.file, p.class_name) for p in a] == [(p.file, p.class_name) for p in b]
        np.testing.assert_allclose([p.probability for p in a], [p.probability for p in b], rtol=1e-5)


def test_predict_files_names_bad_files_and_keeps_the_rest(trained, tmp_path):
    cfg, run, result = trained
    good = sorted((run.root / "examples").iterdir())
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    missing = tmp_path / "missing.png"
    with Predictor(run.root) as p:
        predictions, errors = p.predict_files([good[0], bad, good[1], missing, good[2]], batch_size=4)
    assert [pr.file for pr in predictions] == [str(f) for f in good]
    assert [pr.class_name for pr in predictions] == ["c0", "c1", "c2"]
    assert [f for f, _ in errors] == [str(bad), str(missing)]
    # the decoder's own words, not TensorFlow's "Graph execution error:" wrapper
    assert (errors[0][1].startswith("Unknown image file format")
            and errors[1][1] == "no such file or folder")


def test_predict_cli_json_text_csv(trained, capsys):
    cfg, run, result = trained
    examples = run.root / "examples"
    assert cli.main(["predict", str(run.root), str(examples), "--format", "json", "--top-k", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out) == 3 and all(len(o["top_k"]) == 2 for o in out)
    assert [o["class"] for o in out] == ["c0", "c1", "c2"]
    assert cli.main(["predict", str(run.root), str(examples / sorted(p.name for p in examples.iterdir())[1])]) == 0
    line = capsys.readouterr().out.strip()
    assert line.endswith(")") is False and ": c1 (" in line
    assert cli.main(["predict", str(run.root), str(examples), "--format", "csv"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert rows[0].startswith("file,class,probability,top1_class") and len(rows) == 4


def test_predict_reports_unreadable_file_by_name(trained, tmp_path, capsys):
    cfg, run, result = trained
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    assert cli.main(["predict", str(run.root), str(bad)]) == 2  # nothing predicted: bad input
    err = capsys.readouterr().err
    assert "broken.png" in err and err.strip().splitlines()[-1] == (
        "graphcnn: error: the file could not be read (named above)")


def test_evaluate_cli(trained, capsys):
    cfg, run, result = trained
    from graphcnn.evaluate import Metrics

    m = Metrics.from_predictions(result.test.labels, result.test.predictions, ("c0", "c1", "c2"))
    assert m.confusion.sum() == 12 and m.accuracy == pytest.approx(result.test.accuracy)
    text = m.to_text()
    assert "precision" in text and "confusion matrix" in text


def test_resume_continues_global_step_and_keeps_retention(trained, tmp_path):
    cfg = tiny_config(epochs=2, checkpoints_to_keep=2)
    run = RunDir.create(tmp_path, "resumable")
    train(cfg, run, progress=False, dataset=synthetic_dataset())
    assert sorted(p.name for p in run.checkpoints.glob("*.index")) == ["model.ckpt-18.index", "model.ckpt-9.index"]
    with pytest.raises(RunDirError, match="already exists"):
        RunDir.create(tmp_path, "resumable")
    # simulate a kill during a save: a checkpoint without .meta and a tempstate file
    (run.checkpoints / "model.ckpt-99.index").write_bytes(b"")
    (run.checkpoints / "model.ckpt-99.data-00000-of-00001.tempstate123").write_bytes(b"")
    longer = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=4))
    longer.save(run.config)
    result = train(longer, run, resume=True, progress=False, dataset=synthetic_dataset())
    assert result.global_step == 36
    metas = sorted(p.name for p in run.checkpoints.glob("model.ckpt-*.meta"))
    assert metas == ["model.ckpt-27.meta", "model.ckpt-36.meta"]
    assert not list(run.checkpoints.glob("*tempstate*"))
    val_steps = [s for s, _ in events(run.validation_logs)["accuracy"]]
    assert val_steps == [9, 18, 27, 36]
    starts = []
    for f in sorted(run.train_logs.glob("events.out.tfevents.*")):
        for e in v1.train.summary_iterator(str(f)):
            if e.HasField("session_log") and e.session_log.status == v1.SessionLog.START:
                starts.append(e.step)
    assert starts == [1, 19]  # the first step each session trains: what step 18 wrote stays


def test_evaluate_cli_on_another_dataset(trained, tmp_path, capsys):
    cfg, run, result = trained
    test = synthetic_dataset(seed=1).test
    data = tmp_path / "other.npz"
    np.savez(data, images=test.images, labels=test.labels, class_names=np.array(["c0", "c1", "c2"]))
    assert cli.main(["evaluate", str(run.root), "--data", str(data), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["count"] == 12 and report["accuracy"] >= 0.9
    assert report["accuracy_margin"] == pytest.approx(100 * 1.96 * (0.25 / 12) ** 0.5)  # the text's 95% interval
    assert set(report["per_class"]) == {"c0", "c1", "c2"} and len(report["confusion_matrix"]) == 3
    # a pickle pair: auto never unpickles, and the error's --set (which evaluate lacked) now works
    import pickle

    pickles = tmp_path / "pickles"
    pickles.mkdir()
    (pickles / "X.pickle").write_bytes(pickle.dumps(test.images))
    (pickles / "y.pickle").write_bytes(pickle.dumps(test.labels))
    assert cli.main(["evaluate", str(run.root), "--data", str(pickles)]) == 2
    assert "--set data.source=pickle --set data.trust_pickle=true" in capsys.readouterr().err
    assert cli.main(["evaluate", str(run.root), "--data", str(pickles), "--set", "data.source=pickle",
                     "--set", "data.trust_pickle=true"]) == 2  # read: a pickle's classes are numbers, not c0...
    assert "pickles: classes 0, 1, 2 are not among the model's classes (c0, c1, c2)" in capsys.readouterr().err
    assert cli.main(["evaluate", str(run.root), "--set", "train.epochs=3"]) == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("graphcnn: error:")]
    assert line.endswith("--set goes with --data (how that data is read); the run's own data is read as it trained")
    assert cli.main(["evaluate", str(run.root), "--data", str(data), "--set", "train.epochs=3"]) == 2
    assert "train.epochs: evaluate takes data.* keys" in capsys.readouterr().err


def test_sigterm_stops_after_the_step_and_saves(tmp_path):
    import os
    import signal
    import threading

    cfg = tiny_config(epochs=400)  # bounded: a stop that never comes fails the test, not hangs it
    run = RunDir.create(tmp_path, "stopped")
    default = signal.getsignal(signal.SIGTERM)
    done = threading.Event()

    def send_sigterm_once_training():  # only once the trainer's handler is installed, or pytest dies
        while not done.wait(0.2):
            if signal.getsignal(signal.SIGTERM) is not default and run.metrics.exists():
                os.kill(os.getpid(), signal.SIGTERM)
                return

    sender = threading.Thread(target=send_sigterm_once_training, daemon=True)
    sender.start()
    try:
        result = train(cfg, run, progress=False, dataset=synthetic_dataset())
    finally:
        done.set()
        sender.join(5)
    assert result.interrupted and 0 < result.global_step < 400 * 9
    assert (run.checkpoints / f"model.ckpt-{result.global_step}.meta").exists()
    results = json.loads(run.results.read_text())
    assert results["interrupted"] is True
    # a stop is a stop: no test of the split (it ran after the signal), which a resume does at the end
    assert result.test is None and results["test_accuracy"] is None
    assert not [r for r in run.read_metrics() if r["split"] == "test"]
    # stopping adds no mid-epoch validation (it would move early stopping and best/)
    assert all(r["step"] % 9 == 0 for r in run.read_metrics() if r["split"] == "validation")
