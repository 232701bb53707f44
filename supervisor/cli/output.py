"""What the CLI prints: a table for people by default, one JSON document with ``--json``.

Every command that prints a result takes ``--json`` (:func:`add_json_option`)
and hands its reply to :func:`emit` with a function that renders it for
people; tables are laid out by :func:`table`, which fits columns to their
widest cell and right-aligns numbers. Progress lines of long commands go
through :func:`note`: on standard output for people, on standard error with
``--json``, so that standard output holds only the JSON document.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from broker import encode


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")


def emit(reply: Any, args: Any, text: Callable[[Any], str]) -> None:
    """Print ``reply`` as JSON with ``--json``, else as ``text(reply)``."""
    print(encode(reply).decode() if getattr(args, "json", False) else text(reply), flush=True)


def note(args: Any, line: str) -> None:
    """A progress line: stdout for people, stderr with ``--json`` (stdout is the document's)."""
    print(line, file=sys.stderr if getattr(args, "json", False) else sys.stdout, flush=True)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, indent: str = "") -> str:
    """Columns as wide as their widest cell; numbers right-aligned, text left-aligned."""
    cells = [[_cell(v) for v in row] for row in rows]
    numeric = [all(isinstance(row[i], (int, float)) and not isinstance(row[i], bool) or row[i] is None for row in rows)
               for i in range(len(headers))]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return (indent + "  ".join(parts)).rstrip()

    return "\n".join([line(list(headers)), *(line(r) for r in cells)])
