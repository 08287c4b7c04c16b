"""One error type for bad user input, and one way to describe a bad value without showing it.

MIMIC notes are protected health information, so no message may quote a cell: `describe` names a value's
type and size only. Every command-line tool raises `UserError` (or a subclass) for bad input and exits
with `EXIT_USER_ERROR` after printing the message alone, never a traceback.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

EXIT_USER_ERROR = 2


class UserError(Exception):
    """Bad input or configuration: the message names the file, the row or column, and the fix."""


def describe(value: Any) -> str:
    """Type and size of a value, never its contents (a bad cell may hold note text)."""
    if value is None:
        return "an empty value (None)"
    if isinstance(value, float) and value != value:
        return "a missing value (NaN)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"a number ({type(value).__name__})"
    if isinstance(value, str):
        if not value.strip():
            return f"a blank string of {len(value)} characters"
        return f"a string of {len(value)} characters"
    if isinstance(value, (bytes, bytearray)):
        return f"{type(value).__name__} of length {len(value)}"
    if isinstance(value, dict):
        return f"a mapping with {len(value)} keys"
    try:
        return f"a {type(value).__name__} of length {len(value)}"
    except TypeError:
        return f"a value of type {type(value).__name__}"


def user_error(path: str | Path | None, problem: str, fix: str, *, row: int | None = None,
               column: str | None = None, line: int | None = None, cls: type[UserError] = UserError) -> UserError:
    """`<file>, row R, column 'C': <problem>. Fix: <fix>` — the one message shape of every tool.

    `row` is 1-based over data rows (header not counted); `line` is a 1-based line of a text file. The
    caller must pass only names, numbers and `describe(...)` in `problem`, never a cell's contents.
    """
    where = [str(path)] if path is not None else []
    if row is not None:
        where.append(f"row {row} (1-based, header not counted)")
    if line is not None:
        where.append(f"line {line}")
    if column is not None:
        where.append(f"column '{column}'")
    prefix = ", ".join(where)
    return cls(f"{prefix}: {problem}. Fix: {fix}" if prefix else f"{problem}. Fix: {fix}")


_TOKEN = re.compile(r"[A-Za-z0-9._\-]+")


def show_token(value: Any, max_len: int = 16) -> str:
    """`repr` of a short code- or id-like token (letters, digits, '.', '_', '-', at least one digit), else
    `describe(value)`.

    Codes and ids help a user find a bad row; a word without a digit may be a name from a note.
    """
    if (isinstance(value, str) and len(value) <= max_len and _TOKEN.fullmatch(value)
            and any(c.isdigit() for c in value)):
        return repr(value)
    return describe(value)
