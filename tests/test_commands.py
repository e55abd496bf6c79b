"""What a user sees from the commands: quiet output, evaluate/predict formats and errors, one
data report per problem set, small-split warnings, the tutorial scripts, `graphcnn data`,
augment-preview."""

import csv
import io
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import tiny_config
from graphcnn import cli
from graphcnn.config import DataConfig
from graphcnn.data import scan
from graphcnn.data.dataset import DataError
from graphcnn.data.sources import load_dataset

ROOT = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(0)


def write_image(path: Path, array: np.ndarray, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, fmt)
    return path


def pattern(label: int, size: int = 12, channels: int = 1) -> np.ndarray:
    """Class 0: bright left half; class 1: bright right half (what the tiny net separates)."""
    img = RNG.integers(0, 40, (size, size), dtype=np.uint8)
    half = size // 2
    img[:, half * label: half * (label + 1)] += 200
    return img if channels == 1 else np.repeat(img[..., None], channels, axis=2)


def make_folder(root: Path, counts: dict[str, int], fmt: str = "png") -> Path:
    for c, (name, n) in enumerate(counts.items()):
        for i in range(n):
            write_image(root / name / f"{name}{i:02d}.{fmt}", pattern(c % 2))
    return root


def jpeg_bytes(size: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(RNG.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def subcommand_help(name: str) -> str:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, type(parser._subparsers._group_actions[0])))
    return sub.choices[name].format_help()


def error_lines(err: str) -> list[str]:
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("graphcnn: error:")]


@pytest.fixture(scope="module")
def tiny_config_file(tmp_path_factory) -> Path:
    config = tiny_config(precision="float32").to_dict()
    config.pop("preset")
    path = tmp_path_factory.mktemp("config") / "tiny.json"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory, tiny_config_file):
    """A run trained a few steps on a two-class folder (a, b) of 12x12 gray PNGs."""
    base = tmp_path_factory.mktemp("folder_run")
    data = make_folder(base / "data", {"a": 20, "b": 20})
    argv = ["train", "--config", str(tiny_config_file), "--data", str(data), "--logdir", str(base / "logs"),
            "--name", "run", "--no-progress", "--set", "train.max_steps=6"]
    assert cli.main(argv) == 0
    return base / "logs" / "run", data


