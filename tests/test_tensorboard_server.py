"""A real TensorBoard against a tiny run's logdir: what its HTTP API serves.

Starts ``python -m tensorboard.main`` on a free local port (no network beyond 127.0.0.1),
polls until it answers (bounded), checks runs, scalars, histograms, every image snapshot,
one PNG, the graph's scopes, run metadata and the hparams/projector plugins, and always
stops the server.
"""

import dataclasses
import json
import time
import urllib.parse
import urllib.request

import pytest

from conftest import synthetic_dataset, tiny_config
from graphcnn.config import EarlyStoppingConfig
from graphcnn.tensorboard_cli import start_tensorboard, stop, wait_for_tensorboard
from graphcnn.train.run_dir import RunDir
from graphcnn.train.trainer import train

FILTER_STEPS = [1, 3, 6, 9, 12, 15, 18, 21, 24, 27]  # filters_every=3 over 27 steps (and step 1)
FEATURE_MAP_STEPS = [1, 5, 10, 15, 20, 25]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    cfg = tiny_config(epochs=3, early_stopping=EarlyStoppingConfig(restore_best=False))
    cfg = dataclasses.replace(cfg, log=dataclasses.replace(
        cfg.log, gradients_every=3, activations_every=3, feature_maps_every=5, trace_every=10, projector_images=12))
    run = RunDir.create(tmp_path_factory.mktemp("tb"), "tiny")
    train(cfg, run, progress=False, dataset=synthetic_dataset())
    log_file = open(run.root.parent / "tensorboard.log", "wb")
    process, url = start_tensorboard(run.root, samples="images=1000", log_file=log_file)
    try:
        wait_for_tensorboard(url, process, timeout=60)
        yield url
    finally:
        stop(process)
        log_file.close()
        assert process.poll() is not None


def get(url, path):
    with urllib.request.urlopen(url + path, timeout=30) as r:
        return r.read()


def get_json(url, path):
    return json.loads(get(url, path))


def poll(fn, timeout=30.0):
    """TensorBoard loads event files in the background: retry until ``fn`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = fn()
            if value:
                return value
        except (AssertionError, KeyError, OSError):
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout} s: {fn}")
        time.sleep(0.5)


def q(**params):
    return urllib.parse.urlencode(params)


def test_scalars_both_runs_with_every_point(server):
    tags = poll(lambda: (t := get_json(server, "/data/plugin/scalars/tags")) and
                {"train", "validation"} <= set(t) and "test_accuracy" in t["validation"] and t)
    assert {"loss", "accuracy", "learning_rate", "images_per_second"} <= set(tags["train"])
    assert {f"sparsity/{layer}" for layer in ("conv1_1", "pool1", "conv2_1", "pool2", "fc1")} <= set(tags["train"])
    assert {"loss", "accuracy"} <= set(tags["validation"])
    points = get_json(server, "/data/plugin/scalars/scalars?" + q(run="train", tag="loss"))
    assert [p[1] for p in points] == list(range(2, 28, 2))
    points = get_json(server, "/data/plugin/scalars/scalars?" + q(run="validation", tag="accuracy"))
    assert [p[1] for p in points] == [9, 18, 27]


def test_histograms(server):
    tags = get_json(server, "/data/plugin/histograms/tags")["train"]
    assert {"conv1_1/weights", "gradients/conv1_1/weights", "gradients/fc1/biases", "activations/conv1_1",
            "activations/logits"} <= set(tags)
    values = get_json(server, "/data/plugin/histograms/histograms?" + q(run="train", tag="gradients/conv1_1/weights"))
    assert [v[1] for v in values] == FILTER_STEPS


def test_every_image_snapshot_and_a_png(server):
    tags = get_json(server, "/data/plugin/images/tags")
    assert {"filters/conv1_1", "filters/conv2_1", "feature_maps/conv1_1", "feature_maps/pool2"} <= set(tags["train"])
    assert {"confusion_matrix"} <= set(tags["validation"])
    for tag, expected in (("filters/conv1_1", FILTER_STEPS), ("filters/conv2_1", FILTER_STEPS),
                          ("feature_maps/conv1_1", FEATURE_MAP_STEPS), ("feature_maps/pool1", FEATURE_MAP_STEPS),
                          ("feature_maps/conv2_1", FEATURE_MAP_STEPS), ("feature_maps/pool2", FEATURE_MAP_STEPS)):
        images = get_json(server, "/data/plugin/images/images?" + q(run="train", tag=tag))
        assert [i["step"] for i in images] == expected, tag
    confusion = get_json(server, "/data/plugin/images/images?" + q(run="validation", tag="confusion_matrix"))
    assert [i["step"] for i in confusion] == [9, 18, 27]
    png = get(server, "/data/plugin/images/individualImage?" + images[-1]["query"])
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_graph_scopes_and_run_metadata(server):
    graph = get(server, "/data/plugin/graphs/graph?" + q(run="train", conversions="false")).decode()
    for scope in ("input", "conv1_1", "output", "cross_entropy", "train", "summaries"):
        assert f'name: "{scope}/' in graph, scope
    info = get_json(server, "/data/plugin/graphs/info")
    assert info["train"]["run_graph"] is True
    assert {"step10", "step20"} <= set(info["train"]["tags"]) and info["train"]["tags"]["step10"]["profile"]


def test_text_pr_curves_custom_scalars(server):
    text_tags = get_json(server, "/data/plugin/text/tags")
    assert {"confusion_matrix_text", "misclassified_text"} <= set(text_tags["validation"])
    pr_tags = get_json(server, "/data/plugin/pr_curves/tags")
    assert {"pr_curves/c0", "pr_curves/c1", "pr_curves/c2"} <= set(pr_tags["validation"])
    layout = get_json(server, "/data/plugin/custom_scalars/layout")
    assert layout["category"][0]["chart"][0]["multiline"]["tag"] == ["^loss$"]


def test_hparams_and_projector_active(server):
    def active():
        listing = get_json(server, "/data/plugins_listing")
        return listing["hparams"]["enabled"] and listing["projector"]["enabled"] and listing

    listing = poll(active, timeout=30)
    for plugin in ("scalars", "images", "histograms", "graphs", "text", "pr_curves", "custom_scalars"):
        assert listing[plugin]["enabled"], plugin
    request = urllib.request.Request(server + "/data/plugin/hparams/experiment", data=b'{"experimentName": ""}',
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as r:
        experiment = json.loads(r.read())
    names = {h["name"] for h in experiment["hparamInfos"]}
    assert {"learning_rate", "batch_size", "optimizer", "epochs", "keep_rates.fc", "preset"} <= names
    assert "projector" in get_json(server, "/data/runs")
