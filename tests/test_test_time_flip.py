"""model.test_time_flip: validation, test, predict, evaluate and export average each image's
probabilities with its mirror image's; Grad-CAM and training stay on the image alone."""

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import synthetic_dataset, tiny_config
from graphcnn.config import EarlyStoppingConfig
from graphcnn.data.pipeline import PREPROCESSING_FILE, Preprocessing
from graphcnn.evaluate import evaluate_run
from graphcnn.explain import Explainer
from graphcnn.export import UINT8_INPUT, UINT8_SIGNATURE, export_saved_model
from graphcnn.predict import Predictor
from graphcnn.presets import get_preset
from graphcnn.run_dir import RunDir
from graphcnn.train.trainer import train


@pytest.fixture(scope="module")
def flipped_run(tmp_path_factory):
    # the synthetic classes are corner squares: the mirror image of class 0 looks like class 1, so
    # the averaged probabilities differ clearly from the plain ones
    cfg = tiny_config(epochs=3, precision="float32", early_stopping=EarlyStoppingConfig(restore_best=False))
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, test_time_flip=True))
    run = RunDir.create(tmp_path_factory.mktemp("logs"), "flip")
    dataset = synthetic_dataset()
    result = train(cfg, run, progress=False, dataset=dataset)
    return run, result, dataset


def _plain_and_mirrored(run, images):
    with Predictor(run.root, test_time_flip=False) as p:
        x = p.preprocess_arrays(images)
        return p.probabilities_for(x), p.probabilities_for(x[:, :, ::-1])


def test_predictor_averages_the_image_and_its_mirror_image(flipped_run):
    run, _, dataset = flipped_run
    assert json.loads((run.best / PREPROCESSING_FILE).read_text())["test_time_flip"] is True
    plain, mirrored = _plain_and_mirrored(run, dataset.test.images)
    assert not np.allclose(plain, mirrored, atol=1e-3)
    with Predictor(run.root) as p:
        assert p.test_time_flip
        averaged = p.probabilities_for(p.preprocess_arrays(dataset.test.images))
    np.testing.assert_allclose(averaged, (plain + mirrored) / 2, rtol=1e-5, atol=1e-6)


def test_the_runs_own_test_evaluation_agrees_with_predict(flipped_run):
    run, result, dataset = flipped_run
    plain, mirrored = _plain_and_mirrored(run, dataset.test.images)
    expected = (plain + mirrored) / 2
    np.testing.assert_allclose(result.test.probabilities, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(result.test.predictions, expected.argmax(axis=1))
    accuracy = float(np.mean(expected.argmax(axis=1) == dataset.test.labels))
    assert result.test.accuracy == pytest.approx(accuracy)
    assert json.loads(run.results.read_text())["test_accuracy"] == pytest.approx(accuracy)


def test_evaluate_on_a_folder_averages_too(flipped_run, tmp_path):
    run, _, dataset = flipped_run
    for i, (image, label) in enumerate(zip(dataset.test.images, dataset.test.labels)):
        folder = tmp_path / dataset.class_names[label]
        folder.mkdir(exist_ok=True)
        Image.fromarray(image[..., 0]).save(folder / f"{i}.png")
    plain, mirrored = _plain_and_mirrored(run, dataset.test.images)
    metrics = evaluate_run(run.root, data_path=str(tmp_path))
    assert metrics.count == len(dataset.test)
    expected = float(np.mean(((plain + mirrored) / 2).argmax(axis=1) == dataset.test.labels))
    # the mirror images of these classes look like other classes: averaging costs accuracy here,
    # so the accuracy alone tells whether evaluate averaged
    assert expected != pytest.approx(float(np.mean(plain.argmax(axis=1) == dataset.test.labels)))
    assert metrics.accuracy == pytest.approx(expected)
    assert "mirror image" in metrics.images


def test_export_and_grad_cam(flipped_run, tmp_path):
    run, _, dataset = flipped_run
    images = dataset.test.images[:6]
    plain, mirrored = _plain_and_mirrored(run, images)
    saved = export_saved_model(run.root, tmp_path / "saved" / "1")
    model = tf.saved_model.load(str(saved))
    out = model.signatures[UINT8_SIGNATURE](**{UINT8_INPUT: tf.constant(images)})
    np.testing.assert_allclose(out["probabilities"].numpy(), (plain + mirrored) / 2, rtol=1e-5, atol=1e-6)
    with Explainer(run.root) as explainer:  # one forward pass per image: what Grad-CAM explains
        assert not explainer.test_time_flip
        _, probs, _ = explainer.gradcam(explainer.preprocess_arrays(images))
    np.testing.assert_allclose(probs, plain, rtol=1e-5, atol=1e-6)


def test_older_runs_and_presets(tmp_path):
    Preprocessing(12, 12, 1, ("a", "b")).save(tmp_path, None)
    data = json.loads((tmp_path / PREPROCESSING_FILE).read_text())
    del data["test_time_flip"]  # preprocessing.json of a run trained before the key
    (tmp_path / PREPROCESSING_FILE).write_text(json.dumps(data))
    assert Preprocessing.load(tmp_path)[0].test_time_flip is False
    assert get_preset("fashion_vgg").model.test_time_flip
    assert not get_preset("digits").model.test_time_flip
