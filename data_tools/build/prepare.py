"""Raw MIMIC-III / MIMIC-IV tables (or a generic table) → LlamaFactory SFT and verl RL datasets.

Follows the paper (App. A) and Edin et al.'s clean splits: discharge summaries (MIMIC-III addenda
joined to the report in chart order), lower-cased with punctuation and layout kept; codes put in the
canonical dotted form of their source table, deduplicated per admission; codes seen fewer than
``--min-code-count`` times removed and admissions left without codes dropped; Full and Top-50
variants. Codes unknown to the current ICD tables (MIMIC-III's retired codes) are gold labels: kept
and counted, never dropped or corrected. With ``--tokenizer`` every prompt is truncated (tiered
middle-out, ``llm4icd_plugins.truncation``) so that neither LlamaFactory nor verl cuts it silently.

    python -m data_tools.build.prepare mimic3 --root MIMIC3_DIR --splits mimiciii_clean_splits.feather --out data/prepared
    python -m data_tools.build.prepare mimic4 --root MIMIC4_DIR --splits mimiciv_icd10_split.feather --out data/prepared
    python -m data_tools.build.prepare generic --input table.jsonl --code-system icd10 --name mydata --out data/prepared

Everything is written to a temporary folder next to ``--out`` and renamed into place at the end: a
failed run leaves no partial output, and the variants of one run replace the previous ones together (a
run killed while renaming is completed by the next start, which also removes a killed run's temporary
folders). Note text is never printed or logged (MIMIC notes are PHI): errors name the file, row and
column, never a cell's contents.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from data_tools.cli import run_tool
from data_tools.build.tables import DATA_SUFFIXES, MAX_ID_LENGTH, norm_ids, read_table, table_suffix
from llm4icd_plugins import atomic
from llm4icd_plugins import prompts
from llm4icd_plugins.errors import UserError, describe, show_token, user_error
from llm4icd_plugins.normalize import canonicalize, format_code, table_of_canonical

SPLITS = ("train", "val", "test")
MIMIC3_FILES = {"notes": "NOTEEVENTS", "diagnoses": "DIAGNOSES_ICD", "procedures": "PROCEDURES_ICD"}
MIMIC4_FILES = {"notes": "note/discharge", "diagnoses": "hosp/diagnoses_icd", "procedures": "hosp/procedures_icd"}
SPLIT_FILE_NAMES = {
    "mimic3": ("mimiciii_clean_splits", "mimiciii_clean_split"),
    "mimic4_10": ("mimiciv_icd10_split", "mimiciv_icd10_splits"),
    "mimic4_9": ("mimiciv_icd9_split", "mimiciv_icd9_splits"),
}
ABILITY = "icd_coding"
SHAREGPT_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                 "assistant_tag": "assistant", "system_tag": "system"}
COMMIT_MARK = "COMMIT"  # in a staging folder: the new variants are complete, replace the old ones
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")  # --name; a staging folder is .<out>.tmp-<name>+XXXX


def _find_file(root: Path | None, explicit, stems: Iterable[str], flag: str) -> Path:
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


# --- splits ---------------------------------------------------------------------------------------------

def load_splits(path) -> pd.DataFrame:
    """Edin's clean split file: ``_id`` (admission id) and ``split`` in train/val/test."""
    frame = read_table(path, ["_id", "split"])
    return _check_splits(frame, path)


def _check_splits(frame: pd.DataFrame, path) -> pd.DataFrame:
    frame = frame.copy()
    frame["_id"] = norm_ids(frame["_id"], path, "_id")
    frame["split"] = frame["split"].astype("string").str.strip().str.lower()
    bad = ~frame["split"].isin(SPLITS) | frame["_id"].isna()
    if bad.any():
        row = int(frame.index[bad.to_numpy()][0])
        split, sample = show_token(frame.loc[row, "split"]), show_token(frame.loc[row, "_id"])
        raise user_error(path, f"split {split} for id {sample} is not one of {', '.join(SPLITS)}",
                         "use the split names train, val and test", row=row + 1)
    dup = frame["_id"].duplicated()
    if dup.any():
        row = int(frame.index[dup.to_numpy()][0])
        raise user_error(path, f"id {frame.loc[row, '_id']} appears more than once", "list every admission once",
                         row=row + 1)
    return frame


