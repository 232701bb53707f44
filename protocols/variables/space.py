"""The typed parameter space: float and int (bounds, optional log scale), choice, bool.

Pure: no I/O. A space validates a proposed value before anything goes on the
wire, and maps numeric values to and from ``[0, 1]`` (linearly or on a log
scale) for tools that search the space.

Invariants (tests/protocols/test_variables.py):

* ``validate`` returns a value of the variable's type inside its bounds, or
  raises :class:`VariableValidationError` saying what was wrong and what
  would be accepted. ``bool`` is never taken for a number, nor a float with
  a fraction for an int; NaN and infinities are refused.
* A variable's own default passes its own validation (checked at definition).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from config.errors import ProtocolError

_NAME = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")


class VariableError(ProtocolError):
    """A shared-variable operation failed."""


class VariableValidationError(VariableError):
    """A value (or a variable definition) does not fit the parameter space."""


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise VariableValidationError(
            f"variable name {name!r} must be letters, digits, '_' or '-', in dot-separated parts"
        )


def _number(name: str, value: Any, kind: type) -> float | int:
    # bool is an int subclass in Python; a True learning rate is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise VariableValidationError(f"variable {name!r} is {kind.__name__}; got {type(value).__name__} {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise VariableValidationError(f"variable {name!r} must be a finite number, got {value!r}")
    if kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise VariableValidationError(f"variable {name!r} is int; got float {value!r} with a fraction")
        return int(value)
    return float(value)


@dataclass(frozen=True)
class _Numeric:
    name: str
    default: float
    low: float
    high: float
    log: bool = False
    description: str = ""

    _type = float

    def __post_init__(self) -> None:
        _check_name(self.name)
        if not self.low <= self.high:
            raise VariableValidationError(f"variable {self.name!r}: low {self.low} is above high {self.high}")
        if self.log and self.low <= 0:
            raise VariableValidationError(f"variable {self.name!r}: a log scale needs low > 0, got {self.low}")
        self.validate(self.default)

    def validate(self, value: Any) -> Any:
        number = _number(self.name, value, self._type)
        if not self.low <= number <= self.high:
            side = "below its lower" if number < self.low else "above its upper"
            raise VariableValidationError(
                f"variable {self.name!r}: {number!r} is {side} bound; propose a value in [{self.low}, {self.high}]"
            )
        return number

    def to_unit(self, value: Any) -> float:
        """Position of ``value`` in ``[0, 1]`` (on the log scale if ``log``)."""
        number = self.validate(value)
        if self.high == self.low:
            return 0.0
        if self.log:
            return (math.log(number) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return (number - self.low) / (self.high - self.low)

    def from_unit(self, unit: float) -> Any:
        """The value at position ``unit`` of ``[0, 1]``; the inverse of :meth:`to_unit`."""
        unit = min(max(unit, 0.0), 1.0)
        if self.log:
            number = math.exp(math.log(self.low) + unit * (math.log(self.high) - math.log(self.low)))
        else:
            number = self.low + unit * (self.high - self.low)
        number = min(max(number, self.low), self.high)  # rounding must not leave the bounds
        return self.validate(round(number) if self._type is int else number)


@dataclass(frozen=True)
class FloatVar(_Numeric):
    """A float in ``[low, high]``; ``log`` puts it on a logarithmic scale."""

    kind = "float"


@dataclass(frozen=True)
class IntVar(_Numeric):
    """An int in ``[low, high]``; ``log`` puts it on a logarithmic scale."""

    kind = "int"
    _type = int


@dataclass(frozen=True)
class ChoiceVar:
    """One of a fixed tuple of JSON scalars."""

    name: str
    default: Any
    choices: tuple[Any, ...] = field(default_factory=tuple)
    description: str = ""

    kind = "choice"

    def __post_init__(self) -> None:
        _check_name(self.name)
        object.__setattr__(self, "choices", tuple(self.choices))
        if not self.choices:
            raise VariableValidationError(f"variable {self.name!r}: a choice needs at least one option")
        self.validate(self.default)

    def validate(self, value: Any) -> Any:
        # Compare with types, so that 1 does not pass for True or "1".
        for choice in self.choices:
            if type(choice) is type(value) and choice == value:
                return choice
        raise VariableValidationError(f"variable {self.name!r}: {value!r} is not one of {list(self.choices)}")


@dataclass(frozen=True)
class BoolVar:
    """``true`` or ``false``, nothing else."""

    name: str
    default: bool
    description: str = ""

    kind = "bool"

    def __post_init__(self) -> None:
        _check_name(self.name)
        self.validate(self.default)

    def validate(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise VariableValidationError(f"variable {self.name!r} is bool; got {type(value).__name__} {value!r}")
        return value


Variable = Union[FloatVar, IntVar, ChoiceVar, BoolVar]
_KINDS: dict[str, type] = {"float": FloatVar, "int": IntVar, "choice": ChoiceVar, "bool": BoolVar}


def variable_to_dict(var: Variable) -> dict[str, Any]:
    """The JSON form of a definition (stored next to the values)."""
    body: dict[str, Any] = {"kind": var.kind, "name": var.name, "default": var.default, "description": var.description}
    if isinstance(var, _Numeric):
        body.update(low=var.low, high=var.high, log=var.log)
    elif isinstance(var, ChoiceVar):
        body["choices"] = list(var.choices)
    return body


def variable_from_dict(name: str, body: Mapping[str, Any]) -> Variable:
    """Build a definition from its JSON or TOML form (``kind`` or ``type`` names the kind).

    Raises:
        VariableValidationError: unknown kind, missing or bad fields.
    """
    kind = body.get("kind", body.get("type"))
    cls = _KINDS.get(str(kind))
    if cls is None:
        raise VariableValidationError(f"variable {name!r}: unknown kind {kind!r}; use one of {sorted(_KINDS)}")
    fields = {k: v for k, v in body.items() if k in cls.__dataclass_fields__ and k != "name"}
    try:
        return cls(name=name, **fields)
    except TypeError as exc:
        raise VariableValidationError(f"variable {name!r}: {exc}") from exc


class ParameterSpace:
    """A set of named, typed variables."""

    def __init__(self, variables: Iterable[Variable]) -> None:
        self._vars: dict[str, Variable] = {}
        for var in variables:
            if var.name in self._vars:
                raise VariableValidationError(f"variable {var.name!r} is defined twice")
            self._vars[var.name] = var

    @classmethod
    def from_dict(cls, table: Mapping[str, Mapping[str, Any]]) -> ParameterSpace:
        """From ``{name: {kind|type, default, low, high, log, choices}}`` (a config table)."""
        return cls(variable_from_dict(name, body) for name, body in table.items())

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: variable_to_dict(var) for name, var in self._vars.items()}

    def __getitem__(self, name: str) -> Variable:
        try:
            return self._vars[name]
        except KeyError:
            known = ", ".join(sorted(self._vars)) or "none"
            raise VariableValidationError(f"unknown variable {name!r}; known variables: {known}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._vars

    def __iter__(self) -> Iterator[Variable]:
        return iter(self._vars.values())

    def __len__(self) -> int:
        return len(self._vars)

    def validate(self, name: str, value: Any) -> Any:
        """The value, checked and normalised for variable ``name``.

        Raises:
            VariableValidationError: unknown variable, wrong type or out of bounds.
        """
        return self[name].validate(value)

    def defaults(self) -> dict[str, Any]:
        return {name: var.default for name, var in self._vars.items()}
