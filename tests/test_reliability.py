"""What a kill, a full disk, a second trainer or bad input leaves behind: atomic state files,
the best checkpoint kept until its successor is complete, a model-only best/, fallback from a
damaged checkpoint, run names and failed starts, the run lock, opt-in pickles, exit codes."""

import contextlib
import errno
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from conftest import synthetic_dataset, tiny_config
from graphcnn import cli
from graphcnn import checkpoints as ckpt
from graphcnn.atomic import append_line, write_text_atomic
from graphcnn.checkpoints import (CheckpointError, CheckpointManager, best_candidates, checkpoints_on_disk,
                                  resolve_checkpoint)
from graphcnn.predict import Predictor
from graphcnn.run_dir import RunDir, RunDirError
from graphcnn.train.trainer import train

v1 = tf.compat.v1


# ---------------------------------------------------------------------------
# atomic state files


def test_atomic_write_replaces_whole_and_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "state.json"
    write_text_atomic(target, "old\n")
    write_text_atomic(target, "new\n")
    assert target.read_text() == "new\n" and os.listdir(tmp_path) == ["state.json"]

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError) as info:
        write_text_atomic(target, "newer\n")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)  # the file, not the temp
    assert target.read_text() == "new\n" and os.listdir(tmp_path) == ["state.json"]  # no leftover


def test_a_run_writes_every_state_file_by_replacing_it_whole(tmp_path, monkeypatch):
    """Where the run's files are written, not only the helper: each state file of a run, and
    each checkpoint's .meta, goes through a temporary file and os.replace (a kill leaves the
    old one or the new one)."""
    replaced: list[str] = []
    real_replace = os.replace

    def spy(src, dst, *args, **kwargs):
        replaced.append(Path(dst).relative_to(run.root).as_posix())
        return real_replace(src, dst, *args, **kwargs)

    run = RunDir.create(tmp_path, "atomic")
    monkeypatch.setattr(os, "replace", spy)
    result = train(tiny_config(epochs=1), run, progress=False, dataset=synthetic_dataset())
    step = result.global_step
    assert {"config.json", "train_state.json", "results.json", "probe.npz", "checkpoints/preprocessing.json",
            "checkpoints/inference.meta", "best/preprocessing.json", "best/inference.meta", "best/best.json",
            f"checkpoints/model.ckpt-{step}.meta", f"best/model.ckpt-{step}.meta"} <= set(replaced), replaced


def test_default_run_names_of_the_same_second_get_a_suffix(tmp_path, monkeypatch):
    """Two runs started in the same second (a script, a sweep) each get a folder; a chosen
    name is never changed."""
    import datetime

    class Frozen(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2026, 12, 7, 12, 0, 0)

    monkeypatch.setattr("graphcnn.run_dir._dt.datetime", Frozen)
    names = [RunDir.create(tmp_path, prefix="digits").root.name for _ in range(3)]
    assert names == ["digits-20261207-120000", "digits-20261207-120000-2", "digits-20261207-120000-3"]
    RunDir.create(tmp_path, "mine")
    with pytest.raises(RunDirError, match="mine already exists"):
        RunDir.create(tmp_path, "mine")


