"""Several devices in one process (train.devices): one tower per device on 2 logical CPUs."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from conftest import synthetic_dataset, tiny_config
from graphcnn.config import LayerConfig, ModelConfig
from graphcnn.data.pipeline import InputPipeline
from graphcnn.model.devices import resolve_devices, session_config
from graphcnn.model.graph import build_graph, network_for
from graphcnn.predict import Predictor
from graphcnn.run_dir import RunDir
from graphcnn.train.trainer import train

v1 = tf.compat.v1
TWO_CPUS = ["/cpu:0", "/cpu:1"]


def plain_config(**train):
    """No batch norm and no dropout: the towers' mean gradient is then exactly the whole batch's
    (in float32: on a CPU where ``auto`` is bfloat16 the two sums round differently)."""
    layers = (LayerConfig(type="conv", filters=4), LayerConfig(type="pool"), LayerConfig(type="dense", units=8))
    cfg = tiny_config(**{"precision": "float32", **train})
    return dataclasses.replace(cfg, model=ModelConfig(name="plain", input_height=12, input_width=12, channels=1,
                                                      layers=layers))


def graph_with(config, devices):
    data = synthetic_dataset()
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(0)
        network = network_for(config, 3)
        pipeline = InputPipeline(config.data, config.model, data.train, config.train.batch_size, network.keep_groups,
                                 seed=0)
        g = build_graph(config, pipeline.build(), 3, 100, network, devices)
    return graph, g, data, pipeline


def test_resolve_devices_and_logical_cpus():
    assert resolve_devices("2") == TWO_CPUS  # no GPU here
    assert resolve_devices("auto") == ["/cpu:0"]
    assert resolve_devices("/cpu:0, /cpu:3") == ["/cpu:0", "/cpu:3"]
    assert session_config(["/cpu:0"]) is None
    assert session_config(["/cpu:0", "/cpu:3"]).device_count["CPU"] == 4
    # a GPU this machine lacks: TensorFlow's soft placement ran it on the CPU without a word
    with pytest.raises(ValueError, match=r"^train.devices: /gpu:0 is not on this machine \(this machine has no "
                                         r"GPUs\); use auto, or /cpu:0$"):
        resolve_devices("/gpu:0")
    with pytest.raises(ValueError, match=r"/gpu:1, /gpu:2 are not on this machine"):
        resolve_devices("/cpu:0,/gpu:1,/gpu:2")


def test_a_count_of_towers_above_the_gpus_is_refused(monkeypatch):
    """One GPU and train.devices=2 gave two logical CPUs and left the GPU idle."""
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["gpu"] if kind == "GPU" else [])
    assert resolve_devices("1") == ["/gpu:0"] and resolve_devices("auto") == ["/gpu:0"]
    with pytest.raises(ValueError, match=r"^train.devices: 2 towers, but this machine has 1 GPU; give at most 1"):
        resolve_devices("2")


def test_the_towers_mean_gradient_is_the_whole_batch_gradient():
    config = plain_config(batch_size=8, weight_decay=1e-3)
    graph, g, data, pipeline = graph_with(config, TWO_CPUS)
    with graph.as_default():
        variables = [v for _, v in g.gradients]
        whole = tf.gradients(g.cross_entropy + g.net.weight_decay, variables)  # the full-batch connection
        init = v1.global_variables_initializer()
    images = data.train.images[:8].astype(np.float32) / 255.0
    feed = {g.inputs.images: images, g.inputs.labels: data.train.labels[:8], g.inputs.is_training: True}
    with v1.Session(graph=graph, config=session_config(TWO_CPUS)) as sess:
        sess.run(init)
        pipeline.initialize(sess)  # a first conv's filter gradient reaches for it under oneDNN, fed or not
        towers, single = sess.run([[grad for grad, _ in g.gradients], whole], feed)
    assert len(towers) == len(variables) == 6
    for name, a, b in zip([v.op.name for v in variables], towers, single):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name)


def test_towers_keep_variable_names_and_place_ops_per_device():
    config = tiny_config(batch_size=8)
    one_graph, *_ = graph_with(config, ["/cpu:0"])
    two_graph, *_ = graph_with(config, TWO_CPUS)
    names = [sorted(v.op.name for v in graph.get_collection(v1.GraphKeys.GLOBAL_VARIABLES))
             for graph in (one_graph, two_graph)]
    assert names[0] == names[1] and "conv1_1/weights" in names[1]
    ops = two_graph.get_operations()
    conv = [op for op in ops if op.type == "Conv2D"]
    assert {op.device for op in conv if op.name.startswith("tower_1/")} == {"/cpu:1"}
    assert {op.device for op in conv if op.name.startswith("tower_0/")} == {"/cpu:0"}
    model_variables = [op for op in ops if op.type == "VarHandleOp" and op.name.split("/")[0] in ("conv1_1", "fc1")]
    assert len(model_variables) >= 4 and {op.device for op in model_variables} == {"/cpu:0"}  # one place
    with pytest.raises(ValueError, match="does not split evenly over 2 devices"):
        graph_with(tiny_config(batch_size=7), TWO_CPUS)


def test_a_two_tower_run_restores_into_predict(tmp_path):
    run = RunDir.create(tmp_path, "towers")
    # float32: predict's inference.meta is float32, compared to the in-training evaluation below
    result = train(tiny_config(epochs=2, devices="2", precision="float32"), run, progress=False,
                   dataset=synthetic_dataset())
    assert result.test.accuracy >= 0.8
    test = synthetic_dataset().test
    with Predictor(run.root) as predictor:
        probabilities = predictor.probabilities_for(predictor.preprocess_arrays(test.images))
    np.testing.assert_allclose(probabilities, result.test.probabilities, rtol=1e-4, atol=1e-5)
    nodes = set()
    for f in run.train_logs.glob("events.*"):
        for e in v1.train.summary_iterator(str(f)):
            if e.graph_def:
                nodes |= {n.name.split("/")[0] for n in tf.compat.v1.GraphDef.FromString(e.graph_def).node}
    assert {"tower_0", "tower_1", "towers"} <= nodes
