"""A real TensorBoard against tiny runs: what its HTTP API serves, under both event loaders.

Starts TensorBoard on free local ports (no network beyond 127.0.0.1) with the Rust data
server (``--load_fast=true``, what ``graphcnn tensorboard`` uses) and with the Python loader
(``--load_fast=false``), polls until it answers (bounded), checks runs, scalars, histograms,
every image snapshot, one PNG, the graph's scopes, run metadata, the hparams metric values
(opened on the run, and on the folder holding two runs), the projector and custom scalars,
and always stops the server. The last test runs ``graphcnn tensorboard`` itself: the page is
complete when it prints the address, and SIGTERM leaves no TensorBoard behind.
"""

import contextlib
import dataclasses
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import synthetic_dataset, tiny_config
from graphcnn.config import EarlyStoppingConfig
from graphcnn.tensorboard.events import read_scalars
from graphcnn.tensorboard.launcher import free_port, start_tensorboard, stop, wait_for_tensorboard
from graphcnn.run_dir import RunDir
from graphcnn.train.trainer import train

pytestmark = pytest.mark.slow  # starts TensorBoard servers

REPO = Path(__file__).resolve().parent.parent
FILTER_STEPS = [1, 3, 6, 9, 12, 15, 18, 21, 24, 27]  # filters_every=3 over 27 steps (and step 1)
FEATURE_MAP_STEPS = [1, 5, 10, 15, 20, 25, 27]  # and the last step
LOADERS = {"rust": "true", "python": "false"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A folder holding two runs: ``tiny`` (every view) and ``other`` (1 epoch, another learning rate)."""
    parent = tmp_path_factory.mktemp("tb")
    cfg = tiny_config(epochs=3, early_stopping=EarlyStoppingConfig(restore_best=False))
    cfg = dataclasses.replace(cfg, log=dataclasses.replace(
        cfg.log, gradients_every=3, activations_every=3, feature_maps_every=5, trace_every=10, projector_images=12))
    run = RunDir.create(parent, "tiny")
    train(cfg, run, progress=False, dataset=synthetic_dataset())
    other_cfg = tiny_config(epochs=1, learning_rate=0.003, early_stopping=EarlyStoppingConfig(restore_best=False))
    other = RunDir.create(parent, "other")
    train(other_cfg, other, progress=False, dataset=synthetic_dataset())
    return parent, run, other


@contextlib.contextmanager
def serving(logdir, load_fast, log_path):
    with open(log_path, "wb") as log_file:
        process, url = start_tensorboard(logdir, samples="images=1000", log_file=log_file, load_fast=load_fast)
        try:
            wait_for_tensorboard(url, process, timeout=90)
            yield url
        finally:
            stop(process)
            assert process.poll() is not None


@pytest.fixture(scope="module", params=list(LOADERS))
def server(request, runs):
    """TensorBoard opened on the run itself (what ``graphcnn train`` says to do)."""
    parent, run, _ = runs
    with serving(run.root, LOADERS[request.param], parent / f"tensorboard-{request.param}.log") as url:
        yield url


def get(url, path):
    with urllib.request.urlopen(url + path, timeout=30) as r:
        return r.read()


def get_json(url, path):
    return json.loads(get(url, path))


def post_json(url, path, body):
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.loads(r.read())


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


def session_groups(url):
    """The HParams table as the dashboard asks for it: every session, metrics included."""
    return post_json(url, "/data/plugin/hparams/session_groups", {
        "experimentName": "", "startIndex": 0, "sliceSize": 100, "colParams": [],
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]})


def final_metrics(run):
    scalars = read_scalars(run.validation_logs)
    return {tag: scalars[tag][-1][1] for tag in ("accuracy", "loss", "test_accuracy")}


def metric_values(session):
    return {m["name"]["tag"]: m["value"] for m in session.get("metricValues", []) if m["name"]["group"] == ""}


def test_scalars_both_runs_with_every_point(server):
    tags = poll(lambda: (t := get_json(server, "/data/plugin/scalars/tags")) and
                {"train", "validation"} <= set(t) and "test_accuracy" in t["validation"] and t)
    assert {"loss", "accuracy", "learning_rate", "images_per_second"} <= set(tags["train"])
    assert {f"sparsity/{layer}" for layer in ("conv1_1", "pool1", "conv2_1", "pool2", "fc1")} <= set(tags["train"])
    assert {"loss", "accuracy"} <= set(tags["validation"])
    points = get_json(server, "/data/plugin/scalars/scalars?" + q(run="train", tag="loss"))
    assert [p[1] for p in points] == [*range(2, 28, 2), 27]  # and the last step
    points = get_json(server, "/data/plugin/scalars/scalars?" + q(run="validation", tag="accuracy"))
    assert [p[1] for p in points] == [9, 18, 27]


def test_the_run_list_is_exactly_train_and_validation(server):
    assert poll(lambda: get_json(server, "/data/runs")) == ["train", "validation"]


def test_histograms(server):
    tags = poll(lambda: get_json(server, "/data/plugin/histograms/tags"))["train"]
    assert {"conv1_1/weights", "gradients/conv1_1/weights", "gradients/fc1/biases", "activations/conv1_1",
            "activations/logits"} <= set(tags)
    values = get_json(server, "/data/plugin/histograms/histograms?" + q(run="train", tag="gradients/conv1_1/weights"))
    assert [v[1] for v in values] == FILTER_STEPS


def test_every_image_snapshot_and_a_png(server):
    tags = poll(lambda: get_json(server, "/data/plugin/images/tags"))
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
    graph = poll(lambda: get(server, "/data/plugin/graphs/graph?" + q(run="train", conversions="false"))).decode()
    for scope in ("input", "conv1_1", "output", "cross_entropy", "train", "summaries"):
        assert f'name: "{scope}/' in graph, scope
    info = get_json(server, "/data/plugin/graphs/info")
    assert info["train"]["run_graph"] is True
    assert {"step10", "step20"} <= set(info["train"]["tags"]) and info["train"]["tags"]["step10"]["profile"]


def test_text_pr_curves_custom_scalars(server):
    text_tags = poll(lambda: get_json(server, "/data/plugin/text/tags"))
    assert {"confusion_matrix_text", "misclassified_text"} <= set(text_tags["validation"])
    pr_tags = get_json(server, "/data/plugin/pr_curves/tags")
    assert {"pr_curves/c0", "pr_curves/c1", "pr_curves/c2"} <= set(pr_tags["validation"])
    layout = poll(lambda: get_json(server, "/data/plugin/custom_scalars/layout"))
    assert layout["category"][0]["chart"][0]["multiline"]["tag"] == ["^loss$"]


def test_hparams_metric_values_when_the_run_is_opened(server, runs):
    _, run, _ = runs
    experiment = poll(lambda: (e := post_json(server, "/data/plugin/hparams/experiment", {"experimentName": ""}))
                      and e.get("metricInfos") and e)
    names = {h["name"] for h in experiment["hparamInfos"]}
    assert {"learning_rate", "batch_size", "optimizer", "epochs", "keep_rates.fc", "preset"} <= names
    assert [(m["name"]["group"], m["name"]["tag"]) for m in experiment["metricInfos"]] == [
        ("", "accuracy"), ("", "loss"), ("", "test_accuracy")]  # the validation run's scalars
    groups = poll(lambda: (g := session_groups(server)["sessionGroups"]) and g[0]["sessions"][0].get("metricValues")
                  and g)
    assert [g["name"] for g in groups] == ["tiny"]  # the trial: the run's folder name
    assert [s["name"] for s in groups[0]["sessions"]] == ["validation"]
    assert metric_values(groups[0]["sessions"][0]) == pytest.approx(final_metrics(run))
    assert groups[0]["sessions"][0]["status"] == "STATUS_SUCCESS"  # the session's end is recorded


@pytest.mark.parametrize("loader", list(LOADERS))
def test_hparams_metric_values_in_a_folder_of_runs(runs, loader):
    parent, run, other = runs
    with serving(parent, LOADERS[loader], parent / f"tensorboard-parent-{loader}.log") as url:
        assert sorted(poll(lambda: len(get_json(url, "/data/runs")) == 4 and get_json(url, "/data/runs"))) == [
            "other/train", "other/validation", "tiny/train", "tiny/validation"]
        groups = poll(lambda: (g := session_groups(url)["sessionGroups"]) and len(g) == 2
                      and all(len(metric_values(s)) == 3 for x in g for s in x["sessions"]) and g)
        by_name = {g["name"]: g["sessions"] for g in groups}
        assert [s["name"] for s in by_name["tiny"]] == ["tiny/validation"]
        assert [s["name"] for s in by_name["other"]] == ["other/validation"]
        assert metric_values(by_name["tiny"][0]) == pytest.approx(final_metrics(run))
        assert metric_values(by_name["other"][0]) == pytest.approx(final_metrics(other))
        hparams = {g["name"]: g["hparams"]["learning_rate"] for g in groups}
        assert hparams == {"tiny": pytest.approx(0.01), "other": pytest.approx(0.003)}
        # what differs between the runs comes first: the columns the dashboard shows
        infos = post_json(url, "/data/plugin/hparams/experiment", {"experimentName": ""})["hparamInfos"]
        assert [h["name"] for h in infos if h.get("differs")] == ["epochs", "learning_rate"]
        assert [h["name"] for h in infos[:2]] == ["epochs", "learning_rate"]
        assert sorted(get_json(url, "/data/plugin/projector/runs")) == ["other/train", "tiny/train"]


def test_projector_of_the_train_run(server):
    listing = poll(lambda: (x := get_json(server, "/data/plugins_listing")) and x["projector"]["enabled"] and x)
    for plugin in ("scalars", "images", "histograms", "graphs", "text", "pr_curves", "custom_scalars", "hparams",
                   "timeseries"):
        assert listing[plugin]["enabled"], plugin
    assert get_json(server, "/data/plugin/projector/runs") == ["train"]
    info = get_json(server, "/data/plugin/projector/info?" + q(run="train"))
    (embedding,) = info["embeddings"]
    assert embedding["tensorName"] == "penultimate" and embedding["tensorShape"] == [12, 16]
    tensor = get(server, "/data/plugin/projector/tensor?" + q(run="train", name="penultimate"))
    assert len(tensor) == 12 * 16 * 4  # float32
    metadata = get(server, "/data/plugin/projector/metadata?" + q(run="train", name="penultimate")).decode()
    assert metadata.splitlines()[0] == "label\tpredicted\tcorrect" and len(metadata.splitlines()) == 13
    sprite = get(server, "/data/plugin/projector/sprite_image?" + q(run="train", name="penultimate"))
    assert sprite.startswith(b"\x89PNG")


# ------------------------------------------------------------------- graphcnn tensorboard itself


def descendants(pid):
    """Every live process below ``pid`` (from /proc)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parents[int(entry)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def port_free(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_launcher_prints_the_address_once_warm_and_sigterm_stops_tensorboard(runs):
    _, run, _ = runs
    port = free_port()
    command = [sys.executable, "-m", "graphcnn.cli", "tensorboard", str(run.root), "--port", str(port)]
    launcher = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in launcher.stdout], daemon=True).start()
    children = set()
    try:
        line = lines.get(timeout=120)
        assert f"http://127.0.0.1:{port}/" in line, line
        url = f"http://127.0.0.1:{port}"
        # complete at once, no polling: what a browser's first page load gets
        listing = get_json(url, "/data/plugins_listing")
        for plugin in ("projector", "hparams", "scalars", "images", "custom_scalars", "timeseries"):
            assert listing[plugin]["enabled"], plugin
        assert get_json(url, "/data/runs") == ["train", "validation"]
        assert get_json(url, "/data/plugin/projector/runs") == ["train"]
        children = descendants(launcher.pid)
        assert children  # TensorBoard (and its data server)
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=30) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (any(alive(p) for p in children) or not port_free(port)):
            time.sleep(0.1)
        assert not [p for p in children if alive(p)], "TensorBoard left running"
        assert port_free(port)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait(timeout=10)
        for pid in children:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG, /proc")
def test_tensorboard_dies_with_a_killed_launcher(runs):
    """SIGKILL cannot be handled: TensorBoard asked the kernel for SIGTERM when its launcher dies."""
    _, run, _ = runs
    port = free_port()
    code = ("import sys; from graphcnn.tensorboard.launcher import run_tensorboard; "
            f"sys.exit(run_tensorboard({str(run.root)!r}, {port}))")
    launcher = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
    children = set()
    try:
        assert f":{port}/" in launcher.stdout.readline()
        children = descendants(launcher.pid)
        assert children
        launcher.kill()
        launcher.wait(timeout=10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (any(alive(p) for p in children) or not port_free(port)):
            time.sleep(0.1)
        assert not [p for p in children if alive(p)] and port_free(port)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait(timeout=10)
        for pid in children:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