def test_append_line_after_a_torn_line_keeps_the_new_line_whole(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"step": 1}\n{"step": 2, "spl')  # killed in the middle of a write
    append_line(path, '{"step": 3}')
    assert path.read_text().splitlines() == ['{"step": 1}', '{"step": 2, "spl', '{"step": 3}']


def test_read_metrics_skips_a_torn_line_and_keeps_the_last_of_a_repeated_step(tmp_path, caplog):
    run = RunDir.create(tmp_path, "m")
    for step, acc in ((9, 0.1), (18, 0.2), (27, 0.3)):
        run.append_metrics({"step": step, "split": "validation", "accuracy": acc})
    run.append_metrics({"step": 27, "split": "test", "accuracy": 0.9})
    with run.metrics.open("a") as f:
        f.write('{"step": 36, "split": "valid')  # the kill
    with caplog.at_level(logging.WARNING, logger="graphcnn"):
        records = run.read_metrics()
    assert [(r["split"], r["step"]) for r in records] == [("validation", 9), ("validation", 18),
                                                          ("validation", 27), ("test", 27)]
    assert "metrics.jsonl line 5 is incomplete" in caplog.text
    # resumed from step 18: 27 is evaluated again; the later record wins, in the later place
    run.append_metrics({"step": 27, "split": "validation", "accuracy": 0.35})
    records = run.read_metrics()
    assert [(r["split"], r["step"], r["accuracy"]) for r in records] == [
        ("validation", 9, 0.1), ("validation", 18, 0.2), ("test", 27, 0.9), ("validation", 27, 0.35)]


def test_state_files_are_written_whole(tmp_path):
    run = RunDir.create(tmp_path, "s")
    cfg = tiny_config()
    run.write_config(cfg)
    assert run.config.read_text() == json.dumps(cfg.to_dict(), indent=2) + "\n"  # what Config.save writes
    run.write_state({"early_stopping": {"best": 1.0}})
    run.write_results({"test_accuracy": 0.5})
    assert run.read_state() == {"early_stopping": {"best": 1.0}}
    assert json.loads(run.results.read_text()) == {"test_accuracy": 0.5}
    assert not list(run.root.glob(".*.tmp"))
    run.train_state.write_text('{"early_st')  # torn by an older graphcnn
    assert run.read_state() is None


# ---------------------------------------------------------------------------
# checkpoints on a small graph: best/ kept until its successor is complete, fallback


def _graph_with_adam():
    """conv1/weights, logits/{weights,biases}, global step, train/learning_rate_scale, Adam slots."""
    with v1.variable_scope("conv1"):
        v1.get_variable("weights", [3, 3, 1, 8])
    with v1.variable_scope("logits"):
        v1.get_variable("weights", [8, 10])
        v1.get_variable("biases", [10])
    step = v1.train.get_or_create_global_step()
    with v1.variable_scope("train"):
        scale = v1.get_variable("learning_rate_scale", [], initializer=v1.ones_initializer(), trainable=False)
        loss = tf.add_n([tf.reduce_sum(tf.square(v)) for v in v1.trainable_variables()])
        train_op = v1.train.AdamOptimizer(0.1 * scale).minimize(loss, global_step=step)
    model = [v for v in v1.global_variables() if v.op.name in ("conv1/weights", "logits/weights", "logits/biases")]
    setters = [(v, v1.placeholder(tf.float32, v.shape)) for v in model]
    assign = tf.group(*[v.assign(p) for v, p in setters])
    return train_op, setters, assign


class SmallRun:
    """A CheckpointManager over the small graph; ``set(sess, k)`` gives every model weight the value k."""

    def __init__(self, root: Path, keep: int = 5):
        self.root = root
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.train_op, self.setters, self.assign = _graph_with_adam()
            self.manager = self.new_manager(keep)
            self.init = v1.global_variables_initializer()

    def new_manager(self, keep: int = 5) -> CheckpointManager:
        with self.graph.as_default():
            return CheckpointManager(self.root / "checkpoints", self.root / "best", keep)

    def session(self) -> v1.Session:
        sess = v1.Session(graph=self.graph)
        sess.run(self.init)
        return sess

    def set(self, sess, k: float) -> None:
        sess.run(self.assign, {p: np.full(v.shape, k, np.float32) for v, p in self.setters})

    def value(self, sess) -> float:
        return float(sess.run(self.setters[0][0])[0, 0, 0, 0])


@pytest.fixture
def small(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "best").mkdir()
    return SmallRun(tmp_path)


def _best_record(small) -> int:
    return json.loads((small.root / "best" / "best.json").read_text())["step"]


def _assert_best_json_names_a_complete_checkpoint(small) -> None:
    step = _best_record(small)
    assert small.root / "best" / f"model.ckpt-{step}" in checkpoints_on_disk(small.root / "best")
    assert best_candidates(small.root / "best")[0].name == f"model.ckpt-{step}"
    with small.session() as sess:  # and it restores, to the weights of that step
        assert small.new_manager().restore_best(sess).name == f"model.ckpt-{step}"
        assert small.value(sess) == step


def test_best_keeps_the_model_variables_only_and_inference_names_restore_from_it(small):
    with small.session() as sess:
        small.set(sess, 1.0)
        small.manager.save(sess, 1)
        small.manager.save_best(sess, 1, "accuracy", 0.5)
    best = tf.train.load_checkpoint(str(small.root / "best" / "model.ckpt-1"))
    assert set(best.get_variable_to_shape_map()) == {"conv1/weights", "logits/weights", "logits/biases", "global_step"}
    full = tf.train.load_checkpoint(str(small.root / "checkpoints" / "model.ckpt-1"))
    assert "train/conv1/weights/Adam" in full.get_variable_to_shape_map()

    def data_size(d):
        return next((small.root / d).glob("model.ckpt-1.data-*")).stat().st_size

    assert data_size("best") < 0.4 * data_size("checkpoints")  # Adam: weights + 2 slots each
    line = small.manager.describe_disk_use()
    assert line.startswith("checkpoint ") and "(best " in line and "keeping 5 latest + best: ~" in line


def test_kill_while_saving_the_new_best_keeps_the_previous_one(small, monkeypatch):
    with small.session() as sess:
        small.set(sess, 1.0)
        small.manager.save_best(sess, 1, "accuracy", 0.5)
        small.set(sess, 2.0)

        def killed(*args, **kwargs):  # the meta graph is written, the index and data are not
            raise KeyboardInterrupt

        monkeypatch.setattr(small.manager.best_saver, "save", killed)
        with pytest.raises(KeyboardInterrupt):
            small.manager.save_best(sess, 2, "accuracy", 0.6)
    assert _best_record(small) == 1 and small.manager.best_step == 1
    _assert_best_json_names_a_complete_checkpoint(small)
    monkeypatch.undo()
    with small.session() as sess:  # the next best cleans the leftover .meta up
        small.set(sess, 3.0)
        small.manager.save_best(sess, 3, "accuracy", 0.7)
    assert sorted(p.name for p in (small.root / "best").glob("model.ckpt-*")) == [
        "model.ckpt-3.data-00000-of-00001", "model.ckpt-3.index", "model.ckpt-3.meta"]


def test_kill_before_best_json_is_replaced_keeps_both_and_best_json_decides(small, monkeypatch):
    with small.session() as sess:
        small.set(sess, 1.0)
        small.manager.save_best(sess, 1, "accuracy", 0.5)
        small.set(sess, 2.0)

        def killed(path, text):
            raise KeyboardInterrupt

        monkeypatch.setattr(ckpt, "write_text_atomic", killed)
        with pytest.raises(KeyboardInterrupt):
            small.manager.save_best(sess, 2, "accuracy", 0.6)
    assert [p.name for p in checkpoints_on_disk(small.root / "best")] == ["model.ckpt-1", "model.ckpt-2"]
    assert _best_record(small) == 1
    _assert_best_json_names_a_complete_checkpoint(small)
    assert resolve_checkpoint(small.root).name == "model.ckpt-1"  # the recorded best, not the newest file


def test_kill_before_the_old_best_is_deleted(small, monkeypatch):
    with small.session() as sess:
        small.set(sess, 1.0)
        small.manager.save_best(sess, 1, "accuracy", 0.5)
        small.set(sess, 2.0)

        def killed(self, keep):
            raise KeyboardInterrupt

        monkeypatch.setattr(CheckpointManager, "_delete_older_best", killed)
        with pytest.raises(KeyboardInterrupt):
            small.manager.save_best(sess, 2, "accuracy", 0.6)
    assert _best_record(small) == 2
    _assert_best_json_names_a_complete_checkpoint(small)


def _truncate_data(prefix: Path) -> Path:
    data = next(prefix.parent.glob(prefix.name + ".data-*"))
    with open(data, "r+b") as f:
        f.truncate(data.stat().st_size // 2)
    return data


def test_restore_latest_falls_back_from_a_damaged_checkpoint(small, caplog):
    with small.session() as sess:
        for step in (1, 2, 3):
            small.set(sess, float(step))
            small.manager.save(sess, step)
    ckpts = small.root / "checkpoints"
    data = _truncate_data(ckpts / "model.ckpt-3")
    with small.session() as sess, caplog.at_level(logging.WARNING, logger="graphcnn"):
        assert small.new_manager().restore_latest(sess).name == "model.ckpt-2"
        assert small.value(sess) == 2.0
    assert f"checkpoint {ckpts / 'model.ckpt-3'} cannot be restored" in caplog.text
    assert data.exists()  # nothing of the run is deleted: the next save of step 3 replaces it
    (ckpts / "model.ckpt-2.index").write_bytes(b"not an index")
    with small.session() as sess:
        assert small.new_manager().restore_latest(sess).name == "model.ckpt-1"
    (ckpts / "model.ckpt-1.index").write_bytes(b"")
    with small.session() as sess, pytest.raises(CheckpointError, match="model.ckpt-1"):
        small.new_manager().restore_latest(sess)


def test_skipped_checkpoints_are_named_and_go_once_a_newer_one_is_saved(small, caplog):
    """A checkpoint without its .meta (a file lost) is named, not skipped silently; it and a
    damaged one stay until a newer checkpoint is saved, then go (they stayed forever, beyond
    checkpoints_to_keep: the Saver never knew them)."""
    with small.session() as sess:
        for step in (1, 2, 3, 4):
            small.set(sess, float(step))
            small.manager.save(sess, step)
    ckpts = small.root / "checkpoints"
    (ckpts / "model.ckpt-4.meta").unlink()
    _truncate_data(ckpts / "model.ckpt-3")
    with small.session() as sess, caplog.at_level(logging.WARNING, logger="graphcnn"):
        manager = small.new_manager()
        assert manager.restore_latest(sess).name == "model.ckpt-2"
        assert f"checkpoint {ckpts / 'model.ckpt-4'} is incomplete (no .meta): skipped" in caplog.text
        assert (ckpts / "model.ckpt-4.index").exists() and (ckpts / "model.ckpt-3.index").exists()
        manager.save(sess, 3)  # the damaged 3 is written over, the incomplete 4 still newer: both stay
        assert (ckpts / "model.ckpt-4.index").exists() and manager._stale == [ckpts / "model.ckpt-4"]
        manager.save(sess, 5)
    assert sorted(f.name for f in ckpts.glob("model.ckpt-4*")) == []
    assert [p.name for p in checkpoints_on_disk(ckpts)][-2:] == ["model.ckpt-3", "model.ckpt-5"]


def test_a_tensorboard_folder_it_cannot_write_stops_the_run_before_it_trains(tmp_path, monkeypatch):
    """TensorFlow's event writer only logs that it cannot open its file: the run trained on
    with no events at all, exit 0. (Root writes anywhere: os.access is what is asked.)"""
    from conftest import synthetic_dataset, tiny_config
    from graphcnn.train import trainer

    run = RunDir.create(tmp_path, "ro")
    access = os.access
    monkeypatch.setattr(trainer.os, "access", lambda p, mode: access(p, mode) and Path(p) != run.train_logs)
    with pytest.raises(PermissionError) as info:
        trainer.train(tiny_config(epochs=1), run, progress=False, dataset=synthetic_dataset())
    assert info.value.filename == str(run.train_logs) and not run.has_checkpoint()


def test_resolve_checkpoint_skips_a_truncated_best(small, caplog):
    with small.session() as sess:
        small.set(sess, 1.0)
        small.manager.save(sess, 1)
        small.manager.save_best(sess, 1, "accuracy", 0.5)
    _truncate_data(small.root / "best" / "model.ckpt-1")
    with caplog.at_level(logging.WARNING, logger="graphcnn"):
        assert resolve_checkpoint(small.root) == small.root / "checkpoints" / "model.ckpt-1"
    assert str(small.root / "best" / "model.ckpt-1") in caplog.text and "truncated" in caplog.text


# ---------------------------------------------------------------------------
# a real (tiny) run: best/ serves predict, evaluate and --init-from; fallbacks


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cfg = tiny_config(epochs=2, precision="float32")
    run = RunDir.create(tmp_path_factory.mktemp("logs"), "tiny")
    result = train(cfg, run, progress=False, dataset=synthetic_dataset())
    return cfg, run, result


def test_best_of_an_adam_run_is_a_third_and_predicts(trained, tmp_path):
    cfg, run, result = trained
    best = checkpoints_on_disk(run.best)[-1]
    latest = checkpoints_on_disk(run.checkpoints)[-1]

    def data_size(prefix):
        return next(prefix.parent.glob(prefix.name + ".data-*")).stat().st_size

    assert data_size(best) < 0.4 * data_size(latest)
    assert json.loads((run.best / "best.json").read_text())["step"] == int(best.name.rsplit("-", 1)[1])
    test = synthetic_dataset().test
    with Predictor(run.root) as p:
        assert p.checkpoint == best and p.meta_graph.name == "inference.meta"
        probs = p.probabilities_for(p.preprocess_arrays(test.images))
    np.testing.assert_allclose(probs, result.test.probabilities, rtol=1e-5, atol=1e-6)  # final eval used best
    with tf.Graph().as_default(), v1.Session() as sess:  # the best checkpoint's own .meta restores too
        v1.train.import_meta_graph(str(best) + ".meta", clear_devices=True).restore(sess, str(best))


def test_large_checkpoints_are_two_data_files_that_restore_resume_and_predict(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(ckpt, "SHARD_BYTES", 0)  # every checkpoint counts as large
    run = RunDir.create(tmp_path, "tiny")
    result = train(tiny_config(epochs=1, precision="float32"), run, progress=False, dataset=synthetic_dataset())
    for folder in (run.checkpoints, run.best):
        prefix = checkpoints_on_disk(folder)[-1]
        files = [f.name.removeprefix(prefix.name) for f in ckpt.checkpoint_files(prefix)]
        assert files == [".data-00000-of-00002", ".data-00001-of-00002", ".index", ".meta"], files
        assert all(f.stat().st_size > 0 for f in ckpt.checkpoint_files(prefix))
        assert not list(folder.glob("*_temp"))  # the save's own temporary folder is gone
    with Predictor(run.root) as p:
        probs = p.probabilities_for(p.preprocess_arrays(synthetic_dataset().test.images))
    np.testing.assert_allclose(probs, result.test.probabilities, rtol=1e-5, atol=1e-6)
    best = checkpoints_on_disk(run.best)[-1]
    with tf.Graph().as_default(), v1.Session() as sess:  # its own .meta (a sharded saver) restores it
        v1.train.import_meta_graph(str(best) + ".meta", clear_devices=True).restore(sess, str(best))
    saved = tf.train.load_checkpoint(str(checkpoints_on_disk(run.checkpoints)[-1]))
    # a kill during a sharded save leaves <prefix>_temp/: the next start removes it and resumes
    leftover = run.checkpoints / "model.ckpt-99_temp"
    leftover.mkdir()
    (leftover / "part-00000-of-00002.data-00000-of-00001").write_bytes(b"partial")
    cfg = tiny_config(epochs=2, precision="float32")
    cfg.save(run.config)
    with caplog.at_level(logging.WARNING, logger="graphcnn"):
        train(cfg, run, resume=True, progress=False, dataset=synthetic_dataset())
    assert not leftover.exists() and "model.ckpt-99_temp" in caplog.text and "from scratch" not in caplog.text
    first, last = checkpoints_on_disk(run.checkpoints)[0], checkpoints_on_disk(run.checkpoints)[-1]
    assert ckpt.step_of(last) == 2 * ckpt.step_of(first)  # resumed from the first epoch's checkpoint
    reread = tf.train.load_checkpoint(str(first))
    for name in saved.get_variable_to_shape_map():
        np.testing.assert_array_equal(reread.get_tensor(name), saved.get_tensor(name), err_msg=name)


def _copy_run(run: RunDir, to: Path) -> RunDir:
    import shutil

    shutil.copytree(run.root, to)
    return RunDir(to)


def test_damaged_best_falls_back_for_predict_evaluate_and_init_from(trained, tmp_path, caplog, capsys):
    cfg, run, result = trained
    run = _copy_run(run, tmp_path / "copy")
    best = checkpoints_on_disk(run.best)[-1]
    _truncate_data(best)
    with caplog.at_level(logging.WARNING, logger="graphcnn"), Predictor(run.root) as p:
        assert p.checkpoint.parent == run.checkpoints
    assert f"checkpoint {best} cannot be restored" in caplog.text
    examples = sorted(run.examples.iterdir())
    assert cli.main(["predict", str(run.root), str(examples[0])]) == 0
    test = synthetic_dataset().test
    data = tmp_path / "test.npz"
    np.savez(data, images=test.images, labels=test.labels, class_names=np.array(["c0", "c1", "c2"]))
    capsys.readouterr()
    assert cli.main(["evaluate", str(run.root), "--data", str(data), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 12

    from graphcnn.train.finetune import build_init_from_checkpoint

    with tf.Graph().as_default():
        v1.get_variable("conv1_1/weights", [3, 3, 1, 4])
        init = build_init_from_checkpoint(str(run.root), v1.global_variables())
    assert Path(init.checkpoint_path).parent == run.checkpoints


def test_a_run_without_a_best_checkpoint_says_predict_uses_its_latest(trained, tmp_path, caplog):
    """A run stopped before its first validation has no best/ checkpoint: predict, evaluate and
    explain use its latest, and say so (the README says they use best/)."""
    cfg, run, result = trained
    run = _copy_run(run, tmp_path / "copy")
    for f in run.best.iterdir():
        f.unlink()
    latest = checkpoints_on_disk(run.checkpoints)[-1]
    with caplog.at_level(logging.WARNING, logger="graphcnn"), Predictor(run.root) as p:
        assert p.checkpoint == latest
    assert f"{run.root} has no best checkpoint yet (no validation ran): using its latest, {latest}" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="graphcnn"), Predictor(run.root, prefer_best=False):
        pass  # --latest: asked for
    assert "no best checkpoint" not in caplog.text


def test_latest_asked_of_a_run_without_checkpoints_says_it_uses_best(trained, tmp_path, caplog):
    """--latest on a run whose checkpoints/ was removed used best/ without a word."""
    import shutil

    cfg, run, result = trained
    run = _copy_run(run, tmp_path / "copy")
    shutil.rmtree(run.checkpoints)
    with caplog.at_level(logging.WARNING, logger="graphcnn"), Predictor(run.root, prefer_best=False) as p:
        best = p.checkpoint
    assert best.parent == run.best
    said = f"{run.root} has no latest checkpoint (checkpoints/ is missing or empty): using its best, {best}"
    assert said in caplog.text


def test_resume_falls_back_from_a_truncated_latest_checkpoint(trained, tmp_path, caplog):
    cfg, run, result = trained
    run = _copy_run(run, tmp_path / "copy")
    newest = checkpoints_on_disk(run.checkpoints)[-1]
    _truncate_data(newest)
    with caplog.at_level(logging.WARNING, logger="graphcnn"):
        resumed = train(cfg, run, resume=True, progress=False, dataset=synthetic_dataset())
    assert f"checkpoint {newest} cannot be restored" in caplog.text
    assert resumed.global_step == result.global_step  # redone from the previous checkpoint, saved again
    assert newest in checkpoints_on_disk(run.checkpoints)
    tf.train.load_checkpoint(str(newest)).get_tensor("global_step")  # replaced by a whole one


# ---------------------------------------------------------------------------
# run names, failed starts, the lock


@pytest.mark.parametrize("name", ["..", ".", "a/b", "/abs/run", "   ", "../escape"])
def test_run_name_is_one_path_component(tmp_path, name):
    with pytest.raises(RunDirError) as info:
        RunDir.create(tmp_path / "logs", name)
    assert repr(name) in str(info.value)
    assert not (tmp_path / "logs").exists() and sorted(os.listdir(tmp_path)) == []


def test_a_failed_start_removes_only_the_directory_it_created(tmp_path):
    with pytest.raises(RuntimeError):
        with RunDir.starting(tmp_path, "failed") as run:
            (run.root / "config.json").write_text("{}")
            raise RuntimeError("graph build failed")
    assert not (tmp_path / "failed").exists()

    with pytest.raises(RuntimeError):
        with RunDir.starting(tmp_path, "nan") as run:
            (run.checkpoints / "model.ckpt-1.index").write_bytes(b"")
            raise RuntimeError("NaN after the first checkpoint")
    assert (tmp_path / "nan" / "checkpoints" / "model.ckpt-1.index").exists()

    with pytest.raises(RuntimeError):
        with RunDir.starting(tmp_path, "trained") as run:
            run.mark_trained()  # steps ran: the start succeeded, whatever comes next
            raise RuntimeError("NaN before the first checkpoint")
    assert (tmp_path / "trained").is_dir()

    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "keep.txt").write_text("mine")
    with pytest.raises(RunDirError, match="already exists"):
        with RunDir.starting(tmp_path, "existing"):
            pass
    assert (tmp_path / "existing" / "keep.txt").read_text() == "mine"

    # --logdir new/deep: the folders it made for the logs go too (a failed start once left them),
    # but not one that something else wrote into meanwhile, nor the folders that were there
    with pytest.raises(RuntimeError):
        with RunDir.starting(tmp_path / "new" / "deep", "r1"):
            raise RuntimeError("graph build failed")
    assert not (tmp_path / "new").exists() and tmp_path.is_dir()
    with pytest.raises(RuntimeError):
        with RunDir.starting(tmp_path / "new" / "deep", "r1"):
            (tmp_path / "new" / "notes.txt").write_text("mine")
            raise RuntimeError("graph build failed")
    assert not (tmp_path / "new" / "deep").exists() and (tmp_path / "new" / "notes.txt").read_text() == "mine"


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path, caplog):
    import socket

    run = RunDir.create(tmp_path, "locked")
    with run.lock():
        holder = json.loads(run.lock_file.read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(RunDirError, match=rf"in use by pid {os.getpid()} on this host"):
            with run.lock():
                pass
    assert not run.lock_file.exists()

    # this pid, but not a lock this process holds: left by an earlier process of the same pid
    # (a restarted container numbers its processes again): taken over
    run.lock_file.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "x"}))
    with caplog.at_level(logging.WARNING, logger="graphcnn"), run.lock():
        assert json.loads(run.lock_file.read_text())["started"] != "x"
    assert "was an earlier process's (this process has its pid)" in caplog.text
    caplog.clear()
    run.lock_file.write_text(json.dumps({"pid": 4242, "host": "elsewhere.example", "started": "x"}))
    with pytest.raises(RunDirError, match="in use by pid 4242 on host elsewhere.example"):
        with run.lock():
            pass

    dead = _dead_pid()
    run.lock_file.write_text(json.dumps({"pid": dead, "host": socket.gethostname(), "started": "x"}))
    with caplog.at_level(logging.WARNING, logger="graphcnn"), run.lock():
        assert json.loads(run.lock_file.read_text())["pid"] == os.getpid()
    assert f"pid {dead}" in caplog.text and "not running any more" in caplog.text
    assert not run.lock_file.exists()

    run.lock_file.write_text("")  # created, its holder not yet done writing: held
    with pytest.raises(RunDirError, match="another trainer is starting"):
        with run.lock():
            pass
    os.utime(run.lock_file, (0, 0))  # the same, long ago: a crash between create and write
    with run.lock():
        assert json.loads(run.lock_file.read_text())["pid"] == os.getpid()


