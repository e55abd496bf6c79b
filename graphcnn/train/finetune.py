"""tf-slim style fine-tuning: start from another run's checkpoint, train only some scopes.

Scopes match variables as :mod:`graphcnn.model.scopes` says (a ``/``-bounded name prefix);
choosing the variables to train is there too, since the graph builder needs it.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import tensorflow as tf

from graphcnn.model.scopes import require_matches, scope_matches, variable_name
from graphcnn.checkpoints import TRAINING_STATE_SCOPES, resolve_checkpoint, training_state_names
from graphcnn.data.pipeline import PIXEL_MEAN_VARIABLE

__all__ = [
    "InitFromCheckpoint", "Mismatch", "build_init_from_checkpoint", "training_state_names", "TRAINING_STATE_SCOPES",
]


class Mismatch(NamedTuple):
    """A variable whose shape (or dtype) differs between the graph and the checkpoint."""

    name: str
    graph_shape: tuple
    checkpoint_shape: tuple


class InitFromCheckpoint(NamedTuple):
    """What :func:`build_init_from_checkpoint` restores, and how.

    ``init_fn(sess)`` restores the ``restored`` variables from ``checkpoint_path``; call it
    after the global variables initializer. ``saver`` is the ``tf.compat.v1.train.Saver``
    it uses. The lists hold variable names (no ``:0``), in graph order; ``training_state``
    lists the variables never restored because they are training state, not weights (see
    :func:`training_state_names`).
    """

    init_fn: Callable[[tf.compat.v1.Session], None]
    saver: tf.compat.v1.train.Saver
    checkpoint_path: str
    restored: list[str]
    excluded: list[str]
    missing_in_checkpoint: list[str]
    mismatched: list[Mismatch]
    training_state: list[str]


def _shape_text(shape: Sequence) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def build_init_from_checkpoint(checkpoint: str, variables: Sequence[tf.Variable], exclude_scopes: Sequence[str] = (),
                               skip_mismatched: bool = False, training_state: bool = False) -> InitFromCheckpoint:
    """Prepare restoring ``variables`` from another checkpoint, matched by name.

    Call inside the graph that holds ``variables`` (it creates the restore ops). Variables
    under ``exclude_scopes`` are not restored; nor is training state (global step,
    optimizer slots, the ``train`` scope; see :func:`training_state_names`), even when the
    checkpoint has it, nor the mean image ``input/pixel_mean`` (the new run computes its own);
    variables the checkpoint lacks (new layers) keep their initializers.

    Args:
        checkpoint: a file prefix, a directory with a ``checkpoint`` state file, or a run
            directory containing ``checkpoints/`` (see :func:`resolve_checkpoint`).
        variables: the candidates, usually ``tf.compat.v1.global_variables()``.
        exclude_scopes: scopes not to restore (``train.exclude_scopes``).
        skip_mismatched: variables whose shape differs from the checkpoint's are skipped
            (listed in ``mismatched``) instead of raising.
        training_state: restore the training state too (the next stage of the same run: its
            global step goes on); what the checkpoint lacks, such as the optimizer slots of
            variables the last stage froze, starts afresh.

    Raises:
        FileNotFoundError: the checkpoint does not exist (the message names the path).
        ValueError: some shapes differ and not ``skip_mismatched`` (the message names each
            variable with both shapes and how to exclude or skip them), or no variable at
            all could be restored.
    """
    path = str(resolve_checkpoint(checkpoint))
    reader = tf.train.load_checkpoint(path)
    ckpt_shapes = reader.get_variable_to_shape_map()
    ckpt_dtypes = reader.get_variable_to_dtype_map()

    variables = list(variables)
    # a typo (logit for logits) would restore what it meant to leave out
    require_matches("train.exclude_scopes", exclude_scopes, [variable_name(v) for v in variables],
                    "variable of the model")
    # the mean image is the new run's own (its data, perhaps its input size): never another run's
    state_names = set() if training_state else training_state_names(variables) | {PIXEL_MEAN_VARIABLE}
    restored, excluded, missing, training_state = [], [], [], []
    mismatched: list[Mismatch] = []
    dtype_notes: dict[str, str] = {}
    var_list: dict[str, tf.Variable] = {}
    for variable in variables:
        name = variable_name(variable)
        if name in state_names:
            training_state.append(name)
            continue
        if any(scope_matches(name, s) for s in exclude_scopes):
            excluded.append(name)
            continue
        if name not in ckpt_shapes:
            missing.append(name)
            continue
        graph_shape = tuple(variable.shape.as_list())
        ckpt_shape = tuple(ckpt_shapes[name])
        graph_dtype = variable.dtype.base_dtype
        if graph_shape != ckpt_shape or graph_dtype != ckpt_dtypes[name].base_dtype:
            mismatched.append(Mismatch(name, graph_shape, ckpt_shape))
            if graph_dtype != ckpt_dtypes[name].base_dtype:
                ckpt_dtype = ckpt_dtypes[name].base_dtype.name
                dtype_notes[name] = f" (dtype: graph {graph_dtype.name}, checkpoint {ckpt_dtype})"
            continue
        restored.append(name)
        var_list[name] = variable

    if mismatched and not skip_mismatched:
        lines = [
            f"  {m.name}: graph {_shape_text(m.graph_shape)}, checkpoint {_shape_text(m.checkpoint_shape)}"
            + dtype_notes.get(m.name, "")
            for m in mismatched
        ]
        # Suggest each variable's enclosing scope (the layer), not the top level, which in a
        # nested model could exclude everything.
        scopes = ",".join(dict.fromkeys(m.name.rsplit("/", 1)[0] for m in mismatched))
        raise ValueError(
            f"init_from: {len(mismatched)} variable(s) differ in shape between this model and checkpoint {path}:\n"
            + "\n".join(lines)
            + f"\nExclude them from the restore with --exclude-scopes {scopes} (train.exclude_scopes), "
            "or skip every mismatched variable with --set train.skip_mismatched=true."
        )
    if not var_list:
        sample = ", ".join(sorted(ckpt_shapes)[:8])
        raise ValueError(
            f"init_from: no variable of this model could be restored from checkpoint {path} "
            f"(checkpoint variables: {sample or '(none)'}; excluded: {len(excluded)}, "
            f"not in checkpoint: {len(missing)}, mismatched: {len(mismatched)})"
        )

    saver = tf.compat.v1.train.Saver(var_list=var_list, name="init_from_checkpoint", save_relative_paths=True)

    def init_fn(sess: tf.compat.v1.Session) -> None:
        saver.restore(sess, path)

    return InitFromCheckpoint(init_fn, saver, path, restored, excluded, missing, mismatched, training_state)