def random_splits(ids: Sequence[str], groups: Sequence | None, val_fraction: float, test_fraction: float,
                  seed: int) -> pd.DataFrame:
    """Group-level (patient-level when groups are subjects) random split for tables without one."""
    ids = list(ids)
    keys = [g if g is not None and not pd.isna(g) else f"id:{i}" for g, i in zip(groups or ids, ids)]
    unique = sorted(set(keys))
    order = np.random.default_rng(seed).permutation(len(unique))
    n_test = int(round(test_fraction * len(unique)))
    n_val = int(round(val_fraction * len(unique)))
    assignment = {}
    for rank, idx in enumerate(order):
        assignment[unique[idx]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return pd.DataFrame({"_id": ids, "split": [assignment[k] for k in keys]})


# --- assembling examples -------------------------------------------------------------------------------

def assemble(raw: RawData, splits: pd.DataFrame, splits_path, report: Report, min_code_count: int) -> pd.DataFrame:
    """Examples (id, subject_id, text, codes, split) of the admissions in the split file, with
    deduplicated codes, rare codes removed and code-less admissions dropped."""
    notes = raw.notes.set_index("id")
    unusable = splits["_id"].isin(raw.unusable) & ~splits["_id"].isin(notes.index)
    report.drop("admissions in the split file whose discharge summaries are all empty or flagged ISERROR",
                int(unusable.sum()))
    splits = splits[~unusable]
    in_notes = splits["_id"].isin(notes.index)
    if not in_notes.all():
        row = int(splits.index[~in_notes.to_numpy()][0])
        raise user_error(splits_path, f"{int((~in_notes).sum())} split id(s) have no discharge summary in "
                         f"{raw.sources.get('notes', raw.sources.get('input'))} (first: {splits.loc[row, '_id']})",
                         "pass the split file that belongs to these notes (e.g. mimiciii_clean_splits for MIMIC-III, "
                         "mimiciv_icd10_split for MIMIC-IV ICD-10)", row=row + 1)
    report.drop("admissions with a discharge summary but not in the split file",
                int((~notes.index.isin(splits["_id"])).sum()))
    codes = raw.codes
    no_note = ~codes["id"].isin(splits["_id"])
    report.info["code_rows_of_admissions_outside_the_split_file"] = int(no_note.sum())
    codes = codes[~no_note].sort_values(["kind", "seq", "row"], kind="stable")
    dup = codes.duplicated(["id", "code"])
    report.info["duplicate_code_rows_removed"] = int(dup.sum())
    codes = codes[~dup]
    per_id = codes.groupby("id", sort=False)["code"].agg(list)
    examples = pd.DataFrame({"id": splits["_id"].to_numpy(), "split": splits["split"].to_numpy()})
    examples["subject_id"] = notes.loc[examples["id"], "subject_id"].to_numpy()
    examples["text"] = notes.loc[examples["id"], "text"].to_numpy()
    examples["codes"] = [per_id.get(i, []) for i in examples["id"]]
    empty = examples["codes"].map(len) == 0
    report.drop("admissions without any code", int(empty.sum()))
    examples = examples[~empty]

    counts = Counter(c for codes_ in examples["codes"] for c in codes_)
    rare = {c for c, n in counts.items() if n < min_code_count}
    report.info["rare_codes_removed"] = {"threshold": min_code_count, "distinct": len(rare),
                                         "occurrences": int(sum(counts[c] for c in rare))}
    if rare:
        examples = examples.assign(codes=[[c for c in cs if c not in rare] for cs in examples["codes"]])
        empty = examples["codes"].map(len) == 0
        report.drop(f"admissions left without codes after removing codes seen < {min_code_count} times",
                    int(empty.sum()))
        examples = examples[~empty]
    subjects = examples.dropna(subset=["subject_id"]).groupby("subject_id")["split"].nunique()
    leaking = int((subjects > 1).sum())
    report.info["subjects_in_several_splits"] = leaking
    if leaking:
        print(f"warning: {leaking} subject(s) have admissions in more than one split; the clean splits are "
              "patient-level, check the split file", file=sys.stderr)
    order = {s: i for i, s in enumerate(SPLITS)}
    examples = examples.sort_values("split", key=lambda s: s.map(order), kind="stable")
    return examples.reset_index(drop=True)


def top50_codes(examples: pd.DataFrame, dataset: str) -> tuple[list[str], dict]:
    """MIMIC-III: Mullenbach's fixed list ∩ codes in the data; otherwise the 50 most frequent
    training codes (ties broken by code)."""
    present = Counter(c for cs in examples["codes"] for c in cs)
    if dataset == "mimic3":
        from llm4icd_plugins.codes import mimic3_top50_codes

        fixed = list(mimic3_top50_codes())
        chosen = [c for c in fixed if c in present]
        return chosen, {"source": "Mullenbach et al. fixed list", "absent_from_data": [c for c in fixed
                                                                                       if c not in present]}
    train = Counter(c for cs in examples.loc[examples["split"] == "train", "codes"] for c in cs)
    chosen = [c for c, _ in sorted(train.items(), key=lambda kv: (-kv[1], kv[0]))[:50]]
    return chosen, {"source": "50 most frequent training codes"}


# --- writing a variant ----------------------------------------------------------------------------------

@dataclass
class TruncationSettings:
    """Prompt-length limits of the trainers (see the --help of the flags)."""

    tokenizer_path: str | None = None
    max_prompt_length: int = 4096
    hint_reserve: int = 0
    cutoff_len: int = 4480
    enable_thinking: bool | None = None
    num_workers: int = 1
    backbone: str | None = None  # recorded in stats.json for data_tools.build.backbone_check
    chat_template: str | None = None  # the backbone's own Jinja chat template, replacing the tokenizer's

    def chat_template_kwargs(self) -> dict:
        return {} if self.enable_thinking is None else {"enable_thinking": self.enable_thinking}


def _token_ids(rendered) -> list[int]:
    if isinstance(rendered, dict) or hasattr(rendered, "keys"):
        rendered = rendered["input_ids"]
    return list(rendered)


def _load_tokenizer(path: str):
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise UserError("--tokenizer needs the transformers package. Fix: install the sft or rl extra, "
                        "or leave out --tokenizer") from exc
    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as exc:
        raise user_error(path, f"cannot load a tokenizer ({type(exc).__name__}: {exc})", "pass a Hugging Face "
                         "model or tokenizer folder (tokenizer.json + tokenizer_config.json)") from exc


def _summary(values: Sequence[int | float]) -> dict | None:
    if len(values) == 0:
        return None
    arr = np.asarray(values, dtype=float)
    return {"mean": round(float(arr.mean()), 2), "p50": float(np.percentile(arr, 50)),
            "p95": float(np.percentile(arr, 95)), "max": float(arr.max())}


def fit_prompts(examples: pd.DataFrame, spec: prompts.PromptSpec, answers: list[str], settings: TruncationSettings,
                tokenizer, report_tokens: dict) -> list[str]:
    """The note text of each prompt, truncated so that prompt ≤ max_prompt_length − hint_reserve and
    prompt + answer + end-of-turn ≤ cutoff_len; token statistics go to ``report_tokens``."""
    texts = examples["text"].tolist()
    if tokenizer is None:
        report_tokens["truncation"] = "none (no --tokenizer given): prompts are not checked against any length"
        return texts
    from llm4icd_plugins.truncation import truncate_for_budget

    kwargs = settings.chat_template_kwargs()
    messages_fn = functools.partial(prompts.build_messages, spec=spec)
    # End-of-turn tokens the trainer adds after the answer, measured on the real template.
    probe = "<code>" + prompts.FORMAT_EXAMPLE_CODES[spec.code_system][0] + "</code>"
    prompt_ids = _token_ids(tokenizer.apply_chat_template(messages_fn("x"), tokenize=True,
                                                          add_generation_prompt=True, return_dict=False, **kwargs))
    full_ids = _token_ids(tokenizer.apply_chat_template(
        messages_fn("x") + [{"role": "assistant", "content": probe}], tokenize=True, return_dict=False, **kwargs))
    probe_ids = tokenizer(probe, add_special_tokens=False)["input_ids"]
    end_of_turn = max(1, len(full_ids) - len(prompt_ids) - len(probe_ids))
    answer_tokens = [len(ids) + end_of_turn for ids in tokenizer(answers, add_special_tokens=False)["input_ids"]]
    prompt_cap = settings.max_prompt_length - settings.hint_reserve
    budgets = [min(prompt_cap, settings.cutoff_len - n) for n in answer_tokens]
    try:
        results = truncate_for_budget(texts, tokenizer, messages_fn=messages_fn, budget=budgets,
                                      chat_template_kwargs=kwargs or None, num_workers=settings.num_workers,
                                      show_progress=True)
    except ValueError as exc:
        raise UserError(f"truncation failed: {exc}. Fix: raise --max-prompt-length/--cutoff-len or lower "
                        "--hint-reserve (the instruction and answer alone must fit)") from exc
    from data_tools.build.backbone_check import data_record

    report_tokens.update({
        "truncation": "tiered middle-out to fit the budget",
        **data_record(settings.backbone, tokenizer),
        "tokenizer": str(settings.tokenizer_path),
        "chat_template_kwargs": kwargs,
        "max_prompt_length": settings.max_prompt_length, "hint_reserve": settings.hint_reserve,
        "cutoff_len": settings.cutoff_len, "end_of_turn_tokens": end_of_turn,
        "prompt_tokens_before": _summary([r.tokens_before for r in results]),
        "prompt_tokens_after": _summary([r.tokens_after for r in results]),
        "answer_tokens": _summary([n - end_of_turn for n in answer_tokens]),
        "n_truncated": int(sum(r.truncated for r in results)),
    })
    return [r.text for r in results]


def _hint_block_tokens(tokenizer, spec: prompts.PromptSpec, label_codes: Sequence[str], system, kwargs) -> int:
    """Tokens a worst-case PHI hint (5 codes with the longest descriptions) adds to a prompt."""
    described = sorted(label_codes, key=lambda c: (-len(system.description(c) or ""), c))[:5]
    hints = [(c, system.description(c)) for c in described]
    plain = _token_ids(tokenizer.apply_chat_template(prompts.build_messages("x", spec), tokenize=True,
                                                     add_generation_prompt=True, return_dict=False, **kwargs))
    hinted = _token_ids(tokenizer.apply_chat_template(prompts.build_messages("x", spec, hints), tokenize=True,
                                                      add_generation_prompt=True, return_dict=False, **kwargs))
    return len(hinted) - len(plain)


_EXAMPLES_SCHEMA = pa.schema([("id", pa.string()), ("subject_id", pa.string()), ("text", pa.string()),
                              ("codes", pa.list_(pa.string())), ("text_truncated", pa.string())])
_MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
_VERL_SCHEMA = pa.schema([
    ("data_source", pa.string()),
    ("prompt", pa.list_(_MESSAGE)),
    ("ability", pa.string()),
    ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.list_(pa.string()))])),
    ("extra_info", pa.struct([("index", pa.int64()), ("sample_id", pa.string()), ("split", pa.string()),
                              ("code_system", pa.string()), ("label_space", pa.string()), ("n_codes", pa.int64())])),
])


