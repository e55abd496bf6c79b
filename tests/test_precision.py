"""train.precision: how ``auto`` resolves, what a mixed_bfloat16 graph holds, and a bounded run in it."""

import json

import numpy as np
import pytest
import tensorflow as tf

from conftest import synthetic_dataset, tiny_config
from graphcnn import config as C
from graphcnn.data.pipeline import InputPipeline
from graphcnn.model.graph import build_graph, network_for
from graphcnn.model.network import Network
from graphcnn.model.precision import PRECISIONS, cpu_flags, inference_session_config, resolve_precision
from graphcnn.predict import Predictor
from graphcnn.presets import get_preset
from graphcnn.registry import UnknownChoiceError
from graphcnn.run_dir import RunDir
from graphcnn.train.trainer import train

v1 = tf.compat.v1


def test_auto_picks_bfloat16_only_with_native_bfloat16_onednn_and_no_gpu():
    amx = frozenset({"avx512f", "amx_bf16", "amx_tile"})
    assert resolve_precision("auto", amx, gpu=False, onednn=True) == "mixed_bfloat16"
    zen5 = frozenset({"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"})
    assert resolve_precision("auto", zen5, gpu=False, onednn=True) == "mixed_bfloat16"
    zen3 = frozenset({"avx2", "fma"})  # an AMD EPYC without AVX-512
    assert resolve_precision("auto", zen3, gpu=False, onednn=True) == "float32"
    assert resolve_precision("auto", frozenset({"avx2", "avx512f", "avx512_vnni"}), gpu=False, onednn=True) == "float32"
    assert resolve_precision("auto", amx, gpu=True, onednn=True) == "float32"
    assert resolve_precision("auto", amx, gpu=False, onednn=False) == "float32"
    assert resolve_precision("float32", amx, gpu=False, onednn=True) == "float32"
    assert resolve_precision("mixed_bfloat16", frozenset(), gpu=True, onednn=False) == "mixed_bfloat16"
    with pytest.raises(ValueError, match="choices: auto, float32, mixed_bfloat16"):
        resolve_precision("float16")


def test_unknown_precision_lists_auto_and_the_registered_ones():
    with pytest.raises(UnknownChoiceError,
                       match=f"^unknown precision 'float16'; choices: auto, {', '.join(PRECISIONS)}$"):
        resolve_precision("float16")