def run_cli(*args: str, env_extra: dict | None = None, script: str | None = None, cwd=None):
    """The command line in a fresh process, with the user's environment minus the test suite's
    TF_CPP_MIN_LOG_LEVEL (conftest sets it; a user's shell does not)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(env_extra or {})
    command = [sys.executable, script] if script else [sys.executable, "-m", "graphcnn"]
    return subprocess.run(command + list(args), capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


# --------------------------------------------------------------------------- 8. noise


def test_no_tensorflow_noise_by_default_and_verbose_shows_it(tmp_path):
    data = make_folder(tmp_path / "data", {"a": 6, "b": 6}, fmt="jpg")
    good = jpeg_bytes()
    (data / "a" / "damaged_but_decodes.jpg").write_bytes(good[:len(good) // 2] + b"\xff\xd9")
    (data / "b" / "truncated.jpg").write_bytes(good[:len(good) // 2])
    from PIL import Image

    tags = Image.Exif()
    tags[0x0112] = 6  # turned upright below: oneDNN printed an error line for a uint8 transpose
    Image.fromarray(np.full((12, 20, 3), 90, np.uint8)).save(data / "a" / "sideways.jpg", exif=tags)

    quiet = run_cli("data", str(data), "--out", str(tmp_path / "out"), "--set", "data.exif_transpose=true")
    assert quiet.returncode == 0, quiet.stderr
    for noise in ("oneDNN", "absl::InitializeLog", "Corrupt JPEG", "JPEG library", "jpeg_mem.cc", "is deprecated"):
        assert noise not in quiet.stderr, quiet.stderr
    assert not re.search(r"^[IWEF]\d{4} ", quiet.stderr, re.M)
    # graphcnn's own lines (and their indented listings) only
    assert all(line.startswith(("graphcnn: ", "  ")) for line in quiet.stderr.splitlines()), quiet.stderr
    assert "image decoder message(s) hidden" in quiet.stderr
    assert "truncated.jpg: truncated JPEG" in quiet.stdout  # graphcnn names the bad file itself

    loud = run_cli("data", str(data), "--out", str(tmp_path / "out"), "--verbose")  # after the subcommand
    assert loud.returncode == 0, loud.stderr
    assert "oneDNN custom operations are on" in loud.stderr
    assert [line for line in loud.stderr.splitlines() if "JPEG" in line and not line.startswith(("graphcnn", " "))]


def test_verbose_and_debug_before_or_after_the_subcommand():
    parser = cli.build_parser()
    for argv in (["--verbose", "--debug", "presets"], ["presets", "--verbose", "--debug"]):
        args = parser.parse_args(argv)
        assert args.verbose and args.debug
    assert not parser.parse_args(["presets"]).verbose


def test_the_resolved_config_has_absolute_data_paths(tmp_path, monkeypatch, capsys):
    """A run keeps its config: a relative --data saved as given broke --resume and evaluate of
    the run from any other folder."""
    monkeypatch.chdir(tmp_path)
    assert cli.main(["config", "--data", "some/data", "--set", "data.test_path=tests_here"]) == 0
    data = json.loads(capsys.readouterr().out)["data"]
    assert data["path"] == str(tmp_path / "some" / "data") and data["test_path"] == str(tmp_path / "tests_here")
    assert cli.main(["config"]) == 0
    assert json.loads(capsys.readouterr().out)["data"]["path"] == ""  # the embedded digits: no path


# --------------------------------------------------------------------------- 9. evaluate


def test_evaluate_csv_has_a_row_per_class_and_an_accuracy_row(folder_run, capsys):
    run, data = folder_run
    assert cli.main(["evaluate", str(run), "--format", "csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["class", "precision", "recall", "f1", "support"]
    assert [r[0] for r in rows[1:]] == ["a", "b", "accuracy"]
    assert rows[-1][1:3] == ["", ""] and int(rows[-1][4]) == int(rows[1][4]) + int(rows[2][4]) == 4
    assert 0 <= float(rows[-1][3]) <= 1
    assert 'a row "accuracy" with the accuracy in the f1 column' in " ".join(subcommand_help("evaluate").split())


def test_evaluate_another_dataset_honours_split_and_says_which_images(folder_run, tmp_path, capsys):
    run, _ = folder_run
    other = make_folder(tmp_path / "other", {"a": 30, "b": 30})
    assert cli.main(["evaluate", str(run), "--data", str(other), "--split", "test", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["count"] == 6  # 10% of 60, as training would split it (the run's config: 0.1 / 0.1, seed 0)
    assert report["images"].startswith(f"the test split of folder {other}: 6 of 60 images (split as training")
    assert cli.main(["evaluate", str(run), "--data", str(other), "--split", "all", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 60
    assert cli.main(["evaluate", str(run), "--data", str(other), "--precision", "float32"]) == 0  # all of it
    text = capsys.readouterr().out
    assert text.startswith(f"images: all 60 images of folder {other}; forward pass in float32\naccuracy ")
    assert "on 60 images (95% interval: up to +/-12.7 points)" in text


def test_evaluate_a_single_class_folder(folder_run, tmp_path, capsys):
    run, _ = folder_run
    only = make_folder(tmp_path / "only_b", {"b": 5})
    assert cli.main(["evaluate", str(run), "--data", str(only), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["count"] == 5 and report["per_class"]["b"]["support"] == 5
    assert report["per_class"]["a"]["support"] == 0
    with pytest.raises(DataError, match="only one class"):  # training still refuses it
        load_dataset(DataConfig(path=str(only)), 1)


def test_evaluate_class_mismatch_fails_before_decoding(folder_run, tmp_path, capsys, monkeypatch):
    run, _ = folder_run
    other = make_folder(tmp_path / "zoo", {"a": 3, "zebra": 3, "yak": 3})

    def no_decoding(*args, **kwargs):
        raise AssertionError("images were decoded before the class names were checked")

    monkeypatch.setattr(scan, "scan_images", no_decoding)
    assert cli.main(["evaluate", str(run), "--data", str(other)]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1
    assert "classes yak, zebra are not among the model's classes (a, b)" in lines[0]
    assert "the model's classes not in this data: b" in lines[0]


# --------------------------------------------------------------------------- 10. predict


@pytest.fixture
def predict_files(tmp_path):
    files = {
        "good": write_image(tmp_path / "p" / "1_good.png", pattern(0)),
        "rgba": write_image(tmp_path / "p" / "2_rgba.png", RNG.integers(0, 255, (12, 12, 4), dtype=np.uint8)),
        "big": write_image(tmp_path / "p" / "3_big.jpg", RNG.integers(0, 255, (300, 400, 3), dtype=np.uint8)),
        "deep": write_image(tmp_path / "p" / "4_deep16.png", RNG.integers(0, 65535, (12, 12), dtype=np.uint16)),
        "broken": tmp_path / "p" / "5_broken.png",
        "empty": tmp_path / "p" / "6_empty.jpg",
    }
    files["broken"].write_bytes(b"not a png at all")
    files["empty"].write_bytes(b"")
    return files


def test_predict_csv_and_json_have_a_row_per_file_with_errors(folder_run, predict_files, capsys):
    run, _ = folder_run
    folder = predict_files["good"].parent
    assert cli.main(["predict", str(run), str(folder), "--format", "csv", "--top-k", "2"]) == 1
    out, err = capsys.readouterr()
    assert "\r" not in out  # lines end in \n, as evaluate's
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [Path(r["file"]).name for r in rows] == sorted(p.name for p in predict_files.values())
    assert list(rows[0]) == ["file", "class", "probability", "top1_class", "top1_probability", "top2_class",
                             "top2_probability", "error"]
    by_name = {Path(r["file"]).name: r for r in rows}
    assert by_name["1_good.png"]["error"] == "" and by_name["1_good.png"]["class"] in ("a", "b")
    assert by_name["5_broken.png"]["class"] == "" and by_name["5_broken.png"]["error"].startswith("Unknown image")
    assert by_name["6_empty.jpg"]["error"] == "empty file (0 bytes)"
    assert "cannot read" in err and "5_broken.png" in err
    assert err.strip().splitlines()[-1] == ("graphcnn: error: 2 of 6 files could not be read (each named above; "
                                            "the others are predicted)")

    assert cli.main(["predict", str(run), str(folder), "--format", "json"]) == 1
    entries = json.loads(capsys.readouterr().out)
    assert [Path(e["file"]).name for e in entries] == sorted(p.name for p in predict_files.values())
    assert all(set(e) == {"file", "class", "probability", "top_k", "error"} for e in entries)
    assert [e["error"] is None for e in entries] == [True, True, True, True, False, False]
    assert entries[4]["class"] is None and entries[4]["top_k"] == []


def test_evaluate_refuses_a_run_whose_data_changed_since_it_trained(tmp_path, tiny_config_file, capsys):
    """Files added to the run's folder reshuffle the seeded split: `evaluate RUN` measured a
    "test split" that held images the run trained on, and said nothing."""
    data = make_folder(tmp_path / "data", {"a": 12, "b": 12})
    assert cli.main(["train", "--config", str(tiny_config_file), "--data", str(data), "--logdir",
                     str(tmp_path / "logs"), "--name", "run", "--no-progress", "--set", "train.max_steps=2"]) == 0
    run = tmp_path / "logs" / "run"
    assert cli.main(["evaluate", str(run)]) == 0
    for i in range(4):
        write_image(data / "b" / f"new{i}.png", pattern(1))
    capsys.readouterr()
    assert cli.main(["evaluate", str(run)]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith(f"graphcnn: error: folder {data}: changed since {run} trained on "
                                                   "it: 4 files added (")
    assert "evaluate on other data (all of it): --data DIR" in lines[0]
    assert cli.main(["evaluate", str(run), "--data", str(data)]) == 0  # other data, asked for: all of it


def test_predict_reports_conversions_on_stderr_and_stats(folder_run, predict_files, capsys, caplog):
    run, _ = folder_run
    good = [str(predict_files[k]) for k in ("good", "rgba", "big", "deep")]
    with caplog.at_level(logging.INFO, logger="graphcnn"):  # the log's lines go to stderr (runtime.configure_logging)
        assert cli.main(["predict", str(run), *good, "--stats"]) == 0
    out, err = capsys.readouterr()
    assert len(out.strip().splitlines()) == 4
    stats = [line for line in err.splitlines() if "images/s" in line]
    err = caplog.text
    assert re.search(r"1 image file\(s\) have an alpha channel.*\n  .*2_rgba\.png", err)
    assert re.search(r"1 image file\(s\) are 16-bit PNGs.*\n  .*4_deep16\.png", err)
    assert "2 RGB image(s) will be converted to grayscale (model.channels=1)" in err
    assert re.search(r"resized to the model's 12x12 input: 400x300 \(1, e\.g\. .*3_big\.jpg\).*downscaled up to 33x",
                     err)
    assert len(stats) == 1 and re.search(r"4 image\(s\) in [\d.]+ s: [\d.]+ images/s \(decode wait [\d.]+ s, "
                                         r"forward pass [\d.]+ s", stats[0])
    assert re.search(r"overlapping the forward pass\); (float32|mixed_bfloat16); model restore", stats[0])


def test_predict_names_a_jpeg_whose_exif_rotation_it_ignores(folder_run, tmp_path, capsys, caplog):
    from PIL import Image

    run, _ = folder_run
    exif = Image.Exif()
    exif[0x0112] = 8
    Image.fromarray(np.full((12, 16, 3), 90, np.uint8)).save(tmp_path / "sideways.jpg", exif=exif)
    with caplog.at_level(logging.INFO, logger="graphcnn"):
        assert cli.main(["predict", str(run), str(tmp_path / "sideways.jpg")]) == 0
    assert re.search(r"1 image file\(s\) are JPEGs whose EXIF orientation .*\n  .*sideways\.jpg", caplog.text)


def test_a_run_trained_with_exif_transpose_predicts_and_exports_jpegs_upright(folder_run, tmp_path):
    """preprocessing.json's exif_transpose (data.exif_transpose) turns a JPEG upright by its EXIF
    orientation in predict and in the SavedModel's image_bytes signature, as training read it;
    a run without it (older runs: no key) reads the JPEG as stored."""
    import shutil

    import tensorflow as tf
    from PIL import Image

    from graphcnn.data.pipeline import PREPROCESSING_FILE
    from graphcnn.export import BYTES_INPUT, BYTES_SIGNATURE, export_saved_model
    from graphcnn.predict import Predictor

    run, _ = folder_run
    turned_run = tmp_path / "turned_run"
    shutil.copytree(run, turned_run)
    for folder in ("best", "checkpoints"):
        path = turned_run / folder / PREPROCESSING_FILE
        path.write_text(json.dumps({**json.loads(path.read_text()), "exif_transpose": True}))
    picture = np.zeros((24, 40, 3), np.uint8)
    picture[:, :12] = 255  # a bright band on the stored left: on top once turned
    tags = Image.Exif()
    tags[0x0112] = 6
    Image.fromarray(picture).save(tmp_path / "turned.jpg", exif=tags, quality=95)
    stored = tf.io.decode_jpeg((tmp_path / "turned.jpg").read_bytes(), channels=1).numpy()  # the run is gray
    probabilities = {}
    for name, root, pixels in (("stored", run, stored), ("upright", turned_run, np.rot90(stored, -1))):
        with Predictor(root) as p:
            expected = p.probabilities_for(p.preprocess_arrays(np.ascontiguousarray(pixels)[None]))
            (row,) = p.run_files([tmp_path / "turned.jpg"]).rows
        got = np.array([dict(row[1].top_k)[c] for c in p.class_names])
        np.testing.assert_allclose(got, expected[0], rtol=1e-5, atol=1e-6, err_msg=name)
        probabilities[name] = expected[0]
    assert not np.allclose(probabilities["stored"], probabilities["upright"], rtol=0, atol=1e-6)
    model = tf.saved_model.load(str(export_saved_model(turned_run, tmp_path / "saved" / "1")))
    served = model.signatures[BYTES_SIGNATURE](**{BYTES_INPUT: tf.constant([(tmp_path / "turned.jpg").read_bytes()])})
    np.testing.assert_allclose(served["probabilities"].numpy()[0], probabilities["upright"], rtol=1e-5, atol=1e-6)


def test_predict_names_a_jpeg_cut_short(folder_run, tmp_path, capsys, caplog):
    from conftest import cut_jpeg

    run, _ = folder_run
    picture = np.clip(np.random.default_rng(4).normal(60, 30, (40, 40, 3)), 0, 255).astype(np.uint8)
    files = [cut_jpeg(tmp_path / "cut.jpg", picture), cut_jpeg(tmp_path / "intact.jpg", picture, keep=1.0)]
    for names in ([files[0]], files):  # one file (decoded with its forward pass), several (batched)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="graphcnn"):
            assert cli.main(["predict", str(run), *names]) == 0
        (warning,) = [r.getMessage() for r in caplog.records if "mid-grey" in r.getMessage()]
        assert warning.startswith("1 image file(s) are JPEGs whose last 8 rows are all exactly mid-grey (128)")
        assert [line.strip() for line in warning.splitlines()[1:]] == [files[0]]


def test_predict_precision_choices_are_auto_and_the_registered_ones(folder_run, predict_files, capsys):
    from graphcnn.model.precision import PRECISIONS

    assert re.search(r"--precision \{(.*?)\}", subcommand_help("predict")).group(1).split(",") == ["auto", *PRECISIONS]
    run, _ = folder_run
    assert cli.main(["predict", str(run), str(predict_files["good"]), "--stats", "--precision", "float32"]) == 0
    assert "forward pass); float32; model restore" in capsys.readouterr().err


def test_predict_files_decodes_in_parallel_batches_in_input_order(folder_run, predict_files):
    from graphcnn.predict import Predictor

    run, _ = folder_run
    files = [predict_files[k] for k in ("good", "broken", "rgba", "big", "empty", "deep")] * 3
    with Predictor(run) as p:
        result = p.run_files(files, batch_size=4, split_timing=True)
        alone = [p.run_files([f]).rows[0] for f in files[:6]]
    assert [f for f, _, _ in result.rows] == [str(f) for f in files]
    assert len(result.predictions) == 12 and len(result.errors) == 6
    for (f, pred, err), (f1, pred1, err1) in zip(result.rows, alone * 3):  # batched = one by one
        assert f == f1 and err == err1
        if pred is not None:
            np.testing.assert_allclose(pred.probability, pred1.probability, rtol=1e-5)
    assert result.images[str(predict_files["big"])].width == 400 and result.decode_seconds > 0


def test_predict_reads_bmps_and_refuses_colour_table_ones(folder_run, tmp_path):
    """A grayscale model reads BMPs (the decoder refuses them one channel) and names a BMP with a
    colour table as unreadable (its decode would be palette indices), batched or alone."""
    from PIL import Image

    from graphcnn.predict import Predictor

    run, _ = folder_run
    rgb = RNG.integers(0, 255, (12, 12, 3), dtype=np.uint8)
    files = [tmp_path / "rgb.bmp", tmp_path / "gray.bmp", tmp_path / "palette.bmp"]
    Image.fromarray(rgb).save(files[0])
    Image.fromarray(rgb[..., 0]).save(files[1])
    Image.fromarray(rgb).convert("P").save(files[2])
    with Predictor(run) as p:
        for rows in (p.run_files(files, batch_size=2).rows, [p.run_files([f]).rows[0] for f in files]):
            assert [err is None for _, _, err in rows] == [True, True, False]
            assert rows[2][2].startswith("BMP with a colour table")


def test_a_damaged_checkpoint_or_preprocessing_file_named_directly_is_one_error_naming_it(folder_run, predict_files,
                                                                                         tmp_path, capsys):
    import shutil

    run, _ = folder_run
    best = tmp_path / "best"
    shutil.copytree(run / "best", best)
    index = next(best.glob("model.ckpt-*.index"))
    prefix, good = str(index)[: -len(".index")], str(predict_files["good"])
    index.write_bytes(b"junk")
    assert cli.main(["predict", prefix, good]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert f"checkpoint {prefix} cannot be restored" in line
    shutil.copy(run / "best" / index.name, index)
    for text, reason in (("{}", "no 'class_names'"), ("not json", "Expecting value")):
        (best / "preprocessing.json").write_text(text)
        assert cli.main(["predict", prefix, good]) == 2
        (line,) = error_lines(capsys.readouterr().err)
        assert f"{best / 'preprocessing.json'} is damaged ({reason}" in line


def test_predict_a_missing_path_a_quoted_glob_and_a_broken_link(folder_run, tmp_path, capsys):
    """A path that does not exist among good ones stopped the whole command (exit 2, nothing
    predicted), where an unreadable file is one row and exit 1; a glob the shell left quoted was
    such a path; a broken link's error named the path twice ("X: X; No such file or directory")."""
    run, _ = folder_run
    good = [write_image(tmp_path / "p" / f"g{i}.png", pattern(i)) for i in range(2)]
    os.symlink(tmp_path / "gone.png", tmp_path / "p" / "link.png")
    missing = tmp_path / "missing.png"
    assert cli.main(["predict", str(run), str(good[0]), str(missing), str(tmp_path / "p" / "link.png"),
                     "--format", "csv"]) == 1
    out, err = capsys.readouterr()
    rows = {r["file"]: r for r in csv.DictReader(io.StringIO(out))}
    assert rows[str(good[0])]["class"] and rows[str(missing)]["error"] == "no such file or folder"
    link_error = rows[str(tmp_path / "p" / "link.png")]["error"]
    assert link_error == f"a symbolic link to {tmp_path / 'gone.png'}, which does not exist"
    assert f"graphcnn: cannot read {missing}: no such file or folder" in err
    assert cli.main(["predict", str(run), str(tmp_path / "p" / "g*.png"), "--format", "json"]) == 0
    assert [r["file"] for r in json.loads(capsys.readouterr().out)] == [str(f) for f in good]
    assert cli.main(["predict", str(run), str(missing), str(tmp_path / "x*.png")]) == 2  # nothing there: no model load
    (line,) = error_lines(capsys.readouterr().err)
    assert line == f"graphcnn: error: {missing}: no such file or folder (nor 1 other path(s) given)"
    os.mkfifo(tmp_path / "pipe.png")  # named directly: refused, never read (a FIFO's read waits forever)
    assert cli.main(["predict", str(run), str(good[0]), str(tmp_path / "pipe.png")]) == 2
    assert error_lines(capsys.readouterr().err) == [
        f"graphcnn: error: {tmp_path / 'pipe.png'}: not a file or folder (a FIFO, socket or device)"]