def write_variant(out_dir: Path, name: str, examples: pd.DataFrame, label_codes: Sequence[str], spec: prompts.PromptSpec,
                  system, settings: TruncationSettings, tokenizer, stats: dict) -> dict:
    """Write one variant (label space, examples, ShareGPT, verl, dataset_info, stats) under ``out_dir``."""
    from llm4icd_plugins.codes import LabelSpace

    out_dir.mkdir(parents=True)
    LabelSpace(name, spec.code_system, list(label_codes)).save(out_dir / "label_space.json")
    answers = [prompts.format_answer(c) for c in examples["codes"]]
    token_stats: dict = {}
    notes = fit_prompts(examples, spec, answers, settings, tokenizer, token_stats)
    if tokenizer is not None:
        kwargs = settings.chat_template_kwargs()
        token_stats["worst_case_hint_block_tokens"] = _hint_block_tokens(tokenizer, spec, label_codes, system, kwargs)
        if 0 < settings.hint_reserve < token_stats["worst_case_hint_block_tokens"]:
            print(f"warning: {name}: a 5-code PHI hint block can take {token_stats['worst_case_hint_block_tokens']} "
                  f"tokens, more than --hint-reserve {settings.hint_reserve}", file=sys.stderr)
    for sub in ("examples", "sharegpt", "verl"):
        (out_dir / sub).mkdir()
    per_split = {}
    all_codes = set(label_codes)
    for split in SPLITS:
        mask = (examples["split"] == split).to_numpy()
        part = examples[mask]
        part_notes = [n for n, m in zip(notes, mask) if m]
        part_answers = [a for a, m in zip(answers, mask) if m]
        pq.write_table(pa.Table.from_pydict({
            "id": part["id"].tolist(), "subject_id": part["subject_id"].astype(object).where(
                part["subject_id"].notna(), None).tolist(),
            "text": part["text"].tolist(), "codes": part["codes"].tolist(), "text_truncated": part_notes,
        }, schema=_EXAMPLES_SCHEMA), out_dir / "examples" / f"{split}.parquet")
        verl_rows = {k: [] for k in _VERL_SCHEMA.names}
        with open(out_dir / "sharegpt" / f"{split}.jsonl", "w", encoding="utf-8") as fh:
            rows = zip(part["id"], part["codes"], part_notes, part_answers)
            for index, (sample_id, codes, note, answer) in enumerate(
                    tqdm(rows, total=len(part), desc=f"{name}/{split}", unit="ex", leave=False)):
                messages = prompts.build_messages(note, spec)
                fh.write(json.dumps({"id": sample_id, "messages": messages + [
                    {"role": "assistant", "content": answer}]}, ensure_ascii=False) + "\n")
                verl_rows["data_source"].append(f"llm4icd/{name}")
                verl_rows["prompt"].append(messages)
                verl_rows["ability"].append(ABILITY)
                verl_rows["reward_model"].append({"style": "rule", "ground_truth": list(codes)})
                verl_rows["extra_info"].append({"index": index, "sample_id": sample_id, "split": split,
                                                "code_system": spec.code_system, "label_space": name,
                                                "n_codes": len(codes)})
        pq.write_table(pa.Table.from_pydict(verl_rows, schema=_VERL_SCHEMA), out_dir / "verl" / f"{split}.parquet")
        n_codes = part["codes"].map(len).tolist()
        per_split[split] = {"examples": int(len(part)), "distinct_codes": len({c for cs in part["codes"] for c in cs}),
                            "codes_per_note": _summary(n_codes),
                            "subjects": int(part["subject_id"].nunique())}
        all_codes.update(c for cs in part["codes"] for c in cs)
    dataset_info = {f"{name}_{split}": {"file_name": f"sharegpt/{split}.jsonl", "formatting": "sharegpt",
                                        "columns": {"messages": "messages"}, "tags": dict(SHAREGPT_TAGS)}
                    for split in SPLITS}
    (out_dir / "dataset_info.json").write_text(json.dumps(dataset_info, indent=2) + "\n", encoding="utf-8")
    occurrences = Counter(c for cs in examples["codes"] for c in cs)
    unknown = sorted(c for c in occurrences if c not in system)
    stats = dict(stats, variant=name, corpus=spec.corpus, code_system=spec.code_system, label_scope=spec.label_scope,
                 splits=per_split, n_labels=len(label_codes),
                 unknown_codes={"note": "codes absent from the current ICD tables (e.g. retired ICD-9-CM codes): "
                                        "kept as gold labels, not corrected",
                                "distinct": len(unknown), "occurrences": int(sum(occurrences[c] for c in unknown)),
                                "codes": unknown},
                 tokens=token_stats)
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    return stats


