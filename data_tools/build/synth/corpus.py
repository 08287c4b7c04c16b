"""The two corpora: a MIMIC-III-shaped one (NOTEEVENTS, DIAGNOSES_ICD, PROCEDURES_ICD) and a MIMIC-IV-shaped one
(note/discharge, hosp/diagnoses_icd, hosp/procedures_icd), each with Edin-style split files and a manifest."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from llm4icd_plugins import atomic

from .cohort import Admission, build_cohort, patient_splits
from .draws import Draws
from .files import (
    MIMIC4_DX_COLUMNS,
    MIMIC4_NOTE_COLUMNS,
    MIMIC4_PROC_COLUMNS,
    Bare,
    Corpus,
    check_out,
    code_rows,
    mimic3_paths,
    write_csv,
    write_manifest,
    write_mimic3_tables,
    write_splits,
)
from .notes import NoteWriter, date_of
from .options import MANIFEST, MIMIC3_DIR, MIMIC4_DIR, SynthOptions, check_n_admissions, resolve_options
from .vocabulary import corpus_vocabularies

OTHER_CATEGORIES = (("Radiology", "CHEST (PORTABLE AP)"), ("Nursing/other", "Report"),
                    ("Nursing", "Nursing Progress Note"), ("ECG", "Report"),
                    ("Physician ", "Physician Resident Progress Note"), ("Echo", "Report"),
                    ("Respiratory ", "Respiratory Care Shift Note"), ("Social Work", "Social Work Note"))

Generator = Callable[[Path, Path, int, int, SynthOptions, bool], dict[str, Path]]


def generate_mimic3(out_dir: str | os.PathLike, n_admissions: int = 2000, seed: int = 0, *,
                    options: SynthOptions | None = None, overwrite: bool = False, progress: bool = False,
                    **option_overrides) -> dict[str, Path]:
    """Write a MIMIC-III-shaped corpus under ``out_dir/mimic3``; returns the paths written.

    Keys: ``root``, ``notes`` (NOTEEVENTS), ``diagnoses`` (DIAGNOSES_ICD), ``procedures``
    (PROCEDURES_ICD), ``splits`` (mimiciii_clean_splits.feather), ``splits_csv``, ``manifest``.
    ``option_overrides`` are ``SynthOptions`` fields (e.g. ``gzip=False``, ``n_codes=300``).
    """
    opts = resolve_options(options, option_overrides)
    return write_corpus(_mimic3_into, out_dir, MIMIC3_DIR, n_admissions, seed, opts, overwrite, progress)


def generate_mimic4(out_dir: str | os.PathLike, n_admissions: int = 2000, seed: int = 0, *,
                    options: SynthOptions | None = None, overwrite: bool = False, progress: bool = False,
                    **option_overrides) -> dict[str, Path]:
    """Write a MIMIC-IV-shaped corpus under ``out_dir/mimic4``; returns the paths written.

    Keys: ``root``, ``notes`` (note/discharge), ``diagnoses`` (hosp/diagnoses_icd), ``procedures``
    (hosp/procedures_icd), ``splits`` (mimiciv_icd10_split.feather), ``splits_csv``, ``splits_icd9``,
    ``splits_icd9_csv`` (only when ``icd9_fraction`` > 0), ``manifest``. About ``icd9_fraction`` of the
    subjects have ICD-9-coded admissions (``icd_version`` 9), which the ICD-10 split file leaves out.
    """
    opts = resolve_options(options, option_overrides)
    return write_corpus(_mimic4_into, out_dir, MIMIC4_DIR, n_admissions, seed, opts, overwrite, progress)


def write_corpus(generator: Generator, out_dir: str | os.PathLike, name: str, n_admissions: int, seed: int,
                 opts: SynthOptions, overwrite: bool, progress: bool) -> dict[str, Path]:
    """Check the output, run ``generator(tmp, final, ...)`` into a temporary folder, move it into place."""
    check_n_admissions(n_admissions)
    final = check_out(out_dir, name, overwrite)
    with atomic.atomic_dir(final) as tmp:
        return generator(tmp, final, n_admissions, seed, opts, progress)


def discharge_row(row_id: int, a: Admission, day: int, kind: str, text: str) -> tuple:
    """A NOTEEVENTS row of the discharge summary (``kind`` "Report" or "Addendum")."""
    return (row_id, a.subject_id, a.hadm_id, Bare(date_of(day).isoformat()), None, None, "Discharge summary", kind,
            None, None, text)


def other_note_rows(a: Admission, first_row_id: int, opts: SynthOptions, draws: Draws, writer: NoteWriter, *,
                    plain: bool = False) -> list[tuple]:
    """NOTEEVENTS rows of the admission's other notes (Radiology, Nursing, ECG, ...), about
    ``other_notes_per_admission`` of them. MIMIC's quirks unless ``plain``: some studies are outpatient
    (no HADM_ID), caregiver ids, radiology findings naming an assigned code."""
    rows = []
    for _ in range(int(draws.random() * 2 * opts.other_notes_per_admission + 0.5)):
        category, description = draws.choice(OTHER_CATEGORIES)
        day = a.admit + draws.randint(0, a.los)
        hour, minute = draws.randint(0, 23), draws.randint(0, 59)
        when = Bare(f"{date_of(day).isoformat()} {hour:02d}:{minute:02d}:00")
        outpatient = not plain and category in ("Radiology", "ECG") and draws.chance(0.1)
        stored = when if plain or category != "ECG" else None
        caregiver = draws.randint(14000, 21000) if not plain and category != "Radiology" else None
        text = writer.other_note(None if plain else a, category, day)
        rows.append((first_row_id + len(rows), a.subject_id, None if outpatient else a.hadm_id,
                     Bare(date_of(day).isoformat()), when, stored, category, description, caregiver, None, text))
    return rows


def _draw(name: str, n_admissions: int, seed: int, opts: SynthOptions):
    """Vocabularies, cohort and splits of a corpus, and the draws for the discharge summaries and the rest."""
    streams = np.random.SeedSequence([int(seed), {"mimic3": 3, "mimic4": 4}[name]]).spawn(5)
    r_vocab, r_cohort, r_text, r_split, r_other = (np.random.default_rng(s) for s in streams)
    vocabs = corpus_vocabularies(name, opts, r_vocab)
    adms = build_cohort(name, n_admissions, opts, vocabs, r_cohort)
    splits = patient_splits(adms, opts.split_fractions, r_split)
    return vocabs, adms, splits, Draws(r_text), Draws(r_other), r_other


def _mimic3_into(tmp: Path, final: Path, n_admissions: int, seed: int, opts: SynthOptions,
                 progress: bool) -> dict[str, Path]:
    vocabs, adms, splits, draws, other_draws, r_other = _draw("mimic3", n_admissions, seed, opts)
    writer = NoteWriter(vocabs, opts, mimic4=False, draws=draws)
    other_writer = NoteWriter(vocabs, opts, mimic4=False, draws=other_draws)
    c = Corpus("mimic3", seed, n_admissions, opts, vocabs, adms, splits, words=[])
    notes: list[tuple] = []
    for a in tqdm(adms, desc="mimic3 notes", unit="adm", disable=not progress):
        discharge = a.admit + a.los
        if a.has_note:
            report, addendum = writer.discharge_summary(a)
            c.words.append(len(report.split()))
            notes.append(discharge_row(len(notes) + 1, a, discharge, "Report", report))
            if addendum is not None:
                notes.append(discharge_row(len(notes) + 1, a, discharge + other_draws.randint(0, 3), "Addendum",
                                           addendum))
                c.n_addenda += 1
        other = other_note_rows(a, len(notes) + 1, opts, other_draws, other_writer)
        notes += other
        c.n_other += len(other)
    paths = {**mimic3_paths(final, opts.gzip), "manifest": final / MANIFEST}
    c.n_dx_rows, c.n_proc_rows = write_mimic3_tables(tmp, paths, notes, adms, vocabs["icd9"], splits, r_other,
                                                     opts.gzip)
    write_manifest(tmp, paths, c)
    return paths


def _mimic4_into(tmp: Path, final: Path, n_admissions: int, seed: int, opts: SynthOptions,
                 progress: bool) -> dict[str, Path]:
    vocabs, adms, splits, draws, other_draws, _ = _draw("mimic4", n_admissions, seed, opts)
    writer = NoteWriter(vocabs, opts, mimic4=True, draws=draws)
    c = Corpus("mimic4", seed, n_admissions, opts, vocabs, adms, splits, words=[])
    notes, dx_rows, proc_rows = [], [], []
    notes_of_subject: dict[int, int] = {}
    for a in tqdm(adms, desc="mimic4 notes", unit="adm", disable=not progress):
        discharge = a.admit + a.los
        version = 10 if a.system == "icd10" else 9
        if a.has_note:
            report, _ = writer.discharge_summary(a)
            c.words.append(len(report.split()))
            n = notes_of_subject[a.subject_id] = notes_of_subject.get(a.subject_id, 0) + 1
            stored = (f"{date_of(discharge + other_draws.randint(0, 2)).isoformat()} "
                      f"{other_draws.randint(0, 23):02d}:{other_draws.randint(0, 59):02d}:00")
            notes.append((f"{a.subject_id}-DS-{n}", a.subject_id, a.hadm_id, "DS", n,
                          f"{date_of(discharge).isoformat()} 00:00:00", stored, report))
        # MIMIC-IV has no empty-code rows: admissions without codes simply have none.
        vocab = vocabs[a.system]
        for seq, code in code_rows(a, vocab, "dx"):
            dx_rows.append((a.subject_id, a.hadm_id, seq, code, version))
        for seq, code in code_rows(a, vocab, "proc"):
            day = a.admit + other_draws.randint(0, a.los)
            proc_rows.append((a.subject_id, a.hadm_id, seq, date_of(day).isoformat(), code, version))
    c.n_dx_rows, c.n_proc_rows = len(dx_rows), len(proc_rows)

    ext = ".csv.gz" if opts.gzip else ".csv"
    paths = {"root": final, "notes": final / "note" / f"discharge{ext}",
             "diagnoses": final / "hosp" / f"diagnoses_icd{ext}", "procedures": final / "hosp" / f"procedures_icd{ext}",
             "splits": final / "mimiciv_icd10_split.feather", "splits_csv": final / "mimiciv_icd10_split.csv",
             "manifest": final / MANIFEST}
    (tmp / "note").mkdir()
    (tmp / "hosp").mkdir()
    for key, header, rows in (("notes", MIMIC4_NOTE_COLUMNS, notes), ("diagnoses", MIMIC4_DX_COLUMNS, dx_rows),
                              ("procedures", MIMIC4_PROC_COLUMNS, proc_rows)):
        write_csv(tmp / paths[key].relative_to(final), header, rows, mimic3_quoting=False, use_gzip=opts.gzip)
    write_splits(tmp, "mimiciv_icd10_split", [a for a in adms if a.has_note and a.system == "icd10"], splits)
    if "icd9" in vocabs:
        write_splits(tmp, "mimiciv_icd9_split", [a for a in adms if a.has_note and a.system == "icd9"], splits)
        paths["splits_icd9"] = final / "mimiciv_icd9_split.feather"
        paths["splits_icd9_csv"] = final / "mimiciv_icd9_split.csv"
    write_manifest(tmp, paths, c)
    return paths