def test_a_file_name_with_a_newline_is_one_line_of_predict_text(folder_run, tmp_path, capsys):
    """Text output is one line per file: a newline in a name split its line in two."""
    from graphcnn.terminal import printable

    run, _ = folder_run
    odd = write_image(tmp_path / "two\nlines.png", pattern(0))
    broken = tmp_path / "bad\x1b[31m.png"
    broken.write_bytes(b"not a png")
    assert cli.main(["predict", str(run), str(odd), str(broken)]) == 1
    out, err = capsys.readouterr()
    (line,) = out.splitlines()
    assert line.startswith(f"{tmp_path}/two\\nlines.png: ")
    assert f"graphcnn: cannot read {tmp_path}/bad\\x1b[31m.png: " in err and "\x1b" not in err
    assert printable("a\tb\r\x7f") == "a\\tb\\r\\x7f"


def test_a_folder_that_cannot_be_read_is_named_not_skipped(tmp_path, monkeypatch):
    """Path.rglob skipped a folder it could not list without a word (root reads every folder,
    so the refusal is the operating system's answer, made here)."""
    from graphcnn.predict import collect_image_files

    write_image(tmp_path / "p" / "ok.png", pattern(0))
    locked = tmp_path / "p" / "locked"
    locked.mkdir()
    scandir = os.scandir

    def refusing(path="."):
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    with pytest.raises(DataError, match=rf"^cannot read folder {locked}: Permission denied$"):
        collect_image_files([tmp_path / "p"])


