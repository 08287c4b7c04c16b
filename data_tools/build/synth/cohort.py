"""The cohort: subjects, their admissions (dates, sex, age, code system, quirks) and the codes of each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .draws import Draws
from .options import SynthOptions
from .vocabulary import Vocabulary


@dataclass
class Admission:
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


def admissions(corpus: str, n_admissions: int, opts: SynthOptions, rng: np.random.Generator, draws: Draws, *,
               stray_empty_code_rows: bool = True) -> list[Admission]:
    """Subjects and their admissions, without codes: dates, sex, age, code system and the quirk flags.

    MIMIC-IV subjects may have ICD-9-coded early admissions (``icd9_fraction``); MIMIC-III admissions
    may have an addendum. ``stray_empty_code_rows``: a few coded admissions also get an empty code row.
    """
    id_base = (10_000_000, 20_000_000) if corpus == "mimic4" else (100, 100_000)
    counts, subject_ids, hadm_ids = _subjects(n_admissions, opts, rng, id_base)
    adms: list[Admission] = []
    hadm_ids_left = iter(hadm_ids)
    for subject_id, n_stays in zip(subject_ids, counts):
        sex = "F" if draws.chance(0.45) else "M"
        age = draws.randint(18, 95)
        day = draws.randint(0, 365 * 90)
        icd9_subject = corpus == "mimic4" and draws.chance(opts.icd9_fraction)
        for stay in range(n_stays):
            los = min(1 + int(rng.exponential(5.0)), 60)
            # MIMIC-IV switched to ICD-10 in FY2016: a subject's early admissions may be ICD-9.
            system = "icd10" if corpus == "mimic4" else "icd9"
            if icd9_subject and (stay == 0 or draws.chance(0.5)):
                system = "icd9"
            adms.append(Admission(subject_id=subject_id, hadm_id=next(hadm_ids_left), system=system, admit=day,
                                  los=los, sex=sex, age=age))
            day += los + draws.randint(20, 900)
            age = min(age + draws.randint(0, 2), 99)
    for a in adms:
        a.no_codes = draws.chance(opts.no_code_fraction)
        a.null_code_row = (a.no_codes and draws.chance(0.5)) or (stray_empty_code_rows and draws.chance(0.002))
        a.has_note = not draws.chance(opts.no_note_fraction)
        a.long_note = draws.chance(opts.long_note_fraction)
        a.addendum = corpus == "mimic3" and draws.chance(opts.addendum_fraction)
    return adms


def gumbel_top(logw: np.ndarray, k: np.ndarray, rng: np.random.Generator, chunk: int = 2048) -> list[list[int]]:
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


def _assign_codes(adms: list[Admission], vocab: Vocabulary, opts: SynthOptions, rng: np.random.Generator) -> None:
    """Diagnosis and procedure codes per admission: chronic codes per subject, Zipf draws, rare codes."""
    draws = Draws(rng)
    n = len(adms)
    dx_idx, proc_idx = vocab.indices(f"{vocab.system}_dx"), vocab.indices(f"{vocab.system}_proc")
    with np.errstate(divide="ignore"):
        logw = np.log(vocab.weights)
    k_dx = rng.integers(opts.dx_per_admission[0], opts.dx_per_admission[1] + 1, size=n)
    k_proc = rng.integers(opts.proc_per_admission[0], opts.proc_per_admission[1] + 1, size=n)
    dx_rows = gumbel_top(logw[dx_idx], k_dx + 2, rng)
    proc_rows = gumbel_top(logw[proc_idx], k_proc, rng)
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
    eligible = [i for i, a in enumerate(adms) if not a.no_codes]
    for i, code in enumerate(vocab.codes):
        if code not in vocab.rare_counts or not eligible:
            continue
        for pos in rng.choice(len(eligible), size=min(vocab.rare_counts[code], len(eligible)), replace=False):
            a = adms[eligible[int(pos)]]
            target = a.dx if vocab.tables[i].endswith("_dx") else a.proc
            if i not in target:
                target.append(i)
    for a in adms:
        if a.no_codes:
            a.dx, a.proc, a.chronic = [], [], []


def pick_distractors(a: Admission, opts: SynthOptions, draws: Draws, dx_pool: list[int]) -> None:
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


def build_cohort(corpus: str, n_admissions: int, opts: SynthOptions, vocabs: dict[str, Vocabulary],
                 rng: np.random.Generator) -> list[Admission]:
    """Admissions with their codes (drawn per code system) and distractors (negated / family history)."""
    draws = Draws(rng)
    adms = admissions(corpus, n_admissions, opts, rng, draws)
    for system, vocab in vocabs.items():
        group = [a for a in adms if a.system == system]
        _assign_codes(group, vocab, opts, rng)
        # Distractors: frequent, condition-like diagnoses (not "history of" / status codes).
        dx_pool = [int(i) for i in vocab.indices(f"{system}_dx") if vocab.weights[i] > 0
                   and not vocab.codes[i].startswith(("V", "Z", "E")) and len(vocab.descriptions[i]) <= 70][:40]
        for a in group:
            pick_distractors(a, opts, draws, dx_pool)
    return adms


def patient_splits(adms: list[Admission], fractions: Sequence[float], rng: np.random.Generator) -> dict[int, str]:
    """Split label per subject (all admissions of a subject share it)."""
    subjects = sorted({a.subject_id for a in adms})
    order = rng.permutation(len(subjects))
    n_train = int(round(fractions[0] * len(subjects)))
    n_val = int(round(fractions[1] * len(subjects)))
    labels = {}
    for rank, pos in enumerate(order):
        labels[subjects[int(pos)]] = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
    return labels


def code_counts(adms: list[Admission], vocabs: dict[str, Vocabulary]) -> dict[str, dict[str, int]]:
    """Admissions per code, by system."""
    counts: dict[str, dict[str, int]] = {s: {} for s in vocabs}
    for a in adms:
        c = counts[a.system]
        for i in a.dx + a.proc:
            code = vocabs[a.system].codes[i]
            c[code] = c.get(code, 0) + 1
    return counts