def test_cpu_flags_reads_the_flags_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu avx2 amx_bf16\n\nprocessor\t: 1\nflags\t: fpu\n")
    assert cpu_flags(info) == {"fpu", "avx2", "amx_bf16"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_precision_key_is_validated():
    assert C.load(get_preset("digits"), None, ["train.precision=float32"]).train.precision == "float32"
    with pytest.raises(C.ConfigError, match="train.precision: 'bf16' is not one of auto, float32, mixed_bfloat16"):
        C.load(get_preset("digits"), None, ["train.precision=bf16"])


def _connect(dtype):
    model = get_preset("digits").model
    with tf.Graph().as_default() as graph:
        images = v1.placeholder(tf.float32, [None, 28, 28, 1])
        net = Network(model, 10, compute_dtype=dtype)
        out = net(images, tf.constant(False), {g: tf.constant(1.0) for g in net.keep_groups})
    return graph, out


def test_bfloat16_network_keeps_float32_variables_names_and_outputs():
    graph32, out32 = _connect(tf.float32)
    graph16, out16 = _connect(tf.bfloat16)
    with graph32.as_default():
        variables32 = [(v.op.name, v.dtype.base_dtype, v.shape.as_list()) for v in v1.global_variables()]
    with graph16.as_default():
        variables16 = [(v.op.name, v.dtype.base_dtype, v.shape.as_list()) for v in v1.global_variables()]
    assert variables16 == variables32 and {d for _, d, _ in variables16} == {tf.float32}
    assert out16.logits.dtype == out16.penultimate.dtype == tf.float32
    assert out16.end_points["conv1_1"].dtype == tf.bfloat16 and out32.end_points["conv1_1"].dtype == tf.float32
    convs16 = [op for op in graph16.get_operations() if op.type in ("Conv2D", "MatMul")]
    assert len(convs16) == 6 and all(op.get_attr("T") == tf.bfloat16 for op in convs16)
    # float32 adds no casts at all: the graph is what it was before precision existed
    assert not [op for op in graph32.get_operations() if op.type == "Cast"]


def _train_graph(cfg, ds):
    graph = tf.Graph()
    with graph.as_default():
        net = network_for(cfg, 3)
        pipeline = InputPipeline(cfg.data, cfg.model, ds.train, 8, net.keep_groups, seed=0)
        g = build_graph(cfg, pipeline.build(), 3, 10, net)
    return graph, g, pipeline


def test_mixed_bfloat16_gradients_are_float32_and_updates_wait_for_all_of_them():
    ds = synthetic_dataset()
    # check_numerics off: its global-norm check would order the updates after the gradients on its own
    graph, g, _ = _train_graph(tiny_config(precision="mixed_bfloat16", check_numerics=False), ds)
    assert [grad.dtype for grad, _ in g.gradients] == [tf.float32] * len(g.gradients)
    grad_ops = {grad.op for grad, _ in g.gradients}
    applies = [op for op in graph.get_operations() if op.type == "ResourceApplyAdam"]
    assert len(applies) == len(g.gradients)
    for op in applies:  # no update can race another variable's gradient computation
        assert grad_ops <= _ancestors(op), op.name


def _ancestors(op):
    """Every op ``op`` waits for, through data and control edges."""
    seen, stack = set(), [op]
    while stack:
        current = stack.pop()
        for parent in [i.op for i in current.inputs] + list(current.control_inputs):
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return seen


def test_bias_gradients_fuse_into_filter_gradients():
    """No per-op gradient gating: its control edges kept oneDNN from fusing BiasAddGrad into the filter gradient."""
    cfg = tiny_config(precision="float32")
    graph, g, pipeline = _train_graph(cfg, synthetic_dataset())
    with graph.as_default(), v1.Session() as sess:
        sess.run(v1.global_variables_initializer())
        pipeline.initialize(sess)
        metadata = v1.RunMetadata()
        sess.run(g.train_op, options=v1.RunOptions(output_partition_graphs=True), run_metadata=metadata)
    ops = [n.op for pg in metadata.partition_graphs for n in pg.node]
    if not any(op.startswith("_MklNative") for op in ops):
        pytest.skip("oneDNN kernels are off in this process")
    # conv1_1 (no batch norm) has a bias: fused; the batch-normalized conv2_1 has none
    assert "_MklNativeConv2DBackpropFilterWithBias" in ops
    assert ops.count("BiasAddGrad") == 2  # fc1 and logits, the dense layers


def test_mixed_bfloat16_run_trains_and_float32_predict_agrees(tmp_path):
    cfg = tiny_config(epochs=4, precision="mixed_bfloat16")
    ds = synthetic_dataset()
    result = train(cfg, RunDir.create(tmp_path, "bf16"), progress=False, dataset=ds)
    record = json.loads(result.run.results.read_text())
    assert record["precision"] == "mixed_bfloat16"
    assert result.test.accuracy >= 0.9
    with Predictor(result.run.root) as p:  # inference.meta: float32, the same weights
        probs = p.probabilities_for(p.preprocess_arrays(ds.test.images))
        graph_types = {op.get_attr("T") for op in p.graph.get_operations() if op.type == "Conv2D"}
    assert graph_types == {tf.float32}
    # bfloat16 keeps 8 bits of mantissa: probabilities agree to about 1e-2, the classes exactly here
    np.testing.assert_allclose(probs, result.test.probabilities, atol=0.05)
    assert (probs.argmax(1) == result.test.predictions).mean() >= 11 / 12


def test_inference_session_config_rewrites_to_bfloat16_only_when_asked(monkeypatch):
    rewrite = lambda precision: inference_session_config(precision).graph_options.rewrite_options  # noqa: E731
    assert rewrite("mixed_bfloat16").auto_mixed_precision_onednn_bfloat16 == rewrite("float32").ON
    assert rewrite("float32").auto_mixed_precision_onednn_bfloat16 == rewrite("float32").DEFAULT
    monkeypatch.setattr("graphcnn.model.precision.cpu_flags", lambda: frozenset({"avx2"}))
    assert rewrite("auto").auto_mixed_precision_onednn_bfloat16 == rewrite("float32").DEFAULT


def _conv_types(sess, fetch, feed) -> set:
    """The dtypes the Conv2D ops ran in, read from the graphs the session actually executed."""
    options = v1.RunOptions(output_partition_graphs=True)
    metadata = v1.RunMetadata()
    sess.run(fetch, feed, options=options, run_metadata=metadata)
    return {tf.dtypes.as_dtype(node.attr["T"].type) for g in metadata.partition_graphs for node in g.node
            if "Conv2D" in node.op and "T" in node.attr}


def test_predictor_in_bfloat16_agrees_with_float32(tmp_path):
    cfg = tiny_config(epochs=4)
    ds = synthetic_dataset()
    result = train(cfg, RunDir.create(tmp_path, "f32"), progress=False, dataset=ds)
    runs = {}
    for precision in ("float32", "mixed_bfloat16"):
        with Predictor(result.run.root, precision=precision) as p:
            assert p.precision == precision
            x = p.preprocess_arrays(ds.test.images)
            runs[precision] = p.probabilities_for(x), _conv_types(p.sess, p.probabilities, {p.images: x})
    (f32, f32_types), (bf16, bf16_types) = runs["float32"], runs["mixed_bfloat16"]
    assert f32_types == {tf.float32}
    if resolve_precision("auto") == "mixed_bfloat16":  # oneDNN on and native bfloat16: the rewrite runs
        assert tf.bfloat16 in bf16_types
    np.testing.assert_allclose(bf16, f32, atol=0.05)
    assert (bf16.argmax(1) == f32.argmax(1)).mean() >= 11 / 12
