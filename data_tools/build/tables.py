"""Reading the input tables of ``data_tools.build.prepare``: csv[.gz], feather, parquet and jsonl, with the wanted
columns matched case-insensitively, CSV files checked by a strict parser (a cut or badly quoted file is refused,
not read with shifted columns), and ids checked to be ids. Errors name the file, row and column, never a cell.
"""

from __future__ import annotations

import csv
import gzip
import re
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from llm4icd_plugins.errors import UserError, describe, user_error

DATA_SUFFIXES = (".feather", ".parquet", ".csv", ".csv.gz", ".jsonl", ".jsonl.gz", ".json")
NOTE_CHUNK_ROWS = 100_000
MAX_ID_LENGTH = 64  # longer ids, or ids with spaces, mean a text column was given as an id column
_COLUMN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,63}")  # looks like a column name, not a cell
_CSV_FIX = ("re-export or re-download the file complete; a field holding commas, quotes or line breaks must be "
            "quoted, with a quote inside it written twice")


def table_suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in DATA_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def _resolve_columns(path: Path, found: Sequence[str], required: Sequence[str], optional: Sequence[str]) -> dict:
    """Map wanted column names to the file's columns, case-insensitively (MIMIC-III exports differ)."""
    lower = {str(c).lower(): c for c in found}
    mapping = {}
    missing = []
    for name in list(required) + list(optional):
        actual = lower.get(name.lower())
        if actual is not None:
            mapping[actual] = name
        elif name in required:
            missing.append(name)
    if missing:
        raise user_error(path, f"missing column(s) {', '.join(missing)}; {_describe_header(found)}",
                         "pass the right file for this flag (column names are matched case-insensitively); "
                         "a CSV file needs a header row")
    return mapping


def _describe_header(found: Sequence) -> str:
    """The file's column names when they look like names; else only their count and lengths (a file
    without a header row has a data row, perhaps a note, where its header should be)."""
    names = [str(c) for c in found]
    if all(_COLUMN_NAME.fullmatch(n) for n in names):
        return f"the file has columns {', '.join(names)}"
    lengths = ", ".join(str(len(n)) for n in names[:12]) + (", ..." if len(names) > 12 else "")
    return (f"its first row ({len(names)} fields of {lengths} characters) does not look like a header row, "
            "so the file may have none")


def _read_error(path, exc: BaseException) -> UserError:
    """A reader's exception as a message: its type and any line number, never its text (which may
    quote the offending row)."""
    found = re.search(r"\b(?:line|row) (\d+)", str(exc))
    where = f" near line {found.group(1)}" if found else ""
    return user_error(path, f"cannot read the file ({type(exc).__name__}{where})",
                      "check that it is a complete, uncorrupted UTF-8 table of the expected format")


def check_csv(path: Path) -> int:
    """Parse a CSV with the standard library's strict parser and return its number of data rows.

    Every row must have the header's number of fields and the file must end with a line break: pandas'
    fast parser pads short rows and reads past a stray quote, so a cut or badly quoted file would
    silently cut notes and shift columns.
    """
    csv.field_size_limit(2**31 - 1)
    opener = gzip.open if table_suffix(path) == ".csv.gz" else open
    n_fields, rows, last = None, 0, ["\n"]

    def lines(handle):
        for line in handle:
            last[0] = line
            yield line

    reader = None
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as handle:
            reader = csv.reader(lines(handle), strict=True)
            for record in reader:
                if not record:
                    continue
                if n_fields is None:
                    n_fields = len(record)
                    continue
                rows += 1
                if len(record) != n_fields:
                    raise user_error(path, f"the row has {len(record)} fields where the header has {n_fields} "
                                     "(a cut file, or a field with a comma or line break that is not quoted)",
                                     _CSV_FIX, row=rows, line=reader.line_num)
    except csv.Error:
        raise user_error(path, "broken CSV quoting (a quote inside a field that is not written twice, or a "
                         "quoted field that never ends)", _CSV_FIX, row=rows + 1,
                         line=reader.line_num if reader else None) from None
    except UnicodeDecodeError:
        raise user_error(path, "the file is not UTF-8 text", "convert it to UTF-8 (MIMIC's files are UTF-8)",
                         line=(reader.line_num + 1) if reader else None) from None
    except (OSError, EOFError, zlib.error) as exc:
        raise _read_error(path, exc) from None
    if not last[0].endswith(("\n", "\r")):
        raise user_error(path, "the file does not end with a line break, so its last row may be cut",
                         f"{_CSV_FIX} (if the file is complete, add a line break at its end)",
                         row=rows, line=reader.line_num)
    return rows


