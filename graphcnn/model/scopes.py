"""Variable scopes: match variables by name prefix, pick the ones to train.

A *scope* matches a variable when it equals the variable's name (without ``:0``) or is a
prefix of it ending at a ``/`` boundary: ``logits`` matches ``logits/weights`` but not
``logits2/weights``; ``conv1/weights`` matches exactly that variable.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["filter_variables", "scope_matches", "trainable_variables", "variable_name"]


def variable_name(variable) -> str:
    """The variable's name without the ``:0`` output suffix (its checkpoint key)."""
    return variable.name.split(":")[0]


def scope_matches(name: str, scope: str) -> bool:
    """True when ``scope`` is ``name`` or a ``/``-bounded prefix of it."""
    scope = scope.strip().rstrip("/")
    return bool(scope) and (name == scope or name.startswith(scope + "/"))


def filter_variables(
    variables: Iterable, include_scopes: Sequence[str] = (), exclude_scopes: Sequence[str] = ()
) -> list:
    """The variables (in their order) under any of ``include_scopes`` (all when empty) and
    under none of ``exclude_scopes``."""
    result = []
    for variable in variables:
        name = variable_name(variable)
        if include_scopes and not any(scope_matches(name, s) for s in include_scopes):
            continue
        if any(scope_matches(name, s) for s in exclude_scopes):
            continue
        result.append(variable)
    return result


def trainable_variables(all_trainable: Iterable, trainable_scopes: Sequence[str] = ()) -> list:
    """The variables to train: those under ``trainable_scopes``, or all when it is empty. A scope
    that matches no variable is a ValueError naming it and the top-level scopes there are."""
    all_trainable = list(all_trainable)
    if not trainable_scopes:
        return all_trainable
    require_matches("train.trainable_scopes", trainable_scopes, [variable_name(v) for v in all_trainable],
                    "trainable variable")
    return filter_variables(all_trainable, include_scopes=trainable_scopes)


def require_matches(key: str, scopes: Sequence[str], names: Sequence[str], what: str = "variable") -> None:
    """ValueError naming ``key`` and the scopes that match none of ``names`` (a typo: ``logit``
    for ``logits``), with the top-level scopes there are."""
    unmatched = [s for s in scopes if not any(scope_matches(n, s) for n in names)]
    if unmatched:
        raise ValueError(f"{key}: {', '.join(repr(s) for s in unmatched)} matches no {what}; "
                         f"top-level scopes are: {', '.join(top_scopes(names)) or '(none)'}")


def top_scopes(names: Iterable[str]) -> list[str]:
    """The first scope of each variable name, each once, in order (``conv1_1``, ``fc1``, ``logits``)."""
    return list(dict.fromkeys(n.split("/")[0] for n in names))
