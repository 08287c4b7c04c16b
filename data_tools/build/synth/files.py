"""Writing a corpus: MIMIC's CSV dialects (gzip with fixed bytes), Edin-style split files, the output check,
the MIMIC-III tables both label profiles share, and the manifest with its summary."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from llm4icd_plugins import atomic
from llm4icd_plugins.errors import user_error

from .cohort import Admission, code_counts
from .options import GENERATOR_VERSION, MANIFEST, SPLITS, OutputExists, SynthError, SynthOptions
from .vocabulary import Vocabulary

MIMIC3_NOTE_COLUMNS = ("ROW_ID", "SUBJECT_ID", "HADM_ID", "CHARTDATE", "CHARTTIME", "STORETIME", "CATEGORY",
                       "DESCRIPTION", "CGID", "ISERROR", "TEXT")
MIMIC3_CODE_COLUMNS = ("ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE")
MIMIC4_NOTE_COLUMNS = ("note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "storetime", "text")
MIMIC4_DX_COLUMNS = ("subject_id", "hadm_id", "seq_num", "icd_code", "icd_version")
MIMIC4_PROC_COLUMNS = ("subject_id", "hadm_id", "seq_num", "chartdate", "icd_code", "icd_version")


class Bare:
    """A string value written without quotes in MIMIC-III files (dates)."""

    __slots__ = ("raw",)

    def __init__(self, raw: str):
        self.raw = raw


def _mimic3_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, Bare):
        return value.raw
    if isinstance(value, int):
        return str(value)
    return '"' + value.replace('"', '""') + '"'


def write_csv(path: Path, header: Sequence[str], rows, *, mimic3_quoting: bool, use_gzip: bool) -> None:
    """MIMIC-III style quotes strings and leaves numbers, dates and empty values bare
    (``174,22532,167853,2151-08-04,,,"Discharge summary",...``); MIMIC-IV quotes only when needed."""
    with open(path, "wb") as raw:
        # mtime=0 and a fixed name keep the bytes identical across runs.
        sink = gzip.GzipFile(filename=path.name[:-3], mode="wb", fileobj=raw, mtime=0, compresslevel=1) \
            if use_gzip else raw
        with io.TextIOWrapper(sink, encoding="utf-8", newline="") as f:
            if mimic3_quoting:
                f.write(",".join(f'"{h}"' for h in header) + "\n")
                for row in rows:
                    f.write(",".join(_mimic3_cell(v) for v in row) + "\n")
            else:
                writer = csv.writer(f, lineterminator="\n")
                writer.writerow(header)
                writer.writerows(rows)


def write_splits(folder: Path, stem: str, adms: list[Admission], splits: dict[int, str]) -> None:
    """``stem.feather`` and ``stem.csv`` with columns ``_id`` (admission) and ``split``."""
    df = pd.DataFrame({"_id": pd.Series([a.hadm_id for a in adms], dtype="int64"),
                       "split": pd.Series([splits[a.subject_id] for a in adms], dtype="object")})
    df.to_feather(folder / f"{stem}.feather")
    df.to_csv(folder / f"{stem}.csv", index=False, lineterminator="\n")


def check_out(out_dir: str | os.PathLike, name: str, overwrite: bool) -> Path:
    """Before any work: remove a killed run's temporary folders, refuse an output in the way."""
    root = Path(out_dir)
    for parent in (root, *root.parents):
        if parent.exists():
            if not parent.is_dir():
                raise user_error(parent, "a file stands where --out needs a folder", "choose another --out",
                                 cls=SynthError)
            break
    final = root / name
    for stale in atomic.remove_stale_temporaries(final):
        print(f"note: removed {stale}, the temporary folder of an interrupted run", file=sys.stderr)
    if final.exists() and not overwrite:
        raise user_error(final, "the corpus already exists", "pass --overwrite (overwrite=True) to replace it, or "
                         "choose another --out", cls=OutputExists)
    return final


def code_rows(a: Admission, vocab: Vocabulary, kind: str) -> list[tuple[int, str]]:
    """(seq_num, undotted code) rows of one admission for ``kind`` in {"dx", "proc"}."""
    idx = a.dx if kind == "dx" else a.proc
    return [(k, vocab.codes[i].replace(".", "")) for k, i in enumerate(idx, 1)]


def mimic3_paths(final: Path, use_gzip: bool) -> dict[str, Path]:
    ext = ".csv.gz" if use_gzip else ".csv"
    return {"root": final, "notes": final / f"NOTEEVENTS{ext}", "diagnoses": final / f"DIAGNOSES_ICD{ext}",
            "procedures": final / f"PROCEDURES_ICD{ext}", "splits": final / "mimiciii_clean_splits.feather",
            "splits_csv": final / "mimiciii_clean_splits.csv"}


