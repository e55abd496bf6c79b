"""Named choices: one plain dict per axis, looked up by :func:`lookup`.

Each axis (layers, activations, initializers, pools, optimizers, schedules, precisions,
data sources, augmentation fill modes) is a ``dict`` in the module that implements it;
its keys are the values the config accepts, so adding an entry makes it valid everywhere.
This module imports nothing of graphcnn, so any layer may use it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

__all__ = ["UnknownChoiceError", "lookup"]

T = TypeVar("T")


class UnknownChoiceError(ValueError):
    """A name is not a key of its registry. The message lists every valid choice."""

    def __init__(self, what: str, name: str, choices: Sequence[str]) -> None:
        super().__init__(f"unknown {what} '{name}'; choices: {', '.join(choices)}")
        self.what = what
        self.name = name
        self.choices = tuple(choices)


def lookup(registry: Mapping[str, T], name: str, what: str, *, also: Sequence[str] = ()) -> T:
    """``registry[name]``, or an :class:`UnknownChoiceError` naming ``what`` and the choices.

    ``also``: names the caller resolves itself before the lookup (such as ``auto``); they
    are listed first among the choices, since a user may give them too.
    """
    try:
        return registry[name]
    except KeyError:
        raise UnknownChoiceError(what, name, (*also, *registry)) from None