# --- orchestration --------------------------------------------------------------------------------------

def prepare(raw: RawData, splits: pd.DataFrame, splits_path, out: Path, dataset: str, *, name: str | None = None,
            variants: Sequence[str] = ("full", "top50"), min_code_count: int = 10,
            settings: TruncationSettings | None = None, overwrite: bool = False,
            report: Report | None = None) -> dict[str, dict]:
    """Build and atomically write the requested variants; returns each variant's stats."""
    from llm4icd_plugins.codes import load_code_system

    settings = settings or TruncationSettings()
    report = report or Report()
    prefix = name or dataset
    names = {v: f"{prefix}_{v}" for v in variants}
    out = Path(out)
    start_output(out, prefix, list(names.values()), overwrite)
    system = load_code_system(raw.code_system)
    examples = assemble(raw, splits, splits_path, report, min_code_count)
    if examples.empty:
        raise UserError(f"{splits_path}: no admission is left after filtering. Fix: check the inputs "
                        f"(dropped: {dict(report.dropped)})")
    tokenizer = _load_tokenizer(settings.tokenizer_path) if settings.tokenizer_path else None
    if tokenizer is not None and settings.chat_template:
        tokenizer.chat_template = settings.chat_template
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(prefix=_staging_prefix(out, prefix), dir=out.parent))
    results = {}
    marked = False
    try:
        for variant, vname in names.items():
            data, vreport = examples, Counter(report.dropped)
            if variant == "full":
                labels = sorted({c for cs in examples["codes"] for c in cs})
                label_info = {"source": "all codes left after rare-code removal"}
            else:
                labels, label_info = top50_codes(examples, dataset)
                keep = set(labels)
                data = examples.assign(codes=[[c for c in cs if c in keep] for cs in examples["codes"]])
                empty = data["codes"].map(len) == 0
                for split in SPLITS:
                    n = int((empty & (data["split"] == split)).sum())
                    if n:
                        vreport[f"{split} examples without a Top-50 code"] += n
                data = data[~empty].reset_index(drop=True)
            spec = prompts.PromptSpec(raw.code_system, variant, raw.corpus)
            base = {"sources": raw.sources, "dropped": dict(sorted(vreport.items())),
                    "info": report.info, "label_space": label_info}
            results[vname] = write_variant(tmp_root / "new" / vname, vname, data, labels, spec, system, settings,
                                           tokenizer, base)
        appeared = [n for n in names.values() if (out / n).exists()]
        if appeared and not overwrite:
            raise UserError(f"{out}: {', '.join(appeared)} appeared while preparing. Fix: pass --overwrite or "
                            "another --out")
        atomic.write_text(tmp_root / COMMIT_MARK, json.dumps(sorted(names.values())) + "\n")
        marked = True
        _publish(tmp_root, out)
    finally:
        if not marked:  # once marked, the staged variants are the output: the next start completes them
            shutil.rmtree(tmp_root, ignore_errors=True)
    return results


