"""Synthetic MIMIC-III / MIMIC-IV-shaped raw tables, for tests, benchmarks and the embedded default corpus.

Nobody outside a credentialed lab has MIMIC, so this writes files with MIMIC's real names, columns,
code forms (undotted) and quirks (addenda, other note categories, empty codes, admissions without
codes, ICD-9 admissions in MIMIC-IV) plus Edin-style patient-level split files, so that
``data_tools.build.prepare`` runs on them exactly as on MIMIC. Codes are REAL codes from the code tables
(``llm4icd_plugins.codes``) with a long-tailed (Zipf) frequency; notes are MIMIC-style discharge
summaries whose text mentions each assigned code's real description (or an abbreviation of it), with
negated and family-history mentions of codes that do NOT apply, so the task is learnable but not trivial.

    python -m data_tools.build.synth --out data/synth --corpus both --n-admissions 2000 --seed 0

``--label-profile longtail`` (``data_tools.build.synth_longtail``) writes a MIMIC-III corpus with hundreds of
trainable codes and evidence graded named / synonym / implied instead; the default profile is unchanged.

Everything is drawn from numpy Generators seeded from ``--seed``: same arguments and code tables give
the same bytes. Each corpus is written to a temporary folder that is renamed into place at the end; an
existing corpus is refused before any work unless ``--overwrite`` is given, and a killed run's temporary
folders are removed by the next run.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import gzip
import io
import json
import os
import re
import string
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from data_tools.cli import run_tool
from llm4icd_plugins import atomic
from llm4icd_plugins.errors import UserError, user_error

__all__ = [
    "SynthOptions",
    "Vocabulary",
    "build_vocabulary",
    "clinical_name",
    "mention_forms",
    "generate_mimic3",
    "generate_mimic4",
    "main",
]


class SynthError(UserError, ValueError):
    """Bad options or output (a ValueError too, for callers of the Python API)."""


class OutputExists(SynthError, FileExistsError):
    """The corpus folder exists and ``overwrite`` was not given."""


GENERATOR_VERSION = 1
MIMIC3_DIR, MIMIC4_DIR = "mimic3", "mimic4"
MANIFEST = "synth_manifest.json"
SPLITS = ("train", "val", "test")
# Edin et al.'s MIMIC-III clean split sizes 38,401 / 5,577 / 8,734 (patient-level).
DEFAULT_SPLIT_FRACTIONS = (0.729, 0.105, 0.166)

# Frequent real codes put at the head of the MIMIC-IV / ICD-9 vocabularies (after the Mullenbach
# Top-50 for MIMIC-III), so the common codes look like MIMIC's; unknown ones are skipped.
_COMMON_ICD10 = (
    "I10", "E78.5", "Z87.891", "K21.9", "F32.9", "F41.9", "E11.9", "N17.9", "I25.10", "Z79.01",
    "Z79.4", "E03.9", "G47.33", "D64.9", "I48.91", "J44.9", "N39.0", "E87.1", "I50.9", "Z95.5",
    "E66.9", "J96.01", "I12.9", "N18.9", "Z86.73", "A41.9", "J18.9", "D69.6", "E87.2", "Y92.9",
    "0BH17EZ", "02HV33Z", "5A1955Z", "5A1945Z", "5A1935Z", "30233N1", "3E0G76Z", "B2111ZZ",
    "4A023N7", "0DJ08ZZ", "02703DZ", "05HY33Z", "0W9930Z", "5A1D70Z", "B211YZZ",
)
_COMMON_ICD9_EXTRA = (
    "E849.7", "E878.8", "E885.9", "E888.9", "E934.2", "E879.8", "V10.3", "V12.51", "995.91",
    "428.30", "427.89", "780.39", "305.00", "250.02", "V49.86", "V12.54",
)
_EXTERNAL_CAUSE = {"icd9": ("E",), "icd10": ("V", "W", "X", "Y")}  # left out of the random tail


# --------------------------------------------------------------------------------------------
# Random draws
# --------------------------------------------------------------------------------------------
class _Draws:
    """Scalar draws from a numpy Generator, pulled in blocks: text building needs millions of them
    and a numpy scalar call costs microseconds."""

    def __init__(self, rng: np.random.Generator, block: int = 1 << 15):
        self._rng, self._block = rng, block
        self._buf: list[float] = []
        self._i = 0

    def random(self) -> float:
        if self._i >= len(self._buf):
            self._buf = self._rng.random(self._block).tolist()
            self._i = 0
        self._i += 1
        return self._buf[self._i - 1]

    def chance(self, p: float) -> bool:
        return self.random() < p

    def randint(self, lo: int, hi: int) -> int:
        """Uniform integer in [lo, hi], both included."""
        return lo + int(self.random() * (hi - lo + 1))

    def choice(self, seq: Sequence):
        return seq[int(self.random() * len(seq))]

    def sample(self, seq: Sequence, k: int) -> list:
        """``k`` distinct items (partial Fisher-Yates), in draw order."""
        pool = list(seq)
        k = min(k, len(pool))
        for i in range(k):
            j = i + int(self.random() * (len(pool) - i))
            pool[i], pool[j] = pool[j], pool[i]
        return pool[:k]

    def shuffle(self, seq: list) -> list:
        return self.sample(seq, len(seq))


# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SynthOptions:
    """Knobs shared by both corpora (the CLI flags); defaults give MIMIC-like proportions."""

    n_codes: int = 500
    dx_per_admission: tuple[int, int] = (3, 12)
    proc_per_admission: tuple[int, int] = (0, 4)
    zipf_exponent: float = 1.0
    rare_fraction: float = 0.1
    long_note_fraction: float = 0.05
    addendum_fraction: float = 0.05
    other_notes_per_admission: float = 1.0
    no_code_fraction: float = 0.01
    no_note_fraction: float = 0.01
    negations_per_note: tuple[int, int] = (1, 4)
    dx_list_recall: float = 0.88
    max_admissions_per_subject: int = 5
    split_fractions: tuple[float, float, float] = DEFAULT_SPLIT_FRACTIONS
    icd9_fraction: float = 0.25  # MIMIC-IV only: admissions coded in ICD-9
    gzip: bool = True

    def validate(self) -> None:
        def bad(flag: str, why: str) -> SynthError:
            return user_error(None, f"synth: {flag} {why}", f"change {flag}", cls=SynthError)

        if self.n_codes < 20:
            raise bad("--n-codes", f"must be >= 20 (got {self.n_codes})")
        for flag, (lo, hi), floor in (("--dx-per-admission", self.dx_per_admission, 1),
                                      ("--proc-per-admission", self.proc_per_admission, 0)):
            if not floor <= lo <= hi:
                raise bad(flag, f"needs {floor} <= MIN <= MAX (got {lo} {hi})")
        lo, hi = self.negations_per_note
        if not 0 <= lo <= hi:
            raise bad("--negations-per-note", f"needs 0 <= MIN <= MAX (got {lo} {hi})")
        for flag, value in (("--rare-fraction", self.rare_fraction), ("--long-note-fraction", self.long_note_fraction),
                            ("--addendum-fraction", self.addendum_fraction), ("--no-code-fraction", self.no_code_fraction),
                            ("--no-note-fraction", self.no_note_fraction), ("--dx-list-recall", self.dx_list_recall),
                            ("--icd9-fraction", self.icd9_fraction)):
            if not 0.0 <= value <= 1.0:
                raise bad(flag, f"must be within [0, 1] (got {value})")
        if self.rare_fraction > 0.5:
            raise bad("--rare-fraction", f"must be <= 0.5 (got {self.rare_fraction})")
        if self.zipf_exponent <= 0:
            raise bad("--zipf-exponent", f"must be > 0 (got {self.zipf_exponent})")
        if self.other_notes_per_admission < 0:
            raise bad("--other-notes", f"must be >= 0 (got {self.other_notes_per_admission})")
        if self.max_admissions_per_subject < 1:
            raise bad("--max-admissions-per-subject", "must be >= 1")
        fr = self.split_fractions
        if len(fr) != 3 or min(fr) <= 0 or abs(sum(fr) - 1.0) > 1e-6:
            raise bad("--split-fractions", f"needs three positive numbers summing to 1 (got {fr})")


# --------------------------------------------------------------------------------------------
# Code vocabulary with a long tail
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Vocabulary:
    """Sampled real codes of one system, by rank; ``weights`` are Zipf weights (0 for rare codes,
    which get an explicit small count instead)."""

    system: str
    codes: tuple[str, ...]
    tables: tuple[str, ...]
    descriptions: tuple[str, ...]
    weights: np.ndarray
    rare_counts: dict[str, int]
    head_missing: tuple[str, ...] = ()

    def indices(self, table: str) -> np.ndarray:
        return np.array([i for i, t in enumerate(self.tables) if t == table], dtype=np.int64)


def _load_code_system(system: str):
    from llm4icd_plugins.codes import load_code_system

    return load_code_system(system)


def _head_codes(corpus: str, system: str) -> list[str]:
    if system == "icd10":
        return list(_COMMON_ICD10)
    if corpus == "mimic3":
        from llm4icd_plugins.codes import mimic3_top50_codes

        return list(mimic3_top50_codes()) + list(_COMMON_ICD9_EXTRA)
    return list(_COMMON_ICD9_EXTRA)


def _later_encounter(code: str, system: str) -> bool:
    """ICD-10-CM injury codes for subsequent encounters / sequelae: rare in inpatient data, left out."""
    return system == "icd10" and code[0] in "ST" and len(code) == 8 and code[-1] not in "AB"


def build_vocabulary(system: str, n_codes: int, rng: np.random.Generator, *, head: Sequence[str] = (),
                     proc_share: float = 0.2, zipf_exponent: float = 1.0, rare_fraction: float = 0.1,
                     code_system=None) -> Vocabulary:
    """Pick ``n_codes`` billable codes of ``system`` (``head`` first, in order) and give them Zipf weights.

    Tail ranks are assigned to the diagnosis or procedure table so that each table's share of the
    total weight equals ``proc_share`` (the procedure share of codes per admission); drawing
    diagnoses and procedures separately then keeps the global rank order of frequencies, so the head
    codes stay the most frequent. The last ``rare_fraction`` of the vocabulary gets a count of 1-9.
    """
    cs = code_system if code_system is not None else _load_code_system(system)
    dx_table, proc_table = f"{system}_dx", f"{system}_proc"
    ranked: list[tuple[str, str]] = []
    missing: list[str] = []
    seen: set[str] = set()
    for raw in head:
        code = cs.resolve(raw)
        table = cs.table_of(code) if code else None
        if code is None or table not in (dx_table, proc_table) or not cs.description(code):
            missing.append(raw)
        elif code not in seen:
            seen.add(code)
            ranked.append((code, table))
    ranked = ranked[:n_codes]

    n_rare = int(round(rare_fraction * n_codes))
    n_zipf = n_codes - n_rare
    ranks = np.arange(n_codes, dtype=np.float64)
    weights = (ranks + 2.0) ** -zipf_exponent
    weights[n_zipf:] = 0.0

    excluded = _EXTERNAL_CAUSE[system]
    pools: dict[str, list[str]] = {}
    for table in (dx_table, proc_table):
        pool = sorted(c for c in cs.codes(table) if c not in seen and not c.startswith(excluded)
                      and not _later_encounter(c, system) and cs.is_billable(c) and cs.description(c))
        order = rng.permutation(len(pool))
        pools[table] = [pool[i] for i in order]
    taken = {dx_table: 0, proc_table: 0}
    w_proc = sum(weights[i] for i, (_, t) in enumerate(ranked) if t == proc_table)
    w_all = float(weights[: len(ranked)].sum())
    for rank in range(len(ranked), n_codes):
        if rank < n_zipf:
            table = proc_table if w_proc < proc_share * (w_all + weights[rank]) else dx_table
        else:  # rare tail: procedures in proportion to their share of codes
            table = proc_table if rng.random() < proc_share else dx_table
        if taken[table] >= len(pools[table]):
            table = dx_table if table == proc_table else proc_table
        if taken[table] >= len(pools[table]):
            raise user_error(None, f"synth: --n-codes {n_codes} is larger than the {system} code tables allow",
                             "lower --n-codes", cls=SynthError)
        ranked.append((pools[table][taken[table]], table))
        taken[table] += 1
        w_all += weights[rank]
        if table == proc_table:
            w_proc += weights[rank]

    codes = tuple(c for c, _ in ranked)
    rare_counts = {c: int(k) for c, k in zip(codes[n_zipf:], rng.integers(1, 10, size=n_rare))}
    return Vocabulary(system=system, codes=codes, tables=tuple(t for _, t in ranked),
                      descriptions=tuple(cs.description(c) for c in codes), weights=weights,
                      rare_counts=rare_counts, head_missing=tuple(missing))


# --------------------------------------------------------------------------------------------
# Cohort: subjects, admissions, codes
# --------------------------------------------------------------------------------------------
@dataclass
class _Admission:
    subject_id: int
    hadm_id: int
    system: str
    admit: int  # days since 2100-01-01
    los: int
    sex: str
    age: int
    dx: list[int] = field(default_factory=list)  # vocabulary indices, seq order
    proc: list[int] = field(default_factory=list)
    negated: list[int] = field(default_factory=list)
    family: list[int] = field(default_factory=list)
    chronic: list[int] = field(default_factory=list)
    has_note: bool = True
    no_codes: bool = False
    null_code_row: bool = False
    long_note: bool = False
    addendum: bool = False


def _subjects(n_admissions: int, opts: SynthOptions, rng: np.random.Generator, id_base: tuple[int, int]):
    """Admissions per subject (1 + geometric, capped) and unique random subject/admission ids."""
    counts: list[int] = []
    total = 0
    while total < n_admissions:
        k = int(min(opts.max_admissions_per_subject, rng.geometric(0.62)))
        k = min(k, n_admissions - total)
        counts.append(k)
        total += k
    subj_lo, hadm_lo = id_base
    subject_ids = np.sort(rng.choice(np.arange(subj_lo, subj_lo + 9 * max(len(counts), 1000)),
                                     size=len(counts), replace=False))
    subject_ids = rng.permutation(subject_ids)
    hadm_ids = rng.choice(np.arange(hadm_lo, hadm_lo + 9 * max(n_admissions, 1000)), size=n_admissions, replace=False)
    return counts, [int(s) for s in subject_ids], [int(h) for h in hadm_ids]


def _gumbel_top(logw: np.ndarray, k: np.ndarray, rng: np.random.Generator, chunk: int = 2048) -> list[list[int]]:
    """Weighted sampling without replacement for many rows at once (Gumbel top-k)."""
    out: list[list[int]] = []
    kmax = int(k.max()) if len(k) else 0
    if kmax == 0 or len(logw) == 0:
        return [[] for _ in range(len(k))]
    kmax = min(kmax, int(np.isfinite(logw).sum()))
    for start in range(0, len(k), chunk):
        scores = logw[None, :] + rng.gumbel(size=(min(chunk, len(k) - start), len(logw)))
        top = np.argpartition(-scores, kmax - 1, axis=1)[:, :kmax] if kmax < len(logw) else \
            np.broadcast_to(np.arange(len(logw)), scores.shape)
        part = np.take_along_axis(scores, top, axis=1)
        top = np.take_along_axis(top, np.argsort(-part, axis=1, kind="stable"), axis=1)
        out.extend(row[: int(n)].tolist() for row, n in zip(top, k[start:start + len(top)]))
    return out


def _assign_codes(adms: list[_Admission], vocab: Vocabulary, opts: SynthOptions, rng: np.random.Generator) -> None:
    """Diagnosis and procedure codes per admission: chronic codes per subject, Zipf draws, rare codes."""
    draws = _Draws(rng)
    n = len(adms)
    dx_idx, proc_idx = vocab.indices(f"{vocab.system}_dx"), vocab.indices(f"{vocab.system}_proc")
    with np.errstate(divide="ignore"):
        logw = np.log(vocab.weights)
    k_dx = rng.integers(opts.dx_per_admission[0], opts.dx_per_admission[1] + 1, size=n)
    k_proc = rng.integers(opts.proc_per_admission[0], opts.proc_per_admission[1] + 1, size=n)
    dx_rows = _gumbel_top(logw[dx_idx], k_dx + 2, rng)
    proc_rows = _gumbel_top(logw[proc_idx], k_proc, rng)
    chronic_of: dict[int, list[int]] = {}
    for a, row_dx, row_proc, kd in zip(adms, dx_rows, proc_rows, k_dx):
        # A subject's chronic conditions come back on most of their admissions.
        if a.subject_id not in chronic_of:
            chronic_of[a.subject_id] = [int(dx_idx[j]) for j in row_dx[: draws.randint(0, 3)]]
        a.chronic = [c for c in chronic_of[a.subject_id] if draws.chance(0.8)]
        chosen = list(a.chronic)
        for j in row_dx:
            if len(chosen) >= kd:
                break
            if int(dx_idx[j]) not in chosen:
                chosen.append(int(dx_idx[j]))
        a.dx = draws.shuffle(chosen)
        a.proc = [int(proc_idx[j]) for j in row_proc]
    # Rare codes: an explicit small count each, placed in random coded admissions.
    index_of = {c: i for i, c in enumerate(vocab.codes)}
    eligible = [i for i, a in enumerate(adms) if not a.no_codes]
    for code in vocab.codes:
        if code not in vocab.rare_counts or not eligible:
            continue
        i = index_of[code]
        for pos in rng.choice(len(eligible), size=min(vocab.rare_counts[code], len(eligible)), replace=False):
            a = adms[eligible[int(pos)]]
            target = a.dx if vocab.tables[i].endswith("_dx") else a.proc
            if i not in target:
                target.append(i)
    for a in adms:
        if a.no_codes:
            a.dx, a.proc, a.chronic = [], [], []


def _pick_distractors(a: _Admission, vocab: Vocabulary, opts: SynthOptions, draws: _Draws,
                      dx_pool: list[int]) -> None:
    """Codes mentioned as negated / family history: common diagnoses the admission does NOT have."""
    assigned = set(a.dx)
    want = draws.randint(*opts.negations_per_note)
    picks: list[int] = []
    for _ in range(4 * want + 8):
        if len(picks) >= want + 2:
            break
        i = draws.choice(dx_pool)
        if i not in assigned and i not in picks:
            picks.append(i)
    a.negated = picks[:want]
    a.family = picks[want: want + draws.randint(0, 2)]


def _build_cohort(corpus: str, n_admissions: int, opts: SynthOptions, vocabs: dict[str, Vocabulary],
                  rng: np.random.Generator) -> list[_Admission]:
    draws = _Draws(rng)
    id_base = (10_000_000, 20_000_000) if corpus == "mimic4" else (100, 100_000)
    counts, subject_ids, hadm_ids = _subjects(n_admissions, opts, rng, id_base)
    adms: list[_Admission] = []
    h = 0
    for sid, k in zip(subject_ids, counts):
        sex = "F" if draws.chance(0.45) else "M"
        age = draws.randint(18, 95)
        day = draws.randint(0, 365 * 90)
        icd9_subject = corpus == "mimic4" and draws.chance(opts.icd9_fraction)
        for j in range(k):
            los = min(1 + int(rng.exponential(5.0)), 60)
            # MIMIC-IV switched to ICD-10 in FY2016: a subject's early admissions may be ICD-9.
            system = "icd10" if corpus == "mimic4" else "icd9"
            if icd9_subject and (j == 0 or draws.chance(0.5)):
                system = "icd9"
            adms.append(_Admission(subject_id=sid, hadm_id=hadm_ids[h], system=system, admit=day, los=los,
                                   sex=sex, age=age))
            h += 1
            day += los + draws.randint(20, 900)
            age = min(age + draws.randint(0, 2), 99)
    for a in adms:
        a.no_codes = draws.chance(opts.no_code_fraction)
        a.null_code_row = a.no_codes and draws.chance(0.5) or draws.chance(0.002)
        a.has_note = not draws.chance(opts.no_note_fraction)
        a.long_note = draws.chance(opts.long_note_fraction)
        a.addendum = corpus == "mimic3" and draws.chance(opts.addendum_fraction)
    for system, vocab in vocabs.items():
        group = [a for a in adms if a.system == system]
        _assign_codes(group, vocab, opts, rng)
        # Distractors: frequent, condition-like diagnoses (not "history of" / status codes).
        dx_pool = [int(i) for i in vocab.indices(f"{system}_dx") if vocab.weights[i] > 0
                   and not vocab.codes[i].startswith(("V", "Z", "E")) and len(vocab.descriptions[i]) <= 70][:40]
        for a in group:
            _pick_distractors(a, vocab, opts, draws, dx_pool)
    return adms


def _patient_splits(adms: list[_Admission], fractions: Sequence[float], rng: np.random.Generator) -> dict[int, str]:
    """Split label per subject (all admissions of a subject share it)."""
    subjects = sorted({a.subject_id for a in adms})
    order = rng.permutation(len(subjects))
    n_train = int(round(fractions[0] * len(subjects)))
    n_val = int(round(fractions[1] * len(subjects)))
    labels = {}
    for rank, pos in enumerate(order):
        labels[subjects[int(pos)]] = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
    return labels


# --------------------------------------------------------------------------------------------
# Note text
# --------------------------------------------------------------------------------------------
# (phrase in a lower-cased description, spoken forms). First match wins, so longer phrases first.
_SYNONYMS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("coronary atherosclerosis of native coronary artery", ("CAD", "coronary artery disease")),
    ("atherosclerotic heart disease of native coronary artery", ("CAD", "coronary artery disease")),
    ("congestive heart failure", ("CHF", "heart failure")),
    ("atrial fibrillation", ("afib", "AF", "Afib")),
    ("chronic obstructive pulmonary disease", ("COPD",)),
    ("chronic airway obstruction", ("COPD",)),
    ("obstructive chronic bronchitis", ("COPD",)),
    ("acute respiratory failure", ("acute resp failure", "hypoxic respiratory failure")),
    ("acute kidney failure", ("ARF", "AKI", "acute renal failure")),
    ("acute posthemorrhagic anemia", ("acute blood loss anemia", "ABLA")),
    ("chronic kidney disease", ("CKD",)),
    ("end stage renal disease", ("ESRD",)),
    ("urinary tract infection", ("UTI",)),
    ("hyperlipidemia", ("HLD", "hyperlipidemia")),
    ("pure hypercholesterolemia", ("hypercholesterolemia", "high cholesterol")),
    ("esophageal reflux", ("GERD", "reflux")),
    ("gastro-esophageal reflux disease", ("GERD",)),
    ("essential (primary) hypertension", ("HTN", "hypertension")),
    ("hypertension", ("HTN",)),
    ("pneumonia", ("PNA",)),
    ("subendocardial infarction", ("NSTEMI",)),
    ("myocardial infarction", ("MI",)),
    ("obstructive sleep apnea", ("OSA",)),
    ("pulmonary embolism", ("PE",)),
    ("gastrointestinal hemorrhage", ("GI bleed", "GIB")),
    ("hypothyroidism", ("hypothyroid", "hypothyroidism")),
    ("major depressive disorder", ("MDD", "depression")),
    ("depressive disorder", ("depression",)),
    ("tobacco use disorder", ("tobacco abuse", "active smoker")),
    ("nicotine dependence", ("tobacco use", "smoker")),
    ("hyposmolality and/or hyponatremia", ("hyponatremia",)),
    ("thrombocytopenia", ("thrombocytopenia", "low platelets")),
    ("cerebral infarction", ("CVA", "stroke")),
    ("transient cerebral ischemia", ("TIA",)),
    ("hypertrophy (benign) of prostate", ("BPH",)),
    ("benign prostatic hyperplasia", ("BPH",)),
    ("osteoarthrosis", ("OA", "osteoarthritis")),
    ("rheumatoid arthritis", ("RA",)),
    ("human immunodeficiency virus", ("HIV",)),
    ("septicemia", ("sepsis",)),
    ("alcohol abuse", ("EtOH abuse",)),
    ("alcohol dependence", ("EtOH dependence",)),
    ("long-term (current) use of anticoagulants", ("on anticoagulation", "on coumadin")),
    ("long term (current) use of anticoagulants", ("on anticoagulation", "on coumadin")),
    ("long-term (current) use of insulin", ("insulin dependent", "on insulin")),
    ("long term (current) use of insulin", ("insulin dependent", "on insulin")),
    ("diabetes mellitus", ("DM", "diabetes")),
    ("venous catheterization, not elsewhere classified", ("central line placement", "CVL placement")),
    ("insertion of endotracheal tube", ("intubation", "ETT placement")),
    ("continuous invasive mechanical ventilation", ("mechanical ventilation",)),
    ("enteral infusion of concentrated nutritional substances", ("tube feeds", "enteral feeding")),
    ("transfusion of packed cells", ("PRBC transfusion", "transfused pRBCs")),
    ("extracorporeal circulation auxiliary to open heart surgery", ("cardiopulmonary bypass", "CPB")),
    ("coronary arteriography using two catheters", ("cardiac cath", "coronary angiography")),
    ("left heart cardiac catheterization", ("left heart cath", "LHC")),
    ("hemodialysis", ("HD", "hemodialysis")),
    ("single internal mammary-coronary artery bypass", ("CABG", "LIMA-LAD")),
    ("insertion of drug-eluting coronary artery stent", ("DES placement", "PCI with DES")),
    ("arterial catheterization", ("arterial line", "A-line")),
    ("percutaneous [endoscopic] gastrostomy", ("PEG", "PEG placement")),
    ("respiratory ventilation", ("mechanical ventilation", "intubated on the vent")),
    ("transfusion of nonautologous red blood cells", ("PRBC transfusion", "transfused pRBCs")),
    ("insertion of endotracheal airway", ("intubation", "ETT placement")),
    ("insertion of infusion device into superior vena cava", ("central line placement", "CVL placement")),
)
_DROP = re.compile(r",\s*(?:[a-z]+\s+)?(?:unspecified|not specified)(?:\s+[a-z]+)?(?=,|$)"
                   r"|,?\s*\b(?:not elsewhere classified|NEC|NOS|not otherwise specified)\b"
                   r"|^\s*(?:other and unspecified|unspecified|other specified)\s+", re.IGNORECASE)
_SPACES = re.compile(r"\s{2,}")
_SPACE_COMMA = re.compile(r"\s+,")


def clinical_name(description: str) -> str:
    """A clinician's shorter name for a code description: drops "unspecified"/"NEC" qualifiers.

    "Unspecified essential hypertension" -> "essential hypertension";
    "Congestive heart failure, unspecified" -> "congestive heart failure".
    """
    text = _SPACES.sub(" ", _SPACE_COMMA.sub(",", _DROP.sub(" ", description))).strip(" ,;")
    if not text:
        text = description.strip()
    if len(text) > 1 and not text[:2].isupper():
        text = text[0].lower() + text[1:]
    return text


def _synonyms(description: str) -> tuple[str, ...]:
    low = description.lower()
    for phrase, synonyms in _SYNONYMS:
        if phrase in low:
            return synonyms
    return ()


def mention_forms(description: str) -> tuple[str, ...]:
    """Every way the generated notes may name a code: its description, its clinical name, and the
    abbreviations/synonyms of the first matching phrase (for checks and string-matching baselines)."""
    return tuple(dict.fromkeys((description, clinical_name(description), *_synonyms(description))))


def _spoken(description: str, draws: _Draws) -> str:
    """How a note refers to a code in running text: an abbreviation/synonym if one fits, else its
    clinical name."""
    synonyms = _synonyms(description)
    if synonyms and draws.chance(0.75):
        return draws.choice(synonyms)
    return clinical_name(description)


def _cased(text: str, draws: _Draws) -> str:
    u = draws.random()
    if u < 0.55:
        return text
    if u < 0.85:
        return text.lower()
    return text[:1].upper() + text[1:]


class _Style:
    """MIMIC-III's [** **] de-identification placeholders vs MIMIC-IV's ___ ."""

    def __init__(self, mimic4: bool, draws: _Draws):
        self.m4, self.d = mimic4, draws
        self.gap = " \n" if mimic4 else "\n"

    def date(self, day: int) -> str:
        if self.m4:
            return "___"
        x = _date(day)
        return f"[**{x.year}-{x.month}-{x.day}**]"

    def hospital(self) -> str:
        return "___" if self.m4 else f"[**Hospital{self.d.choice(('1', '3', '6', ''))} {self.d.randint(1, 999)}**]"

    def doctor(self) -> str:
        if self.m4:
            return "___"
        return f"[**Last Name (NamePattern{self.d.randint(1, 4)}) {self.d.randint(100, 9999)}**]"

    def first_name(self) -> str:
        return "___" if self.m4 else f"[**First Name{self.d.randint(3, 11)} (LF) {self.d.randint(10, 9999)}**]"

    def phone(self) -> str:
        return "___" if self.m4 else f"[**Telephone/Fax ({self.d.randint(1, 5)}) {self.d.randint(100, 9999)}**]"

    def age(self, age: int) -> str:
        if self.m4:
            return "___"
        return "[**Age over 90 **]" if age > 89 else str(age)


_EPOCH = dt.date(2100, 1, 1).toordinal()


def _date(day: int) -> dt.date:
    return dt.date.fromordinal(_EPOCH + day)


_SYMPTOMS = (
    "shortness of breath", "chest pain", "fever", "abdominal pain", "altered mental status", "weakness",
    "nausea and vomiting", "hematemesis", "syncope", "cough", "dyspnea on exertion", "lower extremity swelling",
    "headache", "confusion", "hypotension", "melena", "bright red blood per rectum", "fall", "dizziness",
    "palpitations", "chills", "dysuria", "back pain", "diarrhea",
)
_DRUGS = (
    ("Aspirin", "81 mg PO DAILY"), ("Metoprolol Tartrate", "25 mg PO BID"), ("Lisinopril", "10 mg PO DAILY"),
    ("Atorvastatin", "40 mg PO QPM"), ("Furosemide", "40 mg PO DAILY"), ("Warfarin", "5 mg PO QHS"),
    ("Insulin Glargine", "20 units SC QHS"), ("Pantoprazole", "40 mg PO Q24H"), ("Levothyroxine", "75 mcg PO DAILY"),
    ("Amlodipine", "5 mg PO DAILY"), ("Heparin", "5000 UNIT SC TID"), ("Acetaminophen", "650 mg PO Q6H:PRN pain"),
    ("Docusate Sodium", "100 mg PO BID"), ("Senna", "8.6 mg PO BID:PRN constipation"), ("Vancomycin", "1000 mg IV Q12H"),
    ("Piperacillin-Tazobactam", "4.5 g IV Q8H"), ("Ceftriaxone", "1 gm IV Q24H"), ("Azithromycin", "250 mg PO DAILY"),
    ("Prednisone", "40 mg PO DAILY"), ("Albuterol Inhaler", "2 PUFF IH Q6H:PRN wheeze"), ("Tiotropium", "1 CAP IH DAILY"),
    ("Sertraline", "50 mg PO DAILY"), ("Gabapentin", "300 mg PO TID"), ("Oxycodone", "5 mg PO Q4H:PRN pain"),
    ("Tamsulosin", "0.4 mg PO QHS"), ("Clopidogrel", "75 mg PO DAILY"), ("Apixaban", "5 mg PO BID"),
    ("Metformin", "500 mg PO BID"), ("Simvastatin", "20 mg PO QPM"), ("Lactulose", "30 mL PO TID"),
    ("Rifaximin", "550 mg PO BID"), ("Ondansetron", "4 mg IV Q8H:PRN nausea"), ("Magnesium Oxide", "400 mg PO DAILY"),
    ("Potassium Chloride", "20 mEq PO DAILY"), ("Folic Acid", "1 mg PO DAILY"), ("Thiamine", "100 mg PO DAILY"),
)
_COURSE_SENTENCES = (
    "Patient was started on {drug} with improvement.", "Home {drug} was continued.", "{drug} was held on admission.",
    "Monitored on telemetry without events.", "Electrolytes were repleted as needed.",
    "Pt was seen by the consult service who agreed with the plan.", "Repeat labs were stable.",
    "Daily weights were followed and I/Os monitored.", "PT evaluated the patient and recommended rehab.",
    "Symptoms improved over the course of the admission.", "Cultures were sent and remained no growth to date.",
    "Pain was controlled with {drug}.", "{drug} was uptitrated as tolerated by BP.",
    "Diet was advanced without difficulty.", "Renal function was trended and remained at baseline.",
    "She was transferred to the floor in stable condition.", "He remained afebrile and hemodynamically stable.",
    "Social work was involved for discharge planning.", "Case discussed with the family at bedside.",
    "Goals of care were addressed with the health care proxy.", "Imaging was reviewed with radiology.",
    "Antibiotics were narrowed based on sensitivities.", "Blood pressure remained well controlled.",
    "Transitioned to PO {drug} prior to discharge.", "Nutrition was consulted and recommendations followed.",
)
_EXAM = (
    "VS: T {t} BP {sbp}/{dbp} HR {hr} RR {rr} O2sat {sat}% RA\n"
    "GEN: {gen}\nHEENT: NCAT, PERRL, EOMI, MMM, oropharynx clear\nNECK: supple, JVP not elevated\n"
    "CV: {cv}\nLUNGS: {lungs}\nABD: soft, NT/ND, normoactive bowel sounds\n"
    "EXT: {ext}\nNEURO: A&Ox3, CN II-XII intact, moving all extremities\nSKIN: no rashes or lesions"
)
_GEN = ("NAD, comfortable", "elderly, in mild distress", "well appearing, alert", "ill appearing, diaphoretic")
_CV = ("RRR, normal S1/S2, no m/r/g", "irregularly irregular, no murmurs", "RRR, II/VI SEM at RUSB")
_LUNGS = ("CTAB, no wheezes, rales, or rhonchi", "bibasilar crackles", "diffuse expiratory wheezes",
          "decreased breath sounds at the right base")
_EXT = ("WWP, no c/c/e", "2+ pitting edema bilaterally to the knees", "trace edema, 2+ DP pulses")
_SOCIAL = (
    "Lives with {who}. {tob}. {etoh}. No illicit drug use.",
    "Retired {job}, lives {where}. {tob}. {etoh}.",
)
_WHO = ("his wife", "her husband", "daughter", "alone", "son and daughter-in-law")
_JOBS = ("teacher", "electrician", "nurse", "accountant", "truck driver", "engineer", "cook")
_WHERE = ("alone in an apartment", "with family", "in an assisted living facility")
_TOB = ("Former smoker, quit 20 years ago", "Denies tobacco", "Smokes 1 ppd", "Remote 30 pack-year history")
_ETOH = ("Occasional EtOH", "Denies EtOH", "Drinks 2-3 beers per day", "Social EtOH")
_FAMILY_REL = ("Mother", "Father", "Brother", "Sister", "Maternal grandmother", "Paternal uncle")
_FAMILY_FMT = ("{rel} with {x}.", "{rel} died of {x} at age {age}.", "{rel} had {x}.")
_SURGICAL_HISTORY = ("s/p appendectomy", "s/p cholecystectomy", "remote tonsillectomy", "s/p right knee arthroscopy",
                     "cataract surgery OU", "s/p hernia repair", "s/p C-section x2", "s/p TURP")
_NEG_FMT = (
    "No evidence of {x}.", "Denies {x}.", "Ruled out for {x}.", "Negative for {x}.",
    "{X} was considered but ruled out.", "Workup for {x} was negative.", "No signs of {x} on imaging.",
    "There was initial concern for {x}, which was ruled out.",
)
_HPI_LINKS = ("who presents with", "who presented to the ED with", "transferred from an outside hospital with",
              "admitted with")
_HPI_FILL = (
    "Symptoms began {n} days prior to admission and progressively worsened.",
    "In the ED, initial vitals were notable for HR {hr} and BP {sbp}/{dbp}.",
    "She was given {drug} in the ED and admitted to medicine.",
    "He reports poor PO intake over the past week.",
    "Per family, the patient has been more fatigued recently.",
    "ROS otherwise negative except as noted above.",
    "Labs in the ED were notable for a creatinine of {cr} and lactate of {lac}.",
)
_INSTRUCTIONS = (
    "You were admitted to the hospital for {x}. While you were here, you were treated with {drug}. "
    "Please take all of your medications as prescribed and keep your follow-up appointments.",
    "Please call your doctor or return to the emergency department if you experience chest pain, shortness "
    "of breath, fever greater than 101, or any other concerning symptoms.",
    "Weigh yourself every morning and call your doctor if your weight goes up more than 3 lbs.",
    "Please do not drive while taking pain medications.",
)
_DISPOSITION = ("Home", "Home With Service", "Extended Care", "Skilled Nursing Facility", "Rehab")
_SERVICES = ("MEDICINE", "SURGERY", "CARDIOTHORACIC", "NEUROLOGY", "ORTHOPAEDICS", "MEDICINE")


def _lab_lines(style: _Style, day: int, draws: _Draws, n: int) -> list[str]:
    lines = []
    for k in range(n):
        when = f"{style.date(day + k // 3)} {draws.randint(1, 12):02d}:{draws.randint(0, 59):02d}{draws.choice(('AM', 'PM'))}"
        kind = draws.randint(0, 2)
        if kind == 0:
            wbc, hgb = 4 + 12 * draws.random(), 7 + 8 * draws.random()
            lines.append(f"{when} BLOOD WBC-{wbc:.1f}{'*' if wbc > 11 else ''} RBC-{2.5 + 2.5 * draws.random():.2f}* "
                         f"Hgb-{hgb:.1f}{'*' if hgb < 12 else ''} Hct-{hgb * 3:.1f}{'*' if hgb < 12 else ''} "
                         f"MCV-{draws.randint(78, 102)} RDW-{12 + 5 * draws.random():.1f} Plt Ct-{draws.randint(60, 450)}")
        elif kind == 1:
            cr = 0.5 + 3 * draws.random()
            lines.append(f"{when} BLOOD Glucose-{draws.randint(70, 320)}* UreaN-{draws.randint(8, 80)}* "
                         f"Creat-{cr:.1f}{'*' if cr > 1.2 else ''} Na-{draws.randint(125, 146)} K-{3 + 2 * draws.random():.1f} "
                         f"Cl-{draws.randint(92, 110)} HCO3-{draws.randint(16, 32)} AnGap-{draws.randint(8, 22)}")
        else:
            lines.append(f"{when} BLOOD ALT-{draws.randint(8, 200)} AST-{draws.randint(10, 240)} "
                         f"AlkPhos-{draws.randint(40, 300)} TotBili-{0.2 + 3 * draws.random():.1f} "
                         f"Albumin-{2 + 2.5 * draws.random():.1f} Lactate-{0.6 + 4 * draws.random():.1f}")
    return lines


_FIELDS = {
    "drug": lambda d: d.choice(_DRUGS)[0], "hr": lambda d: d.randint(55, 130), "sbp": lambda d: d.randint(85, 180),
    "dbp": lambda d: d.randint(45, 100), "n": lambda d: d.randint(1, 10),
    "cr": lambda d: f"{0.6 + 3 * d.random():.1f}", "lac": lambda d: f"{0.8 + 3 * d.random():.1f}",
}
_TEMPLATE_FIELDS: dict[str, tuple[str, ...]] = {}


def _fill(template: str, draws: _Draws, **kw) -> str:
    """Fill a sentence template; random values are drawn only for the fields it uses."""
    names = _TEMPLATE_FIELDS.get(template)
    if names is None:
        names = tuple(dict.fromkeys(f for _, f, _, _ in string.Formatter().parse(template) if f))
        _TEMPLATE_FIELDS[template] = names
    if not names:
        return template
    return template.format(**{k: kw[k] if k in kw else _FIELDS[k](draws) for k in names})


def _sentences(draws: _Draws, k: int) -> str:
    return " ".join(_fill(draws.choice(_COURSE_SENTENCES), draws) for _ in range(k))


def _negation(name: str, draws: _Draws) -> str:
    return draws.choice(_NEG_FMT).format(x=name, X=name[:1].upper() + name[1:])


class _NoteWriter:
    """Renders one admission's discharge summary (and addendum / other notes) as MIMIC-style text."""

    def __init__(self, vocab_by_system: dict[str, Vocabulary], opts: SynthOptions, mimic4: bool, draws: _Draws):
        self.vocabs, self.opts, self.d = vocab_by_system, opts, draws
        self.s = _Style(mimic4, draws)

    def _desc(self, a: _Admission, i: int) -> str:
        return self.vocabs[a.system].descriptions[i]

    def discharge_summary(self, a: _Admission) -> tuple[str, str | None]:
        """(report text, addendum text or None). Each assigned code's description or synonym is in
        the report, except one code that an addendum (if any) is the only place to mention."""
        d, s, desc = self.d, self.s, (lambda i: self._desc(a, i))
        gap = s.gap
        dx = list(a.dx)
        addendum_code = None
        if a.addendum and len(dx) > 1:
            addendum_code = dx.pop()
        primary, secondary = dx[:1], dx[1:]
        listed = [i for i in dx if d.chance(self.opts.dx_list_recall)] if dx else []
        if primary and primary[0] not in listed and d.chance(0.7):
            listed.insert(0, primary[0])
        in_course = [i for i in dx if i not in listed or d.chance(0.5)]
        procs_listed = [i for i in a.proc if d.chance(0.85)]

        cc = _spoken(desc(primary[0]), d) if primary and d.chance(0.35) else d.choice(_SYMPTOMS)
        v = 0.3 + 1.3 * d.random()  # verbosity: how much filler this author writes
        neg_names = [_spoken(desc(i), d) for i in a.negated]
        admit, disch = a.admit, a.admit + a.los
        out: list[str] = []
        w = out.append
        if s.m4:
            w(" \nName:  ___                     Unit No:   ___\n \n")
        w(f"Admission Date:  {s.date(admit)}              Discharge Date:   {s.date(disch)}\n{gap}")
        w(f"Date of Birth:  {s.date(admit - 365 * a.age - d.randint(0, 364))}             Sex:   {a.sex}\n{gap}")
        w(f"Service: {d.choice(_SERVICES)}\n{gap}")
        w(f"Allergies:\n{d.choice(('No Known Allergies / Adverse Drug Reactions', 'Penicillins', 'Sulfa (Sulfonamide Antibiotics)', 'Patient recorded as having No Known Allergies to Drugs', 'Codeine'))}\n{gap}")
        w(f"Attending: {s.first_name()}.\n{gap}")
        w(f"Chief Complaint:\n{cc}\n{gap}")
        w("Major Surgical or Invasive Procedure:\n")
        w("\n".join(_cased(desc(i), d) for i in procs_listed) if procs_listed else "None")
        w(f"\n{gap}History of Present Illness:\n")
        pmh_names = [_spoken(desc(i), d) for i in a.chronic]
        who = "M" if a.sex == "M" else "F"
        pmh_txt = ", ".join(pmh_names) if pmh_names else "no significant PMH"
        pmh_intro = f"PMH significant for {pmh_txt}" if pmh_names else pmh_txt
        w(f"{s.age(a.age)} y/o {who} with {pmh_intro} {d.choice(_HPI_LINKS)} {cc}. ")
        w(" ".join(_fill(t, d) for t in d.sample(_HPI_FILL, d.randint(1, 1 + int(4 * v)))))
        hpi_neg = bool(neg_names) and d.chance(0.5)
        if hpi_neg:
            w(" " + _negation(neg_names[0], d))
        others = [x for x in d.sample(_SYMPTOMS, 4) if x != cc][:3]
        w(f" Denies {', '.join(others)}.\n{gap}")
        w("Past Medical History:\n")
        history = [f"- {n}" for n in pmh_names] + [f"- {x}" for x in d.sample(_SURGICAL_HISTORY, d.randint(0, 2))]
        w("\n".join(history) if history else "- none")
        w(f"\n{gap}Social History:\n{self._social()}\n{gap}")
        w("Family History:\n")
        fam = [d.choice(_FAMILY_FMT).format(rel=d.choice(_FAMILY_REL), x=clinical_name(desc(i)), age=d.randint(40, 90))
               for i in a.family]
        w(" ".join(fam) if fam else d.choice(("Non-contributory.", "No family history of premature CAD.", "NC")))
        w(f"\n{gap}Physical Exam:\nADMISSION EXAM:\n")
        w(_fill(_EXAM, d, t=f"{96.5 + 4 * d.random():.1f}", rr=d.randint(12, 28), sat=d.randint(88, 100),
                gen=d.choice(_GEN), cv=d.choice(_CV), lungs=d.choice(_LUNGS), ext=d.choice(_EXT)))
        w(f"\n{gap}Pertinent Results:\n")
        w("\n".join(_lab_lines(s, admit, d, d.randint(1, 2 + int(12 * v)))))
        w(f"\n{gap}Brief Hospital Course:\n")
        w(f"{s.age(a.age)} y/o {who} with {pmh_txt} admitted with {cc}.\n\n")
        course = self._course(a, in_course, listed, procs_listed, neg_names[1:] if hpi_neg else neg_names, v)
        w(course)
        if a.long_note:
            w(self._long_course(a))
        meds = d.sample(_DRUGS, d.randint(3, 4 + int(12 * v)))
        w(f"\n{gap}Medications on Admission:\n")
        w("\n".join(f"{k}. {n} {dose}" for k, (n, dose) in enumerate(meds[: max(3, len(meds) - 3)], 1)))
        w(f"\n{gap}Discharge Medications:\n")
        w("\n".join(f"{k}. {n} {dose}" for k, (n, dose) in enumerate(meds, 1)))
        w(f"\n{gap}Discharge Disposition:\n{d.choice(_DISPOSITION)}\n{gap}")
        w("Discharge Diagnosis:\n")
        prim = [i for i in listed if i in primary]
        sec = [i for i in listed if i not in primary]
        if prim:
            w("Primary:\n" + "\n".join(_cased(desc(i), d) for i in prim) + "\n\n")
        if sec:
            w("Secondary:\n" + "\n".join(_cased(desc(i), d) for i in sec) + "\n")
        if not listed:
            w(f"{cc}\n")
        w(f"{gap}Discharge Condition:\nMental Status: Clear and coherent.\n"
          f"Level of Consciousness: Alert and interactive.\nActivity Status: {d.choice(('Ambulatory - Independent', 'Ambulatory - requires assistance or aid (walker or cane)', 'Out of Bed with assistance to chair or wheelchair'))}.\n{gap}")
        x = _spoken(desc(primary[0]), d) if primary else cc
        w("Discharge Instructions:\n")
        w("\n\n".join(_fill(t, d, x=x) for t in d.sample(_INSTRUCTIONS, d.randint(1, 1 + int(3 * v)))))
        w(f"\n{gap}Followup Instructions:\n")
        w(f"Please follow up with Dr. {s.doctor()} in {d.randint(1, 4)} weeks. Phone: {s.phone()}\n")
        if not s.m4:
            w(f"\n                             {s.first_name()} {s.doctor()} MD {s.phone()}\n\nCompleted by:{s.date(disch)}")
        report = "".join(out)
        addendum = None
        if a.addendum:
            addendum = (f"Name:  {s.doctor()},  {s.first_name()}            Unit No:  {d.randint(1000, 99999)}\n\n"
                        f"Admission Date:  {s.date(admit)}              Discharge Date:   {s.date(disch)}\n\n"
                        f"Date of Birth:  {s.date(admit - 365 * a.age)}             Sex:   {a.sex}\n\n"
                        f"Service: {d.choice(_SERVICES)}\n\nAddendum:\n")
            if addendum_code is not None:
                addendum += (f"Pt was also noted to have {_cased(desc(addendum_code), d)} during this admission, "
                             f"to be followed up as an outpatient. ")
            addendum += f"{_sentences(d, d.randint(1, 3))}\n\nDischarge Disposition:\n{d.choice(_DISPOSITION)}\n\n" \
                        f"                             {s.first_name()} {s.doctor()} MD {s.phone()}\n\n" \
                        f"Completed by:{s.date(disch + d.randint(0, 3))}"
        return report, addendum

    def _social(self) -> str:
        d = self.d
        return d.choice(_SOCIAL).format(who=d.choice(_WHO), job=d.choice(_JOBS), where=d.choice(_WHERE),
                                        tob=d.choice(_TOB), etoh=d.choice(_ETOH))

    def _course(self, a: _Admission, in_course: list[int], listed: list[int], procs_listed: list[int],
                neg_names: list[str],
                verbosity: float) -> str:
        d, desc = self.d, (lambda i: self._desc(a, i))
        parts = []
        for i in in_course:
            # A code missing from the discharge-diagnosis list keeps its full description here.
            head = _cased(desc(i), d) if i not in listed else _spoken(desc(i), d)
            parts.append(f"# {head}: {_sentences(d, d.randint(1, 1 + int(4 * verbosity)))}")
        for i in a.proc:
            on = self.s.date(a.admit + d.randint(0, max(a.los - 1, 0)))
            name = _cased(desc(i), d) if i not in procs_listed or d.chance(0.5) else _spoken(desc(i), d)
            parts.append(f"Pt underwent {name} on {on}. {_sentences(d, d.randint(0, 2))}".rstrip())
        for name in neg_names:
            parts.append(f"# r/o {name}: {_negation(name, d)} {_sentences(d, d.randint(0, 1))}".rstrip())
        d.shuffle(parts)
        return "\n\n".join(parts)

    def _long_course(self, a: _Admission) -> str:
        d = self.d
        target = d.randint(2500, 7000)
        words = 0
        parts = ["\n\nDetailed hospital course by day:"]
        day = 1
        while words < target:
            text = f"HD #{day}: {_sentences(d, d.randint(6, 14))}\n" + "\n".join(
                _lab_lines(self.s, a.admit + day, d, d.randint(1, 3)))
            words += len(text.split())
            parts.append(text)
            day += 1
        return "\n\n".join(parts)

    def other_note(self, a: _Admission | None, category: str, day: int) -> str:
        d, s = self.d, self.s
        if category == "Radiology":
            finding = "No acute cardiopulmonary process." if a is None or not a.dx or d.chance(0.5) else \
                f"Findings may be consistent with {clinical_name(self._desc(a, d.choice(a.dx)))}."
            return (f"{s.date(day)} {d.randint(1, 12)}:{d.randint(0, 59):02d} {d.choice(('AM', 'PM'))}\n"
                    f" {d.choice(('CHEST (PORTABLE AP)', 'CT HEAD W/O CONTRAST', 'RENAL U.S.', 'CHEST (PA & LAT)'))}"
                    f"  Clip # {s.phone()}\n Reason: eval\n\n FINAL REPORT\n INDICATION: {d.choice(_SYMPTOMS)}.\n\n"
                    f" IMPRESSION: {finding}\n")
        if category == "ECG":
            return d.choice(("Sinus rhythm. Normal ECG.", "Atrial fibrillation with rapid ventricular response.",
                             "Sinus tachycardia. Nonspecific ST-T wave changes.", "Sinus bradycardia. Left axis deviation."))
        return (f"{category.strip()} note: {_sentences(d, d.randint(2, 6))} Vitals: HR {d.randint(55, 120)} "
                f"BP {d.randint(90, 170)}/{d.randint(50, 95)}.")


