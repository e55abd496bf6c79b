"""The compute precision of a training graph: ``train.precision`` to a TensorFlow dtype.

``mixed_bfloat16`` is Keras's mixed policy: variables, checkpoints, the loss, softmax and
metrics stay float32, while convolutions, matrix products, activations and pooling run on
bfloat16 copies. oneDNN runs those on native bfloat16 instructions where the CPU has them:
the AMX tile units (Intel Sapphire Rapids and later), where the digits net trained about 2x
faster, or AVX-512 BF16 (AMD Zen 4 and 5, Intel Cooper Lake), where the in-graph training
step was 1.2x (digits), 1.7x (fashion) and 2.1x (cats_dogs_150) faster on a Zen 5; accuracy
was unchanged on both (BENCHMARKS.md). Elsewhere bfloat16 is emulated or falls back on slow
kernels, so ``auto`` picks it only where AMX-BF16 or AVX512-BF16 is present and oneDNN is on,
and never when a GPU is visible (not measured there).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import tensorflow as tf

from graphcnn.registry import lookup

# train.precision -> compute dtype; "auto" is not a key: resolve_precision picks one of these
PRECISIONS = {"float32": tf.float32, "mixed_bfloat16": tf.bfloat16}


# /proc/cpuinfo flags of the CPU instructions that compute bfloat16 natively (AMX tiles, AVX-512 BF16)
BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The feature flags of the first CPU listed in ``cpuinfo`` (empty where it is unreadable)."""
    with contextlib.suppress(OSError):
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def resolve_precision(name: str, flags: frozenset[str] | None = None, gpu: bool | None = None,
                      onednn: bool | None = None) -> str:
    """``auto`` to ``mixed_bfloat16`` or ``float32`` for this machine; other names unchanged.

    ``flags`` (CPU feature flags), ``gpu`` (a GPU is visible) and ``onednn`` (oneDNN kernels
    on: without them bfloat16 runs on slow generic kernels) default to this process's.
    """
    if name != "auto":
        lookup(PRECISIONS, name, "precision", also=("auto",))  # raises, listing the choices
        return name
    flags = cpu_flags() if flags is None else flags
    gpu = bool(tf.config.list_physical_devices("GPU")) if gpu is None else gpu
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") not in ("0", "false", "False") if onednn is None else onednn
    native_bf16 = bool(flags & BF16_FLAGS)
    return "mixed_bfloat16" if native_bf16 and onednn and not gpu else "float32"


def inference_session_config(precision: str) -> tf.compat.v1.ConfigProto:
    """Session options that run an imported float32 forward pass (``inference.meta``) at
    ``precision`` (``auto`` resolved for this machine, see :func:`resolve_precision`).

    ``mixed_bfloat16`` turns on grappler's oneDNN bfloat16 rewrite, which moves convolutions,
    matrix products, activations and pooling to bfloat16 and keeps the softmax in float32, as
    the mixed policy trains: the forward pass of cats_dogs_150 ran 2.2-2.5x faster on an AMX
    Xeon (BENCHMARKS.md, Q13); ``float32`` leaves the graph as it was saved.
    """
    config = tf.compat.v1.ConfigProto()
    if resolve_precision(precision) == "mixed_bfloat16":
        rewrite = config.graph_options.rewrite_options
        rewrite.auto_mixed_precision_onednn_bfloat16 = rewrite.ON
    return config