def _staging_prefix(out: Path, prefix: str) -> str:
    return f".{out.name}{atomic.TEMP_MARK}{prefix}+"


def start_output(out: Path, prefix: str, names: Sequence[str], overwrite: bool) -> None:
    """Before any work: complete a replacement that a killed run left half done, remove a killed run's
    temporary folder (it holds note text), and check that ``out`` can take the variants ``names``."""
    out = Path(out)
    for tmp in atomic.stale_temporaries(out):
        suffix = tmp.name[len(f".{out.name}{atomic.TEMP_MARK}"):]
        if not (tmp.name.startswith(_staging_prefix(out, prefix)) or "+" not in suffix):
            continue  # another --name's run, perhaps still going (no "+": an earlier version's temporary)
        if (tmp / COMMIT_MARK).is_file():
            _publish(tmp, out)
            print(f"note: {out}: completed the replacement that an interrupted run left half done", file=sys.stderr)
        else:
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
            print(f"note: removed {tmp}, the temporary folder of an interrupted run", file=sys.stderr)
    fix = "pass --out a folder you can write to"
    if out.exists() and not out.is_dir():
        raise user_error(out, "--out is a file, not a folder", fix)
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise user_error(parent, "a file stands where --out needs a folder", fix)
    for folder in (out if out.exists() else parent, parent):
        if not os.access(folder, os.W_OK | os.X_OK):
            raise user_error(folder, "the folder is read-only", fix)
    existing = [n for n in names if (out / n).exists()]
    if existing and not overwrite:
        raise UserError(f"{out}: {', '.join(existing)} already exist(s). Fix: pass --overwrite or another --out")