# --------------------------------------------------------------------------------------------
# File writing
# --------------------------------------------------------------------------------------------
def _open_text(path: Path, use_gzip: bool):
    if use_gzip:
        raw = open(path, "wb")
        # mtime=0 and a fixed name keep the bytes identical across runs.
        gz = gzip.GzipFile(filename=path.name[:-3], mode="wb", fileobj=raw, mtime=0, compresslevel=1)
        return io.TextIOWrapper(gz, encoding="utf-8", newline=""), (gz, raw)
    f = open(path, "w", encoding="utf-8", newline="")
    return f, ()


def _write_csv(path: Path, header: Sequence[str], rows, *, mimic3_quoting: bool, use_gzip: bool) -> None:
    """MIMIC-III style quotes strings and leaves numbers, dates and empty values bare
    (``174,22532,167853,2151-08-04,,,"Discharge summary",...``); MIMIC-IV quotes only when needed."""
    f, closers = _open_text(path, use_gzip)
    try:
        if mimic3_quoting:
            f.write(",".join(f'"{h}"' for h in header) + "\n")
            for row in rows:
                f.write(",".join("" if v is None else v.raw if isinstance(v, _Bare) else
                                 str(v) if isinstance(v, int) else '"' + v.replace('"', '""') + '"'
                                 for v in row) + "\n")
        else:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)
    finally:
        f.close()
        for c in closers:
            c.close()


