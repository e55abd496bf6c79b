"""A CNN described by a :class:`~graphcnn.config.ModelConfig`, connected to a graph on call.

Configure first, connect second (as in Sonnet): ``Network(model_config, num_classes)``
resolves layer names and checks the description without touching a graph; calling the
network adds its ops. Calling it again (e.g. on an evaluation input) shares the weights.

With ``model.backbone`` set, a pretrained convolutional base
(:mod:`graphcnn.model.backbones`, under the scope of its name: ``vgg16/conv5/conv5_3``) comes
first, and ``model.layers`` are the head on top of it.

Layer names are the checkpoint contract: convolutions are ``conv<block>_<i>`` where a block
ends at each pool (``conv1_1``, ``conv1_2``, ``pool1``, ``conv2_1`` ...), dense layers
``fc1``, ``fc2`` ..., dropouts ``dropout1`` ..., and the classifier is always ``logits``.
Variables are ``<layer>/weights``, ``<layer>/biases`` and ``<layer>/bn/{gamma,beta,
moving_mean,moving_variance}``. :data:`LAYERS` maps each ``LayerConfig.type`` to the function
that connects such a layer.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any, Callable, Mapping, NamedTuple

import tensorflow as tf

from graphcnn.config import LayerConfig, ModelConfig, keep_groups
from graphcnn.model import layers as L
from graphcnn.model.backbones import KerasLayer, connect_backbone
from graphcnn.model.scopes import scope_matches
from graphcnn.registry import lookup

v1 = tf.compat.v1


class NetworkOutput(NamedTuple):
    """The result of connecting a :class:`Network`."""

    logits: tf.Tensor  # float32 [B, num_classes]
    end_points: dict[str, tf.Tensor]  # layer name -> output (compute dtype; logits float32), in network order
    updates: tuple[tuple[tf.Variable, tf.Tensor], ...]  # batch-norm (moving average, amount to subtract)
    penultimate: tf.Tensor  # float32 [B, F]: the features the logits layer sees
    weight_decay: tf.Tensor  # float32 scalar: sum of decay * l2_loss(weights) (0 when off)
    kernels: dict[str, tf.Variable]  # layer name -> its weights variable (conv and dense)
    keras_layers: tuple[KerasLayer, ...] = ()  # the backbone's layers, for --init-from keras:<file>


class LayerContext(NamedTuple):
    """What every layer of one connection may read besides its input."""

    is_training: tf.Tensor  # bool scalar: batch statistics in batch norm
    keep_rates: Mapping[str, tf.Tensor]  # dropout group -> keep-rate scalar
    step: tf.Tensor | None  # int scalar keying the dropout masks (None: 0)


def resolve_layer_names(layers: tuple[LayerConfig, ...]) -> tuple[LayerConfig, ...]:
    """Give every unnamed layer its conventional name; reject duplicates."""
    block, conv_in_block, counters = 1, 0, {"dense": 0, "dropout": 0, "batch_norm": 0}
    named = []
    for layer in layers:
        name = layer.name
        if layer.type == "conv":
            conv_in_block += 1
            name = name or f"conv{block}_{conv_in_block}"
        elif layer.type == "pool":
            name = name or f"pool{block}"
            block, conv_in_block = block + 1, 0
        elif layer.type in counters:
            counters[layer.type] += 1
            prefix = {"dense": "fc", "dropout": "dropout", "batch_norm": "bn"}[layer.type]
            name = name or f"{prefix}{counters[layer.type]}"
        else:  # flatten, global_avg_pool
            name = name or layer.type
        named.append(dataclasses.replace(layer, name=name))
    seen: dict[str, int] = {}
    for i, layer in enumerate(named):
        if layer.name == "logits":
            raise ValueError(f"model.layers[{i}].name: 'logits' is the output layer's, which the builder adds")
        if layer.name in seen:
            given = "named" if layers[i].name else f"given the name '{layer.name}' by its type"
            raise ValueError(f"model.layers[{i}].name: '{layer.name}' is layer {seen[layer.name]}'s name too "
                             f"(this one is {given}): give one of them another name")
        seen[layer.name] = i
    return tuple(named)


def _activation_commutes_with(layer: LayerConfig, following: LayerConfig | None) -> bool:
    """Whether ``layer``'s activation may move past the max pool that follows it."""
    return (layer.type == "conv" and layer.activation in ("relu", "leaky_relu")
            and following is not None and following.type == "pool" and following.pool == "max")


def _in_scope_of(x: tf.Tensor, activation) -> tf.Tensor:
    """``activation(x)``, named in the scope of the op that made ``x`` (``conv1_2/Relu``, ``pool1/Relu``)."""
    with tf.name_scope(x.op.name.rsplit("/", 1)[0] + "/"):
        return activation(x)