def write_mimic3_tables(tmp: Path, paths: dict[str, Path], notes: list[tuple], adms: list[Admission],
                        vocab: Vocabulary, splits: dict[int, str], rng: np.random.Generator,
                        use_gzip: bool) -> tuple[int, int]:
    """NOTEEVENTS (rows shuffled with ``rng``: MIMIC's is not grouped by admission; ROW_IDs stay as assigned),
    DIAGNOSES_ICD (with empty code rows), PROCEDURES_ICD and the split file; returns the code row counts."""
    notes = [notes[int(i)] for i in rng.permutation(len(notes))]
    dx_rows, proc_rows = [], []
    for a in adms:
        for seq, code in code_rows(a, vocab, "dx"):
            dx_rows.append((len(dx_rows) + 1, a.subject_id, a.hadm_id, seq, code))
        if a.null_code_row:
            dx_rows.append((len(dx_rows) + 1, a.subject_id, a.hadm_id, None, None))
        for seq, code in code_rows(a, vocab, "proc"):
            proc_rows.append((len(proc_rows) + 1, a.subject_id, a.hadm_id, seq, code))
    for key, header, rows in (("notes", MIMIC3_NOTE_COLUMNS, notes), ("diagnoses", MIMIC3_CODE_COLUMNS, dx_rows),
                              ("procedures", MIMIC3_CODE_COLUMNS, proc_rows)):
        write_csv(tmp / paths[key].name, header, rows, mimic3_quoting=True, use_gzip=use_gzip)
    # Like Edin's clean split file: admissions with a discharge summary (prepare still drops those without codes).
    write_splits(tmp, "mimiciii_clean_splits", [a for a in adms if a.has_note], splits)
    return len(dx_rows), len(proc_rows)


@dataclass
class Corpus:
    """What a generator drew and wrote, for the manifest and its summary."""

    name: str  # "mimic3" or "mimic4"
    seed: int
    n_admissions: int
    opts: SynthOptions
    vocabs: dict[str, Vocabulary]
    adms: list[Admission]
    splits: dict[int, str]
    words: list[int]  # words per discharge summary
    n_addenda: int = 0
    n_other: int = 0
    n_dx_rows: int = 0
    n_proc_rows: int = 0


def _word_stats(words: list[int]) -> dict:
    if not words:
        return {"n": 0}
    arr = np.asarray(words)
    return {"n": int(arr.size), "p50": int(np.percentile(arr, 50)), "p95": int(np.percentile(arr, 95)),
            "max": int(arr.max()), "min": int(arr.min())}


def summary(c: Corpus, counts: dict[str, dict[str, int]]) -> dict:
    """The counts ``synth`` prints and keeps in the manifest."""
    per_split = {s: 0 for s in SPLITS}
    for a in c.adms:
        if a.has_note:
            per_split[c.splits[a.subject_id]] += 1
    codes = {s: {"distinct": len(n), "rare_lt10": sum(1 for v in n.values() if v < 10)} for s, n in counts.items()}
    return {
        "corpus": c.name, "admissions": len(c.adms), "subjects": len(c.splits),
        "admissions_by_system": {s: sum(1 for a in c.adms if a.system == s) for s in sorted(counts)},
        "discharge_summaries": len(c.words), "addenda": c.n_addenda, "other_notes": c.n_other,
        "long_notes": sum(1 for a in c.adms if a.long_note and a.has_note),
        "admissions_without_codes": sum(1 for a in c.adms if a.no_codes),
        "admissions_without_note": sum(1 for a in c.adms if not a.has_note),
        "diagnosis_rows": c.n_dx_rows, "procedure_rows": c.n_proc_rows, "codes": codes,
        "split_admissions": per_split, "note_words": _word_stats(c.words),
    }


def write_manifest(tmp: Path, paths: dict[str, Path], c: Corpus, *, summary_extra: dict | None = None,
                   manifest_extra: dict | None = None) -> None:
    """``synth_manifest.json``: options, files, vocabulary with counts, each admission's distractors and
    quirks, and the summary (with ``summary_extra``); ``manifest_extra`` keys go to the top level."""
    counts = code_counts(c.adms, c.vocabs)
    vocabs = c.vocabs
    manifest = {
        "generator": "llm4icd data_tools.build.synth", "generator_version": GENERATOR_VERSION, "corpus": c.name,
        "seed": int(c.seed), "n_admissions": int(c.n_admissions),
        "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in c.opts.__dict__.items()},
        "files": {k: str(v.relative_to(paths["root"])) for k, v in paths.items() if k != "root"},
        "vocabulary": {
            system: [{"code": code, "table": t, "description": desc, "weight": round(float(w), 8),
                      "rare_target": v.rare_counts.get(code), "count": counts[system].get(code, 0)}
                     for code, t, desc, w in zip(v.codes, v.tables, v.descriptions, v.weights)]
            for system, v in vocabs.items()},
        "head_codes_missing": {system: list(v.head_missing) for system, v in vocabs.items()},
        "admissions": {
            str(a.hadm_id): {"subject_id": a.subject_id, "code_system": a.system,
                             "negated": [vocabs[a.system].codes[i] for i in a.negated],
                             "family_history": [vocabs[a.system].codes[i] for i in a.family],
                             "long_note": a.long_note, "addendum": a.addendum, "has_note": a.has_note}
            for a in c.adms},
        "note_words": _word_stats(c.words),
        "summary": {**summary(c, counts), **(summary_extra or {})},
        **(manifest_extra or {}),
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