def test_predict_reads_a_folder_as_training_does_and_any_file_name(folder_run, tmp_path, capsys):
    """Hidden entries skipped (macOS's ._x.jpg is no image), linked folders followed, and a
    file name that is not UTF-8 (Latin-1 bytes) predicted like any other."""
    run, _ = folder_run
    folder = tmp_path / "p"
    write_image(folder / "a.png", pattern(0))
    (folder / "._a.png").write_bytes(b"\0\5\26\7Mac OS X")
    write_image(folder / ".thumbnails" / "t.png", pattern(1))
    write_image(tmp_path / "elsewhere" / "linked.png", pattern(2))
    (folder / "link").symlink_to(tmp_path / "elsewhere")
    latin1 = os.fsdecode(bytes(folder) + b"/caf\xe9.png")
    write_image(Path(latin1), pattern(3))
    assert cli.main(["predict", str(run), str(folder), "--format", "json"]) == 0  # JSON escapes the odd byte
    rows = json.loads(capsys.readouterr().out)
    assert sorted(os.path.relpath(r["file"], folder) for r in rows) == sorted(
        ["a.png", os.path.join("link", "linked.png"), os.path.relpath(latin1, folder)])
    assert all(r["error"] is None and r["class"] in ("a", "b") for r in rows)
    (folder / "gone.png").symlink_to(tmp_path / "nowhere.png")  # a broken link: its own error row, exit 1
    assert cli.main(["predict", str(run), str(folder), "--format", "json"]) == 1
    rows = json.loads(capsys.readouterr().out)
    assert [r["error"] is not None for r in rows if r["file"].endswith("gone.png")] == [True] and len(rows) == 4


