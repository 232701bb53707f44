"""The registry query language: ``[(path, op, value), ...]``, all must hold.

A *path* is dotted: a top-level entry field (``id``, ``pool``, ``node``,
``pid``, ``capabilities``, ``status``, ``load``, ``started_at``,
``heartbeat_at``) followed by keys into it, e.g. ``load.in_flight`` or
``metadata.gpu.mem``. Operators:

==========  =============================================
``eq``      value at path equals ``value``
``neq``     value at path differs from ``value``
``gt``      ``>``; ``lt`` ``<``; ``gte`` ``>=``; ``lte`` ``<=``
``in``      value at path is one of the list ``value``
``not_in``  value at path is none of the list ``value``
==========  =============================================

A path that does not exist in an entry, or a comparison between types that
do not order (``"a" > 3``), makes the condition false: every operator,
``neq`` and ``not_in`` included, asks about a value that is there.
``capabilities`` is compared as a sorted list; select by capability with
``find(capability=...)``, which the query methods accept alongside.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from protocols.registry.entry import Entry
from protocols.registry.errors import InvalidQueryError

_MISSING = object()

_FIELDS = frozenset(
    {"id", "pool", "node", "pid", "capabilities", "metadata", "status", "load", "started_at", "heartbeat_at"}
)

# Fields with an index in the cache: an ``eq`` on them narrows candidates first.
INDEXED = frozenset({"pool", "node", "status"})


def _contains(options: Any, value: Any) -> bool:
    try:
        return value in options
    except TypeError:  # an unhashable value against a set of options
        return False


OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "neq": operator.ne,
    "gt": operator.gt,
    "lt": operator.lt,
    "gte": operator.ge,
    "lte": operator.le,
    "in": lambda value, options: _contains(options, value),
    "not_in": lambda value, options: not _contains(options, value),
}


@dataclass(frozen=True, slots=True)
class Condition:
    """One compiled ``(path, op, value)`` condition."""

    path: str
    op: str
    value: Any
    _parts: tuple[str, ...]
    _test: Callable[[Any, Any], bool]

    def __call__(self, entry: Entry) -> bool:
        found = resolve(entry, self._parts)
        if found is _MISSING:
            return False
        try:
            return bool(self._test(found, self.value))
        except TypeError:
            return False


def resolve(entry: Entry, parts: Sequence[str]) -> Any:
    """The value at a split path in an entry, or the private missing marker."""
    head = parts[0]
    if head == "capabilities":
        value: Any = sorted(entry.capabilities)
    elif head == "load":
        value = {"in_flight": entry.load.in_flight, "processed": entry.load.processed}
    else:
        value = getattr(entry, head)
    for key in parts[1:]:
        if not isinstance(value, dict):
            return _MISSING
        value = value.get(key, _MISSING)
        if value is _MISSING:
            return _MISSING
    return value


def _options(op: str, value: Any) -> Any:
    if not isinstance(value, (list, tuple, set, frozenset)):
        raise InvalidQueryError(f"operator {op!r} needs a list of values, got {type(value).__name__}")
    if all(isinstance(v, Hashable) for v in value):
        return frozenset(value)
    return list(value)


def compile_condition(path: str, op: str, value: Any) -> Condition:
    """Check and compile one condition.

    Raises:
        InvalidQueryError: unknown operator, unknown top-level field, or an
            ``in``/``not_in`` value that is not a list.
    """
    if not isinstance(path, str) or not path:
        raise InvalidQueryError(f"a query path must be a non-empty string, got {path!r}")
    parts = tuple(path.split("."))
    if parts[0] not in _FIELDS or "" in parts:
        raise InvalidQueryError(f"query path {path!r} must start with one of {sorted(_FIELDS)}")
    test = OPERATORS.get(op)
    if test is None:
        raise InvalidQueryError(f"unknown query operator {op!r}; use one of {sorted(OPERATORS)}")
    if op in ("in", "not_in"):
        value = _options(op, value)
    return Condition(path, op, value, parts, test)


def compile_query(conditions: Iterable[Sequence[Any]]) -> list[Condition]:
    """Compile ``[(path, op, value), ...]`` (lists of three work too, as JSON sends them).

    Raises:
        InvalidQueryError: a condition is not a triple, or is invalid.
    """
    compiled = []
    for cond in conditions:
        if isinstance(cond, Condition):
            compiled.append(cond)
            continue
        if not isinstance(cond, (list, tuple)) or len(cond) != 3:
            raise InvalidQueryError(f"a query condition is a [path, op, value] triple, got {cond!r}")
        compiled.append(compile_condition(*cond))
    return compiled
