"""Raw tables → notes and code rows: MIMIC-III (NOTEEVENTS, DIAGNOSES/PROCEDURES_ICD), MIMIC-IV
(note/discharge, hosp/*_icd) and a generic table, read the way the paper (App. A) prepares them.

Each loader returns a ``RawData``: one lower-cased text per admission (MIMIC-III addenda joined to the
report in chart order) and its code rows in canonical dotted form with their order (diagnoses before
procedures, MIMIC's sequence order); what is dropped and why is counted in a ``Report``. Errors name the
file, row and column, never a cell's contents (notes are PHI).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from data_tools.build.tables import DATA_SUFFIXES, MAX_ID_LENGTH, norm_ids, read_table, table_suffix
from llm4icd_plugins import prompts
from llm4icd_plugins.errors import UserError, describe, show_token, user_error
from llm4icd_plugins.normalize import canonicalize, format_code, table_of_canonical

MIMIC3_FILES = {"notes": "NOTEEVENTS", "diagnoses": "DIAGNOSES_ICD", "procedures": "PROCEDURES_ICD"}
MIMIC4_FILES = {"notes": "note/discharge", "diagnoses": "hosp/diagnoses_icd", "procedures": "hosp/procedures_icd"}
SPLIT_FILE_NAMES = {
    "mimic3": ("mimiciii_clean_splits", "mimiciii_clean_split"),
    "mimic4_10": ("mimiciv_icd10_split", "mimiciv_icd10_splits"),
    "mimic4_9": ("mimiciv_icd9_split", "mimiciv_icd9_splits"),
}


def find_file(root: Path | None, explicit, stems: Iterable[str], flag: str) -> Path:
    """The table for ``flag``: the explicit path, else the first ``<stem><suffix>`` found under ``root``."""
    if explicit:
        return Path(explicit)
    if root is None:
        raise UserError(f"no file for {flag}. Fix: pass {flag} PATH or --root DIR")
    for stem in stems:
        for suffix in DATA_SUFFIXES:
            candidate = root / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    tried = ", ".join(f"{stem}{{{','.join(DATA_SUFFIXES)}}}" for stem in stems)
    raise UserError(f"{root}: no file for {flag} (looked for {tried}). Fix: pass {flag} PATH")


# --- text and codes -----------------------------------------------------------------------------------

def process_text(text: str) -> str:
    """Lower-case a note, keeping punctuation and layout (paper App. A); unify line endings."""
    return text.replace("\r\n", "\n").replace("\r", "\n").lower().strip()


@dataclass
class Report:
    """Counts collected along the way: what was dropped and why, what was kept but flagged."""

    dropped: Counter = field(default_factory=Counter)
    info: dict = field(default_factory=dict)

    def drop(self, reason: str, n: int = 1) -> None:
        if n:
            self.dropped[reason] += int(n)


def format_code_column(frame: pd.DataFrame, column: str, table: str | pd.Series, path, report: Report,
                       skip_malformed: bool) -> pd.DataFrame:
    """Add ``code`` (canonical form) to code rows read from ``path``; empty codes are dropped and
    counted; a malformed code is an error naming the row, or dropped and counted if skipping."""
    empty = frame[column].isna() | (frame[column].astype("string").str.strip() == "")
    report.drop(f"{Path(path).name}: rows with an empty code", int(empty.sum()))
    frame = frame[~empty].copy()
    tables = table if isinstance(table, pd.Series) else pd.Series(table, index=frame.index)
    tables = tables.loc[frame.index]
    formatted: dict[tuple[str, str], str | None] = {}
    for raw, tbl in set(zip(frame[column], tables)):
        try:
            formatted[(raw, tbl)] = format_code(raw, tbl)
        except ValueError:
            formatted[(raw, tbl)] = None
    frame["code"] = [formatted[key] for key in zip(frame[column], tables)]
    bad = frame["code"].isna()
    if bad.any():
        if not skip_malformed:
            row = int(frame.index[bad.to_numpy()][0])
            raw, tbl = frame.loc[row, column], tables.loc[row]
            raise user_error(path, f"code {show_token(raw)} is not a well-formed {tbl} code "
                             f"({int(bad.sum())} such row(s) in the file)",
                             "correct the code, or pass --skip-malformed to drop such rows (they are counted)",
                             row=row + 1, column=column)
        report.drop(f"{Path(path).name}: rows with a malformed code (--skip-malformed)", int(bad.sum()))
        frame = frame[~bad]
    return frame


# --- loaders: each returns notes (id, subject_id, text) and code rows (id, code, order) ----------------

@dataclass
class RawData:
    notes: pd.DataFrame
    codes: pd.DataFrame
    code_system: str
    corpus: str
    sources: dict
    unusable: set = field(default_factory=set)  # admissions whose every note was dropped (empty, ISERROR)


def load_mimic3(notes_path, dx_path, proc_path, report: Report, skip_malformed: bool = False) -> RawData:
    """MIMIC-III: NOTEEVENTS discharge summaries (addenda joined) and ICD-9 DIAGNOSES/PROCEDURES_ICD."""
    categories: Counter = Counter()

    def keep_discharge(chunk: pd.DataFrame) -> pd.DataFrame:
        is_ds = chunk["CATEGORY"].str.strip().str.lower() == "discharge summary"
        categories["discharge"] += int(is_ds.sum())
        categories["other"] += int((~is_ds).sum())
        return chunk[is_ds]

    notes = read_table(notes_path, ["SUBJECT_ID", "HADM_ID", "CATEGORY", "TEXT"],
                       ["ROW_ID", "CHARTDATE", "CHARTTIME", "DESCRIPTION", "ISERROR"],
                       chunk_filter=keep_discharge if table_suffix(Path(notes_path)).startswith(".csv") else None,
                       desc="reading NOTEEVENTS")
    if not categories:  # non-csv input: filter after reading
        notes = keep_discharge(notes)
    report.drop("NOTEEVENTS: notes of other categories (not 'Discharge summary')", categories["other"])
    flagged: set = set()
    if "ISERROR" in notes:
        error = notes["ISERROR"].notna() & ~notes["ISERROR"].astype("string").str.strip().isin(["", "0"])
        report.drop("NOTEEVENTS: discharge summaries flagged ISERROR", int(error.sum()))
        flagged = set(norm_ids(notes.loc[error, "HADM_ID"]).dropna())
        notes = notes[~error]
    notes, unusable = _join_notes(notes, notes_path, report, id_col="HADM_ID", subject_col="SUBJECT_ID",
                                  text_col="TEXT", order_cols=["CHARTDATE", "CHARTTIME"], addendum_col="DESCRIPTION",
                                  row_col="ROW_ID")
    unusable |= flagged - set(notes["id"])
    codes = []
    for path, table in ((dx_path, "icd9_dx"), (proc_path, "icd9_proc")):
        rows = read_table(path, ["HADM_ID", "ICD9_CODE"], ["SEQ_NUM", "SUBJECT_ID"])
        codes.append(_code_rows(rows, path, "HADM_ID", "ICD9_CODE", "SEQ_NUM", table, report, skip_malformed))
    return RawData(notes, pd.concat(codes, ignore_index=True), "icd9", "MIMIC-III",
                   {"notes": str(notes_path), "diagnoses": str(dx_path), "procedures": str(proc_path)}, unusable)


def load_mimic4(notes_path, dx_path, proc_path, report: Report, icd_version: int = 10,
                skip_malformed: bool = False) -> RawData:
    """MIMIC-IV: note/discharge and hosp/diagnoses_icd, hosp/procedures_icd rows of ``icd_version``."""
    is_csv = table_suffix(Path(notes_path)).startswith(".csv")
    notes = read_table(notes_path, ["subject_id", "hadm_id", "text"], ["note_id", "note_type", "note_seq", "charttime"],
                       chunk_filter=(lambda chunk: chunk) if is_csv else None, desc="reading discharge notes")
    notes, unusable = _join_notes(notes, notes_path, report, id_col="hadm_id", subject_col="subject_id",
                                  text_col="text", order_cols=["charttime"], addendum_col=None, row_col="note_seq")
    codes = []
    for path, kind in ((dx_path, "dx"), (proc_path, "proc")):
        rows = read_table(path, ["hadm_id", "icd_code", "icd_version"], ["seq_num", "subject_id"])
        version = rows["icd_version"].astype("string").str.strip().str.replace(r"\.0+$", "", regex=True)
        bad = ~version.isin(["9", "10"])
        if bad.any():
            row = int(rows.index[bad.to_numpy()][0])
            raise user_error(path, f"icd_version {show_token(rows.loc[row, 'icd_version'])} is neither 9 nor 10",
                             "pass an unmodified MIMIC-IV hosp table", row=row + 1)
        keep = version == str(icd_version)
        report.drop(f"{Path(path).name}: rows with icd_version {19 - icd_version} "
                    f"(this variant keeps ICD-{icd_version} only)", int((~keep).sum()))
        rows = rows[keep]
        table = f"icd{icd_version}_{kind}"
        codes.append(_code_rows(rows, path, "hadm_id", "icd_code", "seq_num", table, report, skip_malformed))
    system = f"icd{icd_version}"
    return RawData(notes, pd.concat(codes, ignore_index=True), system, "MIMIC-IV",
                   {"notes": str(notes_path), "diagnoses": str(dx_path), "procedures": str(proc_path)}, unusable)


def _join_notes(notes: pd.DataFrame, path, report: Report, *, id_col, subject_col, text_col, order_cols,
                addendum_col, row_col) -> tuple[pd.DataFrame, set]:
    """One text per admission: its notes in chart order (a report before its addenda on ties), and the
    admissions left without a note (all empty or flagged ISERROR). Identical notes count once."""
    notes = notes.copy()
    notes["id"] = norm_ids(notes[id_col], path, id_col)
    no_id = notes["id"].isna() | (notes["id"] == "")
    report.drop(f"{Path(path).name}: discharge notes without an admission id", int(no_id.sum()))
    notes = notes[~no_id]
    no_text = notes[text_col].isna() | notes[text_col].astype("string").str.strip().eq("").fillna(True)
    report.drop(f"{Path(path).name}: discharge notes with empty or whitespace-only text", int(no_text.sum()))
    unusable = set(notes.loc[no_text, "id"]) - set(notes.loc[~no_text, "id"])
    notes = notes[~no_text]
    dup = notes.duplicated(["id", text_col])
    report.drop(f"{Path(path).name}: duplicate discharge notes (same admission and text; kept once)",
                int(dup.sum()))
    notes = notes[~dup]
    keys = [c for c in order_cols if c in notes]
    if addendum_col and addendum_col in notes:
        notes["_addendum"] = notes[addendum_col].astype("string").str.strip().str.lower().eq("addendum")
        keys.append("_addendum")
    if row_col in notes:
        notes["_row"] = pd.to_numeric(notes[row_col], errors="coerce")
        keys.append("_row")
    notes["_pos"] = np.arange(len(notes))
    notes = notes.sort_values(["id", *keys, "_pos"], na_position="last", kind="stable")
    n_parts = notes.groupby("id", sort=False).size()
    report.info["notes_joined_from_several_parts"] = int((n_parts > 1).sum())
    grouped = notes.groupby("id", sort=False).agg(subject_id=(subject_col, "first"), text=(text_col, "\n\n".join))
    grouped = grouped.reset_index()
    grouped["subject_id"] = norm_ids(grouped["subject_id"], path, subject_col)
    grouped["text"] = [process_text(t) for t in tqdm(grouped["text"], desc="processing notes", unit="note",
                                                      leave=False)]
    return grouped[["id", "subject_id", "text"]], unusable


def _code_rows(rows: pd.DataFrame, path, id_col, code_col, seq_col, table, report, skip_malformed) -> pd.DataFrame:
    rows = rows.copy()
    rows["id"] = norm_ids(rows[id_col], path, id_col)
    no_id = rows["id"].isna() | (rows["id"] == "")
    report.drop(f"{Path(path).name}: code rows without an admission id", int(no_id.sum()))
    rows = rows[~no_id]
    rows = format_code_column(rows, code_col, table, path, report, skip_malformed)
    seq = pd.to_numeric(rows[seq_col], errors="coerce") if seq_col in rows else pd.Series(0, index=rows.index)
    # Diagnoses before procedures, each in MIMIC's sequence order (principal diagnosis first).
    kind_rank = 0 if table.endswith("_dx") else 1
    return pd.DataFrame({"id": rows["id"].to_numpy(), "code": rows["code"].to_numpy(), "kind": kind_rank,
                         "seq": seq.fillna(np.inf).to_numpy(dtype=float), "row": rows.index.to_numpy()})


def load_generic(path, code_system: str, report: Report, *, id_col="id", text_col="text", codes_col="codes",
                 split_col="split", subject_col="subject_id", corpus: str | None = None,
                 skip_malformed: bool = False) -> tuple[RawData, pd.DataFrame | None]:
    """A table with id, text, codes (list or comma-separated) and optional split/subject columns.

    Codes may be canonical (dotted) or undotted when the code system resolves them unambiguously.
    Returns the data and, when the table has a split column, the splits (``_id``, ``split``).
    """
    from llm4icd_plugins.codes import load_code_system

    roles = {"--id-column": id_col, "--text-column": text_col, "--codes-column": codes_col,
             "--split-column": split_col, "--subject-column": subject_col}
    seen: dict[str, str] = {}
    for flag, column in roles.items():
        if column.lower() in seen:
            raise user_error(path, f"{seen[column.lower()]} and {flag} both name column '{column}'",
                             "give each flag its own column")
        seen[column.lower()] = flag
    frame = read_table(path, [id_col, text_col, codes_col], [split_col, subject_col], str_columns=False)
    system = load_code_system(code_system)
    frame["id"] = norm_ids(frame[id_col], path, id_col)
    missing_id = frame["id"].isna() | (frame["id"] == "")
    if missing_id.any():
        raise user_error(path, "empty id", "give every row a unique id", row=int(frame.index[missing_id][0]) + 1,
                         column=id_col)
    dup = frame["id"].duplicated()
    if dup.any():
        row = int(frame.index[dup.to_numpy()][0])
        raise user_error(path, f"duplicate id {frame.loc[row, 'id']!r}", "give every row a unique id", row=row + 1,
                         column=id_col)
    texts = frame[text_col]
    bad_text = texts.map(lambda t: not isinstance(t, str) or not t.strip())
    if bad_text.any():
        row = int(np.flatnonzero(bad_text.to_numpy())[0])
        raise user_error(path, f"the note text is {describe(texts.iloc[row])}", "give every row a note text",
                         row=row + 1, column=text_col)
    if split_col in frame:
        not_token = frame[split_col].map(lambda v: isinstance(v, str) and len(v) > MAX_ID_LENGTH)
        if not_token.any():
            row = int(np.flatnonzero(not_token.to_numpy())[0])
            raise user_error(path, f"the split is {describe(frame[split_col].iloc[row])}, not train, val or test",
                             "name the column of splits (is this the text column?)", row=row + 1, column=split_col)
    cache: dict[str, str | None] = {}
    code_rows = []
    for row, (sample_id, value) in enumerate(zip(frame["id"], frame[codes_col])):
        tokens = _code_tokens(value, path, row, codes_col)
        for pos, token in enumerate(tokens):
            if token not in cache:
                cache[token] = _generic_code(token, system)
            code = cache[token]
            if code is None:
                if not skip_malformed:
                    raise user_error(path, f"code {show_token(token)} is neither a canonical {code_system} code "
                                     f"nor an undotted one that {code_system} resolves unambiguously",
                                     "write it in its dotted canonical form (e.g. 401.9, 96.04, E11.9), or pass "
                                     "--skip-malformed to drop it (counted)", row=row + 1, column=codes_col)
                report.drop(f"{Path(path).name}: malformed or ambiguous codes (--skip-malformed)")
                continue
            code_rows.append((sample_id, code, 0, float(pos), row))
    subjects = (norm_ids(frame[subject_col], path, subject_col) if subject_col in frame
                else pd.Series([None] * len(frame), dtype="string"))
    notes = pd.DataFrame({"id": frame["id"], "subject_id": subjects.to_numpy(),
                          "text": [process_text(t) for t in texts]})
    codes = pd.DataFrame(code_rows, columns=["id", "code", "kind", "seq", "row"])
    splits = None
    if split_col in frame:
        splits = pd.DataFrame({"_id": frame["id"], "split": frame[split_col]})
    raw = RawData(notes, codes, code_system, corpus or prompts.DEFAULT_CORPUS[code_system], {"input": str(path)})
    return raw, splits


def _code_tokens(value, path, row, column) -> list[str]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, str):
        return [t.strip() for t in value.replace(";", ",").split(",") if t.strip()]
    if isinstance(value, (list, tuple, np.ndarray)):
        if not all(isinstance(t, (str, int, float, np.integer, np.floating)) for t in value):
            raise user_error(path, "the list of codes holds nested values", "store codes as a flat list of strings",
                             row=row + 1, column=column)
        tokens = [str(t).strip() for t in value]
        return [t for t in tokens if t]
    raise user_error(path, f"the codes are {describe(value)}, not a list or a comma-separated string",
                     "store codes as a list of strings or as 'c1, c2'", row=row + 1, column=column)


def _generic_code(token: str, system) -> str | None:
    cleaned = canonicalize(token)
    if cleaned is None:
        return None
    # An undotted token may have another system table's form too (S2090XS looks like a PCS code):
    # let the tables decide first, and keep well-formed codes they do not know as they are.
    resolved = system.resolve(cleaned)
    if resolved is not None:
        return resolved
    return cleaned if table_of_canonical(cleaned, system.name) is not None else None