def test_export_explain_and_latest_through_the_command_line(folder_run, predict_files, tmp_path, monkeypatch,
                                                           capsys):
    """The commands as a user types them (test_export.py compares what they export with predict):
    export writes a SavedModel and a TFLite file, explain --class draws that class's map, and
    --latest reaches every command that restores a checkpoint."""
    from graphcnn import predict as P

    run, _ = folder_run
    good = str(predict_files["good"])
    assert cli.main(["export", str(run), "--out", str(tmp_path / "model" / "1")]) == 0
    assert (tmp_path / "model" / "1" / "saved_model.pb").exists() and "signatures" in capsys.readouterr().out
    assert cli.main(["export", str(run), "--format", "tflite", "--out", str(tmp_path / "model.tflite")]) == 0
    assert (tmp_path / "model.tflite").stat().st_size > 0
    assert cli.main(["explain", str(run), good, "--class", "b", "--out", str(tmp_path / "why")]) == 0
    (png,) = (tmp_path / "why").glob("*.png")
    assert png.name.startswith("1_good_b_")
    capsys.readouterr()
    broken, empty = str(predict_files["broken"]), str(predict_files["empty"])
    assert cli.main(["explain", str(run), broken, "--out", str(tmp_path / "why3")]) == 2  # was 1, no error line
    assert error_lines(capsys.readouterr().err) == ["graphcnn: error: the file could not be read (named above)"]
    assert cli.main(["explain", str(run), good, broken, empty, "--out", str(tmp_path / "why3")]) == 1
    assert error_lines(capsys.readouterr().err) == [
        "graphcnn: error: 2 of 3 files could not be read (each named above; the others are explained)"]

    chosen = []
    restore = P.Predictor.__init__

    def spy(self, checkpoint, prefer_best=True, *args, **kwargs):
        chosen.append(prefer_best)
        restore(self, checkpoint, prefer_best, *args, **kwargs)

    monkeypatch.setattr(P.Predictor, "__init__", spy)
    for argv in (["predict", str(run), good], ["evaluate", str(run)], ["explain", str(run), good, "--out",
                                                                      str(tmp_path / "why2")]):
        assert cli.main([*argv, "--latest"]) == 0, argv
    assert chosen == [False, False, False]