# ---------------------------------------------------------------------------
# the command line: exit codes and one-line errors


@pytest.fixture
def cli_setup(tmp_path):
    """A tiny config file and an .npz of the synthetic data: a CLI run of a few seconds."""
    ds = synthetic_dataset()
    data = tmp_path / "data.npz"
    np.savez(data, x_train=ds.train.images, y_train=ds.train.labels, x_test=ds.test.images, y_test=ds.test.labels)
    config = tiny_config(precision="float32").to_dict()
    config.pop("preset")
    config_file = tmp_path / "tiny.json"
    config_file.write_text(json.dumps(config))
    logs = tmp_path / "logs"
    return ["--config", str(config_file), "--data", str(data), "--logdir", str(logs), "--no-progress"], logs


def _error_lines(err: str) -> list[str]:
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("graphcnn: error:")]


def test_exit_0_finished(cli_setup, capsys):
    args, logs = cli_setup
    assert cli.main(["train", *args, "--name", "ok", "--set", "train.max_steps=3"]) == 0
    assert (logs / "ok" / "results.json").exists() and not (logs / "ok" / ".lock").exists()
    assert cli.main(["train", "--resume", str(logs / "ok"), "--no-progress"]) == 0  # takes and frees the lock
    assert not (logs / "ok" / ".lock").exists()
    assert _error_lines(capsys.readouterr().err) == []