class _Bare:
    """A string value written without quotes in MIMIC-III files (dates)."""

    __slots__ = ("raw",)

    def __init__(self, raw: str):
        self.raw = raw


def _write_splits(folder: Path, stem: str, ids: list[int], labels: list[str]) -> tuple[Path, Path]:
    df = pd.DataFrame({"_id": pd.Series(ids, dtype="int64"), "split": pd.Series(labels, dtype="object")})
    feather, csv_path = folder / f"{stem}.feather", folder / f"{stem}.csv"
    df.to_feather(feather)
    df.to_csv(csv_path, index=False, lineterminator="\n")
    return feather, csv_path


def _check_out(out_dir: str | os.PathLike, name: str, overwrite: bool) -> Path:
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


def _code_rows(a: _Admission, vocab: Vocabulary, kind: str):
    """(seq_num, undotted code) rows of one admission for ``kind`` in {"dx", "proc"}."""
    idx = a.dx if kind == "dx" else a.proc
    return [(k, vocab.codes[i].replace(".", "")) for k, i in enumerate(idx, 1)]


# --------------------------------------------------------------------------------------------
# Corpus generators
# --------------------------------------------------------------------------------------------
def _seeds(seed: int, corpus: str) -> list[np.random.Generator]:
    ss = np.random.SeedSequence([int(seed), {"mimic3": 3, "mimic4": 4}[corpus]])
    return [np.random.default_rng(s) for s in ss.spawn(5)]