@pytest.mark.parametrize("mean_subtraction", [False, True])
def test_the_readmes_plain_tensorflow_snippet_runs_as_written(folder_run, tmp_path, capsys, monkeypatch,
                                                              tiny_config_file, mean_subtraction):
    """The README's restore-and-predict snippet, verbatim but for the run and the image (one of
    another size, so its resize runs): it prints the class graphcnn predict gives, and the same
    probability (with mean subtraction too: the snippet subtracts the run's mean image)."""
    import contextlib
    import re as regex

    run, data = folder_run
    if mean_subtraction:
        assert cli.main(["train", "--config", str(tiny_config_file), "--data", str(data), "--logdir",
                         str(tmp_path / "logs"), "--name", "mean", "--no-progress", "--set", "train.max_steps=6",
                         "--set", "data.mean_subtraction=true"]) == 0
        run = tmp_path / "logs" / "mean"
        assert (run / "best" / "pixel_mean.npy").is_file()
        capsys.readouterr()
    readme = (ROOT / "README.md").read_text()
    snippet = regex.search(r"Restore and predict with plain TensorFlow.*?```python\n(.*?)```", readme, regex.S)[1]
    write_image(tmp_path / "digit.png", RNG.integers(0, 255, (20, 17), dtype=np.uint8))
    monkeypatch.chdir(tmp_path)
    out, namespace = io.StringIO(), {}
    with contextlib.redirect_stdout(out):
        exec(snippet.replace("logs/<run>", str(run)), namespace)
    assert cli.main(["predict", str(run), str(tmp_path / "digit.png"), "--precision", "float32",
                     "--format", "json"]) == 0
    (expected,) = json.loads(capsys.readouterr().out)
    assert out.getvalue().strip() == expected["class"]
    assert float(namespace["probs"].max()) == pytest.approx(expected["probability"], abs=1e-6)  # the same input


def test_the_readmes_hook_example_runs_as_written(tmp_path, monkeypatch):
    """README, Extending: the SessionRunHook example, verbatim. Its fetch rides on every
    training step (three losses for three steps) and train() returns the test result."""
    import contextlib
    import re as regex
    import textwrap

    readme = (ROOT / "README.md").read_text()
    snippet = textwrap.dedent(regex.search(r"A test runs this:\n\n  ```python\n(.*?)  ```", readme, regex.S)[1])
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(snippet, {})
    lines = out.getvalue().splitlines()
    assert [line.split()[0] for line in lines] == ["loss"] * 3 + [lines[-1]]
    assert all(np.isfinite(float(line.split()[1])) for line in lines[:3]) and 0 <= float(lines[-1]) <= 1
    assert (tmp_path / "logs" / "hooked" / "results.json").is_file()


def test_a_logdir_or_out_that_is_a_file_is_bad_input(tmp_path, tiny_config_file, capsys):
    afile = tmp_path / "afile"
    afile.write_text("")
    assert cli.main(["train", "--config", str(tiny_config_file), "--logdir", str(afile), "--no-progress",
                     "--set", "train.max_steps=1"]) == 2
    assert error_lines(capsys.readouterr().err) == [f"graphcnn: error: {afile} is a file, not a folder"]
    assert cli.main(["data", "--out", str(afile / "x")]) == 2
    assert error_lines(capsys.readouterr().err) == [
        f"graphcnn: error: cannot write {afile / 'x'}: {afile} is a file, not a folder"]


def test_small_input_mistakes_are_bad_input(capsys, tmp_path):
    for argv, message in ((["predict", "run", "x.png", "--top-k", "0"], "predict: argument --top-k: must be at least "
                                                                        "1, got 0 (see graphcnn predict --help)"),
                          (["predict", "run", "x.png", "--batch-size", "0"], "predict: argument --batch-size: must be"),
                          (["filters", "run", "--delay-ms", "-5"], "filters: argument --delay-ms: must be at least 1"),
                          (["evaluate", "run", "--split", "bogus"], "evaluate: argument --split: invalid choice"),
                          (["bogus"], "argument command: invalid choice: 'bogus'"),
                          (["train", str(tmp_path)], f"unrecognized arguments: {tmp_path}; to train on {tmp_path}, "
                                                     f"give it as --data {tmp_path}")):
        with pytest.raises(SystemExit) as info:  # argparse's error as graphcnn's one line, exit 2
            cli.main(argv)
        err = capsys.readouterr().err
        assert info.value.code == 2 and err.splitlines() == [err.splitlines()[0]], argv
        assert err.startswith(f"graphcnn: error: {message}"), err
    assert cli.main(["train", "--exclude-scopes", "logits"]) == 2
    assert error_lines(capsys.readouterr().err) == [
        "graphcnn: error: --exclude-scopes leaves scopes out of --init-from's checkpoint: give --init-from"]
    assert cli.main(["train", "--next-stage", "--sweep", "train.epochs=1,2"]) == 2  # before the sweep trains
    assert error_lines(capsys.readouterr().err) == ["graphcnn: error: --next-stage continues a run: give --resume RUN"]
    (tmp_path / "folder").mkdir()
    assert cli.main(["augment-preview", "--set", "data.augment.rotation_range=15", "--out",
                     str(tmp_path / "folder")]) == 2
    assert "is a folder: give the PNG file to write" in error_lines(capsys.readouterr().err)[0]
    assert cli.main(["config", "--set", "preset=fashion"]) == 2  # --set would only rename it
    assert error_lines(capsys.readouterr().err)[0].startswith("graphcnn: error: preset: pick a preset with --preset")
    assert cli.main(["augment-preview", "--preset", "ct_scan"]) == 2
    assert error_lines(capsys.readouterr().err) == [
        "graphcnn: error: augmentation is off in this config: nothing to preview; set e.g. "
        "--set data.augment.rotation_range=15"]


# --------------------------------------------------------------------------- 11. data errors in one pass


def test_every_data_problem_in_one_error(tmp_path, tiny_config_file, capsys):
    data = make_folder(tmp_path / "data", {"a": 5, "b": 5})
    (data / "empty_class").mkdir()
    (data / "a" / "zero.png").write_bytes(b"")
    (data / "b" / "text.jpg").write_text("not a jpeg")
    with pytest.raises(DataError) as info:
        load_dataset(DataConfig(path=str(data)), 1)
    err = info.value
    assert len(err.errors) == 1 and "empty_class has no image files" in err.errors[0]
    assert any("2 image file(s) cannot be decoded" in w for w in err.warnings)
    message = str(err)
    for name in ("empty_class", "zero.png", "text.jpg", f"graphcnn data {data}"):
        assert name in message

    logs = tmp_path / "logs"
    argv = ["train", "--config", str(tiny_config_file), "--data", str(data), "--logdir", str(logs), "--name", "x"]
    assert cli.main(argv) == 2
    stderr = capsys.readouterr().err
    assert len(error_lines(stderr)) == 1
    assert "empty_class" in stderr and "zero.png: empty file (0 bytes)" in stderr and "text.jpg" in stderr
    assert stderr.count("zero.png") == 1  # the report once, not its warnings logged again
    assert not logs.exists() or not any(logs.iterdir())  # a failed start leaves nothing behind


