"""The devices of one process that the training graph puts a tower on (``train.devices``).

``auto`` is every visible GPU, else one CPU (no towers). A count ``N`` is the first N GPUs,
or, on a machine without GPUs, N logical CPU devices: a session created with
:func:`session_config` splits the one physical CPU into N, which is how multi-device code
runs (and is tested) on a machine without GPUs. Variables stay on one device (the first GPU,
or the CPU), each tower computes its slice of the batch on its own device, and the gradients
are averaged where the variables live.
"""

from __future__ import annotations

import tensorflow as tf

v1 = tf.compat.v1

# ops that hold a variable's storage: they go to the parameter device, every other op of a
# tower to the tower's device (replica_device_setter's list, for resource and ref variables)
VARIABLE_OPS = frozenset({"Variable", "VariableV2", "VarHandleOp", "AutoReloadVariable"})


def resolve_devices(spec: str) -> list[str]:
    """The device names ``train.devices`` stands for on this machine: one per tower."""
    gpus = [f"/gpu:{i}" for i in range(len(tf.config.list_physical_devices("GPU")))]
    spec = spec.strip()
    if spec == "auto":
        return gpus or ["/cpu:0"]
    have = f"this machine has {len(gpus) or 'no'} GPU{'' if len(gpus) == 1 else 's'}"
    if spec.isdigit():
        count = int(spec)
        if gpus and len(gpus) < count:  # N logical CPUs would leave the GPUs idle
            raise ValueError(f"train.devices: {count} towers, but {have}; give at most {len(gpus)}, or auto")
        return gpus[:count] if gpus else [f"/cpu:{i}" for i in range(count)]
    devices = [d.strip() for d in spec.split(",") if d.strip()]
    missing = [d for d in devices if d.lower().startswith("/gpu:") and int(d.rsplit(":", 1)[1]) >= len(gpus)]
    if missing:  # TensorFlow would place the towers elsewhere without a word (soft placement)
        raise ValueError(f"train.devices: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not on this "
                         f"machine ({have}); use auto, or /cpu:0")
    return devices


def logical_cpus(devices: list[str]) -> int:
    """How many CPU devices the towers need (``/cpu:3`` needs 4)."""
    indices = [int(d.rsplit(":", 1)[1]) for d in devices if d.lower().startswith("/cpu:")]
    return max(indices, default=0) + 1


def session_config(devices: list[str], config: v1.ConfigProto | None = None) -> v1.ConfigProto | None:
    """``config`` with as many logical CPU devices as ``devices`` name (unchanged if one)."""
    cpus = logical_cpus(devices)
    if cpus <= 1:
        return config
    merged = v1.ConfigProto()
    if config is not None:
        merged.CopyFrom(config)
    merged.device_count["CPU"] = max(cpus, merged.device_count.get("CPU", 1))
    return merged


def parameter_device(devices: list[str]) -> str:
    """Where the variables live: the first GPU of the towers, else the CPU."""
    return next((d for d in devices if d.lower().startswith("/gpu:")), "/cpu:0")


def place(tower_device: str, param_device: str):
    """A device function: variables on ``param_device``, every other op on ``tower_device``."""
    def device(op: tf.Operation) -> str:
        return param_device if op.type in VARIABLE_OPS else tower_device

    return device