def _proc_share(opts: SynthOptions) -> float:
    dx = sum(opts.dx_per_admission) / 2
    proc = sum(opts.proc_per_admission) / 2
    return proc / (dx + proc)


def _word_stats(words: list[int]) -> dict:
    if not words:
        return {"n": 0}
    arr = np.asarray(words)
    return {"n": int(arr.size), "p50": int(np.percentile(arr, 50)), "p95": int(np.percentile(arr, 95)),
            "max": int(arr.max()), "min": int(arr.min())}


def _manifest(corpus: str, seed: int, n_admissions: int, opts: SynthOptions, vocabs: dict[str, Vocabulary],
              adms: list[_Admission], counts: dict[str, dict[str, int]], words: list[int], files: dict[str, str],
              extra: dict) -> dict:
    opt = {k: (list(v) if isinstance(v, tuple) else v) for k, v in opts.__dict__.items()}
    return {
        "generator": "llm4icd data_tools.build.synth", "generator_version": GENERATOR_VERSION, "corpus": corpus,
        "seed": int(seed), "n_admissions": int(n_admissions), "options": opt, "files": files,
        "vocabulary": {
            system: [{"code": c, "table": t, "description": desc, "weight": round(float(w), 8),
                      "rare_target": v.rare_counts.get(c), "count": counts[system].get(c, 0)}
                     for c, t, desc, w in zip(v.codes, v.tables, v.descriptions, v.weights)]
            for system, v in vocabs.items()},
        "head_codes_missing": {system: list(v.head_missing) for system, v in vocabs.items()},
        "admissions": {
            str(a.hadm_id): {"subject_id": a.subject_id, "code_system": a.system,
                             "negated": [vocabs[a.system].codes[i] for i in a.negated],
                             "family_history": [vocabs[a.system].codes[i] for i in a.family],
                             "long_note": a.long_note, "addendum": a.addendum, "has_note": a.has_note}
            for a in adms},
        "note_words": _word_stats(words),
        **extra,
    }


