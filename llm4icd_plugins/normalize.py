"""String forms of ICD codes: MIMIC's undotted codes and free-form tokens → the canonical Edin/MIMIC form.

Canonical forms (Edin et al. 2023): ICD-9 diagnoses get a dot after 3 characters (after 4 for
E-codes), ICD-9 procedures after 2, ICD-10-CM after 3, ICD-10-PCS has no dot. The dot is what keeps
ICD-9 diagnoses and procedures apart, so an undotted ICD-9 code is only formatted when the caller
names the table it came from. Pure functions, no code tables: see ``codes`` for those.
"""

from __future__ import annotations

import re
import unicodedata

TABLES = ("icd9_dx", "icd9_proc", "icd10_dx", "icd10_proc")
"""Source tables of MIMIC: (ICD version, diagnosis or procedure)."""

SYSTEM_OF_TABLE = {"icd9_dx": "icd9", "icd9_proc": "icd9", "icd10_dx": "icd10", "icd10_proc": "icd10"}

_CANONICAL = {
    "icd9_dx": re.compile(r"^(?:\d{3}(?:\.\d{1,2})?|V\d{2}(?:\.\d{1,2})?|E\d{3}(?:\.\d)?)$"),
    "icd9_proc": re.compile(r"^\d{2}(?:\.\d{1,2})?$"),
    "icd10_dx": re.compile(r"^[A-Z](?:\d[0-9A-Z]|[A-Z]\d)(?:\.[0-9A-Z]{1,4})?$"),  # QA0: FY2026
    "icd10_proc": re.compile(r"^[0-9A-HJ-NP-Z]{7}$"),
}
# Any token that has the shape of some ICD code (dotted or not); content is checked by code tables.
_CODE_SHAPE = re.compile(r"^(?=[A-Z0-9.]*\d)(?:[A-Z0-9]{2,7}|[A-Z0-9]{2,4}\.[A-Z0-9]{1,4})$")
_WHITESPACE = re.compile(r"\s+")
# Decoration a model or a spreadsheet puts around a code; stripped from the ends only.
_EDGE_CHARS = " \t\r\n'\"`*-•·[](){}"


def _dot_position(undotted: str, table: str) -> int:
    if table == "icd9_dx":
        return 4 if undotted.startswith("E") else 3
    if table == "icd9_proc":
        return 2
    if table == "icd10_dx":
        return 3
    return 0  # icd10_proc: never dotted


def format_code(raw: str, table: str) -> str:
    """Format a code read from a MIMIC table (undotted or dotted, any case) to its canonical form.

    ``table`` is one of ``TABLES``: it decides where the dot goes. Raises ``ValueError`` with the
    reason when the code cannot be a code of that table (empty, wrong shape).
    """
    if table not in _CANONICAL:
        raise ValueError(f"unknown code table {table!r}; expected one of {', '.join(TABLES)}")
    if not isinstance(raw, str):
        raise ValueError(f"code {raw!r} is not a string")
    undotted = _WHITESPACE.sub("", unicodedata.normalize("NFKC", raw)).upper().replace(".", "")
    if not undotted:
        raise ValueError("empty code")
    pos = _dot_position(undotted, table)
    code = f"{undotted[:pos]}.{undotted[pos:]}" if pos and len(undotted) > pos else undotted
    if not _CANONICAL[table].match(code):
        raise ValueError(f"{raw!r} is not a well-formed {table} code (formatted as {code!r})")
    return code


def canonicalize(token: str) -> str | None:
    """Clean a free-form code token without guessing its table; ``None`` if it cannot be a code.

    NFKC-folds (full-width digits become ASCII; look-alike letters from other scripts stay and make
    the token malformed), drops whitespace and edge decoration, upper-cases and removes trailing
    dots. Never adds a dot: resolving undotted forms needs a code system (``CodeSystem.resolve``).
    """
    if not isinstance(token, str) or len(token) > 64:
        return None
    cleaned = unicodedata.normalize("NFKC", token).strip(_EDGE_CHARS)
    cleaned = _WHITESPACE.sub("", cleaned).upper().rstrip(".")
    if not cleaned.isascii() or not _CODE_SHAPE.match(cleaned):
        return None
    return cleaned


def table_of_canonical(code: str, system: str) -> str | None:
    """The table of ``system`` ("icd9" or "icd10") whose canonical form ``code`` has, else ``None``.

    Within one system the canonical forms of diagnoses and procedures are disjoint (that is what the
    dots are for), so the form alone decides; it says nothing about whether the code exists.
    """
    for table in TABLES:
        if SYSTEM_OF_TABLE[table] == system and _CANONICAL[table].match(code):
            return table
    return None


def is_canonical(code: str, table: str) -> bool:
    """True if ``code`` is already in the canonical form of ``table``."""
    return bool(_CANONICAL[table].match(code))


_MAX_DEPTH = 16  # guards the parent walk against a cycle in a damaged table


def _string_category(code: str) -> str:
    head = code.split(".", 1)[0]
    return head[:3] if "." not in code and len(code) == 7 else head


def category(code: str, code_system=None) -> str:
    """The category of a canonical code: its top ancestor in ``code_system`` (a ``codes.CodeSystem``), else
    the string rule (the part before the dot; the first three characters of a 7-character PCS code)."""
    root = code
    if code_system is not None and code in code_system:
        for _ in range(_MAX_DEPTH):
            parent = code_system.parent(root)
            if not parent:
                break
            root = parent
    return _string_category(root)
