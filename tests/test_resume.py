"""Resuming after a kill: the run continues from the state of the step it restored, and a
stop neither adds a validation nor leaves a checkpoint half written."""

import dataclasses
import json
import signal

import numpy as np
import pytest
import tensorflow as tf

from conftest import synthetic_dataset, tiny_config
from graphcnn.config import DataConfig, ScheduleConfig
from graphcnn.run_dir import RunDir
from graphcnn.train.hooks import StopSignals
from graphcnn.train.trainer import train


def weights(directory):
    reader = tf.train.load_checkpoint(str(directory))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def validations(run):
    return [(r["step"], r["loss"], r["accuracy"]) for r in run.read_metrics() if r["split"] == "validation"]


def plateau_config(epochs):
    # dropout off: the resumed run is bit-identical to the uninterrupted one; the plateau halves
    # the learning rate after every validation that does not improve (patience 1)
    return tiny_config(epochs=epochs, keep_rates={"conv": 1.0, "fc": 1.0},
                       schedule=ScheduleConfig(plateau_factor=0.5, plateau_patience=1))


def test_kill_between_validation_and_checkpoint_replays_no_validation(tmp_path):
    whole = RunDir.create(tmp_path, "whole")
    train(plateau_config(4), whole, progress=False, dataset=synthetic_dataset())

    killed = RunDir.create(tmp_path, "killed")
    train(plateau_config(2), killed, progress=False, dataset=synthetic_dataset())
    # the kill: validation 18 (metrics, train_state) was written, its checkpoint was not
    for f in killed.checkpoints.glob("model.ckpt-18.*"):
        f.unlink()
    state = json.loads(killed.train_state.read_text())
    assert [s["step"] for s in state["states"]] == [9, 18]
    plateau_config(4).save(killed.config)
    result = train(plateau_config(4), killed, resume=True, progress=False, dataset=synthetic_dataset())

    assert result.global_step == 36
    assert [s for s, _, _ in validations(killed)] == [9, 18, 27, 36]  # no step twice, none skipped
    assert validations(killed) == validations(whole)
    assert [r["step"] for r in killed.read_metrics() if r["split"] == "test"] == [36]
    final_whole, final_killed = weights(whole.checkpoints), weights(killed.checkpoints)
    assert final_whole.keys() == final_killed.keys()
    for name in final_whole:  # the learning-rate scale included: the plateau history was not replayed
        np.testing.assert_array_equal(final_whole[name], final_killed[name], err_msg=name)


def test_many_validations_between_checkpoints_keep_the_restored_steps_state(tmp_path):
    """18 validations an epoch (batch 2, every 2 steps), a checkpoint an epoch: train_state.json
    once kept the last 16 states only, so a resume from the epoch checkpoint found no state of
    its step and started early stopping and the plateau afresh."""
    def config():
        return tiny_config(epochs=2, batch_size=2, eval_every_steps=2, keep_rates={"conv": 1.0, "fc": 1.0},
                           schedule=ScheduleConfig(plateau_factor=0.5, plateau_patience=1))

    whole = RunDir.create(tmp_path, "whole")
    train(config(), whole, progress=False, dataset=synthetic_dataset())
    killed = RunDir.create(tmp_path, "killed")
    train(config(), killed, progress=False, dataset=synthetic_dataset())
    for f in killed.checkpoints.glob("model.ckpt-72.*"):  # killed before the second epoch's checkpoint
        f.unlink()
    assert 36 in [s["step"] for s in json.loads(killed.train_state.read_text())["states"]]
    result = train(config(), killed, resume=True, progress=False, dataset=synthetic_dataset())
    assert result.global_step == 72
    assert validations(killed) == validations(whole)
    assert json.loads(killed.results.read_text())["best_validation"] == json.loads(whole.results.read_text())[
        "best_validation"]


def test_states_to_keep_covers_every_checkpoint_on_disk():
    from pathlib import Path

    from graphcnn.train.validation import states_to_keep

    states = [{"step": s} for s in (2, 4, 6, 8, 10)]
    assert states_to_keep(states, []) == states
    assert states_to_keep(states, [Path("model.ckpt-5"), Path("model.ckpt-9")]) == states[1:]  # 4 serves step 5
    assert states_to_keep(states, [Path("model.ckpt-6")]) == states[2:]


