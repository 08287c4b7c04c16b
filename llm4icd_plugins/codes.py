"""ICD code systems ("icd9": ICD-9-CM v32 dx + proc; "icd10": ICD-10-CM + ICD-10-PCS) and label spaces: the
lookups every tool and the reward use.

The tables behind them are merged from PyPI packages and cached as parquet by ``llm4icd_plugins.code_tables``
(the cold path; ``RELEASES`` and ``cache_dir`` are re-exported here). Importing this module loads no table.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Iterator

from . import atomic
from .code_tables import RELEASES, cache_dir, load_columns
from .normalize import SYSTEM_OF_TABLE, TABLES, canonicalize, table_of_canonical

__all__ = [
    "SYSTEMS",
    "RELEASES",
    "CodeSystem",
    "LabelSpace",
    "load_code_system",
    "load_label_space",
    "mimic3_top50_codes",
    "cache_dir",
]

SYSTEMS = ("icd9", "icd10")


class CodeSystem:
    """One ICD code system: canonical codes with table, description, billable flag, parent and releases.

    Build it with ``load_code_system(name)``. Lookups take canonical codes (``401.9``, ``0BH17EZ``);
    ``resolve`` turns free-form tokens into canonical codes.
    """

    def __init__(self, name: str, columns: dict[str, list], loaded_from: str, cache_path: Path | None):
        if name not in SYSTEMS:
            raise ValueError(f"unknown code system {name!r}; expected one of {', '.join(SYSTEMS)}")
        self.name = name
        self.loaded_from = loaded_from
        """"cache" when read from the parquet cache, "packages" when built from the packages."""
        self.cache_path = cache_path
        self._codes: list[str] = columns["code"]
        self._table = columns["table"]
        self._description = columns["description"]
        self._billable = columns["billable"]
        self._parent = columns["parent"]
        self._source = columns["source"]
        self._current = columns["current"]
        self._row = {code: i for i, code in enumerate(self._codes)}
        self._undotted_index: dict[str, tuple[str, ...]] | None = None
        self._children_index: dict[str, tuple[str, ...]] | None = None

    def __repr__(self) -> str:
        return f"CodeSystem({self.name!r}, {len(self)} codes, from {self.loaded_from})"

    def __contains__(self, code: object) -> bool:
        return code in self._row

    def __len__(self) -> int:
        return len(self._codes)

    def __iter__(self) -> Iterator[str]:
        return iter(self._codes)

    @property
    def tables(self) -> tuple[str, ...]:
        """The source tables of this system, e.g. ("icd9_dx", "icd9_proc")."""
        return tuple(t for t in TABLES if SYSTEM_OF_TABLE[t] == self.name)

    def codes(self, table: str | None = None) -> list[str]:
        """All codes (headers included), or those of one table, in table then code order."""
        if table is None:
            return list(self._codes)
        if table not in self.tables:
            raise ValueError(f"{table!r} is not a table of {self.name}; expected one of {', '.join(self.tables)}")
        return [c for c, t in zip(self._codes, self._table) if t == table]

    def _get(self, column: list, code: str):
        row = self._row.get(code)
        return None if row is None else column[row]

    def table_of(self, code: str) -> str | None:
        """Table of a known canonical code ("icd9_dx", ...), else ``None``."""
        return self._get(self._table, code)

    def description(self, code: str) -> str | None:
        """Title from the newest release that has one; ``None`` if unknown or untitled."""
        return self._get(self._description, code)

    def is_billable(self, code: str) -> bool | None:
        """True for a leaf (billable) code, False for a header, per the newest release holding it."""
        return self._get(self._billable, code)

    def parent(self, code: str) -> str | None:
        """The parent code (category of a subcategory, ...), ``None`` at the top or if unknown."""
        return self._get(self._parent, code)

    def children(self, code: str) -> tuple[str, ...]:
        """Codes whose parent is ``code``."""
        if self._children_index is None:
            index: dict[str, list[str]] = {}
            for child, parent in zip(self._codes, self._parent):
                if parent is not None:
                    index.setdefault(parent, []).append(child)
            self._children_index = {p: tuple(c) for p, c in index.items()}
        return self._children_index.get(code, ())

    def siblings(self, code: str) -> tuple[str, ...]:
        """Other children of the parent of ``code``; empty for top-level or unknown codes."""
        parent = self.parent(code)
        return tuple(c for c in self.children(parent) if c != code) if parent else ()

    def sources(self, code: str) -> tuple[str, ...]:
        """Releases the code was found in, oldest first (tags of ``RELEASES``); empty if unknown."""
        source = self._get(self._source, code)
        return tuple(source.split()) if source else ()

    def is_current(self, code: str) -> bool | None:
        """False for a retired code (only in older releases), ``None`` if unknown."""
        return self._get(self._current, code)

    def resolve(self, token: str) -> str | None:
        """Canonical code for a free-form token (dotted or not, any case), or ``None``.

        A known canonical code is returned as is; an undotted token is looked up among this system's
        codes with the dots removed and returned only when exactly one code matches (ICD-9 "4019"
        is both 401.9 and 40.19: ``None``, never a guess).
        """
        cleaned = canonicalize(token)
        if cleaned is None:
            return None
        if cleaned in self._row:
            return cleaned
        if "." in cleaned:
            return None
        if self._undotted_index is None:
            index: dict[str, list[str]] = {}
            for code in self._codes:
                index.setdefault(code.replace(".", ""), []).append(code)
            self._undotted_index = {k: tuple(v) for k, v in index.items()}
        matches = self._undotted_index.get(cleaned, ())
        return matches[0] if len(matches) == 1 else None


def load_code_system(name: str) -> CodeSystem:
    """The code system "icd9" or "icd10", from the parquet cache (built from the packages if absent).

    Cached per process and cache folder; ``load_code_system.cache_clear()`` forgets loaded systems.
    """
    if name not in SYSTEMS:
        raise ValueError(f"unknown code system {name!r}; expected one of {', '.join(SYSTEMS)}")
    return _load_cached(name, str(cache_dir()))


@functools.lru_cache(maxsize=None)
def _load_cached(name: str, directory: str) -> CodeSystem:
    columns, loaded_from, path = load_columns(name, Path(directory))
    return CodeSystem(name, columns, loaded_from, path)


load_code_system.cache_clear = _load_cached.cache_clear  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# Label spaces.


@dataclass(frozen=True)
class LabelSpace:
    """An ordered set of canonical codes of one system (e.g. MIMIC-III Top-50); validated on creation.

    Codes unknown to the tables are allowed (MIMIC-III holds retired codes): see ``unknown_codes``.
    """

    name: str
    system: str
    codes: tuple[str, ...]
    path: str | None = field(default=None, compare=False, repr=False)
    """File it was loaded from, used in error messages."""
    index: dict[str, int] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "codes", tuple(self.codes) if not isinstance(self.codes, str) else self.codes)
        self.validate()
        object.__setattr__(self, "index", {code: i for i, code in enumerate(self.codes)})

    def __len__(self) -> int:
        return len(self.codes)

    def __contains__(self, code: object) -> bool:
        return code in self.index

    def __iter__(self) -> Iterator[str]:
        return iter(self.codes)

    def _error(self, problem: str, fix: str) -> ValueError:
        where = f"label space file {self.path}" if self.path else f"label space {self.name!r}"
        return ValueError(f"{where}: {problem}; {fix}")

    def validate(self, code_system: CodeSystem | str | None = None) -> LabelSpace:
        """Raise ``ValueError`` (naming the file and the entry) for a bad name, system or code; return self.

        Checks: every code is a string in the canonical form of a table of ``system``, no duplicates,
        and ``code_system`` (a ``CodeSystem`` or its name), if given, is ``system``.
        """
        if not isinstance(self.name, str) or not self.name:
            raise self._error(f"name {self.name!r} is not a non-empty string", "give the label space a name")
        if self.system not in SYSTEMS:
            raise self._error(f"code_system {self.system!r} is unknown", f"use one of {', '.join(SYSTEMS)}")
        if isinstance(self.codes, str):
            raise self._error("codes is a string", "give a list of codes")
        if code_system is not None:
            other = code_system.name if isinstance(code_system, CodeSystem) else code_system
            if other != self.system:
                raise self._error(f"holds {self.system} codes but is used with code system {other!r}",
                                  "use the label space of the right dataset")
        seen: dict[str, int] = {}
        for i, code in enumerate(self.codes):
            if not isinstance(code, str) or table_of_canonical(code, self.system) is None:
                other = "icd10" if self.system == "icd9" else "icd9"
                hint = (f"it looks like an {other} code: check code_system" if isinstance(code, str)
                        and table_of_canonical(code, other) else
                        "write codes in canonical form, e.g. llm4icd_plugins.normalize.format_code('4019', "
                        "'icd9_dx') -> '401.9'")
                raise self._error(f"entry {i} ({code!r}) is not a canonical {self.system} code", hint)
            if code in seen:
                raise self._error(f"entry {i} ({code!r}) repeats entry {seen[code]}", "remove the duplicate")
            seen[code] = i
        return self

    def unknown_codes(self, code_system: CodeSystem | None = None) -> tuple[str, ...]:
        """Codes of this label space that the code tables do not know (e.g. retired ICD-9 codes)."""
        system = code_system if code_system is not None else load_code_system(self.system)
        self.validate(system)
        return tuple(code for code in self.codes if code not in system)

    def save(self, path: str | os.PathLike) -> None:
        """Write ``{"name", "code_system", "codes"}`` JSON atomically (temp file + rename)."""
        payload = json.dumps({"name": self.name, "code_system": self.system, "codes": list(self.codes)}, indent=1)
        atomic.write_text(path, payload + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> LabelSpace:
        """Read and validate a label space JSON file; ``ValueError`` naming the file on any problem."""
        path = str(path)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise ValueError(f"label space file {path} does not exist; check the path") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"label space file {path} is not valid JSON ({exc}); rewrite it with "
                             f"LabelSpace.save") from None
        missing = [k for k in ("name", "code_system", "codes") if not isinstance(data, dict) or k not in data]
        if missing:
            raise ValueError(f"label space file {path} lacks {', '.join(missing)}; expected a JSON object "
                             f'{{"name": ..., "code_system": "icd9"|"icd10", "codes": [...]}}')
        if not isinstance(data["codes"], list):
            raise ValueError(f"label space file {path}: codes is not a list; write a JSON list of codes")
        return cls(data["name"], data["code_system"], tuple(data["codes"]), path=path)


def load_label_space(path: str | os.PathLike) -> LabelSpace:
    """Same as ``LabelSpace.load``."""
    return LabelSpace.load(path)


def mimic3_top50_codes() -> tuple[str, ...]:
    """The fixed MIMIC-III Top-50 codes of Mullenbach et al. (2018, CAML), canonical ICD-9 forms."""
    text = resources.files("llm4icd_plugins").joinpath("data/mimic3_top50.txt").read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())