class Network:
    """A configured CNN; call it to connect it to the default graph.

    ``compute_dtype`` bfloat16 is mixed precision as Keras's ``mixed_bfloat16`` policy has it:
    variables stay float32 (same names and checkpoints), each layer computes on a bfloat16
    copy, and the logits come out float32.
    """

    def __init__(self, model: ModelConfig, num_classes: int, weight_decay: float = 0.0, seed: int | None = None,
                 compute_dtype: tf.DType = tf.float32, trainable_scopes: tuple[str, ...] = ()):
        if num_classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
        self.model = model
        self.num_classes = num_classes
        self.weight_decay = weight_decay
        self.seed = seed
        self.compute_dtype = tf.as_dtype(compute_dtype)
        self.layers = resolve_layer_names(model.layers)
        self.keep_groups = keep_groups(model)
        self.trainable_scopes = tuple(trainable_scopes)
        self._connections = 0

    def bn_trains(self, scope: str) -> bool:
        """Whether the batch norm under ``scope`` (``conv1_1/bn``) normalizes training batches by
        their own statistics. Not when ``train.trainable_scopes`` leaves it frozen: a frozen
        layer stays in inference mode, its moving averages untouched (as Keras has it for a
        layer with ``trainable = False``), which fine-tuning a pretrained backbone needs."""
        return not self.trainable_scopes or any(scope_matches(scope, s) for s in self.trainable_scopes)

    def bn_training(self, layer: str, context: "LayerContext") -> tf.Tensor | bool:
        return context.is_training if self.bn_trains(f"{layer}/bn") else False

    def __call__(self, images: tf.Tensor, is_training: tf.Tensor, keep_rates: Mapping[str, tf.Tensor],
                 step: tf.Tensor | None = None) -> NetworkOutput:
        """Connect the network to ``images``: float32 [B, H, W, C], preprocessed, H/W/C as in the
        model config. ``is_training``: bool scalar tensor, selects batch statistics in batch norm;
        ``keep_rates``: a keep-rate scalar tensor per dropout group (``self.keep_groups``);
        ``step``: int scalar tensor keying the dropout masks (the global step in training; None: 0).
        """
        missing = [g for g in self.keep_groups if g not in keep_rates]
        if missing:
            raise ValueError(f"no keep-rate input for dropout group(s) {missing}")
        context = LayerContext(is_training, keep_rates, step)
        reuse = True if self._connections else None  # later connections share, never create
        self._connections += 1
        end_points: dict[str, tf.Tensor] = {}
        updates: list[tuple[tf.Variable, tf.Tensor]] = []
        kernels: dict[str, tf.Variable] = {}
        decays: list[tuple[float, tf.Variable]] = []
        keras_layers: tuple[KerasLayer, ...] = ()
        with v1.variable_scope(v1.get_variable_scope(), reuse=reuse):
            if self.model.backbone:
                base = connect_backbone(self.model.backbone, images, is_training, self.bn_trains, self.compute_dtype)
                net, keras_layers = base.features, base.keras_layers
                end_points.update(base.end_points)
                updates.extend(base.updates)
                kernels.update(base.kernels)
                decays.extend((self.weight_decay, w) for w in base.kernels.values())
            else:
                net = tf.cast(images, self.compute_dtype, name="compute_dtype")  # no op when already that dtype
            deferred = None  # the activation of the layer before a max pool, applied after the pool
            for i, layer in enumerate(self.layers):
                following = self.layers[i + 1] if i + 1 < len(self.layers) else None
                if _activation_commutes_with(layer, following):
                    # max-pool then activate: the same values and gradients (relu and leaky relu
                    # are non-decreasing and piecewise linear), but the activation and its
                    # gradient run on the pooled tensor, a quarter of the size: +3.5% training
                    # throughput at bfloat16 on the digits net, no change at float32 (BENCHMARKS.md)
                    deferred = L.get_activation(layer.activation)
                    out = self._connect_layer(dataclasses.replace(layer, activation="linear"), net, context)
                    net = out.output
                    end_points[layer.name] = _in_scope_of(net, deferred)  # computed only when fetched
                else:
                    out = self._connect_layer(layer, net, context)
                    net = out.output
                    if deferred is not None:
                        net, deferred = _in_scope_of(net, deferred), None
                    end_points[layer.name] = net
                updates.extend(out.updates)
                if out.weights is not None:
                    kernels[layer.name] = out.weights
                    decays.append((self._decay(layer), out.weights))
            if len(net.shape) != 2:
                net = L.flatten(net)  # a net that ends on a conv/pool feeds the logits flattened
            penultimate = tf.cast(net, tf.float32)
            logits, _, logits_weights = L.dense(
                net, self.num_classes, "logits", activation="linear", initializer=self.initializer("")
            )
            logits = tf.cast(logits, tf.float32)  # softmax, loss and metrics in float32
            end_points["logits"] = logits
            kernels["logits"] = logits_weights
            decays.append((self.weight_decay, logits_weights))
        with tf.name_scope("weight_decay"):
            terms = [decay * tf.nn.l2_loss(w) for decay, w in decays if decay > 0]
            weight_decay = tf.add_n(terms) if terms else tf.constant(0.0)
        return NetworkOutput(logits, end_points, tuple(updates), penultimate, weight_decay, kernels, keras_layers)

    def initializer(self, name: str) -> Callable[..., tf.Tensor]:
        """The initializer called ``name``, or the model's default when ``name`` is empty."""
        return L.get_initializer(name or self.model.initializer, self.model.init_stddev)

    def _decay(self, layer: LayerConfig) -> float:
        return layer.weight_decay if layer.weight_decay >= 0 else self.weight_decay

    def _connect_layer(self, layer: LayerConfig, net: tf.Tensor, context: LayerContext) -> L.LayerOutput:
        connect = lookup(LAYERS, layer.type, "layer type")  # config.validate reports it first, naming the key
        return connect(self, layer, net, context)