def _publish(tmp_root: Path, out: Path) -> None:
    """Move the variants staged in ``tmp_root/new`` into ``out``: every old one aside first, then every new
    one in, so no moment pairs a new variant with an old one. Idempotent, so a killed run's next start
    completes it; the old variants are deleted only once all new ones are in place."""
    new, old = tmp_root / "new", tmp_root / "old"
    if new.is_dir() and not out.exists():
        os.replace(new, out)
    elif new.is_dir():
        pending = sorted(p.name for p in new.iterdir())
        old.mkdir(exist_ok=True)
        for name in pending:
            if (out / name).exists():
                os.replace(out / name, Path(tempfile.mkdtemp(dir=old)) / name)
        for name in pending:
            os.replace(new / name, out / name)
    shutil.rmtree(tmp_root, ignore_errors=True)


# --- command line ---------------------------------------------------------------------------------------

def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path,
                        help="output folder; each variant goes to OUT/<variant>/ (written atomically)")
    parser.add_argument("--name", help="variant name prefix (default: mimic3, mimic4 or generic): writes "
                        "<name>_full and <name>_top50")
    parser.add_argument("--variants", default="full,top50",
                        help="comma-separated label settings to write: full, top50 (default: both)")
    parser.add_argument("--min-code-count", type=int, default=10,
                        help="remove codes seen fewer than this many times in the split-file admissions; "
                        "admissions left without codes are dropped (default 10, as Edin et al.)")
    parser.add_argument("--skip-malformed", action="store_true",
                        help="drop and count codes that are malformed for their table instead of stopping")
    parser.add_argument("--overwrite", action="store_true", help="replace variant folders that already exist")
    parser.add_argument("--tokenizer", help="Hugging Face tokenizer/model folder of the backbone; enables "
                        "truncation with its chat template (without it, notes are not truncated)")
    parser.add_argument("--backbone", help="backbone name or YAML (recipes/models/): its tokenizer (or --tokenizer, "
                        "a local copy), chat template and arguments, checked against its LlamaFactory template first; "
                        "recorded in stats.json. Prepare each backbone into its own --out, e.g. data/prepared/NAME")
    parser.add_argument("--max-prompt-length", type=int, default=4096,
                        help="verl data.max_prompt_length: prompt tokens incl. chat template (default 4096)")
    parser.add_argument("--hint-reserve", type=int, default=0,
                        help="prompt tokens kept free in every prompt for PHI hint blocks (default 0: PHIDataset "
                        "re-fits the note of a hinted prompt instead)")
    parser.add_argument("--cutoff-len", type=int, default=4480,
                        help="LlamaFactory cutoff_len: prompt + answer + end-of-turn tokens (default 4480)")
    parser.add_argument("--enable-thinking", action=argparse.BooleanOptionalAction, default=None,
                        help="pass enable_thinking to the chat template (Qwen3 hybrid models: use "
                        "--no-enable-thinking, matching LlamaFactory's enable_thinking: false)")
    parser.add_argument("--num-workers", type=int, default=1, help="processes for truncation (default 1)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_tools.build.prepare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Run `python -m data_tools.build.prepare {mimic3,mimic4,generic} --help` "
                                     "for the flags of each input kind.")
    sub = parser.add_subparsers(dest="dataset", required=True)
    for dataset, files in (("mimic3", MIMIC3_FILES), ("mimic4", MIMIC4_FILES)):
        p = sub.add_parser(dataset, help=f"raw {'MIMIC-III' if dataset == 'mimic3' else 'MIMIC-IV (+ MIMIC-IV-Note)'}"
                           " tables")
        p.add_argument("--root", type=Path, help="folder holding the raw tables under their MIMIC names "
                       f"({', '.join(v + '.csv[.gz]' for v in files.values())}) and optionally the split file")
        p.add_argument("--notes", help=f"{files['notes']} table (overrides --root)")
        p.add_argument("--diagnoses", help=f"{files['diagnoses']} table (overrides --root)")
        p.add_argument("--procedures", help=f"{files['procedures']} table (overrides --root)")
        p.add_argument("--splits", help="clean split file (feather or csv; columns _id, split); default: "
                       "Edin's file name under --root")
        if dataset == "mimic4":
            p.add_argument("--icd-version", type=int, choices=(9, 10), default=10,
                           help="keep codes of this ICD version only (default 10, as the paper)")
        _add_common(p)
    g = sub.add_parser("generic", help="a table with id, text, codes (+ optional split, subject_id)")
    g.add_argument("--input", required=True, help="jsonl, csv or parquet table")
    g.add_argument("--code-system", required=True, choices=("icd9", "icd10"), help="code system of the codes")
    g.add_argument("--corpus", help="corpus name used in prompts (default MIMIC-III for icd9, MIMIC-IV for icd10)")
    g.add_argument("--splits", help="split file (_id, split); default: the table's split column, else random")
    g.add_argument("--id-column", default="id", help="column of sample ids (default id)")
    g.add_argument("--text-column", default="text", help="column of note texts (default text)")
    g.add_argument("--codes-column", default="codes", help="column of codes: list or 'c1, c2' (default codes)")
    g.add_argument("--split-column", default="split", help="optional column of splits (default split)")
    g.add_argument("--subject-column", default="subject_id", help="optional patient column (default subject_id); "
                   "random splits keep a patient's samples together")
    g.add_argument("--val-fraction", type=float, default=0.1, help="random split: validation fraction (0.1)")
    g.add_argument("--test-fraction", type=float, default=0.1, help="random split: test fraction (0.1)")
    g.add_argument("--seed", type=int, default=0, help="random split seed (0)")
    _add_common(g)
    return parser