# --------------------------------------------------------------------------- 12. small splits


def test_small_splits_are_warned_about_once_with_how_to_change_them(tmp_path, caplog):
    data = make_folder(tmp_path / "data", {"a": 100, "b": 100})
    with caplog.at_level("WARNING", "graphcnn.data"):
        ds = load_dataset(DataConfig(path=str(data)), 1)
    small = [r.getMessage() for r in caplog.records if "small splits" in r.getMessage()]
    assert len(small) == 1 and small[0] in ds.warnings
    assert small[0].startswith("small splits: validation 20 images, test 20 images: ")
    assert "+/-21.9 points" in small[0] and "385 images" in small[0]
    assert "--set data.validation_fraction=... (now 0.1)" in small[0] and "data.test_fraction" in small[0]
    # large enough: the embedded digits (500 + 500)
    assert not any("small splits" in w for w in load_dataset(DataConfig(), 1).warnings)


# --------------------------------------------------------------------------- 13. tutorial scripts


def test_tutorial_script_takes_the_options_of_graphcnn_train(tmp_path):
    result = run_cli("--set", "train.epochs=1", "--set", "train.max_steps=2", "--name", "x", "--no-progress",
                     "--logdir", str(tmp_path / "logs"), script=str(ROOT / "scripts" / "digits_tutorial.py"))
    assert result.returncode == 0, result.stderr
    assert "demonstrating digits on the embedded digits" in result.stdout
    assert f"run directory: {tmp_path / 'logs' / 'x'}" in result.stdout
    assert json.loads((tmp_path / "logs" / "x" / "config.json").read_text())["train"]["early_stopping"][
        "patience"] == 3  # the script's own option, under the user's
    assert "deprecated" not in result.stderr and "oneDNN" not in result.stderr
    help_text = run_cli("--help", script=str(ROOT / "scripts" / "ct_scan_classifier.py")).stdout
    for option in ("DATA_DIR", "--set", "--name", "--no-progress", "--resume", "--logdir", "--verbose"):
        assert option in help_text


# --------------------------------------------------------------------------- graphcnn data


def test_data_command_reports_writes_and_exits_0(tmp_path, capsys):
    data = make_folder(tmp_path / "data", {"cats": 16, "dogs": 4})
    write_image(data / "dogs" / "rgba.png", RNG.integers(0, 255, (12, 12, 4), dtype=np.uint8))
    (data / "cats" / "broken.jpg").write_bytes(b"garbage")
    out = tmp_path / "check"
    assert cli.main(["data", str(data), "--out", str(out), "--set", "model.input_height=12",
                     "--set", "model.input_width=12", "--per-class", "4"]) == 0
    stdout = capsys.readouterr().out
    assert f"data: folder {data}" in stdout and "source: folder (detected from the path)" in stdout
    assert re.search(r"cats\s+16\s+", stdout) and re.search(r"dogs\s+5\s+", stdout)
    assert "imbalanced: the largest class (cats, 16 images) has 3.2x the images of the smallest (dogs, 5)" in stdout
    assert "12x12: 21" in stdout and "gray: 20" in stdout and "RGBA: 1" in stdout
    assert "broken.jpg: Unknown image file format" in stdout and "rgba.png" in stdout
    assert "splits: train 17, validation 2, test 2" in stdout and "small splits" in stdout
    assert "verdict: the data can train" in stdout
    report = (out / "data_report.txt").read_text()
    assert "verdict: the data can train" in report and "broken.jpg" in report
    grid = np.asarray(Image.open(out / "samples.png"))
    assert grid.ndim == 3 and grid.shape[1] >= 4 * 96 and grid.shape[0] >= 2 * 96  # two rows of 4 tiles