def read_table(path, required: Sequence[str], optional: Sequence[str] = (), *, chunk_filter=None,
               desc: str | None = None, str_columns: bool = True) -> pd.DataFrame:
    """Read a csv[.gz]/feather/parquet/jsonl table keeping only the wanted columns, renamed to the
    wanted spelling; the index is the 0-based data row (for error messages). ``chunk_filter``
    (csv only) filters each chunk while reading, so huge tables like NOTEEVENTS fit in memory."""
    path = Path(path)
    if not path.is_file():
        raise user_error(path, "file not found", "check the path (or --root) and the file name")
    suffix = table_suffix(path)
    csv_rows = check_csv(path) if suffix in (".csv", ".csv.gz") else None
    try:
        if suffix in (".csv", ".csv.gz"):
            header = pd.read_csv(path, nrows=0).columns
            mapping = _resolve_columns(path, header, required, optional)
            kwargs = dict(usecols=list(mapping), keep_default_na=False, na_values=[""],
                          dtype=str if str_columns else None, engine="c", encoding="utf-8")
            if chunk_filter is None:
                frame = pd.read_csv(path, **kwargs)
                read_rows = len(frame)
            else:
                chunks, read_rows = [], 0
                reader = pd.read_csv(path, chunksize=NOTE_CHUNK_ROWS, **kwargs)
                for chunk in tqdm(reader, desc=desc or f"reading {path.name}", unit="chunk", leave=False):
                    read_rows += len(chunk)
                    chunks.append(chunk_filter(chunk.rename(columns=mapping)))
                frame = pd.concat(chunks) if chunks else pd.DataFrame(columns=list(mapping.values()))
            if read_rows != csv_rows:
                raise user_error(path, f"pandas read {read_rows} rows where the strict CSV parser found {csv_rows}",
                                 _CSV_FIX)
            if chunk_filter is not None:
                return frame
        elif suffix == ".feather":
            frame = pd.read_feather(path)
        elif suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif suffix in (".jsonl", ".jsonl.gz"):
            frame = pd.read_json(path, lines=True, dtype=False)
        elif suffix == ".json":
            frame = pd.read_json(path, dtype=False)
        else:
            raise user_error(path, f"unsupported file type {suffix!r}", f"use one of {', '.join(DATA_SUFFIXES)}")
    except UserError:
        raise
    except Exception as exc:  # pandas/pyarrow raise many types for unreadable files
        raise _read_error(path, exc) from None
    if suffix not in (".csv", ".csv.gz"):
        mapping = _resolve_columns(path, frame.columns, required, optional)
        frame = frame[list(mapping)]
    frame = frame.rename(columns=mapping).reset_index(drop=True)
    return frame


def norm_ids(values: pd.Series, path=None, column: str | None = None) -> pd.Series:
    """Admission/subject ids as strings ("12345"), whatever dtype the file used (int, float, str).

    With ``path``, an id that is not a short token (spaces, over ``MAX_ID_LENGTH`` characters, not a
    scalar) is an error naming the row: it means a text column was given where an id column belongs.
    """
    if path is not None:
        bad = values.map(lambda v: not (v is None or isinstance(v, (str, int, float, np.integer, np.floating))))
        text = values.where(~bad, None).astype("string").str.strip()
        bad |= text.str.len().gt(MAX_ID_LENGTH).fillna(False) | text.str.contains(r"\s", regex=True).fillna(False)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise user_error(path, f"the id is {describe(values.iloc[row])}, not a short id without spaces "
                             f"({int(bad.sum())} such row(s))", "name the column of ids (is this the text column?)",
                             row=row + 1, column=column)
    out = values.astype("string").str.strip()
    return out.str.replace(r"^(\d+)\.0+$", r"\1", regex=True)
