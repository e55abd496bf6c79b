"""Process-wide TensorFlow settings that must be made before TensorFlow is imported.

TensorFlow reads ``TF_ENABLE_ONEDNN_OPTS`` once, at import. On CPUs without AVX-512 VNNI /
AMX it leaves the oneDNN kernels off, which halves conv-net training speed on such machines
(see BENCHMARKS.md). graphcnn turns them on unless the user has set the variable, and
quiets TensorFlow's C++ start-up chatter unless ``TF_CPP_MIN_LOG_LEVEL`` is set.
"""

from __future__ import annotations

import os
import sys

DEFAULTS = {
    "TF_ENABLE_ONEDNN_OPTS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}


def configure(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Apply graphcnn's defaults to ``environ`` (``os.environ``) where the user set nothing.

    Returns the variables it set. Has no effect on a TensorFlow already imported (a
    warning says so when a setting would have changed).
    """
    environ = os.environ if environ is None else environ
    applied = {k: v for k, v in DEFAULTS.items() if k not in environ}
    if applied and "tensorflow" in sys.modules and environ is os.environ and "TF_ENABLE_ONEDNN_OPTS" in applied:
        print("graphcnn: TensorFlow was imported before graphcnn.runtime.configure(); "
              "oneDNN stays as TensorFlow chose", file=sys.stderr)
    environ.update(applied)
    return applied
