"""SavedModel and TFLite export (graphcnn.export): what they predict is what ``graphcnn predict`` does."""

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import synthetic_dataset, tiny_config
from graphcnn.config import EarlyStoppingConfig, LogConfig
from graphcnn.export import (BYTES_INPUT, BYTES_SIGNATURE, UINT8_INPUT, UINT8_SIGNATURE, ExportError, _Restored,
                             drop_dropout_masks, export_saved_model, export_tflite)
from graphcnn.model import layers as L
from graphcnn.predict import Predictor
from graphcnn.run_dir import RunDir
from graphcnn.train.trainer import train

QUIET = LogConfig(scalars_every=0, histograms_every=0, filters_every=0, graph=False, custom_scalars=False,
                  gradients_every=0, activations_every=0, feature_maps_every=0, eval_images=False, pr_curves=False,
                  trace_every=0, hparams=False, projector_images=0)
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny trained run (batch norm, two dropout groups, mean subtraction), its SavedModel and TFLite
    file, and image files: the model's size (12x12 grey) and others (RGB, another size, JPEG)."""
    root = tmp_path_factory.mktemp("export")
    cfg = tiny_config(epochs=2, precision="float32", early_stopping=EarlyStoppingConfig(restore_best=False))
    cfg = dataclasses.replace(cfg, log=QUIET, data=dataclasses.replace(cfg.data, mean_subtraction=True))
    run = RunDir.create(root / "logs", "tiny")
    dataset = synthetic_dataset()
    train(cfg, run, progress=False, dataset=dataset)
    files = []
    for i in (0, 4, 8):  # one of each class, at the model's size
        files.append(root / f"test{i}.png")
        Image.fromarray(dataset.test.images[i][..., 0]).save(files[-1])
    rgb = np.repeat(np.kron(dataset.test.images[5], np.ones((2, 2, 1), np.uint8)), 3, axis=2)  # 24x24 RGB
    rgb[..., 0] //= 2
    files.append(root / "rgb24.png")
    Image.fromarray(rgb).save(files[-1])
    files.append(root / "odd.jpg")
    Image.fromarray(rgb[:19, :23]).save(files[-1], quality=90)
    saved = export_saved_model(run.root, root / "saved_model" / "1")
    tflite = export_tflite(saved, root / "model.tflite")
    return run, saved, tflite, files


def _predictor_probabilities(run_or_checkpoint, files):
    with Predictor(run_or_checkpoint) as p:
        predictions, errors = p.predict_files(files, top_k=len(p.class_names))
        names = p.class_names
    assert not errors
    probs = np.array([[dict(pr.top_k)[n] for n in names] for pr in predictions], np.float32)
    return probs, [pr.class_name for pr in predictions]