def run(args: argparse.Namespace) -> dict[str, dict]:
    report = Report()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in variants if v not in prompts.LABEL_SCOPES]
    if bad or not variants:
        raise UserError(f"--variants {args.variants!r}: expected full and/or top50. Fix: pass --variants full,top50")
    if args.dataset == "generic":
        dataset = "generic"
    else:
        dataset = args.dataset if args.dataset == "mimic3" or args.icd_version == 10 else "mimic4_icd9"
    prefix = args.name or dataset
    if not _NAME.fullmatch(prefix):
        raise UserError(f"--name {show_token(prefix)}: not a plain name. Fix: use letters, digits, '_', '-' and '.'")
    start_output(args.out, prefix, [f"{prefix}_{v}" for v in variants], args.overwrite)
    from data_tools.build.backbone_check import prepare_settings  # --backbone: its tokenizer; templates checked

    backbone_fields = prepare_settings(args)
    if args.dataset == "generic":
        raw, table_splits = load_generic(args.input, args.code_system, report, id_col=args.id_column,
                                         text_col=args.text_column, codes_col=args.codes_column,
                                         split_col=args.split_column, subject_col=args.subject_column,
                                         corpus=args.corpus, skip_malformed=args.skip_malformed)
        if args.splits:
            splits, splits_path = load_splits(args.splits), args.splits
        elif table_splits is not None:
            splits, splits_path = _check_splits(table_splits, args.input), args.input
        else:
            splits = random_splits(raw.notes["id"], raw.notes["subject_id"].tolist(), args.val_fraction,
                                   args.test_fraction, args.seed)
            splits_path = args.input
            report.info["splits"] = f"random, group-level (seed {args.seed})"
    else:
        files = MIMIC3_FILES if args.dataset == "mimic3" else MIMIC4_FILES
        paths = {k: _find_file(args.root, getattr(args, k), [stem, stem.lower(), stem.upper()], f"--{k}")
                 for k, stem in files.items()}
        split_key = "mimic3" if args.dataset == "mimic3" else f"mimic4_{args.icd_version}"
        splits_path = _find_file(args.root, args.splits, SPLIT_FILE_NAMES[split_key], "--splits")
        if args.dataset == "mimic3":
            raw = load_mimic3(paths["notes"], paths["diagnoses"], paths["procedures"], report, args.skip_malformed)
        else:
            raw = load_mimic4(paths["notes"], paths["diagnoses"], paths["procedures"], report, args.icd_version,
                              args.skip_malformed)
        splits = load_splits(splits_path)
    settings = TruncationSettings(args.tokenizer, args.max_prompt_length, args.hint_reserve, args.cutoff_len,
                                  args.enable_thinking, args.num_workers, **backbone_fields)
    return prepare(raw, splits, splits_path, args.out, dataset, name=args.name, variants=variants,
                   min_code_count=args.min_code_count, settings=settings, overwrite=args.overwrite, report=report)


