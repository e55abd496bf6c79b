"""The TensorBoard views of a run (graphcnn/train/view_hooks.py, graphcnn/tensorboard/) and the CLI around them:
exact tags and steps in the event files, probe/projector files, custom scalars, hparams (a run
is exactly the TensorBoard runs train/ and validation/), run metadata, `graphcnn filters`,
`graphcnn report`, `--sweep`, the launcher's command line and process-group stop. What a real
TensorBoard serves: test_tensorboard_server.py."""

import dataclasses
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import synthetic_dataset, tiny_config
from graphcnn import cli
from graphcnn.config import EarlyStoppingConfig
from graphcnn.data.dataset import Split
from graphcnn.tensorboard.events import read_images, read_scalars
from graphcnn.tensorboard import launcher, views
from graphcnn.tensorboard.launcher import tensorboard_command
from graphcnn.train import sweep
from graphcnn.run_dir import RunDir
from graphcnn.tensorboard.views import PROJECTOR_FILES, pr_curve_counts
from graphcnn.tensorboard.writing import layout_summary, pr_curve_summary, write_setup_events
from graphcnn.train.trainer import train

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
        assert steps(tags, f"feature_maps/{layer}") == [1, 5, 10, 15, 20, 25, 27], layer  # and the last step
    assert not any(t.startswith("feature_maps/fc") for t in tags)
    assert steps(tags, "run_metadata:step10") == [10] and steps(tags, "run_metadata:step20") == [20]
    assert steps(tags, "run_metadata:step27") == [27]  # the last step's trace
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


def event_dirs(root):
    """The folders under ``root`` that TensorBoard makes runs of (those holding an event file)."""
    return sorted({str(f.parent.relative_to(root)) for f in root.rglob("*tfevents*")})


def test_a_run_is_exactly_train_and_validation_with_layout_hparams_and_projector(view_run):
    run, _ = view_run
    assert event_dirs(run.root) == ["train", "validation"]  # no run root events, no projector/ run
    assert not (run.root / "projector").exists()
    from tensorboard.plugins.hparams import plugin_data_pb2
    from tensorboard.plugins.custom_scalar import layout_pb2

    # the one-off records: the layout in train/, HParams in validation/, in a file that sorts first
    for directory, tags in ((run.train_logs, {"custom_scalars__config__"}),
                            (run.validation_logs, {"_hparams_/session_start_info"})):
        files = sorted(directory.glob("events.out.tfevents.*"))
        assert files[0].name.endswith(".graphcnn-setup") and len(files) == 2, files
        assert set(all_events_of(files[0])) == tags
        assert not set(all_events_of(files[1])) & tags
    for e in v1.train.summary_iterator(str(sorted(run.train_logs.glob("*.graphcnn-setup"))[0])):
        for v in e.summary.value:
            layout = layout_pb2.Layout.FromString(tf.make_ndarray(v.tensor).item())
    for e in v1.train.summary_iterator(str(sorted(run.validation_logs.glob("*.graphcnn-setup"))[0])):
        for v in e.summary.value:
            info = plugin_data_pb2.HParamsPluginData.FromString(v.metadata.plugin_data.content).session_start_info
    hparams = info.hparams
    assert info.group_name == run.root.name
    assert hparams["learning_rate"].number_value == pytest.approx(0.01)
    assert hparams["optimizer"].string_value == "adam" and hparams["preset"].string_value == "tiny"
    assert hparams["keep_rates.fc"].number_value == pytest.approx(0.5) and hparams["batch_size"].number_value == 8
    assert "checkpoints_to_keep" not in hparams and not any(k.startswith("augment.") for k in hparams)
    # the metrics: the validation/ run's own scalars (group ""), whether TensorBoard opens the run or its parent
    assert set(read_scalars(run.validation_logs)) == {"accuracy", "loss", "test_accuracy"}
    charts = {c.title: list(c.multiline.tag) for c in layout.category[0].chart}
    assert charts["loss (train, validation)"] == ["^loss$"]
    # the projector: a TSV tensor in the train/ run's folder, no checkpoint
    config = (run.train_logs / "projector_config.pbtxt").read_text()
    for name in ('tensor_path: "projector_features.tsv"', 'metadata_path: "projector_metadata.tsv"',
                 'image_path: "projector_sprite.png"'):
        assert name in config
    features = np.loadtxt(run.train_logs / "projector_features.tsv", delimiter="\t", ndmin=2)
    assert features.shape == (10, 16)
    assert len((run.train_logs / "projector_metadata.tsv").read_text().splitlines()) == 1 + 10
    assert (run.train_logs / "projector_sprite.png").read_bytes().startswith(b"\x89PNG")
    assert not (run.train_logs / "checkpoint").exists()
    assert sorted(p.name for p in run.train_logs.glob("projector*")) == sorted(PROJECTOR_FILES)