def test_saved_model_in_a_fresh_process_predicts_as_predictor(exported, tmp_path):
    run, saved, tflite, files = exported
    model_size = [np.asarray(Image.open(f))[..., None] for f in files[:3]]
    np.save(tmp_path / "batch.npy", np.stack(model_size))
    script = f"""
import json, numpy as np, tensorflow as tf
m = tf.saved_model.load({str(saved)!r})
files = {[str(f) for f in files]!r}
a = m.signatures[{BYTES_SIGNATURE!r}]({BYTES_INPUT}=tf.constant([open(f, "rb").read() for f in files]))
b = m.signatures[{UINT8_SIGNATURE!r}]({UINT8_INPUT}=tf.constant(np.load({str(tmp_path / "batch.npy")!r})))
print(json.dumps({{k: {{n: t.numpy().tolist() if t.dtype != tf.string else [s.decode() for s in t.numpy()]
                      for n, t in r.items()}} for k, r in (("bytes", a), ("uint8", b))}}))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    probs, names = _predictor_probabilities(run.root, files)
    np.testing.assert_allclose(out["bytes"]["probabilities"], probs, rtol=1e-5, atol=1e-5)
    assert out["bytes"]["class_names"] == names
    assert out["bytes"]["classes"] == [int(np.argmax(p)) for p in probs]
    np.testing.assert_allclose(out["uint8"]["probabilities"], probs[:3], rtol=1e-5, atol=1e-5)
    assert out["uint8"]["class_names"] == names[:3] == ["c0", "c1", "c2"]


def test_tflite_predicts_as_predictor(exported):
    run, saved, tflite, files = exported
    probs, names = _predictor_probabilities(run.root, files[:3])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        interpreter = tf.lite.Interpreter(model_path=str(tflite))
    assert interpreter.get_signature_list() == {
        UINT8_SIGNATURE: {"inputs": [UINT8_INPUT], "outputs": ["class_names", "classes", "probabilities"]}}
    runner = interpreter.get_signature_runner(UINT8_SIGNATURE)
    out = runner(**{UINT8_INPUT: np.stack([np.asarray(Image.open(f))[..., None] for f in files[:3]])})
    np.testing.assert_allclose(out["probabilities"], probs, rtol=1e-4, atol=1e-4)
    assert [s.decode() for s in out["class_names"]] == names
    assert list(out["classes"]) == [0, 1, 2]


def test_tflite_never_overwrites_a_file(exported):
    run, saved, tflite, files = exported
    before = tflite.read_bytes()
    with pytest.raises(ExportError, match=rf"^{tflite} already exists: export to a new file"):
        export_tflite(saved, tflite)
    with pytest.raises(ExportError, match=r"model.tflite already exists"):
        export_tflite(saved, tflite.parent)  # a folder: its model.tflite
    assert tflite.read_bytes() == before


def _signature_inputs(show: str) -> dict[str, set[str]]:
    found, current = {}, None
    for line in show.splitlines():
        m = re.match(r"signature_def\['(.+)'\]:", line)
        if m:
            current = found.setdefault(m.group(1), set())
        m = re.match(r"\s+inputs\['(.+)'\] tensor_info:", line)
        if m and current is not None:
            current.add(m.group(1))
    return found


def test_saved_model_cli_lists_only_the_image_inputs(exported):
    run, saved, tflite, files = exported
    proc = subprocess.run([sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "show", "--dir",
                           str(saved), "--all"], capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    inputs = _signature_inputs(proc.stdout)
    assert inputs[BYTES_SIGNATURE] == {"image_bytes"} and inputs[UINT8_SIGNATURE] == {"images"}
    assert "keep_rate" not in proc.stdout and "is_training" not in proc.stdout
    assert "DT_UINT8" in proc.stdout and "shape: (-1, 12, 12, 1)" in proc.stdout
    info = json.loads((saved / "assets.extra" / "graphcnn.json").read_text())
    assert info["class_names"] == ["c0", "c1", "c2"] and info["mean_subtraction"] is True


def test_keep_rates_and_training_switch_are_frozen(exported):
    run, saved, tflite, files = exported
    restored = _Restored(Path(tf.train.latest_checkpoint(str(run.checkpoints))))
    assert restored.dropouts_removed == 2  # dropout1 (conv group) and dropout2 (fc group)
    assert [t.name for t in restored.forward.inputs if t.dtype != tf.resource] == ["input/images:0"]
    ops = {op.type for op in restored.forward.graph.get_operations()}
    assert not ops & {"StatelessRandomUniformV2", "PlaceholderWithDefault", "StatelessIf"}


@pytest.mark.parametrize("dropout", ["cond", "select"])
def test_drop_dropout_masks_leaves_other_selects_alone(dropout):
    """Today's dropout (a cond on the keep rate) and the bare select of runs trained before it."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="x")
        keep = tf.compat.v1.placeholder_with_default(1.0, [], name="input/keep_rate_fc")
        dropped = (L.dropout(x, keep, "dropout1", seed=1, step=tf.constant(2)) if dropout == "cond"
                   else tf.nn.experimental.stateless_dropout(x, rate=1.0 - keep, seed=[1, 2]))
        kept = tf.where(x >= 0.5, x, 0.0)  # a select on data: not a dropout
        cond = tf.cond(keep > 0.0, lambda: x * 2.0, lambda: tf.identity(x))  # a cond on a keep rate: no dropout
        tf.identity(dropped + kept + cond, name="out")
    graph_def = graph.as_graph_def()
    assert drop_dropout_masks(graph_def) == 1
    forward = tf.compat.v1.graph_util.extract_sub_graph(graph_def, ["out"])
    ops = [n.op for n in forward.node]
    assert "StatelessRandomUniformV2" not in ops and ops.count("SelectV2") == 1  # the tf.where stays
    assert ops.count("StatelessIf") == 1  # the other cond stays


