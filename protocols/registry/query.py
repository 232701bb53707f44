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
    _get: Callable[[Entry], Any]
    _test: Callable[[Any, Any], bool]

    def __call__(self, entry: Entry) -> bool:
        found = self._get(entry)
        if found is _MISSING:
            return False
        try:
            return bool(self._test(found, self.value))
        except TypeError:
            return False


def _dig(value: Any, keys: tuple[str, ...]) -> Any:
    for key in keys:
        if not isinstance(value, dict):
            return _MISSING
        value = value.get(key, _MISSING)
        if value is _MISSING:
            return _MISSING
    return value


def getter(path: str) -> Callable[[Entry], Any]:
    """A function reading ``path`` from an entry (the private missing marker if absent).

    Built once per condition, so evaluating it over many entries does no parsing.

    Raises:
        InvalidQueryError: the path does not start with an entry field.
    """
    parts = tuple(path.split(".")) if isinstance(path, str) and path else ()
    if not parts:
        raise InvalidQueryError(f"a query path must be a non-empty string, got {path!r}")
    head, rest = parts[0], parts[1:]
    if head not in _FIELDS or "" in parts:
        raise InvalidQueryError(f"query path {path!r} must start with one of {sorted(_FIELDS)}")
    if head == "load":
        if not rest:
            return lambda e: {"in_flight": e.load.in_flight, "processed": e.load.processed}
        if len(rest) == 1 and rest[0] in ("in_flight", "processed"):
            field = rest[0]
            return lambda e: getattr(e.load, field)
        return lambda e: _MISSING
    if head == "capabilities":
        return (lambda e: sorted(e.capabilities)) if not rest else (lambda e: _MISSING)
    if not rest:
        return lambda e: getattr(e, head)
    if head == "metadata" and len(rest) <= 2:
        # The common shapes ("metadata.zone", "metadata.gpu.mem") without the general loop.
        first = rest[0]
        if len(rest) == 1:
            return lambda e: e.metadata.get(first, _MISSING)
        second = rest[1]

        def two(e: Entry) -> Any:
            inner = e.metadata.get(first)
            return inner.get(second, _MISSING) if isinstance(inner, dict) else _MISSING

        return two
    return lambda e: _dig(getattr(e, head), rest)


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
    get = getter(path)
    test = OPERATORS.get(op)
    if test is None:
        raise InvalidQueryError(f"unknown query operator {op!r}; use one of {sorted(OPERATORS)}")
    if op in ("in", "not_in"):
        value = _options(op, value)
    return Condition(path, op, value, get, test)


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
