"""Smoke test of scripts/folder_race.py on a tiny JPEG class-folder tree: each path runs start to
exit, and ``--keep`` leaves the runs and draws them side by side with ``graphcnn report
--compare``. It never checks speed."""

import argparse
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "folder_race.py"


def _jpeg_tree(root: Path, per_class: dict[str, int]) -> None:
    """training_set/ and test_set/ with two classes told apart by brightness, 60-90 px JPEGs."""
    rng = np.random.default_rng(0)
    for split, count in per_class.items():
        for k, name in enumerate(("cat", "dog")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                side = int(rng.integers(60, 90))
                pixels = rng.integers(0, 100, (side, side, 3)) + 120 * k
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.jpg", quality=90)


@pytest.mark.slow
def test_folder_race_keeps_its_runs_and_draws_them_side_by_side(tmp_path):
    data, keep = tmp_path / "data", tmp_path / "keep"
    _jpeg_tree(data, {"training_set": 20, "test_set": 5})
    paths = ["graphcnn", "keras", "keras_bf16", "keras_no_autotune"]
    paths += ["keras2"] if importlib.util.find_spec("tf_keras") else []
    proc = subprocess.run([sys.executable, str(SCRIPT), str(data), "--epochs", "1", "--rounds", "1",
                           "--paths", ",".join(paths), "--keep", str(keep)],
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for path in paths:
        assert re.search(rf"^round 1 {path} +[\d.]+ s  test accuracy (0|1)\.\d{{4}}  peak \d+ MB", proc.stdout, re.M)
        assert (keep / f"{path}-r1").is_dir()
    assert re.search(r"^keras / graphcnn \(time\): [\d.]+x \(rounds [\d.]+\)$", proc.stdout, re.M)
    assert (keep / "keras-r1" / "results.json").is_file()  # the Keras job's test accuracy, for the figure
    assert (keep / "graphcnn-r1" / "report" / "compare.png").is_file()
    for path in paths:
        assert re.search(rf"^  {path}-r1: test accuracy [\d.]+, validation accuracy [\d.]+ at epoch 1$",
                         proc.stdout, re.M), path


def _race_module():
    spec = importlib.util.spec_from_file_location("folder_race", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_variant_path_changes_only_its_own_side_and_setting(tmp_path):
    race = _race_module()
    argv = {path: race.command(path, tmp_path, 3, tmp_path, "r1")[0]
            for path in ("graphcnn", "graphcnn_fp32", "keras", "keras_bf16", "keras_no_autotune")}
    assert argv["graphcnn_fp32"] == argv["graphcnn"] + ["--set", "train.precision=float32"]
    assert "--bfloat16" in argv["keras_bf16"] and "--keras-job" in argv["keras_bf16"]
    assert "--bfloat16" not in argv["keras"] and not any(a.startswith("train.precision") for a in argv["graphcnn"])
    assert argv["keras_no_autotune"] == argv["keras"] + ["--no-autotune"]


def test_the_no_hugepages_path_turns_the_tunable_off_and_keeps_the_users(tmp_path, monkeypatch):
    race = _race_module()
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")
    argv, env = race.command("graphcnn_no_hugepages", tmp_path, 3, tmp_path, "r1")
    assert argv == race.command("graphcnn", tmp_path, 3, tmp_path, "r1")[0]
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=0"
    assert race.command("graphcnn", tmp_path, 3, tmp_path, "r1")[1]["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2"


@pytest.mark.parametrize("preset", ["cats_dogs_150", "dog_breeds_vgg"])
def test_the_keras_net_is_the_presets_net(preset):
    """The race's fairness rests on it: Keras's default VALID pools made cats_dogs_150 75 -> 37 -> 18
    (5.47 M weights) where graphcnn's SAME pools give 75 -> 38 -> 19 (6.08 M)."""
    import tensorflow as tf

    from graphcnn.model.network import Network
    from graphcnn.presets import get_preset

    race = _race_module()
    model = get_preset(preset).model
    with tf.Graph().as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, model.input_height, model.input_width, model.channels])
        network = Network(model, 4)
        network(images, tf.constant(False), {g: tf.constant(1.0) for g in network.keep_groups})
        ours = sum(int(np.prod(v.shape.as_list())) for v in tf.compat.v1.trainable_variables())
    assert race.tutorial_model(4, preset=preset).count_params() == ours


def test_the_keras_hugepages_path_gives_keras_what_graphcnn_relaunches_with(tmp_path, monkeypatch):
    race = _race_module()
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    argv, env = race.command("keras_hugepages", tmp_path, 3, tmp_path, "r1")
    assert argv == race.command("keras", tmp_path, 3, tmp_path, "r1")[0]
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"


def test_the_ratio_line_gives_the_ratio_of_medians_and_each_round():
    race = _race_module()
    results = {"graphcnn": [{"seconds": 58.2}, {"seconds": 63.7}, {"seconds": 59.2}],
               "keras": [{"seconds": 81.2}, {"seconds": 86.5}, {"seconds": 93.3}]}
    assert race.ratio_line("keras", "graphcnn", results) == "keras / graphcnn (time): 1.46x (rounds 1.40, 1.36, 1.58)"


def test_an_unknown_path_is_an_error_naming_the_choices(tmp_path):
    race = _race_module()
    with pytest.raises(ValueError, match="unknown path 'kears'; choices: graphcnn, "):
        race.command("kears", tmp_path, 3, tmp_path, "r1")
    assert race._paths("graphcnn,keras_no_autotune") == ["graphcnn", "keras_no_autotune"]
    with pytest.raises(argparse.ArgumentTypeError, match="unknown path kras"):
        race._paths("graphcnn,kras")
    for path in race.TRAIN_PATHS + race.PREDICT_PATHS:  # every documented name has a command
        race.command(path, tmp_path, 3, tmp_path, "r1", run=tmp_path)


def test_the_no_autotune_keras_datasets_have_the_autotuner_off_and_the_default_ones_on(tmp_path):
    race = _race_module()
    _jpeg_tree(tmp_path, {"training_set": 5, "test_set": 2})
    for autotune in (True, False):
        *datasets, class_names = race.keras_datasets(tmp_path, autotune=autotune)
        assert class_names == ["cat", "dog"]
        for dataset in datasets:  # None is tf.data's default: on
            assert dataset.options().autotune.enabled is (None if autotune else False)