def test_export_from_a_checkpoint_without_inference_meta_and_refuses_a_used_folder(exported, tmp_path):
    run, saved, tflite, files = exported
    prefix = Path(tf.train.latest_checkpoint(str(run.checkpoints)))
    for f in run.checkpoints.iterdir():
        if f.name.startswith(prefix.name) or f.name in ("preprocessing.json", "pixel_mean.npy"):
            shutil.copy(f, tmp_path / f.name)
    out = export_saved_model(tmp_path / prefix.name, tmp_path / "full")
    serve = tf.saved_model.load(str(out)).signatures[BYTES_SIGNATURE]
    a = serve(image_bytes=tf.constant([f.read_bytes() for f in files]))
    probs, names = _predictor_probabilities(prefix, files)
    np.testing.assert_allclose(a["probabilities"].numpy(), probs, rtol=1e-5, atol=1e-5)
    assert [s.decode() for s in a["class_names"].numpy()] == names
    with pytest.raises(ExportError, match="already exists and is a folder that is not empty"):
        export_saved_model(run.root, out)
    (tmp_path / "a_file").write_text("mine")
    with pytest.raises(ExportError, match="a_file already exists and is a file: export into a new folder"):
        export_saved_model(run.root, tmp_path / "a_file")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]



def test_the_bytes_signature_refuses_what_predict_refuses(exported, tmp_path):
    """A BMP with a colour table came out of ``serving_default`` classified from its palette
    indices (a red image "blue"), where predict refuses it; and an animated WebP crashed the
    serving process. Both are an error naming the problem, in the graph."""
    from graphcnn.data import formats

    _, saved, _, _ = exported
    serve = tf.saved_model.load(str(saved)).signatures[BYTES_SIGNATURE]
    rgb = np.zeros((12, 12, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.bmp")
    frames = [Image.fromarray(rgb), Image.fromarray(255 - rgb)]
    frames[0].save(tmp_path / "animated.webp", save_all=True, append_images=frames[1:], lossless=True)
    for name, message in (("palette.bmp", formats.COLOUR_TABLE_BMP), ("animated.webp", formats.ANIMATED_WEBP)):
        with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(message.split(":")[0])):
            serve(image_bytes=tf.constant([(tmp_path / name).read_bytes()]))


def test_tflite_names_the_ops_it_lacks(exported, tmp_path, monkeypatch):
    """A dropout left in the graph (its random draw has no TFLite builtin): a clear error, no file."""
    run, saved, tflite, files = exported
    import graphcnn.export

    monkeypatch.setattr(graphcnn.export, "drop_dropout_masks", lambda graph_def: 0)
    frozen = graphcnn.export._frozen_inputs  # keep rates frozen below 1.0: the masks' random draws stay
    monkeypatch.setattr(graphcnn.export, "_frozen_inputs", lambda graph_def: {
        name: 0.5 if "keep_rate" in name else value for name, value in frozen(graph_def).items()})
    with pytest.raises(ExportError, match="TFLite's builtin ops do not cover this model: .*StatelessRandomUniformV2"):
        export_tflite(run.root, tmp_path / "deep" / "er" / "m.tflite")
    assert list(tmp_path.iterdir()) == []  # nor the folders made for it


def test_a_failed_export_makes_no_folders_and_names_what_was_asked_for(exported, tmp_path):
    run, saved, tflite, files = exported
    with pytest.raises(FileNotFoundError):
        export_tflite(tmp_path / "no_such_run", tmp_path / "ex" / "deep" / "m.tflite")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "afile").write_text("")
    for export, out in ((export_saved_model, tmp_path / "afile" / "model"), (export_tflite, tmp_path / "afile" / "m")):
        with pytest.raises(OSError) as info:
            export(run.root, out)
        assert info.value.filename == str(out if export is export_saved_model else out / "model.tflite")


@pytest.mark.slow
def test_saved_model_cli_run_commands_of_the_readme(exported, tmp_path):
    """``saved_model_cli run`` on both signatures, as the README shows it (an .npy of file bytes, of uint8)."""
    run, saved, tflite, files = exported
    np.save(tmp_path / "files.npy", np.array([files[1].read_bytes()], dtype=object))
    np.save(tmp_path / "batch.npy", np.asarray(Image.open(files[2]))[None, ..., None])
    for signature, inputs, expected in ((BYTES_SIGNATURE, f"{BYTES_INPUT}={tmp_path / 'files.npy'}", "[b'c1']"),
                                        (UINT8_SIGNATURE, f"{UINT8_INPUT}={tmp_path / 'batch.npy'}", "[b'c2']")):
        proc = subprocess.run([sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "run", "--dir",
                               str(saved), "--tag_set", "serve", "--signature_def", signature, "--inputs", inputs],
                              capture_output=True, text=True, env=ENV, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert f"Result for output key class_names:\n{expected}" in proc.stdout