def test_sweep_exit_codes_and_a_failed_sweep_leaves_nothing(cli_setup, tmp_path, capsys):
    args, logs = cli_setup
    sweep = ["--sweep", "train.learning_rate=0.01,0.02", "--set", "train.max_steps=2"]
    assert cli.main(["train", *args, "--name", "grid", *sweep]) == 0
    assert sorted(p.name for p in (logs / "grid").iterdir()) == ["learning_rate=0.01", "learning_rate=0.02",
                                                                "sweep.json"]
    assert cli.main(["train", *args, "--name", "badgrid", "--data", str(tmp_path / "missing"), *sweep]) == 2
    assert len(_error_lines(capsys.readouterr().err)) == 1 and not (logs / "badgrid").exists()
    assert cli.main(["train", *args, "--name", "..", *sweep]) == 2
    capsys.readouterr()
    # two points that would be one folder: refused before the first trains
    assert cli.main(["train", *args, "--name", "twice", "--sweep", "data.path=/a b,/a_b"]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert "grid points (data.path=/a b) and (data.path=/a_b) would both be the run path=_a_b" in line
    assert not (logs / "twice").exists()
    # the same number spelt twice: one config, not two runs of it
    assert cli.main(["train", *args, "--name", "same", "--sweep", "train.learning_rate=0.1,0.10"]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert "(train.learning_rate=0.1) and (train.learning_rate=0.10) are the same config" in line
    assert not (logs / "same").exists()


def test_an_interrupted_sweep_goes_on_with_the_same_command(cli_setup, capsys, monkeypatch):
    """A sweep stopped by Ctrl-C in its second run could not be finished: the same command said
    the folder exists, --resume said it is no run. Now the same command keeps the finished
    run, resumes the interrupted one and starts the rest; another grid under the name is refused."""
    from graphcnn.train import trainer

    args, logs = cli_setup
    sweep = ["--name", "grid", "--sweep", "train.learning_rate=0.01,0.02,0.03", "--set", "train.max_steps=4"]
    real = trainer.train
    calls = []

    class CtrlCAfterTheFirstStep(tf.compat.v1.train.SessionRunHook):
        sent = False

        def after_run(self, run_context, run_values):
            if not self.sent:  # once: the trainer's handler finishes the step, saves and stops
                self.sent = True
                os.kill(os.getpid(), signal.SIGINT)

    def stopped_in_the_second(config, run, **kwargs):
        calls.append((run.root.name, kwargs.get("resume", False)))
        return real(config, run, **kwargs, **({"hooks": [CtrlCAfterTheFirstStep()]} if len(calls) == 2 else {}))

    monkeypatch.setattr(trainer, "train", stopped_in_the_second)
    assert cli.main(["train", *args, *sweep]) == 130
    assert "the same command goes on with the rest" in capsys.readouterr().out
    assert sorted(p.name for p in (logs / "grid").iterdir()) == ["learning_rate=0.01", "learning_rate=0.02",
                                                                "sweep.json"]
    calls.clear()
    monkeypatch.setattr(trainer, "train", lambda config, run, **kw: calls.append((run.root.name, kw.get("resume",
                                                                                  False))) or real(config, run, **kw))
    assert cli.main(["train", *args, *sweep]) == 0
    out = capsys.readouterr().out
    assert "learning_rate=0.01: finished before, kept" in out
    assert calls == [("learning_rate=0.02", True), ("learning_rate=0.03", False)]
    summary = json.loads((logs / "grid" / "sweep.json").read_text())
    assert [s["run"] for s in summary] == ["learning_rate=0.01", "learning_rate=0.02", "learning_rate=0.03"]
    assert all(s["global_step"] == 4 for s in summary)
    # another grid under the same name: refused, nothing trained
    assert cli.main(["train", *args, "--name", "grid", "--sweep", "train.learning_rate=0.5,0.6",
                     "--set", "train.max_steps=4"]) == 2
    assert "holds a sweep with runs not in this grid" in _error_lines(capsys.readouterr().err)[0]


@pytest.mark.parametrize("data", ["missing", "/dev/null", "X.pickle"])
def test_exit_2_bad_data_leaves_no_run_directory(cli_setup, tmp_path, capsys, data):
    args, logs = cli_setup
    if data == "X.pickle":
        for name in ("X.pickle", "y.pickle"):
            (tmp_path / name).write_bytes(b"\x80\x04N.")
        data = str(tmp_path)
    elif data == "missing":
        data = str(tmp_path / "missing")
    assert cli.main(["train", *args, "--data", data, "--name", "bad"]) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and data in lines[0]
    assert not (logs / "bad").exists()


@pytest.mark.parametrize("source", ["npz", "idx", "folder", "pickle"])
def test_dev_null_is_a_one_line_error_naming_it_for_every_source(cli_setup, capsys, source):
    args, logs = cli_setup
    argv = ["train", *args, "--data", "/dev/null", "--set", f'data.source="{source}"', "--name", "null"]
    if source == "pickle":
        argv += ["--set", "data.trust_pickle=true"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    lines = _error_lines(err)
    assert len(lines) == 1 and "/dev/null" in lines[0] and len(err.strip().splitlines()) == 1, err
    assert not (logs / "null").exists()


@pytest.mark.parametrize("argv, expected", [
    (["--name", "../escape"], "--name '../escape'"),
    (["--set", "train.nonsense=1"], "unknown key 'train.nonsense'"),
])
def test_exit_2_bad_name_or_config(cli_setup, capsys, argv, expected):
    args, logs = cli_setup
    assert cli.main(["train", *args, *argv]) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and expected in lines[0]
    assert not logs.exists() or os.listdir(logs) == []


def test_exit_3_nan_keeps_the_run_with_its_checkpoint(cli_setup, capsys):
    args, logs = cli_setup
    argv = ["train", *args, "--name", "nan", "--set", 'train.optimizer="sgd"', "--set", "train.learning_rate=1e15"]
    assert cli.main(argv) == 3
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "NaN or Inf" in lines[0]
    assert checkpoints_on_disk(logs / "nan" / "checkpoints") and not (logs / "nan" / ".lock").exists()


def test_a_nan_before_any_checkpoint_keeps_the_run_and_says_it_once(cli_setup, capsys):
    """check_numerics off: the NaN at step 1-2 came before any checkpoint, and the whole run
    (its logs show the divergence) was removed as if the start had failed; TensorFlow's
    NanTensorHook added an 'ERROR:tensorflow:Model diverged' line beside graphcnn's."""
    args, logs = cli_setup
    argv = ["train", *args, "--name", "diverged", "--set", 'train.optimizer="sgd"', "--set",
            "train.learning_rate=1e30", "--set", "train.check_numerics=false"]
    assert cli.main(argv) == 3
    err = capsys.readouterr().err
    assert _error_lines(err) == [line for line in err.splitlines() if "NaN" in line or "diverged" in line]
    assert "the loss is NaN" in _error_lines(err)[0] and "the run is kept" in _error_lines(err)[0]
    run = logs / "diverged"
    assert (run / "config.json").exists() and not checkpoints_on_disk(run / "checkpoints")
    assert not (run / ".lock").exists()


def test_exit_1_disk_full_is_one_line_naming_the_file_and_the_start_is_undone(cli_setup, capsys, monkeypatch):
    args, logs = cli_setup

    def disk_full(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(ckpt, "write_bytes_atomic", disk_full)  # inference.meta, before the first checkpoint
    assert cli.main(["train", *args, "--name", "full"]) == 1
    lines = _error_lines(capsys.readouterr().err)
    assert lines == [f"graphcnn: error: cannot write {logs / 'full' / 'checkpoints' / 'inference.meta'}: "
                     f"{os.strerror(errno.ENOSPC)}"]
    assert not (logs / "full").exists()


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_prints_the_traceback_instead(cli_setup, capsys, where):
    args, logs = cli_setup
    argv = ["train", *args, "--set", "train.nonsense=1"]
    argv = ["--debug", *argv] if where == "before" else [*argv, "--debug"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ConfigError" in err and "graphcnn: error:" not in err


def test_a_taken_or_empty_run_name_fails_before_the_data_is_read(cli_setup, capsys, monkeypatch):
    """`--name EXISTING` was refused only after the scan of the whole data folder, and `--name ""`
    silently became the default name."""
    from graphcnn.data import sources

    args, logs = cli_setup
    (logs / "taken").mkdir(parents=True)
    (logs / "taken" / "mine.txt").write_text("mine")
    monkeypatch.setattr(sources, "load_dataset", lambda *a, **kw: pytest.fail("the data was read"))
    assert cli.main(["train", *args, "--name", "taken"]) == 2
    assert _error_lines(capsys.readouterr().err) == [
        f"graphcnn: error: run directory {logs / 'taken'} already exists; use --resume {logs / 'taken'} to "
        "continue it, or choose another --name"]
    assert cli.main(["train", *args, "--name", ""]) == 2
    assert "a run name must be one folder name" in _error_lines(capsys.readouterr().err)[0]
    assert sorted(p.name for p in logs.iterdir()) == ["taken"] and (logs / "taken" / "mine.txt").read_text() == "mine"


def test_a_network_too_deep_for_its_input_fails_before_the_data_is_read(cli_setup, tmp_path, capsys, monkeypatch):
    """Two 5x5 VALID convolutions on 8x8 images: TensorFlow's "Negative dimension size" came
    after the scan of the whole folder, and the new --logdir folders were left behind."""
    from graphcnn.data import sources

    args, logs = cli_setup
    shrink = tmp_path / "shrink.toml"
    shrink.write_text('[model]\ninput_height = 8\ninput_width = 8\n'
                      + '[[model.layers]]\ntype = "conv"\nfilters = 4\nkernel_size = 5\npadding = "VALID"\n' * 2
                      + '[[model.layers]]\ntype = "flatten"\n')
    monkeypatch.setattr(sources, "load_dataset", lambda *a, **kw: pytest.fail("the data was read"))
    argv = ["train", "--config", str(shrink), "--logdir", str(tmp_path / "new" / "deep"), "--no-progress"]
    assert cli.main(argv) == 2
    assert _error_lines(capsys.readouterr().err) == [
        "graphcnn: error: model.layers: layer conv1_2 does not fit the 8x8 input (model.input_width x "
        "model.input_height), after the layers before it: Negative dimension size caused by subtracting 5 from 4. "
        "Use padding SAME, smaller kernels or pools, fewer pools, or a larger input"]
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("units, memory, said", [
    (1_000_000, 2**40, "model.layers: fc1 has 3,136,000,000 weights in one tensor (fc1/weights: 12.5 GB), over "
                       "TensorFlow's 2 GB limit for one tensor; use fewer units"),
    (100_000, 2**30, "model.layers: the network has 313,900,042 weights (fc1: 313,600,000); training them needs "
                     "about 5 GB (each weight, its gradient and the optimizer's two slots), more than this "
                     "machine's 1 GB of memory; use fewer units"),
])
def test_a_network_too_big_to_train_fails_before_the_data_is_read(cli_setup, tmp_path, capsys, monkeypatch, units,
                                                                 memory, said):
    """A dense layer of 100,000 units after a conv: the process died (exit 139, no error line) after
    the data loaded, its run folder left; 2e9 units: "Cannot parse tensor from proto"."""
    import os

    from graphcnn.data import sources

    args, logs = cli_setup
    big = tmp_path / "big.toml"
    big.write_text('[model]\ninput_height = 28\ninput_width = 28\n[[model.layers]]\ntype = "conv"\nfilters = 4\n'
                   f'[[model.layers]]\ntype = "flatten"\n[[model.layers]]\ntype = "dense"\nunits = {units}\n')
    monkeypatch.setattr(sources, "load_dataset", lambda *a, **kw: pytest.fail("the data was read"))
    sysconf = os.sysconf
    monkeypatch.setattr(os, "sysconf", lambda name: memory // 4096 if name == "SC_PHYS_PAGES" else (
        4096 if name == "SC_PAGE_SIZE" else sysconf(name)))
    assert cli.main(["train", "--config", str(big), "--logdir", str(tmp_path / "new"), "--no-progress"]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line.startswith(f"graphcnn: error: {said}"), line
    assert not (tmp_path / "new").exists()


def test_exit_2_when_another_trainer_holds_the_run(cli_setup, capsys):
    args, logs = cli_setup
    assert cli.main(["train", *args, "--name", "held", "--set", "train.max_steps=2"]) == 0
    run = RunDir.open(logs / "held")
    with run.lock():  # this process plays the other trainer
        assert cli.main(["train", "--resume", str(run.root), "--no-progress"]) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and f"in use by pid {os.getpid()}" in lines[0]


def test_sigterm_while_starting_leaves_no_run_folder(cli_setup, capsys, monkeypatch):
    """SIGTERM before training's own handler (building the graph): as Ctrl-C there, exit 130,
    one error line and no run folder or lock (the default action once killed the process
    and left both)."""
    from graphcnn.train import trainer

    args, logs = cli_setup
    build = trainer.build

    def build_then_terminated(*a, **kw):
        os.kill(os.getpid(), signal.SIGTERM)
        return build(*a, **kw)

    def outside(signum, frame):  # stands for the default action (which would end pytest)
        raise RuntimeError("SIGTERM was not handled by the command")

    monkeypatch.setattr(trainer, "build", build_then_terminated)
    previous = signal.signal(signal.SIGTERM, outside)
    try:
        code = cli.main(["train", *args, "--name", "starting"])
        after = signal.getsignal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert code == 130
    assert _error_lines(capsys.readouterr().err) == ["graphcnn: error: interrupted"]
    assert not (logs / "starting").exists()
    assert after is outside  # put back once the command is done


def _swallowed_sigint() -> None:
    """A Ctrl-C as TensorFlow's native code sometimes takes one while it calls back into
    Python (an import, a session being made): the handler runs, its KeyboardInterrupt is lost."""
    with contextlib.suppress(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)


def test_a_ctrl_c_that_tensorflow_swallowed_while_starting_still_stops_the_start(cli_setup, capsys, monkeypatch):
    """Ctrl-C in the first seconds of `graphcnn train` was sometimes lost in native code and the
    run trained to its end (exit 0): the command remembers it and stops before the first step,
    exit 130, one error line, no run folder."""
    from graphcnn.train import trainer

    args, logs = cli_setup
    build = trainer.build

    def build_then_swallowed(*a, **kw):
        _swallowed_sigint()
        return build(*a, **kw)

    monkeypatch.setattr(trainer, "build", build_then_swallowed)
    previous = signal.getsignal(signal.SIGINT)
    code = cli.main(["train", *args, "--name", "swallowed"])
    assert code == 130
    assert _error_lines(capsys.readouterr().err) == ["graphcnn: error: interrupted"]
    assert not (logs / "swallowed").exists()
    assert signal.getsignal(signal.SIGINT) is previous  # put back once the command is done


def test_a_ctrl_c_that_tensorflow_turned_into_another_error_is_reported_as_an_interruption(cli_setup, capsys,
                                                                                          monkeypatch):
    """TensorFlow's native code re-raised a Ctrl-C as `ImportError: initialization failed` or a
    2 KB pybind11 RuntimeError (exit 1): it is an interruption, exit 130."""
    from graphcnn.train import trainer

    args, logs = cli_setup

    def build_then_mangled(*a, **kw):
        _swallowed_sigint()
        raise RuntimeError("pybind11::error_already_set: MISMATCH of original and normalized active exception types: "
                           "ORIGINAL InvalidArgumentError REPLACED BY KeyboardInterrupt")

    monkeypatch.setattr(trainer, "build", build_then_mangled)
    assert cli.main(["train", *args, "--name", "mangled"]) == 130
    assert _error_lines(capsys.readouterr().err) == ["graphcnn: error: interrupted"]
    assert not (logs / "mangled").exists()
    from graphcnn import runtime

    assert not runtime.interrupted()  # the command is over: a library call after it (train()) starts clean
    assert cli.main(["train", *args, "--set", "train.nonsense=1"]) == 2  # the next command's errors are its own


def test_a_ctrl_c_during_the_final_test_says_how_to_go_on_and_resuming_completes_the_results(
        cli_setup, capsys, monkeypatch):
    """Ctrl-C after the last step, while the test split was evaluated: exit 130 said only
    "interrupted", and the resumed run's results.json had no validation accuracy."""
    from graphcnn.train import trainer

    args, logs = cli_setup
    finish = trainer.finish

    def interrupted_finish(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "finish", interrupted_finish)
    assert cli.main(["train", *args, "--name", "late"]) == 130
    run = logs / "late"
    assert _error_lines(capsys.readouterr().err) == [
        f"graphcnn: error: interrupted; the run keeps its checkpoints: continue with graphcnn train --resume {run}"]
    assert not (run / "results.json").exists()
    monkeypatch.setattr(trainer, "finish", finish)
    assert cli.main(["train", "--resume", str(run), "--no-progress"]) == 0
    results = json.loads((run / "results.json").read_text())
    validations = [r for r in RunDir.open(run).read_metrics() if r["split"] == "validation"]
    assert results["validation_accuracy"] == validations[-1]["accuracy"] and results["test_accuracy"] is not None


def test_exit_130_interrupted_with_a_checkpoint(cli_setup, capsys):
    args, logs = cli_setup
    default = signal.getsignal(signal.SIGTERM)
    done = threading.Event()
    metrics = logs / "stopped" / "metrics.jsonl"

    def send_sigterm_once_training():  # only once the trainer's handler is installed, or pytest dies
        while not done.wait(0.2):
            if signal.getsignal(signal.SIGTERM) is not default and metrics.exists():
                os.kill(os.getpid(), signal.SIGTERM)
                return

    sender = threading.Thread(target=send_sigterm_once_training, daemon=True)
    sender.start()
    try:
        code = cli.main(["train", *args, "--name", "stopped", "--set", "train.epochs=400"])  # bounded: fails, not hangs
    finally:
        done.set()
        sender.join(5)
    assert code == 130
    out = capsys.readouterr().out
    assert "graphcnn train --resume" in out and checkpoints_on_disk(logs / "stopped" / "checkpoints")
    assert not (logs / "stopped" / ".lock").exists()


def test_state_files_are_strict_json(tmp_path):
    """A float that is not finite (the throughput of a run too short to measure, a NaN loss) is
    null: Python's NaN is not JSON, and other readers (JavaScript, jq --strict) refuse it."""
    def strict(text):
        return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in a state file"))

    run = RunDir.create(tmp_path, "strict")
    run.write_results({"images_per_second": float("nan"), "nested": {"loss": [1.0, float("inf")]}})
    run.append_metrics({"step": 1, "split": "validation", "loss": float("nan"), "accuracy": 0.5})
    run.write_state({"states": [{"step": 1, "early_stopping": {"best": float("-inf")}}]})
    assert strict(run.results.read_text()) == {"images_per_second": None, "nested": {"loss": [1.0, None]}}
    assert strict(run.metrics.read_text())["loss"] is None
    assert strict(run.train_state.read_text())["states"][0]["early_stopping"]["best"] is None


@pytest.mark.slow
def test_a_run_killed_by_sigkill_resumes_to_the_same_weights(cli_setup, tmp_path):
    """What the fault campaign does a hundred times (RELIABILITY.md), once as a test: the
    command killed with SIGKILL as soon as its first checkpoint is on disk, then --resume,
    ends with the weights of the same run left alone, bit for bit."""
    args, logs = cli_setup
    command = [sys.executable, "-m", "graphcnn", "train", *args, "--set", "train.max_steps=600",
               "--set", "log.histograms_every=0", "--set", "log.filters_every=0"]
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    alone = subprocess.run([*command, "--name", "alone"], env=env, capture_output=True, text=True, timeout=600)
    assert alone.returncode == 0, alone.stderr
    killed = subprocess.Popen([*command, "--name", "killed"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not checkpoints_on_disk(logs / "killed" / "checkpoints") and killed.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    killed.kill()
    assert killed.wait() == -signal.SIGKILL, "the run ended before it could be killed: give it more steps"
    resumed = subprocess.run([sys.executable, "-m", "graphcnn", "train", "--resume", str(logs / "killed"),
                              "--no-progress"], env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0 and "resumed from" in resumed.stderr, resumed.stderr
    final = [tf.train.load_checkpoint(str(logs / name / "checkpoints" / "model.ckpt-600"))
             for name in ("alone", "killed")]
    names = [n for n in final[0].get_variable_to_shape_map() if n != "global_step"]
    assert "fc1/weights" in names
    for name in names:
        np.testing.assert_array_equal(final[0].get_tensor(name), final[1].get_tensor(name), err_msg=name)