# ---------------------------------------------------------------------------
# one function per LayerConfig.type

# (network, layer, input, context) -> the layer's output
ConnectLayer = Callable[[Network, LayerConfig, tf.Tensor, LayerContext], L.LayerOutput]


def _weighted(network: Network, layer: LayerConfig, context: LayerContext) -> dict[str, Any]:
    """The options of a layer with weights (conv, dense): activation, initializer, batch norm."""
    return dict(activation=layer.activation, initializer=network.initializer(layer.initializer),
                is_training=network.bn_training(layer.name, context), use_batch_norm=layer.batch_norm,
                bn_decay=network.model.batch_norm_decay)


def _conv(network: Network, layer: LayerConfig, net: tf.Tensor, context: LayerContext) -> L.LayerOutput:
    return L.conv2d(net, layer.filters, layer.kernel_size, layer.name, strides=layer.strides or 1,
                    padding=layer.padding, **_weighted(network, layer, context))


def _dense(network: Network, layer: LayerConfig, net: tf.Tensor, context: LayerContext) -> L.LayerOutput:
    if len(net.shape) != 2:
        net = L.flatten(net, f"{layer.name}_flatten")
    return L.dense(net, layer.units, layer.name, **_weighted(network, layer, context))


def _pool(network: Network, layer: LayerConfig, net: tf.Tensor, context: LayerContext) -> L.LayerOutput:
    return L.LayerOutput(L.pool2d(net, layer.name, kind=layer.pool, size=layer.pool_size,
                                  strides=layer.strides, padding=layer.padding))


def _dropout(network: Network, layer: LayerConfig, net: tf.Tensor, context: LayerContext) -> L.LayerOutput:
    # each dropout layer its own random stream: the network's seed and the layer's name
    seed = zlib.crc32(f"{network.seed or 0}/{layer.name}".encode())
    return L.LayerOutput(L.dropout(net, context.keep_rates[layer.keep_group], layer.name, seed, context.step))


def _batch_norm(network: Network, layer: LayerConfig, net: tf.Tensor, context: LayerContext) -> L.LayerOutput:
    # the layer's own scope around the "bn" one: variables <layer>/bn/gamma, as a conv's batch norm has them
    with v1.variable_scope(layer.name):
        return L.batch_norm(net, network.bn_training(layer.name, context), decay=network.model.batch_norm_decay,
                            name="bn")


def _flatten(network: Network, layer: LayerConfig, net: tf.Tensor, context: LayerContext) -> L.LayerOutput:
    return L.LayerOutput(L.flatten(net, layer.name))


def _global_avg_pool(network: Network, layer: LayerConfig, net: tf.Tensor, context: LayerContext) -> L.LayerOutput:
    return L.LayerOutput(L.global_avg_pool(net, layer.name))


# LayerConfig.type -> the function that connects such a layer; the keys are the valid types
LAYERS: dict[str, ConnectLayer] = {
    "conv": _conv,
    "pool": _pool,
    "dense": _dense,
    "dropout": _dropout,
    "batch_norm": _batch_norm,
    "flatten": _flatten,
    "global_avg_pool": _global_avg_pool,
}