@pytest.mark.parametrize("max_steps", [0, 11], ids=["at_an_epoch_end", "between_validations"])
def test_projector_takes_the_last_validations_features(tmp_path, monkeypatch, max_steps):
    """Also when the run stops between validations (train.max_steps, 9 steps an epoch here): the
    final validation, at the end, runs before the projector, which takes its features."""
    from graphcnn.train import view_hooks
    exported = []
    monkeypatch.setattr(view_hooks.views, "export_projector",
                        lambda directory, features, images, labels, predictions, names, step:
                        exported.append((features, images, predictions, step)))
    end = view_hooks.ProjectorHook.end

    def end_both_ways(self, session):
        validated = self._validated
        assert validated is not None and validated[0] == self.clock.step  # the last step was validated
        end(self, session)  # from the validation pass
        self._validated = None
        end(self, session)  # computed again, as after a stop between validations

    monkeypatch.setattr(view_hooks.ProjectorHook, "end", end_both_ways)
    config = view_config(gradients_every=0, activations_every=0, feature_maps_every=0, trace_every=0)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, max_steps=max_steps))
    train(config, RunDir.create(tmp_path, "tiny"), progress=False, dataset=synthetic_dataset())
    (features, images, predictions, step), (computed, computed_images, computed_predictions, step2) = exported
    assert features.shape == (10, 16) and step == step2 == (max_steps or 27)
    np.testing.assert_allclose(features, computed, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(images, computed_images)
    np.testing.assert_array_equal(predictions, computed_predictions)


def all_events_of(path):
    found = {}
    for e in v1.train.summary_iterator(str(path)):
        for v in e.summary.value:
            found.setdefault(v.tag, []).append(e.step)
    return found


def test_setup_events_sort_before_a_writer_opened_in_the_same_second(tmp_path):
    """TensorBoard's Python loader reads a run's files in name order and does not go back."""
    now = 1_800_000_000.5
    path = write_setup_events(tmp_path, [layout_summary()], wall_time=now)
    writer_file = tmp_path / f"events.out.tfevents.{int(now)}.{socket.gethostname()}"
    assert sorted([writer_file.name, path.name]) == [path.name, writer_file.name]
    events = list(v1.train.summary_iterator(str(path)))
    assert events[0].file_version == "brain.Event:2" and events[1].step == 0
    assert not list(tmp_path.glob(".*partial"))


def test_views_can_be_switched_off(tmp_path):
    cfg = view_config(gradients_every=0, activations_every=0, feature_maps_every=0, trace_every=0, eval_images=False,
                      pr_curves=False, projector_images=0, custom_scalars=False, hparams=False)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=1))
    run = RunDir.create(tmp_path, "off")
    train(cfg, run, progress=False, dataset=synthetic_dataset())
    prefixes = {t.split("/")[0].split(":")[0] for d in (run.train_logs, run.validation_logs) for t in all_events(d)}
    assert not prefixes & {"gradients", "activations", "sparsity", "feature_maps", "run_metadata",
                           "confusion_matrix", "misclassified", "pr_curves"}
    assert not (run.root / "probe.npz").exists() and not list(run.train_logs.glob("projector*"))
    assert event_dirs(run.root) == ["train", "validation"]
    assert not list(run.root.rglob("*.graphcnn-setup"))


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
    for name in ("loss", "accuracy", "learning_rate", "confusion_matrix", "per_class"):
        png = (run.root / "report" / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG"), name
    image = tf.io.decode_png((run.root / "report" / "loss.png").read_bytes()).numpy()
    assert image.shape[0] >= 300 and image.shape[1] >= 400


def test_tensorboard_command_defaults(tmp_path):
    cmd = tensorboard_command("logs", without_tensorflow=False)
    assert cmd[1] == "-c" and "from tensorboard.main import run_main" in cmd[2] and "--load_fast=true" not in cmd
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd[cmd.index("--port") + 1] == "6006"
    assert "images=100000" in cmd[cmd.index("--samples_per_plugin") + 1]
    compile(cmd[2], "bootstrap", "exec")
    fast = tensorboard_command("logs", without_tensorflow=True)
    assert "if True:" in fast[2] and "tensorboard.compat.notf" in fast[2] and "--load_fast=true" in fast
    assert "if False:" in cmd[2]
    args = cli.build_parser().parse_args(["tensorboard", "x", "--port", "7007"])
    assert (args.logdir, args.port, args.host) == ("x", 7007, "127.0.0.1")
    # the Python loader, or a projector read from a checkpoint (older runs), keep TensorFlow
    assert "if False:" in tensorboard_command(tmp_path, extra=["--load_fast=false"])[2]
    assert "if False:" in tensorboard_command(tmp_path, extra=["--load_fast", "false"])[2]
    (tmp_path / "old" / "projector").mkdir(parents=True)
    (tmp_path / "old" / "projector" / "projector_config.pbtxt").write_text('embeddings { tensor_name: "e" }')
    assert launcher.needs_tensorflow(tmp_path) and "if False:" in tensorboard_command(tmp_path)[2]
    (tmp_path / "old" / "projector" / "projector_config.pbtxt").write_text('embeddings { tensor_path: "f.tsv" }')
    assert not launcher.needs_tensorflow(tmp_path)
    if launcher.data_server_available():
        assert "if True:" in tensorboard_command(tmp_path)[2]


def test_launcher_passes_on_only_what_a_user_needs_and_projector_labels():
    import io

    out = io.StringIO()
    lines = ["TensorFlow installation not found - running with reduced feature set.\n",
             "TensorBoard 2.21.0 at http://127.0.0.1:6006/ (Press CTRL+C to quit)\n",
             "I0000 00:00:1796216846.295395   26169 port.cc:153] oneDNN custom operations are on.\n",
             "TensorBoard caught SIGTERM; exiting...\n",
             "E0000 error: could not bind to port 6006\n"]
    launcher._relay(io.BytesIO("".join(lines).encode()), out)
    assert out.getvalue() == "E0000 error: could not bind to port 6006\n"
    # the projector labels points by the first column that is not a number
    assert [views.projector_label(n) for n in ("3", "cat", "a\tb")] == ["class 3", "cat", "a b"]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its parent to reap it does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_stop_ends_the_whole_process_group():
    """What the launcher does on SIGTERM: TensorBoard and the data server it starts both go."""
    code = ("import subprocess, sys, time; "
            "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            "print(c.pid, flush=True); time.sleep(60)")
    process = launcher.spawn([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        grandchild = int(process.stdout.readline())
        assert launcher.stop(process, timeout=5) == -signal.SIGTERM  # SIGTERM's code: no SIGKILL was needed
        deadline = time.monotonic() + 5
        while alive(grandchild) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(grandchild)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.stdout.close()


def test_the_launcher_notices_a_signal_its_wait_did_not_see(tmp_path, monkeypatch):
    """A SIGTERM that arrived just before the launcher's blocking waitpid, or that the kernel gave
    the relay thread, did not interrupt it: the launcher waited for TensorBoard to exit by itself.
    Here the signal goes to a helper thread; the stand-in for TensorBoard would run 20 s."""
    stand_in = [sys.executable, "-c", "import time; time.sleep(20)"]
    monkeypatch.setattr(launcher, "tensorboard_command", lambda *a: stand_in)
    monkeypatch.setattr(launcher, "warm_tensorboard", lambda *a: None)
    monkeypatch.setattr(launcher, "port_in_use", lambda *a: False)
    killer = threading.Timer(0.5, lambda: signal.pthread_kill(threading.get_ident(), signal.SIGTERM))
    killer.start()
    started = time.monotonic()
    assert launcher.run_tensorboard(tmp_path, port=1, out=io.StringIO()) == 128 + signal.SIGTERM
    assert time.monotonic() - started < 10
    killer.join()


def test_sweep_grid_and_cli(tmp_path, monkeypatch, capsys):
    assert sweep.grid(["train.learning_rate=0.1,0.01", "train.batch_size=8,16"]) == [
        [("train.learning_rate", "0.1"), ("train.batch_size", "8")],
        [("train.learning_rate", "0.1"), ("train.batch_size", "16")],
        [("train.learning_rate", "0.01"), ("train.batch_size", "8")],
        [("train.learning_rate", "0.01"), ("train.batch_size", "16")]]
    assert sweep.parse_sweep('train.keep_rates={"fc":0.5};{"fc":0.8}')[1] == ['{"fc":0.5}', '{"fc":0.8}']
    assert sweep.run_name([("train.learning_rate", "0.1"), ("model.name", "a b")]) == "learning_rate=0.1,name=a_b"
    # two keys that end alike keep their sections (was "seed=1,seed=1")
    assert sweep.run_name([("train.seed", "1"), ("data.seed", "1")]) == "train.seed=1,data.seed=1"
    with pytest.raises(ValueError, match=r"^--sweep: train.seed is given twice; give each key once"):
        sweep.grid(["train.seed=1,2", "train.seed=3"])
    # a swept data key is a hyperparameter of the runs (HParams had train.seed as "seed", no data.seed)
    from graphcnn.tensorboard.writing import flat_hparams

    hparams = flat_hparams(tiny_config())
    assert hparams["data.seed"] == 0 and hparams["seed"] == 0 and "data.validation_fraction" in hparams
    assert not any(k.startswith("data.augment") for k in hparams)
    with pytest.raises(ValueError):
        sweep.parse_sweep("train.epochs")

    seen = []

    def fake_train(config, run, **kwargs):
        seen.append((run.root.name, config.train.learning_rate, config.train.epochs))
        return type("R", (), {"global_step": 1, "validation": None, "test": None, "interrupted": False})()

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


def test_tensorboard_on_a_busy_port_is_bad_input_and_a_folder_without_events_is_named(tmp_path, capsys):
    """A busy --port exited 1 (cluster-local's exits 2), and an empty folder started TensorBoard
    without a word: it showed nothing."""
    empty = tmp_path / "no_runs_yet"
    empty.mkdir()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert launcher.run_tensorboard(empty, port) == 2
    err = capsys.readouterr().err
    assert f"graphcnn: no TensorBoard event files under {empty}" in err
    assert f"graphcnn: error: port {port} is in use" in err


def test_a_validation_without_mistakes_still_writes_a_misclassified_image():
    """Only the text said so: TensorBoard's newest "misclassified" image stayed an older step's
    mistakes, for a model that now makes none."""
    labels = np.array([0, 1, 1])
    probabilities = np.eye(2)[labels].astype(np.float32)
    summaries = views.misclassified_summaries(labels, labels, probabilities, ["a", "b"],
                                              lambda i: np.zeros((len(i), 4, 4, 1), np.uint8), 6)
    tags = [v.tag for s in summaries for v in s.value]
    assert tags == ["misclassified", "misclassified_text"]
    image = summaries[0].value[0].image
    assert image.width >= 320 and image.height > 16