def print_summary(results: dict[str, dict], out: Path) -> None:
    for name, stats in results.items():
        counts = ", ".join(f"{s} {v['examples']}" for s, v in stats["splits"].items())
        print(f"{out / name}: {counts}; {stats['n_labels']} labels; "
              f"{stats['unknown_codes']['distinct']} codes unknown to the current tables (kept)")
        tokens = stats["tokens"]
        if "n_truncated" in tokens:
            print(f"  prompts: {tokens['n_truncated']} truncated; tokens before max "
                  f"{tokens['prompt_tokens_before']['max']:.0f}, after max {tokens['prompt_tokens_after']['max']:.0f}")
        else:
            print(f"  prompts: {tokens['truncation']}")
    first = next(iter(results.values()))
    print("dropped:")
    for reason, n in first["dropped"].items():
        print(f"  {n:>8}  {reason}")
    info = first["info"]
    rare = info.get("rare_codes_removed", {})
    print(f"rare codes removed (< {rare.get('threshold')}): {rare.get('distinct')} distinct, "
          f"{rare.get('occurrences')} occurrences")
    print(f"admissions whose text joins several notes (e.g. report + addenda): "
          f"{info.get('notes_joined_from_several_parts', 0)}; duplicate code rows removed: "
          f"{info.get('duplicate_code_rows_removed', 0)}")
    if info.get("subjects_in_several_splits"):
        print(f"WARNING: {info['subjects_in_several_splits']} subjects have admissions in several splits")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> None:
        print_summary(run(args), args.out)

    return run_tool("python -m data_tools.build.prepare", body)


if __name__ == "__main__":
    sys.exit(main())