def _vocabularies(corpus: str, opts: SynthOptions, rng: np.random.Generator) -> dict[str, Vocabulary]:
    share = _proc_share(opts)
    kw = dict(proc_share=share, zipf_exponent=opts.zipf_exponent, rare_fraction=opts.rare_fraction)
    if corpus == "mimic3":
        return {"icd9": build_vocabulary("icd9", opts.n_codes, rng, head=_head_codes(corpus, "icd9"), **kw)}
    vocabs = {"icd10": build_vocabulary("icd10", opts.n_codes, rng, head=_head_codes(corpus, "icd10"), **kw)}
    if opts.icd9_fraction > 0:
        vocabs["icd9"] = build_vocabulary("icd9", max(40, opts.n_codes // 3), rng,
                                          head=_head_codes(corpus, "icd9"), **kw)
    return vocabs


def _code_counts(adms: list[_Admission], vocabs: dict[str, Vocabulary]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {s: {} for s in vocabs}
    for a in adms:
        c = counts[a.system]
        for i in a.dx + a.proc:
            code = vocabs[a.system].codes[i]
            c[code] = c.get(code, 0) + 1
    return counts


def generate_mimic3(out_dir: str | os.PathLike, n_admissions: int = 2000, seed: int = 0, *,
                    options: SynthOptions | None = None, overwrite: bool = False, progress: bool = False,
                    **option_overrides) -> dict[str, Path]:
    """Write a MIMIC-III-shaped corpus under ``out_dir/mimic3``; returns the paths written.

    Keys: ``root``, ``notes`` (NOTEEVENTS), ``diagnoses`` (DIAGNOSES_ICD), ``procedures``
    (PROCEDURES_ICD), ``splits`` (mimiciii_clean_splits.feather), ``splits_csv``, ``manifest``.
    ``option_overrides`` are ``SynthOptions`` fields (e.g. ``gzip=False``, ``n_codes=300``).
    """
    opts = _options(options, option_overrides)
    _check_n(n_admissions)
    final = _check_out(out_dir, MIMIC3_DIR, overwrite)
    with atomic.atomic_dir(final) as tmp:
        paths = _generate_mimic3_into(tmp, final, n_admissions, seed, opts, progress)
    return paths


def _options(options: SynthOptions | None, overrides: dict) -> SynthOptions:
    base = options or SynthOptions()
    unknown = sorted(set(overrides) - set(base.__dict__))
    if unknown:
        raise TypeError(f"synth: unknown option(s) {', '.join(unknown)}; valid: {', '.join(sorted(base.__dict__))}")
    opts = SynthOptions(**{**base.__dict__, **overrides})
    opts.validate()
    return opts


def _check_n(n_admissions: int) -> None:
    if not isinstance(n_admissions, (int, np.integer)) or n_admissions < 1:
        raise user_error(None, f"synth: --n-admissions must be a positive integer (got {n_admissions!r})",
                         "pass --n-admissions 1 or more", cls=SynthError)


def _generate_mimic3_into(tmp: Path, final: Path, n_admissions: int, seed: int, opts: SynthOptions,
                          progress: bool) -> dict[str, Path]:
    _check_n(n_admissions)
    r_vocab, r_cohort, r_text, r_split, r_other = _seeds(seed, "mimic3")
    vocabs = _vocabularies("mimic3", opts, r_vocab)
    vocab = vocabs["icd9"]
    adms = _build_cohort("mimic3", n_admissions, opts, vocabs, r_cohort)
    splits = _patient_splits(adms, opts.split_fractions, r_split)
    draws, other_draws = _Draws(r_text), _Draws(r_other)
    writer = _NoteWriter(vocabs, opts, mimic4=False, draws=draws)
    other_writer = _NoteWriter(vocabs, opts, mimic4=False, draws=other_draws)
    ext = ".csv.gz" if opts.gzip else ".csv"

    notes, words = [], []
    row_id = 1
    n_addenda = n_other = 0
    for a in tqdm(adms, desc="mimic3 notes", unit="adm", disable=not progress):
        disch = a.admit + a.los
        if a.has_note:
            report, addendum = writer.discharge_summary(a)
            words.append(len(report.split()))
            notes.append((row_id, a.subject_id, a.hadm_id, _Bare(_date(disch).isoformat()), None, None,
                          "Discharge summary", "Report", None, None, report))
            row_id += 1
            if addendum is not None:
                notes.append((row_id, a.subject_id, a.hadm_id, _Bare(_date(disch + other_draws.randint(0, 3)).isoformat()),
                               None, None, "Discharge summary", "Addendum", None, None, addendum))
                row_id += 1
                n_addenda += 1
        k = int(other_draws.random() * 2 * opts.other_notes_per_admission + 0.5)
        for _ in range(k):
            cat, desc = other_draws.choice(_OTHER_CATEGORIES)
            day = a.admit + other_draws.randint(0, a.los)
            when = f"{_date(day).isoformat()} {other_draws.randint(0, 23):02d}:{other_draws.randint(0, 59):02d}:00"
            no_hadm = cat in ("Radiology", "ECG") and other_draws.chance(0.1)  # outpatient studies
            notes.append((row_id, a.subject_id, None if no_hadm else a.hadm_id, _Bare(_date(day).isoformat()),
                          _Bare(when), _Bare(when) if cat != "ECG" else None, cat, desc,
                          other_draws.randint(14000, 21000) if cat != "Radiology" else None, None,
                          other_writer.other_note(a, cat, day)))
            row_id += 1
            n_other += 1
    # MIMIC's NOTEEVENTS is not grouped by admission: shuffle rows (ROW_IDs stay as assigned).
    order = r_other.permutation(len(notes))
    notes = [notes[int(i)] for i in order]

    dx_rows, proc_rows = [], []
    drow = prow = 1
    for a in adms:
        for seq, code in _code_rows(a, vocab, "dx"):
            dx_rows.append((drow, a.subject_id, a.hadm_id, seq, code))
            drow += 1
        if a.null_code_row:
            dx_rows.append((drow, a.subject_id, a.hadm_id, None, None))
            drow += 1
        for seq, code in _code_rows(a, vocab, "proc"):
            proc_rows.append((prow, a.subject_id, a.hadm_id, seq, code))
            prow += 1

    paths = {"root": final, "notes": final / f"NOTEEVENTS{ext}", "diagnoses": final / f"DIAGNOSES_ICD{ext}",
             "procedures": final / f"PROCEDURES_ICD{ext}", "splits": final / "mimiciii_clean_splits.feather",
             "splits_csv": final / "mimiciii_clean_splits.csv", "manifest": final / MANIFEST}
    _write_csv(tmp / paths["notes"].name, _NOTE_COLS_3, notes, mimic3_quoting=True, use_gzip=opts.gzip)
    _write_csv(tmp / paths["diagnoses"].name, _CODE_COLS_3, dx_rows, mimic3_quoting=True, use_gzip=opts.gzip)
    _write_csv(tmp / paths["procedures"].name, _CODE_COLS_3, proc_rows, mimic3_quoting=True, use_gzip=opts.gzip)
    # Like Edin's clean split file: admissions with a discharge summary (prepare still drops those without codes).
    with_note = [a for a in adms if a.has_note]
    _write_splits(tmp, "mimiciii_clean_splits", [a.hadm_id for a in with_note], [splits[a.subject_id] for a in with_note])
    counts = _code_counts(adms, vocabs)
    summary = _summary("mimic3", adms, splits, counts, words, n_addenda, n_other, len(dx_rows), len(proc_rows))
    files = {k: v.name for k, v in paths.items() if k != "root"}
    man = _manifest("mimic3", seed, n_admissions, opts, vocabs, adms, counts, words, files, {"summary": summary})
    (tmp / MANIFEST).write_text(json.dumps(man, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return paths


_OTHER_CATEGORIES = (("Radiology", "CHEST (PORTABLE AP)"), ("Nursing/other", "Report"), ("Nursing", "Nursing Progress Note"),
                     ("ECG", "Report"), ("Physician ", "Physician Resident Progress Note"), ("Echo", "Report"),
                     ("Respiratory ", "Respiratory Care Shift Note"), ("Social Work", "Social Work Note"))
_NOTE_COLS_3 = ("ROW_ID", "SUBJECT_ID", "HADM_ID", "CHARTDATE", "CHARTTIME", "STORETIME", "CATEGORY", "DESCRIPTION",
                "CGID", "ISERROR", "TEXT")
_CODE_COLS_3 = ("ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE")
_NOTE_COLS_4 = ("note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "storetime", "text")
_DX_COLS_4 = ("subject_id", "hadm_id", "seq_num", "icd_code", "icd_version")
_PROC_COLS_4 = ("subject_id", "hadm_id", "seq_num", "chartdate", "icd_code", "icd_version")


def generate_mimic4(out_dir: str | os.PathLike, n_admissions: int = 2000, seed: int = 0, *,
                    options: SynthOptions | None = None, overwrite: bool = False, progress: bool = False,
                    **option_overrides) -> dict[str, Path]:
    """Write a MIMIC-IV-shaped corpus under ``out_dir/mimic4``; returns the paths written.

    Keys: ``root``, ``notes`` (note/discharge), ``diagnoses`` (hosp/diagnoses_icd), ``procedures``
    (hosp/procedures_icd), ``splits`` (mimiciv_icd10_split.feather), ``splits_csv``, ``splits_icd9``,
    ``splits_icd9_csv`` (only when ``icd9_fraction`` > 0), ``manifest``. About ``icd9_fraction`` of the
    subjects have ICD-9-coded admissions (``icd_version`` 9), which the ICD-10 split file leaves out.
    """
    opts = _options(options, option_overrides)
    _check_n(n_admissions)
    final = _check_out(out_dir, MIMIC4_DIR, overwrite)
    with atomic.atomic_dir(final) as tmp:
        paths = _generate_mimic4_into(tmp, final, n_admissions, seed, opts, progress)
    return paths


def _generate_mimic4_into(tmp: Path, final: Path, n_admissions: int, seed: int, opts: SynthOptions,
                          progress: bool) -> dict[str, Path]:
    _check_n(n_admissions)
    r_vocab, r_cohort, r_text, r_split, r_other = _seeds(seed, "mimic4")
    vocabs = _vocabularies("mimic4", opts, r_vocab)
    adms = _build_cohort("mimic4", n_admissions, opts, vocabs, r_cohort)
    splits = _patient_splits(adms, opts.split_fractions, r_split)
    draws, other_draws = _Draws(r_text), _Draws(r_other)
    writer = _NoteWriter(vocabs, opts, mimic4=True, draws=draws)
    ext = ".csv.gz" if opts.gzip else ".csv"

    notes, words, dx_rows, proc_rows = [], [], [], []
    seq_of_subject: dict[int, int] = {}
    for a in tqdm(adms, desc="mimic4 notes", unit="adm", disable=not progress):
        disch = a.admit + a.los
        version = 10 if a.system == "icd10" else 9
        if a.has_note:
            report, _ = writer.discharge_summary(a)
            words.append(len(report.split()))
            n = seq_of_subject.get(a.subject_id, 0) + 1
            seq_of_subject[a.subject_id] = n
            store = f"{_date(disch + other_draws.randint(0, 2)).isoformat()} {other_draws.randint(0, 23):02d}:{other_draws.randint(0, 59):02d}:00"
            notes.append((f"{a.subject_id}-DS-{n}", a.subject_id, a.hadm_id, "DS", n,
                          f"{_date(disch).isoformat()} 00:00:00", store, report))
        vocab = vocabs[a.system]
        for seq, code in _code_rows(a, vocab, "dx"):
            dx_rows.append((a.subject_id, a.hadm_id, seq, code, version))
        if a.null_code_row and a.no_codes:
            pass  # MIMIC-IV has no empty-code rows: such admissions simply have none
        for seq, code in _code_rows(a, vocab, "proc"):
            day = a.admit + other_draws.randint(0, a.los)
            proc_rows.append((a.subject_id, a.hadm_id, seq, _date(day).isoformat(), code, version))

    paths = {"root": final, "notes": final / "note" / f"discharge{ext}",
             "diagnoses": final / "hosp" / f"diagnoses_icd{ext}", "procedures": final / "hosp" / f"procedures_icd{ext}",
             "splits": final / "mimiciv_icd10_split.feather", "splits_csv": final / "mimiciv_icd10_split.csv",
             "manifest": final / MANIFEST}
    (tmp / "note").mkdir()
    (tmp / "hosp").mkdir()
    _write_csv(tmp / "note" / paths["notes"].name, _NOTE_COLS_4, notes, mimic3_quoting=False, use_gzip=opts.gzip)
    _write_csv(tmp / "hosp" / paths["diagnoses"].name, _DX_COLS_4, dx_rows, mimic3_quoting=False, use_gzip=opts.gzip)
    _write_csv(tmp / "hosp" / paths["procedures"].name, _PROC_COLS_4, proc_rows, mimic3_quoting=False,
               use_gzip=opts.gzip)
    for system, stem in (("icd10", "mimiciv_icd10_split"), ("icd9", "mimiciv_icd9_split")):
        kept = [a for a in adms if a.has_note and a.system == system]
        if system == "icd9" and "icd9" not in vocabs:
            continue
        _write_splits(tmp, stem, [a.hadm_id for a in kept], [splits[a.subject_id] for a in kept])
        if system == "icd9":
            paths["splits_icd9"] = final / f"{stem}.feather"
            paths["splits_icd9_csv"] = final / f"{stem}.csv"
    counts = _code_counts(adms, vocabs)
    summary = _summary("mimic4", adms, splits, counts, words, 0, 0, len(dx_rows), len(proc_rows))
    files = {k: str(v.relative_to(final)) for k, v in paths.items() if k != "root"}
    man = _manifest("mimic4", seed, n_admissions, opts, vocabs, adms, counts, words, files, {"summary": summary})
    (tmp / MANIFEST).write_text(json.dumps(man, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return paths


def _summary(corpus: str, adms: list[_Admission], splits: dict[int, str], counts: dict[str, dict[str, int]],
             words: list[int], n_addenda: int, n_other: int, n_dx_rows: int, n_proc_rows: int) -> dict:
    per_split = {s: 0 for s in SPLITS}
    for a in adms:
        if a.has_note:
            per_split[splits[a.subject_id]] += 1
    codes = {s: {"distinct": len(c), "rare_lt10": sum(1 for v in c.values() if v < 10)} for s, c in counts.items()}
    return {
        "corpus": corpus, "admissions": len(adms), "subjects": len(splits),
        "admissions_by_system": {s: sum(1 for a in adms if a.system == s) for s in sorted(counts)},
        "discharge_summaries": len(words), "addenda": n_addenda, "other_notes": n_other,
        "long_notes": sum(1 for a in adms if a.long_note and a.has_note),
        "admissions_without_codes": sum(1 for a in adms if a.no_codes),
        "admissions_without_note": sum(1 for a in adms if not a.has_note),
        "diagnosis_rows": n_dx_rows, "procedure_rows": n_proc_rows, "codes": codes,
        "split_admissions": per_split, "note_words": _word_stats(words),
    }


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    d = SynthOptions()
    p = argparse.ArgumentParser(
        prog="python -m data_tools.build.synth",
        description="Write synthetic MIMIC-III / MIMIC-IV-shaped raw tables (real file and column names, undotted "
                    "real ICD codes with a long-tailed frequency, MIMIC-style discharge summaries) and Edin-style "
                    "patient-level split files, for tests, benchmarks and the embedded default corpus. No real "
                    "patient data is involved.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="output folder; corpora go to OUT/mimic3 and OUT/mimic4")
    p.add_argument("--corpus", choices=("mimic3", "mimic4", "both"), default="both", help="which corpus to write")
    p.add_argument("--label-profile", choices=("default", "longtail"), default="default",
                   help="longtail (MIMIC-III only): a Full label space of hundreds of trainable codes, ~12 codes "
                        "per note, each code's evidence named, only a synonym/abbreviation, or only implied by a "
                        "medication or device (written to synth_evidence.csv); where not given, --n-codes 600, "
                        "--zipf-exponent 0.7, --dx-per-admission 8 12, --proc-per-admission 1 3")
    p.add_argument("--n-admissions", type=int, default=2000, help="admissions per corpus (patients have 1-5 each)")
    p.add_argument("--n-codes", type=int, default=d.n_codes,
                   help="size of the sampled code vocabulary (diagnoses + procedures) per code system; MIMIC-III "
                        "puts the 50 Mullenbach Top-50 codes at its head")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed and arguments give identical files")
    p.add_argument("--gzip", action=argparse.BooleanOptionalAction, default=d.gzip,
                   help="write .csv.gz as MIMIC ships them (--no-gzip: plain .csv)")
    p.add_argument("--long-note-fraction", type=float, default=d.long_note_fraction,
                   help="fraction of discharge summaries with a long day-by-day hospital course (2,500-7,000 extra "
                        "words) so that truncation matters")
    p.add_argument("--dx-per-admission", type=int, nargs=2, metavar=("MIN", "MAX"), default=list(d.dx_per_admission),
                   help="diagnosis codes per admission, uniform in [MIN, MAX] (rare codes may add one)")
    p.add_argument("--proc-per-admission", type=int, nargs=2, metavar=("MIN", "MAX"),
                   default=list(d.proc_per_admission), help="procedure codes per admission, uniform in [MIN, MAX]")
    p.add_argument("--zipf-exponent", type=float, default=d.zipf_exponent,
                   help="exponent a of the code frequency curve weight(rank) = (rank + 2)^-a; larger = steeper head")
    p.add_argument("--rare-fraction", type=float, default=d.rare_fraction,
                   help="fraction of the vocabulary given only 1-9 occurrences (codes prepare must drop)")
    p.add_argument("--addendum-fraction", type=float, default=d.addendum_fraction,
                   help="MIMIC-III: fraction of admissions with a discharge-summary Addendum row to be joined")
    p.add_argument("--other-notes", dest="other_notes_per_admission", type=float, default=d.other_notes_per_admission,
                   help="MIMIC-III: mean number of non-discharge notes (Radiology, Nursing, ECG, ...) per admission")
    p.add_argument("--no-code-fraction", type=float, default=d.no_code_fraction,
                   help="fraction of admissions without any code (some with an empty ICD9_CODE row in MIMIC-III)")
    p.add_argument("--no-note-fraction", type=float, default=d.no_note_fraction,
                   help="fraction of admissions with codes but no discharge summary (not in the split files)")
    p.add_argument("--negations-per-note", type=int, nargs=2, metavar=("MIN", "MAX"),
                   default=list(d.negations_per_note),
                   help="negated mentions of codes the admission does NOT have ('ruled out for ...') per note")
    p.add_argument("--dx-list-recall", type=float, default=d.dx_list_recall,
                   help="probability that a diagnosis is listed under 'Discharge Diagnosis' (others are only "
                        "described in the hospital course)")
    p.add_argument("--icd9-fraction", type=float, default=d.icd9_fraction,
                   help="MIMIC-IV: fraction of subjects with ICD-9-coded admissions (icd_version 9)")
    p.add_argument("--max-admissions-per-subject", type=int, default=d.max_admissions_per_subject,
                   help="cap on admissions per subject")
    p.add_argument("--split-fractions", type=float, nargs=3, metavar=("TRAIN", "VAL", "TEST"),
                   default=list(d.split_fractions), help="patient-level split fractions (Edin's clean splits)")
    p.add_argument("--overwrite", action="store_true", help="replace existing OUT/mimic3 or OUT/mimic4 folders")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    given = _given(parser, sys.argv[1:] if argv is None else argv)
    return run_tool("python -m data_tools.build.synth", lambda: _run(args, given))


def _given(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """Destinations of the options written on the command line (so a profile can default the others)."""
    flags = {str(tok).split("=", 1)[0] for tok in argv if str(tok).startswith("--") and len(str(tok)) > 2}
    return {a.dest for a in parser._actions if any(o.startswith(f) for o in a.option_strings for f in flags)}


def _run(args: argparse.Namespace, given: set[str] = frozenset()) -> None:
    fields = set(SynthOptions().__dict__)
    overrides = {k: (tuple(v) if isinstance(v, list) else v) for k, v in vars(args).items() if k in fields}
    if args.label_profile == "longtail":
        from data_tools.build import synth_longtail

        if args.corpus != "mimic3":
            raise user_error(None, "synth: --label-profile longtail writes a MIMIC-III corpus only",
                             "pass --corpus mimic3", cls=SynthError)
        overrides.update({k: v for k, v in synth_longtail.LONGTAIL_DEFAULTS.items() if k not in given})
    opts = _options(None, overrides)
    _check_n(args.n_admissions)
    corpora = ("mimic3", "mimic4") if args.corpus == "both" else (args.corpus,)
    for corpus in corpora:  # both outputs checked before either is written
        _check_out(args.out, MIMIC3_DIR if corpus == "mimic3" else MIMIC4_DIR, args.overwrite)
    for corpus in corpora:
        gen = generate_mimic3 if corpus == "mimic3" else generate_mimic4
        if args.label_profile == "longtail":
            gen = synth_longtail.generate_mimic3_longtail
        t0 = time.perf_counter()
        paths = gen(args.out, args.n_admissions, args.seed, options=opts, overwrite=args.overwrite,
                    progress=not args.no_progress)
        _print_summary(paths, time.perf_counter() - t0)


def _print_summary(paths: dict[str, Path], seconds: float) -> None:
    s = json.loads(paths["manifest"].read_text(encoding="utf-8"))["summary"]
    w = s["note_words"]
    print(f"\n{s['corpus']}: wrote {paths['root']} in {seconds:.1f} s")
    print(f"  admissions {s['admissions']} ({', '.join(f'{k} {v}' for k, v in s['admissions_by_system'].items())}), "
          f"subjects {s['subjects']}, without codes {s['admissions_without_codes']}, "
          f"without note {s['admissions_without_note']}")
    print(f"  discharge summaries {s['discharge_summaries']} (long {s['long_notes']}, addenda {s['addenda']}), "
          f"other notes {s['other_notes']}; words p50 {w.get('p50')} p95 {w.get('p95')} max {w.get('max')}")
    print(f"  code rows: diagnoses {s['diagnosis_rows']}, procedures {s['procedure_rows']}; " +
          "; ".join(f"{k}: {v['distinct']} distinct codes, {v['rare_lt10']} seen < 10 times" for k, v in s['codes'].items()))
    print("  split (admissions with a note): " + ", ".join(f"{k} {v}" for k, v in s["split_admissions"].items()))
    for key, path in paths.items():
        if key != "root":
            print(f"  {key:16s} {path}")


if __name__ == "__main__":
    sys.exit(main())