def test_resume_reads_the_state_file_runs_wrote_before(tmp_path):
    """train_state.json of earlier runs: one state, no step."""
    run = RunDir.create(tmp_path, "old")
    train(plateau_config(1), run, progress=False, dataset=synthetic_dataset())
    state = json.loads(run.train_state.read_text())["states"][-1]
    run.train_state.write_text(json.dumps({"early_stopping": state["early_stopping"], "plateau": state["plateau"]}))
    plateau_config(2).save(run.config)
    assert train(plateau_config(2), run, resume=True, progress=False, dataset=synthetic_dataset()).global_step == 18


def test_an_unreadable_state_file_is_named_and_the_run_resumes(tmp_path, caplog):
    run = RunDir.create(tmp_path, "empty_state")
    train(plateau_config(1), run, progress=False, dataset=synthetic_dataset())
    run.train_state.write_text("")
    probe = np.load(run.probe)["indices"]
    run.probe.write_bytes(run.probe.read_bytes()[:100])  # the feature maps' probe batch, damaged
    plateau_config(2).save(run.config)
    result = train(plateau_config(2), run, resume=True, progress=False, dataset=synthetic_dataset())
    assert result.global_step == 18
    assert any("train_state.json" in r.getMessage() and "cannot read" in r.getMessage() for r in caplog.records)
    assert any("probe.npz cannot be read" in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(np.load(run.probe)["indices"], probe)  # chosen again, the same way


@pytest.mark.parametrize("damage", ["train_state.json", "best/best.json"])
def test_a_lost_state_or_best_record_is_rebuilt_and_the_run_ends_as_if_whole(tmp_path, damage, caplog):
    """train_state.json (early stopping, plateau) is rebuilt from metrics.jsonl's validations,
    a lost best.json from best/'s checkpoint: a worse model never replaces best/, and the run
    ends as the undamaged one (the same learning rates, validations, best and test)."""
    def config(epochs):
        return dataclasses.replace(plateau_config(epochs), train=dataclasses.replace(
            plateau_config(epochs).train, eval_every_steps=3, learning_rate=0.05))

    runs = {}
    for name in ("whole", "damaged"):
        run = runs[name] = RunDir.create(tmp_path, name)
        train(config(2), run, progress=False, dataset=synthetic_dataset())
        if name == "damaged":
            (run.root / damage).write_text('{"states": [')
        config(5).save(run.config)
        train(config(5), run, resume=True, progress=False, dataset=synthetic_dataset())
    whole, damaged = runs["whole"], runs["damaged"]
    assert validations(damaged) == validations(whole)
    assert json.loads(damaged.results.read_text())["evaluated_step"] == json.loads(whole.results.read_text())[
        "evaluated_step"]
    assert json.loads((damaged.best / "best.json").read_text()) == json.loads((whole.best / "best.json").read_text())
    for name, value in weights(whole.checkpoints).items():
        np.testing.assert_array_equal(weights(damaged.checkpoints)[name], value, err_msg=name)
    assert json.loads(damaged.train_state.read_text())["states"][-1] == json.loads(whole.train_state.read_text())[
        "states"][-1]


def test_resume_refuses_data_whose_classes_changed_and_writes_nothing(tmp_path):
    """A class folder added since the run started: restoring the 3-class weights under 4
    names would relabel every prediction of the run (preprocessing.json rewritten)."""
    from graphcnn.data.dataset import DataError

    run = RunDir.create(tmp_path, "r")
    train(tiny_config(epochs=1), run, progress=False, dataset=synthetic_dataset())
    before = {p: p.read_bytes() for p in run.root.rglob("*") if p.is_file()}
    with pytest.raises(DataError, match=r"its classes \(c0, c1, c2, c3\) are not the ones .* on \(c0, c1, c2\)"):
        train(tiny_config(epochs=2), run, resume=True, progress=False, dataset=synthetic_dataset(num_classes=4))
    assert {p: p.read_bytes() for p in run.root.rglob("*") if p.is_file()} == before


def _folder_config(root):
    return dataclasses.replace(tiny_config(epochs=1), data=DataConfig(
        source="folder", path=str(root), validation_fraction=0.25, test_fraction=0.25))


def _write_images(root, counts):
    from PIL import Image

    for name, n in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(np.full((12, 12), 40 * i % 256, np.uint8)).save(root / name / f"{name}_{i:02d}.png")


def test_resume_refuses_a_folder_whose_files_changed_and_writes_nothing(tmp_path):
    """A file added since the run started reshuffles the seeded split: images the run
    validated or tested on would be trained on. Named; the run's files stay as they were; put
    back as it was, the folder resumes."""
    from graphcnn.data.dataset import DataError

    data = tmp_path / "data"
    _write_images(data, {"a": 8, "b": 8})
    run = RunDir.create(tmp_path / "logs", "r")
    train(_folder_config(data), run, progress=False)
    record = json.loads(run.data_split.read_text())
    assert [record[n]["count"] for n in ("train", "validation", "test")] == [8, 4, 4]
    assert sorted(p.rsplit("/", 1)[1] for n in record for p in record[n]["paths"]) == sorted(
        f"{c}_{i:02d}.png" for c in "ab" for i in range(8))
    before = {p: p.read_bytes() for p in run.root.rglob("*") if p.is_file()}
    _write_images(data, {"b": 9})  # b_08.png is new
    with pytest.raises(DataError, match=r"changed since .*r started: 1 file added \(.*b_08\.png\)"):
        train(_folder_config(data), run, resume=True, progress=False)
    (data / "b" / "b_08.png").unlink()
    (data / "a" / "a_03.png").unlink()
    with pytest.raises(DataError, match=r"1 file removed or unreadable \(.*a_03\.png\).*--init-from"):
        train(_folder_config(data), run, resume=True, progress=False)
    assert {p: p.read_bytes() for p in run.root.rglob("*") if p.is_file()} == before
    _write_images(data, {"a": 8})
    train(_folder_config(data), run, resume=True, progress=False)


def test_resume_refuses_arrays_that_changed(tmp_path):
    from graphcnn.data.dataset import DataError, split_changes

    same, other = synthetic_dataset().split_record(), synthetic_dataset(seed=1).split_record()
    assert split_changes(same, synthetic_dataset().split_record()) is None
    assert split_changes(same, other) == ("its images or labels differ (images per split: train 72 -> 72, "
                                          "validation 12 -> 12, test 12 -> 12)")
    assert "paths" not in same["train"]
    run = RunDir.create(tmp_path, "r")
    train(tiny_config(epochs=1), run, progress=False, dataset=synthetic_dataset())
    with pytest.raises(DataError, match="its images or labels differ"):
        train(tiny_config(epochs=2), run, resume=True, progress=False, dataset=synthetic_dataset(seed=1))


def test_split_changes_names_files_added_removed_and_moved():
    from graphcnn.data.dataset import split_changes

    def record(**splits):
        return {n: {"count": len(p), "digest": "|".join(p), "paths": p} for n, p in splits.items()}

    before = record(train=["a", "b", "c", "d", "e"], validation=["f"], test=["g"])
    after = record(train=["a", "b", "c", "f", "x1", "x2", "x3", "x4"], validation=["d"], test=["g"])
    assert split_changes(before, after) == ("4 files added (x1, x2, x3, ...); 1 file removed or unreadable (e); "
                                            "2 files moved to another split (f, d)")
    assert split_changes(before, dict(before)) is None


def test_a_second_signal_waits_for_the_save_then_stops():
    signals = StopSignals()
    signals._handle(signal.SIGINT, None)
    assert signals.raised
    saved = []
    with pytest.raises(KeyboardInterrupt):
        with signals.saving():
            signals._handle(signal.SIGINT, None)  # the second Ctrl-C: no exception inside the save
            saved.append(True)
    assert saved == [True]
    with pytest.raises(KeyboardInterrupt):  # outside a save it stops at once
        signals._handle(signal.SIGINT, None)


def test_a_signal_saves_before_the_final_snapshots(tmp_path, monkeypatch):
    """Ctrl-C: the checkpoint is written right after the step, before the other hooks' end
    (histograms of one more batch, a trace, the projector: seconds that a second Ctrl-C cut
    short, losing every step since the last checkpoint)."""
    import os

    from graphcnn import checkpoints
    from graphcnn.train import hooks

    order = []
    save = checkpoints.CheckpointManager.save
    monkeypatch.setattr(checkpoints.CheckpointManager, "save",
                        lambda self, sess, step: (order.append(f"save {step}"), save(self, sess, step))[1])
    for cls in (hooks.TraceHook, hooks.PeriodicSummaryHook, hooks.PeriodicImageHook):
        monkeypatch.setattr(cls, "end", lambda self, session, name=cls.__name__: order.append(name))

    class CtrlC(tf.compat.v1.train.SessionRunHook):
        steps = 0

        def after_run(self, run_context, run_values):
            self.steps += 1
            if self.steps == 2:
                os.kill(os.getpid(), signal.SIGINT)

    cfg = tiny_config(epochs=3)
    cfg = dataclasses.replace(cfg, log=dataclasses.replace(cfg.log, trace_every=100))
    result = train(cfg, RunDir.create(tmp_path, "r"), progress=False, dataset=synthetic_dataset(), hooks=[CtrlC()])
    assert result.interrupted and result.global_step == 3
    assert order[0] == "save 3" and {"TraceHook", "PeriodicSummaryHook", "PeriodicImageHook"} <= set(order[1:])


def test_resuming_a_finished_run_adds_no_events_and_keeps_its_results(tmp_path):
    """--resume of a run that had ended trains nothing: no second snapshot, trace or test
    scalar at its last step, and results.json keeps what only training measured."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def steps(folder):
        acc = EventAccumulator(str(folder), size_guidance={"tensors": 0, "images": 0, "scalars": 0})
        acc.Reload()
        tags = acc.Tags()
        return ({t: [e.step for e in acc.Tensors(t)] for t in tags["tensors"]}
                | {t: [e.step for e in acc.Images(t)] for t in tags["images"]}
                | {t: [e.step for e in acc.Scalars(t)] for t in tags["scalars"]}, sorted(tags["run_metadata"]))

    cfg = tiny_config(epochs=2)
    run = RunDir.create(tmp_path, "done")
    first = train(cfg, run, progress=False, dataset=synthetic_dataset())
    before = [steps(run.train_logs), steps(run.validation_logs)]
    results = json.loads(run.results.read_text())
    again = train(cfg, run, resume=True, progress=False, dataset=synthetic_dataset())
    assert again.global_step == first.global_step == 18 and again.test.accuracy == first.test.accuracy
    assert [steps(run.train_logs), steps(run.validation_logs)] == before
    after = json.loads(run.results.read_text())
    assert after["validation_accuracy"] == results["validation_accuracy"] is not None
    assert after["images_per_second"] == results["images_per_second"] > 0
    assert [r for r in run.read_metrics() if r.get("split") == "test"] == [
        {"step": 18, "split": "test", "loss": first.test.loss, "accuracy": first.test.accuracy, "evaluated_step": 18}]


@pytest.mark.parametrize("decay", [0.0, 0.9], ids=["weights", "with_moving_averages"])
def test_resume_is_bit_exact_with_dropout_and_augmentation(tmp_path, decay):
    from graphcnn.config import AugmentConfig

    def config(epochs):
        cfg = tiny_config(epochs=epochs, moving_average_decay=decay)  # dropout on: keep rates 0.9 and 0.5
        return dataclasses.replace(cfg, data=dataclasses.replace(
            cfg.data, augment=AugmentConfig(horizontal_flip=True, rotation_range=10, zoom_range=0.1)))

    whole = RunDir.create(tmp_path, "whole")
    train(config(4), whole, progress=False, dataset=synthetic_dataset())
    stopped = RunDir.create(tmp_path, "stopped")
    train(config(1), stopped, progress=False, dataset=synthetic_dataset())
    for epochs in (3, 4):  # two restarts
        config(epochs).save(stopped.config)
        train(config(epochs), stopped, resume=True, progress=False, dataset=synthetic_dataset())
    final_whole, final_stopped = weights(whole.checkpoints), weights(stopped.checkpoints)
    for name in final_whole:
        np.testing.assert_array_equal(final_whole[name], final_stopped[name], err_msg=name)
    assert validations(stopped) == validations(whole)


class FakeCheckpoints:
    def __init__(self):
        self.best_step = self.best_metric = None

    def save_best(self, session, step, monitor, value):
        self.best_step, self.best_metric = step, value


def test_a_tie_in_accuracy_goes_to_the_lower_validation_loss(tmp_path):
    from graphcnn.config import EarlyStoppingConfig
    from graphcnn.train.early_stopping import EarlyStopping
    from graphcnn.train.validation import BestCheckpoint, EarlyStoppingHook, EvalResult

    def result(accuracy, loss):
        return EvalResult(loss, accuracy, 1, np.zeros(1, np.int64), np.zeros(1, np.int64), np.ones((1, 1)))

    for monitor, history, best in (
            ("accuracy", [(0.90, 0.5), (0.95, 0.4), (0.95, 0.3), (0.95, 0.35), (0.94, 0.1)], 3),
            ("loss", [(0.90, 0.5), (0.95, 0.4), (0.96, 0.4), (0.97, 0.45)], 3)):
        early = EarlyStopping(EarlyStoppingConfig(monitor=monitor, patience=10))
        checkpoints = FakeCheckpoints()
        listeners = [EarlyStoppingHook(early), BestCheckpoint(checkpoints, early, RunDir(tmp_path))]
        for step, (accuracy, loss) in enumerate(history, 1):
            for listener in listeners:
                listener.after_validation(None, step, result(accuracy, loss))
        assert checkpoints.best_step == best, monitor
        assert early.best_step == 2 and early.wait == len(history) - 2  # ties do not reset patience


def test_both_loaders_keep_what_was_written_at_the_restored_step(tmp_path):
    """SessionLog.START purges the steps from its own on (TensorBoard's Python loader, and
    EventAccumulator): it must not purge the evaluation written at the checkpoint's step."""
    from graphcnn.tensorboard.events import read_images, read_scalars

    run = RunDir.create(tmp_path, "resumed")
    train(tiny_config(epochs=1), run, progress=False, dataset=synthetic_dataset())
    tiny_config(epochs=2).save(run.config)
    train(tiny_config(epochs=2), run, resume=True, progress=False, dataset=synthetic_dataset())
    scalars = read_scalars(run.validation_logs)
    assert [s for s, _ in scalars["accuracy"]] == [9, 18]
    assert [s for s, _ in scalars["test_accuracy"]] == [9, 18]
    assert [s for s, _ in read_images(run.validation_logs, "confusion_matrix")["confusion_matrix"]] == [9, 18]


def test_every_periodic_view_has_a_snapshot_at_the_last_step(tmp_path):
    from graphcnn.tensorboard.events import read_images

    cfg = tiny_config(epochs=2)  # 18 steps; every view's period is longer
    cfg = dataclasses.replace(cfg, log=dataclasses.replace(
        cfg.log, histograms_every=50, filters_every=50, gradients_every=50, activations_every=50,
        feature_maps_every=50, trace_every=50))
    run = RunDir.create(tmp_path, "short")
    train(cfg, run, progress=False, dataset=synthetic_dataset())
    steps: dict[str, set[int]] = {}
    for f in run.train_logs.glob("events.out.tfevents.*"):
        for e in tf.compat.v1.train.summary_iterator(str(f)):
            for v in e.summary.value:
                steps.setdefault(v.tag.split("/")[0], set()).add(e.step)
            if e.HasField("tagged_run_metadata"):
                steps.setdefault("trace", set()).add(e.step)
    for view in ("conv1_1", "filters", "gradients", "activations", "feature_maps"):
        assert steps[view] == {1, 18}, view
    assert steps["trace"] == {18}
    assert [s for s, _ in read_images(run.train_logs, "feature_maps/")["feature_maps/conv1_1"]] == [1, 18]


def test_resuming_a_finished_run_validates_nothing_again(tmp_path):
    """A run stopped after its last validation (and checkpoint), or resumed once finished."""
    run = RunDir.create(tmp_path, "done")
    cfg = tiny_config(epochs=1, max_steps=13)  # 13 is no epoch end: the last validation comes from end()
    train(cfg, run, progress=False, dataset=synthetic_dataset())
    train(cfg, run, resume=True, progress=False, dataset=synthetic_dataset())
    assert [s for s, _, _ in validations(run)] == [9, 13]
    assert [r["step"] for r in run.read_metrics() if r["split"] == "test"] == [13]