def test_data_report_counts_its_warnings_and_lists_every_converted_file_under_its_warning(tmp_path, capsys):
    """The full list of RGB files converted to gray was a bullet of its own, not counted by
    "warnings: N", repeating the conversion warning above it."""
    data = make_folder(tmp_path / "data", {"cats": 8, "dogs": 8})
    for i in range(7):
        write_image(data / "dogs" / f"rgb{i}.png", RNG.integers(0, 255, (12, 12, 3), dtype=np.uint8))
    out = tmp_path / "check"
    assert cli.main(["data", str(data), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    for text in (stdout, (out / "data_report.txt").read_text()):
        section = text.split("\nwarnings: ")[1].split("\n\n")[0]
        bullets = [line for line in section.splitlines() if line.startswith("- ")]
        assert int(section.split()[0]) == len(bullets) == 2, section  # the conversion, the small splits
        assert bullets[0].startswith("- 7 RGB image(s) will be converted to grayscale")
    assert "\n  all 7 are listed in data_report.txt\n" in stdout
    listed = (out / "data_report.txt").read_text().split("  all 7:\n")[1].splitlines()[:7]
    assert [Path(line.strip()).name for line in listed] == [f"rgb{i}.png" for i in range(7)]


def test_data_and_train_report_a_bad_file_whose_name_is_not_utf8(tmp_path, monkeypatch):
    """The report names it by its own bytes (its writer refused the name: exit 2, no report)."""
    data = make_folder(tmp_path / "data", {"cats": 8, "dogs": 8})
    Path(os.fsdecode(bytes(data / "cats") + b"/bad\xe9.jpg")).write_bytes(b"garbage")  # a Latin-1 name
    stdout = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(stdout, encoding="utf-8", errors="surrogateescape"))
    assert cli.main(["data", str(data), "--out", str(tmp_path / "check")]) == 0
    assert cli.main(["train", "--data", str(data), "--logdir", str(tmp_path / "logs"), "--name", "r", "--no-progress",
                     "--set", "train.max_steps=1", "--preset", "digits"]) == 0
    for report in (tmp_path / "check" / "data_report.txt", tmp_path / "logs" / "r" / "data_report.txt"):
        assert b"bad\xe9.jpg: Unknown image file format" in report.read_bytes()


def test_data_command_exits_2_after_writing_the_report(tmp_path, capsys):
    data = make_folder(tmp_path / "data", {"a": 4, "b": 4})
    (data / "c").mkdir()
    out = tmp_path / "check"
    out.mkdir()
    (out / "samples.png").write_bytes(b"an old grid")
    assert cli.main(["data", str(data), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    lines = error_lines(captured.err)
    assert len(lines) == 1 and f"every problem is listed in {out / 'data_report.txt'}" in lines[0]
    assert len(captured.err.strip().splitlines()) == 1 or "hidden" in captured.err
    report = (out / "data_report.txt").read_text()
    assert "verdict: the data cannot train: 1 problem(s)" in report and "has no image files" in report
    assert not (out / "samples.png").exists()
    assert cli.main(["data", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "does not exist" in (out / "data_report.txt").read_text()


def test_data_command_on_the_embedded_digits(tmp_path, capsys):
    assert cli.main(["data", "--out", str(tmp_path)]) == 0
    stdout = capsys.readouterr().out
    assert "images: 5000 in memory, 20x20 gray (uint8 arrays)" in stdout
    assert "splits: train 4000, validation 500, test 500" in stdout and "small splits" not in stdout
    assert np.asarray(Image.open(tmp_path / "samples.png")).shape[0] > 10 * 96


# --------------------------------------------------------------------------- augment-preview


def test_augment_preview_is_large_labelled_and_has_only_its_options(tmp_path, capsys):
    out = tmp_path / "preview.png"
    argv = ["augment-preview", "--set", "data.augment.rotation_range=15", "--out", str(out), "--rows", "3",
            "--cols", "4"]
    assert cli.main(argv) == 0
    image = np.asarray(Image.open(out))
    assert image.shape[0] >= 3 * 96 + 16 and image.shape[1] >= 4 * 96  # 28 px digits shown at 112 px
    # each row's class named left of it (the rows were unlabelled): ink in a white column, row by row
    from graphcnn.data.preview import preview_image

    tiles = np.full((3 * 4, 28, 28, 1), 200, np.uint8)
    plain, named = preview_image(tiles, 4), preview_image(tiles, 4, ["0", "1", "a_longer_class"])
    left = named[:, :named.shape[1] - plain.shape[1]].mean(axis=2)
    header, row = plain.shape[0] - 3 * 116, 116  # 112 px tiles and 4 px gaps under the column headers
    assert left.shape[1] > 20 and all((left[header + r * row:header + (r + 1) * row] < 128).any() for r in range(3))
    assert image.shape[1] > plain.shape[1]  # the command's preview has them
    help_text = subcommand_help("augment-preview")
    assert "--init-from" not in help_text and "--exclude-scopes" not in help_text
    assert "--trainable-scopes" not in help_text and "original" in help_text
    # run again: the earlier preview is replaced; a file of the user's is not (it became a PNG)
    assert cli.main(argv[:-4] + ["--rows", "1", "--cols", "2"]) == 0
    assert np.asarray(Image.open(out)).shape[0] < image.shape[0]
    essay = tmp_path / "essay.txt"
    essay.write_text("important")
    capsys.readouterr()
    assert cli.main(["augment-preview", "--set", "data.augment.rotation_range=15", "--out", str(essay)]) == 2
    assert "the preview is a PNG file; give a name ending in .png" in capsys.readouterr().err
    notes = tmp_path / "notes.png"
    notes.write_text("important")
    assert cli.main(["augment-preview", "--set", "data.augment.rotation_range=15", "--out", str(notes)]) == 2
    assert f"--out {notes} exists and is not a PNG image: not overwritten" in capsys.readouterr().err
    assert essay.read_text() == notes.read_text() == "important"


def test_next_stage_needs_resume_and_keeps_model_and_data(tmp_path, capsys):
    assert cli.main(["train", "--next-stage", "--set", "train.epochs=1"]) == 2
    assert "--next-stage continues a run: give --resume RUN" in capsys.readouterr().err
    run = tmp_path / "run"
    run.mkdir()
    from graphcnn.presets import get_preset
    get_preset("digits").save(run / "config.json")
    assert cli.main(["train", "--resume", str(run), "--next-stage", "--preset", "fashion"]) == 2
    assert "--next-stage keeps the run's model and data" in capsys.readouterr().err
    # nor through --set, nor the weights it started from (a stage goes on from the run's checkpoint)
    assert cli.main(["train", "--resume", str(run), "--next-stage", "--set", "data.path=/elsewhere",
                     "--set", "model.initializer=glorot"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("graphcnn: error: --next-stage keeps the run's model, data and initial weights: "
                          "model.initializer, data.path cannot change"), err
    assert cli.main(["train", "--resume", str(run), "--next-stage", "--init-from", str(run)]) == 2
    assert "drop --init-from/--exclude-scopes" in capsys.readouterr().err
    from graphcnn.cli import _next_stage_config
    from graphcnn.config import apply_overrides
    last = get_preset("digits")
    changed = apply_overrides(last, ["data.augment.rotation_range=10", "data.cache=none", "train.learning_rate=1e-4",
                                     "model.test_time_flip=true"])
    assert _next_stage_config(last, changed) is changed  # how it trains and reads, not what
